//! Event command lines: what they mean, and every error with its position in the line.

use hv_core::*;

fn err(line: &str) -> (String, String) {
    let e = parse_event_command(line).unwrap_err();
    (e.message, line[e.start..e.end].to_string())
}

#[test]
fn the_common_options() {
    let s = parse_event_command("!msrread 0xc0000080 pid 4 core 2 imm no sc on stage pre buffer 100 output {a, b} script { @rax = 1; }").unwrap();
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
        (Some(4), Some(2), false, true, StageMode::Pre, Some(0x100))
    );
    assert_eq!(o.output, vec!["a".to_string(), "b".to_string()]);
    let (text, offset) = s.script.unwrap();
    assert_eq!(text, " @rax = 1; ");
    assert_eq!(offset, s.text.find("{ @rax").unwrap() + 1);
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

#[test]
fn errors_point_at_the_word() {
    assert_eq!(err("!nope 1").1, "!nope");
    assert!(err("!nope 1").0.contains("unknown event"));
    assert_eq!(
        err("!msrread zz"),
        ("`zz` is not a number".into(), "zz".into())
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
