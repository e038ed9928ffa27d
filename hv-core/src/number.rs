//! HyperDbg numbers on command lines: hex by default, `0x` hex, `0n` decimal, `0y`
//! binary, `0o`/`0t` octal, backticks as digit separators (`fffff800`5b660000`).

/// The value of `text`, or `None` if it is not a number or does not fit in 64 bits.
pub fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.as_bytes() {
        [b'0', b'x', ..] => (&text[2..], 16),
        [b'0', b'n', ..] => (&text[2..], 10),
        [b'0', b'y', ..] => (&text[2..], 2),
        [b'0', b'o' | b't', ..] => (&text[2..], 8),
        _ => (text, 16),
    };
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '`' {
            continue;
        }
        let d = c.to_digit(radix)? as u64;
        value = value.checked_mul(radix as u64)?.checked_add(d)?;
        any = true;
    }
    (any || radix == 16 && text.starts_with("0x")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn radixes() {
        assert_eq!(parse_number("10"), Some(0x10));
        assert_eq!(parse_number("c0000080"), Some(0xc0000080));
        assert_eq!(parse_number("0n100"), Some(100));
        assert_eq!(parse_number("0y101"), Some(5));
        assert_eq!(parse_number("0o17"), Some(15));
        assert_eq!(parse_number("0t17"), Some(15));
        assert_eq!(parse_number("fffff800`5b660000"), Some(0xfffff8005b660000));
        assert_eq!(parse_number("xyz"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("10000000000000000"), None);
    }
}
