//! What a control socket serves: a running VM's command interpreter and the names its
//! clients compile against. Both guests serve one — the demo VM ([`Vm`]) and a program
//! ([`ProgramSession`]) — and say which they are in the session reply (`guest demo` or
//! `guest program`), so a front end compiles against that guest's rules.

use hv_core::{CommandError, Prepared, SymbolMap};

use crate::debugger::Debugger;
use crate::program::session::ProgramSession;
use crate::vmm::Vm;

/// A VM's side of the control socket.
pub trait ControlSession: Sync {
    /// Runs one command line with what a front end compiled for it.
    fn command(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError>;
    /// The session's global names and slots.
    fn global_names(&self) -> Vec<(String, u32)>;
    /// The names usable in event arguments and scripts.
    fn symbols(&self) -> SymbolMap;
    /// `demo` or `program`: whose rules a front end compiles against.
    fn guest(&self) -> &'static str;
    /// Where consoles break in.
    fn debugger(&self) -> &Debugger;
}

impl ControlSession for Vm {
    fn command(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError> {
        Vm::command(self, line, prepared)
    }
    fn global_names(&self) -> Vec<(String, u32)> {
        Vm::global_names(self)
    }
    fn symbols(&self) -> SymbolMap {
        Vm::symbols(self)
    }
    fn guest(&self) -> &'static str {
        "demo"
    }
    fn debugger(&self) -> &Debugger {
        &self.debugger
    }
}

impl ControlSession for ProgramSession {
    fn command(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError> {
        ProgramSession::command(self, line, prepared)
    }
    fn global_names(&self) -> Vec<(String, u32)> {
        ProgramSession::global_names(self)
    }
    fn symbols(&self) -> SymbolMap {
        ProgramSession::symbols(self)
    }
    fn guest(&self) -> &'static str {
        "program"
    }
    fn debugger(&self) -> &Debugger {
        &self.debugger
    }
}
