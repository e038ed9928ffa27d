//! Where event output goes: the embedder's sink (a console, a socket to `hvscript
//! attach`, a log buffer). Each execution's output arrives in one piece.

use crate::event::Stage;

pub trait OutputSink: Send + Sync {
    /// Text an execution printed (printf, print, warnings).
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]);

    /// An event triggered (called for every execution, before its output).
    fn triggered(&self, _event_id: u64, _stage: Stage, _core: u32) {}
}

/// Discards everything.
pub struct NullSink;

impl OutputSink for NullSink {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, _text: &[u8]) {}
}
