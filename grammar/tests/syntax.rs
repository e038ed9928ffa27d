//! The lexical and syntactic rules that catch everyone (spec/language.md), one test each.

use hvscript_abi::{Builtin, PseudoReg, Register};
use hvscript_grammar::ast::*;
use hvscript_grammar::lexer::{tokenize, LexErrorKind, Tok};
use hvscript_grammar::{parse, parse_checked, print};

fn toks(src: &str) -> Vec<Tok<'_>> {
    tokenize(src)
        .unwrap()
        .into_iter()
        .map(|(_, t, _)| t)
        .collect()
}

fn one_expr(src: &str) -> String {
    let script = parse(&format!("x = {src};")).unwrap_or_else(|d| panic!("{}", d.render("t", src)));
    match &script.stmts[0].kind {
        StmtKind::Assign { value, .. } => print::expr(value),
        other => panic!("not an assignment: {other:?}"),
    }
}

fn cond(src: &str) -> String {
    let script =
        parse(&format!("if ({src}) {{ }}")).unwrap_or_else(|d| panic!("{}", d.render("t", src)));
    match &script.stmts[0].kind {
        StmtKind::If { arms, .. } => print::expr(&arms[0].cond),
        other => panic!("not an if: {other:?}"),
    }
}

#[test]
fn numbers_are_hex_by_default_with_prefixes() {
    assert_eq!(toks("10"), vec![Tok::Number(0x10)]);
    assert_eq!(
        toks("0x1F 0n100 0y1010 0o17 0t17"),
        vec![
            Tok::Number(0x1f),
            Tok::Number(100),
            Tok::Number(0b1010),
            Tok::Number(0o17),
            Tok::Number(0o17)
        ]
    );
    assert_eq!(
        toks("fffff800`5b660000"),
        vec![Tok::Number(0xfffff8005b660000)]
    );
    assert_eq!(
        toks("0b101"),
        vec![Tok::Number(0xb101)],
        "0b is not a binary prefix"
    );
    assert_eq!(toks("0x"), vec![Tok::Number(0)]);
}

#[test]
fn hex_digit_words_are_numbers_and_other_words_are_names() {
    assert_eq!(
        toks("dead cafe a f da"),
        vec![
            Tok::Number(0xdead),
            Tok::Number(0xcafe),
            Tok::Number(0xa),
            Tok::Number(0xf),
            Tok::Number(0xda)
        ]
    );
    assert_eq!(
        toks("deadx my_var"),
        vec![Tok::Ident("deadx"), Tok::Ident("my_var")]
    );
    // built-in names and registers win over hex-ness
    assert_eq!(
        toks("db dd cf"),
        vec![
            Tok::Builtin(Builtin::Db),
            Tok::Builtin(Builtin::Dd),
            Tok::Register(Register::Cf)
        ]
    );
}

#[test]
fn bare_register_names_are_registers() {
    assert_eq!(
        toks("rax @rax r8 zf id"),
        vec![
            Tok::Register(Register::Rax),
            Tok::Register(Register::Rax),
            Tok::Register(Register::R8),
            Tok::Register(Register::Zf),
            Tok::Register(Register::Id)
        ]
    );
    assert_eq!(
        tokenize("@foo").unwrap_err().kind,
        LexErrorKind::UnknownRegister("foo".into())
    );
    assert_eq!(
        tokenize("@RAX").unwrap_err().kind,
        LexErrorKind::UnknownRegister("RAX".into())
    );
}

#[test]
fn stage_and_event_stage_are_the_same_pseudo_register() {
    assert_eq!(
        toks("$stage $event_stage $context"),
        vec![
            Tok::Pseudo(PseudoReg::EventStage),
            Tok::Pseudo(PseudoReg::EventStage),
            Tok::Pseudo(PseudoReg::Context)
        ]
    );
    assert!(matches!(
        tokenize("$nope").unwrap_err().kind,
        LexErrorKind::UnknownPseudoRegister(_)
    ));
}

#[test]
fn dot_is_a_global_unless_it_follows_an_operand() {
    assert_eq!(
        toks(".counter = 1"),
        vec![Tok::Global("counter"), Tok::Assign, Tok::Number(1)]
    );
    assert_eq!(
        toks("s.x"),
        vec![Tok::Ident("s"), Tok::Dot, Tok::Ident("x")]
    );
    assert_eq!(
        toks("(a).b"),
        vec![
            Tok::LParen,
            Tok::Number(0xa),
            Tok::RParen,
            Tok::Dot,
            Tok::Ident("b")
        ]
    );
    assert_eq!(toks(".5"), vec![Tok::Float(0.5)]);
}

#[test]
fn strings_and_escapes() {
    assert_eq!(
        toks(r#""a\n\t\\\"\x41""#),
        vec![Tok::Str(b"a\n\t\\\"A".to_vec())]
    );
    assert_eq!(
        toks(r#"L"hi\x263a""#),
        vec![Tok::WStr(vec![b'h' as u16, b'i' as u16, 0x263a])]
    );
    assert!(matches!(
        tokenize(r#""\q""#).unwrap_err().kind,
        LexErrorKind::BadEscape(_)
    ));
    assert!(
        matches!(
            tokenize(r#""\x414""#).unwrap_err().kind,
            LexErrorKind::BadEscape(_)
        ),
        "3 hex digits"
    );
    assert_eq!(
        tokenize("\"abc").unwrap_err().kind,
        LexErrorKind::UnterminatedString
    );
}

#[test]
fn comments_and_symbols() {
    assert_eq!(
        toks("1 // two\n/* three \n */ 4"),
        vec![Tok::Number(1), Tok::Number(4)]
    );
    assert_eq!(
        tokenize("/* open").unwrap_err().kind,
        LexErrorKind::UnterminatedComment
    );
    assert_eq!(
        toks("nt!ExAllocatePoolWithTag"),
        vec![Tok::Symbol("nt!ExAllocatePoolWithTag")]
    );
}

#[test]
fn numbers_that_overflow_are_errors() {
    assert_eq!(
        tokenize("0x10000000000000000").unwrap_err().kind,
        LexErrorKind::NumberTooLarge
    );
    assert_eq!(toks("ffffffffffffffff"), vec![Tok::Number(u64::MAX)]);
}

#[test]
fn plain_expression_precedence_follows_c_for_the_operators_it_has() {
    assert_eq!(
        one_expr("@rdx | 0xfffff550 + @edx"),
        "(| @rdx (+ 0xfffff550 @edx))"
    );
    assert_eq!(one_expr("1 + 2 << 3"), "(<< (+ 0x1 0x2) 0x3)");
    assert_eq!(one_expr("a & b ^ c | d"), "(| (^ (& 0xa 0xb) 0xc) 0xd)");
    assert_eq!(one_expr("1 - 2 - 3"), "(- (- 0x1 0x2) 0x3)");
    assert_eq!(one_expr("- -x"), "(- (- x))");
    assert_eq!(one_expr("~~@rax"), "(~ (~ @rax))");
    assert_eq!(one_expr("*(@rsp + 8) + &.g"), "(+ (* (+ @rsp 0x8)) (& .g))");
}

#[test]
fn condition_comparisons_share_one_level_between_and_and_shift() {
    assert_eq!(cond("a == b < c"), "(< (== 0xa 0xb) 0xc)");
    assert_eq!(cond("x & y == 1"), "(& x (== y 0x1))");
    assert_eq!(cond("x << 1 > 2"), "(> (<< x 0x1) 0x2)");
    assert_eq!(
        cond("x > 1 || y < 2 && z"),
        "(|| (> x 0x1) (&& (< y 0x2) z))"
    );
}

#[test]
fn comparisons_outside_conditions_are_rejected_with_a_reason() {
    let d = parse("x = (a > b);").unwrap_err();
    assert_eq!(d.message, "unexpected `>`");
    assert!(
        d.notes.iter().any(|n| n.contains("only in the conditions")),
        "{d:?}"
    );
}

#[test]
fn call_arguments_in_conditions_are_shift_level() {
    let d = parse("if (poi(@rax & 0xfff) == 0) { }").unwrap_err();
    assert!(
        d.help
            .as_deref()
            .unwrap_or("")
            .contains("poi((@rax & 0xfff))"),
        "{d:?}"
    );
    assert!(parse("if (poi((@rax & 0xfff)) == 0) { }").is_ok());
    assert!(
        parse("x = poi(@rax & 0xfff);").is_ok(),
        "plain expressions take full arguments"
    );
}

#[test]
fn statements_need_braces_and_elsif() {
    assert!(parse("if (x) y = 1;").is_err());
    let d = parse("if (x) { } else if (y) { }").unwrap_err();
    assert!(d.help.as_deref().unwrap_or("").contains("elsif"));
    let s = parse("if (x) { } elsif (y) { } else { }").unwrap();
    assert!(
        matches!(&s.stmts[0].kind, StmtKind::If { arms, otherwise: Some(_) } if arms.len() == 2)
    );
}

#[test]
fn assignments_chains_and_targets() {
    let s = parse("t1 = t2 = 85;").unwrap();
    assert_eq!(print::script(&s), "(= t1 t2 0x85)\n");
    // `a` is the number 0xa, so it cannot be assigned
    assert_eq!(
        parse("a = 1;").unwrap_err().message,
        "cannot assign to a number"
    );
    let s = parse("*(@rsp + 8) = 1; @eax += 2; .g++; i--;").unwrap();
    assert_eq!(
        print::script(&s),
        "(= (* (+ @rsp 0x8)) 0x1)\n(+= @eax 0x2)\n(++ .g)\n(-- i)\n"
    );
    let d = parse("5 = x;").unwrap_err();
    assert_eq!(d.message, "cannot assign to a number");
    let d = parse("$pid = 1;").unwrap_err();
    assert!(d.message.contains("read-only"));
    let d = parse("x + 1;").unwrap_err();
    assert_eq!(d.message, "this expression does nothing on its own");
}

#[test]
fn loops_and_functions() {
    let s = parse("for (i = 0; i < 3; i++) { continue; } do { break; } while (0); while (x) { }")
        .unwrap();
    assert_eq!(s.stmts.len(), 3);
    assert!(
        parse("for (;;) { }").is_err(),
        "the condition of for is required"
    );
    let s =
        parse("int sum(int x1, int x2) { return x1 + x2; } void g() { return; } x = sum(1, 2);")
            .unwrap();
    assert!(matches!(&s.stmts[0].kind, StmtKind::FuncDef(f) if f.params.len() == 2));
    let s = parse("for (int i = 0; i < 3; i++) { }").unwrap();
    assert!(
        matches!(&s.stmts[0].kind, StmtKind::For { init: Some(i), .. } if matches!(i.kind, StmtKind::Decl(_)))
    );
}

#[test]
fn script_forms() {
    assert!(parse("").unwrap().stmts.is_empty());
    assert!(parse("{ x = 1; }").unwrap().braced);
    let s = parse("? { x = 1; }").unwrap();
    assert!(s.eval_command && s.braced);
    let d = parse("{ x = 1; } y = 2;").unwrap_err();
    assert!(d.message.contains("after the end of the script"), "{d:?}");
}

#[test]
fn builtin_call_shapes_are_checked() {
    let errs =
        parse_checked("x = printf(\"a\"); poi(1, 2); strlen(L\"w\"); y = eq(1, \"s\"); printf(x);")
            .unwrap_err();
    let msgs: Vec<&str> = errs.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        vec![
            "`printf` does not return a value",
            "`poi` takes 1 argument, but 2 were given",
            "`strlen` takes a narrow string here, not a wide one",
            "argument 2 of `eq` must be a value, not a string",
            "the format of `printf` must be a string literal",
        ]
    );
    assert!(parse_checked(
        "x = strlen(\"abc\"); y = wcscmp(L\"a\", @rcx); poi(@rax); printf(\"%d %s\", 1, @r15);"
    )
    .is_ok());
}

#[test]
fn spans_point_at_the_source() {
    let src = "x = @rax + 0x10;";
    let s = parse(src).unwrap();
    let StmtKind::Assign { value, targets } = &s.stmts[0].kind else {
        panic!()
    };
    assert_eq!(&src[targets[0].span.range()], "x");
    assert_eq!(&src[value.span.range()], "@rax + 0x10");
    let ExprKind::Binary { rhs, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(&src[rhs.span.range()], "0x10");
    assert_eq!(&src[s.stmts[0].span.range()], src);
}

#[test]
fn nested_unary_in_a_condition_is_accepted_with_a_portability_warning() {
    let src = "while (~~@rdi) { break; }";
    let s = parse(src).unwrap();
    let w = hvscript_grammar::portability::check(&s, src);
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("HyperDbg rejects"));
    let src = "while (~(~@rdi)) { break; }";
    assert!(hvscript_grammar::portability::check(&parse(src).unwrap(), src).is_empty());
}

#[test]
fn a_hex_word_where_a_name_is_expected_says_it_is_a_number() {
    for (src, word) in [
        ("int a = 1;", "a"),
        ("char c[4] = {0};", "c"),
        ("int acc = 1;", "acc"),
        ("struct S { int dead; };", "dead"),
    ] {
        let d = parse(src).unwrap_err();
        assert!(
            d.message.starts_with("unexpected number 0x"),
            "{src}: {d:?}"
        );
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains(&format!("`{word}` is made only of hex digits"))),
            "{src}: {d:?}"
        );
        assert!(
            d.help
                .as_deref()
                .is_some_and(|h| h.contains(&format!("`{word}_`"))),
            "{src}: {d:?}"
        );
        let renamed = src.replacen(&format!(" {word}"), &format!(" {word}_"), 1);
        assert!(
            parse(&renamed).is_ok(),
            "the suggested name parses: {renamed}"
        );
    }
    // A number written as a number gets no such note.
    let d = parse("int 10 = 1;").unwrap_err();
    assert!(d.notes.is_empty(), "{d:?}");
}

#[test]
fn a_span_inside_a_character_renders_without_panicking() {
    // Front ends shift and cut spans (includes, command lines); the renderer must cope.
    let d = hvscript_grammar::Diagnostic::error("here", Span::new(1, 2));
    let r = d.render("f.ds", "é = 1;");
    assert!(r.starts_with("f.ds:1:2: error: here"), "{r}");
}
