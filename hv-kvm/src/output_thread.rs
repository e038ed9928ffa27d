//! The consumer side of a deferred engine's event output ([`hv_core::Engine::deferred`]),
//! shared by the demo VM's run and a program guest's: the thread that formats and writes
//! what the exits recorded while the guest runs ([`draining`]), and the flush that gets
//! everything recorded so far out before something must follow it ([`flush`]).
//!
//! Exits only record their scripts' output into per-vCPU rings; the output thread takes it
//! out every [`OUTPUT_POLL`], so no vCPU waits on the console, a client or an output
//! source. What the thread cannot keep up with is dropped in the rings and counted
//! ([`hv_core::Engine::output_dropped`], which `run`'s summary shows).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hv_core::Engine;

/// How often the output thread formats what the vCPUs recorded. Each wake-up takes a core
/// from a vCPU when every core runs one (a context switch is dear under nested
/// virtualisation), so the thread wakes rarely and does more each time; a vCPU's ring holds
/// thousands of printf calls, far more than 5 ms of exits.
pub const OUTPUT_POLL: Duration = Duration::from_millis(5);

/// Runs `work` (a guest's run) while a thread named `output` drains `engine` every
/// [`OUTPUT_POLL`]. When `work` returns, or unwinds, the thread stops; then [`flush`] sends
/// what is still recorded, so nothing `work`'s exits recorded is left behind once this
/// returns.
pub fn draining<R>(engine: &Engine, work: impl FnOnce() -> R) -> R {
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let done = &done;
        std::thread::Builder::new()
            .name("output".into())
            .spawn_scoped(s, move || {
                while !done.load(Ordering::SeqCst) {
                    engine.drain_output();
                    std::thread::sleep(OUTPUT_POLL);
                }
            })
            .expect("spawning the output thread");
        // Dropped when `work` returns or panics: the scope joins the thread before it
        // returns or goes on unwinding, and must not wait on a thread that never ends.
        let _stop = Stop(done);
        work()
    });
    flush(engine);
    result
}

/// Tells the output thread to stop when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Sends out everything `engine`'s finished exits recorded, on the caller's thread, before
/// returning; when another consumer (the output thread, a command) is draining, waits for
/// it rather than return while it still holds records.
///
/// Only while no exit of `engine` is in progress: an exit in progress keeps its records
/// (and every later exit's) back until it ends, and this would wait for that. The demo VM
/// calls it once its vCPUs have stopped; a program's vCPU calls it between its own exits.
pub fn flush(engine: &Engine) {
    while engine.output_pending() {
        if engine.drain_output() == 0 {
            std::thread::yield_now();
        }
    }
}

/// [`flush`] from inside an exit on `core`: what came before the exit and what its ended
/// executions printed goes out now. Waits at most [`OWN_EXIT_WAIT`] for a consumer that
/// holds the output (a sink that blocks): after that the order is given up, not the exit.
pub fn flush_through_own_exit(engine: &Engine, core: u32) {
    let deadline = std::time::Instant::now() + OWN_EXIT_WAIT;
    while !engine.drain_output_through_own_exit(core) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// How long an exit waits for the output before it to go out ([`flush_through_own_exit`]).
pub const OWN_EXIT_WAIT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use hv_core::{EventKind, Exit, NoGuestMemory, OutputSink, Script, ScriptFailure, Stage};
    use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};

    #[derive(Default)]
    struct Collect(Mutex<Vec<u8>>);

    impl OutputSink for Collect {
        fn output(&self, _event_id: u64, _stage: Stage, _core: u32, text: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(text);
        }
    }

    /// Prints its exit's `$context`, as `printf("%d\n", $context)` would.
    struct PrintContext;

    impl Script for PrintContext {
        fn execute(
            &self,
            _regs: &mut GuestRegs,
            pseudo: &PseudoValues,
            env: &mut dyn hvscript_stdlib::Env,
        ) -> Result<(), ScriptFailure> {
            env.output(format!("{}\n", pseudo.get(PseudoReg::Context)).as_bytes());
            Ok(())
        }
    }

    /// What exits record while `draining` runs is all out, in order, when it returns, even
    /// though `work` returns right after its last exit; a `work` that panics does not leave
    /// the output thread running (the scope would wait for it forever).
    #[test]
    fn nothing_recorded_is_left_behind() {
        let sink = Arc::new(Collect::default());
        let engine = Engine::deferred(sink.clone());
        let spec = hv_core::parse_event_command("!cpuid script { }").unwrap();
        engine.add(spec, Some(Arc::new(PrintContext))).unwrap();
        let n = draining(&engine, || {
            for i in 0..2000u64 {
                let exit = Exit::new(EventKind::Cpuid, 0, i);
                let mut regs = GuestRegs::default();
                engine.handle_exit(&exit, &mut regs, &mut NoGuestMemory, |_, _| {});
            }
            2000
        });
        let expected: String = (0..n).map(|i| format!("{i}\n")).collect();
        let got = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(got, expected);
        assert_eq!(engine.output_dropped(), 0);

        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            draining(&engine, || panic!("the guest's run failed"))
        }));
        assert!(unwound.is_err());
    }
}
