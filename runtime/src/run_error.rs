//! Run-time errors: why a script stopped ([`RunErrorKind`]) and where ([`RunError`], a
//! [`SourceRange`] of the source), in the words every back end reports — the interpreter
//! (the reference, which wraps the kind with its own `Span`), the constant folder and the
//! [`Runner`](crate::Runner). At the bottom of the crate: it imports none of the back ends.

use alloc::format;
use alloc::string::{String, ToString};

use hvscript_stdlib::{MemFault, ScriptError};

use crate::scalar::{NumTy, ScalarTy};
use crate::source_range::SourceRange;

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunErrorKind {
    Builtin(ScriptError),
    DivisionByZero,
    /// `MIN / -1` or `MIN % -1` of a signed type.
    DivisionOverflow(NumTy),
    /// A shift count not below the width of the shifted type.
    ShiftCount {
        count: u64,
        bits: u32,
    },
    /// A float operation whose result is not finite (overflow to infinity, NaN).
    FloatRange,
    /// A float converted to an integer type it does not fit (or a NaN).
    FloatConversion {
        to: ScalarTy,
    },
    /// `% << >> & | ^ ~` on a float: never produced by the compiler (a corrupt program).
    InvalidFloatOperation,
    /// A typed read or write at an address that cannot be accessed; `reason` says why when
    /// the memory is unreachable in this context.
    Memory {
        addr: u64,
        len: u8,
        write: bool,
        reason: Option<&'static str>,
    },
    FuelExhausted(u64),
    CallDepth(u32),
    StackExhausted(usize),
}

impl RunErrorKind {
    /// A failed typed load or store of `len` bytes at `addr`.
    pub fn memory(addr: u64, len: usize, write: bool, fault: MemFault) -> RunErrorKind {
        RunErrorKind::Memory {
            addr,
            len: len as u8,
            write,
            reason: match fault {
                MemFault::Invalid => None,
                MemFault::Unavailable(u) => Some(u.0),
            },
        }
    }

    /// The message every back end prints for this error.
    pub fn message(&self) -> String {
        match self {
            RunErrorKind::Builtin(e) => e.to_string(),
            RunErrorKind::DivisionByZero => "division by zero".into(),
            RunErrorKind::DivisionOverflow(ty) => match ty.bits() {
                32 => "division overflow (-0x80000000 / -1 in a 32-bit type)".into(),
                _ => "division overflow (-0x8000000000000000 / -1)".into(),
            },
            RunErrorKind::ShiftCount { count, bits } => {
                format!("shift count {} is outside 0..{}", *count as i64, bits - 1)
            }
            RunErrorKind::FloatRange => {
                "floating-point result out of range (infinity or NaN)".into()
            }
            RunErrorKind::FloatConversion { to } => {
                format!("floating-point value does not fit the integer type ({to})")
            }
            RunErrorKind::InvalidFloatOperation => {
                "operation not defined on floating-point values".into()
            }
            RunErrorKind::Memory {
                addr,
                len,
                write,
                reason,
            } => {
                let verb = if *write { "write" } else { "read" };
                let unit = if *len == 1 { "byte" } else { "bytes" };
                match reason {
                    Some(r) => format!("cannot {verb} {len} {unit} at 0x{addr:x}: {r}"),
                    None => format!("cannot {verb} {len} {unit} at 0x{addr:x} (invalid address)"),
                }
            }
            RunErrorKind::FuelExhausted(f) => {
                format!("fuel exhausted: {f} loop iterations and calls without finishing")
            }
            RunErrorKind::CallDepth(d) => format!("function calls nested deeper than {d}"),
            RunErrorKind::StackExhausted(n) => format!("local variables need more than {n} slots"),
        }
    }
}

/// A run-time error: what, and where in the source (byte offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    pub kind: RunErrorKind,
    pub range: SourceRange,
}

impl RunError {
    pub fn message(&self) -> String {
        self.kind.message()
    }
}
