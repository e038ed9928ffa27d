//! `run --json` and `attach --json`: JSON lines a user can pipe into `jq`. Event
//! messages are hv-kvm's ([`hv_kvm::output_json`]: `type` `event`, with the event id,
//! stage, core, pid, rip, time and text); this module writes the rest:
//!
//! ```text
//! {"type":"result","command":"? ...","text":"..."}              a command's output
//! {"type":"error","command":"...","text":"..."}                 a refused command (attach)
//! {"type":"summary","event":1,"command":"!ioin 510 ...","enabled":true,
//!  "pre":100,"post":0,"sc":0,"errors":0}                         one per event, at the end
//! {"type":"vcpu","vcpu":0,"stop":"exit(0)","iterations":100,...} the demo guest, per vCPU
//! {"type":"exits","exits":2016,"seconds":0.21}                   the demo guest's exits
//! {"type":"program","status":0,"ending":"exit(0)"}               a program guest's end
//! ```

use std::sync::Arc;

use hv_core::{Listing, OutputContext, OutputSink, Stage};
use serde_json::json;

use crate::out;

/// Where JSON lines go: standard output, or standard error when standard output is a
/// program guest's own.
#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Writes one JSON line.
pub fn line(stream: Stream, value: &serde_json::Value) {
    let mut text = value.to_string();
    text.push('\n');
    match stream {
        Stream::Stdout => out::stdout(text.as_bytes()),
        Stream::Stderr => out::stderr(text.as_bytes()),
    }
}

/// Event output as JSON lines.
pub struct EventLines {
    pub stream: Stream,
    pub quiet: bool,
}

impl EventLines {
    fn write(&self, text: String) {
        if self.quiet {
            return;
        }
        let mut text = text;
        text.push('\n');
        match self.stream {
            Stream::Stdout => out::stdout(text.as_bytes()),
            Stream::Stderr => out::stderr(text.as_bytes()),
        }
    }
}

impl OutputSink for EventLines {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        // Without the exit's context (a message an output source could not take): what
        // is known, rip 0.
        let at = OutputContext {
            event_id,
            stage,
            core,
            pid: None,
            rip: 0,
        };
        self.write(hv_kvm::output_json::event_line(&at, text));
    }

    fn output_at(&self, at: &OutputContext, text: &[u8]) {
        self.write(hv_kvm::output_json::event_line(at, text));
    }
}

/// The events' summary rows.
pub fn summary(stream: Stream, listing: &[Listing]) {
    for l in listing {
        let c = l.counters;
        line(
            stream,
            &json!({
                "type": "summary",
                "event": l.id,
                "command": l.text,
                "enabled": l.enabled,
                "pre": c.pre_runs,
                "post": c.post_runs,
                "sc": c.short_circuits,
                "errors": c.script_errors,
            }),
        );
    }
}

/// A command's result.
pub fn result(stream: Stream, command: &str, text: &str) {
    line(
        stream,
        &json!({"type": "result", "command": command, "text": text}),
    );
}

/// A sink for the demo's console or a program's event output.
pub fn sink(stream: Stream, quiet: bool) -> Arc<dyn OutputSink> {
    Arc::new(EventLines { stream, quiet })
}
