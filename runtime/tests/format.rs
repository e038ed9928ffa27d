//! The code-object format without a compiler: a hand-made object round-trips, loads and
//! runs; other versions, truncations, flipped bytes and impossible usage sets are refused
//! with an error, never a panic. (`hvscript-jit`'s `object` test does the same on real
//! compiled scripts.)

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues, Register};
use hvscript_runtime::object::VERSION;
use hvscript_runtime::{
    Arch, CodeObject, FunctionInfo, GlobalSlots, Invocation, Limits, LoadedCode, MmapMemory,
    Runner, SourceRange, Usage,
};
use hvscript_stdlib::{AtomicRmw, Env, MemFault};

/// `xor eax, eax; ret`: a script body that does nothing and reports no error.
fn object() -> CodeObject {
    let mut usage = Usage::default();
    usage.note_read(Register::Rax);
    usage.note_write(Register::Eflags);
    usage.note_pseudo(PseudoReg::Core);
    CodeObject {
        arch: Arch::host().unwrap_or(Arch::X86_64),
        code: vec![0x31, 0xc0, 0xc3],
        functions: vec![FunctionInfo {
            offset: 0,
            size: 3,
            params: 0,
            locals: 2,
        }],
        rodata: Vec::new(),
        strings: Vec::new(),
        global_slots: 1,
        builtins: Vec::new(),
        sites: vec![SourceRange::new(0, 7)],
        usage,
    }
}

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
fn round_trips_with_its_usage_sets() {
    let o = object();
    let back = CodeObject::from_bytes(&o.to_bytes()).unwrap();
    assert_eq!(back, o);
    assert!(back.usage().reads(Register::Rax) && !back.usage().reads(Register::Rbx));
    assert!(back.usage().writes(Register::Eflags) && back.usage().changes(Register::Zf));
    assert!(back.usage().reads_pseudo(PseudoReg::Core));
    assert!(!back.calls_event_sc());
}

#[test]
fn refuses_other_versions_truncations_and_flipped_bytes() {
    let bytes = object().to_bytes();
    for version in [0, 1, 2, VERSION + 1] {
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&version.to_le_bytes());
        let e = CodeObject::from_bytes(&reseal(b)).unwrap_err().to_string();
        assert!(e.contains(&format!("format version {version}")), "{e}");
    }
    for n in 0..bytes.len() {
        assert!(
            CodeObject::from_bytes(&bytes[..n]).is_err(),
            "truncated at {n}"
        );
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(CodeObject::from_bytes(&b).is_err(), "bit {bit} of byte {i}");
        }
    }
}

#[test]
fn refuses_usage_sets_that_name_nothing() {
    let mut o = object();
    o.usage.regs_written |= 1 << 127;
    assert!(CodeObject::from_bytes(&reseal(o.to_bytes())).is_err());
    let mut o = object();
    o.usage.calls_event_sc = true;
    assert!(CodeObject::from_bytes(&o.to_bytes()).is_err());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn loads_and_runs_without_a_compiler() {
    let code: LoadedCode<MmapMemory> = LoadedCode::from_bytes(&object().to_bytes()).unwrap();
    let globals = GlobalSlots::default();
    let mut regs = GuestRegs::default();
    let mut env = NoEnv;
    let mut inv = Invocation {
        regs: &mut regs,
        pseudo: &PseudoValues::default(),
        globals: &globals,
        host: &mut env,
        limits: Limits::default(),
    };
    let stats = Runner::new().run(&code.image(), &mut inv).unwrap();
    assert_eq!(stats.fuel_used, 0);
}

/// An environment with no guest memory and nowhere to print.
struct NoEnv;

impl Env for NoEnv {
    fn read(&mut self, _addr: u64, _buf: &mut [u8]) -> Result<(), MemFault> {
        Err(MemFault::Invalid)
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Invalid)
    }
    fn atomic_rmw_u64(&mut self, _addr: u64, _op: AtomicRmw) -> Result<u64, MemFault> {
        Err(MemFault::Invalid)
    }
    fn cmpxchg_u32(&mut self, _addr: u64, _expected: u32, _new: u32) -> Result<u32, MemFault> {
        Err(MemFault::Invalid)
    }
    fn output(&mut self, _bytes: &[u8]) {}
    fn test_statement(&mut self, _value: u64) {}
}
