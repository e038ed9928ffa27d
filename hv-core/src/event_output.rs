//! The engine's event output: one [`OutputRing`] per vCPU, the [`FormatTable`] they
//! share and the counter that stamps exits, and the two ways out of the rings.
//!
//! An exit claims its core's ring ([`EventOutput::recorder`]) when its first script that
//! may print runs (or one that could not prints after all: an error), so an exit whose
//! scripts print nothing pays nothing for output; its executions record their output there
//! without formatting it (printf as a format id and raw values,
//! `hvscript_runtime::Recorder`). Then:
//!
//! - **immediate** ([`Engine::new`](crate::Engine::new)): each execution's text is formatted
//!   and handed to the sink as the execution ends, on the vCPU, as before rings existed:
//!   for embedders with no thread to spare (an execution that fills its ring has what it
//!   printed so far delivered then, and goes on);
//! - **deferred** ([`Engine::deferred`](crate::Engine::deferred)): records wait in the rings
//!   and a consumer outside the exit path calls [`EventOutput::drain`]
//!   ([`Engine::drain_output`](crate::Engine::drain_output)), which formats them and hands
//!   each execution's text to the sink in the global order of the exits' stamps. A ring
//!   that fills up because the consumer (or the sink behind it: a blocked pipe, a slow
//!   client) does not keep up drops messages and counts them ([`EventOutput::dropped`]);
//!   the vCPU never waits. Holding output back until the consumer decides to send it is
//!   HyperDbg's `imm no`: with a deferred engine every event is buffered this way, and the
//!   embedder's sink decides when text leaves.
//!
//! The merge emits a batch only once no ring can still publish an earlier one: it reads
//! the stamp counter, then every ring's claim (see `hvscript_runtime::output_ring`), then
//! the records, and emits the batches stamped below both the counter it read and every
//! exit in progress. Everything is emitted once the vCPUs are idle.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hvscript_runtime::output_recorder::Flush;
use hvscript_runtime::{Batch, ClaimState, FormatTable, OutputReader, OutputRing, Recorder};

use crate::event::Stage;
use crate::output::OutputSink;

/// Rings for cores `0..MAX_RINGS`; a higher core shares ring `core % MAX_RINGS` (an exit
/// that finds it held by another then loses its output, counted).
pub const MAX_RINGS: usize = 64;

/// The default size of one vCPU's ring: about 8000 printf calls with 3 arguments.
pub const DEFAULT_RING_BYTES: usize = 256 * 1024;

/// Notes waiting for the consumer before new ones are dropped.
const MAX_NOTES: usize = 1024;

/// Formatted batches the merge keeps waiting for an earlier exit before it emits them
/// anyway (a vCPU stuck in one exit must not make the consumer hold unbounded text).
const MAX_WAITING_BYTES: usize = 4 << 20;

/// How an engine's output leaves its rings (module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    Immediate,
    Deferred,
}

#[derive(Default)]
struct Merge {
    reader: OutputReader,
    /// Per ring, formatted batches not yet emitted, in stamp order.
    waiting: Vec<VecDeque<Batch>>,
    waiting_bytes: usize,
}

/// The rings, their formats and stamps (module documentation).
pub struct EventOutput {
    rings: Vec<spin::Once<OutputRing>>,
    stamps: AtomicU64,
    formats: FormatTable,
    ring_bytes: usize,
    mode: OutputMode,
    /// One consumer at a time.
    merge: spin::Mutex<Merge>,
    /// The reader of immediate deliveries (a short lock: formatting, not writing).
    immediate: spin::Mutex<OutputReader>,
    /// Messages of exits that found their ring held by another exit, and notes that found
    /// the queue full.
    busy_dropped: AtomicU64,
    /// The hypervisor's own messages ([`EventOutput::note`]), in stamp order.
    notes: spin::Mutex<VecDeque<Batch>>,
}

impl EventOutput {
    pub fn new(mode: OutputMode, ring_bytes: usize) -> EventOutput {
        EventOutput {
            rings: (0..MAX_RINGS).map(|_| spin::Once::new()).collect(),
            stamps: AtomicU64::new(0),
            formats: FormatTable::new(),
            ring_bytes,
            mode,
            merge: spin::Mutex::new(Merge::default()),
            immediate: spin::Mutex::new(OutputReader::new()),
            busy_dropped: AtomicU64::new(0),
            notes: spin::Mutex::new(VecDeque::new()),
        }
    }

    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// Core `core`'s ring (made on its first exit with events).
    fn ring(&self, core: u32) -> &OutputRing {
        self.rings[core as usize % MAX_RINGS].call_once(|| OutputRing::new(self.ring_bytes))
    }

    /// The recorder of one exit on `core`: `None` when another exit holds the ring. With
    /// `flush` (immediate output), a ring that fills up during an execution is delivered
    /// through it instead of dropping.
    pub fn recorder<'a>(&'a self, core: u32, flush: Option<Flush<'a>>) -> Option<Recorder<'a>> {
        let claim = self.ring(core).claim(&self.stamps)?;
        Some(match flush {
            Some(f) => Recorder::with_flush(claim, &self.formats, f),
            None => Recorder::new(claim, &self.formats),
        })
    }

    /// A message from the hypervisor itself (not a script's) for core `core`, e.g. a
    /// register write KVM refused: it goes out with the events' output, in order with it,
    /// and never makes the vCPU write anything. Immediate engines hand it to `sink` now.
    pub fn note(&self, core: u32, event_id: u64, stage: Stage, text: &[u8], sink: &dyn OutputSink) {
        if self.mode == OutputMode::Immediate {
            sink.output(event_id, stage, core, text);
            return;
        }
        let mut notes = self.notes.lock();
        if notes.len() >= MAX_NOTES {
            self.busy_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Under the lock: notes stay in stamp order. The next exit to claim a ring gets
        // this stamp too and goes after the note (it is later in the queue's merge).
        notes.push_back(Batch {
            stamp: self.stamps.load(Ordering::Acquire),
            event_id,
            stage,
            core,
            pid: 0,
            rip: 0,
            text: text.to_vec(),
        });
    }

    /// Counts a message lost because its exit had no ring.
    pub fn count_busy_drop(&self) -> &AtomicU64 {
        &self.busy_dropped
    }

    /// Messages dropped so far: rings that were full, and exits that found their ring held.
    pub fn dropped(&self) -> u64 {
        let rings: u64 = self
            .rings
            .iter()
            .filter_map(|r| r.get())
            .map(|r| r.dropped())
            .sum();
        rings + self.busy_dropped.load(Ordering::Relaxed)
    }

    /// Immediate mode: formats what `ring` has published (the execution that just ended)
    /// and hands it to `sink` now.
    pub fn deliver(&self, ring: &OutputRing, sink: &dyn OutputSink) {
        let mut batches = Vec::new();
        self.immediate
            .lock()
            .read(ring, &self.formats, |b| batches.push(b));
        for b in batches {
            emit(sink, &b);
        }
    }

    /// Formats what the rings hold and hands it to `sink`, each execution's text in one
    /// piece, in the exits' order; returns how many executions' output it delivered.
    /// Output of exits still in progress, and what comes after it, waits for a later call
    /// (module documentation). Without exits in progress, everything goes.
    ///
    /// One consumer drains at a time, and it holds the rings while the sink writes (so the
    /// order holds); a call that finds another consumer draining returns 0 at once rather
    /// than wait on that consumer's sink.
    pub fn drain(&self, sink: &dyn OutputSink) -> usize {
        self.drain_bounded(sink, None)
            .map_or(0, |(delivered, _)| delivered)
    }

    /// Called by core `core`'s vCPU inside an exit it holds, before the exit does something
    /// the user sees beside the events' output (a program writing to its terminal): hands
    /// `sink` everything before that exit, and what the exit's executions that have ended
    /// recorded, in order. Returns `true` once all of that is out; `false` when another
    /// consumer is draining (try again) or an earlier exit is still in progress on another
    /// core (its output, and so this exit's, must wait for it).
    pub fn drain_through_own_exit(&self, core: u32, sink: &dyn OutputSink) -> bool {
        self.drain_bounded(sink, Some(core as usize % MAX_RINGS))
            .is_some_and(|(_, complete)| complete)
    }

    /// [`EventOutput::drain`]; with `own`, that ring's exit in progress is the caller's and
    /// does not hold back its own published executions (the caller is inside it, so they
    /// are all it will have published when it asks). Returns the executions delivered and
    /// whether nothing stamped up to the caller's exit is left, or `None` when another
    /// consumer holds the merge.
    fn drain_bounded(&self, sink: &dyn OutputSink, own: Option<usize>) -> Option<(usize, bool)> {
        let mut merge = self.merge.try_lock()?;
        // The order of these reads is what makes the bound safe: counter, claims, records.
        let mut bound = self.stamps.load(Ordering::Acquire);
        let mut own_stamp = None;
        for (i, ring) in self.rings.iter().enumerate() {
            let Some(ring) = ring.get() else { continue };
            match ring.claim_state() {
                ClaimState::Idle => {}
                ClaimState::Starting => bound = 0,
                ClaimState::Stamped(s) if own == Some(i) => own_stamp = Some(s),
                ClaimState::Stamped(s) => bound = bound.min(s),
            }
        }
        // Records stamped below `ring_bound` may go, notes stamped up to `note_bound`. The
        // caller's exit goes once every earlier one has: its records (stamp `s`) and the
        // notes made before it took its stamp (a note takes the next exit's stamp), not
        // those made during it (`s + 1`), which follow its output.
        let (ring_bound, note_bound) = match own_stamp {
            Some(s) if s < bound => (s + 1, s),
            Some(s) => (s.min(bound), s.min(bound)),
            None => (bound, bound),
        };
        let Merge {
            reader,
            waiting,
            waiting_bytes,
        } = &mut *merge;
        // One queue per ring, and the notes' last.
        waiting.resize_with(self.rings.len() + 1, VecDeque::new);
        for (i, ring) in self.rings.iter().enumerate() {
            if let Some(ring) = ring.get() {
                reader.read(ring, &self.formats, |b| {
                    *waiting_bytes += b.text.len();
                    waiting[i].push_back(b);
                });
            }
        }
        for b in self.notes.lock().drain(..) {
            *waiting_bytes += b.text.len();
            waiting[self.rings.len()].push_back(b);
        }
        let mut delivered = 0;
        let notes = self.rings.len();
        // The queues with something in them (a few: one per vCPU that printed, and the
        // notes'), so each batch's merge step looks at those, not at every ring's.
        let mut busy: Vec<usize> = (0..waiting.len())
            .filter(|&i| !waiting[i].is_empty())
            .collect();
        loop {
            busy.retain(|&i| !waiting[i].is_empty());
            // The earliest stamp; a note takes the stamp the next exit will get, so on a tie
            // it goes first, and it may go once every exit before it has (`<=`).
            let next = busy
                .iter()
                .filter_map(|&i| waiting[i].front().map(|b| (b.stamp, i != notes, i)))
                .min();
            let Some((stamp, from_ring, i)) = next else {
                break;
            };
            let ready = if from_ring {
                stamp < ring_bound
            } else {
                stamp <= note_bound
            };
            if !ready && *waiting_bytes <= MAX_WAITING_BYTES {
                break;
            }
            if let Some(b) = waiting[i].pop_front() {
                *waiting_bytes -= b.text.len();
                emit(sink, &b);
                delivered += 1;
            }
        }
        let complete = match own_stamp {
            // Everything up to the caller's exit is out only if that exit could go.
            Some(s) => s < bound,
            None => true,
        };
        Some((delivered, complete))
    }

    /// Whether records or formatted text wait for [`EventOutput::drain`].
    pub fn has_pending(&self) -> bool {
        self.rings
            .iter()
            .filter_map(|r| r.get())
            .any(|r| r.has_pending())
            || !self.notes.lock().is_empty()
            || self
                .merge
                .try_lock()
                .is_none_or(|m| m.waiting.iter().any(|q| !q.is_empty()))
    }
}

fn emit(sink: &dyn OutputSink, b: &Batch) {
    if !b.text.is_empty() {
        let at = crate::output::OutputContext {
            event_id: b.event_id,
            stage: b.stage,
            core: b.core,
            pid: (b.pid != 0).then_some(b.pid),
            rip: b.rip,
        };
        sink.output_at(&at, &b.text);
    }
}
