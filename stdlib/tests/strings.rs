//! Tests of the string built-ins: lengths, comparison signs, literal and memory arguments,
//! unreadable addresses and the bound on string reads.

mod common;

use common::{wide, TestEnv, BASE, MEM};
use hvscript_abi::Builtin;
use hvscript_stdlib::{call, Access, Arg, ScriptError, Space, MAX_STRING_UNITS};

const MINUS_ONE: u64 = u64::MAX;

fn run(env: &mut TestEnv, b: Builtin, args: &[Arg<'_>]) -> Result<u64, ScriptError> {
    call(b, env, args)
}

#[test]
fn strlen_of_literals_and_memory() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"hello\0");
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Str(b"hello")]), Ok(5));
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Str(b"")]), Ok(0));
    // A literal with an embedded NUL ends there, as in C.
    assert_eq!(
        run(&mut env, Builtin::Strlen, &[Arg::Str(b"ab\0cd")]),
        Ok(2)
    );
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x1100)]), Ok(5));
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x1105)]), Ok(0));
}

#[test]
fn strlen_of_an_unreadable_string_is_zero() {
    let mut env = TestEnv::new(MEM);
    env.holes.push(0x2000..0x2001);
    env.put(0x1ffc, b"abcd");
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x10)]), Ok(0));
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x2000)]), Ok(0));
    // Readable at the start, runs into the hole before any NUL.
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x1ffc)]), Ok(0));
    assert_eq!(run(&mut env, Builtin::Wcslen, &[Arg::Val(0x1ffc)]), Ok(0));
    assert!(env.warnings.is_empty());
}

#[test]
fn a_string_ending_right_before_a_hole_is_read_correctly() {
    let mut env = TestEnv::new(MEM);
    env.holes.push(0x2000..0x2100);
    env.put(0x1ff0, b"0123456789abcde\0");
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x1ff0)]), Ok(15));
    // A hole inside a page: the chunked read falls back to single units.
    env.holes.push(0x3010..0x3011);
    env.put(0x3000, b"fifteen chars!!\0");
    assert_eq!(run(&mut env, Builtin::Strlen, &[Arg::Val(0x3000)]), Ok(15));
}

#[test]
fn strlen_is_bounded() {
    let mut env = TestEnv::new(0x12000);
    env.mem.fill(b'a');
    let reads_before = env.reads;
    assert_eq!(
        run(&mut env, Builtin::Strlen, &[Arg::Val(BASE)]),
        Ok(MAX_STRING_UNITS as u64)
    );
    assert_eq!(env.warnings.len(), 1);
    assert!(
        env.warnings[0].starts_with("strlen: no NUL within 0x10000 units"),
        "{:?}",
        env.warnings
    );
    // Read in chunks, not byte by byte.
    assert!(
        env.reads - reads_before <= MAX_STRING_UNITS / 32,
        "{} reads",
        env.reads
    );
}

#[test]
fn wcslen_counts_utf16_units() {
    let mut env = TestEnv::new(MEM);
    env.put_wide(0x1200, &wide("h\u{e9}llo \u{1f600}\0"));
    assert_eq!(run(&mut env, Builtin::Wcslen, &[Arg::Val(0x1200)]), Ok(8));
    assert_eq!(
        run(&mut env, Builtin::Wcslen, &[Arg::WStr(&wide("abc"))]),
        Ok(3)
    );
    assert_eq!(run(&mut env, Builtin::Wcslen, &[Arg::WStr(&[])]), Ok(0));
    // A wide string at an odd address, straddling a page boundary.
    env.put_wide(0x1ffb, &wide("xyz\0"));
    assert_eq!(run(&mut env, Builtin::Wcslen, &[Arg::Val(0x1ffb)]), Ok(3));
    assert_eq!(run(&mut env, Builtin::Wcslen, &[Arg::Val(0x9_0000)]), Ok(0));
}

#[test]
fn strcmp_signs_follow_msvc() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"abc\0");
    env.put(0x1200, b"abd\0");
    env.put(0x1300, b"\x80\0");
    let s = |x: &'static [u8]| Arg::Str(x);
    let cases: [(Arg<'_>, Arg<'_>, u64); 8] = [
        (s(b"abc"), s(b"abc"), 0),
        (s(b"abc"), s(b"abd"), MINUS_ONE),
        (s(b"abd"), s(b"abc"), 1),
        (s(b"ab"), s(b"abc"), MINUS_ONE),
        (s(b"abc"), Arg::Val(0x1100), 0),
        (Arg::Val(0x1100), Arg::Val(0x1200), MINUS_ONE),
        (Arg::Val(0x1200), s(b"abc"), 1),
        // Bytes compare unsigned.
        (Arg::Val(0x1300), s(b"\x7f"), 1),
    ];
    for (a, b, want) in cases {
        assert_eq!(
            run(&mut env, Builtin::Strcmp, &[a, b]),
            Ok(want),
            "{a:?} {b:?}"
        );
    }
}

#[test]
fn strcmp_of_an_unreadable_address_is_an_error() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1ffe, b"ab");
    env.holes.push(0x2000..0x2001);
    assert_eq!(
        run(
            &mut env,
            Builtin::Strcmp,
            &[Arg::Str(b"abc"), Arg::Val(0x10)]
        ),
        Err(ScriptError::InvalidAddress {
            builtin: Builtin::Strcmp,
            space: Space::Virtual,
            access: Access::Read,
            addr: 0x10,
            len: 1
        })
    );
    // Fails where the string runs into the hole.
    assert!(matches!(
        run(
            &mut env,
            Builtin::Strcmp,
            &[Arg::Val(0x1ffe), Arg::Str(b"abc")]
        ),
        Err(ScriptError::InvalidAddress { addr: 0x2000, .. })
    ));
    // A difference before the hole decides without reading further.
    assert_eq!(
        run(
            &mut env,
            Builtin::Strcmp,
            &[Arg::Val(0x1ffe), Arg::Str(b"ax")]
        ),
        Ok(MINUS_ONE)
    );
    assert!(matches!(
        run(
            &mut env,
            Builtin::Wcscmp,
            &[Arg::Val(0x10), Arg::WStr(&[0x41])]
        ),
        Err(ScriptError::InvalidAddress {
            builtin: Builtin::Wcscmp,
            len: 2,
            ..
        })
    ));
}

#[test]
fn strncmp_stops_after_n() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"abcdef\0");
    let n = |v| Arg::Val(v);
    assert_eq!(
        run(
            &mut env,
            Builtin::Strncmp,
            &[Arg::Str(b"abcxyz"), Arg::Val(0x1100), n(3)]
        ),
        Ok(0)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Strncmp,
            &[Arg::Str(b"abcxyz"), Arg::Val(0x1100), n(4)]
        ),
        Ok(1)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Strncmp,
            &[Arg::Str(b"a"), Arg::Str(b"b"), n(0)]
        ),
        Ok(0)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Strncmp,
            &[Arg::Str(b"ab"), Arg::Str(b"abc"), n(u64::MAX)]
        ),
        Ok(MINUS_ONE)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Strncmp,
            &[Arg::Str(b"same"), Arg::Str(b"same"), n(100)]
        ),
        Ok(0)
    );
    assert!(env.warnings.is_empty());
}

#[test]
fn strcmp_of_two_endless_strings_is_bounded() {
    let mut env = TestEnv::new(0x22000);
    env.mem.fill(b'z');
    let (a, b) = (Arg::Val(BASE), Arg::Val(BASE + 0x11000));
    assert_eq!(run(&mut env, Builtin::Strcmp, &[a, b]), Ok(0));
    assert_eq!(env.warnings.len(), 1, "{:?}", env.warnings);
    assert_eq!(
        run(&mut env, Builtin::Strncmp, &[a, b, Arg::Val(10)]),
        Ok(0)
    );
    assert_eq!(env.warnings.len(), 1);
}

#[test]
fn wcscmp_and_wcsncmp() {
    let mut env = TestEnv::new(MEM);
    env.put_wide(0x1100, &wide("Hello\0"));
    env.put_wide(0x1200, &[0xffff, 0]);
    let w = |s: &'static str| wide(s);
    let (hello, help, world) = (w("Hello"), w("Help"), w("World"));
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcscmp,
            &[Arg::WStr(&hello), Arg::Val(0x1100)]
        ),
        Ok(0)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcscmp,
            &[Arg::Val(0x1100), Arg::WStr(&world)]
        ),
        Ok(MINUS_ONE)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcscmp,
            &[Arg::WStr(&help), Arg::WStr(&hello)]
        ),
        Ok(1)
    );
    // Units compare unsigned: 0xffff is above 0x7fff.
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcscmp,
            &[Arg::Val(0x1200), Arg::WStr(&[0x7fff])]
        ),
        Ok(1)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcsncmp,
            &[Arg::WStr(&help), Arg::Val(0x1100), Arg::Val(3)]
        ),
        Ok(0)
    );
    assert_eq!(
        run(
            &mut env,
            Builtin::Wcsncmp,
            &[Arg::WStr(&help), Arg::Val(0x1100), Arg::Val(4)]
        ),
        Ok(1)
    );
}

#[test]
fn memcmp_compares_bytes_including_nul() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"ab\0x\xff");
    env.put(0x1200, b"ab\0y\x01");
    let (p, q) = (Arg::Val(0x1100), Arg::Val(0x1200));
    assert_eq!(run(&mut env, Builtin::Memcmp, &[p, q, Arg::Val(3)]), Ok(0));
    // Unlike strcmp, memcmp goes past the NUL.
    assert_eq!(
        run(&mut env, Builtin::Memcmp, &[p, q, Arg::Val(4)]),
        Ok(MINUS_ONE)
    );
    assert_eq!(run(&mut env, Builtin::Memcmp, &[q, p, Arg::Val(4)]), Ok(1));
    assert_eq!(run(&mut env, Builtin::Memcmp, &[p, q, Arg::Val(0)]), Ok(0));
    // A literal can be compared up to its NUL.
    assert_eq!(
        run(
            &mut env,
            Builtin::Memcmp,
            &[Arg::Str(b"ab"), p, Arg::Val(3)]
        ),
        Ok(0)
    );
    assert!(matches!(
        run(
            &mut env,
            Builtin::Memcmp,
            &[Arg::Str(b"ab"), p, Arg::Val(4)]
        ),
        Err(ScriptError::InvalidArgument {
            builtin: Builtin::Memcmp,
            value: 4,
            ..
        })
    ));
    assert!(matches!(
        run(&mut env, Builtin::Memcmp, &[p, q, Arg::Val(0x1_0000_0000)]),
        Err(ScriptError::InvalidArgument {
            builtin: Builtin::Memcmp,
            ..
        })
    ));
    assert!(matches!(
        run(&mut env, Builtin::Memcmp, &[p, Arg::Val(0x5), Arg::Val(2)]),
        Err(ScriptError::InvalidAddress {
            builtin: Builtin::Memcmp,
            addr: 0x5,
            ..
        })
    ));
}

#[test]
fn memcmp_of_a_long_equal_range() {
    let mut env = TestEnv::new(MEM);
    let data: Vec<u8> = (0..0x900u32).map(|i| i as u8).collect();
    env.put(0x1000, &data);
    env.put(0x2000, &data);
    assert_eq!(
        run(
            &mut env,
            Builtin::Memcmp,
            &[Arg::Val(0x1000), Arg::Val(0x2000), Arg::Val(0x900)]
        ),
        Ok(0)
    );
    env.put(0x28ff, &[0]);
    assert_eq!(
        run(
            &mut env,
            Builtin::Memcmp,
            &[Arg::Val(0x1000), Arg::Val(0x2000), Arg::Val(0x900)]
        ),
        Ok(1)
    );
}
