//! HyperDbg command lines: event commands (`!msrread 0xc0000080 stage post script {...}`,
//! parsed by [`event_command`]), `events`, `output` and `? script`. Every error carries the
//! byte range of the offending word so a client can underline it.
//!
//! The script inside `script { ... }` is not compiled here (hv-core never links the
//! compiler): the spec keeps its text and its offset in the line, and the embedder's
//! compiler positions its diagnostics with that offset.

use alloc::format;
use alloc::string::{String, ToString};

mod debugger;
mod event_command;
mod words;

pub use debugger::{DebuggerCommand, Expr, DEBUGGER_COMMANDS, DEFAULT_LENGTH, MAX_LENGTH};
pub use event_command::{parse_event_command, parse_event_command_with};

use crate::argument::{NoSymbols, Symbols};
use crate::event::EventSpec;
use crate::number::parse_number;
use words::{words, Word};

/// A command-line error: what and where (byte offsets into the line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub help: Option<String>,
}

impl CommandError {
    pub(crate) fn at(word: &Word<'_>, message: impl Into<String>) -> CommandError {
        CommandError {
            message: message.into(),
            start: word.start,
            end: word.end(),
            help: None,
        }
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// An error at `start..end` of the line; an empty range is widened to one byte so a
    /// caret has something to point at.
    pub fn new(
        message: impl Into<String>,
        start: usize,
        end: usize,
        help: Option<String>,
    ) -> CommandError {
        CommandError {
            message: message.into(),
            start,
            end: end.max(start + usize::from(start == end)),
            help,
        }
    }

    /// An error about the whole of `line`.
    pub fn whole(line: &str, message: impl Into<String>) -> CommandError {
        CommandError::new(message, 0, line.trim_end().len().max(1), None)
    }
}

impl core::fmt::Display for CommandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `events e|d|c` target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Id(u64),
}

/// Anything a user can type at the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Event(EventSpec),
    /// `events`
    List,
    Enable(Target),
    Disable(Target),
    Clear(Target),
    /// `events sc on|off`
    ShortCircuit(bool),
    /// `? script`: evaluate once, outside any event; the script text and its offset.
    Eval(String, usize),
    /// `output ...`: HyperDbg's event forwarding sources.
    Output(OutputCommand),
    /// `g`, `pause`, `r`, `~`, `d*`, `e*`, `u`, `k`: the debugger's own commands.
    Debugger(DebuggerCommand),
}

/// Where an output source sends what it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Appends to a file (created if missing).
    File,
    /// Connects to a TCP listener, `HOST:PORT`.
    Tcp,
    /// HyperDbg's named pipe; a Unix stream socket path here.
    NamedPipe,
}

impl OutputKind {
    pub fn name(&self) -> &'static str {
        match self {
            OutputKind::File => "file",
            OutputKind::Tcp => "tcp",
            OutputKind::NamedPipe => "namedpipe",
        }
    }
}

/// HyperDbg's `output` command: output sources that events name with `output {NAME}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputCommand {
    /// `output create NAME file|tcp|namedpipe ADDRESS`
    Create {
        name: String,
        kind: OutputKind,
        address: String,
    },
    /// `output open NAME`
    Open(String),
    /// `output close NAME`
    Close(String),
    /// `output`: list the sources.
    List,
}

/// Parses any command line, with no symbols known.
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
    parse_command_with(line, &NoSymbols)
}

/// Parses any command line; `symbols` names addresses in event arguments.
pub fn parse_command_with(line: &str, symbols: &dyn Symbols) -> Result<Command, CommandError> {
    let trimmed_start = line.len() - line.trim_start().len();
    let rest = line.trim();
    if rest.is_empty() {
        return Err(CommandError {
            message: "empty command".into(),
            start: 0,
            end: 0,
            help: None,
        });
    }
    if let Some(script) = rest.strip_prefix('?') {
        return Ok(Command::Eval(script.to_string(), trimmed_start + 1));
    }
    // `!db` and the other physical-memory commands start like an event command.
    let ws = words(line)?;
    if let Some(parsed) = debugger::parse_debugger(line, &ws) {
        return parsed.map(Command::Debugger);
    }
    if rest.starts_with('!') {
        return parse_event_command_with(line, symbols).map(Command::Event);
    }
    let first = ws[0];
    if first.text == "output" {
        return parse_output(line, &ws).map(Command::Output);
    }
    if first.text != "events" {
        return Err(
            CommandError::at(&first, format!("unknown command `{}`", first.text)).help(
                "commands: !EVENT ..., events, events e|d|c ID|all, events sc on|off, \
                 output create|open|close ..., ? SCRIPT; debugger: g, pause, r, ~, \
                 db/dw/dd/dq/!db.. ADDR [l LEN], eb/ed/eq ADDR VALUE, u ADDR, k",
            ),
        );
    }
    let target = |w: Option<&Word<'_>>| -> Result<Target, CommandError> {
        let w = w.ok_or_else(|| CommandError {
            message: "missing event id (or `all`)".into(),
            start: line.len(),
            end: line.len(),
            help: None,
        })?;
        if w.text == "all" {
            return Ok(Target::All);
        }
        parse_number(w.text)
            .map(Target::Id)
            .ok_or_else(|| CommandError::at(w, format!("`{}` is not an event id", w.text)))
    };
    let cmd = match ws.get(1).map(|w| w.text) {
        None => Command::List,
        Some("e") => Command::Enable(target(ws.get(2))?),
        Some("d") => Command::Disable(target(ws.get(2))?),
        Some("c") => Command::Clear(target(ws.get(2))?),
        Some("sc") => match ws.get(2).map(|w| w.text) {
            Some("on") => Command::ShortCircuit(true),
            Some("off") => Command::ShortCircuit(false),
            _ => {
                return Err(CommandError {
                    message: "expected `on` or `off` after `events sc`".into(),
                    start: ws[1].start,
                    end: ws[1].end(),
                    help: None,
                })
            }
        },
        Some(_) => {
            return Err(CommandError::at(
                &ws[1],
                format!("unknown `events` action `{}`", ws[1].text),
            )
            .help("events | events e|d|c ID|all | events sc on|off"))
        }
    };
    let used = match cmd {
        Command::List => 1,
        _ => 3,
    };
    if let Some(extra) = ws.get(used) {
        return Err(CommandError::at(
            extra,
            format!("unexpected `{}`", extra.text),
        ));
    }
    Ok(cmd)
}

/// `output`, `output create NAME KIND ADDRESS`, `output open|close NAME`.
fn parse_output(line: &str, ws: &[Word<'_>]) -> Result<OutputCommand, CommandError> {
    let end_of_line = |what: &str| CommandError {
        message: format!("missing {what}"),
        start: line.len(),
        end: line.len(),
        help: Some(
            "output create NAME file|tcp|namedpipe ADDRESS | output open NAME | output close NAME"
                .into(),
        ),
    };
    let name = |w: Option<&Word<'_>>| -> Result<String, CommandError> {
        let w = w.ok_or_else(|| end_of_line("the output source's name"))?;
        let ok = w.text.len() <= 50
            && w.text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(CommandError::at(
                w,
                "an output source's name is at most 50 letters, digits, `_` or `-`",
            ));
        }
        Ok(w.text.to_string())
    };
    let (command, used) = match ws.get(1).map(|w| w.text) {
        None => (OutputCommand::List, 1),
        Some("create") => {
            let n = name(ws.get(2))?;
            let kind_word = ws
                .get(3)
                .ok_or_else(|| end_of_line("the kind (file, tcp or namedpipe)"))?;
            let kind = match kind_word.text {
                "file" => OutputKind::File,
                "tcp" => OutputKind::Tcp,
                "namedpipe" => OutputKind::NamedPipe,
                other => {
                    return Err(CommandError::at(
                        kind_word,
                        format!("unknown output kind `{other}`"),
                    )
                    .help("file PATH, tcp HOST:PORT, namedpipe PATH (a Unix socket here)"))
                }
            };
            let address = ws.get(4).ok_or_else(|| end_of_line("the address"))?;
            let text = address.text.trim_matches('"');
            if text.is_empty() {
                return Err(CommandError::at(address, "empty address"));
            }
            (
                OutputCommand::Create {
                    name: n,
                    kind,
                    address: text.to_string(),
                },
                5,
            )
        }
        Some("open") => (OutputCommand::Open(name(ws.get(2))?), 3),
        Some("close") => (OutputCommand::Close(name(ws.get(2))?), 3),
        Some(_) => return Err(CommandError::at(
            &ws[1],
            format!("unknown `output` action `{}`", ws[1].text),
        )
        .help(
            "output create NAME file|tcp|namedpipe ADDRESS | output open NAME | output close NAME",
        )),
    };
    if let Some(extra) = ws.get(used) {
        return Err(CommandError::at(
            extra,
            format!("unexpected `{}`", extra.text),
        ));
    }
    Ok(command)
}
