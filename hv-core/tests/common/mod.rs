//! A simulated back end: scripts compiled by script-lang and run by its interpreter, an
//! output sink that records, and guest memory as a byte map.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use hv_core::*;
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_lang::{
    compile_source, CompileOptions, Globals, Interpreter, Invocation, Limits, Program,
    RunErrorKind, StageUse,
};
use hvscript_stdlib::{Env, MemFault};

/// A script run by the host interpreter.
pub struct InterpScript {
    program: Program,
    globals: Arc<Globals>,
    uses_sc: bool,
}

impl Script for InterpScript {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let limits = Limits {
            fuel: 10_000,
            max_call_depth: 64,
            stack_slots: 256,
        };
        let mut interp = Interpreter::new();
        interp
            .run(
                &self.program,
                &mut Invocation {
                    regs,
                    pseudo,
                    globals: &self.globals,
                    host: env,
                    limits,
                },
            )
            .map(|_| ())
            .map_err(|e| match e.kind {
                RunErrorKind::FuelExhausted(_) => ScriptFailure::FuelExhausted(None),
                _ => ScriptFailure::Error(e.message()),
            })
    }

    fn uses_short_circuit(&self) -> bool {
        self.uses_sc
    }
}

#[derive(Default)]
pub struct RecordingSink {
    pub lines: Mutex<Vec<(u64, Stage, String)>>,
}

impl OutputSink for RecordingSink {
    fn output(&self, event_id: u64, stage: Stage, _core: u32, text: &[u8]) {
        self.lines.lock().unwrap().push((
            event_id,
            stage,
            String::from_utf8_lossy(text).into_owned(),
        ));
    }
}

impl RecordingSink {
    pub fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, t)| t.as_str())
            .collect()
    }
}

pub struct Rig {
    pub engine: Engine,
    pub sink: Arc<RecordingSink>,
    pub globals: Arc<Globals>,
}

impl Rig {
    pub fn new() -> Rig {
        let sink = Arc::new(RecordingSink::default());
        Rig {
            engine: Engine::new(sink.clone()),
            sink,
            globals: Arc::new(Globals::default()),
        }
    }

    /// A rig whose engine defers output until `engine.drain_output()`.
    pub fn deferred() -> Rig {
        let sink = Arc::new(RecordingSink::default());
        Rig {
            engine: Engine::deferred(sink.clone()),
            sink,
            globals: Arc::new(Globals::default()),
        }
    }

    /// A CPUID exit on `core` with `$context` `context`, whose emulation does nothing.
    pub fn cpuid(
        &self,
        core: u32,
        context: u64,
        regs: &mut GuestRegs,
        guest: &mut dyn GuestAccess,
    ) -> ExitOutcome {
        self.engine.handle_exit(
            &Exit::new(EventKind::Cpuid, core, context),
            regs,
            guest,
            |_, _| {},
        )
    }

    /// Parses an event command, compiles its script and adds the event.
    pub fn add(&self, line: &str) -> Result<u64, String> {
        let spec = parse_event_command(line)
            .map_err(|e| format!("{} at {}..{}", e.message, e.start, e.end))?;
        let script: Option<Arc<dyn Script>> = match &spec.script {
            None => None,
            Some((text, _offset)) => {
                let stage = if spec.options.stage == StageMode::Post {
                    StageUse::PostOnly
                } else {
                    StageUse::Any
                };
                let program = compile_source(
                    text,
                    &self.globals,
                    &CompileOptions {
                        stage,
                        ..Default::default()
                    },
                )
                .map_err(|errs| errs[0].message.clone())?;
                let uses_sc = text.contains("event_sc");
                Some(Arc::new(InterpScript {
                    program,
                    globals: self.globals.clone(),
                    uses_sc,
                }))
            }
        };
        self.engine.add(spec, script).map_err(|e| e.to_string())
    }

    pub fn counters(&self, id: u64) -> CounterValues {
        self.engine
            .list()
            .into_iter()
            .find(|l| l.id == id)
            .unwrap()
            .counters
    }
}

/// Guest memory as a flat array at address 0.
pub struct FlatMemory(pub Vec<u8>);

impl GuestAccess for FlatMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let a = addr as usize;
        let src = self
            .0
            .get(a..a.checked_add(buf.len()).ok_or(MemFault::Invalid)?)
            .ok_or(MemFault::Invalid)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let a = addr as usize;
        let dst = self
            .0
            .get_mut(a..a.checked_add(data.len()).ok_or(MemFault::Invalid)?)
            .ok_or(MemFault::Invalid)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}
