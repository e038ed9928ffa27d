//! `hvscript check` as a user runs it: exit codes, located diagnostics on stderr,
//! standard input, several files.

mod common;

use common::*;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn the_examples_check_clean() {
    for name in ["efer-read.ds", "count-and-skip.ds", "fibonacci.ds"] {
        let out = hvscript()
            .arg("check")
            .arg(examples().join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_broken_script_exits_1_with_file_line_col_and_a_caret() {
    let dir = std::env::temp_dir().join(format!("hvscript-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.ds");
    std::fs::write(&bad, "x = 1;\ny = printf(\"%d\", x);\n").unwrap();
    let out = hvscript()
        .arg("check")
        .arg(examples().join("fibonacci.ds"))
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:5: error: `printf` does not return a value",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains(" 2 | y = printf(\"%d\", x);"), "{err}");
    assert!(err.contains("^^^"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn standard_input_and_missing_files() {
    let out = with_stdin(&["check", "-", "--ast"], b"if (@rax == 1) { print(@rbx); }");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(if (== @rax 0x1)\n  (print @rbx)\n)\n"
    );

    let out = hvscript()
        .args(["check", "/nonexistent/x.ds"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/x.ds: error:"));
}

#[test]
fn binary_garbage_is_an_error_not_a_panic() {
    let out = with_stdin(&["check", "-"], b"\xff\xfe\x00garbage");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn semantic_errors_are_reported_too() {
    let dir = std::env::temp_dir().join(format!("hvscript-check-sem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("sem.ds");
    std::fs::write(&f, "x = y + 1;\nprintf(\"%d %d\\n\", 1);\nbreak;\n").unwrap();
    let out = hvscript().arg("check").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":1:5: error: `y` is read before it is assigned"),
        "{err}"
    );
    assert!(
        err.contains(":2:8: error: printf's format has 2 specifiers but 1 argument follows"),
        "{err}"
    );
    assert!(err.contains(":3:1: error: `break` outside a loop"), "{err}");
    let out = hvscript()
        .arg("check")
        .arg("--syntax-only")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(&f, "event_sc(1);\n").unwrap();
    assert_eq!(
        hvscript()
            .arg("check")
            .arg(&f)
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        hvscript()
            .args(["check", "--post"])
            .arg(&f)
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
    std::fs::remove_dir_all(&dir).ok();
}
