//! Tests of `disassemble_len`, `disassemble_len64` and `disassemble_len32` on known
//! instructions, in both modes, near unreadable memory.

mod common;

use common::{callv, TestEnv, MEM};
use hvscript_abi::Builtin;

fn len_of(bytes: &[u8], b: Builtin) -> u64 {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, bytes);
    callv(&mut env, b, &[0x1100]).unwrap()
}

#[test]
fn known_64_bit_lengths() {
    let cases: &[(&[u8], u64)] = &[
        (&[0x90], 1),                                     // nop
        (&[0xc3], 1),                                     // ret
        (&[0x0f, 0x05], 2),                               // syscall
        (&[0x0f, 0xa2], 2),                               // cpuid
        (&[0x48, 0x89, 0xd8], 3),                         // mov rax, rbx
        (&[0x8b, 0x05, 0x78, 0x56, 0x34, 0x12], 6),       // mov eax, [rip+0x12345678]
        (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], 10),      // mov rax, imm64
        (&[0xe8, 0, 0, 0, 0], 5),                         // call rel32
        (&[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08], 6),       // palignr xmm0, xmm1, 8
        (&[0xc4, 0xe2, 0x7d, 0x18, 0x05, 0, 0, 0, 0], 9), // vbroadcastss ymm0, [rip]
    ];
    for &(bytes, want) in cases {
        assert_eq!(len_of(bytes, Builtin::DisassembleLen), want, "{bytes:02x?}");
        assert_eq!(
            len_of(bytes, Builtin::DisassembleLen64),
            want,
            "{bytes:02x?}"
        );
    }
}

#[test]
fn thirty_two_bit_mode_decodes_differently() {
    // 0x48 is `dec eax` in 32-bit mode, a REX prefix in 64-bit mode.
    let mov_imm64 = [0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(len_of(&mov_imm64, Builtin::DisassembleLen32), 1);
    assert_eq!(len_of(&[0xb8, 1, 2, 3, 4], Builtin::DisassembleLen32), 5);
    // `push es` exists only in 32-bit mode.
    assert_eq!(len_of(&[0x06], Builtin::DisassembleLen32), 1);
    assert_eq!(len_of(&[0x06], Builtin::DisassembleLen64), 0);
    // 16-bit operand size in 32-bit mode: mov ax, imm16.
    assert_eq!(len_of(&[0x66, 0xb8, 1, 2], Builtin::DisassembleLen32), 4);
}

#[test]
fn invalid_and_truncated_instructions_are_zero() {
    // Fifteen prefixes and no opcode: longer than any instruction.
    assert_eq!(len_of(&[0x66; 15], Builtin::DisassembleLen), 0);
    let mut env = TestEnv::new(MEM);
    env.holes.push(0x2000..0x2100);
    // `ret` on the last readable byte decodes.
    env.put(0x1fff, &[0xc3]);
    assert_eq!(callv(&mut env, Builtin::DisassembleLen, &[0x1fff]), Ok(1));
    // `mov rax, imm64` cut by the hole does not.
    env.put(0x1ffa, &[0x48, 0xb8, 1, 2, 3, 4]);
    assert_eq!(callv(&mut env, Builtin::DisassembleLen, &[0x1ffa]), Ok(0));
    // A hole inside a page: only the readable prefix is decoded.
    env.holes.push(0x3005..0x3006);
    env.put(0x3000, &[0x0f, 0x05, 0, 0, 0]);
    assert_eq!(callv(&mut env, Builtin::DisassembleLen, &[0x3000]), Ok(2));
    // Nothing readable at all.
    for b in [
        Builtin::DisassembleLen,
        Builtin::DisassembleLen32,
        Builtin::DisassembleLen64,
    ] {
        assert_eq!(callv(&mut env, b, &[0x2000]), Ok(0));
        assert_eq!(callv(&mut env, b, &[u64::MAX]), Ok(0));
    }
}
