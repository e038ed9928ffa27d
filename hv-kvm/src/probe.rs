//! Running one compiled script on a real exit with a context the caller gives: the
//! registers, pseudo-registers and memory environment of a conformance case
//! (`hvscript conformance --backend vm`). The script arrives as a front end's
//! [`Prepared`] and is loaded exactly as a `? SCRIPT` command's (the VM's code-object
//! loader, global bindings and all); the next port-I/O exit of vCPU 0 runs it inside its
//! exit handler, on the vCPU's thread, instead of the guest's own registers and memory
//! (which it leaves untouched), and hands the results back.

use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::time::Duration;

use hv_core::{CommandError, Prepared, ScriptFailure};
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_runtime::Limits;
use hvscript_stdlib::Env;

use crate::vmm::Vm;

/// Work for vCPU 0's next I/O exit.
pub(crate) type ExitJob = Box<dyn FnOnce() + Send>;

/// The slot a job waits in (`Vm::probe`).
#[derive(Default)]
pub(crate) struct ProbeSlot {
    pub(crate) job: Mutex<Option<ExitJob>>,
    pub(crate) pending: std::sync::atomic::AtomicBool,
}

/// The context a probe's script runs in instead of the guest's.
pub struct ExitContext<E> {
    pub regs: GuestRegs,
    pub pseudo: PseudoValues,
    pub env: E,
    pub limits: Limits,
}

/// What a probe's run left: the registers and the environment after it, and how it ended.
pub struct ProbeRun<E> {
    pub regs: GuestRegs,
    pub env: E,
    pub result: Result<(), ScriptFailure>,
}

impl Vm {
    /// Loads `script` (the text of a `? SCRIPT`, compiled by a front end into `prepared`)
    /// and runs it once on vCPU 0's next I/O exit in `context`. The guest must be running; `timeout` bounds the wait for an exit.
    /// Run-time errors read `line:col: message` in `script`.
    pub fn run_on_exit<E: Env + Send + 'static>(
        &self,
        script: &str,
        prepared: &Prepared,
        context: ExitContext<E>,
        timeout: Duration,
    ) -> Result<ProbeRun<E>, CommandError> {
        let ExitContext {
            regs,
            pseudo,
            env,
            limits,
        } = context;
        // Loaded as the `?` command "\n<script>" would be: the newline keeps the script's
        // lines and columns those of the command line's.
        let line = format!("?\n{script}");
        let loaded = self
            .load_script(
                &line,
                Some(&(script.to_string(), 2)),
                None,
                prepared,
                limits,
            )?
            .ok_or_else(|| CommandError::whole(&line, "nothing to run"))?;
        let (tx, rx) = sync_channel(1);
        let job: ExitJob = Box::new(move || {
            let (mut regs, mut env) = (regs, env);
            let result = loaded.execute(&mut regs, &pseudo, &mut env);
            let _ = tx.send(ProbeRun { regs, env, result });
        });
        *self
            .probe_slot()
            .job
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(job);
        self.probe_slot()
            .pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        rx.recv_timeout(timeout).map_err(|_| {
            // Take the job back so it never runs late.
            self.probe_slot()
                .job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            CommandError::whole(
                &line,
                "no exit came to run the script (is the guest running?)",
            )
        })
    }
}
