//! `hvscript eval` as a user runs it.

use std::process::Command;

fn eval(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_what_the_script_prints() {
    let (code, out, _) = eval(&[
        "--reg",
        "rax=0n85",
        "printf(\"%x %d\\n\", @rax, @rax); print(@rax);",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "55 85\n55\n");
}

#[test]
fn memory_and_strings() {
    let (code, out, _) = eval(&[
        "--mem",
        "0x1000=48656c6c6f00",
        "printf(\"%s %d\\n\", 0x1000, strlen(0x1000));",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "Hello 5\n");
    let (code, _, err) = eval(&["x = poi(0x2000);"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("<command line>:1:5: error: poi"), "{err}");
}

#[test]
fn json_result_has_registers_flags_and_errors() {
    let (code, out, _) = eval(&[
        "--json",
        "--reg",
        "rbx=1",
        "@rbx = @rbx + 1; event_sc(1); printf(\"hi\\n\");",
    ]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["registers"]["rbx"], "0x2");
    assert_eq!(v["short_circuit"], true);
    assert_eq!(v["output_lines"][0], "hi");

    let (code, out, _) = eval(&["--json", "x = 1 / 0;"]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["message"], "division by zero");
    assert_eq!(v["errors"][0]["column"], 5);
}

#[test]
fn post_stage_reads_one_and_refuses_event_sc() {
    let (code, out, _) = eval(&[
        "--stage",
        "post",
        "if ($stage == 1) { printf(\"post %d\\n\", $event_stage); }",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "post 1\n"));
    let (code, _, err) = eval(&["--stage", "post", "event_sc(1);"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("only runs in the post stage"), "{err}");
}

#[test]
fn bad_options_are_errors_not_panics() {
    for args in [
        &["--reg", "rxx=1", "x = 1;"][..],
        &["--reg", "rax", "x = 1;"],
        &["--mem", "0x1000=123", "x = 1;"],
        &["--reg", "rax=zz", "x = 1;"],
        &["--pseudo", "stage=1", "x = 1;"],
        &["-f", "/nonexistent.ds"],
    ] {
        let (code, _, err) = eval(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            err.starts_with("error:") || err.contains(": error:"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn the_fuel_budget_stops_endless_loops() {
    let (code, _, err) = eval(&["--fuel", "1000", "while (1) { }"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("fuel exhausted"), "{err}");
}
