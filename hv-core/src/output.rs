//! Where event output goes: the embedder's sink (a console, a socket to `hvscript
//! attach`, a log buffer). Each execution's output arrives in one piece.

use crate::event::Stage;

/// Where a piece of event output comes from: the event, its stage, the core, and the
/// guest's process and instruction pointer at that exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputContext {
    pub event_id: u64,
    pub stage: Stage,
    pub core: u32,
    /// The guest's process id, where the guest has processes.
    pub pid: Option<u64>,
    pub rip: u64,
}

pub trait OutputSink: Send + Sync {
    /// Text an execution printed (printf, print, warnings).
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]);

    /// [`output`](Self::output) with the exit's context; what the engine calls. A sink that
    /// records where output comes from (JSON lines) overrides it; forwarding sinks pass the
    /// context on.
    fn output_at(&self, at: &OutputContext, text: &[u8]) {
        self.output(at.event_id, at.stage, at.core, text);
    }

    /// An event triggered (called for every execution, before its output).
    fn triggered(&self, _event_id: u64, _stage: Stage, _core: u32) {}
}

/// Discards everything.
pub struct NullSink;

impl OutputSink for NullSink {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, _text: &[u8]) {}
}
