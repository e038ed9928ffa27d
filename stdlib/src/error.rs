//! [`ScriptError`]: the run-time errors that end a script's execution.
//!
//! Spans are not here: the interpreter and the JIT runtime know which call failed and attach
//! the source location themselves.

use core::fmt;

use hvscript_abi::{ArgKind, Builtin};

use crate::format_error::FormatError;

/// Which address space an access went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Virtual,
    Physical,
}

/// Whether a failed access was a read or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A run-time error. Every variant ends the script's execution (HyperDbg's `HasError`);
/// recoverable conditions are warnings sent through [`crate::Env::warn`] instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptError {
    /// A memory access to an unmapped or inaccessible address.
    InvalidAddress {
        builtin: Builtin,
        space: Space,
        access: Access,
        addr: u64,
        len: u64,
    },
    /// `/` or `%` by zero (raised by the interpreter and the JIT, not by built-ins).
    DivisionByZero,
    /// A shift count outside the operand's width (raised by the interpreter and the JIT).
    BadShift { count: u64 },
    /// The built-in needs a capability that this context does not have.
    Unavailable {
        builtin: Builtin,
        reason: &'static str,
    },
    /// A call with the wrong number of arguments (only a buggy caller can do this: the
    /// compiler checks arity).
    ArgCount {
        builtin: Builtin,
        min: usize,
        max: Option<usize>,
        got: usize,
    },
    /// A call whose argument `index` (0-based) is of the wrong kind, e.g. a wide string
    /// literal given to `strlen`.
    ArgKind {
        builtin: Builtin,
        index: usize,
        expected: ArgKind,
    },
    /// An argument value out of the built-in's range.
    InvalidArgument {
        builtin: Builtin,
        value: u64,
        reason: &'static str,
    },
    /// `spinlock_lock` spent its whole spin budget without getting the lock.
    SpinlockNotAcquired { addr: u64, spins: u64 },
    /// A malformed `printf` format (normally caught at compile time).
    Format(FormatError),
    /// `printf` got a different number of arguments than its format has specifiers.
    PrintfArity { specifiers: usize, args: usize },
    /// A built-in that only exists at compile time (`reference`).
    NotCallable {
        builtin: Builtin,
        reason: &'static str,
    },
}

impl From<FormatError> for ScriptError {
    fn from(e: FormatError) -> Self {
        ScriptError::Format(e)
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ScriptError::InvalidAddress {
                builtin,
                space,
                access,
                addr,
                len,
            } => {
                let verb = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                };
                let unit = if len == 1 { "byte" } else { "bytes" };
                let space = match space {
                    Space::Virtual => "",
                    Space::Physical => "physical address ",
                };
                write!(
                    f,
                    "{}: cannot {verb} {len} {unit} at {space}{addr:#x} (invalid address)",
                    builtin.name()
                )
            }
            ScriptError::DivisionByZero => f.write_str("division by zero"),
            ScriptError::BadShift { count } => {
                write!(
                    f,
                    "invalid shift count {count} (must be less than the operand's width)"
                )
            }
            ScriptError::Unavailable { builtin, reason } => {
                write!(f, "{}: unavailable: {reason}", builtin.name())
            }
            ScriptError::ArgCount {
                builtin,
                min,
                max,
                got,
            } => match max {
                Some(max) if max == min => {
                    write!(
                        f,
                        "{}: expects {min} argument(s), got {got}",
                        builtin.name()
                    )
                }
                Some(max) => {
                    write!(
                        f,
                        "{}: expects {min} to {max} arguments, got {got}",
                        builtin.name()
                    )
                }
                None => write!(
                    f,
                    "{}: expects at least {min} argument(s), got {got}",
                    builtin.name()
                ),
            },
            ScriptError::ArgKind {
                builtin,
                index,
                expected,
            } => {
                let what = match expected {
                    ArgKind::Value => "a value (string literals are not allowed here)",
                    ArgKind::NarrowStrOrValue => "a narrow string literal or an address",
                    ArgKind::WideStrOrValue => "a wide string literal L\"...\" or an address",
                    ArgKind::Format => "a narrow string literal (the format)",
                };
                write!(
                    f,
                    "{}: argument {} must be {what}",
                    builtin.name(),
                    index + 1
                )
            }
            ScriptError::InvalidArgument {
                builtin,
                value,
                reason,
            } => {
                write!(
                    f,
                    "{}: invalid argument {value:#x}: {reason}",
                    builtin.name()
                )
            }
            ScriptError::SpinlockNotAcquired { addr, spins } => write!(
                f,
                "spinlock at {addr:#x} not acquired after {spins} spins (deadlock?)"
            ),
            ScriptError::Format(ref e) => write!(f, "printf: {e}"),
            ScriptError::PrintfArity { specifiers, args } => write!(
                f,
                "printf: the format has {specifiers} specifier(s) but {args} argument(s) were given"
            ),
            ScriptError::NotCallable { builtin, reason } => {
                write!(f, "{}: {reason}", builtin.name())
            }
        }
    }
}
