//! [`Usage`]: what a code object says about itself so a hypervisor can vet a script without
//! its source or the compiler — which guest registers it reads and writes, which
//! pseudo-registers it reads, and whether it calls `event_sc` (may short-circuit).
//!
//! The JIT computes it from the IR it compiled (every `ReadReg`, `WriteReg`, `ReadPseudo`
//! and `CallBuiltin` of every function, reachable or not, so it over-approximates: a name
//! in the set may never be touched at run time, one outside it never is). The code object
//! carries it in its format and [`CodeObject::validate`](crate::CodeObject::validate)
//! refuses sets naming registers that do not exist.

use hvscript_abi::pseudo::PSEUDO_REG_COUNT;
use hvscript_abi::{PseudoReg, Register};

/// Register and pseudo-register sets, by [`Register`] id and [`PseudoReg::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Bit `r as u8` set: the script reads register `r` (by that name).
    pub regs_read: u128,
    /// Bit `r as u8` set: the script writes register `r` (by that name).
    pub regs_written: u128,
    /// Bit `p.index()` set: the script reads pseudo-register `p`.
    pub pseudo_read: u32,
    /// The script calls `event_sc` (can short-circuit the event).
    pub calls_event_sc: bool,
}

// The sets must have room for every name the ABI has.
const _: () = assert!(Register::ALL.len() <= 128 && PSEUDO_REG_COUNT <= 32);

fn reg_bit(reg: Register) -> u128 {
    1u128 << (reg as u8)
}

impl Usage {
    pub fn note_read(&mut self, reg: Register) {
        self.regs_read |= reg_bit(reg);
    }

    pub fn note_write(&mut self, reg: Register) {
        self.regs_written |= reg_bit(reg);
    }

    pub fn note_pseudo(&mut self, reg: PseudoReg) {
        self.pseudo_read |= 1 << reg.index();
    }

    pub fn reads(&self, reg: Register) -> bool {
        self.regs_read & reg_bit(reg) != 0
    }

    pub fn writes(&self, reg: Register) -> bool {
        self.regs_written & reg_bit(reg) != 0
    }

    /// Whether any name the script writes changes `reg`'s storage: writing `@eax` or `@ah`
    /// changes `@rax`, writing `@zf` changes `@rflags`.
    pub fn changes(&self, reg: Register) -> bool {
        let slot = reg.field().slot;
        self.registers_written().any(|r| r.field().slot == slot)
    }

    pub fn reads_pseudo(&self, reg: PseudoReg) -> bool {
        self.pseudo_read & (1 << reg.index()) != 0
    }

    pub fn registers_read(&self) -> impl Iterator<Item = Register> + '_ {
        Register::ALL.iter().copied().filter(|&r| self.reads(r))
    }

    pub fn registers_written(&self) -> impl Iterator<Item = Register> + '_ {
        Register::ALL.iter().copied().filter(|&r| self.writes(r))
    }

    pub fn pseudo_registers_read(&self) -> impl Iterator<Item = PseudoReg> + '_ {
        PseudoReg::ALL
            .iter()
            .copied()
            .filter(|&p| self.reads_pseudo(p))
    }

    /// Whether every bit names a register or pseudo-register that exists.
    pub(crate) fn is_valid(&self) -> bool {
        let regs = Register::ALL.len() as u32;
        let known = if regs == 128 {
            u128::MAX
        } else {
            (1u128 << regs) - 1
        };
        let pseudo = if PSEUDO_REG_COUNT == 32 {
            u32::MAX
        } else {
            (1u32 << PSEUDO_REG_COUNT) - 1
        };
        (self.regs_read | self.regs_written) & !known == 0 && self.pseudo_read & !pseudo == 0
    }
}
