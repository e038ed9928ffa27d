//! The consumer side of a deferred engine's event output ([`hv_core::Engine::deferred`]),
//! shared by the demo VM's run and a program guest's: the thread that formats and writes
//! what the exits recorded while the guest runs ([`OutputThread`]), and the flush that gets
//! everything recorded so far out before something must follow it ([`flush`]).
//!
//! Exits only record their scripts' output into per-vCPU rings; the output thread takes it
//! out every [`OUTPUT_POLL`], so no vCPU waits on the console, a client or an output
//! source. What the thread cannot keep up with is dropped in the rings and counted
//! ([`hv_core::Engine::output_dropped`], which `run`'s summary shows).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hv_core::Engine;

/// How often the output thread formats what the vCPUs recorded. Each wake-up takes a core
/// from a vCPU when every core runs one (a context switch is dear under nested
/// virtualisation), so the thread wakes rarely and does more each time; a vCPU's ring holds
/// thousands of printf calls, far more than 5 ms of exits.
pub const OUTPUT_POLL: Duration = Duration::from_millis(5);

/// How long an exit waits for the output before it to go out
/// ([`OutputThread::flush_through_own_exit`]).
pub const OWN_EXIT_WAIT: Duration = Duration::from_millis(200);

/// One guest's output thread: it formats and writes what the exits recorded while the guest
/// runs ([`OutputThread::run_while`]), and on a vCPU's request sends what came before that
/// vCPU's exit now ([`OutputThread::flush_through_own_exit`]). The writing is always the
/// thread's (or, with no thread running, the caller's), never a vCPU's inside an exit: a
/// sink that blocks (a pipe nobody reads) then holds up the output, and an exit that waits
/// for it gives up after a while instead of blocking with it.
pub struct OutputThread {
    engine: Arc<Engine>,
    wake: Mutex<Wake>,
    changed: Condvar,
    /// The last ordered flush did not go through in time ([`OutputThread::flush_ordered`]).
    stuck: AtomicBool,
}

#[derive(Default)]
struct Wake {
    /// The thread runs (requests are served by it).
    running: bool,
    stop: bool,
    /// The cores whose exits asked for the output before them and wait for it (each once),
    /// and when they asked.
    waiting: Vec<(u32, Instant)>,
}

impl OutputThread {
    pub fn new(engine: Arc<Engine>) -> Arc<OutputThread> {
        Arc::new(OutputThread {
            engine,
            wake: Mutex::new(Wake::default()),
            changed: Condvar::new(),
            stuck: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` (a guest's run) while a thread named `output` drains the engine every
    /// [`OUTPUT_POLL`] and serves flush requests. When `work` returns, or unwinds, the
    /// thread stops; then [`flush`] sends what is still recorded, so nothing `work`'s exits
    /// recorded is left behind once this returns.
    pub fn run_while<R>(&self, work: impl FnOnce() -> R) -> R {
        let result = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("output".into())
                .spawn_scoped(s, || self.serve())
                .expect("spawning the output thread");
            // Dropped when `work` returns or panics: the scope joins the thread before it
            // returns or goes on unwinding, and must not wait on a thread that never ends.
            let _stop = Stop(self);
            work()
        });
        flush(&self.engine);
        result
    }

    fn serve(&self) {
        let mut wake = self.lock();
        wake.running = true;
        loop {
            if wake.stop {
                break;
            }
            if !wake.waiting.is_empty() {
                drop(wake);
                self.serve_waiting();
                wake = self.lock();
                continue;
            }
            drop(wake);
            self.engine.drain_output();
            wake = self.lock();
            if !wake.stop && wake.waiting.is_empty() {
                wake = self
                    .changed
                    .wait_timeout(wake, OUTPUT_POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        wake.running = false;
        self.changed.notify_all();
    }

    /// Sends what came before each waiting exit, telling each as its own goes, until none
    /// waits. Every waiting exit is tried in turn, those that start waiting meanwhile too:
    /// of two exits that ask at once, the later one's output goes only after the earlier
    /// exit has ended, which it does once told. An exit's wait is given up after
    /// [`OWN_EXIT_WAIT`], as the exit gives it up itself.
    fn serve_waiting(&self) {
        loop {
            let waiting = self.lock().waiting.clone();
            if waiting.is_empty() {
                return;
            }
            for (core, asked) in waiting {
                let done = self.engine.drain_output_through_own_exit(core);
                if done || asked.elapsed() >= OWN_EXIT_WAIT {
                    self.lock().waiting.retain(|&(c, _)| c != core);
                    self.changed.notify_all();
                }
            }
            std::thread::yield_now();
        }
    }

    /// From inside an exit on `core`: has what came before the exit and what its ended
    /// executions printed sent now, and waits for that at most [`OWN_EXIT_WAIT`] (a sink
    /// that blocks costs the order, not the exit). Whether it went in time.
    pub fn flush_through_own_exit(&self, core: u32) -> bool {
        self.flush_for(core, OWN_EXIT_WAIT)
    }

    /// [`OutputThread::flush_through_own_exit`] for something a vCPU does again and again
    /// (a program's writes to its terminal): once the output did not go out in time, later
    /// calls wait for none until it goes again, so a consumer that is stuck costs one wait,
    /// not one per write.
    pub fn flush_ordered(&self, core: u32) {
        let wait = if self.stuck.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            OWN_EXIT_WAIT
        };
        let done = self.flush_for(core, wait);
        self.stuck.store(!done, Ordering::Relaxed);
    }

    fn flush_for(&self, core: u32, wait: Duration) -> bool {
        let mut wake = self.lock();
        if !wake.running {
            // No thread to ask (before or after the run): the caller's own thread sends it.
            drop(wake);
            return drain_through_own_exit_for(&self.engine, core, wait);
        }
        let waits = |wake: &Wake| wake.waiting.iter().any(|&(c, _)| c == core);
        if !waits(&wake) {
            wake.waiting.push((core, Instant::now()));
        }
        self.changed.notify_all();
        let deadline = Instant::now() + wait;
        while waits(&wake) && wake.running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            wake = self
                .changed
                .wait_timeout(wake, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !waits(&wake)
    }
}

/// Tells the output thread to stop when dropped.
struct Stop<'a>(&'a OutputThread);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

/// Sends out everything `engine`'s finished exits recorded, on the caller's thread, before
/// returning; when another consumer (the output thread, a command) is draining, waits for
/// it rather than return while it still holds records.
///
/// Only while no exit of `engine` is in progress: an exit in progress keeps its records
/// (and every later exit's) back until it ends, and this would wait for that. Guests call
/// it once their vCPUs have stopped.
pub fn flush(engine: &Engine) {
    while engine.output_pending() {
        if engine.drain_output() == 0 {
            std::thread::yield_now();
        }
    }
}

/// Tries to send what came before an exit on `core` (and its ended executions) for at most
/// `wait` (at least once); whether it all went.
fn drain_through_own_exit_for(engine: &Engine, core: u32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if engine.drain_output_through_own_exit(core) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

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

    /// A deferred engine whose every CPUID exit prints its `$context`, its sink, and its
    /// output thread.
    fn printing_context() -> (Arc<Collect>, Arc<Engine>, Arc<OutputThread>) {
        let sink = Arc::new(Collect::default());
        let engine = Arc::new(Engine::deferred(sink.clone()));
        let spec = hv_core::parse_event_command("!cpuid script { }").unwrap();
        engine.add(spec, Some(Arc::new(PrintContext))).unwrap();
        let output = OutputThread::new(engine.clone());
        (sink, engine, output)
    }

    /// Two exits on two cores that ask for the output before them at once (two vCPUs
    /// pausing together, or writing to the terminal) each find their own output sent
    /// before they go on, and neither waits out the timeout for the other.
    #[test]
    fn two_exits_asking_at_once_both_get_their_output_out_first() {
        let (sink, engine, output) = printing_context();
        let together = std::sync::Barrier::new(2);
        for round in 0..20u64 {
            output.run_while(|| {
                std::thread::scope(|s| {
                    for core in 0..2u32 {
                        let (engine, output, sink, together) = (&engine, &output, &sink, &together);
                        s.spawn(move || {
                            let context = round * 10 + u64::from(core);
                            let exit = Exit::new(EventKind::Cpuid, core, context);
                            let mut regs = GuestRegs::default();
                            engine.handle_exit(&exit, &mut regs, &mut NoGuestMemory, |_, _| {
                                // Inside the exit, its script's line recorded: both ask now.
                                together.wait();
                                let started = Instant::now();
                                assert!(output.flush_through_own_exit(core), "core {core}");
                                assert!(
                                    started.elapsed() < OWN_EXIT_WAIT,
                                    "core {core} waited it out"
                                );
                                sink.output(
                                    0,
                                    Stage::Pre,
                                    core,
                                    format!("after {context}\n").as_bytes(),
                                );
                            });
                        });
                    }
                });
            });
        }
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for round in 0..20u64 {
            for core in 0..2u64 {
                let context = round * 10 + core;
                let line = lines.iter().position(|&l| l == context.to_string());
                let after = lines.iter().position(|&l| l == format!("after {context}"));
                assert!(line.is_some() && line < after, "{context} in {lines:?}");
            }
        }
    }

    /// What exits record while `run_while` runs is all out, in order, when it returns, even
    /// though `work` returns right after its last exit; a `work` that panics does not leave
    /// the output thread running (the scope would wait for it forever).
    #[test]
    fn nothing_recorded_is_left_behind() {
        let (sink, engine, output) = printing_context();
        let n = output.run_while(|| {
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
            output.run_while(|| panic!("the guest's run failed"))
        }));
        assert!(unwound.is_err());
    }
}
