//! HyperDbg's integer syntax, the one parser every crate uses: hex by default, `0x` hex,
//! `0n` decimal, `0y` binary, `0o`/`0t` octal, backticks as digit separators
//! (`fffff800`5b660000`). A prefix with no digits is 0, as in HyperDbg (`0x`).

/// The value of `digits` in `radix` (backticks skipped), or `None` if a character is not
/// a digit of the radix or the value does not fit in 64 bits. No digits is 0.
pub fn parse_digits(digits: &str, radix: u32) -> Option<u64> {
    let mut value: u64 = 0;
    for c in digits.chars().filter(|&c| c != '`') {
        let d = u64::from(c.to_digit(radix)?);
        value = value.checked_mul(u64::from(radix))?.checked_add(d)?;
    }
    Some(value)
}

/// The value of a HyperDbg number, or `None` if `text` is not one or does not fit.
pub fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.as_bytes() {
        [b'0', b'x', ..] => (&text[2..], 16),
        [b'0', b'n', ..] => (&text[2..], 10),
        [b'0', b'y', ..] => (&text[2..], 2),
        [b'0', b'o' | b't', ..] => (&text[2..], 8),
        [] | [b'`', ..] => return None,
        _ => (text, 16),
    };
    parse_digits(digits, radix)
}

/// [`parse_number`] with an optional leading `-` (two's complement), for command-line
/// values such as `--reg rax=-1`.
pub fn parse_signed_number(text: &str) -> Option<u64> {
    match text.strip_prefix('-') {
        Some(rest) => parse_number(rest.trim_start()).map(u64::wrapping_neg),
        None => parse_number(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radixes() {
        assert_eq!(parse_number("10"), Some(0x10));
        assert_eq!(parse_number("c0000080"), Some(0xc0000080));
        assert_eq!(parse_number("0n100"), Some(100));
        assert_eq!(parse_number("0y101"), Some(5));
        assert_eq!(parse_number("0o17"), Some(15));
        assert_eq!(parse_number("0t17"), Some(15));
        assert_eq!(parse_number("0x"), Some(0));
        assert_eq!(parse_number("0n"), Some(0));
        assert_eq!(parse_number("fffff800`5b660000"), Some(0xfffff8005b660000));
        assert_eq!(parse_number("xyz"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("`"), None);
        assert_eq!(parse_number("0n12a"), None);
        assert_eq!(parse_number("10000000000000000"), None);
        assert_eq!(parse_signed_number("-1"), Some(u64::MAX));
        assert_eq!(parse_signed_number("-0n2"), Some(u64::MAX - 1));
    }
}
