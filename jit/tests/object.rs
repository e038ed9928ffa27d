//! Code objects as data: they serialize, validate, load at any address and run; malformed
//! bytes are errors, never panics; generated code has no relocations by construction.

mod common;

use common::*;
use hvscript_abi::{PseudoReg, Register};
use hvscript_jit::Jit;
use hvscript_lang::{compile_source, CompileOptions, Globals, Invocation};
use hvscript_runtime::object::VERSION;
use hvscript_runtime::{CodeObject, LoadedCode, Runner};
use proptest::prelude::*;

const SRC: &str = "int sq(int x) { return x * x; } .n = 0; for (i = 0; i < 5; i++) { .n = .n + sq(i); } printf(\"%d\\n\", .n); x = strlen(\"abc\") + wcslen(L\"w\"); @rax = .n + x;";

fn object() -> CodeObject {
    let g = Globals::default();
    let p = compile_source(SRC, &g, &CompileOptions::default()).unwrap();
    Jit::new().unwrap().compile(&p).unwrap()
}

#[test]
fn round_trip_and_run_from_bytes() {
    let obj = object();
    assert!(obj.functions.len() == 2 && !obj.rodata.is_empty() && obj.sites.len() >= 2);
    let bytes = obj.to_bytes();
    let back = CodeObject::from_bytes(&bytes).unwrap();
    assert_eq!(back, obj);

    // Loaded twice (two different addresses), both run and agree with the interpreter.
    let g = Globals::default();
    let program = compile_source(SRC, &g, &CompileOptions::default()).unwrap();
    let a: LoadedCode = LoadedCode::from_bytes(&bytes).unwrap();
    let b: LoadedCode = LoadedCode::from_bytes(&bytes).unwrap();
    assert_ne!(a.base(), b.base());
    let want = run_program(
        Backend::Interp,
        &mut Jit::new().unwrap(),
        &program,
        &g,
        &Setup::default(),
    );
    for code in [&a, &b] {
        let g2 = Globals::default();
        compile_source(SRC, &g2, &CompileOptions::default()).unwrap();
        let setup = Setup::default();
        let mut regs = setup.regs;
        let mut env = setup.env.clone();
        let mut inv = Invocation {
            regs: &mut regs,
            pseudo: &setup.pseudo,
            globals: &g2,
            host: &mut env,
            limits: setup.limits,
        };
        Runner::new().run(&code.image(), &mut inv).unwrap();
        assert_eq!(env.output_text(), want.output);
        assert_eq!(regs, want.regs);
    }
}

#[test]
fn malformed_bytes_are_errors() {
    let bytes = object().to_bytes();
    for n in 0..bytes.len() {
        assert!(
            CodeObject::from_bytes(&bytes[..n]).is_err(),
            "truncated at {n}"
        );
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(CodeObject::from_bytes(&b).is_err(), "flipped byte {i}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(CodeObject::from_bytes(&longer).is_err());
}

/// Re-seals `bytes` (a changed header) with a valid hash, so only the change is wrong.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len() - 8;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &bytes[..n] {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    bytes[n..].copy_from_slice(&h.to_le_bytes());
    bytes
}

#[test]
fn other_format_versions_are_refused_by_name() {
    let bytes = object().to_bytes();
    for version in [0, 1, 2, VERSION + 1, u32::MAX] {
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&version.to_le_bytes());
        for b in [b.clone(), reseal(b)] {
            let e = CodeObject::from_bytes(&b).unwrap_err().to_string();
            assert!(
                e.contains(&format!("format version {version}"))
                    && e.contains(&format!("reads version {VERSION}")),
                "{e}"
            );
        }
    }
    // A wrong hash is named as such.
    let mut b = bytes.clone();
    let last = b.len() - 1;
    b[last] ^= 1;
    let e = CodeObject::from_bytes(&b).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn usage_sets_describe_the_script_without_its_source() {
    let g = Globals::default();
    let src = "if ($stage == 1) { @ah = @rbx + $core; } else { event_sc(1); } x = @zf;";
    let p = compile_source(src, &g, &CompileOptions::default()).unwrap();
    let o = Jit::new().unwrap().compile(&p).unwrap();
    let back = CodeObject::from_bytes(&o.to_bytes()).unwrap();
    let u = back.usage();
    assert!(back.calls_event_sc());
    assert_eq!(
        u.registers_read().collect::<Vec<_>>(),
        [Register::Rbx, Register::Zf]
    );
    assert_eq!(u.registers_written().collect::<Vec<_>>(), [Register::Ah]);
    assert!(u.changes(Register::Rax) && !u.changes(Register::Rbx));
    assert_eq!(
        u.pseudo_registers_read().collect::<Vec<_>>(),
        [PseudoReg::Core, PseudoReg::EventStage]
    );
    assert!(!object().calls_event_sc());
    assert!(object().usage().writes(Register::Rax));
}

#[test]
fn inconsistent_objects_are_rejected() {
    let good = object();
    let mut o = good.clone();
    o.functions[1].offset = o.code.len() as u32;
    assert!(LoadedCode::<hvscript_runtime::MmapMemory>::load(o).is_err());
    let mut o = good.clone();
    o.strings[0].offset = o.rodata.len() as u32 - 2;
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good.clone();
    o.builtins.push(u16::MAX);
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good.clone();
    o.sites.clear();
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good.clone();
    o.usage.calls_event_sc = true; // but event_sc is not among the built-ins
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good.clone();
    o.usage.regs_read |= 1 << 127; // no such register
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good.clone();
    o.usage.pseudo_read |= 1 << 31; // no such pseudo-register
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
    let mut o = good;
    o.functions.clear();
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = CodeObject::from_bytes(&bytes);
        let mut with_magic = b"HVSCOBJ\0".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = CodeObject::from_bytes(&with_magic);
    }
}
