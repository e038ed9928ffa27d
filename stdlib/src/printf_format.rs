//! A printf format parsed once ([`ParsedFormat`]), and printf cut in two halves, so an
//! event can record a printf and have it formatted later, elsewhere (bpftrace's printf,
//! HyperDbg's buffered messages):
//!
//! - at event time, [`ParsedFormat::check_arity`] and [`ParsedFormat::capture`]: the checks
//!   that can stop the script, and a bounded copy of every `%s`/`%ws` string, read then, so
//!   the output shows what memory held at the event;
//! - later, anywhere, [`ParsedFormat::render`]: the text, from the raw argument values and
//!   the captured strings.
//!
//! [`crate::format_printf`] is the two halves back to back, so deferred and immediate
//! output are the same bytes, and the same errors, by construction.

use alloc::string::String;
use alloc::vec::Vec;

use crate::env::{AtomicRmw, CallerMemory, Env, MemFault, Unavailable};
use crate::error::ScriptError;
use crate::printf::{pieces, Conversion, FormatError, Piece, MAX_PRINTF_OUTPUT};
use crate::printf_render::{render_value, rendered_len};
use crate::strings::append_mem_string;

/// Set in a captured string's length word when the string was cut (at the output bound).
const CUT_BIT: u32 = 1 << 31;

/// The warning a printf cut at [`MAX_PRINTF_OUTPUT`] bytes adds after its text (through
/// [`Env::warn`], so `warning: ` before it and a newline after it by default).
pub fn cut_warning() -> String {
    alloc::format!("printf: output cut at {MAX_PRINTF_OUTPUT} bytes")
}

/// A printf format, parsed: its bytes, its pieces, how many arguments it takes and whether
/// any of them is a string read from memory.
#[derive(Clone, Debug)]
pub struct ParsedFormat {
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    specs: usize,
    strings: bool,
}

impl ParsedFormat {
    /// Parses `fmt` (the errors [`crate::parse_format`] reports).
    pub fn parse(fmt: &[u8]) -> Result<ParsedFormat, FormatError> {
        let pieces = pieces(fmt)?;
        let specs = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Spec(_)))
            .count();
        let strings = pieces
            .iter()
            .any(|p| matches!(p, Piece::Spec(s) if is_string(s.conv)));
        Ok(ParsedFormat {
            bytes: fmt.to_vec(),
            pieces,
            specs,
            strings,
        })
    }

    /// The format's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many arguments the format takes.
    pub fn arg_count(&self) -> usize {
        self.specs
    }

    /// Whether a `%s`/`%ws` must be read from memory at event time.
    pub fn has_strings(&self) -> bool {
        self.strings
    }

    /// The error of a call with `args` arguments, as formatting it would report.
    pub fn check_arity(&self, args: usize) -> Result<(), ScriptError> {
        if args == self.specs {
            Ok(())
        } else {
            Err(ScriptError::PrintfArity {
                specifiers: self.specs,
                args,
            })
        }
    }

    /// Reads the `%s`/`%ws` strings of a call now, as formatting it would, and appends
    /// them to `out` (for [`ParsedFormat::render`]): each string in order, as a
    /// little-endian `u32` length (bit 31 set if the string was cut) and its bytes, already
    /// converted as printf prints them. A string stops where the whole output would reach
    /// [`MAX_PRINTF_OUTPUT`] bytes, which the lengths of the conversions before it decide
    /// ([`rendered_len`]: computed, not formatted); strings past that point are not read,
    /// as formatting would not read them. `caller` reads the addresses it claims (the
    /// script's own memory), `env` the rest. Nothing is appended for a format without
    /// strings.
    pub fn capture(
        &self,
        caller: &mut dyn CallerMemory,
        env: &mut dyn Env,
        args: &[u64],
        out: &mut Vec<u8>,
    ) -> Result<(), ScriptError> {
        if !self.strings {
            return Ok(());
        }
        let mut view = CaptureView { caller, env };
        // The length of the output formatting would have produced so far.
        let mut len = 0usize;
        let mut next_arg = args.iter().copied();
        for p in &self.pieces {
            match *p {
                Piece::Text(a, b) => len += b - a,
                Piece::Percent => len += 1,
                Piece::Spec(s) => {
                    let v = next_arg.next().unwrap_or(0);
                    if is_string(s.conv) {
                        let head = out.len();
                        out.extend_from_slice(&[0; 4]);
                        let start = out.len();
                        // `len` is at most the bound here: the loop stops once it is over.
                        let cap = start + (MAX_PRINTF_OUTPUT - len);
                        let wide = s.conv == Conversion::WStr;
                        let cut = append_mem_string(&mut view, v, wide, out, cap)?;
                        let n = out.len() - start;
                        len += n;
                        // n <= MAX_PRINTF_OUTPUT: it fits below the cut bit.
                        let word = n as u32 | if cut { CUT_BIT } else { 0 };
                        out[head..start].copy_from_slice(&word.to_le_bytes());
                    } else {
                        len += rendered_len(&s, v);
                    }
                }
            }
            if len > MAX_PRINTF_OUTPUT {
                break;
            }
        }
        Ok(())
    }

    /// Appends the text of a call (whose arity was checked) to `out`, with its strings
    /// from [`ParsedFormat::capture`]; returns whether it was cut at [`MAX_PRINTF_OUTPUT`]
    /// bytes, after which the caller adds [`cut_warning`] as a warning. Text that was
    /// already in `out` does not count towards the bound.
    pub fn render(&self, args: &[u64], strings: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let mut cut = false;
        let mut next_arg = args.iter().copied();
        let mut blob = strings;
        for p in &self.pieces {
            match *p {
                Piece::Text(a, b) => out.extend_from_slice(&self.bytes[a..b]),
                Piece::Percent => out.push(b'%'),
                Piece::Spec(s) => {
                    let v = next_arg.next().unwrap_or(0);
                    if is_string(s.conv) {
                        let (text, was_cut, rest) = next_string(blob);
                        out.extend_from_slice(text);
                        cut |= was_cut;
                        blob = rest;
                    } else {
                        render_value(out, &s, v);
                    }
                }
            }
            if out.len() - start > MAX_PRINTF_OUTPUT {
                cut = true;
                break;
            }
        }
        if cut {
            out.truncate(start + MAX_PRINTF_OUTPUT);
        }
        cut
    }
}

fn is_string(conv: Conversion) -> bool {
    matches!(conv, Conversion::Str | Conversion::WStr)
}

/// The first captured string of `blob`: its bytes, whether it was cut, and the rest. A
/// blob that ends early (it cannot, from `capture`) reads as empty strings.
fn next_string(blob: &[u8]) -> (&[u8], bool, &[u8]) {
    let Some((head, rest)) = blob.split_first_chunk::<4>() else {
        return (&[], false, &[]);
    };
    let word = u32::from_le_bytes(*head);
    let n = ((word & !CUT_BIT) as usize).min(rest.len());
    (&rest[..n], word & CUT_BIT != 0, &rest[n..])
}

/// What a capture reads strings through: the caller's own memory, else the environment.
/// It only reads.
struct CaptureView<'a> {
    caller: &'a mut dyn CallerMemory,
    env: &'a mut dyn Env,
}

const READ_ONLY: Unavailable = Unavailable("reading a printf's strings writes no memory");

impl Env for CaptureView<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        match self.caller.read_caller(addr, buf) {
            Some(done) => done,
            None => self.env.read(addr, buf),
        }
    }

    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Unavailable(READ_ONLY))
    }

    fn atomic_rmw_u64(&mut self, _addr: u64, _op: AtomicRmw) -> Result<u64, MemFault> {
        Err(MemFault::Unavailable(READ_ONLY))
    }

    fn cmpxchg_u32(&mut self, _addr: u64, _expected: u32, _new: u32) -> Result<u32, MemFault> {
        Err(MemFault::Unavailable(READ_ONLY))
    }

    fn output(&mut self, bytes: &[u8]) {
        self.env.output(bytes);
    }

    fn test_statement(&mut self, value: u64) {
        self.env.test_statement(value);
    }
}
