//! HyperDbg command lines: event commands (`!msrread 0xc0000080 stage post script {...}`)
//! and the `events` command. Every error carries the byte range of the offending word so a
//! client can underline it.
//!
//! The script inside `script { ... }` is not compiled here (hv-core never links the
//! compiler): the spec keeps its text and its offset in the line, and the embedder's
//! compiler positions its diagnostics with that offset.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::event::{Access, EventKind, EventOptions, EventSpec, Filter, StageMode};
use crate::number::parse_number;

/// A command-line error: what and where (byte offsets into the line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub help: Option<String>,
}

impl CommandError {
    fn at(word: &Word<'_>, message: impl Into<String>) -> CommandError {
        CommandError {
            message: message.into(),
            start: word.start,
            end: word.end(),
            help: None,
        }
    }
    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
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
}

#[derive(Clone, Copy, Debug)]
struct Word<'a> {
    text: &'a str,
    start: usize,
}

impl Word<'_> {
    fn end(&self) -> usize {
        self.start + self.text.len()
    }
}

/// Splits on white space; a `{ ... }` group (strings and comments inside respected) is one
/// word, braces included.
fn words(line: &str) -> Result<Vec<Word<'_>>, CommandError> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if bytes[i] == b'{' {
            i = brace_group_end(line, i)?;
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'{' {
                i += 1;
            }
        }
        out.push(Word {
            text: &line[start..i],
            start,
        });
    }
    Ok(out)
}

/// The index just past the `}` matching the `{` at `open`.
fn brace_group_end(line: &str, open: usize) -> Result<usize, CommandError> {
    let b = line.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(CommandError {
        message: "unbalanced `{`: the block is never closed".into(),
        start: open,
        end: open + 1,
        help: None,
    })
}

/// Parses any command line.
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
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
    if rest.starts_with('!') {
        return parse_event_command(line).map(Command::Event);
    }
    let ws = words(line)?;
    let first = ws[0];
    if first.text != "events" {
        return Err(
            CommandError::at(&first, format!("unknown command `{}`", first.text)).help(
                "commands: !EVENT ..., events, events e|d|c ID|all, events sc on|off, ? SCRIPT",
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

/// Parses an event command (`!kind args options`).
pub fn parse_event_command(line: &str) -> Result<EventSpec, CommandError> {
    let ws = words(line)?;
    let Some(head) = ws.first() else {
        return Err(CommandError {
            message: "empty command".into(),
            start: 0,
            end: 0,
            help: None,
        });
    };
    let name = head
        .text
        .strip_prefix('!')
        .ok_or_else(|| CommandError::at(head, "an event command starts with `!`"))?;
    let kind = EventKind::from_command(name).ok_or_else(|| {
        CommandError::at(head, format!("unknown event `{}`", head.text)).help(
            "events: !monitor !epthook !epthook2 !cpuid !msrread !msrwrite !ioin !ioout !exception !interrupt \
             !syscall !sysret !vmcall !tsc !pmc !dr !crwrite !xsetbv",
        )
    })?;

    let mut options = EventOptions::default();
    let mut script = None;
    let mut positional: Vec<Word<'_>> = Vec::new();
    let mut stage_word: Option<Word<'_>> = None;
    let mut sc_word: Option<Word<'_>> = None;
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 1;
    while i < ws.len() {
        let w = ws[i];
        let keyword = matches!(
            w.text,
            "pid" | "core" | "imm" | "sc" | "stage" | "buffer" | "script" | "output"
        );
        if !keyword {
            if w.text.starts_with('{') {
                return Err(CommandError::at(
                    &w,
                    "a `{ ... }` block must follow `script` or `output`",
                ));
            }
            positional.push(w);
            i += 1;
            continue;
        }
        if seen.contains(&w.text) {
            return Err(CommandError::at(&w, format!("`{}` is given twice", w.text)));
        }
        seen.push(w.text);
        let value = ws.get(i + 1).copied().ok_or_else(|| CommandError {
            message: format!("missing value after `{}`", w.text),
            start: w.start,
            end: w.end(),
            help: None,
        })?;
        match w.text {
            "pid" => {
                options.pid = if value.text == "all" {
                    None
                } else {
                    Some(number(&value)?)
                }
            }
            "core" => {
                options.core = Some(
                    u32::try_from(number(&value)?)
                        .map_err(|_| CommandError::at(&value, "core number too large"))?,
                )
            }
            "imm" => options.immediate = yes_no(&value, "yes", "no")?,
            "sc" => {
                options.short_circuit = yes_no(&value, "on", "off")?;
                sc_word = Some(w);
            }
            "stage" => {
                options.stage = match value.text {
                    "pre" => StageMode::Pre,
                    "post" => StageMode::Post,
                    "all" => StageMode::All,
                    _ => {
                        return Err(CommandError::at(
                            &value,
                            format!("unknown stage `{}`", value.text),
                        )
                        .help("stage pre|post|all"))
                    }
                };
                stage_word = Some(w);
            }
            "buffer" => {
                let size = number(&value)?;
                if size == 0 || size > 0x10_0000 {
                    return Err(CommandError::at(
                        &value,
                        "buffer size must be between 1 and 0x100000 bytes",
                    ));
                }
                options.buffer = Some(size);
            }
            "script" => {
                let body = block(&value, "script")?;
                script = Some((body.to_string(), value.start + 1));
            }
            "output" => {
                let body = block(&value, "output")?;
                options.output = body
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            _ => unreachable!("keyword list above"),
        }
        i += 2;
    }

    if !kind.has_stages() {
        if let Some(w) = stage_word {
            return Err(CommandError::at(
                &w,
                format!(
                    "!{} has no calling stages: it has no emulation to stage",
                    kind.command()
                ),
            ));
        }
        if options.short_circuit {
            if let Some(w) = sc_word {
                return Err(CommandError::at(
                    &w,
                    format!("!{} cannot be short-circuited", kind.command()),
                ));
            }
        }
    }
    if options.short_circuit && options.stage != StageMode::Pre {
        let w = sc_word.expect("sc on was parsed from a word");
        return Err(CommandError::at(&w, "short-circuiting in the post stage is meaningless: the emulation has already happened")
            .help("use `stage pre` (the default) with `sc on`, or call event_sc(1) from a pre-stage script"));
    }

    let filter = filter(kind, &positional, line.len())?;
    Ok(EventSpec {
        kind,
        filter,
        options,
        script,
        text: line.trim().to_string(),
    })
}

fn number(w: &Word<'_>) -> Result<u64, CommandError> {
    parse_number(w.text).ok_or_else(|| {
        CommandError::at(w, format!("`{}` is not a number", w.text))
            .help("numbers are hex by default; 0n for decimal, 0y binary, 0o octal")
    })
}

fn yes_no(w: &Word<'_>, yes: &str, no: &str) -> Result<bool, CommandError> {
    match w.text {
        t if t == yes => Ok(true),
        t if t == no => Ok(false),
        _ => Err(CommandError::at(
            w,
            format!("expected `{yes}` or `{no}`, found `{}`", w.text),
        )),
    }
}

fn block<'a>(w: &Word<'a>, what: &str) -> Result<&'a str, CommandError> {
    if w.text.starts_with('{') && w.text.ends_with('}') && w.text.len() >= 2 {
        Ok(&w.text[1..w.text.len() - 1])
    } else {
        Err(CommandError::at(
            w,
            format!("expected `{{ ... }}` after `{what}`"),
        ))
    }
}

/// The kind-specific arguments.
fn filter(kind: EventKind, args: &[Word<'_>], line_len: usize) -> Result<Filter, CommandError> {
    let too_many = |w: &Word<'_>| {
        CommandError::at(
            w,
            format!("unexpected `{}` for !{}", w.text, kind.command()),
        )
    };
    let missing = |what: &str| CommandError {
        message: format!("!{} needs {what}", kind.command()),
        start: line_len,
        end: line_len,
        help: None,
    };
    let optional_value = |max: u64, what: &str| -> Result<Filter, CommandError> {
        match args {
            [] => Ok(Filter::Any),
            [w] => {
                let v = number(w)?;
                if v > max {
                    return Err(CommandError::at(
                        w,
                        format!("{what} must be at most {max:#x}"),
                    ));
                }
                Ok(Filter::Value(v))
            }
            [_, extra, ..] => Err(too_many(extra)),
        }
    };
    match kind {
        EventKind::Cpuid | EventKind::MsrRead | EventKind::MsrWrite | EventKind::Xsetbv => {
            optional_value(u32::MAX as u64, "the value")
        }
        EventKind::IoIn | EventKind::IoOut => optional_value(0xffff, "a port"),
        EventKind::Syscall => optional_value(u64::MAX, "the number"),
        EventKind::Exception => optional_value(0x1f, "an exception vector"),
        EventKind::Interrupt => match args {
            [w] => {
                let v = number(w)?;
                if !(0x20..=0xff).contains(&v) {
                    return Err(CommandError::at(
                        w,
                        "an external-interrupt vector is between 0x20 and 0xff",
                    ));
                }
                Ok(Filter::Value(v))
            }
            [] => Err(missing("a vector (0x20..0xff)")),
            [_, extra, ..] => Err(too_many(extra)),
        },
        EventKind::Sysret | EventKind::Vmcall | EventKind::Tsc | EventKind::Pmc | EventKind::Dr => {
            match args {
                [] => Ok(Filter::Any),
                [extra, ..] => Err(too_many(extra)),
            }
        }
        EventKind::EptHook | EventKind::EptHook2 => match args {
            [w] => Ok(Filter::Address(number(w)?)),
            [] => Err(missing("an address")),
            [_, extra, ..] => Err(too_many(extra)),
        },
        EventKind::CrWrite => match args {
            [cr, rest @ ..] => {
                let n = number(cr)?;
                if n != 0 && n != 4 {
                    return Err(CommandError::at(cr, "!crwrite watches CR0 or CR4"));
                }
                let mask = match rest {
                    [] => None,
                    [m] => Some(number(m)?),
                    [_, extra, ..] => return Err(too_many(extra)),
                };
                Ok(Filter::ControlRegister { cr: n as u8, mask })
            }
            [] => Err(missing("a control register (0 or 4)")),
        },
        EventKind::Monitor => {
            let mut rest = args;
            let mut physical = false;
            if let [w, tail @ ..] = rest {
                if w.text == "va" || w.text == "pa" {
                    physical = w.text == "pa";
                    rest = tail;
                }
            }
            let [attr, tail @ ..] = rest else {
                return Err(missing("an access kind (r, w, x, rw, ...)"));
            };
            let mut access = 0u8;
            for c in attr.text.chars() {
                access |= match c {
                    'r' => Access::READ.0,
                    'w' => Access::WRITE.0,
                    'x' => Access::EXECUTE.0,
                    _ => {
                        return Err(CommandError::at(
                            attr,
                            format!("`{}` is not an access kind", attr.text),
                        )
                        .help("r, w, x or a combination such as rw"))
                    }
                };
            }
            let (from, to) = match tail {
                [from, l, len] if l.text == "l" => {
                    let f = number(from)?;
                    let n = number(len)?;
                    if n == 0 {
                        return Err(CommandError::at(len, "the length must not be 0"));
                    }
                    (
                        f,
                        f.checked_add(n - 1).ok_or_else(|| {
                            CommandError::at(len, "the range wraps around the address space")
                        })?,
                    )
                }
                [from, to] => {
                    let (f, t) = (number(from)?, number(to)?);
                    if t < f {
                        return Err(CommandError::at(to, "the end address is below the start"));
                    }
                    (f, t)
                }
                [_] | [] => return Err(missing("a range: FROM TO, or FROM l LENGTH")),
                [_, _, _, extra, ..] | [_, _, extra] => return Err(too_many(extra)),
            };
            Ok(Filter::Range {
                access: Access(access),
                physical,
                from,
                to,
            })
        }
    }
}
