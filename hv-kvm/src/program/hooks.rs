//! `!epthook` / `!epthook2` on a program's code: software breakpoints, any number of them.
//!
//! Hardware breakpoints do not exit at CPL3 on this KVM (`../shared/spec/kvm.md`), so a
//! hook is an `int3` (0xCC) written over the first byte of the hooked instruction. The
//! program's `int3` goes through the IDT (vector 3's gate has DPL 3) to the VMM's stub
//! ([`super::faults`]), which reports it; the events run with RIP = the hooked address
//! and the registers as the program had them, then the program resumes *without* the
//! original instruction having to be put back:
//!
//! - most instructions run from a **trampoline**: a copy of the instruction relocated by
//!   iced-x86's block encoder (RIP-relative operands and branches keep their targets)
//!   followed by `jmp` back to the next instruction, in a code area the VMM maps near the
//!   program's image (so RIP-relative displacements stay in range);
//! - a `call` is **emulated** by the VMM (return address pushed, RIP = the target,
//!   computed from the registers the scripts left), so the stack holds the program's own
//!   return address and unwinders see the stack they expect.
//!
//! One exit per hit, and nothing is re-armed. A script that changes `@rip` redirects the
//! program there instead (the hooked instruction does not run). The cost the user should
//! know: the program reading its own code at a hooked address sees 0xCC (the VMM cannot
//! make code pages execute-only for the program at CPL3); scripts (`db`, `dq`) and the
//! debugger (`db`, `u`) are shown the original byte. Removing a hook puts the original byte back; trampolines are not
//! reused.

use std::collections::BTreeMap;

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, FlowControl, Instruction, InstructionBlock, Mnemonic,
    OpKind, Register,
};

use hvscript_abi::GuestRegs;

use super::faults::instruction_at;
use super::memory_map::{MemoryMap, Prot, PAGE};
use super::syscalls::Guest;

/// The size of the trampoline area, and the room one trampoline may take.
pub const AREA_SIZE: u64 = 0x10_0000;
const MAX_TRAMPOLINE: u64 = 64;

/// How the program resumes after a hook's events.
#[derive(Clone, Debug)]
enum Resume {
    /// Run the relocated instruction at this address; it jumps back.
    Trampoline(u64),
    /// Emulate this call.
    Call(Instruction),
}

#[derive(Clone, Debug)]
struct Site {
    original: u8,
    resume: Resume,
}

/// The hooked addresses of a program, and its trampoline area.
pub struct Hooks {
    sites: BTreeMap<u64, Site>,
    /// The trampoline area: its start, the next free byte, and whether it is mapped yet.
    area: u64,
    next: u64,
    mapped: bool,
}

/// Where the program goes after a hook.
#[derive(Debug, PartialEq, Eq)]
pub struct Continue {
    pub rip: u64,
    pub rsp: u64,
}

impl Hooks {
    /// No hooks yet; trampolines will go at `area` (mapped at the first one).
    pub fn new(area: u64) -> Hooks {
        Hooks {
            sites: BTreeMap::new(),
            area,
            next: area,
            mapped: false,
        }
    }

    /// The hooked addresses.
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.sites.keys().copied()
    }

    /// Each hooked address with the byte the `int3` covers.
    pub fn originals(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.sites.iter().map(|(&a, s)| (a, s.original))
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.sites.contains_key(&addr)
    }

    /// Hooks `addr`, which must start an instruction in the program's executable memory.
    pub fn install<G: Guest>(
        &mut self,
        space: &mut G,
        memory: &mut MemoryMap,
        addr: u64,
    ) -> Result<(), String> {
        if self.sites.contains_key(&addr) {
            return Ok(());
        }
        if !memory.prot(addr).is_some_and(|p| p.execute) {
            return Err(format!(
                "{addr:#x} is not in the program's executable memory"
            ));
        }
        let instruction = instruction_at(addr, |b| space.read(addr, b))
            .ok_or_else(|| format!("no valid instruction starts at {addr:#x}"))?;
        // `call` only: SYSCALL and the like count as calls to iced, and run from a
        // trampoline as they are.
        let call = instruction.mnemonic() == Mnemonic::Call
            && matches!(
                instruction.flow_control(),
                FlowControl::Call | FlowControl::IndirectCall
            );
        let resume = match call {
            true if is_far(&instruction) => {
                return Err(format!("the far call at {addr:#x} cannot be hooked"))
            }
            true => Resume::Call(instruction),
            false => Resume::Trampoline(self.trampoline(space, memory, &instruction)?),
        };
        let mut original = [0u8];
        space.read(addr, &mut original);
        let original = original[0];
        if !space.write(addr, &[0xcc]) {
            return Err(format!("the code at {addr:#x} could not be patched"));
        }
        self.sites.insert(addr, Site { original, resume });
        Ok(())
    }

    /// Unhooks `addr`: its original byte is back.
    pub fn remove<G: Guest>(&mut self, space: &mut G, addr: u64) {
        if let Some(site) = self.sites.remove(&addr) {
            space.write(addr, &[site.original]);
        }
    }

    /// Relocates `instruction` into the trampoline area, followed by a jump back.
    fn trampoline<G: Guest>(
        &mut self,
        space: &mut G,
        memory: &mut MemoryMap,
        instruction: &Instruction,
    ) -> Result<u64, String> {
        let at = self.next;
        if at + MAX_TRAMPOLINE > self.area + AREA_SIZE {
            return Err(format!(
                "the trampoline area is full ({} hooks)",
                self.sites.len()
            ));
        }
        if !self.mapped {
            let prot = Prot {
                read: true,
                write: false,
                execute: true,
            };
            if (self.area..self.area + AREA_SIZE)
                .step_by(PAGE as usize)
                .any(|p| memory.is_mapped(p))
            {
                return Err(format!(
                    "the trampoline area at {:#x} overlaps the program's memory",
                    self.area
                ));
            }
            space
                .map(self.area, AREA_SIZE, prot)
                .map_err(|_| "no guest memory left for the trampoline area".to_string())?;
            memory.insert(self.area, AREA_SIZE, prot);
            self.mapped = true;
        }
        let back = Instruction::with_branch(Code::Jmp_rel32_64, instruction.next_ip())
            .map_err(|e| e.to_string())?;
        let block = [*instruction, back];
        let encoded = BlockEncoder::encode(
            64,
            InstructionBlock::new(&block, at),
            BlockEncoderOptions::NONE,
        )
        .map_err(|e| {
            format!(
                "the instruction at {:#x} cannot be relocated: {e}",
                instruction.ip()
            )
        })?;
        let bytes = encoded.code_buffer;
        if bytes.len() as u64 > MAX_TRAMPOLINE || !space.write(at, &bytes) {
            return Err(format!(
                "the instruction at {:#x} cannot be relocated",
                instruction.ip()
            ));
        }
        self.next = at + MAX_TRAMPOLINE;
        Ok(at)
    }

    /// Where the program continues after the hook at `addr` ran its events with `regs`
    /// (`fs_base`/`gs_base` for segment-relative operands). `None` when the hooked call's
    /// target cannot be read: the program then faults as it would have without the hook.
    pub fn resume<G: Guest>(
        &self,
        space: &mut G,
        addr: u64,
        regs: &GuestRegs,
        fs_base: u64,
        gs_base: u64,
    ) -> Option<Continue> {
        let site = self.sites.get(&addr)?;
        match &site.resume {
            Resume::Trampoline(at) => Some(Continue {
                rip: *at,
                rsp: regs.rsp,
            }),
            Resume::Call(call) => {
                let target = match call.op0_kind() {
                    OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => {
                        call.near_branch_target()
                    }
                    OpKind::Register => register(regs, fs_base, gs_base, call.op0_register())?,
                    OpKind::Memory => {
                        let at = call
                            .virtual_address(0, 0, |r, _, _| register(regs, fs_base, gs_base, r))?;
                        let mut b = [0u8; 8];
                        if !space.read(at, &mut b) {
                            return None;
                        }
                        u64::from_le_bytes(b)
                    }
                    _ => return None,
                };
                let rsp = regs.rsp.wrapping_sub(8);
                if !space.write(rsp, &call.next_ip().to_le_bytes()) {
                    return None;
                }
                Some(Continue { rip: target, rsp })
            }
        }
    }
}

fn is_far(call: &Instruction) -> bool {
    matches!(call.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || matches!(
            call.code(),
            Code::Call_m1664 | Code::Call_m1632 | Code::Call_m1616
        )
}

/// A register's value for operand computations (segment bases: FS and GS only, as in
/// long mode).
pub(super) fn register(regs: &GuestRegs, fs_base: u64, gs_base: u64, r: Register) -> Option<u64> {
    let full = match r.full_register() {
        Register::RAX => regs.rax,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RBX => regs.rbx,
        Register::RSP => regs.rsp,
        Register::RBP => regs.rbp,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        Register::RIP => regs.rip,
        // Segment bases are whole addresses, not 16-bit values.
        Register::ES | Register::CS | Register::SS | Register::DS => return Some(0),
        Register::FS => return Some(fs_base),
        Register::GS => return Some(gs_base),
        _ => return None,
    };
    Some(match r.size() {
        4 => full & 0xffff_ffff,
        2 => full & 0xffff,
        1 => full & 0xff,
        _ => full,
    })
}
