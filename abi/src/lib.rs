//! The contract between the hvscript compiler and every runtime that executes scripts.
//!
//! Everything here is plain data with a fixed meaning, shared by the parser (names),
//! the interpreter and the JIT (offsets, widths), the built-in library (ids) and the
//! hypervisor event engine (the register file it fills from a vCPU). It is `no_std`
//! and has no dependencies, so the runtime side never has to link the compiler.
#![no_std]

pub mod builtins;
pub mod exec;
pub mod number;
pub mod pseudo;
pub mod regs;
pub mod stage;

pub use builtins::{ArgKind, Builtin, BuiltinInfo, CallShape};
pub use exec::{
    BuiltinFn, CallRecord, EntryFn, ExecCtx, ExecError, MemoryAccess, MemoryFn, TlbEntry,
};
pub use pseudo::{PseudoReg, PseudoValues};
pub use regs::{GuestRegs, RegField, Register, GUEST_REG_SLOTS};
pub use stage::Stage;
