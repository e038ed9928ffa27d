//! Event command lines: what they mean, and every error with its position in the line.

use hv_core::*;

fn err(line: &str) -> (String, String) {
    let e = parse_event_command(line).unwrap_err();
    (e.message, line[e.start..e.end].to_string())
}

#[test]
fn the_common_options() {
    let s = parse_event_command("!msrread 0xc0000080 pid 4 core 2 sc on stage pre buffer 100 output {a, b} script { @rax = 1; }").unwrap();
    assert_eq!(s.kind, EventKind::MsrRead);
    assert_eq!(s.filter, Filter::Value(0xc0000080));
    let o = &s.options;
    assert_eq!(
        (
            o.pid,
            o.core,
            o.immediate,
            o.short_circuit,
            o.stage,
            o.buffer
        ),
        (Some(4), Some(2), true, true, StageMode::Pre, Some(0x100))
    );
    assert_eq!(o.output, vec!["a".to_string(), "b".to_string()]);
    let (text, offset) = s.script.unwrap();
    assert_eq!(text, " @rax = 1; ");
    assert_eq!(offset, s.text.find("{ @rax").unwrap() + 1);
    assert!(
        !parse_event_command("!cpuid imm no")
            .unwrap()
            .options
            .immediate
    );
    let s = parse_event_command("!cpuid").unwrap();
    assert_eq!(
        (s.filter, s.options.stage, s.options.immediate),
        (Filter::Any, StageMode::Pre, true)
    );
}

#[test]
fn kind_specific_arguments() {
    let f = |l: &str| parse_event_command(l).unwrap().filter;
    assert_eq!(
        f("!monitor rw fffff80000001000 fffff80000001fff"),
        Filter::Range {
            access: Access(3),
            physical: false,
            from: 0xfffff80000001000,
            to: 0xfffff80000001fff
        }
    );
    assert_eq!(
        f("!monitor pa x 1000 l 10"),
        Filter::Range {
            access: Access(4),
            physical: true,
            from: 0x1000,
            to: 0x100f
        }
    );
    assert_eq!(
        f("!epthook nt!ExAllocatePoolWithTag"
            .replace("nt!ExAllocatePoolWithTag", "fffff80012345678")
            .as_str()),
        Filter::Address(0xfffff80012345678)
    );
    assert_eq!(f("!ioout 0n128"), Filter::Value(128));
    assert_eq!(f("!exception e"), Filter::Value(0xe));
    assert_eq!(f("!interrupt 0x2f"), Filter::Value(0x2f));
    assert_eq!(
        f("!crwrite 4 0x80"),
        Filter::ControlRegister {
            cr: 4,
            mask: Some(0x80)
        }
    );
    assert_eq!(f("!tsc stage all"), Filter::Any);
}

/// HyperDbg evaluates address and number arguments (issue 14, item 10).
#[test]
fn arguments_are_expressions_with_symbols() {
    let f = |l: &str| parse_event_command(l).map(|s| s.filter);
    assert_eq!(
        f("!monitor w 2000 2000+8"),
        Ok(Filter::Range {
            access: Access::WRITE,
            physical: false,
            from: 0x2000,
            to: 0x2008
        })
    );
    assert_eq!(
        f("!monitor w 7ff71f118210 7ff71f118210+4"),
        Ok(Filter::Range {
            access: Access::WRITE,
            physical: false,
            from: 0x7ff71f118210,
            to: 0x7ff71f118214
        })
    );
    let mut symbols = SymbolMap::default();
    symbols
        .0
        .insert("nt!Kd_DEFAULT_Mask".into(), 0xfffff800_12340000);
    symbols.0.insert("hello!counter".into(), 0x4c6010);
    let g = |l: &str| parse_event_command_with(l, &symbols).map(|s| s.filter);
    assert_eq!(
        g("!monitor rw nt!Kd_DEFAULT_Mask nt!Kd_DEFAULT_Mask+4"),
        Ok(Filter::Range {
            access: Access(3),
            physical: false,
            from: 0xfffff800_12340000,
            to: 0xfffff800_12340004
        })
    );
    assert_eq!(
        g("!monitor w counter l 0n4"),
        Ok(Filter::Range {
            access: Access::WRITE,
            physical: false,
            from: 0x4c6010,
            to: 0x4c6013
        })
    );
    assert_eq!(
        g("!epthook hello!counter+(2*8)"),
        Ok(Filter::Address(0x4c6020))
    );
    let line = "!epthook nt!ExAllocatePoolWithTag+@rcx+5";
    let e = parse_event_command_with(line, &symbols).unwrap_err();
    assert_eq!(&line[e.start..e.end], "nt!ExAllocatePoolWithTag");
    let line = "!monitor w counter cuonter+3";
    let e = parse_event_command_with(line, &symbols).unwrap_err();
    assert_eq!(&line[e.start..e.end], "cuonter");
    assert_eq!(e.help.unwrap(), "did you mean `hello!counter`?");
    let line = "!ioin 1+@rdx";
    let e = parse_event_command(line).unwrap_err();
    assert_eq!(&line[e.start..e.end], "@rdx");
    assert!(e.message.contains("no value when an event is defined"));
}

/// HyperDbg's `output` command, and what this engine refuses with a reason (item 6).
#[test]
fn output_sources_and_refused_blocks() {
    assert_eq!(
        parse_command("output create MyOutputName1 file c:\\users\\sina\\desktop\\output.txt"),
        Ok(Command::Output(OutputCommand::Create {
            name: "MyOutputName1".into(),
            kind: OutputKind::File,
            address: "c:\\users\\sina\\desktop\\output.txt".into()
        }))
    );
    assert_eq!(
        parse_command("output create t tcp 127.0.0.1:8080"),
        Ok(Command::Output(OutputCommand::Create {
            name: "t".into(),
            kind: OutputKind::Tcp,
            address: "127.0.0.1:8080".into()
        }))
    );
    assert_eq!(
        parse_command("output open t"),
        Ok(Command::Output(OutputCommand::Open("t".into())))
    );
    assert_eq!(
        parse_command("output close t"),
        Ok(Command::Output(OutputCommand::Close("t".into())))
    );
    assert_eq!(
        parse_command("output"),
        Ok(Command::Output(OutputCommand::List))
    );
    let line = "output create x pigeon there";
    let e = parse_command(line).unwrap_err();
    assert_eq!(&line[e.start..e.end], "pigeon");
    let line = "output open";
    assert!(parse_command(line).unwrap_err().message.contains("name"));
    for (line, word) in [
        ("!ioin 510 condition { 90 90 }", "condition"),
        ("!ioin 510 code { 90 90 }", "code"),
        ("!ioin 510 asm code { nop }", "asm"),
    ] {
        let e = parse_event_command(line).unwrap_err();
        assert_eq!(&line[e.start..e.end], word);
        assert!(
            e.message.contains("never guest-supplied machine code"),
            "{e:?}"
        );
    }
    let line = "!ioin 510 imm no output {a}";
    let e = parse_event_command(line).unwrap_err();
    assert_eq!(&line[e.start..e.end], "imm");
}

/// `!mode`, `!trace`, and `!syscall2`/`!sysret2` as `!syscall`/`!sysret` (item 13).
#[test]
fn mode_trace_and_the_alternate_syscall_hooks() {
    let s = parse_event_command("!mode u pid 4").unwrap();
    assert_eq!(
        (s.kind, s.filter),
        (
            EventKind::Mode,
            Filter::Mode {
                user: true,
                kernel: false
            }
        )
    );
    assert_eq!(
        parse_event_command("!mode uk").unwrap().filter,
        Filter::Mode {
            user: true,
            kernel: true
        }
    );
    assert_eq!(err("!mode x").1, "x");
    assert!(err("!mode u stage post").0.contains("no calling stages"));
    assert_eq!(
        parse_event_command("!trace step-out").unwrap().filter,
        Filter::Value(hv_core::event::trace_type::STEP_OUT)
    );
    assert!(err("!trace").0.contains("needs a trace type"));
    let s = parse_event_command("!syscall2 0x55 stage all").unwrap();
    assert_eq!(
        (s.kind, s.filter, s.text.as_str()),
        (
            EventKind::Syscall,
            Filter::Value(0x55),
            "!syscall2 0x55 stage all"
        )
    );
    assert_eq!(
        parse_event_command("!sysret2").unwrap().kind,
        EventKind::Sysret
    );
}

#[test]
fn errors_point_at_the_word() {
    assert_eq!(err("!nope 1").1, "!nope");
    assert!(err("!nope 1").0.contains("unknown event"));
    assert_eq!(
        err("!msrread zz"),
        ("unknown symbol `zz`".into(), "zz".into())
    );
    assert_eq!(
        err("!msrread 9z"),
        ("`9z` is not a number".into(), "9z".into())
    );
    assert_eq!(err("!cpuid pid").0, "missing value after `pid`");
    assert_eq!(
        err("!cpuid stage later"),
        ("unknown stage `later`".into(), "later".into())
    );
    assert_eq!(err("!cpuid sc maybe").1, "maybe");
    assert_eq!(err("!exception 20").1, "20");
    assert_eq!(err("!interrupt 10").1, "10");
    assert!(err("!interrupt").0.contains("needs a vector"));
    assert_eq!(err("!monitor q 1000 2000").1, "q");
    assert_eq!(err("!monitor w 2000 1000").1, "1000");
    assert_eq!(err("!cpuid 1 2").1, "2");
    assert_eq!(err("!cpuid core 1 core 2").1, "core");
    assert_eq!(err("!crwrite 3").1, "3");
    assert!(err("!cpuid script { x = 1;").0.contains("never closed"));
    assert_eq!(err("!cpuid script").0, "missing value after `script`");
    assert_eq!(
        err("!cpuid script 5").0,
        "expected `{ ... }` after `script`"
    );
}

#[test]
fn braces_inside_strings_and_comments_do_not_end_the_script() {
    let s = parse_event_command("!cpuid script { printf(\"}\"); /* } */ // }\n x = 1; }").unwrap();
    assert_eq!(
        s.script.unwrap().0,
        " printf(\"}\"); /* } */ // }\n x = 1; "
    );
}

#[test]
fn other_commands() {
    assert_eq!(
        parse_command("? .x = 1;").unwrap(),
        Command::Eval(" .x = 1;".into(), 1)
    );
    assert!(parse_command("events x 1").is_err());
    assert!(parse_command("events d").is_err());
    assert!(parse_command("events d 1 2").is_err());
    assert!(parse_command("bogus")
        .unwrap_err()
        .message
        .contains("unknown command"));
    assert!(parse_command("   ").is_err());
}

mod never_panics {
    use hv_core::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "!monitor",
                "!cpuid",
                "!msrread",
                "!epthook",
                "!interrupt",
                "!crwrite",
                "events",
                "?",
                "pid",
                "core",
                "imm",
                "sc",
                "stage",
                "buffer",
                "script",
                "output",
                "on",
                "off",
                "pre",
                "post",
                "all",
                "yes",
                "l",
                "rw",
                "pa",
                "va",
                "{",
                "}",
                "\"",
                "/*",
                "//",
                "0x",
                "0n",
                "ffffffffffffffff",
                "10000000000000000",
                "e",
                "d",
                "c",
                "{ x = 1; }",
                "{ \"}\" }",
            ])
            .prop_map(String::from),
            "[ -~]{0,12}",
            any::<u64>().prop_map(|n| format!("{n:x}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn command_lines_parse_or_fail_with_a_span_inside_the_line(words in prop::collection::vec(word(), 0..10), sep in "[ \t\n]{1,2}") {
            let line = words.join(&sep);
            if let Err(e) = parse_command(&line) {
                prop_assert!(e.start <= e.end && e.end <= line.len(), "{e:?} for {line:?}");
            }
        }

        #[test]
        fn arbitrary_text_never_panics(line in "\\PC{0,80}") {
            if let Err(e) = parse_command(&line) {
                prop_assert!(e.end <= line.len());
                prop_assert!(line.is_char_boundary(e.start) && line.is_char_boundary(e.end));
            }
        }
    }
}
