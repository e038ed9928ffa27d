//! What can be wrong with a printf format, and the precision bound it reports. At the
//! bottom of the crate, so the format parser ([`crate::printf`]) and the error type that
//! carries its errors ([`crate::error`]) both import it and not each other.

use core::fmt;

/// The largest precision a floating-point conversion accepts (`%.4096f`); more digits could
/// not be printed anyway.
pub const MAX_FLOAT_PRECISION: u16 = 4096;

/// What is wrong with a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatErrorKind {
    /// The format ends right after a `%` (or after its length prefix).
    Incomplete,
    /// A flag, a width, or a precision on a conversion other than `f F e E g G`, which
    /// hvscript (like HyperDbg) does not support.
    FlagsOrWidth,
    /// A precision over [`MAX_FLOAT_PRECISION`].
    PrecisionTooLarge,
    /// Any other character after `%`.
    Unknown,
}

/// A malformed format; `offset` is the byte offset of the offending `%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub offset: usize,
    pub kind: FormatErrorKind,
}

const SUPPORTED: &str = "supported: %d %i %u %o %x %X (with h, l or ll), %c %p %s %ws %ls, \
     %f %F %e %E %g %G (with l and a precision such as %.2f), %%";

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FormatErrorKind::Incomplete => "incomplete format specifier",
            FormatErrorKind::FlagsOrWidth => {
                "flags and width are not supported in format specifiers, nor a precision \
                 except on %f %F %e %E %g %G"
            }
            FormatErrorKind::PrecisionTooLarge => {
                return write!(
                    f,
                    "precision over {MAX_FLOAT_PRECISION} at byte {} ({SUPPORTED})",
                    self.offset
                );
            }
            FormatErrorKind::Unknown => "unknown format specifier",
        };
        write!(f, "{what} at byte {} ({SUPPORTED})", self.offset)
    }
}
