//! Tests of the memory built-ins: readers, writers, `check_address`, `memcpy`, translation,
//! the arithmetic helpers, and `call`'s argument checking.

mod common;

use common::{callv, BareEnv, TestEnv, BASE, MEM};
use hvscript_abi::{ArgKind, Builtin};
use hvscript_stdlib::{call, Access, Arg, ScriptError, Space};

fn env_with_qword() -> TestEnv {
    let mut env = TestEnv::new(MEM);
    env.put_u64(BASE, 0x0123_4567_89ab_cdef);
    env
}

#[test]
fn readers_return_zero_extended_values() {
    let mut env = env_with_qword();
    let cases = [
        (Builtin::Poi, 0x0123_4567_89ab_cdef),
        (Builtin::Dq, 0x0123_4567_89ab_cdef),
        (Builtin::Dd, 0x89ab_cdef),
        (Builtin::Dw, 0xcdef),
        (Builtin::Db, 0xef),
        // HyperDbg's semantic test 47: hi(&0x0123456789abcdef) == 0x89ab.
        (Builtin::Hi, 0x89ab),
        (Builtin::Low, 0xcdef),
    ];
    for (b, want) in cases {
        assert_eq!(callv(&mut env, b, &[BASE]), Ok(want), "{}", b.name());
    }
    assert_eq!(callv(&mut env, Builtin::Db, &[BASE + 7]), Ok(0x01));
}

#[test]
fn readers_fail_on_unreadable_addresses() {
    let mut env = env_with_qword();
    env.holes.push(0x2000..0x2010);
    let widths = [
        (Builtin::Poi, 8),
        (Builtin::Dq, 8),
        (Builtin::Dd, 4),
        (Builtin::Dw, 2),
        (Builtin::Db, 1),
        (Builtin::Hi, 8),
        (Builtin::Low, 8),
    ];
    for (b, len) in widths {
        for addr in [0x2000, 0x0, 0xdead_0000_0000] {
            assert_eq!(
                callv(&mut env, b, &[addr]),
                Err(ScriptError::InvalidAddress {
                    builtin: b,
                    space: Space::Virtual,
                    access: Access::Read,
                    addr,
                    len,
                }),
                "{} at {addr:#x}",
                b.name()
            );
        }
    }
    // Partly readable: the last bytes fall into the hole.
    assert!(matches!(
        callv(&mut env, Builtin::Poi, &[0x1ffc]),
        Err(ScriptError::InvalidAddress {
            addr: 0x1ffc,
            len: 8,
            ..
        })
    ));
    // A range that wraps around the address space is refused, not passed on.
    assert!(matches!(
        callv(&mut env, Builtin::Poi, &[u64::MAX - 3]),
        Err(ScriptError::InvalidAddress { .. })
    ));
}

#[test]
fn invalid_address_message_names_function_and_address() {
    let mut env = TestEnv::new(MEM);
    let e = callv(&mut env, Builtin::Dd, &[0x10]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dd: cannot read 4 bytes at 0x10 (invalid address)"
    );
}

#[test]
fn writers_store_their_width_and_return_one() {
    let mut env = TestEnv::new(MEM);
    env.put_u64(BASE, u64::MAX);
    assert_eq!(callv(&mut env, Builtin::Eb, &[BASE, 0x1234]), Ok(1));
    assert_eq!(env.get_u64(BASE), 0xffff_ffff_ffff_ff34);
    assert_eq!(callv(&mut env, Builtin::Ed, &[BASE, 0x1_2345_6789]), Ok(1));
    assert_eq!(env.get_u64(BASE), 0xffff_ffff_2345_6789);
    assert_eq!(
        callv(&mut env, Builtin::Eq, &[BASE, 0x1122_3344_5566_7788]),
        Ok(1)
    );
    assert_eq!(env.get_u64(BASE), 0x1122_3344_5566_7788);
}

#[test]
fn writers_return_zero_on_failure_without_error_or_warning() {
    let mut env = TestEnv::new(MEM);
    env.readonly.push(0x1800..0x1808);
    env.holes.push(0x2000..0x2001);
    for b in [Builtin::Eb, Builtin::Ed, Builtin::Eq] {
        assert_eq!(callv(&mut env, b, &[0x1800, 1]), Ok(0), "{}", b.name());
        assert_eq!(callv(&mut env, b, &[0x2000, 1]), Ok(0), "{}", b.name());
        assert_eq!(callv(&mut env, b, &[0, 1]), Ok(0), "{}", b.name());
        assert_eq!(callv(&mut env, b, &[u64::MAX, 1]), Ok(0), "{}", b.name());
    }
    assert_eq!(env.get(0x1800, 8), &[0; 8]);
    assert!(env.warnings.is_empty());
}

#[test]
fn physical_readers_and_writers() {
    let mut env = TestEnv::new(MEM).with_phys(0x1000);
    assert_eq!(
        callv(&mut env, Builtin::EqPa, &[0x10, 0x0123_4567_89ab_cdef]),
        Ok(1)
    );
    assert_eq!(
        callv(&mut env, Builtin::PoiPa, &[0x10]),
        Ok(0x0123_4567_89ab_cdef)
    );
    assert_eq!(
        callv(&mut env, Builtin::DqPa, &[0x10]),
        Ok(0x0123_4567_89ab_cdef)
    );
    assert_eq!(callv(&mut env, Builtin::DdPa, &[0x10]), Ok(0x89ab_cdef));
    assert_eq!(callv(&mut env, Builtin::DwPa, &[0x10]), Ok(0xcdef));
    assert_eq!(callv(&mut env, Builtin::DbPa, &[0x10]), Ok(0xef));
    assert_eq!(callv(&mut env, Builtin::HiPa, &[0x10]), Ok(0x89ab));
    assert_eq!(callv(&mut env, Builtin::LowPa, &[0x10]), Ok(0xcdef));
    assert_eq!(callv(&mut env, Builtin::EdPa, &[0x10, 0xaabb_ccdd]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::EbPa, &[0x10, 0x11]), Ok(1));
    assert_eq!(
        callv(&mut env, Builtin::PoiPa, &[0x10]),
        Ok(0x0123_4567_aabb_cc11)
    );
    // Virtual memory is a different space.
    assert_eq!(callv(&mut env, Builtin::Poi, &[0x10]).ok(), None);
    // Out of physical memory.
    assert_eq!(
        callv(&mut env, Builtin::DqPa, &[0xffc]),
        Err(ScriptError::InvalidAddress {
            builtin: Builtin::DqPa,
            space: Space::Physical,
            access: Access::Read,
            addr: 0xffc,
            len: 8
        })
    );
    assert_eq!(callv(&mut env, Builtin::EqPa, &[0xffc, 1]), Ok(0));
}

#[test]
fn physical_memory_unavailable_is_an_error_for_readers_and_a_warning_for_writers() {
    let mut env = BareEnv::new();
    for b in [
        Builtin::PoiPa,
        Builtin::DqPa,
        Builtin::DdPa,
        Builtin::DwPa,
        Builtin::DbPa,
        Builtin::HiPa,
        Builtin::LowPa,
    ] {
        match callv(&mut env, b, &[0]) {
            Err(ScriptError::Unavailable { builtin, reason }) => {
                assert_eq!(builtin, b);
                assert!(reason.contains("physical"), "{reason}");
            }
            other => panic!("{}: {other:?}", b.name()),
        }
    }
    for b in [Builtin::EbPa, Builtin::EdPa, Builtin::EqPa] {
        assert_eq!(callv(&mut env, b, &[0, 1]), Ok(0));
    }
    let out = env.out_str();
    assert_eq!(out.matches("warning: ").count(), 3, "{out}");
    assert!(out.contains("eb_pa: unavailable: physical memory"), "{out}");
}

#[test]
fn check_address_tests_one_byte() {
    let mut env = TestEnv::new(MEM);
    env.holes.push(0x2000..0x2001);
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[BASE]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[0x1fff]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[0x2000]), Ok(0));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[0x2001]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[0x3fff]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[0x4000]), Ok(0));
    assert_eq!(callv(&mut env, Builtin::CheckAddress, &[u64::MAX]), Ok(0));
}

#[test]
fn memcpy_copies_across_pages_and_chunks() {
    let mut env = TestEnv::new(MEM);
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    env.put(0x1e00, &data);
    assert_eq!(
        callv(&mut env, Builtin::Memcpy, &[0x3000, 0x1e00, 1000]),
        Ok(0)
    );
    assert_eq!(env.get(0x3000, 1000), &data[..]);
    assert_eq!(env.get(0x3000 + 1000, 1), &[0]);
}

#[test]
fn memcpy_handles_overlap_like_memmove() {
    let mut env = TestEnv::new(MEM);
    let data: Vec<u8> = (0..600u32).map(|i| i as u8 ^ 0x5a).collect();
    env.put(0x1100, &data);
    // Destination above the source, overlapping.
    callv(&mut env, Builtin::Memcpy, &[0x1110, 0x1100, 600]).unwrap();
    assert_eq!(env.get(0x1110, 600), &data[..]);
    // Destination below the source, overlapping.
    env.put(0x2100, &data);
    callv(&mut env, Builtin::Memcpy, &[0x20f0, 0x2100, 600]).unwrap();
    assert_eq!(env.get(0x20f0, 600), &data[..]);
}

#[test]
fn memcpy_rejects_bad_counts() {
    let mut env = TestEnv::new(MEM);
    for n in [0, 0x1_0000_0000, u64::MAX] {
        assert!(matches!(
            callv(&mut env, Builtin::Memcpy, &[BASE, BASE + 8, n]),
            Err(ScriptError::InvalidArgument { builtin: Builtin::Memcpy, value, .. }) if value == n
        ));
    }
    // The largest count is accepted, and then fails on the memory it would touch.
    assert!(matches!(
        callv(&mut env, Builtin::Memcpy, &[BASE, BASE + 8, 0xffff_ffff]),
        Err(ScriptError::InvalidAddress {
            access: Access::Read,
            ..
        })
    ));
}

#[test]
fn memcpy_checks_both_ranges_before_writing() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1000, &[0xaa; 16]);
    env.holes.push(0x2800..0x2801);
    // The source's last byte is in the hole: nothing is written.
    let e = callv(&mut env, Builtin::Memcpy, &[0x3000, 0x27f0, 0x11]).unwrap_err();
    assert!(matches!(
        e,
        ScriptError::InvalidAddress {
            access: Access::Read,
            addr: 0x27f0,
            len: 0x11,
            ..
        }
    ));
    assert_eq!(env.get(0x3000, 0x11), &[0; 0x11]);
    // The destination runs off the end of memory.
    let e = callv(&mut env, Builtin::Memcpy, &[0x3ff8, 0x1000, 16]).unwrap_err();
    assert!(matches!(
        e,
        ScriptError::InvalidAddress {
            access: Access::Write,
            addr: 0x3ff8,
            ..
        }
    ));
    assert_eq!(env.get(0x3ff8, 8), &[0; 8]);
    // A read-only destination fails at the write.
    env.readonly.push(0x3800..0x3900);
    let e = callv(&mut env, Builtin::Memcpy, &[0x3800, 0x1000, 16]).unwrap_err();
    assert!(matches!(
        e,
        ScriptError::InvalidAddress {
            access: Access::Write,
            addr: 0x3800,
            ..
        }
    ));
    // A source range wrapping the address space.
    assert!(callv(&mut env, Builtin::Memcpy, &[0x1000, u64::MAX - 4, 16]).is_err());
}

#[test]
fn memcpy_pa_uses_physical_memory() {
    let mut env = TestEnv::new(MEM).with_phys(0x1000);
    callv(&mut env, Builtin::EqPa, &[0x100, 0x1122_3344_5566_7788]).unwrap();
    assert_eq!(
        callv(&mut env, Builtin::MemcpyPa, &[0x200, 0x100, 8]),
        Ok(0)
    );
    assert_eq!(
        callv(&mut env, Builtin::PoiPa, &[0x200]),
        Ok(0x1122_3344_5566_7788)
    );
    assert!(matches!(
        callv(&mut env, Builtin::MemcpyPa, &[0x200, 0xff8, 16]),
        Err(ScriptError::InvalidAddress {
            space: Space::Physical,
            ..
        })
    ));
    let mut bare = BareEnv::new();
    assert!(matches!(
        callv(&mut bare, Builtin::MemcpyPa, &[0, 8, 8]),
        Err(ScriptError::Unavailable {
            builtin: Builtin::MemcpyPa,
            ..
        })
    ));
}

#[test]
fn address_translation() {
    let mut env = TestEnv::new(MEM);
    env.translation = Some(0x1000);
    assert_eq!(
        callv(&mut env, Builtin::VirtualToPhysical, &[0x1234]),
        Ok(0x234)
    );
    assert_eq!(
        callv(&mut env, Builtin::PhysicalToVirtual, &[0x234]),
        Ok(0x1234)
    );
    // Not mapped: 0, as HyperDbg.
    assert_eq!(
        callv(&mut env, Builtin::VirtualToPhysical, &[0x9000]),
        Ok(0)
    );
    assert_eq!(
        callv(&mut env, Builtin::PhysicalToVirtual, &[0x9000]),
        Ok(0)
    );
    // No translation in this context: an error, not a made-up 0.
    let mut bare = BareEnv::new();
    for b in [Builtin::VirtualToPhysical, Builtin::PhysicalToVirtual] {
        assert!(matches!(
            callv(&mut bare, b, &[0x1000]),
            Err(ScriptError::Unavailable { builtin, .. }) if builtin == b
        ));
    }
}

#[test]
fn neg_and_not() {
    let mut env = TestEnv::new(MEM);
    // HyperDbg's semantic test 48.
    assert_eq!(
        callv(&mut env, Builtin::Neg, &[0x800]),
        Ok(0xffff_ffff_ffff_f800)
    );
    assert_eq!(callv(&mut env, Builtin::Neg, &[0]), Ok(0));
    assert_eq!(callv(&mut env, Builtin::Neg, &[1 << 63]), Ok(1 << 63));
    assert_eq!(callv(&mut env, Builtin::Not, &[0]), Ok(u64::MAX));
    assert_eq!(
        callv(&mut env, Builtin::Not, &[0xff00]),
        Ok(0xffff_ffff_ffff_00ff)
    );
}

#[test]
fn reference_is_not_callable() {
    let mut env = TestEnv::new(MEM);
    let e = callv(&mut env, Builtin::Reference, &[BASE]).unwrap_err();
    assert!(matches!(
        e,
        ScriptError::NotCallable {
            builtin: Builtin::Reference,
            ..
        }
    ));
    assert!(e.to_string().contains("&x"), "{e}");
}

#[test]
fn wrong_argument_counts_and_kinds_are_errors() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(
        call(Builtin::Poi, &mut env, &[]),
        Err(ScriptError::ArgCount {
            builtin: Builtin::Poi,
            min: 1,
            max: Some(1),
            got: 0
        })
    );
    assert_eq!(
        call(Builtin::Poi, &mut env, &[Arg::Str(b"x")]),
        Err(ScriptError::ArgKind {
            builtin: Builtin::Poi,
            index: 0,
            expected: ArgKind::Value
        })
    );
    assert_eq!(
        call(Builtin::Strlen, &mut env, &[Arg::WStr(&[0x41])]),
        Err(ScriptError::ArgKind {
            builtin: Builtin::Strlen,
            index: 0,
            expected: ArgKind::NarrowStrOrValue
        })
    );
    assert_eq!(
        call(Builtin::Wcslen, &mut env, &[Arg::Str(b"a")]),
        Err(ScriptError::ArgKind {
            builtin: Builtin::Wcslen,
            index: 0,
            expected: ArgKind::WideStrOrValue
        })
    );
    assert_eq!(
        call(Builtin::Printf, &mut env, &[Arg::Val(0)]),
        Err(ScriptError::ArgKind {
            builtin: Builtin::Printf,
            index: 0,
            expected: ArgKind::Format
        })
    );
    assert_eq!(
        call(
            Builtin::Printf,
            &mut env,
            &[Arg::Str(b"%s"), Arg::Str(b"x")]
        ),
        Err(ScriptError::ArgKind {
            builtin: Builtin::Printf,
            index: 1,
            expected: ArgKind::Value
        })
    );
    let e = call(Builtin::Printf, &mut env, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "printf: expects at least 1 argument(s), got 0"
    );
    // Every non-variadic built-in refuses one argument too many.
    for &b in Builtin::ALL {
        let shape = b.info().shape;
        if shape.variadic {
            continue;
        }
        let args = vec![Arg::Val(0); shape.args.len() + 1];
        assert!(
            matches!(call(b, &mut env, &args), Err(ScriptError::ArgCount { builtin, .. }) if builtin == b),
            "{}",
            b.name()
        );
    }
}

#[test]
fn no_builtin_panics_on_odd_values() {
    // Every built-in, every argument position filled with awkward values, in a rich and in
    // a bare environment: each call returns, with a value or an error.
    let values = [
        0,
        1,
        0xff,
        BASE,
        0x3fff,
        0x1_0000_0000,
        u64::MAX - 7,
        u64::MAX,
    ];
    for &b in Builtin::ALL {
        let shape = b.info().shape;
        for &x in &values {
            let mut args: Vec<Arg<'_>> = shape
                .args
                .iter()
                .map(|k| match k {
                    ArgKind::Format => Arg::Str(b"%d %s %ws %c %p %%"),
                    _ => Arg::Val(x),
                })
                .collect();
            if shape.variadic {
                args.extend([Arg::Val(x); 5]);
            }
            let mut env = TestEnv::new(MEM);
            env.spin_budget = 64;
            env.put(BASE, b"abc\0");
            for r in [
                call(b, &mut env, &args),
                call(b, &mut BareEnv::new(), &args),
            ] {
                if let Err(e) = r {
                    assert!(
                        e.to_string().starts_with(b.name())
                            || e.to_string().starts_with("spinlock"),
                        "{e}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_interpreters_shortcut_does_what_call_does() {
    use hvscript_stdlib::{call_virtual_memory, is_virtual_memory};
    let served: Vec<Builtin> = Builtin::ALL
        .iter()
        .copied()
        .filter(|&b| is_virtual_memory(b))
        .collect();
    assert_eq!(served.len(), 8, "poi dq dd dw db eb ed eq");
    for b in served {
        let writes = b.shape().args.len() == 2;
        // A readable address, one straddling into a hole, and one inside it.
        for addr in [BASE + 3, 0x1ffc, 0x2004] {
            let mut via_call = env_with_qword();
            let mut via_shortcut = env_with_qword();
            for env in [&mut via_call, &mut via_shortcut] {
                env.holes.push(0x2000..0x2010);
            }
            let args: &[u64] = if writes { &[addr, 0xa5a5] } else { &[addr] };
            let want = callv(&mut via_call, b, args);
            let value = args.get(1).copied().unwrap_or(0);
            let got = call_virtual_memory(b, &mut via_shortcut, addr, value);
            assert_eq!(got, want, "{} at {addr:#x}", b.name());
            assert_eq!(via_shortcut.mem, via_call.mem, "{} at {addr:#x}", b.name());
        }
    }
    let mut env = env_with_qword();
    assert!(matches!(
        call_virtual_memory(Builtin::Strlen, &mut env, BASE, 0),
        Err(ScriptError::NotCallable { .. })
    ));
}
