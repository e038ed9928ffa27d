//! `formats(x)`: HyperDbg's `.formats` display of a value (libhyperdbg `formats.cpp`,
//! `CommandFormatsShowResults`), reproduced byte for byte where it does not depend on the
//! clock:
//!
//! ```text
//! evaluate expression:
//! Hex :        00000000`00000010
//! Decimal :    16
//! Octal :      20
//! Binary :     00000000 00000000 00000000 00000000 00000000 00000000 00000000 00010000
//! Char :       ........
//! Time :       04/28/20 - 06:35AM
//! Float :      0.00 +8e-323 7.905050E-323
//! Double :     7.90505033345994471e-323
//! ```
//!
//! `Decimal` and `Octal` are MSVC's `%d`/`%o` of a 64-bit argument, so the low 32 bits;
//! `Float` and `Double` print the value's bits reinterpreted as an IEEE double (the
//! Windows x64 varargs convention hands the integer register to `%f`), formatted as MSVC
//! does, `nan`/`inf` spellings included. `Binary` ends with a space, as HyperDbg's does.
//! The time is the context's local time ([`Env::local_time`]), or `unavailable`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::env::Env;
use crate::printf_render::Bytes;

/// MSVC's spelling of a non-finite double, or `None` for a finite one.
fn msvc_special(x: f64, upper: bool, plus: bool) -> Option<String> {
    let bits = x.to_bits();
    let neg = bits >> 63 == 1;
    let sign = if neg {
        "-"
    } else if plus {
        "+"
    } else {
        ""
    };
    let body = if x.is_infinite() {
        "inf"
    } else if x.is_nan() {
        let quiet = bits & (1 << 51) != 0;
        if !quiet {
            "nan(snan)"
        } else if bits == 0xfff8_0000_0000_0000 {
            "nan(ind)"
        } else {
            "nan"
        }
    } else {
        return None;
    };
    let mut s = String::from(sign);
    if upper {
        s.extend(body.chars().map(|c| c.to_ascii_uppercase()));
    } else {
        s.push_str(body);
    }
    Some(s)
}

/// C's `%.{prec}e` / `%.{prec}E` (with `%+` when `plus`): Rust's exponent form, rewritten
/// to C's signed, at-least-two-digit exponent.
fn c_exp(x: f64, prec: usize, upper: bool, plus: bool) -> String {
    if let Some(s) = msvc_special(x, upper, plus) {
        return s;
    }
    let mut rust = String::new();
    let _ = if plus {
        write!(rust, "{x:+.prec$e}")
    } else {
        write!(rust, "{x:.prec$e}")
    };
    let (mantissa, exp) = rust.split_once('e').unwrap_or((rust.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut out = String::from(mantissa);
    let _ = write!(
        out,
        "{}{}{:02}",
        if upper { 'E' } else { 'e' },
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    out
}

/// C's `%{width}.{prec}f`.
fn c_fixed(x: f64, width: usize, prec: usize) -> String {
    let mut s = String::new();
    match msvc_special(x, false, false) {
        Some(sp) => {
            let _ = write!(s, "{sp:>width$}");
        }
        None => {
            let _ = write!(s, "{x:>width$.prec$}");
        }
    }
    s
}

/// Appends the `.formats` text for `v`.
pub(crate) fn formats(env: &mut dyn Env, v: u64) {
    let time = env.local_time();
    let mut out = Vec::with_capacity(320);
    let mut w = Bytes(&mut out);
    let _ = writeln!(w, "evaluate expression:");
    let _ = writeln!(w, "Hex :        {:08x}`{:08x}", v >> 32, v & 0xffff_ffff);
    let _ = writeln!(w, "Decimal :    {}", v as u32 as i32);
    let _ = writeln!(w, "Octal :      {:o}", v as u32);
    let _ = write!(w, "Binary :     ");
    for byte in v.to_be_bytes() {
        let _ = write!(w, "{byte:08b} ");
    }
    let _ = write!(w, "\nChar :       ");
    for byte in v.to_le_bytes() {
        let c = if (0x20..0x7f).contains(&byte) {
            byte as char
        } else {
            '.'
        };
        let _ = write!(w, "{c}");
    }
    let _ = write!(w, "\nTime :       ");
    let _ = match time {
        // strftime "%x - %I:%M%p" in the C locale.
        Some(t) => {
            let h12 = match t.hour % 12 {
                0 => 12,
                h => h,
            };
            let ampm = if t.hour < 12 { "AM" } else { "PM" };
            writeln!(
                w,
                "{:02}/{:02}/{:02} - {h12:02}:{:02}{ampm}",
                t.month,
                t.day,
                t.year % 100,
                t.minute
            )
        }
        None => writeln!(w, "unavailable"),
    };
    let d = f64::from_bits(v);
    let _ = writeln!(
        w,
        "Float :      {} {} {}",
        c_fixed(d, 4, 2),
        c_exp(d, 0, false, true),
        c_exp(d, 6, true, false)
    );
    // DECIMAL_DIG is 17 with MSVC.
    let _ = writeln!(w, "Double :     {}", c_exp(d, 17, false, false));
    env.output(&out);
}
