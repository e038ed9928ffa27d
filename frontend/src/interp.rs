//! [`InterpScript`]: IR run by script-lang's interpreter (the reference back end) as an
//! [`hv_core::Script`] — what `run --interp` hands an in-process hypervisor instead of a
//! code object.

use std::cell::RefCell;
use std::sync::Arc;

use hv_core::{Script, ScriptFailure};
use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_lang::{Globals, Interpreter, Invocation, Limits, Program, RunErrorKind};
use hvscript_stdlib::Env;

/// Where a script came from: its command line and the script's offset in it, so a run-time
/// error names the line and column of the failing expression as a compile error would.
#[derive(Clone, Debug)]
pub struct ScriptOrigin {
    command: Arc<str>,
    offset: usize,
}

impl ScriptOrigin {
    pub fn new(command: &str, offset: usize) -> ScriptOrigin {
        ScriptOrigin {
            command: command.into(),
            offset,
        }
    }

    /// `line:col: message` for an error at script byte `at`.
    fn locate(&self, at: usize, message: &str) -> String {
        let (line, col) = hv_core::code_script::line_col(&self.command, self.offset + at);
        format!("{line}:{col}: {message}")
    }
}

thread_local! {
    /// One interpreter (and its stack) per vCPU thread, reused across exits.
    static INTERPRETER: RefCell<Interpreter> = RefCell::default();
}

/// A script run by script-lang's interpreter.
pub struct InterpScript {
    program: Program,
    globals: Arc<Globals>,
    limits: Limits,
    uses_sc: bool,
    uses_clock: bool,
    origin: ScriptOrigin,
}

impl InterpScript {
    pub fn new(
        program: Program,
        globals: Arc<Globals>,
        limits: Limits,
        origin: ScriptOrigin,
    ) -> InterpScript {
        InterpScript {
            uses_sc: calls_event_sc(&program),
            uses_clock: reads_pseudo(&program, PseudoReg::Date)
                || reads_pseudo(&program, PseudoReg::Time),
            program,
            globals,
            limits,
            origin,
        }
    }
}

impl Script for InterpScript {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let mut invocation = Invocation {
            regs,
            pseudo,
            globals: &self.globals,
            host: env,
            limits: self.limits,
        };
        // This thread's interpreter keeps its stack across exits; a re-entered call (a
        // script running a script) gets a fresh one.
        let result = INTERPRETER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut interp) => interp.run(&self.program, &mut invocation),
            Err(_) => Interpreter::default().run(&self.program, &mut invocation),
        });
        result.map(|_| ()).map_err(|e| {
            let text = self.origin.locate(e.span.start as usize, &e.message());
            match e.kind {
                RunErrorKind::FuelExhausted(_) => ScriptFailure::FuelExhausted(Some(text)),
                _ => ScriptFailure::Error(text),
            }
        })
    }

    fn uses_short_circuit(&self) -> bool {
        self.uses_sc
    }

    fn reads_pseudo(&self, reg: PseudoReg) -> bool {
        !matches!(reg, PseudoReg::Date | PseudoReg::Time) || self.uses_clock
    }
}

fn insts(program: &Program) -> impl Iterator<Item = &hvscript_lang::ir::Inst> {
    program
        .functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.insts)
}

/// Whether a compiled program calls `event_sc` anywhere.
fn calls_event_sc(program: &Program) -> bool {
    insts(program).any(|i| {
        matches!(
            i,
            hvscript_lang::ir::Inst::CallBuiltin {
                builtin: hvscript_abi::Builtin::EventSc,
                ..
            }
        )
    })
}

/// Whether a compiled program reads `$reg` anywhere.
fn reads_pseudo(program: &Program, reg: PseudoReg) -> bool {
    insts(program)
        .any(|i| matches!(i, hvscript_lang::ir::Inst::ReadPseudo { reg: r, .. } if *r == reg))
}
