//! `hvscript attach SOCKET`: a client of a running VM's control socket (`hvscript run
//! --listen SOCKET`, the demo guest or a program). With `-e`/`-f`, or with standard input
//! that is not a terminal, it sends the commands in order and prints the replies and the
//! event output ([`Session`]); with a terminal and no commands it opens HyperDbg's command
//! window ([`crate::console`]).
//!
//! Each command is compiled here, against the guest's rules (the session reply says which
//! guest) and the VM's globals and symbols; the VM only loads what it is sent.

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hv_kvm::control;
use hv_kvm::KvmPlatform;
use hvscript_front::Backend;

use crate::commands;
use crate::include::{Expanded, Located, SourceFile};
use crate::out::{err, errln, out, outln};

/// The commands `run --listen` accepts, for `attach --help`; the rest of HyperDbg's console
/// (`events sc`, `?`, ...) is refused by the VMM with the reason, so it is not offered.
fn attach_commands() -> String {
    format!(
        "Commands (HyperDbg's syntax):
  !EVENT ARGS [pid N] [core N] [stage pre|post|all] [sc on|off] [script {{ ... }}]
      add an event; the kinds hv-kvm raises: {}
      (on a program guest: `hvscript run -l` says which kinds each guest raises)
  events                  list the events and their counters
  events e|d|c ID|all     enable, disable or clear events
  ? SCRIPT                run a script once in the hypervisor, sharing the events' globals
  pause | g               break in (Ctrl-C in the console) | continue
  r [REG [= VALUE]]       registers of the current core, while paused; ~ [N] switches core
  db/dw/dd/dq ADDR [l N]  guest memory (!db ... physical); eb/ew/ed/eq ADDR VALUE... writes
  u ADDR [l N]            disassemble
On a terminal without -e/-f this is HyperDbg's command window: history, Tab completion,
event output above the prompt, Ctrl-D to leave.
A command may span lines: it ends on the line where its braces balance. Comments (// and
/* */) may appear anywhere; `#include \"FILE\"` and `script {{ file:PATH }}` load script
text from files (relative to the command file, or the current directory).",
        hv_kvm::platform::raised_kinds()
    )
}

#[derive(clap::Args)]
#[command(after_help = attach_commands())]
pub struct AttachArgs {
    /// The socket a `hvscript run --listen PATH` serves.
    path: PathBuf,
    /// A command to send (repeatable); without -e or -f, commands are read from standard
    /// input as they are typed.
    #[arg(short = 'e', long = "command", value_name = "COMMAND")]
    commands: Vec<String>,
    /// A file of commands to send, after the -e commands (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Event output and replies as JSON lines (the schema is in the README).
    #[arg(long)]
    json: bool,
    /// After the commands, keep printing event output for this many seconds.
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    follow: f64,
}

/// `hvscript attach PATH`: sends commands to a running `hvscript run --listen PATH` and
/// prints the replies and the event output. Exit status 1 if a command was refused.
pub fn attach(args: AttachArgs) -> ExitCode {
    let mut stream = match UnixStream::connect(&args.path) {
        Ok(s) => s,
        Err(e) => {
            errln!("{}: error: {e}", args.path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut roots = Vec::new();
    for c in &args.commands {
        roots.push(SourceFile::command_line("-e", c.as_str()));
    }
    for path in &args.files {
        match std::fs::read_to_string(path) {
            Ok(t) => roots.push(SourceFile::file(path, t)),
            Err(e) => {
                errln!("{}: error: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if roots.is_empty() && !args.json && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return crate::console::run(stream);
    }
    let mut link = Inline(&mut stream);
    let mut session = Session {
        link: &mut link,
        failed: false,
        json: args.json,
    };
    // Every attached client is a console: while it is connected a script's pause() stops
    // the guest for it, and `pause` holds; when it leaves, the guest goes on.
    if session.request(&control::encode_console_hello()).is_err()
        || (args.json && session.request(&control::encode_json_request()).is_err())
    {
        errln!("error: the VM closed the connection");
        return ExitCode::FAILURE;
    }
    let sent = if roots.is_empty() {
        session.send_stdin()
    } else {
        roots
            .iter()
            .flat_map(commands::load)
            .try_for_each(|c| session.send(c))
    };
    let failed = session.failed;
    if sent.is_err() {
        errln!("error: the VM closed the connection");
        return ExitCode::FAILURE;
    }
    if args.follow > 0.0 && args.follow.is_finite() {
        let end = std::time::Instant::now() + Duration::from_secs_f64(args.follow);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        while std::time::Instant::now() < end {
            match control::read_frame(&mut stream) {
                Ok(f) if f.first() == Some(&control::TAG_OUTPUT) => {
                    out!("{}", String::from_utf8_lossy(&f[1..]));
                }
                Ok(f) if f.first() == Some(&control::TAG_JSON) => {
                    outln!("{}", String::from_utf8_lossy(&f[1..]));
                }
                Ok(_) => {}
                Err(control::FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// How a session exchanges frames with the VM.
pub(crate) trait Link {
    /// Sends one frame and waits for its reply: `Ok` the result's text, `Err` the error
    /// frame's.
    fn request(&mut self, frame: &[u8]) -> Result<Result<String, String>, Closed>;
}

/// Replies read on this thread, event output printed as it comes in between.
struct Inline<'a>(&'a mut UnixStream);

impl Link for Inline<'_> {
    fn request(&mut self, frame: &[u8]) -> Result<Result<String, String>, Closed> {
        control::write_frame(self.0, frame).map_err(|_| Closed)?;
        loop {
            let f = control::read_frame(self.0).map_err(|_| Closed)?;
            if f.first() == Some(&control::TAG_OUTPUT) {
                out!("{}", String::from_utf8_lossy(&f[1..]));
                continue;
            }
            if f.first() == Some(&control::TAG_JSON) {
                outln!("{}", String::from_utf8_lossy(&f[1..]));
                continue;
            }
            return Ok(reply(&f));
        }
    }
}

/// A result or error frame as text.
pub(crate) fn reply(f: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(f.get(1..).unwrap_or_default()).into_owned();
    if f.first() == Some(&control::TAG_ERROR) {
        Err(text)
    } else {
        Ok(text)
    }
}

/// One attached client: compiles and sends commands, prints what comes back.
pub(crate) struct Session<'a> {
    pub link: &'a mut dyn Link,
    /// Whether a command was refused.
    pub failed: bool,
    /// Replies as JSON lines (`--json`).
    pub json: bool,
}

/// The VM closed the connection.
pub(crate) struct Closed;

impl Session<'_> {
    /// Sends one command (or reports why it cannot be sent) and prints the reply.
    pub fn send(&mut self, command: Result<Expanded, Located>) -> Result<(), Closed> {
        let command = match command {
            Ok(c) => c,
            Err(e) => {
                self.failed = true;
                err!("{}", e.render());
                return Ok(());
            }
        };
        // Compile here, against the VM's globals and symbols; if another client bound
        // globals between our request and our command, refresh and compile once more.
        let mut retried = false;
        loop {
            let (globals, symbols, program) =
                match self.request(&control::encode_session_request())? {
                    Ok(text) => {
                        let (globals, symbols) = control::parse_session(&text);
                        (globals, symbols, control::session_guest(&text) == "program")
                    }
                    Err(text) => {
                        self.failed = true;
                        errln!("{}", text.trim_end());
                        return Ok(());
                    }
                };
            // The guest's own rules: the demo VM's, or a program's.
            let platform: &dyn hv_core::Platform = if program {
                &hv_kvm::program::events::ProgramPlatform
            } else {
                &KvmPlatform
            };
            let target = hvscript_front::Target {
                platform,
                symbols,
                globals,
                values: None,
            };
            let prepared = match hvscript_front::prepare(&command.text, &target, Backend::Jit) {
                Ok(p) => p,
                Err(e) => {
                    self.failed = true;
                    for d in &e.diagnostics {
                        if self.json {
                            crate::json::line(
                                crate::json::Stream::Stdout,
                                &serde_json::json!({"type": "error", "command": command.text, "text": d.message}),
                            );
                        } else {
                            err!("{}", command.locate(d.clone()).render());
                        }
                    }
                    return Ok(());
                }
            };
            let frame = if prepared.has_script() {
                control::encode_compiled(&command.text, prepared.code.as_deref(), &prepared.globals)
            } else {
                command.text.as_bytes().to_vec()
            };
            match self.request(&frame)? {
                // A `?` that printed nothing answers nothing.
                Ok(text) if text.trim_end().is_empty() => {}
                Ok(text) if self.json => {
                    crate::json::result(crate::json::Stream::Stdout, &command.text, &text)
                }
                Ok(text) => outln!("{}", text.trim_end()),
                Err(text) => match control::decode_error(&text) {
                    Some(e) if e.message.starts_with(hv_kvm::STALE_GLOBALS) && !retried => {
                        retried = true;
                        continue;
                    }
                    Some(e) if self.json => {
                        self.failed = true;
                        crate::json::line(
                            crate::json::Stream::Stdout,
                            &serde_json::json!({"type": "error", "command": command.text, "text": e.message}),
                        );
                    }
                    Some(e) => {
                        self.failed = true;
                        let d = hvscript_front::diagnostic(&e);
                        err!("{}", command.locate(d).render());
                    }
                    None => {
                        self.failed = true;
                        errln!("{}", text.trim_end());
                    }
                },
            }
            return Ok(());
        }
    }

    /// Sends one frame and waits for its reply.
    pub fn request(&mut self, frame: &[u8]) -> Result<Result<String, String>, Closed> {
        self.link.request(frame)
    }

    /// Sends standard input's commands as they complete: a command spanning lines is sent
    /// when its braces balance.
    fn send_stdin(&mut self) -> Result<(), Closed> {
        let mut pending = String::new();
        let mut lines = std::io::stdin().lock();
        loop {
            let mut line = String::new();
            let eof = !matches!(lines.read_line(&mut line), Ok(n) if n > 0);
            pending.push_str(&line);
            if !eof && !commands::split(&pending).complete {
                continue;
            }
            let text = std::mem::take(&mut pending);
            for c in commands::load(&SourceFile::command_line("<stdin>", text)) {
                self.send(c)?;
            }
            if eof {
                return Ok(());
            }
        }
    }
}
