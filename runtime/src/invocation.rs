//! What one run of a script needs from its caller ([`Invocation`]), the bounds it runs
//! within ([`Limits`]) and what a successful run reports ([`RunStats`]). The same for every
//! back end: the interpreter (`hvscript-lang`) and the [`Runner`](crate::Runner).

use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_stdlib::Env;

use crate::globals::GlobalSlots;

/// Bounds of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Loop iterations plus function calls.
    pub fuel: u64,
    /// Nested user-function calls.
    pub max_call_depth: u32,
    /// 64-bit local slots for all active calls together.
    pub stack_slots: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // HyperDbg stops a run after 1 000 000 executed IR symbols; a back edge here is a
        // whole loop iteration, so the same number is a generous budget.
        Limits {
            fuel: 1_000_000,
            max_call_depth: 256,
            stack_slots: 16 * 1024,
        }
    }
}

/// What one run needs from its caller.
pub struct Invocation<'a> {
    pub regs: &'a mut GuestRegs,
    pub pseudo: &'a PseudoValues,
    pub globals: &'a GlobalSlots,
    pub host: &'a mut dyn Env,
    pub limits: Limits,
}

/// How a successful run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub fuel_used: u64,
}
