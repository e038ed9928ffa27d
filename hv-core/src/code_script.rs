//! [`CodeScript`]: a loaded code object as a [`Script`], run by the runtime's
//! [`Runner`] — what lets a hypervisor run compiled scripts it is sent with
//! `hvscript-runtime` + `hv-core` and nothing of the compiler.
//!
//! The code object's [`Usage`](hvscript_runtime::Usage) answers the engine's questions
//! about the script (does it call `event_sc`, does it read `$date`/`$time`) without the
//! source. Run-time errors carry the failing expression's byte range in the script's
//! source, which the engine reports as text (the hypervisor has no source to show).

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_runtime::{
    ExecutableMemory, GlobalSlots, Invocation, Limits, LoadedCode, RunErrorKind, Runner,
    RunnerError,
};
use hvscript_stdlib::Env;
use spin::Mutex;

use crate::script::{Script, ScriptFailure};

/// Cores with a runner of their own per script; more cores share them.
const RUNNER_SLOTS: usize = 16;

/// A code object in executable memory `M`, with the global slots it runs against and the
/// bounds of each execution.
pub struct CodeScript<M: ExecutableMemory> {
    code: LoadedCode<M>,
    globals: Arc<GlobalSlots>,
    limits: Limits,
    /// Runners (a local stack and a translation cache each) reused across executions, one
    /// per core (`$core` modulo [`RUNNER_SLOTS`]), made on a core's first execution. An
    /// execution that finds its runner busy (two cores sharing a slot at the same moment)
    /// uses a fresh one.
    runners: [spin::Once<Box<Mutex<Runner>>>; RUNNER_SLOTS],
    /// The command line the script came in and the script's offset in it, so a run-time
    /// error says `line:col:` as a compile error would ([`CodeScript::with_origin`]).
    origin: Option<(Arc<str>, usize)>,
}

impl<M: ExecutableMemory> CodeScript<M> {
    pub fn new(code: LoadedCode<M>, globals: Arc<GlobalSlots>, limits: Limits) -> Self {
        CodeScript {
            code,
            globals,
            limits,
            runners: [const { spin::Once::new() }; RUNNER_SLOTS],
            origin: None,
        }
    }

    /// Locates run-time errors in `command`, whose script starts at byte `offset`.
    pub fn with_origin(mut self, command: &str, offset: usize) -> Self {
        self.origin = Some((command.into(), offset));
        self
    }

    pub fn code(&self) -> &LoadedCode<M> {
        &self.code
    }
}

impl<M: ExecutableMemory + Send + Sync> Script for CodeScript<M> {
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
        let image = self.code.image();
        let slot = invocation.pseudo.get(PseudoReg::Core) as usize % RUNNER_SLOTS;
        // Boxed: a runner is most of a kilobyte, and a script that runs on few cores (most)
        // should not carry sixteen.
        let runner = self.runners[slot].call_once(|| Box::new(Mutex::new(Runner::new())));
        let result = match runner.try_lock() {
            Some(mut runner) => runner.run(&image, &mut invocation),
            None => Runner::new().run(&image, &mut invocation),
        };
        result.map(|_| ()).map_err(|e| match e {
            RunnerError::Run(e) => {
                let text = match &self.origin {
                    Some((line, offset)) => {
                        let (l, c) = line_col(line, offset + e.range.start as usize);
                        format!("{l}:{c}: {}", e.message())
                    }
                    None => format!(
                        "{} (script bytes {}..{})",
                        e.message(),
                        e.range.start,
                        e.range.end
                    ),
                };
                if matches!(e.kind, RunErrorKind::FuelExhausted(_)) {
                    ScriptFailure::FuelExhausted(Some(text))
                } else {
                    ScriptFailure::Error(text)
                }
            }
            other => ScriptFailure::Error(format!("{other}")),
        })
    }

    fn uses_short_circuit(&self) -> bool {
        self.code.object().calls_event_sc()
    }

    fn reads_pseudo(&self, reg: PseudoReg) -> bool {
        self.code.object().usage().reads_pseudo(reg)
    }

    fn may_output(&self) -> bool {
        !self.code.object().builtins.is_empty()
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[start..].chars().count() + 1)
}
