//! Disassembly of a code object's machine code (Intel syntax, via iced-x86), for
//! `hvscript eval --jit --dump-asm`.

use std::fmt::Write;

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

use hvscript_runtime::{Arch, CodeObject};

/// Every function of `object`, disassembled, with offsets relative to the code's start.
pub fn disassemble(object: &CodeObject) -> String {
    let mut out = String::new();
    if object.arch != Arch::X86_64 {
        let _ = writeln!(out, "; disassembly is only available for x86-64 code");
        return out;
    }
    let mut formatter = IntelFormatter::new();
    formatter.options_mut().set_first_operand_char_index(10);
    for (i, f) in object.functions.iter().enumerate() {
        let start = f.offset as usize;
        let end = (start + f.size as usize).min(object.code.len());
        let Some(code) = object.code.get(start..end) else {
            continue;
        };
        let _ = writeln!(
            out,
            "; fn{i} (params {}, locals {}, {} bytes)",
            f.params, f.locals, f.size
        );
        let mut decoder = Decoder::with_ip(64, code, start as u64, DecoderOptions::NONE);
        let mut inst = Instruction::default();
        let mut text = String::new();
        while decoder.can_decode() {
            decoder.decode_out(&mut inst);
            text.clear();
            formatter.format(&inst, &mut text);
            let at = inst.ip() as usize - start;
            let bytes: String = code[at..at + inst.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = writeln!(out, "{:08x}  {bytes:<24} {text}", inst.ip());
        }
        out.push('\n');
    }
    out
}
