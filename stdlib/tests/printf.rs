//! Tests of `printf` (every specifier and width rule, the floating-point conversions against
//! glibc, format errors with their offsets, strings in memory, arity), `print` and `formats`.

mod common;

use common::{wide, BareEnv, TestEnv, MEM};
use hvscript_abi::Builtin;
use hvscript_stdlib::{
    call, format_printf, parse_format, Access, Arg, Conversion, FormatError, FormatErrorKind,
    FormatSpec, Length, LocalTime, ScriptError, Space, MAX_FLOAT_PRECISION, MAX_PRINTF_OUTPUT,
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

fn fmt_double(fmt: &str, x: f64) -> String {
    fmt1(fmt, x.to_bits())
}

#[test]
fn float_conversions_print_as_glibc_does() {
    // Every expected string is glibc 2.36's `snprintf(buf, size, fmt, (double)value)`, from a
    // C program compiled with gcc (Debian 12). glibc rounds half-to-even on the exact binary
    // value (`%.2f` of 0.125 is 0.12, of 2.675 = 2.67499999... is 2.67) and prints the sign
    // of zeros and NaNs. The same comparison over ~560,000 random and tie-heavy values and
    // precisions 0-20, 30, 50, 100, 400, 800, 1100 found no difference.
    let cases: &[(&str, f64, &str)] = &[
        ("%f", 0.0, "0.000000"),
        ("%f", -0.0, "-0.000000"),
        ("%f", 1.5, "1.500000"),
        ("%f", -1.5, "-1.500000"),
        ("%f", 0.1, "0.100000"),
        ("%f", 1.0 / 3.0, "0.333333"),
        ("%f", 123456789.125, "123456789.125000"),
        ("%f", 1e-7, "0.000000"),
        ("%f", 5e-7, "0.000000"),
        ("%f", 0.0000005, "0.000000"),
        ("%f", 11.5, "11.500000"),
        ("%f", 0.789, "0.789000"),
        ("%f", -0.789, "-0.789000"),
        ("%f", 9.9999995, "9.999999"),
        ("%f", 0.9999995, "1.000000"),
        ("%f", 1e300, "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160.000000"),
        ("%f", f64::MAX, "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368.000000"),
        ("%f", -f64::MAX, "-179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368.000000"),
        ("%f", f64::MIN_POSITIVE, "0.000000"),
        ("%f", 5e-324, "0.000000"),
        ("%f", f64::INFINITY, "inf"),
        ("%f", f64::NEG_INFINITY, "-inf"),
        ("%f", f64::NAN, "nan"),
        ("%f", -f64::NAN, "-nan"),
        ("%F", f64::INFINITY, "INF"),
        ("%F", f64::NEG_INFINITY, "-INF"),
        ("%F", f64::NAN, "NAN"),
        ("%F", -f64::NAN, "-NAN"),
        ("%F", 1.5, "1.500000"),
        ("%lf", 0.1, "0.100000"),
        ("%lF", -2.0, "-2.000000"),
        ("%.0f", 2.5, "2"),
        ("%.0f", 0.5, "0"),
        ("%.0f", 1.5, "2"),
        ("%.0f", 3.5, "4"),
        ("%.0f", -2.5, "-2"),
        ("%.0f", 0.5000000000000001, "1"),
        ("%.f", 2.5, "2"),
        ("%.2f", 0.125, "0.12"),
        ("%.2f", 0.375, "0.38"),
        ("%.2f", 2.675, "2.67"),
        ("%.2f", 1.005, "1.00"),
        ("%.1f", 0.25, "0.2"),
        ("%.1f", 0.35, "0.3"),
        ("%.2f", 3.14659, "3.15"),
        ("%.2lf", -0.0, "-0.00"),
        ("%.3f", 1e-7, "0.000"),
        ("%.20f", 0.1, "0.10000000000000000555"),
        ("%.17f", 1.0 / 3.0, "0.33333333333333331"),
        ("%.0f", 1e22, "10000000000000000000000"),
        ("%.0f", 1e23, "99999999999999991611392"),
        ("%.30f", 5e-324, "0.000000000000000000000000000000"),
        ("%e", 0.0, "0.000000e+00"),
        ("%e", -0.0, "-0.000000e+00"),
        ("%e", 1.5, "1.500000e+00"),
        ("%e", 0.1, "1.000000e-01"),
        ("%e", 123456789.125, "1.234568e+08"),
        ("%e", 1e300, "1.000000e+300"),
        ("%e", 1e-7, "1.000000e-07"),
        ("%e", f64::MAX, "1.797693e+308"),
        ("%e", 5e-324, "4.940656e-324"),
        ("%e", f64::from_bits(0x000f_ffff_ffff_ffff), "2.225074e-308"),
        ("%E", 1e-300, "1.000000E-300"),
        ("%E", f64::NEG_INFINITY, "-INF"),
        ("%e", -f64::NAN, "-nan"),
        ("%.0e", 2.5, "2e+00"),
        ("%.0e", 0.25, "2e-01"),
        ("%.2e", 9.995, "9.99e+00"),
        ("%.2e", 9.9951, "1.00e+01"),
        ("%le", 1e100, "1.000000e+100"),
        ("%g", 0.0, "0"),
        ("%g", -0.0, "-0"),
        ("%g", 1.5, "1.5"),
        ("%g", 0.1, "0.1"),
        ("%g", 1.0 / 3.0, "0.333333"),
        ("%g", 123456789.125, "1.23457e+08"),
        ("%g", 100000.0, "100000"),
        ("%g", 1e6, "1e+06"),
        ("%g", 999999.5, "1e+06"),
        ("%g", 1e-4, "0.0001"),
        ("%g", 1e-5, "1e-05"),
        ("%g", 0.000123456789, "0.000123457"),
        ("%g", 1e300, "1e+300"),
        ("%g", f64::MAX, "1.79769e+308"),
        ("%g", 5e-324, "4.94066e-324"),
        ("%G", 1e-300, "1E-300"),
        ("%G", f64::NAN, "NAN"),
        ("%g", f64::INFINITY, "inf"),
        ("%.0g", 2.5, "2"),
        ("%.1g", 0.25, "0.2"),
        ("%.3g", 1234.5, "1.23e+03"),
        ("%.10g", 0.1, "0.1"),
        ("%.17g", 0.1, "0.10000000000000001"),
        ("%.17g", 1.0 / 3.0, "0.33333333333333331"),
        ("%lg", 100.0, "100"),
        ("%.2g", 99.5, "1e+02"),
    ];
    for &(fmt, x, want) in cases {
        assert_eq!(
            fmt_double(fmt, x),
            want,
            "{fmt} of {x:?} ({:#018x})",
            x.to_bits()
        );
    }
}

#[test]
fn float_conversions_print_every_digit() {
    // `%.1074f` shows the exact value of a subnormal (glibc output, as above).
    let tiny = fmt_double("%.1074f", 5e-324);
    assert_eq!(tiny.len(), 1076);
    let zeros = format!("0.{}", "0".repeat(323));
    assert!(
        tiny.starts_with(&format!(
            "{zeros}4940656458412465441765687928682213723650598026143247644255856825006755072702"
        )),
        "{tiny}"
    );
    assert!(
        tiny.ends_with("702637090279242767544565229087538682506419718265533447265625"),
        "{tiny}"
    );
    // The largest subnormal.
    let sub = fmt_double("%.1074f", f64::from_bits(0x000f_ffff_ffff_ffff));
    assert_eq!(sub.len(), 1076);
    assert!(sub.starts_with(&format!("0.{}22250738585072008890245868760858598876504231122409594654935248025624400092282356951787758888", "0".repeat(307))), "{sub}");
    assert!(
        sub.ends_with("582519159720757232455434770912461317493580281734466552734375"),
        "{sub}"
    );
    // Any NaN payload is `nan`, quiet or signalling.
    assert_eq!(fmt1("%f", 0x7ff0_0000_0000_0001), "nan");
    assert_eq!(fmt1("%F", 0xfff4_0000_0000_0000), "-NAN");
}

#[test]
fn float_arguments_in_a_whole_format() {
    // HyperDbg's test-script-floating-point.cpp, with the floats promoted to double.
    let mut env = TestEnv::new(MEM);
    let args = [11.5f64, 0.5, 0.789, -0.0, 0.5].map(f64::to_bits);
    let out = format_printf(&mut env, b"%f %f %f %f %f\n", &args).unwrap();
    assert_eq!(out, b"11.500000 0.500000 0.789000 -0.000000 0.500000\n");
    let r = call(
        Builtin::Printf,
        &mut env,
        &[
            Arg::Str(b"x=%d y=%.2f z=%e %lf%%"),
            Arg::Val(7),
            Arg::Val(2.675f64.to_bits()),
            Arg::Val((-1.0e-10f64).to_bits()),
            Arg::Val(0.1f64.to_bits()),
        ],
    );
    assert_eq!(r, Ok(0));
    assert_eq!(env.out_str(), "x=7 y=2.67 z=-1.000000e-10 0.100000%");
    // A float's bits promoted to double by the compiler print the float's value exactly.
    assert_eq!(fmt_double("%f", f64::from(0.1f32)), "0.100000");
    assert_eq!(fmt_double("%.10f", f64::from(0.1f32)), "0.1000000015");
}

#[test]
fn huge_precision_is_cut_with_the_output() {
    let mut env = TestEnv::new(MEM);
    let fmt = format!("%.{MAX_FLOAT_PRECISION}f");
    let out = format_printf(&mut env, fmt.as_bytes(), &[f64::MAX.to_bits()]).unwrap();
    assert_eq!(out.len(), MAX_PRINTF_OUTPUT);
    assert!(out.starts_with(b"17976931348623157081452742373170435679807056752584499659891747680315726078002853876058955863276687817154045895351438246423432132688946418276846754670353751698604991057655128207624549009038932894407586850845513394230458323690322294816580855933212334827479782620414472316873817718091929988125040402618412485836"));
    assert_eq!(out[309], b'.');
    assert!(out[310..].iter().all(|&b| b == b'0'));
    assert_eq!(env.warnings, ["printf: output cut at 4096 bytes"]);
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
    assert!(specs.iter().all(|s| s.precision.is_none()));
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
fn parse_format_float_conversions() {
    let specs = parse_format(b"%f%lf%F%lF%e%E%g%G%le%lg%.2f%.f%.0e%.12lg%.4096G%.007f").unwrap();
    let got: Vec<(usize, usize, Conversion, Option<u16>)> = specs
        .iter()
        .map(|s| (s.offset, s.len, s.conv, s.precision))
        .collect();
    use Conversion::*;
    assert_eq!(
        got,
        [
            (0, 2, Float, None),
            (2, 3, Float, None),
            (5, 2, FloatUpper, None),
            (7, 3, FloatUpper, None),
            (10, 2, Exp, None),
            (12, 2, ExpUpper, None),
            (14, 2, General, None),
            (16, 2, GeneralUpper, None),
            (18, 3, Exp, None),
            (21, 3, General, None),
            (24, 4, Float, Some(2)),
            (28, 3, Float, Some(0)),
            (31, 4, Exp, Some(0)),
            (35, 6, General, Some(12)),
            (41, 7, GeneralUpper, Some(4096)),
            (48, 6, Float, Some(7)),
        ]
    );
    assert!(specs
        .iter()
        .all(|s| s.expects_float() && s.length == Length::Int));
    // Nothing else takes a float.
    let others = parse_format(b"%d%i%u%o%x%X%hd%lx%llu%c%p%s%ws%ls").unwrap();
    assert_eq!(others.len(), 14);
    assert!(others
        .iter()
        .all(|s| !s.expects_float() && !s.conv.is_float()));
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
        ("%8.2f", 0, FlagsOrWidth),
        ("%-f", 0, FlagsOrWidth),
        ("%.*f", 0, FlagsOrWidth),
        ("%.-2f", 0, FlagsOrWidth),
        ("x%.2d", 1, FlagsOrWidth),
        ("%.2lld", 0, FlagsOrWidth),
        ("%.2s", 0, FlagsOrWidth),
        ("%.1ws", 0, FlagsOrWidth),
        ("%.2c", 0, FlagsOrWidth),
        ("%.2x", 0, FlagsOrWidth),
        ("%.2", 0, Incomplete),
        ("%.", 0, Incomplete),
        ("%.2l", 0, Incomplete),
        ("%.2q", 0, Unknown),
        ("%.4097f", 0, PrecisionTooLarge),
        ("ab %.99999999999999999999e", 3, PrecisionTooLarge),
        ("%#x", 0, FlagsOrWidth),
        ("%llq", 0, Unknown),
        ("ab%q", 2, Unknown),
        ("%lc", 0, Unknown),
        ("%hs", 0, Unknown),
        ("%wd", 0, Unknown),
        ("%Lf", 0, Unknown),
        ("%llf", 0, Unknown),
        ("%hf", 0, Unknown),
        ("%wf", 0, Unknown),
        ("%a", 0, Unknown),
        ("%hhd", 0, Unknown),
        ("%n", 0, Unknown),
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
        e.to_string().starts_with(
            "flags and width are not supported in format specifiers, nor a precision except on %f"
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at byte 1"), "{e}");
    let e = parse_format(b"%.5000f").unwrap_err();
    assert!(
        e.to_string().starts_with("precision over 4096 at byte 0 ("),
        "{e}"
    );
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
        ..Default::default()
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
        ..Default::default()
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
            ..Default::default()
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
