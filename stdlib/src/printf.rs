//! `printf` and `print`: the format parser the compiler shares with the runtime, and the
//! built-in (formatted now, or handed to an environment that formats it later: see
//! [`crate::printf_format`]; the conversions themselves are [`crate::printf_render`]).
//!
//! Accepted specifiers: `%d %i %u %o %x %X` with an optional `h`, `l` or `ll` prefix, `%c`,
//! `%p`, `%s`, `%ws`/`%ls`, the floating-point `%f %F %e %E %g %G` with an optional `l`
//! (`%lf` is `%f`, as in C) and an optional precision (`%.2f`, `%.f`), and `%%`. Integer
//! widths follow HyperDbg on Windows (LLP64): no prefix and `l` use the low 32 bits, `h` 16
//! bits, `ll` 64 bits.
//!
//! A floating-point conversion takes its argument as the bits of an IEEE-754 `double` (the
//! compiler promotes a `float`, as C's varargs do, and rejects an integer argument) and
//! prints it as glibc's `printf` does: exact decimal expansion, rounded half-to-even on the
//! exact binary value, 6 digits after the point by default, `inf`/`nan` with the sign bit
//! (`-nan` too), upper case for `%F %E %G`.
//!
//! Deviations from HyperDbg, on purpose:
//! - `%%` prints `%` (HyperDbg does not treat it as an escape; C users expect it);
//! - `%X` and the `X` forms are accepted (HyperDbg's compile-time count skips them);
//! - `%lf`, `%F`, `%e`, `%E`, `%g`, `%G` and a precision on them are accepted (HyperDbg only
//!   knows a bare `%f`);
//! - a `%` followed by anything else (flags, width, a precision on a non-floating
//!   conversion, unknown letters) is a [`FormatError`] with its byte offset, where HyperDbg
//!   silently miscounts;
//! - `%c` of 0 prints nothing, as HyperDbg's `sprintf` + `strlen` does;
//! - output beyond [`MAX_PRINTF_OUTPUT`] bytes is cut with a warning (HyperDbg drops it silently).

use alloc::vec::Vec;

use crate::env::{Env, NoCallerMemory};
use crate::error::ScriptError;
use crate::printf_format::{cut_warning, ParsedFormat};
use crate::printf_render::format_int;

/// The most bytes one `printf` produces (HyperDbg sends one 4096-byte packet chunk).
pub const MAX_PRINTF_OUTPUT: usize = 4096;

pub use crate::format_error::{FormatError, FormatErrorKind, MAX_FLOAT_PRECISION};

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
    /// `f`, `lf`: a `double` in fixed-point notation (`-12.500000`).
    Float,
    /// `F`, `lF`: as `f`, with `INF` and `NAN` in upper case.
    FloatUpper,
    /// `e`, `le`: a `double` in exponent notation (`-1.250000e+01`).
    Exp,
    /// `E`, `lE`: as `e`, with `E`, `INF` and `NAN`.
    ExpUpper,
    /// `g`, `lg`: the shorter of `f` and `e`, without trailing zeros (`-12.5`).
    General,
    /// `G`, `lG`: as `g`, with `E`, `INF` and `NAN`.
    GeneralUpper,
}

impl Conversion {
    /// Whether the conversion prints a floating-point value (its argument is the bits of a
    /// `double`); every other conversion takes an integer or an address.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Conversion::Float
                | Conversion::FloatUpper
                | Conversion::Exp
                | Conversion::ExpUpper
                | Conversion::General
                | Conversion::GeneralUpper
        )
    }
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
    /// The precision of a floating-point conversion (`%.2f` → `Some(2)`, `%.f` → `Some(0)`),
    /// at most [`MAX_FLOAT_PRECISION`]; `None` means C's default, 6. Always `None` for the
    /// other conversions, which take no precision.
    pub precision: Option<u16>,
}

impl FormatSpec {
    /// Whether the argument of this specifier must be a floating-point value (passed as the
    /// bits of a `double`); if not, it must be an integer or a pointer.
    pub fn expects_float(&self) -> bool {
        self.conv.is_float()
    }
}

/// A piece of a parsed format.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Piece {
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
    let float_conv = |c: u8| match c {
        b'f' => Some(Conversion::Float),
        b'F' => Some(Conversion::FloatUpper),
        b'e' => Some(Conversion::Exp),
        b'E' => Some(Conversion::ExpUpper),
        b'g' => Some(Conversion::General),
        b'G' => Some(Conversion::GeneralUpper),
        _ => None,
    };
    let bad = |c: Option<u8>| match c {
        None => err(FormatErrorKind::Incomplete),
        Some(b'0'..=b'9' | b'-' | b'+' | b' ' | b'#' | b'.' | b'*') => {
            err(FormatErrorKind::FlagsOrWidth)
        }
        Some(_) => err(FormatErrorKind::Unknown),
    };
    let spec = |len, conv, length, precision| {
        Ok(Piece::Spec(FormatSpec {
            offset: at,
            len,
            conv,
            length,
            precision,
        }))
    };
    match byte(1) {
        Some(b'%') => Ok(Piece::Percent),
        Some(b'.') => {
            // A precision: only the floating-point conversions take one. `%.f` is `%.0f`.
            let mut i = 2;
            let mut precision: u32 = 0;
            while let Some(d @ b'0'..=b'9') = byte(i) {
                precision = (precision * 10 + u32::from(d - b'0')).min(u32::from(u16::MAX));
                i += 1;
            }
            if byte(i) == Some(b'l') {
                i += 1;
            }
            let c = byte(i);
            match (c, c.and_then(float_conv)) {
                (_, Some(conv)) => match u16::try_from(precision) {
                    Ok(p) if p <= MAX_FLOAT_PRECISION => spec(i + 1, conv, Length::Int, Some(p)),
                    _ => Err(err(FormatErrorKind::PrecisionTooLarge)),
                },
                (None, _) => Err(err(FormatErrorKind::Incomplete)),
                // A precision on an integer, character, pointer or string conversion.
                (Some(c), None) if int_conv(c).is_some() || b"cpswlh".contains(&c) => {
                    Err(err(FormatErrorKind::FlagsOrWidth))
                }
                (c, None) => Err(bad(c)),
            }
        }
        Some(b'h') => match byte(2).and_then(int_conv) {
            Some(conv) => spec(3, conv, Length::Short, None),
            None => Err(bad(byte(2))),
        },
        Some(b'l') if byte(2) == Some(b'l') => match byte(3).and_then(int_conv) {
            Some(conv) => spec(4, conv, Length::LongLong, None),
            None => Err(bad(byte(3))),
        },
        Some(b'l') => match byte(2) {
            Some(b's') => spec(3, Conversion::WStr, Length::Int, None),
            c => match (c.and_then(int_conv), c.and_then(float_conv)) {
                (Some(conv), _) => spec(3, conv, Length::Long, None),
                // `l` does nothing to a floating-point conversion (C99).
                (None, Some(conv)) => spec(3, conv, Length::Int, None),
                (None, None) => Err(bad(c)),
            },
        },
        Some(b'w') => match byte(2) {
            Some(b's') => spec(3, Conversion::WStr, Length::Int, None),
            c => Err(bad(c)),
        },
        Some(b'c') => spec(2, Conversion::Char, Length::Int, None),
        Some(b'p') => spec(2, Conversion::Pointer, Length::Int, None),
        Some(b's') => spec(2, Conversion::Str, Length::Int, None),
        c => match (c.and_then(int_conv), c.and_then(float_conv)) {
            (Some(conv), _) => spec(2, conv, Length::Int, None),
            (None, Some(conv)) => spec(2, conv, Length::Int, None),
            (None, None) => Err(bad(c)),
        },
    }
}

pub(crate) fn pieces(fmt: &[u8]) -> Result<Vec<Piece>, FormatError> {
    // A text piece and a conversion per `%`, and a last text: no regrowing on the way.
    let percents = fmt.iter().filter(|&&b| b == b'%').count();
    let mut out = Vec::with_capacity(2 * percents + 1);
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

/// Formats `printf(fmt, args...)` now. `%s`/`%ws` arguments are addresses read through
/// `env`; an unreadable one is an error. The argument of a floating-point conversion is the
/// bits of a `double` (the compiler has checked its type). The result is at most
/// [`MAX_PRINTF_OUTPUT`] bytes (a longer one is cut, with a warning).
///
/// It is the two halves of a deferred printf back to back (parse and capture, then render:
/// [`ParsedFormat`]), so text formatted now and text formatted later by an output consumer
/// are the same bytes by construction.
pub fn format_printf(env: &mut dyn Env, fmt: &[u8], args: &[u64]) -> Result<Vec<u8>, ScriptError> {
    let format = ParsedFormat::parse(fmt)?;
    format.check_arity(args.len())?;
    let mut strings = Vec::new();
    format.capture(&mut NoCallerMemory, env, args, &mut strings)?;
    // Room for the text and a typical conversion per argument: no regrowing on the way.
    let mut out = Vec::with_capacity(fmt.len() + strings.len() + 20 * args.len());
    if format.render(args, &strings, &mut out) {
        env.warn(&cut_warning());
    }
    Ok(out)
}

/// `printf(fmt, args...)` as a built-in: handed to the environment when it defers printf
/// ([`Env::defer_printf`]: recorded at event time, formatted later by a consumer), else
/// formatted now and appended to the output.
pub fn printf(env: &mut dyn Env, fmt: &[u8], args: &[u64]) -> Result<(), ScriptError> {
    if env.record_printf_values(fmt, args) {
        return Ok(());
    }
    if let Some(done) = env.defer_printf(fmt, args, &mut NoCallerMemory) {
        return done;
    }
    let out = format_printf(env, fmt, args)?;
    env.output(&out);
    Ok(())
}

/// `print(x)`: the value in lower-case hex without a prefix, and a newline.
pub(crate) fn print(env: &mut dyn Env, v: u64) {
    let mut out = Vec::with_capacity(17);
    format_int(&mut out, Conversion::HexLower, Length::LongLong, v);
    out.push(b'\n');
    env.output(&out);
}
