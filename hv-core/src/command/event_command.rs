//! Event commands: `!kind arguments options`, HyperDbg's syntax, into an [`EventSpec`].

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::words::{words, Word};
use super::CommandError;
use crate::argument::{evaluate, NoSymbols, Symbols};
use crate::event::{trace_type, Access, EventKind, EventOptions, EventSpec, Filter, StageMode};

/// Parses an event command (`!kind args options`) with no symbols known.
pub fn parse_event_command(line: &str) -> Result<EventSpec, CommandError> {
    parse_event_command_with(line, &NoSymbols)
}

/// Parses an event command; `symbols` names addresses in its arguments.
pub fn parse_event_command_with(
    line: &str,
    symbols: &dyn Symbols,
) -> Result<EventSpec, CommandError> {
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
             !syscall !syscall2 !sysret !sysret2 !mode !trace !vmcall !tsc !pmc !dr !crwrite !xsetbv",
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
        if matches!(w.text, "condition" | "code" | "asm") {
            return Err(CommandError::at(
                &w,
                format!(
                    "`{}` blocks are raw machine code (or assembly) that HyperDbg runs in VMX root; \
                     this engine runs only compiled scripts, never guest-supplied machine code",
                    w.text
                ),
            )
            .help("write the condition or the code as a script: `script { if (...) { ... } }`"));
        }
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
                    Some(number(&value, symbols)?)
                }
            }
            "core" => {
                options.core = Some(
                    u32::try_from(number(&value, symbols)?)
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
                let size = number(&value, symbols)?;
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

    if !options.immediate && !options.output.is_empty() {
        let w = seen_word(&ws, "imm");
        return Err(CommandError::at(
            &w,
            "`imm no` cannot be combined with `output`: output sources receive messages as they come (as in HyperDbg)",
        ));
    }
    let filter = filter(kind, &positional, line.len(), symbols)?;
    Ok(EventSpec {
        kind,
        filter,
        options,
        script,
        text: line.trim().to_string(),
    })
}

/// The word given for `keyword` (it was seen).
fn seen_word<'a>(ws: &[Word<'a>], keyword: &str) -> Word<'a> {
    ws.iter()
        .copied()
        .find(|w| w.text == keyword)
        .unwrap_or(ws[0])
}

/// A numeric argument: an expression of numbers and symbols ([`crate::argument`]).
fn number(w: &Word<'_>, symbols: &dyn Symbols) -> Result<u64, CommandError> {
    evaluate(w.text, symbols).map_err(|e| CommandError {
        message: e.message,
        start: w.start + e.start,
        end: w.start + e.end,
        help: e.help,
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
fn filter(
    kind: EventKind,
    args: &[Word<'_>],
    line_len: usize,
    symbols: &dyn Symbols,
) -> Result<Filter, CommandError> {
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
                let v = number(w, symbols)?;
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
                let v = number(w, symbols)?;
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
        EventKind::Mode => match args {
            [w] => {
                let (user, kernel) = match w.text {
                    "u" => (true, false),
                    "k" => (false, true),
                    "uk" | "ku" => (true, true),
                    other => {
                        return Err(CommandError::at(w, format!("`{other}` is not a mode"))
                            .help("u (reached user mode), k (reached kernel mode), uk (both)"))
                    }
                };
                Ok(Filter::Mode { user, kernel })
            }
            [] => Err(missing("a mode: u, k or uk")),
            [_, extra, ..] => Err(too_many(extra)),
        },
        EventKind::Trace => match args {
            [w] => Ok(Filter::Value(match w.text {
                "step-in" => trace_type::STEP_IN,
                "step-out" => trace_type::STEP_OUT,
                "instrument-step" => trace_type::INSTRUMENT_STEP,
                other => {
                    return Err(
                        CommandError::at(w, format!("`{other}` is not a trace type"))
                            .help("step-in, step-out or instrument-step"),
                    )
                }
            })),
            [] => Err(missing(
                "a trace type: step-in, step-out or instrument-step",
            )),
            [_, extra, ..] => Err(too_many(extra)),
        },
        EventKind::EptHook | EventKind::EptHook2 => match args {
            [w] => Ok(Filter::Address(number(w, symbols)?)),
            [] => Err(missing("an address")),
            [_, extra, ..] => Err(too_many(extra)),
        },
        EventKind::CrWrite => match args {
            [cr, rest @ ..] => {
                let n = number(cr, symbols)?;
                if n != 0 && n != 4 {
                    return Err(CommandError::at(cr, "!crwrite watches CR0 or CR4"));
                }
                let mask = match rest {
                    [] => None,
                    [m] => Some(number(m, symbols)?),
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
                    let f = number(from, symbols)?;
                    let n = number(len, symbols)?;
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
                    let (f, t) = (number(from, symbols)?, number(to, symbols)?);
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
