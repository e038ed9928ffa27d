//! The host context HyperDbg's own script-engine test harness gives a script
//! (`ScriptEngineWrapperTestParser`, notes-language.md §5.3), rebuilt at fixed guest
//! addresses in a [`HostEnv`]'s simulated memory, and the generator's register values for
//! the `script-test-cases` records.
//!
//! This module owns the layout: where `STUPID_STRUCT2`, its strings, `testw`,
//! `"Hello world !"`, the stack buffer and the process name live, and what every register
//! and pseudo-register reads. HyperDbg's harness runs in user mode inside `hyperdbg-cli.exe`,
//! so `$pname` points at that name. Values HyperDbg takes from the real process (`$pid`,
//! `$tid`, `$core`, `$peb`) are fixed here so that runs are reproducible; see [`PID`].

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_lang::{HostEnv, Stage};

/// `STUPID_STRUCT2`, pointed to by `@rcx`.
pub const STRUCT2_ADDR: u64 = 0x0001_0000;
/// Its `UNICODE_STRING` (+0x18 of `STUPID_STRUCT2` points here).
pub const STRUCT2_USTR_ADDR: u64 = 0x0001_0100;
/// The `STUPID_STRUCT1` that +0x20 of `STUPID_STRUCT2` points to.
pub const STRUCT1_ADDR: u64 = 0x0001_0200;
/// `STUPID_STRUCT1`'s `UNICODE_STRING`.
pub const STRUCT1_USTR_ADDR: u64 = 0x0001_0300;
/// The UTF-16 text of `STUPID_STRUCT2`'s `UNICODE_STRING`.
pub const STRUCT2_TEXT_ADDR: u64 = 0x0001_0400;
/// The UTF-16 text of `STUPID_STRUCT1`'s `UNICODE_STRING`.
pub const STRUCT1_TEXT_ADDR: u64 = 0x0001_0500;
/// `testw`, pointed to by `@r14`.
pub const TESTW_ADDR: u64 = 0x0001_1000;
/// `"Hello world !"`, pointed to by `@r15`.
pub const HELLO_ADDR: u64 = 0x0001_2000;
/// The process name `$pname` points to.
pub const PNAME_ADDR: u64 = 0x0001_3000;
/// The `malloc(0x100)` buffer that `@rsp` points into (at +0x50).
pub const STACK_BUFFER_ADDR: u64 = 0x0002_0000;
/// The size of that buffer. The host maps whole pages, so the rest of its page is mapped too.
pub const STACK_BUFFER_SIZE: u64 = 0x100;

/// `$pid` (HyperDbg reads the debugger's real id; fixed here for reproducible output).
pub const PID: u64 = 0x1f40;
/// `$tid` (fixed, as `$pid`).
pub const TID: u64 = 0x1f44;
/// `$core` (fixed: the harness runs on one core).
pub const CORE: u64 = 0;

/// The wide string `testw` of HyperDbg's harness: letters and digits separated by spaces.
pub fn testw_text() -> String {
    let chars: Vec<String> = ('A'..='Z')
        .chain('0'..='9')
        .chain('a'..='z')
        .map(String::from)
        .collect();
    chars.join(" ")
}

/// The process HyperDbg's harness runs in (user mode: the full name, not the 15-character
/// `EPROCESS.ImageFileName`).
pub const PROCESS_NAME: &str = "hyperdbg-cli.exe";

fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn unicode_string(text_addr: u64, text: &str) -> Vec<u8> {
    let len = (text.encode_utf16().count() * 2) as u16;
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&(len + 2).to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&text_addr.to_le_bytes());
    b
}

/// HyperDbg's `script-test-cases` register values (the generator used the same, with
/// `@rsp = 5`): rax=1 rdx=3 rbx=4 rsp=5 rbp=6 rsi=7 rdi=8 r8..r13 = 9..0xe; everything else 0.
pub fn generator_regs() -> GuestRegs {
    GuestRegs {
        rax: 1,
        rdx: 3,
        rbx: 4,
        rsp: 5,
        rbp: 6,
        rsi: 7,
        rdi: 8,
        r8: 9,
        r9: 0xa,
        r10: 0xb,
        r11: 0xc,
        r12: 0xd,
        r13: 0xe,
        ..GuestRegs::default()
    }
}

/// Pseudo-registers as the user-mode evaluator of HyperDbg's harness gives them (§1.8, user
/// column): `$pid $tid $core $pname` real (fixed here), everything else 0.
pub fn harness_pseudo() -> PseudoValues {
    let mut p = PseudoValues::default();
    p.set(PseudoReg::Pid, PID);
    p.set(PseudoReg::Tid, TID);
    p.set(PseudoReg::Core, CORE);
    p.set(PseudoReg::Pname, PNAME_ADDR);
    p
}

/// The full context of HyperDbg's harness for the semantic suite: registers, guest memory
/// (structures, strings, the stack buffer) and pseudo-registers, in the pre stage.
pub fn hyperdbg_harness() -> (GuestRegs, PseudoValues, HostEnv) {
    let mut env = HostEnv::new(Stage::Pre);
    let m = &mut env.memory;

    // STUPID_STRUCT2 (natural x64 layout).
    let mut s2 = Vec::new();
    s2.extend_from_slice(&0x32u32.to_le_bytes());
    s2.extend_from_slice(&[0u8; 4]);
    s2.extend_from_slice(&0x64u64.to_le_bytes());
    s2.extend_from_slice(&0x55u64.to_le_bytes());
    s2.extend_from_slice(&STRUCT2_USTR_ADDR.to_le_bytes());
    s2.extend_from_slice(&STRUCT1_ADDR.to_le_bytes());
    m.load(STRUCT2_ADDR, &s2);
    let text2 = "Goodbye I'm at stupid struct 2!";
    m.load(STRUCT2_USTR_ADDR, &unicode_string(STRUCT2_TEXT_ADDR, text2));
    m.load(STRUCT2_TEXT_ADDR, &utf16z(text2));

    // STUPID_STRUCT1.
    let mut s1 = Vec::new();
    s1.extend_from_slice(&0x3232u32.to_le_bytes());
    s1.extend_from_slice(&[0u8; 4]);
    s1.extend_from_slice(&0x6464u64.to_le_bytes());
    s1.extend_from_slice(&0x85u64.to_le_bytes());
    s1.extend_from_slice(&STRUCT1_USTR_ADDR.to_le_bytes());
    m.load(STRUCT1_ADDR, &s1);
    let text1 = "Hi come from stupid struct 1!";
    m.load(STRUCT1_USTR_ADDR, &unicode_string(STRUCT1_TEXT_ADDR, text1));
    m.load(STRUCT1_TEXT_ADDR, &utf16z(text1));

    // testw, "Hello world !", the process name.
    let testw = utf16z(&testw_text());
    m.load(TESTW_ADDR, &testw);
    m.load(HELLO_ADDR, b"Hello world !\0");
    let mut pname = PROCESS_NAME.as_bytes().to_vec();
    pname.push(0);
    m.load(PNAME_ADDR, &pname);

    // The stack buffer: malloc(0x100) starting with a copy of testw; rsp = buffer + 0x50.
    m.map(STACK_BUFFER_ADDR, STACK_BUFFER_SIZE);
    let n = testw.len().min(STACK_BUFFER_SIZE as usize);
    m.load(STACK_BUFFER_ADDR, &testw[..n]);

    let regs = GuestRegs {
        rax: 1,
        rcx: STRUCT2_ADDR,
        rdx: 3,
        rbx: 4,
        rsp: STACK_BUFFER_ADDR + 0x50,
        rbp: 6,
        rsi: 7,
        rdi: 8,
        r8: 9,
        r9: 0xa,
        r10: 0xb,
        r11: 0xc,
        r12: 0xd,
        r13: 0xe,
        r14: TESTW_ADDR,
        r15: HELLO_ADDR,
        ..GuestRegs::default()
    };
    (regs, harness_pseudo(), env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvscript_stdlib::Env;

    #[test]
    fn layout() {
        let (regs, pseudo, mut env) = hyperdbg_harness();
        let mut b = [0u8; 8];
        env.read(regs.rcx + 0x20, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), STRUCT1_ADDR);
        env.read(regs.rsp - 0x50, &mut b[..2]).unwrap();
        assert_eq!(&b[..2], b"A\0");
        assert_eq!(testw_text().len(), 123);
        env.read(pseudo.get(PseudoReg::Pname), &mut b).unwrap();
        assert_eq!(&b, b"hyperdbg");
    }
}
