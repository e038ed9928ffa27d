//! `#include "file"` and `script { file:PATH }` (issue 14, item 11) through the commands
//! that read scripts: diagnostics point into the included file, a missing file is an error
//! at the include, relative paths resolve against the including file.

mod common;

use common::*;

use std::path::PathBuf;
use std::process::Command;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hvscript-inc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("lib")).unwrap();
    d
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

#[test]
fn eval_and_check_expand_includes_as_the_docs_write_them() {
    let d = dir("docs");
    // HyperDbg's docs: included files are `? { ... }` scripts defining functions.
    std::fs::write(
        d.join("lib/fibonacci.ds"),
        "? {\n    int myfibonacci(int var1) {\n        if (var1 == 0) {\n            return 0;\n        }\n        \
         if (var1 == 1) {\n            return 1;\n        }\n        return myfibonacci(var1 - 1) + myfibonacci(var1 - 2);\n    }\n}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("main.ds"),
        "? {\n    #include \"lib/fibonacci.ds\";\n    var = myfibonacci(9);\n    printf(\"%d\", var);\n}\n",
    )
    .unwrap();
    let (code, out, err) = run(hvscript().args(["eval", "-f"]).arg(d.join("main.ds")));
    assert_eq!((code, out.as_str()), (Some(0), "34"), "{err}");
    let (code, _, err) = run(hvscript().arg("check").arg(d.join("main.ds")));
    assert_eq!(code, Some(0), "{err}");
    // From another directory, relative to the including file, not the current directory.
    let (code, out, err) = run(hvscript()
        .current_dir(std::env::temp_dir())
        .args(["eval", "-f"])
        .arg(d.join("main.ds")));
    assert_eq!((code, out.as_str()), (Some(0), "34"), "{err}");
}

#[test]
fn errors_point_into_the_included_file() {
    let d = dir("errors");
    std::fs::write(
        d.join("lib/helper.ds"),
        "void helper() {\n    x = nope;\n}\n",
    )
    .unwrap();
    std::fs::write(d.join("main.ds"), "#include \"lib/helper.ds\"\nhelper();\n").unwrap();
    let want = format!(
        "{}:2:9: error: `nope` is read before it is assigned",
        d.join("lib/helper.ds").display()
    );
    for args in [&["check"][..], &["eval", "-f"]] {
        let (code, _, err) = run(hvscript().args(args).arg(d.join("main.ds")));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: want {want}\n{err}");
        assert!(err.contains(" 2 |     x = nope;"), "{err}");
    }
}

#[test]
fn a_missing_file_is_an_error_at_the_include() {
    let d = dir("missing");
    std::fs::write(d.join("main.ds"), "x = 1;\n#include \"lib/gone.ds\"\n").unwrap();
    for args in [&["check"][..], &["eval", "-f"]] {
        let (code, _, err) = run(hvscript().args(args).arg(d.join("main.ds")));
        assert_eq!(code, Some(1), "{err}");
        let want = format!("{}:2:10: error: cannot read `", d.join("main.ds").display());
        assert!(err.contains(&want), "want {want}\n{err}");
        assert!(err.contains("gone.ds"), "{err}");
    }
    // On the command line, relative to the current directory.
    let (code, _, err) = run(hvscript()
        .current_dir(&d)
        .args(["eval", "#include \"lib/none.ds\"\nx = 1;"]));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("<command line>:1:10: error: cannot read `lib/none.ds`"),
        "{err}"
    );
}

#[test]
fn cycles_are_errors() {
    let d = dir("cycle");
    std::fs::write(d.join("a.ds"), "#include \"b.ds\"\n").unwrap();
    std::fs::write(d.join("b.ds"), "x = 1;\n#include \"a.ds\"\n").unwrap();
    let (code, _, err) = run(hvscript().arg("check").arg(d.join("a.ds")));
    assert_eq!(code, Some(1));
    assert!(err.contains(":2:10: error: include cycle: "), "{err}");
}

#[test]
fn script_file_in_event_commands() {
    let d = dir("file");
    std::fs::write(
        d.join("lib/probe.ds"),
        "printf(\"%x\\n\", @rax);\nevent_sc(1);\n",
    )
    .unwrap();
    let cmds = d.join("probes.txt");
    std::fs::write(
        &cmds,
        "!ioin 510 script { file:lib/probe.ds }\n!ioout 511 stage post script {\n  file:lib/probe.ds\n}\n",
    )
    .unwrap();
    let (code, _, err) = run(hvscript().args(["check", "-f"]).arg(&cmds));
    assert_eq!(code, Some(1), "{err}");
    // The post-stage event refuses event_sc, located in the probe file it came from.
    let want = format!(
        "{}:2:1: error: `event_sc` in a script that only runs in the post stage",
        d.join("lib/probe.ds").display()
    );
    assert!(err.contains(&want), "want {want}\n{err}");
    assert_eq!(err.matches(": error:").count(), 1, "{err}");
    // A missing file is located at its path in the command.
    std::fs::write(&cmds, "!ioin 510 script { file:lib/nothing.ds }\n").unwrap();
    let (code, _, err) = run(hvscript().args(["check", "-f"]).arg(&cmds));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{}:1:25: error: cannot read `", cmds.display())),
        "{err}"
    );
}

#[test]
fn run_loads_included_scripts() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipped: {why}");
        return;
    }
    let d = dir("run");
    std::fs::write(
        d.join("lib/seven.ds"),
        "? {\n  void seven() { @eax = 7; }\n}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("events.txt"),
        "// the include resolves against this file's directory\n\
         !ioin 510 stage post script {\n  #include \"lib/seven.ds\"\n  seven();\n}\n",
    )
    .unwrap();
    let (code, out, err) = run(hvscript()
        .current_dir(std::env::temp_dir())
        .args(["run", "--vcpus", "1", "--iterations", "50", "-q", "-f"])
        .arg(d.join("events.txt")));
    assert_eq!(code, Some(0), "{out}\n{err}");
    // The guest adds what it reads from port 510: 50 reads of 7.
    assert!(out.contains("0x15e"), "{out}");
}
