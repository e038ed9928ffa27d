//! A program's faults: the frame the CPU pushed for the VMM's exception stub, the signal
//! Linux would send for each vector, and the decoding of the faulting instruction (its
//! length, for a short-circuited `!exception` that skips it).
//!
//! Every vector 0..32 enters a VMM-owned stub at CPL0 that is two instructions long,
//! `out (FAULT_PORT_BASE + vector), al; iretq` (with `add rsp, 8` before the `iretq` for
//! vectors that push an error code). The port number carries the vector, so the stub
//! clobbers no register of the program; the VMM reads and edits the frame on the stub's
//! stack, and the `iretq` resumes the program wherever the VMM left the frame's RIP. Each
//! stub instruction is emulated by this KVM (CPL0), so a fault costs two emulated
//! instructions besides the exit.

use iced_x86::{Decoder, DecoderOptions, Instruction};

use crate::memory::GuestMemory;

/// The first of the 32 ports the exception stubs report on (port = base + vector). CPL0
/// code ignores the TSS's I/O bitmap; CPL3 code cannot reach these ports (the bitmap
/// denies them), so a report always comes from a stub.
pub const FAULT_PORT_BASE: u16 = 0xc0;

/// The vectors that push an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Traps report the address *after* the instruction: resuming there skips nothing.
pub fn is_trap(vector: u8) -> bool {
    matches!(vector, 1 | 3 | 4)
}

/// The stub for `vector`: report, drop the error code if any, return.
pub fn stub(vector: u8) -> Vec<u8> {
    let mut code = vec![0xe6, FAULT_PORT_BASE as u8 + vector];
    if has_error_code(vector) {
        code.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]); // add rsp, 8
    }
    code.extend_from_slice(&[0x48, 0xcf]); // iretq
    code
}

/// The signal Linux sends for a fault, and its name.
pub fn signal_of(vector: u8) -> (i32, &'static str) {
    match vector {
        0 => (8, "SIGFPE"),
        1 | 3 => (5, "SIGTRAP"),
        6 => (4, "SIGILL"),
        17 => (7, "SIGBUS"),
        16 | 19 => (8, "SIGFPE"),
        _ => (11, "SIGSEGV"),
    }
}

/// The RFLAGS bits a program may set (through `SYSRET`'s R11 or a script): the status
/// flags, TF, DF, AC and ID; never IOPL or IF, which the VMM owns.
pub const USER_RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000;

/// A program's RFLAGS as the VMM lets it run: `wanted`'s user bits, IF and bit 1 set.
pub fn user_rflags(wanted: u64) -> u64 {
    (wanted & (USER_RFLAGS | 0x20_0000)) | 0x202
}

/// The interrupted context the CPU pushed on the stub's stack.
#[derive(Clone, Copy, Debug)]
pub struct FaultFrame {
    /// Guest address of the RIP slot (virtual = physical for the VMM's pages).
    at: u64,
    pub error_code: Option<u64>,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
}

impl FaultFrame {
    /// The frame of `vector` on the stub's stack, whose RSP at the report is `rsp`.
    pub fn read(mem: &GuestMemory, rsp: u64, vector: u8) -> Result<FaultFrame, String> {
        let word = |at: u64| {
            mem.read_u64(at)
                .map_err(|_| format!("the exception frame at {at:#x} is not in guest memory"))
        };
        let (error_code, at) = if has_error_code(vector) {
            (Some(word(rsp)?), rsp + 8)
        } else {
            (None, rsp)
        };
        Ok(FaultFrame {
            at,
            error_code,
            rip: word(at)?,
            cs: word(at + 8)?,
            rflags: word(at + 16)?,
            rsp: word(at + 24)?,
        })
    }

    /// Whether the program (CPL3) was interrupted, not the VMM's own code.
    pub fn from_program(&self) -> bool {
        self.cs & 3 == 3
    }

    /// Resumes the program at `rip` with `rsp` and (sanitised) `rflags` when the stub's
    /// `iretq` runs.
    pub fn resume_at(
        &self,
        mem: &GuestMemory,
        rip: u64,
        rsp: u64,
        rflags: u64,
    ) -> Result<(), String> {
        let fail = |_| "the exception frame could not be written".to_string();
        mem.write_u64(self.at, rip).map_err(fail)?;
        mem.write_u64(self.at + 16, user_rflags(rflags))
            .map_err(fail)?;
        mem.write_u64(self.at + 24, rsp).map_err(fail)
    }
}

/// The instruction at `rip`, given up to 15 bytes of code read from there (fewer at the
/// end of the mapped code); `None` if they do not hold a whole valid instruction.
pub fn decode(code: &[u8], rip: u64) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

/// The instruction at `rip`, its bytes read with `read` (up to 15, fewer where mapped
/// memory ends); `None` if no whole valid instruction starts there.
pub fn instruction_at(rip: u64, mut read: impl FnMut(&mut [u8]) -> bool) -> Option<Instruction> {
    let mut code = [0u8; 15];
    let mut len = code.len();
    while len > 0 && !read(&mut code[..len]) {
        len -= 1;
    }
    decode(&code[..len], rip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_pop_the_error_code_only_when_there_is_one() {
        assert_eq!(stub(3), [0xe6, 0xc3, 0x48, 0xcf]);
        assert_eq!(stub(14), [0xe6, 0xce, 0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf]);
    }

    #[test]
    fn the_program_cannot_raise_its_privilege_through_rflags() {
        // IOPL = 3, IF clear, VM, RF: none reaches the program.
        assert_eq!(user_rflags(0x3000 | 0x2_0000 | 0x1_0000 | 0x1), 0x203);
        assert_eq!(user_rflags(0x100), 0x302);
    }

    #[test]
    fn decoding_gives_the_length_to_skip() {
        assert_eq!(decode(&[0x0f, 0x0b], 0x1000).map(|i| i.len()), Some(2)); // ud2
        assert_eq!(decode(&[0x0f], 0x1000).map(|i| i.len()), None);
    }
}
