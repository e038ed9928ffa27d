//! `printf` and `print`: the format parser the compiler shares with the runtime, and the
//! formatter.
//!
//! Accepted specifiers: `%d %i %u %o %x %X` with an optional `h`, `l` or `ll` prefix, `%c`,
//! `%p`, `%s`, `%ws`/`%ls`, `%f`, and `%%`. Integer widths follow HyperDbg on Windows
//! (LLP64): no prefix and `l` use the low 32 bits, `h` 16 bits, `ll` 64 bits.
//!
//! Deviations from HyperDbg, on purpose:
//! - `%%` prints `%` (HyperDbg does not treat it as an escape; C users expect it);
//! - `%X` and the `X` forms are accepted (HyperDbg's compile-time count skips them);
//! - a `%` followed by anything else (flags, width, precision, unknown letters) is a
//!   [`FormatError`] with its byte offset, where HyperDbg silently miscounts;
//! - `%c` of 0 prints nothing, as HyperDbg's `sprintf` + `strlen` does;
//! - output beyond [`MAX_PRINTF_OUTPUT`] bytes is cut with a warning (HyperDbg drops it silently).

use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use crate::env::Env;
use crate::error::ScriptError;
use crate::strings::append_mem_string;

/// The most bytes one `printf` produces (HyperDbg sends one 4096-byte packet chunk).
pub const MAX_PRINTF_OUTPUT: usize = 4096;

/// The length prefix of an integer specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// `h`: 16 bits.
    Short,
    /// none: 32 bits (`int`).
    Int,
    /// `l`: 32 bits (`long` is 32-bit on Windows).
    Long,
    /// `ll`: 64 bits.
    LongLong,
}

impl Length {
    /// The number of low bits of the argument this length uses.
    pub fn bits(self) -> u32 {
        match self {
            Length::Short => 16,
            Length::Int | Length::Long => 32,
            Length::LongLong => 64,
        }
    }
}

/// What a specifier prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// `d`, `i`: signed decimal.
    Signed,
    /// `u`
    Unsigned,
    /// `o`
    Octal,
    /// `x`
    HexLower,
    /// `X`
    HexUpper,
    /// `c`: the low byte.
    Char,
    /// `p`: 16 upper-case hex digits, as MSVC prints a pointer.
    Pointer,
    /// `s`: the NUL-terminated narrow string at the address.
    Str,
    /// `ws`, `ls`: the NUL-terminated UTF-16 string at the address.
    WStr,
    /// `f`: a float (reserved for typed floats; an integer argument is a run-time error).
    Float,
}

/// One argument-consuming specifier of a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatSpec {
    /// Byte offset of the `%`.
    pub offset: usize,
    /// Length in bytes, `%` included.
    pub len: usize,
    pub conv: Conversion,
    /// Meaningful for the integer conversions; [`Length::Int`] otherwise.
    pub length: Length,
}

/// What is wrong with a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatErrorKind {
    /// The format ends right after a `%` (or after its length prefix).
    Incomplete,
    /// A flag, width or precision, which hvscript (like HyperDbg) does not support.
    FlagsOrWidth,
    /// Any other character after `%`.
    Unknown,
}

/// A malformed format; `offset` is the byte offset of the offending `%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub offset: usize,
    pub kind: FormatErrorKind,
}

const SUPPORTED: &str = "supported: %d %i %u %o %x %X (with h, l or ll), %c %p %s %ws %ls %f %%";

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FormatErrorKind::Incomplete => "incomplete format specifier",
            FormatErrorKind::FlagsOrWidth => {
                "flags, width and precision are not supported in format specifiers"
            }
            FormatErrorKind::Unknown => "unknown format specifier",
        };
        write!(f, "{what} at byte {} ({SUPPORTED})", self.offset)
    }
}

/// A piece of a parsed format.
enum Piece {
    /// Bytes `start..end` of the format, printed as they are.
    Text(usize, usize),
    /// `%%`.
    Percent,
    Spec(FormatSpec),
}

fn parse_spec(fmt: &[u8], at: usize) -> Result<Piece, FormatError> {
    let byte = |i: usize| fmt.get(at + i).copied();
    let err = |kind| FormatError { offset: at, kind };
    let int_conv = |c: u8| match c {
        b'd' | b'i' => Some(Conversion::Signed),
        b'u' => Some(Conversion::Unsigned),
        b'o' => Some(Conversion::Octal),
        b'x' => Some(Conversion::HexLower),
        b'X' => Some(Conversion::HexUpper),
        _ => None,
    };
    let bad = |c: Option<u8>| match c {
        None => err(FormatErrorKind::Incomplete),
        Some(b'0'..=b'9' | b'-' | b'+' | b' ' | b'#' | b'.' | b'*') => {
            err(FormatErrorKind::FlagsOrWidth)
        }
        Some(_) => err(FormatErrorKind::Unknown),
    };
    let spec = |len, conv, length| {
        Ok(Piece::Spec(FormatSpec {
            offset: at,
            len,
            conv,
            length,
        }))
    };
    match byte(1) {
        Some(b'%') => Ok(Piece::Percent),
        Some(b'h') => match byte(2).and_then(int_conv) {
            Some(conv) => spec(3, conv, Length::Short),
            None => Err(bad(byte(2))),
        },
        Some(b'l') if byte(2) == Some(b'l') => match byte(3).and_then(int_conv) {
            Some(conv) => spec(4, conv, Length::LongLong),
            None => Err(bad(byte(3))),
        },
        Some(b'l') => match byte(2) {
            Some(b's') => spec(3, Conversion::WStr, Length::Int),
            c => match c.and_then(int_conv) {
                Some(conv) => spec(3, conv, Length::Long),
                None => Err(bad(c)),
            },
        },
        Some(b'w') => match byte(2) {
            Some(b's') => spec(3, Conversion::WStr, Length::Int),
            c => Err(bad(c)),
        },
        Some(b'c') => spec(2, Conversion::Char, Length::Int),
        Some(b'p') => spec(2, Conversion::Pointer, Length::Int),
        Some(b's') => spec(2, Conversion::Str, Length::Int),
        Some(b'f') => spec(2, Conversion::Float, Length::Int),
        c => match c.and_then(int_conv) {
            Some(conv) => spec(2, conv, Length::Int),
            None => Err(bad(c)),
        },
    }
}

fn pieces(fmt: &[u8]) -> Result<Vec<Piece>, FormatError> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    while i < fmt.len() {
        if fmt[i] != b'%' {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push(Piece::Text(text_start, i));
        }
        let p = parse_spec(fmt, i)?;
        i += match &p {
            Piece::Percent => 2,
            Piece::Spec(s) => s.len,
            Piece::Text(..) => 1,
        };
        out.push(p);
        text_start = i;
    }
    if text_start < fmt.len() {
        out.push(Piece::Text(text_start, fmt.len()));
    }
    Ok(out)
}

/// The argument-consuming specifiers of `fmt`, in order (`%%` is not one). The compiler
/// checks that a `printf` call has exactly this many arguments.
pub fn parse_format(fmt: &[u8]) -> Result<Vec<FormatSpec>, FormatError> {
    Ok(pieces(fmt)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Spec(s) => Some(s),
            _ => None,
        })
        .collect())
}

/// `fmt::Write` into a byte vector.
pub(crate) struct Bytes<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn format_int(out: &mut Vec<u8>, conv: Conversion, length: Length, v: u64) {
    let bits = length.bits();
    let masked = if bits == 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    };
    let mut w = Bytes(out);
    // Writing into a Vec cannot fail.
    let _ = match conv {
        Conversion::Signed => {
            let shift = 64 - bits;
            write!(w, "{}", ((masked << shift) as i64) >> shift)
        }
        Conversion::Unsigned => write!(w, "{masked}"),
        Conversion::Octal => write!(w, "{masked:o}"),
        Conversion::HexLower => write!(w, "{masked:x}"),
        Conversion::HexUpper => write!(w, "{masked:X}"),
        _ => Ok(()),
    };
}

/// Formats `printf(fmt, args...)`. `%s`/`%ws` arguments are addresses read through `env`;
/// an unreadable one is an error. The result is at most [`MAX_PRINTF_OUTPUT`] bytes (a
/// longer one is cut, with a warning).
pub fn format_printf(env: &mut dyn Env, fmt: &[u8], args: &[u64]) -> Result<Vec<u8>, ScriptError> {
    let pieces = pieces(fmt)?;
    let specifiers = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Spec(_)))
        .count();
    if specifiers != args.len() {
        return Err(ScriptError::PrintfArity {
            specifiers,
            args: args.len(),
        });
    }
    let mut out = Vec::new();
    let mut cut = false;
    let mut next_arg = args.iter().copied();
    for p in pieces {
        match p {
            Piece::Text(a, b) => out.extend_from_slice(&fmt[a..b]),
            Piece::Percent => out.push(b'%'),
            Piece::Spec(s) => {
                let v = next_arg.next().unwrap_or(0);
                match s.conv {
                    Conversion::Char => {
                        if v as u8 != 0 {
                            out.push(v as u8);
                        }
                    }
                    Conversion::Pointer => {
                        let _ = write!(Bytes(&mut out), "{v:016X}");
                    }
                    Conversion::Str | Conversion::WStr => {
                        let wide = s.conv == Conversion::WStr;
                        cut |= append_mem_string(env, v, wide, &mut out, MAX_PRINTF_OUTPUT)?;
                    }
                    Conversion::Float => return Err(ScriptError::PrintfFloat { offset: s.offset }),
                    conv => format_int(&mut out, conv, s.length, v),
                }
            }
        }
        if out.len() > MAX_PRINTF_OUTPUT {
            cut = true;
            break;
        }
    }
    if cut {
        out.truncate(MAX_PRINTF_OUTPUT);
        let msg = alloc::format!("printf: output cut at {MAX_PRINTF_OUTPUT} bytes");
        env.warn(&msg);
    }
    Ok(out)
}

/// `print(x)`: the value in lower-case hex without a prefix, and a newline.
pub(crate) fn print(env: &mut dyn Env, v: u64) {
    let mut out = Vec::with_capacity(17);
    let _ = writeln!(Bytes(&mut out), "{v:x}");
    env.output(&out);
}
