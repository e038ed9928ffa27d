//! HyperDbg's debugger commands, the ones a console uses on a paused guest: `g`, `pause`,
//! `r [REG [= EXPR]]`, `~ [CORE]`, `db/dc/dw/dd/dq ADDR [l LENGTH]` and their physical
//! `!db ...` forms, `eb/ed/eq ADDR VALUE...` (and `!eb ...`), `u ADDR [l LENGTH]`, `k`.
//!
//! Addresses and values are expressions as in event arguments ([`crate::argument`]:
//! hex numbers, symbols, `+ - * ...`), and may name registers (`@rax+@rbx`, as in
//! HyperDbg's `!db @rax+@rbx l 50`): they are kept as text with their offset here and
//! evaluated by the hypervisor against the registers of the core it shows, so an error
//! still points into the command line. Lengths are in bytes (hex), as HyperDbg's.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::words::Word;
use super::CommandError;
use crate::number::parse_number;

/// An expression of the command line, evaluated by the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub text: String,
    /// Its byte offset in the command line.
    pub start: usize,
}

/// A debugger command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebuggerCommand {
    /// `g`: continue the paused guest.
    Go,
    /// `pause`: break into the debugger.
    Pause,
    /// `r`: every register of the current core; `r REG`: one.
    Registers(Option<String>),
    /// `r REG = EXPR`.
    SetRegister {
        name: String,
        start: usize,
        value: Expr,
    },
    /// `~`: the current core; `~ N`: switch to core N.
    Core(Option<u32>),
    /// `db dc dw dd dq` (`!` for physical memory): `unit` bytes per value, `chars` with
    /// the characters column.
    Dump {
        unit: u8,
        chars: bool,
        physical: bool,
        address: Expr,
        length: u64,
    },
    /// `eb ed eq` (`!` for physical memory): write these values from the address on.
    Edit {
        unit: u8,
        physical: bool,
        address: Expr,
        values: Vec<Expr>,
    },
    /// `u ADDR [l LENGTH]`: disassemble.
    Disassemble { address: Expr, length: u64 },
    /// `k`: the call stack.
    Stack,
}

/// Bytes shown by `d*` and `u` without `l`.
pub const DEFAULT_LENGTH: u64 = 0x80;
/// The most bytes one `d*` or `u` shows.
pub const MAX_LENGTH: u64 = 0x10000;

/// The debugger command words, for a console's completion and help.
pub const DEBUGGER_COMMANDS: &[&str] = &[
    "g", "pause", "r", "~", "db", "dc", "dw", "dd", "dq", "!db", "!dc", "!dw", "!dd", "!dq", "eb",
    "ew", "ed", "eq", "!eb", "!ew", "!ed", "!eq", "u", "k",
];

/// Parses `ws` (the words of `line`) as a debugger command, or `None` when its first word
/// is not one.
pub(crate) fn parse_debugger(
    line: &str,
    ws: &[Word<'_>],
) -> Option<Result<DebuggerCommand, CommandError>> {
    let first = ws.first()?;
    let (physical, name) = match first.text.strip_prefix('!') {
        Some(n) => (true, n),
        None => (false, first.text),
    };
    let unit = |c: u8| match c {
        b'b' => Some(1u8),
        b'w' => Some(2),
        b'd' => Some(4),
        b'q' => Some(8),
        _ => None,
    };
    let b = name.as_bytes();
    let parsed = match (physical, b) {
        (false, b"g") => no_args(line, ws, DebuggerCommand::Go),
        (false, b"pause") => no_args(line, ws, DebuggerCommand::Pause),
        (false, b"k") => no_args(line, ws, DebuggerCommand::Stack),
        (false, b"r") => registers(line, first),
        (false, b"~") => core(ws),
        (_, [b'd', c]) if unit(*c).is_some() || *c == b'c' => {
            let (u, chars) = if *c == b'c' {
                (4, true)
            } else {
                (unit(*c)?, *c == b'b')
            };
            address_and_length(line, ws).map(|(address, length)| DebuggerCommand::Dump {
                unit: u,
                chars,
                physical,
                address,
                length,
            })
        }
        (_, [b'e', c]) if unit(*c).is_some() => edit(line, ws, unit(*c)?, physical),
        (false, b"u") => address_and_length(line, ws)
            .map(|(address, length)| DebuggerCommand::Disassemble { address, length }),
        _ => return None,
    };
    Some(parsed)
}

fn expr(w: &Word<'_>) -> Expr {
    Expr {
        text: w.text.to_string(),
        start: w.start,
    }
}

fn no_args(
    _line: &str,
    ws: &[Word<'_>],
    command: DebuggerCommand,
) -> Result<DebuggerCommand, CommandError> {
    match ws.get(1) {
        None => Ok(command),
        Some(w) => Err(CommandError::at(
            w,
            alloc::format!("`{}` takes no argument", ws[0].text),
        )),
    }
}

/// `r`, `r REG`, `r REG = EXPR` (also `r @REG=EXPR`).
fn registers(line: &str, first: &Word<'_>) -> Result<DebuggerCommand, CommandError> {
    let rest_start = first.end();
    let rest = &line[rest_start..];
    if rest.trim().is_empty() {
        return Ok(DebuggerCommand::Registers(None));
    }
    let lead = rest.len() - rest.trim_start().len();
    let (name_part, value_part) = match rest.find('=') {
        Some(eq) => (&rest[..eq], Some((&rest[eq + 1..], rest_start + eq + 1))),
        None => (rest, None),
    };
    let name = name_part.trim();
    let name_start = rest_start + lead;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(CommandError {
            message: "expected a register name: `r rax` or `r rax = VALUE`".into(),
            start: name_start,
            end: (name_start + name.len()).max(name_start + 1),
            help: None,
        });
    }
    let name = name.trim_start_matches('@').to_ascii_lowercase();
    let Some((value, at)) = value_part else {
        return Ok(DebuggerCommand::Registers(Some(name)));
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(CommandError {
            message: "expected a value after `=`".into(),
            start: at,
            end: line.len().max(at + 1),
            help: None,
        });
    }
    let value_start = at + (value.len() - value.trim_start().len());
    Ok(DebuggerCommand::SetRegister {
        name,
        start: name_start,
        value: Expr {
            text: trimmed.split_whitespace().collect(),
            start: value_start,
        },
    })
}

/// `~` or `~ N` (also `~N`).
fn core(ws: &[Word<'_>]) -> Result<DebuggerCommand, CommandError> {
    let Some(w) = ws.get(1) else {
        return Ok(DebuggerCommand::Core(None));
    };
    if let Some(extra) = ws.get(2) {
        return Err(CommandError::at(extra, "`~` takes one core number"));
    }
    parse_number(w.text)
        .and_then(|n| u32::try_from(n).ok())
        .map(|n| DebuggerCommand::Core(Some(n)))
        .ok_or_else(|| CommandError::at(w, alloc::format!("`{}` is not a core number", w.text)))
}

/// `ADDR [l LENGTH]`.
fn address_and_length(line: &str, ws: &[Word<'_>]) -> Result<(Expr, u64), CommandError> {
    let Some(address) = ws.get(1) else {
        return Err(CommandError {
            message: alloc::format!("`{}` needs an address", ws[0].text),
            start: ws[0].start,
            end: line.len().max(ws[0].end()),
            help: Some(alloc::format!("{} ADDRESS [l LENGTH]", ws[0].text)),
        });
    };
    let length = match (ws.get(2), ws.get(3)) {
        (None, _) => DEFAULT_LENGTH,
        (Some(l), Some(n)) if l.text.eq_ignore_ascii_case("l") => {
            let len = parse_number(n.text).ok_or_else(|| {
                CommandError::at(n, alloc::format!("`{}` is not a length", n.text))
            })?;
            if len == 0 || len > MAX_LENGTH {
                return Err(CommandError::at(
                    n,
                    alloc::format!("the length must be between 1 and {MAX_LENGTH:#x} bytes"),
                ));
            }
            if let Some(extra) = ws.get(4) {
                return Err(CommandError::at(extra, "unexpected word after the length"));
            }
            len
        }
        (Some(l), None) if l.text.eq_ignore_ascii_case("l") => {
            return Err(CommandError::at(l, "expected a length after `l`"))
        }
        (Some(w), _) => {
            return Err(CommandError::at(w, "expected `l LENGTH` after the address")
                .help("HyperDbg separates the length with `l`: `db 1000 l 20`"))
        }
    };
    Ok((expr(address), length))
}

/// `eX ADDR VALUE...`.
fn edit(
    line: &str,
    ws: &[Word<'_>],
    unit: u8,
    physical: bool,
) -> Result<DebuggerCommand, CommandError> {
    let Some(address) = ws.get(1) else {
        return Err(CommandError {
            message: alloc::format!("`{}` needs an address and values", ws[0].text),
            start: ws[0].start,
            end: line.len().max(ws[0].end()),
            help: Some(alloc::format!("{} ADDRESS VALUE [VALUE ...]", ws[0].text)),
        });
    };
    if ws.len() < 3 {
        return Err(CommandError::at(
            address,
            "expected the values to write after the address",
        ));
    }
    Ok(DebuggerCommand::Edit {
        unit,
        physical,
        address: expr(address),
        values: ws[2..].iter().map(expr).collect(),
    })
}
