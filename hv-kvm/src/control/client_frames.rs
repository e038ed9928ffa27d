//! What clients send besides command lines (compiled commands, the session request) and
//! what they get back for a command's error (`@START:END` located frames).

use hv_core::{CommandError, Prepared};

use super::ControlSession;

/// The first byte of a client frame that is not a command line.
pub const FRAME_BINARY: u8 = 0;
/// `00 'c'`: a compiled command.
pub const KIND_COMPILED: u8 = b'c';
/// `00 'g'`: the session request.
pub const KIND_SESSION: u8 = b'g';
/// `00 'k'`: this client is an interactive console (a script's `pause()` may stop the
/// guest for it).
pub const KIND_CONSOLE: u8 = b'k';
/// `00 'j'`: send this client event output as JSON lines.
pub const KIND_JSON: u8 = b'j';

/// A decoded client frame.
#[derive(Debug)]
pub enum ClientFrame {
    /// A command line and what came compiled with it (nothing, for a text frame).
    Command(String, Prepared),
    /// What a front end compiles against, please.
    Session,
    /// The client is a console.
    Console,
    /// The client wants event output as JSON lines.
    Json,
}

/// The `00 'c'` frame payload for `line` with its code object and global bindings.
pub fn encode_compiled(line: &str, code: Option<&[u8]>, globals: &[(String, u32)]) -> Vec<u8> {
    let mut out = vec![FRAME_BINARY, KIND_COMPILED];
    let chunk = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    chunk(&mut out, line.as_bytes());
    chunk(&mut out, code.unwrap_or_default());
    out.extend_from_slice(&(globals.len() as u32).to_le_bytes());
    for (name, slot) in globals {
        chunk(&mut out, name.as_bytes());
        out.extend_from_slice(&slot.to_le_bytes());
    }
    out
}

/// The `00 'g'` frame payload.
pub fn encode_session_request() -> Vec<u8> {
    vec![FRAME_BINARY, KIND_SESSION]
}

/// The `00 'k'` frame payload.
pub fn encode_console_hello() -> Vec<u8> {
    vec![FRAME_BINARY, KIND_CONSOLE]
}

/// The `00 'j'` frame payload.
pub fn encode_json_request() -> Vec<u8> {
    vec![FRAME_BINARY, KIND_JSON]
}

/// Reads a client frame; `Err` says why it is malformed.
pub fn decode_client_frame(payload: &[u8]) -> Result<ClientFrame, String> {
    match payload {
        [FRAME_BINARY, KIND_SESSION] => Ok(ClientFrame::Session),
        [FRAME_BINARY, KIND_CONSOLE] => Ok(ClientFrame::Console),
        [FRAME_BINARY, KIND_JSON] => Ok(ClientFrame::Json),
        [FRAME_BINARY, KIND_COMPILED, rest @ ..] => decode_compiled(rest),
        [FRAME_BINARY, kind, ..] => Err(format!(
            "malformed frame: unknown binary frame kind {kind:#04x}"
        )),
        [FRAME_BINARY] => Err("malformed frame: a lone NUL byte".into()),
        _ => match std::str::from_utf8(payload) {
            Err(e) => Err(format!("malformed frame: not UTF-8 ({e})")),
            Ok(line) if line.trim().is_empty() => Err("malformed frame: empty command".into()),
            Ok(line) => Ok(ClientFrame::Command(line.to_string(), Prepared::default())),
        },
    }
}

fn decode_compiled(mut rest: &[u8]) -> Result<ClientFrame, String> {
    fn u32_at(rest: &mut &[u8], what: &str) -> Result<u32, String> {
        let Some((head, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("malformed compiled frame: it ends inside {what}"));
        };
        *rest = tail;
        Ok(u32::from_le_bytes(*head))
    }
    fn chunk<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
        let len = u32_at(rest, what)? as usize;
        if rest.len() < len {
            return Err(format!(
                "malformed compiled frame: {what} says {len} bytes, {} remain",
                rest.len()
            ));
        }
        let (head, tail) = rest.split_at(len);
        *rest = tail;
        Ok(head)
    }
    let line = std::str::from_utf8(chunk(&mut rest, "the command's text")?)
        .map_err(|e| format!("malformed compiled frame: the command is not UTF-8 ({e})"))?;
    if line.trim().is_empty() {
        return Err("malformed compiled frame: empty command".into());
    }
    let code = chunk(&mut rest, "the code object")?;
    let count = u32_at(&mut rest, "the binding count")?;
    let mut globals = Vec::new();
    for _ in 0..count {
        let name = std::str::from_utf8(chunk(&mut rest, "a global's name")?)
            .map_err(|e| format!("malformed compiled frame: a global's name is not UTF-8 ({e})"))?;
        let slot = u32_at(&mut rest, "a global's slot")?;
        globals.push((name.to_string(), slot));
    }
    if !rest.is_empty() {
        return Err(format!(
            "malformed compiled frame: {} bytes after its last field",
            rest.len()
        ));
    }
    let prepared = Prepared {
        code: (!code.is_empty()).then(|| code.to_vec()),
        script: None,
        globals,
    };
    Ok(ClientFrame::Command(line.to_string(), prepared))
}

/// The reply to a session request (see the module documentation).
pub fn session_text<S: ControlSession + ?Sized>(vm: &S) -> String {
    let mut out = format!("guest {}\n", vm.guest());
    for (name, slot) in vm.global_names() {
        out.push_str(&format!("global {name} {slot}\n"));
    }
    for (name, addr) in vm.symbols().0 {
        out.push_str(&format!("symbol {name} {addr:x}\n"));
    }
    out
}

/// The guest a session reply names (`demo` or `program`); `demo` when it names none.
pub fn session_guest(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("guest "))
        .map_or("demo", str::trim)
}

/// Reads a session reply: the global bindings and the symbols.
pub fn parse_session(text: &str) -> (Vec<(String, u32)>, hv_core::SymbolMap) {
    let mut globals = Vec::new();
    let mut symbols = hv_core::SymbolMap::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("global"), Some(name), Some(slot)) => {
                if let Ok(slot) = slot.parse() {
                    globals.push((name.to_string(), slot));
                }
            }
            (Some("symbol"), Some(name), Some(addr)) => {
                if let Ok(addr) = u64::from_str_radix(addr, 16) {
                    symbols.0.insert(name.to_string(), addr);
                }
            }
            _ => {}
        }
    }
    (globals, symbols)
}

/// A located command error as `e` frame text: `@START:END`, the message, `help: ...`.
pub fn encode_error(e: &CommandError) -> String {
    let mut out = format!("@{}:{}\n{}", e.start, e.end, e.message);
    if let Some(help) = &e.help {
        out.push_str("\nhelp: ");
        out.push_str(help);
    }
    out
}

/// Reads `e` frame text back: `Some` for a located command error, `None` for a plain
/// frame-level error.
pub fn decode_error(text: &str) -> Option<CommandError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (start, end) = first.strip_prefix('@')?.split_once(':')?;
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    let (message, help) = match rest.split_once("\nhelp: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (rest.to_string(), None),
    };
    Some(CommandError {
        message,
        start,
        end,
        help,
    })
}
