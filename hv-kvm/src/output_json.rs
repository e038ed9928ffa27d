//! Event output as JSON lines, for `run --json` and `attach --json`: one object per
//! message, so a user can pipe hvscript into `jq`. The schema (README, "Machine-readable
//! output"):
//!
//! ```text
//! {"type":"event","event":1,"stage":"pre","core":0,"pid":4242,"rip":"0x401136",
//!  "time":1796626800.123456,"text":"work(0)\n"}
//! ```
//!
//! `pid` is `null` where the guest has no processes (the demo); `rip` is a hex string (a
//! 64-bit address does not fit a JSON number exactly); `time` is seconds since the Unix
//! epoch when the message was handed to the sink; `text` is the message as printed.

use hv_core::{OutputContext, Stage};

/// A JSON string literal for `text`.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Seconds since the Unix epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The JSON line (without its newline) for one event message.
pub fn event_line(at: &OutputContext, text: &[u8]) -> String {
    format!(
        "{{\"type\":\"event\",\"event\":{},\"stage\":\"{}\",\"core\":{},\"pid\":{},\"rip\":\"{:#x}\",\"time\":{:.6},\"text\":{}}}",
        at.event_id,
        if at.stage == Stage::Pre { "pre" } else { "post" },
        at.core,
        at.pid.map_or("null".to_string(), |p| p.to_string()),
        at.rip,
        now(),
        string(&String::from_utf8_lossy(text))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn an_event_line_has_every_field() {
        let at = OutputContext {
            event_id: 3,
            stage: Stage::Post,
            core: 1,
            pid: None,
            rip: 0x401000,
        };
        let line = event_line(&at, b"hi\n");
        assert!(line.starts_with(
            "{\"type\":\"event\",\"event\":3,\"stage\":\"post\",\"core\":1,\"pid\":null,\"rip\":\"0x401000\",\"time\":"
        ));
        assert!(line.ends_with(",\"text\":\"hi\\n\"}"));
    }
}
