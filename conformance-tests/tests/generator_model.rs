//! Checks the generator model against HyperDbg's public script test cases: it must reproduce
//! every `*-correct.txt` expected value and reject the `*-wrong.txt` records, and it must follow
//! C#'s tokenizing, precedence and bool/int typing rules on small handmade inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hvscript_conformance::generator_model::{
    evaluate, evaluate_as, format_expected, ErrorKind, ScriptKind,
};
use hvscript_conformance::suite_file::{
    list_suite_files, read_suite_file, suite_kind, Expected, SuiteKind,
};

fn suite_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/hyperdbg-suite/script-test-cases"
    ));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("skipped: the suite directory {} is absent", dir.display());
        None
    }
}

/// The suite files of one kind, or `None` (after printing why) when the suite is absent.
fn files_of(kind: SuiteKind) -> Option<Vec<PathBuf>> {
    let dir = suite_dir()?;
    let files = list_suite_files(&dir).expect("the suite directory lists");
    Some(
        files
            .into_iter()
            .filter(|f| suite_kind(f) == Some(kind))
            .collect(),
    )
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn model_reproduces_every_correct_value() {
    let Some(files) = files_of(SuiteKind::Correct) else {
        return;
    };
    let (mut total, mut matched) = (0usize, 0usize);
    let mut failures = Vec::new();
    for f in &files {
        let records = read_suite_file(f).unwrap_or_else(|e| panic!("{e}"));
        let mut here = 0;
        for r in &records {
            total += 1;
            let Expected::Value(want) = r.expected else {
                failures.push(format!(
                    "{}:{} expects $error$ in a -correct file",
                    name(f),
                    r.line
                ));
                continue;
            };
            match evaluate(&r.script) {
                Ok(v) if u64::from(v) == want => {
                    matched += 1;
                    here += 1;
                }
                Ok(v) => failures.push(format!(
                    "{}:{} case {}: model {} expected {:X}",
                    name(f),
                    r.line,
                    r.number,
                    format_expected(v),
                    want
                )),
                Err(e) => failures.push(format!(
                    "{}:{} case {}: model error ({e}), expected {:X}",
                    name(f),
                    r.line,
                    r.number,
                    want
                )),
            }
        }
        println!("{:<52} {here:>3}/{:<3}", name(f), records.len());
    }
    println!("correct files: {matched}/{total} expected values reproduced");
    for f in &failures {
        println!("  {f}");
    }
    assert!(failures.is_empty(), "{} mismatches", failures.len());
    assert_eq!(total, 57, "the notes count 57 -correct records");
}

#[test]
fn model_rejects_the_wrong_records() {
    let Some(files) = files_of(SuiteKind::Wrong) else {
        return;
    };
    let (mut total, mut rejected) = (0usize, 0usize);
    let mut reasons: BTreeMap<ErrorKind, usize> = BTreeMap::new();
    let mut accepted = Vec::new();
    // Set GENERATOR_MODEL_VERBOSE=1 to print the reason for every record.
    let verbose = std::env::var_os("GENERATOR_MODEL_VERBOSE").is_some();
    for f in &files {
        let records = read_suite_file(f).unwrap_or_else(|e| panic!("{e}"));
        let mut here = 0;
        for r in &records {
            total += 1;
            assert_eq!(r.expected, Expected::Error, "{}:{}", name(f), r.line);
            match evaluate(&r.script) {
                Err(e) => {
                    if verbose {
                        println!("  {}:{} case {}: {e}", name(f), r.line, r.number);
                    }
                    rejected += 1;
                    here += 1;
                    *reasons.entry(e.kind).or_default() += 1;
                }
                Ok(v) => accepted.push(format!(
                    "{}:{} case {} -> {}: {}",
                    name(f),
                    r.line,
                    r.number,
                    format_expected(v),
                    r.script.trim()
                )),
            }
        }
        println!("{:<52} {here:>3}/{:<3} rejected", name(f), records.len());
    }
    println!("wrong files: {rejected}/{total} rejected by the model");
    for (kind, n) in &reasons {
        println!("  {n:>5}  {}", kind.label());
    }
    for a in &accepted {
        println!("  accepted: {a}");
    }
    assert_eq!(total, 1476, "the notes count 1476 -wrong records");
    assert_eq!(rejected, total, "every -wrong record must be rejected");
}

// ----- handmade inputs -----

fn e(src: &str) -> Result<u32, hvscript_conformance::generator_model::ModelError> {
    evaluate(&format!("x = {src}; test_statement(x);"))
}

fn kind_of(r: Result<u32, hvscript_conformance::generator_model::ModelError>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {v:#x}"),
        Err(e) => e.kind,
    }
}

#[test]
fn literals_follow_the_generator_rewrite() {
    assert_eq!(e("17"), Ok(17), "bare digits are decimal");
    assert_eq!(e("0x11"), Ok(0x11));
    assert_eq!(e("0n17"), Ok(17));
    assert_eq!(e("0y101"), Ok(5));
    assert_eq!(e("@rax + @rdx + @rsp + @r13"), Ok(1 + 3 + 5 + 0xe));
    assert_eq!(e("$proc + $thread + $teb + $ip + $buffer"), Ok(0));
}

#[test]
fn c_precedence() {
    assert_eq!(e("1 + 2 << 3"), Ok(24));
    // `1 | (6 ^ (3 & 5))` = 7; left to right it would be 4.
    assert_eq!(e("1 | 6 ^ 3 & 5"), Ok(7));
    assert_eq!(
        e("2 == 2"),
        e("1 < 2"),
        "a bool result is an error either way"
    );
    assert_eq!(e("2 * 3 + 4"), Ok(10));
    assert_eq!(e("10 - 3 - 2"), Ok(5));
    assert_eq!(e("-2 * 3"), Ok(-6i32 as u32));
    assert_eq!(e("~0"), Ok(u32::MAX));
    assert_eq!(e("~~5"), Ok(5));
    assert_eq!(e("(1 + 2) * 3"), Ok(9));
    assert_eq!(e("+-3"), Ok(-3i32 as u32));
}

#[test]
fn shifts_mask_the_count_and_are_arithmetic() {
    assert_eq!(e("1 << 33"), Ok(2));
    assert_eq!(e("1 << -1"), Ok(0x8000_0000));
    assert_eq!(e("-16 >> 2"), Ok(-4i32 as u32));
    assert_eq!(e("@rbp >> -@r9"), Ok(0), "count -10 & 31 = 22");
}

#[test]
fn int32_results() {
    assert_eq!(e("-@rsi * @r8"), Ok(0xFFFF_FFC1));
    assert_eq!(format_expected(e("-@rsi * @r8").unwrap_or(0)), "FFFFFFC1");
}

#[test]
fn constant_overflow_is_a_compile_error() {
    assert_eq!(
        kind_of(e("(1 << 30) + (1 << 30)")),
        ErrorKind::ConstantOverflow
    );
    assert_eq!(kind_of(e("-(1 << 31)")), ErrorKind::ConstantOverflow);
    assert_eq!(e("1 << 31"), Ok(0x8000_0000), "shifts never overflow");
}

#[test]
fn bool_typing() {
    let c = |s: &str| evaluate(&format!(" if ({s})  {{ test_statement(0x7); }}"));
    assert_eq!(c("1 < 2"), Ok(7));
    assert_eq!(c("1 > 2"), Ok(0));
    assert_eq!(c("1 < 2 == 3 < 4"), Ok(7), "== between two bools is fine");
    assert_eq!(c("1 < 2 & 3 < 4"), Ok(7), "& between two bools is fine");
    assert_eq!(c("1 < 2 ^ 3 > 4"), Ok(7), "^ between two bools is fine");
    assert_eq!(c("!(1 > 2)"), Ok(7));
    assert_eq!(c("1 < 2 && 2 < 3 || 1 > 2"), Ok(7));
    assert_eq!(kind_of(c("1 ^ 2 == 3")), ErrorKind::TypeMismatch);
    assert_eq!(kind_of(c("1 == 2 == 3")), ErrorKind::TypeMismatch);
    assert_eq!(kind_of(c("1 < 2 < 3")), ErrorKind::TypeMismatch);
    assert_eq!(kind_of(c("!1")), ErrorKind::TypeMismatch);
    assert_eq!(kind_of(c("1 | 2")), ErrorKind::NonBoolCondition);
    assert_eq!(kind_of(c("1 && 2")), ErrorKind::TypeMismatch);
    assert_eq!(kind_of(e("1 < 2")), ErrorKind::ResultNotInt);
    assert_eq!(kind_of(e("-(1 < 2)")), ErrorKind::TypeMismatch);
}

#[test]
fn syntax_errors() {
    let c = |s: &str| kind_of(evaluate(&format!(" if ({s})  {{ test_statement(0x7); }}")));
    assert_eq!(c("1 <> 2"), ErrorKind::UnknownOperator);
    assert_eq!(c("1 >< 2"), ErrorKind::UnknownOperator);
    assert_eq!(c("1 ! 2"), ErrorKind::UnknownOperator);
    assert_eq!(c("1 ; 2"), ErrorKind::Syntax);
    assert_eq!(c("1 2"), ErrorKind::Syntax);
    assert_eq!(
        c("1 -2"),
        ErrorKind::NonBoolCondition,
        "`1 -2` is a subtraction"
    );
    assert_eq!(c("1 = 2"), ErrorKind::NotAssignable);
    assert_eq!(c("1 ((2"), ErrorKind::Syntax);
    assert_eq!(c("1 (2"), ErrorKind::Syntax);
    assert_eq!(c("1 )2"), ErrorKind::Syntax);
    assert_eq!(c("@rcx < 1"), ErrorKind::UnknownToken);
    assert_eq!(kind_of(e("++@r12")), ErrorKind::NotAssignable);
    assert_eq!(kind_of(e("1 + ++~@rdi")), ErrorKind::NotAssignable);
    assert_eq!(kind_of(e("--1")), ErrorKind::NotAssignable);
    assert_eq!(kind_of(e("- -1 +")), ErrorKind::Syntax);
}

#[test]
fn slash_becomes_a_comment() {
    let r = e("4 / 2");
    assert_eq!(kind_of(r.clone()), ErrorKind::CommentedOut);
    let reason = r.err().map(|e| e.reason).unwrap_or_default();
    assert!(reason.contains("`/`→`//`"), "{reason}");
    let w = evaluate(
        " while  (1 < 2)  { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; }  /* This is a comment */  }",
    );
    assert_eq!(kind_of(w), ErrorKind::CommentedOut);
}

#[test]
fn wrappers_declare_different_names() {
    // The if-chain wrapper has no `x` and no `tmp_counter`.
    assert_eq!(
        kind_of(evaluate(" if (1 < 2)  { test_statement(0x7); x = 1 ; }")),
        ErrorKind::UndeclaredName
    );
    // The loop wrapper has both.
    assert_eq!(
        evaluate(" while  (1 < 2)  { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } x = 3 ; }"),
        Ok(0x1000)
    );
    assert_eq!(
        kind_of(evaluate(" if (1 < 2)  { test_statement(0x7);  break; }")),
        ErrorKind::JumpOutsideLoop
    );
    assert_eq!(
        kind_of(evaluate(" while  (1 < 2)  { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } @rax = 1 ; }")),
        ErrorKind::NotAssignable
    );
}

#[test]
fn statements_and_loops() {
    let chain = " if (1 > 2)  { test_statement(0x1); } elsif (2 > 1) { test_statement(0x2); } else { test_statement(0x3); }";
    assert_eq!(evaluate(chain), Ok(2));
    let none = " if (1 > 2)  { test_statement(0x1); } elsif (2 > 3) { test_statement(0x2); }";
    assert_eq!(evaluate(none), Ok(0));
    let do_once = " do  {  tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } } while ( 1 > 2) ;";
    assert_eq!(evaluate(do_once), Ok(1));
    let never =
        " while  (1 > 2)  { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } }";
    assert_eq!(evaluate(never), Ok(0));
    let for_loop = " for (x= 5; 1 < 2;x--) { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } }";
    assert_eq!(evaluate(for_loop), Ok(0x1000));
    let for_decl = " for (; 1 < 2;@rax--) { tmp_counter = tmp_counter + 1; if (tmp_counter >= 0x1000) { break; } }";
    assert_eq!(kind_of(evaluate(for_decl)), ErrorKind::NotAssignable);
    let counted = " while  (x < 3)  { tmp_counter = tmp_counter + 1; x = x + 1 ; }";
    assert_eq!(evaluate(counted), Ok(3));
    let compound = " while  (x < 10)  { tmp_counter += 2; x += 1 ; if (x == 4) { continue; } tmp_counter -= 1; }";
    assert_eq!(evaluate(compound), Ok(20 - 9));
    // Errors in branches that never run still fail compilation.
    let dead = " if (1 > 2)  { test_statement(0x1); } else { test_statement(0x2 ^ 1 < 2); }";
    assert_eq!(kind_of(evaluate(dead)), ErrorKind::TypeMismatch);
}

#[test]
fn hostile_inputs_do_not_panic() {
    for s in [
        "",
        "x = ; test_statement(x);",
        " if (",
        " if ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
        " while (1 < 2) { }",
        " do { } while (1 < 2) ;",
        " for (;;) { }",
        "x = 99999999999999999999999; test_statement(x);",
        "x = 0x; test_statement(x);",
        " if (1 < 2) { test_statement(1, 2); }",
        " if (é < 2) { }",
        " if (1 < 2) { } else else",
        "x = /* test_statement(x);",
    ] {
        let _ = evaluate(s);
        let _ = evaluate_as(s, ScriptKind::Loop);
        let _ = evaluate_as(s, ScriptKind::Conditional);
        let _ = evaluate_as(s, ScriptKind::Expression);
    }
    let deep = format!(" if ({}1{} < 2) {{ }}", "(".repeat(5000), ")".repeat(5000));
    assert!(evaluate(&deep).is_err());
    let long_chain = format!("x = 1{}; test_statement(x);", " + 1".repeat(100_000));
    assert!(evaluate(&long_chain).is_err());
    let long_calls = format!("x = 1; test_statement(x){};", "(1)".repeat(100_000));
    assert!(evaluate(&long_calls).is_err());
    let deep_unary = format!("x = {}1; test_statement(x);", "-~".repeat(5000));
    assert!(evaluate(&deep_unary).is_err());
    // Loops with no guard stop at the step cap instead of hanging.
    assert_eq!(
        kind_of(evaluate(" while (1 < 2) { }")),
        ErrorKind::StepLimit
    );
}
