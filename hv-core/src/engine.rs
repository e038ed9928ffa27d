//! The engine: the event table, its atomic publication, and exit dispatch with calling
//! stages (DESIGN.md, "Calling stages and short-circuiting", normative).
//!
//! The table is immutable; every change (add, replace, enable, disable, clear) builds a
//! new one and publishes it by swapping an `Arc`. An exit takes the current table once and
//! uses it to the end, so a vCPU in the middle of an exit never sees a half-made change,
//! the next exit sees the new table, and no trigger is lost or doubled. Events are shared
//! between table versions, so their counters survive every change.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_runtime::output_recorder::Flush;
use hvscript_runtime::{OutputRing, Recorder};
use hvscript_stdlib::{Env, EventOp};

use crate::command::Target;
use crate::dispatch_index::{Indices, KindIndex};
use crate::event::{Access, Counters, Event, EventKind, EventSpec, Filter, Stage, EVENT_TAG_BASE};
use crate::event_output::{EventOutput, OutputMode, DEFAULT_RING_BYTES};
use crate::execution::ClaimLater;
use crate::execution::{EventRequest, ExecutionEnv};
use crate::guest::{GuestAccess, PauseInfo};
use crate::output::OutputSink;
use crate::script::{Script, ScriptFailure};

/// Where `$time`'s string starts after `$date`'s in an execution's clock strings.
const CLOCK_TIME: usize = 16;

/// One VM exit, as the exit handler describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub kind: EventKind,
    pub core: u32,
    pub pid: u64,
    pub tid: u64,
    /// `$context`: MSR index, port, accessed address, CPUID leaf, vector, ... (events.md).
    pub context: u64,
    /// `!monitor`: the kind of access.
    pub access: Access,
    /// `!crwrite`: the bits the write changes.
    pub changed_bits: u64,
    /// OS awareness, where the hypervisor knows the guest's process: `$pname` (the
    /// address of its name, a NUL-terminated string), `$proc` and `$thread` (addresses of
    /// the records the hypervisor keeps for them in guest memory). 0 where unknown.
    pub pname: u64,
    pub process: u64,
    pub thread: u64,
}

impl Exit {
    pub fn new(kind: EventKind, core: u32, context: u64) -> Exit {
        Exit {
            kind,
            core,
            pid: 0,
            tid: 0,
            context,
            access: Access(0),
            changed_bits: u64::MAX,
            pname: 0,
            process: 0,
            thread: 0,
        }
    }
}

/// A new event with its own counters and safe buffer.
fn new_event(id: u64, spec: EventSpec, script: Option<Arc<dyn Script>>) -> Event {
    let buffer = spec
        .options
        .buffer
        .map(|n| Arc::new(spin::Mutex::new(alloc::vec![0u8; n as usize])));
    Event {
        id,
        spec,
        script,
        counters: Arc::new(Counters::default()),
        buffer,
    }
}

/// What the dispatcher did for one exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitOutcome {
    /// The emulation was skipped (and no post stage ran).
    pub short_circuited: bool,
    pub pre_executions: u32,
    pub post_executions: u32,
}

#[derive(Clone)]
struct Entry {
    event: Arc<Event>,
    enabled: bool,
}

/// An immutable version of the event table.
#[derive(Clone, Default)]
pub struct EventTable {
    /// In id order.
    entries: Vec<Entry>,
    /// Per kind, the enabled events indexed by their filters' keys; shared with the
    /// previous table for the kinds a change did not touch.
    by_kind: Vec<Arc<KindIndex>>,
}

/// The kinds a table change touched, as bits of `EventKind as u32`.
type KindSet = u32;
const ALL_KINDS: KindSet = u32::MAX;

fn kind_set(kind: EventKind) -> KindSet {
    1 << (kind as u32)
}

impl EventTable {
    /// The table of `entries`, reusing `prev`'s index for every kind not in `changed`
    /// (valid because a change outside `changed` moved no entry of those kinds).
    fn build(entries: Vec<Entry>, prev: Option<&EventTable>, changed: KindSet) -> EventTable {
        let by_kind = EventKind::ALL
            .iter()
            .map(|&kind| match prev {
                Some(p) if changed & kind_set(kind) == 0 => p.by_kind[kind as usize].clone(),
                _ => Arc::new(KindIndex::build(
                    entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.enabled && e.event.spec.kind == kind)
                        .map(|(i, e)| (i, &*e.event)),
                )),
            })
            .collect();
        EventTable { entries, by_kind }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every event of `kind` (enabled or not) with whether it is enabled, in id order.
    pub fn events_of(&self, kind: EventKind) -> impl Iterator<Item = (&Arc<Event>, bool)> + '_ {
        self.entries
            .iter()
            .filter(move |e| e.event.spec.kind == kind)
            .map(|e| (&e.event, e.enabled))
    }

    pub fn contains(&self, id: u64) -> bool {
        self.entries.iter().any(|e| e.event.id == id)
    }

    /// Enabled events of the exit's kind whose filters match, newest first, as indices
    /// into the entries (found through the kind's index: see [`crate::dispatch_index`]).
    fn candidates(&self, exit: &Exit, out: &mut Indices) {
        let index = &self.by_kind[exit.kind as usize];
        if !index.is_empty() {
            index.lookup(exit.context, out);
        }
    }

    fn event_at(&self, i: usize) -> &Arc<Event> {
        &self.entries[i].event
    }
}

fn matches(e: &Event, exit: &Exit) -> bool {
    let o = &e.spec.options;
    if o.core.is_some_and(|c| c != exit.core) || o.pid.is_some_and(|p| p != exit.pid) {
        return false;
    }
    match &e.spec.filter {
        Filter::Any => true,
        Filter::Value(v) => *v == exit.context,
        Filter::Address(a) => *a == exit.context,
        Filter::Range {
            access, from, to, ..
        } => (exit.access.0 & access.0) != 0 && exit.context >= *from && exit.context <= *to,
        Filter::ControlRegister { cr, mask } => {
            u64::from(*cr) == exit.context && mask.is_none_or(|m| m & exit.changed_bits != 0)
        }
        Filter::Mode { user, kernel } => {
            (*user && exit.context == 3) || (*kernel && exit.context == 0)
        }
    }
}

/// An `events` listing row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub id: u64,
    pub enabled: bool,
    pub text: String,
    pub counters: crate::event::CounterValues,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    UnknownEvent(u64),
    /// A `stage post` event whose script calls `event_sc`.
    ShortCircuitInPost,
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EngineError::UnknownEvent(id) => write!(f, "no event with id {id:#x}"),
            EngineError::ShortCircuitInPost => {
                f.write_str("event_sc in a script that only runs in the post stage: the emulation has already happened")
            }
        }
    }
}

/// The event engine of one hypervisor.
pub struct Engine {
    table: spin::RwLock<Arc<EventTable>>,
    /// Serialises writers so a change is never built from a stale table.
    writer: spin::Mutex<()>,
    next_id: AtomicU64,
    sink: Arc<dyn OutputSink>,
    exits: AtomicU64,
    output: EventOutput,
}

impl Engine {
    /// An engine whose events' output reaches `sink` as each execution ends, on the vCPU
    /// (for embedders without a consumer thread; see [`crate::event_output`]).
    pub fn new(sink: Arc<dyn OutputSink>) -> Engine {
        Engine::with_output(sink, OutputMode::Immediate, DEFAULT_RING_BYTES)
    }

    /// An engine whose events' output waits in per-vCPU rings until a consumer outside the
    /// exit path calls [`Engine::drain_output`]: an exit never formats or writes, and a
    /// consumer that falls behind costs dropped messages ([`Engine::output_dropped`]),
    /// never a slower guest.
    pub fn deferred(sink: Arc<dyn OutputSink>) -> Engine {
        Engine::with_output(sink, OutputMode::Deferred, DEFAULT_RING_BYTES)
    }

    /// An engine with its output handled as `mode` says, in rings of `ring_bytes` per vCPU.
    pub fn with_output(sink: Arc<dyn OutputSink>, mode: OutputMode, ring_bytes: usize) -> Engine {
        Engine {
            table: spin::RwLock::new(Arc::new(EventTable::build(Vec::new(), None, ALL_KINDS))),
            writer: spin::Mutex::new(()),
            next_id: AtomicU64::new(1),
            sink,
            exits: AtomicU64::new(0),
            output: EventOutput::new(mode, ring_bytes),
        }
    }

    /// Deferred output: formats what the vCPUs recorded and hands it to the sink, in the
    /// exits' order (output of an exit in progress waits for a later call); returns how
    /// many executions' output went out. A no-op when another consumer is draining.
    pub fn drain_output(&self) -> usize {
        self.output.drain(&*self.sink)
    }

    /// From inside an exit on `core`: sends what came before it and what its ended
    /// executions printed ([`EventOutput::drain_through_own_exit`]); `true` once all of
    /// it is out.
    pub fn drain_output_through_own_exit(&self, core: u32) -> bool {
        self.output.drain_through_own_exit(core, &*self.sink)
    }

    /// Sends a message of the hypervisor's own (a refused register write, ...) with the
    /// events' output, as if event `event_id` printed it on `core`: in order with that
    /// output, and without writing anything on the caller's thread when output is deferred.
    pub fn note(&self, core: u32, event_id: u64, stage: Stage, text: &[u8]) {
        self.output.note(core, event_id, stage, text, &*self.sink);
    }

    /// Whether recorded output waits for [`Engine::drain_output`].
    pub fn output_pending(&self) -> bool {
        self.output.has_pending()
    }

    /// Output messages dropped so far because a vCPU's ring was full (the consumer or its
    /// sink did not keep up) or held by another exit.
    pub fn output_dropped(&self) -> u64 {
        self.output.dropped()
    }

    /// The current table (cheap: one `Arc` clone under a short read lock).
    pub fn snapshot(&self) -> Arc<EventTable> {
        self.table.read().clone()
    }

    /// Exits handled so far.
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::Relaxed)
    }

    /// Builds the next table from the current one; `change` edits the entries and says
    /// how many it affected and which kinds' indices must be rebuilt.
    fn publish(
        &self,
        change: impl FnOnce(&mut Vec<Entry>) -> Result<(usize, KindSet), EngineError>,
    ) -> Result<usize, EngineError> {
        let _w = self.writer.lock();
        let current = self.snapshot();
        let mut entries = current.entries.clone();
        let (n, changed) = change(&mut entries)?;
        let table = Arc::new(EventTable::build(entries, Some(&current), changed));
        *self.table.write() = table;
        Ok(n)
    }

    /// Adds several events in one publication (a command file): their ids, in order.
    pub fn add_all(
        &self,
        events: Vec<(EventSpec, Option<Arc<dyn Script>>)>,
    ) -> Result<Vec<u64>, EngineError> {
        for (spec, script) in &events {
            if spec.options.stage == crate::event::StageMode::Post
                && script.as_ref().is_some_and(|s| s.uses_short_circuit())
            {
                return Err(EngineError::ShortCircuitInPost);
            }
        }
        let mut ids = Vec::with_capacity(events.len());
        self.publish(|entries| {
            let mut kinds = 0;
            for (spec, script) in events {
                kinds |= kind_set(spec.kind);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                entries.push(Entry {
                    event: Arc::new(new_event(id, spec, script)),
                    enabled: true,
                });
                ids.push(id);
            }
            Ok((ids.len(), kinds))
        })?;
        Ok(ids)
    }

    /// Adds an event (enabled) and returns its id. `script` is the compiled form of
    /// `spec.script`, if any.
    pub fn add(
        &self,
        spec: EventSpec,
        script: Option<Arc<dyn Script>>,
    ) -> Result<u64, EngineError> {
        if spec.options.stage == crate::event::StageMode::Post
            && script.as_ref().is_some_and(|s| s.uses_short_circuit())
        {
            return Err(EngineError::ShortCircuitInPost);
        }
        let mut id = 0;
        self.publish(|entries| {
            id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let kinds = kind_set(spec.kind);
            entries.push(Entry {
                event: Arc::new(new_event(id, spec, script)),
                enabled: true,
            });
            Ok((1, kinds))
        })?;
        Ok(id)
    }

    /// Replaces an event's script, keeping its id, options and counters' history.
    pub fn replace_script(
        &self,
        id: u64,
        script: Option<Arc<dyn Script>>,
    ) -> Result<(), EngineError> {
        self.publish(|entries| {
            let e = entries
                .iter_mut()
                .find(|e| e.event.id == id)
                .ok_or(EngineError::UnknownEvent(id))?;
            let old = &e.event;
            // The counters and the safe buffer belong to the event, not to one version of
            // its script: exits still running on an older table count into the same
            // counters, so nothing is lost across the replacement.
            let event = Event {
                id,
                spec: old.spec.clone(),
                script,
                counters: old.counters.clone(),
                buffer: old.buffer.clone(),
            };
            e.event = Arc::new(event);
            // Same position, filter and state: no index changes.
            Ok((1, 0))
        })
        .map(|_| ())
    }

    /// Enables, disables or clears events; returns how many were affected.
    pub fn apply(&self, op: EventOp, target: Target) -> Result<usize, EngineError> {
        self.publish(|entries| {
            let hit = |e: &Entry| match target {
                Target::All => true,
                Target::Id(id) => e.event.id == id,
            };
            let n = entries.iter().filter(|e| hit(e)).count();
            if n == 0 {
                if let Target::Id(id) = target {
                    return Err(EngineError::UnknownEvent(id));
                }
            }
            let kinds = match op {
                EventOp::Clear => {
                    entries.retain(|e| !hit(e));
                    // Later entries moved: every kind's positions change.
                    ALL_KINDS
                }
                EventOp::Enable | EventOp::Disable => {
                    let mut kinds = 0;
                    for e in entries.iter_mut().filter(|e| hit(e)) {
                        e.enabled = op == EventOp::Enable;
                        kinds |= kind_set(e.event.spec.kind);
                    }
                    kinds
                }
            };
            Ok((n, kinds))
        })
    }

    /// The `events` listing, in id order.
    pub fn list(&self) -> Vec<Listing> {
        self.snapshot()
            .entries
            .iter()
            .map(|e| Listing {
                id: e.event.id,
                enabled: e.enabled,
                text: e.event.spec.text.clone(),
                counters: e.event.counters.values(),
            })
            .collect()
    }

    /// The event with this id in the current table.
    pub fn event(&self, id: u64) -> Option<Arc<Event>> {
        self.snapshot()
            .entries
            .iter()
            .find(|e| e.event.id == id)
            .map(|e| e.event.clone())
    }

    /// Handles one VM exit: pre stage, then `emulate` unless a pre execution
    /// short-circuited, then the post stage. `emulate` is the hypervisor's own handling
    /// of the instruction (execute CPUID, perform the MSR access, complete the I/O, ...).
    pub fn handle_exit(
        &self,
        exit: &Exit,
        regs: &mut GuestRegs,
        guest: &mut dyn GuestAccess,
        emulate: impl FnOnce(&mut GuestRegs, &mut dyn GuestAccess),
    ) -> ExitOutcome {
        self.exits.fetch_add(1, Ordering::Relaxed);
        let table = self.snapshot();
        let mut outcome = ExitOutcome::default();
        let mut found = Indices::new();
        table.candidates(exit, &mut found);
        let mut candidates = found
            .newest_first()
            .iter()
            .map(|&i| table.event_at(i))
            .filter(|e| matches(e, exit))
            .peekable();
        if candidates.peek().is_none() {
            emulate(regs, guest);
            return outcome;
        }
        let mut requests = Vec::new();
        let known = |id: u64| table.contains(id);
        let mut post_wanted = false;
        let deliver = |ring: &OutputRing| self.output.deliver(ring, &*self.sink);
        let immediate = self.output.mode() == OutputMode::Immediate;
        let flush: Option<Flush<'_>> = if immediate { Some(&deliver) } else { None };
        // The ring is taken by the first execution that may print, not by the exit: an
        // exit whose scripts print nothing pays nothing for output.
        let mut recorder = None;
        let mut run = ExitRun {
            exit,
            requests: &mut requests,
            known: &known,
            recorder: &mut recorder,
            claim_tried: false,
            flush,
            output: &self.output,
        };
        for event in candidates {
            let mode = event.spec.options.stage;
            post_wanted |= mode.runs_post() && event.spec.kind.has_stages();
            if mode.runs_pre() || !event.spec.kind.has_stages() {
                outcome.pre_executions += 1;
                if self.execute(event, Stage::Pre, &mut run, regs, guest) {
                    outcome.short_circuited = true;
                }
            }
        }
        if outcome.short_circuited {
            // Rule 3: no emulation and no post stage for any event on this exit.
            drop(recorder);
            self.apply_requests(&requests);
            return outcome;
        }
        emulate(regs, guest);
        if post_wanted {
            let mut found = Indices::new();
            table.candidates(exit, &mut found);
            let post = found.newest_first().iter().map(|&i| table.event_at(i));
            for event in post.filter(|e| matches(e, exit)) {
                if event.spec.options.stage.runs_post() && event.spec.kind.has_stages() {
                    outcome.post_executions += 1;
                    self.execute(event, Stage::Post, &mut run, regs, guest);
                }
            }
        }
        // The ring goes back before the requests change the table (an `event_clear` may
        // make the embedder drain what this exit recorded).
        drop(recorder);
        self.apply_requests(&requests);
        outcome
    }

    fn apply_requests(&self, requests: &[EventRequest]) {
        for r in requests {
            // The id existed when the script asked; it may have been cleared since.
            let _ = self.apply(r.op, Target::Id(r.id));
        }
    }

    /// Runs one event in one stage; returns whether this execution short-circuits.
    fn execute(
        &self,
        event: &Event,
        stage: Stage,
        run: &mut ExitRun<'_, '_>,
        regs: &mut GuestRegs,
        guest: &mut dyn GuestAccess,
    ) -> bool {
        let exit = run.exit;
        let counters = &event.counters;
        match stage {
            Stage::Pre => counters.pre_runs.fetch_add(1, Ordering::Relaxed),
            Stage::Post => counters.post_runs.fetch_add(1, Ordering::Relaxed),
        };
        self.sink.triggered(event.id, stage, exit.core);
        let default_sc = stage == Stage::Pre && event.spec.options.short_circuit;
        let Some(script) = &event.script else {
            if default_sc {
                counters.short_circuits.fetch_add(1, Ordering::Relaxed);
            }
            return default_sc;
        };
        let mut pseudo = PseudoValues::default();
        pseudo.set(PseudoReg::EventStage, stage as u64);
        pseudo.set(PseudoReg::Context, exit.context);
        pseudo.set(PseudoReg::EventId, event.id);
        pseudo.set(PseudoReg::EventTag, event.id + EVENT_TAG_BASE);
        pseudo.set(PseudoReg::Core, u64::from(exit.core));
        pseudo.set(PseudoReg::Pid, exit.pid);
        pseudo.set(PseudoReg::Tid, exit.tid);
        pseudo.set(PseudoReg::Pname, exit.pname);
        pseudo.set(PseudoReg::Proc, exit.process);
        pseudo.set(PseudoReg::Thread, exit.thread);
        pseudo.set(PseudoReg::Ip, regs.rip);
        if let Some(b) = &event.buffer {
            pseudo.set(PseudoReg::Buffer, b.lock().as_ptr() as u64);
        }
        let mut clock = [0u8; CLOCK_TIME + 13];
        let mut clock_len = 0;
        if script.reads_pseudo(PseudoReg::Date) || script.reads_pseudo(PseudoReg::Time) {
            if let Some(t) = guest.local_time() {
                clock[..11].copy_from_slice(&t.date_string());
                clock[CLOCK_TIME..].copy_from_slice(&t.time_string());
                clock_len = clock.len();
                let base = clock.as_ptr() as u64;
                pseudo.set(PseudoReg::Date, base);
                pseudo.set(PseudoReg::Time, base + CLOCK_TIME as u64);
            }
        }
        let (recorder, claim) = ClaimLater {
            slot: &mut *run.recorder,
            tried: &mut run.claim_tried,
            output: run.output,
            flush: run.flush,
            core: exit.core,
            event_id: event.id,
            stage,
            pid: exit.pid,
            rip: regs.rip,
        }
        .start(script.may_output());
        let mut env = ExecutionEnv {
            clock: &clock[..clock_len],
            guest: &mut *guest,
            event,
            stage,
            short_circuit: default_sc,
            refused_short_circuits: 0,
            recorder,
            claim,
            lost: self.output.count_busy_drop(),
            requests: &mut *run.requests,
            known_id: run.known,
            pause: false,
        };
        let result = script.execute(regs, &pseudo, &mut env);
        let mut sc = env.short_circuit;
        if env.refused_short_circuits > 0 {
            counters
                .refused_short_circuits
                .fetch_add(env.refused_short_circuits, Ordering::Relaxed);
        }
        if let Err(failure) = result {
            counters.script_errors.fetch_add(1, Ordering::Relaxed);
            let msg = match &failure {
                ScriptFailure::FuelExhausted(located) => {
                    counters.fuel_exhaustions.fetch_add(1, Ordering::Relaxed);
                    located
                        .clone()
                        .unwrap_or_else(|| String::from("fuel exhausted (endless loop?)"))
                }
                ScriptFailure::Error(m) => m.clone(),
            };
            env.output(
                format!(
                    "error: event {:#x} ({} stage): {msg}\n",
                    event.id,
                    if stage == Stage::Pre { "pre" } else { "post" }
                )
                .as_bytes(),
            );
            // Rule 5: a failed execution does not change the emulation: only the event's
            // own `sc on|off` default counts, not what the script set before failing.
            sc = default_sc;
        }
        let pause = env.pause;
        // `env` borrowed the recorder until here: the execution's records are complete.
        if let Some(r) = run.recorder.as_mut() {
            r.end();
            if self.output.mode() == OutputMode::Immediate {
                self.output.deliver(r.ring(), &*self.sink);
            }
        }
        if pause {
            // The break may last until a console says `g`: the exit gives its ring back
            // first (publishing what it recorded), so the other cores' output, stamped after
            // this exit's, is not held back behind it meanwhile. Its executions after the
            // break take the ring again, with a stamp after everything the pause let by.
            *run.recorder = None;
            run.claim_tried = false;
            // After the script's output, so the console shows it before the break.
            let at = PauseInfo {
                event_id: event.id,
                stage,
                core: exit.core,
                context: exit.context,
            };
            guest.pause(&at, regs);
        }
        if sc {
            counters.short_circuits.fetch_add(1, Ordering::Relaxed);
        }
        sc
    }
}

/// What the executions of one exit share: the exit, the event-table requests to apply
/// after it, the table's ids, and the exit's hold on its vCPU's output ring.
struct ExitRun<'a, 'r> {
    exit: &'a Exit,
    requests: &'a mut Vec<EventRequest>,
    known: &'a dyn Fn(u64) -> bool,
    recorder: &'a mut Option<Recorder<'r>>,
    /// The exit tried to take its ring (and `recorder` says whether it got it).
    claim_tried: bool,
    flush: Option<Flush<'r>>,
    output: &'r EventOutput,
}
