//! HyperDbg's command window: `hvscript attach SOCKET` on a terminal with no `-e`/`-f`.
//!
//! A prompt (`hvscript> `) with line editing and a history kept in a file
//! (`$HVSCRIPT_HISTORY`, else `~/.hvscript_history`); Tab completes command words, event
//! kinds (`!mon` -> `!monitor`), built-in functions (`interl` -> `interlocked_...`),
//! registers (`@r`) and pseudo-registers (`$`). A command whose braces are open continues
//! on the next line (`...> `) until they balance. Event output and break notices arrive
//! on a reader thread and are printed above the prompt without breaking the line being
//! typed. Ctrl-C breaks into the debugger (`pause`); Ctrl-D (or `q`) leaves, and the
//! guest goes on.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use hv_kvm::control;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, ExternalPrinter, Helper};

use crate::attach::{reply, Closed, Link, Session};
use crate::commands;
use crate::include::SourceFile;
use crate::out::errln;

const PROMPT: &str = "hvscript> ";

/// Completion and multi-line input.
struct ConsoleHelper {
    words: Vec<String>,
}

impl ConsoleHelper {
    fn new() -> ConsoleHelper {
        let mut words: Vec<String> = Vec::new();
        words.extend(
            ["events", "output", "?"]
                .iter()
                .chain(hv_core::DEBUGGER_COMMANDS)
                .map(|w| w.to_string()),
        );
        words.extend(
            hv_core::EventKind::ALL
                .iter()
                .map(|k| format!("!{}", k.command())),
        );
        words.extend(
            hvscript_abi::Builtin::ALL
                .iter()
                .map(|b| b.name().to_string()),
        );
        words.extend(
            hvscript_abi::Register::ALL
                .iter()
                .map(|r| format!("@{}", r.name())),
        );
        words.extend(
            hvscript_abi::PseudoReg::ALL
                .iter()
                .map(|p| format!("${}", p.name())),
        );
        words.extend(
            [
                "script", "stage", "pre", "post", "all", "sc", "on", "off", "pid", "core",
            ]
            .iter()
            .map(|w| w.to_string()),
        );
        words.sort();
        words.dedup();
        ConsoleHelper { words }
    }
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_!@$~".contains(c)))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let found = self
            .words
            .iter()
            .filter(|w| w.starts_with(word))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, found))
    }
}

impl Validator for ConsoleHelper {
    /// A command whose braces are still open continues on the next line.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if commands::split(ctx.input()).complete {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {}

impl Helper for ConsoleHelper {}

/// Replies come from the reader thread, event output is printed by it.
struct Threaded {
    writer: UnixStream,
    replies: mpsc::Receiver<Vec<u8>>,
}

impl Link for Threaded {
    fn request(&mut self, frame: &[u8]) -> Result<Result<String, String>, Closed> {
        control::write_frame(&mut self.writer, frame).map_err(|_| Closed)?;
        let f = self.replies.recv().map_err(|_| Closed)?;
        Ok(reply(&f))
    }
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HVSCRIPT_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hvscript_history"))
}

/// Runs the command window on `stream` until Ctrl-D, `q` or the VM goes away.
pub fn run(stream: UnixStream) -> ExitCode {
    let mut editor: Editor<ConsoleHelper, rustyline::history::DefaultHistory> = match Editor::new()
    {
        Ok(e) => e,
        Err(e) => {
            errln!("error: the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(ConsoleHelper::new()));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut printer = match editor.create_external_printer() {
        Ok(p) => p,
        Err(e) => {
            errln!("error: the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::channel();
    // Frames in: output and break notices above the prompt, replies to the main thread.
    std::thread::spawn(move || {
        let mut reader = reader;
        while let Ok(f) = control::read_frame(&mut reader) {
            if f.first() == Some(&control::TAG_OUTPUT) {
                let _ = printer.print(String::from_utf8_lossy(&f[1..]).into_owned());
            } else if tx.send(f).is_err() {
                return;
            }
        }
    });
    let mut link = Threaded {
        writer: stream,
        replies: rx,
    };
    let mut session = Session {
        link: &mut link,
        failed: false,
        json: false,
    };
    match session.request(&control::encode_console_hello()) {
        Ok(Ok(text)) => println_flush(&text),
        _ => {
            errln!("error: the VM closed the connection");
            return ExitCode::FAILURE;
        }
    }
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(l) => l,
            // Ctrl-C: break into the debugger, as in HyperDbg's command window.
            Err(ReadlineError::Interrupted) => "pause".to_string(),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                errln!("error: the terminal: {e}");
                break;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed == "q" || trimmed == "exit" {
            break;
        }
        let _ = editor.add_history_entry(line.as_str());
        let mut closed = false;
        for c in commands::load(&SourceFile::command_line("<console>", line.clone())) {
            if session.send(c).is_err() {
                closed = true;
                break;
            }
        }
        if closed {
            errln!("the VM closed the connection");
            break;
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    ExitCode::SUCCESS
}

fn println_flush(text: &str) {
    crate::out::outln!("{}", text.trim_end());
}
