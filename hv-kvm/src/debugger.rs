//! Breaking into the debugger: the paused state a VM's vCPUs and its consoles share.
//!
//! A VM is *paused* when a console asked (`pause`, Ctrl-C) or a script called `pause()`
//! while a console was attached. Every vCPU then stops at its next exit (the VM kicks them
//! out of `KVM_RUN`), as HyperDbg halts every core, and waits with its registers parked
//! here: a console reads and changes them (`r`, `r rax = 5`) for the *current* core (the
//! one that paused, or `~ N`), and `g` lets every core go on with what it left. The
//! vCPU threads register themselves so a kick never reaches a thread that has ended.
//!
//! No input may hang the VMM: a vCPU waits only while a console is attached, and when the
//! last console goes away every core continues by itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hv_core::{OutputSink, PauseInfo, Stage};
use hvscript_abi::GuestRegs;

/// How long `pause` waits for every core to stop.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// A stopped core: its registers (the console may change them) and page tables.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    pub regs: GuestRegs,
    pub cr3: u64,
    /// The console changed `regs`.
    pub dirty: bool,
    /// The pause this core stopped for.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    stopped: BTreeMap<u32, Stop>,
    current: Option<u32>,
    /// Counts `g`s: a core waits until it changes.
    generation: u64,
    /// Why the guest is paused.
    reason: Option<String>,
    /// vCPU threads (`pthread_t`) by core, while they run.
    threads: BTreeMap<u32, u64>,
}

/// The break-in state of one VM.
#[derive(Default)]
pub struct Debugger {
    paused: AtomicBool,
    consoles: AtomicUsize,
    /// `pause()` calls that did not stop the guest (no console).
    pub ignored_pauses: AtomicU64,
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Where break notices go (the VM's output sink: the console and every client), and
    /// the engine whose recorded output must go out before them.
    notices: Mutex<Option<Notices>>,
}

/// Where break notices go, and the engine whose output goes before them.
type Notices = (Arc<dyn OutputSink>, Arc<crate::output_thread::OutputThread>);

impl Debugger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Break notices go to `sink` (a text message with the pausing event's id), after what
    /// the events printed up to the pause (which `output` sends first).
    pub fn set_notices(
        &self,
        sink: Arc<dyn OutputSink>,
        output: Arc<crate::output_thread::OutputThread>,
    ) {
        *self.notices.lock().unwrap_or_else(|e| e.into_inner()) = Some((sink, output));
    }

    /// Whether the guest is paused: every vCPU checks this at each exit.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// A console attached.
    pub fn console_attached(&self) {
        self.consoles.fetch_add(1, Ordering::SeqCst);
    }

    /// A console went away; the last one leaving lets a paused guest go on.
    pub fn console_detached(&self) {
        if self.consoles.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_paused() {
            let _ = self.go();
        }
    }

    /// Whether `pause()` would stop the guest.
    pub fn has_console(&self) -> bool {
        self.consoles.load(Ordering::SeqCst) > 0
    }

    /// The vCPU thread of `core` starts (`Some`) or stops (`None`) running.
    pub fn register_thread(&self, core: u32, thread: Option<u64>) {
        let mut g = self.lock();
        match thread {
            Some(t) => g.threads.insert(core, t),
            None => g.threads.remove(&core),
        };
    }

    /// Interrupts every registered vCPU's `KVM_RUN`.
    fn kick_all(&self, g: &Inner) {
        for &thread in g.threads.values() {
            crate::vmm::kick(thread);
        }
    }

    /// A script's `pause()` on `core`: the guest pauses here (every other core at its next
    /// exit), every console is told where, and this core waits for `g`. Returns whether a
    /// console changed the registers.
    pub fn break_in(&self, at: &PauseInfo, regs: &mut GuestRegs, cr3: u64) -> bool {
        if !self.has_console() {
            self.ignored_pauses.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let stage = if at.stage == Stage::Pre {
            "pre"
        } else {
            "post"
        };
        let notice = format!(
            "break: event {:#x} ({stage} stage, $context {:#x}) paused the guest on core {} at \
             rip {:#x}; `g` continues\n",
            at.event_id, at.context, at.core, regs.rip
        );
        {
            let mut g = self.lock();
            if !self.paused.swap(true, Ordering::SeqCst) {
                g.current = Some(at.core);
                g.reason = Some(notice.trim_end().to_string());
            }
            self.kick_all(&g);
        }
        if let Some((sink, output)) = self
            .notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // The pausing script's own output (its execution has ended) and everything
            // before it come first: the console shows what led to the break, then the break.
            output.flush_through_own_exit(at.core);
            let context = hv_core::OutputContext {
                event_id: at.event_id,
                stage: at.stage,
                core: at.core,
                pid: None,
                rip: regs.rip,
            };
            sink.output_at(&context, notice.as_bytes());
        }
        self.stop(at.core, regs, cr3)
    }

    /// Stops `core` while the guest is paused (a vCPU calls this at each exit when
    /// [`is_paused`](Self::is_paused)); returns whether a console changed `regs`.
    pub fn stop(&self, core: u32, regs: &mut GuestRegs, cr3: u64) -> bool {
        let mut g = self.lock();
        if !self.is_paused() {
            return false;
        }
        let generation = g.generation;
        g.stopped.insert(
            core,
            Stop {
                regs: *regs,
                cr3,
                dirty: false,
                generation,
            },
        );
        if g.current.is_none() {
            g.current = Some(core);
        }
        self.changed.notify_all();
        while g.generation == generation {
            if !self.has_console() {
                // Nobody could say `g`: go on.
                self.resume(&mut g);
                break;
            }
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match g.stopped.remove(&core) {
            Some(stop) if stop.generation == generation => {
                *regs = stop.regs;
                stop.dirty
            }
            _ => false,
        }
    }

    fn resume(&self, g: &mut Inner) {
        self.paused.store(false, Ordering::SeqCst);
        g.generation += 1;
        g.current = None;
        g.reason = None;
        self.changed.notify_all();
    }

    /// `pause`: pauses the guest and waits until every running core has stopped.
    pub fn pause(&self) -> Result<String, String> {
        let deadline = Instant::now() + STOP_WAIT;
        let mut g = self.lock();
        if !self.paused.swap(true, Ordering::SeqCst) {
            g.reason = Some("paused by the console".into());
        }
        loop {
            let generation = g.generation;
            let waiting: Vec<u32> = g
                .threads
                .keys()
                .copied()
                .filter(|c| g.stopped.get(c).is_none_or(|s| s.generation != generation))
                .collect();
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "core(s) {waiting:?} did not stop within {STOP_WAIT:?}; the others are \
                     paused (`g` continues)"
                ));
            }
            self.kick_all(&g);
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(5))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(self.where_stopped(&g))
    }

    fn where_stopped(&self, g: &Inner) -> String {
        let mut out = String::new();
        if let Some(r) = &g.reason {
            out.push_str(r);
            out.push('\n');
        }
        for (core, s) in &g.stopped {
            if s.generation == g.generation {
                out.push_str(&format!(
                    "core {core}{} stopped at rip {:#x}\n",
                    if g.current == Some(*core) {
                        " (current)"
                    } else {
                        ""
                    },
                    s.regs.rip
                ));
            }
        }
        if g.threads.is_empty() {
            out.push_str("no core is running: the guest has ended or not started\n");
        }
        out
    }

    /// `g`: every stopped core goes on.
    pub fn go(&self) -> Result<String, String> {
        let mut g = self.lock();
        if !self.is_paused() {
            return Err("the guest is not paused (`pause` or a script's pause() stops it)".into());
        }
        let cores = g
            .stopped
            .iter()
            .filter(|(_, s)| s.generation == g.generation)
            .count();
        self.resume(&mut g);
        Ok(format!("continuing ({cores} core(s))"))
    }

    /// Runs `f` on the current core's stop; an error when the guest is running.
    pub fn with_current<R>(&self, f: impl FnOnce(u32, &mut Stop) -> R) -> Result<R, String> {
        let mut g = self.lock();
        if !self.is_paused() {
            return Err("the guest is running: `pause` first (or pause() in a script)".into());
        }
        let generation = g.generation;
        let Some(core) = g.current else {
            return Err("no core has stopped yet".into());
        };
        match g.stopped.get_mut(&core) {
            Some(stop) if stop.generation == generation => Ok(f(core, stop)),
            _ => Err(format!("core {core} has not stopped yet")),
        }
    }

    /// The current core's page tables, when the guest is paused.
    pub fn current_cr3(&self) -> Option<u64> {
        self.with_current(|_, s| s.cr3).ok()
    }

    /// `~`: the current core; `~ N`: switch to a stopped core.
    pub fn switch(&self, core: Option<u32>) -> Result<String, String> {
        let mut g = self.lock();
        if !self.is_paused() {
            return Err("the guest is running: `pause` first".into());
        }
        let generation = g.generation;
        let stopped: Vec<u32> = g
            .stopped
            .iter()
            .filter(|(_, s)| s.generation == generation)
            .map(|(c, _)| *c)
            .collect();
        match core {
            None => Ok(format!(
                "current core: {}; stopped: {stopped:?}",
                g.current.map_or("none".to_string(), |c| c.to_string())
            )),
            Some(c) if stopped.contains(&c) => {
                g.current = Some(c);
                Ok(format!("switched to core {c}"))
            }
            Some(c) => Err(format!("core {c} is not stopped (stopped: {stopped:?})")),
        }
    }
}
