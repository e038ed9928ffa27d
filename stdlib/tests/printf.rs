//! Tests of `printf` (every specifier and width rule, format errors with their offsets,
//! strings in memory, arity), `print` and `formats`.

mod common;

use common::{wide, BareEnv, TestEnv, MEM};
use hvscript_abi::Builtin;
use hvscript_stdlib::{
    call, format_printf, parse_format, Access, Arg, Conversion, FormatError, FormatErrorKind,
    FormatSpec, Length, LocalTime, ScriptError, Space, MAX_PRINTF_OUTPUT,
};

fn fmt1(fmt: &str, v: u64) -> String {
    let mut env = TestEnv::new(MEM);
    let out = format_printf(&mut env, fmt.as_bytes(), &[v]).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn int_specifiers_use_windows_widths() {
    let cases: &[(&str, u64, &str)] = &[
        // No prefix and `l`: the low 32 bits (LLP64).
        ("%d", 0xffff_ffff, "-1"),
        ("%d", 0x1_0000_0005, "5"),
        ("%i", 0x8000_0000, "-2147483648"),
        ("%u", 0xffff_ffff, "4294967295"),
        ("%u", 0x1_0000_0000, "0"),
        ("%o", 8, "10"),
        ("%x", 0x1234_abcd_ef01, "abcdef01"),
        ("%X", 0x1234_abcd_ef01, "ABCDEF01"),
        ("%ld", 0xffff_fffe, "-2"),
        ("%li", 0x7fff_ffff, "2147483647"),
        ("%lu", 0x1_ffff_ffff, "4294967295"),
        ("%lo", 0x1_0000_0009, "11"),
        ("%lx", 0xdead_beef_cafe, "beefcafe"),
        ("%lX", 0xdead_beef_cafe, "BEEFCAFE"),
        // `ll`: 64 bits.
        ("%lld", u64::MAX, "-1"),
        ("%lli", 1 << 63, "-9223372036854775808"),
        ("%llu", u64::MAX, "18446744073709551615"),
        ("%llo", 0o1234567012345670123, "1234567012345670123"),
        ("%llx", 0xdead_beef_cafe_f00d, "deadbeefcafef00d"),
        ("%llX", 0xdead_beef_cafe_f00d, "DEADBEEFCAFEF00D"),
        // `h`: 16 bits.
        ("%hd", 0xffff, "-1"),
        ("%hi", 0x1_8000, "-32768"),
        ("%hu", 0x12_ffff, "65535"),
        ("%ho", 0x1_0008, "10"),
        ("%hx", 0x12345, "2345"),
        ("%hX", 0xabcdef, "CDEF"),
        // `%c`: the low byte; `%p`: 16 upper-case digits.
        ("%c", 0x4142, "B"),
        ("%p", 0xabc, "0000000000000ABC"),
        ("%p", u64::MAX, "FFFFFFFFFFFFFFFF"),
    ];
    for &(fmt, v, want) in cases {
        assert_eq!(fmt1(fmt, v), want, "{fmt} of {v:#x}");
    }
}

#[test]
fn char_zero_prints_nothing() {
    assert_eq!(fmt1("[%c]", 0x100), "[]");
}

#[test]
fn text_percent_escape_and_several_arguments() {
    let mut env = TestEnv::new(MEM);
    let out = format_printf(&mut env, b"a=%d, b=%x 100%% %llx\n", &[5, 255, 1 << 40]).unwrap();
    assert_eq!(out, b"a=5, b=ff 100% 10000000000\n");
    let out = format_printf(&mut env, b"no specifiers", &[]).unwrap();
    assert_eq!(out, b"no specifiers");
    let out = format_printf(&mut env, b"%%%d%%", &[7]).unwrap();
    assert_eq!(out, b"%7%");
    let out = format_printf(&mut env, b"", &[]).unwrap();
    assert!(out.is_empty());
}

#[test]
fn string_specifiers_read_memory() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"narrow \xc3\xa9\0junk");
    env.put_wide(0x1200, &wide("wide \u{e9} \u{1f600}!\0"));
    let out = format_printf(&mut env, b"<%s|%ws|%ls>", &[0x1100, 0x1200, 0x1200]).unwrap();
    // Narrow bytes pass through; UTF-16 outside ASCII is `?`, a surrogate pair one `?`.
    assert_eq!(out, b"<narrow \xc3\xa9|wide ? ?!|wide ? ?!>");
    let out = format_printf(&mut env, b"[%s]", &[0x1105]).unwrap();
    assert_eq!(out, b"[w \xc3\xa9]");
    let out = format_printf(&mut env, b"[%s]", &[0x1300]).unwrap();
    assert_eq!(out, b"[]");
}

#[test]
fn unreadable_string_is_an_error() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(
        format_printf(&mut env, b"%s", &[0x10]),
        Err(ScriptError::InvalidAddress {
            builtin: Builtin::Printf,
            space: Space::Virtual,
            access: Access::Read,
            addr: 0x10,
            len: 1
        })
    );
    env.put(0x3ffe, b"a\0");
    assert!(matches!(
        format_printf(&mut env, b"%ws", &[0x3ffe]),
        Err(ScriptError::InvalidAddress {
            addr: 0x4000,
            len: 2,
            ..
        })
    ));
}

#[test]
fn output_is_capped_with_a_warning() {
    let mut env = TestEnv::new(0x3000);
    env.mem[..0x2000].fill(b'x');
    let out = format_printf(&mut env, b"%s", &[0x1000]).unwrap();
    assert_eq!(out.len(), MAX_PRINTF_OUTPUT);
    assert_eq!(env.warnings, ["printf: output cut at 4096 bytes"]);
}

#[test]
fn float_specifier_with_an_integer_is_an_error() {
    let mut env = TestEnv::new(MEM);
    let e = format_printf(&mut env, b"x=%d y=%f", &[1, 2]).unwrap_err();
    assert_eq!(e, ScriptError::PrintfFloat { offset: 7 });
    assert!(e.to_string().contains("%f at byte 7"), "{e}");
}

#[test]
fn argument_count_must_match() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(
        format_printf(&mut env, b"%d %d", &[1]),
        Err(ScriptError::PrintfArity {
            specifiers: 2,
            args: 1
        })
    );
    assert_eq!(
        format_printf(&mut env, b"100%%", &[1]),
        Err(ScriptError::PrintfArity {
            specifiers: 0,
            args: 1
        })
    );
    assert_eq!(
        format_printf(&mut env, b"%08x", &[1]),
        Err(ScriptError::Format(FormatError {
            offset: 0,
            kind: FormatErrorKind::FlagsOrWidth
        }))
    );
}

#[test]
fn parse_format_lists_specifiers() {
    let specs = parse_format(b"a%d %%%llx%ws%hu%c%p%s%f%ls%lX").unwrap();
    let got: Vec<(usize, usize, Conversion, Length)> = specs
        .iter()
        .map(|s: &FormatSpec| (s.offset, s.len, s.conv, s.length))
        .collect();
    assert_eq!(
        got,
        [
            (1, 2, Conversion::Signed, Length::Int),
            (6, 4, Conversion::HexLower, Length::LongLong),
            (10, 3, Conversion::WStr, Length::Int),
            (13, 3, Conversion::Unsigned, Length::Short),
            (16, 2, Conversion::Char, Length::Int),
            (18, 2, Conversion::Pointer, Length::Int),
            (20, 2, Conversion::Str, Length::Int),
            (22, 2, Conversion::Float, Length::Int),
            (24, 3, Conversion::WStr, Length::Int),
            (27, 3, Conversion::HexUpper, Length::Long),
        ]
    );
    assert_eq!(parse_format(b"").unwrap(), []);
    assert_eq!(parse_format(b"%%").unwrap(), []);
}

#[test]
fn parse_format_errors_carry_offsets() {
    use FormatErrorKind::*;
    let cases: &[(&str, usize, FormatErrorKind)] = &[
        ("%", 0, Incomplete),
        ("abc%", 3, Incomplete),
        ("%l", 0, Incomplete),
        ("x %ll", 2, Incomplete),
        ("%h", 0, Incomplete),
        ("%w", 0, Incomplete),
        ("%08x", 0, FlagsOrWidth),
        ("ok %d %-5d", 6, FlagsOrWidth),
        ("%.2f", 0, FlagsOrWidth),
        ("%#x", 0, FlagsOrWidth),
        ("%llq", 0, Unknown),
        ("ab%q", 2, Unknown),
        ("%lc", 0, Unknown),
        ("%hs", 0, Unknown),
        ("%wd", 0, Unknown),
        ("%lf", 0, Unknown),
        ("%hhd", 0, Unknown),
        ("%e", 0, Unknown),
    ];
    for &(fmt, offset, kind) in cases {
        assert_eq!(
            parse_format(fmt.as_bytes()),
            Err(FormatError { offset, kind }),
            "{fmt}"
        );
    }
    let e = parse_format(b"x%08x").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("flags, width and precision are not supported"),
        "{e}"
    );
    assert!(e.to_string().contains("at byte 1"), "{e}");
}

#[test]
fn printf_through_call_outputs() {
    let mut env = TestEnv::new(MEM);
    env.put(0x1100, b"evt\0");
    let r = call(
        Builtin::Printf,
        &mut env,
        &[
            Arg::Str(b"%s: rax=%llx, %d%%\n"),
            Arg::Val(0x1100),
            Arg::Val(0xfffff),
            Arg::Val(50),
        ],
    );
    assert_eq!(r, Ok(0));
    assert_eq!(env.out_str(), "evt: rax=fffff, 50%\n");
    let e = call(Builtin::Printf, &mut env, &[Arg::Str(b"%d")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "printf: the format has 1 specifier(s) but 0 argument(s) were given"
    );
}

#[test]
fn print_is_lower_hex_without_prefix() {
    let mut env = BareEnv::new();
    call(Builtin::Print, &mut env, &[Arg::Val(0xABC)]).unwrap();
    call(Builtin::Print, &mut env, &[Arg::Val(0)]).unwrap();
    call(Builtin::Print, &mut env, &[Arg::Val(u64::MAX)]).unwrap();
    assert_eq!(env.out_str(), "abc\n0\nffffffffffffffff\n");
}

fn formats_of(v: u64, time: Option<LocalTime>) -> String {
    let mut env = TestEnv::new(MEM);
    env.time = time;
    call(Builtin::Formats, &mut env, &[Arg::Val(v)]).unwrap();
    env.out_str()
}

#[test]
fn formats_matches_hyperdbg_layout() {
    // HyperDbg's `.formats 10` example (docs), with the time it shows.
    let t = LocalTime {
        year: 2020,
        month: 4,
        day: 28,
        hour: 6,
        minute: 35,
    };
    assert_eq!(
        formats_of(0x10, Some(t)),
        "evaluate expression:\n\
         Hex :        00000000`00000010\n\
         Decimal :    16\n\
         Octal :      20\n\
         Binary :     00000000 00000000 00000000 00000000 00000000 00000000 00000000 00010000 \n\
         Char :       ........\n\
         Time :       04/28/20 - 06:35AM\n\
         Float :      0.00 +8e-323 7.905050E-323\n\
         Double :     7.90505033345994471e-323\n"
    );
}

#[test]
fn formats_of_other_documented_values() {
    let t = LocalTime {
        year: 2021,
        month: 2,
        day: 7,
        hour: 14,
        minute: 29,
    };
    let rcx = formats_of(0x24, Some(t));
    assert!(rcx.contains("\nChar :       $.......\n"), "{rcx}");
    assert!(rcx.contains("\nTime :       02/07/21 - 02:29PM\n"), "{rcx}");
    assert!(
        rcx.contains("\nFloat :      0.00 +2e-322 1.778636E-322\n"),
        "{rcx}"
    );
    assert!(
        rcx.ends_with("\nDouble :     1.77863632502848756e-322\n"),
        "{rcx}"
    );

    let sum = formats_of(0xffff_2919_8192_51c0, None);
    assert!(sum.contains("\nHex :        ffff2919`819251c0\n"), "{sum}");
    assert!(sum.contains("\nDecimal :    -2121117248\n"), "{sum}");
    assert!(sum.contains("\nOctal :      20144450700\n"), "{sum}");
    assert!(sum.contains(
        "\nBinary :     11111111 11111111 00101001 00011001 10000001 10010010 01010001 11000000 \n"
    ));
    assert!(sum.contains("\nChar :       .Q...)..\n"), "{sum}");
    assert!(sum.contains("\nTime :       unavailable\n"), "{sum}");
    assert!(sum.contains("\nFloat :      -nan -nan -NAN\n"), "{sum}");
    assert!(sum.ends_with("\nDouble :     -nan\n"), "{sum}");
}

#[test]
fn formats_float_lines_follow_msvc() {
    let lines = |v: u64| {
        let s = formats_of(v, None);
        let float = s
            .lines()
            .find(|l| l.starts_with("Float"))
            .unwrap()
            .to_string();
        let double = s
            .lines()
            .find(|l| l.starts_with("Double"))
            .unwrap()
            .to_string();
        (float, double)
    };
    let (f, d) = lines(1.0f64.to_bits());
    assert_eq!(f, "Float :      1.00 +1e+00 1.000000E+00");
    assert_eq!(d, "Double :     1.00000000000000000e+00");
    let (f, d) = lines((-1234.5f64).to_bits());
    assert_eq!(f, "Float :      -1234.50 -1e+03 -1.234500E+03");
    assert_eq!(d, "Double :     -1.23450000000000000e+03");
    let (f, _) = lines(0);
    assert_eq!(f, "Float :      0.00 +0e+00 0.000000E+00");
    let (f, d) = lines(f64::INFINITY.to_bits());
    assert_eq!(
        (f.as_str(), d.as_str()),
        ("Float :       inf +inf INF", "Double :     inf")
    );
    let (f, d) = lines(0xfff8_0000_0000_0000);
    assert_eq!(
        (f.as_str(), d.as_str()),
        (
            "Float :      -nan(ind) -nan(ind) -NAN(IND)",
            "Double :     -nan(ind)"
        )
    );
    let (f, _) = lines(0x7ff0_0000_0000_0001);
    assert_eq!(f, "Float :      nan(snan) +nan(snan) NAN(SNAN)");
    let (f, _) = lines(1e100f64.to_bits());
    assert!(f.ends_with(" +1e+100 1.000000E+100"), "{f}");
}

#[test]
fn formats_time_uses_twelve_hour_clock() {
    let at = |hour, minute| {
        let t = LocalTime {
            year: 2009,
            month: 12,
            day: 31,
            hour,
            minute,
        };
        let s = formats_of(0, Some(t));
        s.lines()
            .find(|l| l.starts_with("Time"))
            .unwrap()
            .to_string()
    };
    assert_eq!(at(0, 5), "Time :       12/31/09 - 12:05AM");
    assert_eq!(at(12, 0), "Time :       12/31/09 - 12:00PM");
    assert_eq!(at(23, 59), "Time :       12/31/09 - 11:59PM");
}
