//! Unit checks of the runner's helpers: the semantic-suite activation regex and case cutting,
//! the model's rule variants used to compute causes, and the case header reader.

use hvscript_conformance::cases::{parse_header, run_case};
use hvscript_conformance::generator_model::{bare_digits_as_hex, evaluate_with, Semantics};
use hvscript_conformance::runner::{activated_cases, cut_case, explain, reported_cases};
use hvscript_conformance::Backend;

#[test]
fn activation_and_reports() {
    let src = "test_case3 = 1; test_case4=1; test_case5 = 0; test_case6 = 10;";
    assert_eq!(
        activated_cases(src).into_iter().collect::<Vec<_>>(),
        vec![3, 4]
    );
    let out = "test case 3 was successful\ntest case 4 was failed\n";
    assert!(reported_cases(out, "successful").contains(&3));
    assert!(reported_cases(out, "failed").contains(&4));
}

#[test]
fn cutting_a_case_keeps_lines_and_the_rest() {
    let src = "a1 = 1;\ndo {\n if (test_case7 != 1) { break; }\n printf(\"}\");\n}\nwhile (0);\nb1 = 2;\n";
    let cut = cut_case(src, 7).unwrap();
    assert_eq!(cut.lines().count(), src.lines().count());
    assert!(!cut.contains("test_case7"));
    assert!(cut.contains("b1 = 2;"));
    assert!(cut_case(src, 8).is_none());
}

#[test]
fn rule_variants() {
    assert_eq!(
        bare_digits_as_hex("x = 17 + 0n17 + @r8 + 0x17; test_statement(x);"),
        "x = 0x17 + 0n17 + @r8 + 0x17; test_statement(x);"
    );
    let s = "x = 17 + 1; test_statement(x);";
    assert_eq!(evaluate_with(s, Semantics::GENERATOR).unwrap(), 18);
    let hex = Semantics {
        hex_bare_digits: true,
        ..Semantics::GENERATOR
    };
    assert_eq!(evaluate_with(s, hex).unwrap(), 0x18);
    let wide = "x = 0x1 << 0x20; test_statement(x);";
    assert_eq!(evaluate_with(wide, Semantics::GENERATOR).unwrap(), 1);
    assert_eq!(evaluate_with(wide, Semantics::HYPERDBG).unwrap(), 1 << 32);
    assert_eq!(
        explain(wide, Some(1 << 32)).unwrap().describe(),
        vec!["64-bit arithmetic"]
    );
    let neg = "x = 0x1 << -0x1; test_statement(x);";
    assert!(evaluate_with(neg, Semantics::HYPERDBG).is_err());
    assert!(explain(neg, None).unwrap().shift_count_error);
}

#[test]
fn case_headers() {
    let h = parse_header("// regs: rax=0x10 rbx=5\n// stage: post\n// runs: 2\nx = 1;").unwrap();
    assert_eq!(h.regs.len(), 2);
    assert_eq!(h.stage.as_deref(), Some("post"));
    assert_eq!(h.runs, 2);
    let out = run_case(
        "// regs: rax=0x10\nprintf(\"%x\\n\", @rax);",
        Backend::Interp,
    )
    .unwrap();
    assert_eq!(out, "10\n");
    let out = run_case("v1 = 0;\nv2 = 1 / v1;", Backend::Interp).unwrap();
    assert_eq!(out, "2:6: error: division by zero\n");
}
