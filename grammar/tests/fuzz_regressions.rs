//! Inputs found by `cargo fuzz run parse` (fuzz/README.md) that crashed the front end, and
//! their neighbours. Each runs the whole front end as the fuzz target does.

use hvscript_grammar::{parse_checked, portability, print, Diagnostic};

/// What the fuzz target does: parse, then render every diagnostic or print the tree and run
/// the portability pass. Returns the diagnostics.
fn front_end(src: &str) -> Result<(), Vec<Diagnostic>> {
    match parse_checked(src) {
        Ok(script) => {
            let _ = print::script(&script);
            for w in portability::check(&script, src) {
                let _ = w.render("fuzz.ds", src);
            }
            Ok(())
        }
        Err(ds) => {
            for d in &ds {
                let _ = d.render("fuzz.ds", src);
            }
            Err(ds)
        }
    }
}

fn rejected_as_too_deep(src: &str) -> Diagnostic {
    let ds = front_end(src).expect_err("a too deeply nested script must be rejected");
    assert_eq!(ds.len(), 1, "{ds:?}");
    let d = ds.into_iter().next().unwrap();
    assert!(d.message.contains("nested more than"), "{}", d.message);
    d
}

// Found by the fuzzer: `x = ~~~~...~1;` with ~10,000 `~` overflowed the stack in
// `print::expr` (and, deeper, in `call_shapes`, in dropping the tree, and in every later pass
// over it). Every compound expression node is now checked against a nesting limit as the
// parser builds it, so no tree deeper than the limit exists.

#[test]
fn unary_chain() {
    let src = format!("x = {}1;", "~".repeat(100_000));
    let d = rejected_as_too_deep(&src);
    // Located on the innermost node that went over the limit, inside the chain.
    assert!((d.span.start as usize) < src.len() && d.span.end as usize <= src.len());
}

#[test]
fn unary_chain_in_a_condition() {
    rejected_as_too_deep(&format!("if ({}1) {{ }}", "- ".repeat(50_000)));
    rejected_as_too_deep(&format!("while ({}1) {{ }}", "!".repeat(50_000)));
}

#[test]
fn binary_chain() {
    rejected_as_too_deep(&format!("x = 1{};", "+1".repeat(100_000)));
    rejected_as_too_deep(&format!("if (1{} == 2) {{ }}", "*1".repeat(100_000)));
}

#[test]
fn postfix_chains() {
    rejected_as_too_deep(&format!("x = s{};", "[0]".repeat(50_000)));
    rejected_as_too_deep(&format!("x = s{};", ".m".repeat(50_000)));
    rejected_as_too_deep(&format!("x = s{};", "->m".repeat(50_000)));
}

#[test]
fn nested_calls() {
    let n = 50_000;
    rejected_as_too_deep(&format!("x = {}@rax{};", "poi(".repeat(n), ")".repeat(n)));
    rejected_as_too_deep(&format!("print({}1{});", "g(".repeat(n), ")".repeat(n)));
}

#[test]
fn nested_blocks() {
    let n = 100_000;
    let d = rejected_as_too_deep(&format!("{}{}", "if (1) {".repeat(n), "}".repeat(n)));
    assert_eq!(&"if (1) {".repeat(n)[d.span.range()], "{");
    rejected_as_too_deep(&format!("{}{}", "while (1) {".repeat(n), "}".repeat(n)));
}

#[test]
fn parentheses_alone_build_no_depth() {
    let n = 100_000;
    assert!(front_end(&format!("x = {}1{};", "(".repeat(n), ")".repeat(n))).is_ok());
}

#[test]
fn deep_but_within_the_limit_still_parses() {
    assert!(front_end(&format!("x = 1{};", "+1".repeat(200))).is_ok());
    assert!(front_end(&format!("x = {}1;", "~".repeat(200))).is_ok());
    assert!(front_end(&format!("if ({}1) {{ }}", "~".repeat(200))).is_ok());
    assert!(front_end(&format!(
        "x = {}@rax{};",
        "poi(".repeat(200),
        ")".repeat(200)
    ))
    .is_ok());
    assert!(front_end(&format!("{}{}", "if (1) {".repeat(200), "}".repeat(200))).is_ok());
}
