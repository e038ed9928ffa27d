//! What an event runs: any compiled form of a script, behind one object-safe trait.
//!
//! hv-core never links the compiler. The embedder hands it [`Script`]s: JIT code objects
//! loaded by the runtime ([`crate::CodeScript`]) on platforms that can execute generated
//! code, or IR for the interpreter elsewhere.
//! hv-core supplies the environment each execution sees (guest memory, output, the
//! short-circuit flag, event requests) as a [`hvscript_stdlib::Env`].

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_stdlib::Env;

/// Why an execution ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptFailure {
    /// The fuel budget ran out (an endless loop); the located message when the script
    /// knows where it was (`line:col: fuel exhausted: ...`).
    FuelExhausted(Option<alloc::string::String>),
    /// Any other run-time error (faulting read, division by zero, ...), with its message.
    Error(alloc::string::String),
}

/// A loaded, runnable script.
pub trait Script: Send + Sync {
    /// Runs the script once. `regs` are the vCPU's registers (writes are seen by the
    /// emulation in pre and by the guest in post), `pseudo` the invocation's pseudo-registers.
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure>;

    /// Whether the script can call `event_sc` (used to refuse `stage post` scripts that do).
    fn uses_short_circuit(&self) -> bool {
        true
    }

    /// Whether the script can read `$reg`: the engine prepares the costly ones (`$date`,
    /// `$time`) only for scripts that read them.
    fn reads_pseudo(&self, _reg: PseudoReg) -> bool {
        true
    }

    /// Whether the script can print (call a built-in: printf, print, or one that warns).
    /// The engine takes its vCPU's output ring before such a script runs; for the others
    /// only if they print after all (a run-time error), so an exit whose scripts print
    /// nothing pays nothing for output.
    fn may_output(&self) -> bool {
        true
    }
}
