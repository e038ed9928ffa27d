//! `disassemble_len`, `disassemble_len64` and `disassemble_len32`: the length of the
//! instruction at an address, decoded with iced-x86 (no_std, decoder only).
//!
//! Up to 15 bytes are read; when they are not all readable (the instruction sits at the
//! end of the mapped memory), as many as can be read. A result of 0 means "does not decode",
//! which includes "nothing readable there", as in HyperDbg.

use iced_x86::{Decoder, DecoderOptions};

use crate::env::{Env, MemFault, Unavailable};
use crate::error::{ScriptError, Space};
use crate::memory::{raw_read, PAGE_SIZE};
use hvscript_abi::Builtin;

/// The longest x86 instruction.
const MAX_INSN: usize = 15;

/// Reads as many of the 15 bytes at `addr` as are readable; the count.
fn read_insn_bytes(
    env: &mut dyn Env,
    addr: u64,
    buf: &mut [u8; MAX_INSN],
) -> Result<usize, Unavailable> {
    match raw_read(env, Space::Virtual, addr, buf) {
        Ok(()) => return Ok(MAX_INSN),
        Err(MemFault::Unavailable(u)) => return Err(u),
        Err(MemFault::Invalid) => {}
    }
    // Up to the end of the page first (the usual case), then byte by byte for environments
    // whose holes are finer than a page.
    let to_page_end = (PAGE_SIZE - addr % PAGE_SIZE).min(MAX_INSN as u64) as usize;
    if to_page_end < MAX_INSN
        && raw_read(env, Space::Virtual, addr, &mut buf[..to_page_end]).is_ok()
    {
        return Ok(to_page_end);
    }
    let mut n = 0;
    while n < MAX_INSN {
        let Some(at) = addr.checked_add(n as u64) else {
            break;
        };
        if raw_read(env, Space::Virtual, at, &mut buf[n..n + 1]).is_err() {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// The length of the instruction at `addr` in 64-bit (`bits64`) or 32-bit mode, or 0.
pub(crate) fn disassemble_len(
    env: &mut dyn Env,
    b: Builtin,
    addr: u64,
    bits64: bool,
) -> Result<u64, ScriptError> {
    let mut buf = [0u8; MAX_INSN];
    let n = read_insn_bytes(env, addr, &mut buf).map_err(|u| ScriptError::Unavailable {
        builtin: b,
        reason: u.0,
    })?;
    if n == 0 {
        return Ok(0);
    }
    let bitness = if bits64 { 64 } else { 32 };
    let ip = if bits64 { addr } else { addr & 0xffff_ffff };
    let Ok(mut decoder) = Decoder::try_with_ip(bitness, &buf[..n], ip, DecoderOptions::NONE) else {
        return Ok(0);
    };
    let insn = decoder.decode();
    if insn.is_invalid() {
        Ok(0)
    } else {
        Ok(insn.len() as u64)
    }
}
