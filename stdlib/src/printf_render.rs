//! Turning one printf argument into text: the integer, character, pointer and
//! floating-point conversions (glibc's output for the floating-point ones), and
//! [`rendered_len`], the exact length of that text without producing it.
//!
//! `rendered_len` exists for deferred printf ([`crate::ParsedFormat::capture`]): a `%s`
//! read at event time stops where the whole output reaches [`crate::MAX_PRINTF_OUTPUT`], so
//! the recorder must know how long the conversions before it will print, while the text
//! itself is only made later, by whoever formats the output.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use crate::printf::{Conversion, FormatSpec, Length};

/// `fmt::Write` into a byte vector.
pub(crate) struct Bytes<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The low `length.bits()` bits of `v`.
fn masked(length: Length, v: u64) -> u64 {
    let bits = length.bits();
    if bits == 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// `masked` read as a signed integer of `length`'s width.
fn signed(length: Length, masked: u64) -> i64 {
    let shift = 64 - length.bits();
    ((masked << shift) as i64) >> shift
}

pub(crate) fn format_int(out: &mut Vec<u8>, conv: Conversion, length: Length, v: u64) {
    let masked = masked(length, v);
    // By hand rather than through `core::fmt`: this is most of what formatting an event's
    // output costs, and the digits of an integer need no machinery.
    match conv {
        Conversion::Signed => {
            let n = signed(length, masked);
            if n < 0 {
                out.push(b'-');
            }
            push_decimal(out, n.unsigned_abs());
        }
        Conversion::Unsigned => push_decimal(out, masked),
        Conversion::Octal => push_pow2(out, masked, 3, LOWER_DIGITS),
        Conversion::HexLower => push_pow2(out, masked, 4, LOWER_DIGITS),
        Conversion::HexUpper => push_pow2(out, masked, 4, UPPER_DIGITS),
        _ => {}
    }
}

const LOWER_DIGITS: &[u8; 16] = b"0123456789abcdef";
const UPPER_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// `v` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// `v` in base `2^log2` (octal: 3, hex: 4) with these digits.
fn push_pow2(out: &mut Vec<u8>, mut v: u64, log2: u32, digits: &[u8; 16]) {
    let mut buf = [0u8; 22];
    let mut at = buf.len();
    let mask = (1u64 << log2) - 1;
    loop {
        at -= 1;
        buf[at] = digits[(v & mask) as usize];
        v >>= log2;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// Writes `s` in upper case when `upper`.
fn push_case(out: &mut Vec<u8>, s: &str, upper: bool) {
    if upper {
        out.extend(s.bytes().map(|b| b.to_ascii_uppercase()));
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Rewrites Rust's exponent form (`1.5e-7`, `2e300`) as C's (`1.5e-07`, `2e+300`).
fn push_c_exp(out: &mut Vec<u8>, rust: &str, upper: bool) {
    let (mantissa, exp) = rust.split_once('e').unwrap_or((rust, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    out.extend_from_slice(mantissa.as_bytes());
    out.push(if upper { b'E' } else { b'e' });
    out.push(sign as u8);
    if digits.len() < 2 {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// Drops the trailing zeros of a fraction, and its `.` if nothing is left (`%g`).
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// glibc's `%f %F %e %E %g %G` of the `double` with these bits, `precision` defaulting to 6.
/// `core::fmt` with a precision is exact and rounds half-to-even on the exact binary value,
/// as glibc does (in the default rounding mode).
pub(crate) fn format_float(out: &mut Vec<u8>, conv: Conversion, precision: Option<u16>, bits: u64) {
    let upper = matches!(
        conv,
        Conversion::FloatUpper | Conversion::ExpUpper | Conversion::GeneralUpper
    );
    // glibc prints the sign bit of every value, NaNs and zeros included.
    if bits >> 63 == 1 {
        out.push(b'-');
    }
    let x = f64::from_bits(bits & !(1 << 63));
    if x.is_nan() {
        return push_case(out, "nan", upper);
    }
    if x.is_infinite() {
        return push_case(out, "inf", upper);
    }
    let p = usize::from(precision.unwrap_or(6));
    let mut s = String::new();
    // Writing into a String cannot fail.
    match conv {
        Conversion::Exp | Conversion::ExpUpper => {
            let _ = write!(s, "{x:.p$e}");
            push_c_exp(out, &s, upper);
        }
        Conversion::General | Conversion::GeneralUpper => {
            // C11 7.21.6.1: with P significant digits (0 counts as 1) and X the exponent
            // `%e` would print, `%f` with precision P-1-X if P > X >= -4, else `%e` with
            // precision P-1; then trailing zeros go.
            let p = p.max(1);
            let _ = write!(s, "{x:.prec$e}", prec = p - 1);
            let exp = s
                .split_once('e')
                .and_then(|(_, e)| e.parse::<i32>().ok())
                .unwrap_or(0);
            // p <= MAX_FLOAT_PRECISION, so it fits an i32.
            let p = p as i32;
            if exp >= -4 && exp < p {
                s.clear();
                let _ = write!(s, "{x:.prec$}", prec = (p - 1 - exp) as usize);
                out.extend_from_slice(trim_fraction(&s).as_bytes());
            } else {
                let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
                let mut t = String::from(trim_fraction(mantissa));
                t.push('e');
                t.push_str(e);
                push_c_exp(out, &t, upper);
            }
        }
        _ => {
            let _ = write!(Bytes(out), "{x:.p$}");
        }
    }
}

/// The text of a conversion that takes a value (every one but `%s` and `%ws`).
pub(crate) fn render_value(out: &mut Vec<u8>, spec: &FormatSpec, v: u64) {
    match spec.conv {
        Conversion::Char => {
            if v as u8 != 0 {
                out.push(v as u8);
            }
        }
        Conversion::Pointer => {
            let _ = write!(Bytes(out), "{v:016X}");
        }
        // Strings are read from memory, not rendered from a value.
        Conversion::Str | Conversion::WStr => {}
        conv if conv.is_float() => format_float(out, conv, spec.precision, v),
        conv => format_int(out, conv, spec.length, v),
    }
}

/// Digits of `v` in base `2^log2` (octal: 3, hex: 4); 0 has one.
fn pow2_digits(v: u64, log2: u32) -> usize {
    let bits = 64 - v.leading_zeros();
    (bits.div_ceil(log2) as usize).max(1)
}

/// Decimal digits of `v`; 0 has one.
fn decimal_digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// How many bytes [`render_value`] appends for `v`, computed without rendering the integer
/// conversions (a floating-point one is rendered into a scratch buffer: the exact length
/// of glibc's text has no shortcut).
pub(crate) fn rendered_len(spec: &FormatSpec, v: u64) -> usize {
    let length = spec.length;
    match spec.conv {
        Conversion::Char => usize::from(v as u8 != 0),
        Conversion::Pointer => 16,
        Conversion::Str | Conversion::WStr => 0,
        Conversion::Signed => {
            let n = signed(length, masked(length, v));
            usize::from(n < 0) + decimal_digits(n.unsigned_abs())
        }
        Conversion::Unsigned => decimal_digits(masked(length, v)),
        Conversion::Octal => pow2_digits(masked(length, v), 3),
        Conversion::HexLower | Conversion::HexUpper => pow2_digits(masked(length, v), 4),
        conv => {
            let mut scratch = Vec::new();
            format_float(&mut scratch, conv, spec.precision, v);
            scratch.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printf::parse_format;

    /// Values around every digit-count boundary, signs and widths.
    fn samples() -> Vec<u64> {
        let mut v = alloc::vec![0, 1, 7, 8, 9, 10, 0xff, 0x100, u64::MAX, i64::MIN as u64];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            v.extend([p - 1, p, p + 1, p.wrapping_neg()]);
            p = next;
        }
        for shift in 0..64 {
            let b = 1u64 << shift;
            v.extend([b - 1, b, b + 1, b.wrapping_neg(), !b]);
        }
        v.extend([
            1.5f64.to_bits(),
            (-0.0f64).to_bits(),
            f64::NAN.to_bits(),
            1e300f64.to_bits(),
        ]);
        v
    }

    #[test]
    fn integers_read_as_core_fmt_writes_them() {
        for v in samples() {
            for length in [Length::Short, Length::Int, Length::Long, Length::LongLong] {
                let m = masked(length, v);
                let n = signed(length, m);
                for (conv, want) in [
                    (Conversion::Signed, alloc::format!("{n}")),
                    (Conversion::Unsigned, alloc::format!("{m}")),
                    (Conversion::Octal, alloc::format!("{m:o}")),
                    (Conversion::HexLower, alloc::format!("{m:x}")),
                    (Conversion::HexUpper, alloc::format!("{m:X}")),
                ] {
                    let mut out = Vec::new();
                    format_int(&mut out, conv, length, v);
                    assert_eq!(out, want.as_bytes(), "{conv:?} {length:?} {v:#x}");
                }
            }
        }
    }

    #[test]
    fn rendered_len_is_the_length_of_the_text() {
        let specs =
            parse_format(b"%d%i%u%o%x%X%hd%hu%ho%hx%ld%lu%lo%lX%lld%llu%llo%llx%c%p%f%.2e%g%G")
                .unwrap();
        for spec in &specs {
            for &v in &samples() {
                let mut out = Vec::new();
                render_value(&mut out, spec, v);
                assert_eq!(rendered_len(spec, v), out.len(), "{spec:?} of {v:#x}");
            }
        }
    }
}
