//! `hvscript check` on HyperDbg command files (issue 14, item 8): event commands, `?` and
//! `events`, checked without a VM, every error located in the file; `--sym`; and the same
//! stack limit as `eval` (item 14a).

mod common;

use common::*;

use std::path::PathBuf;

fn temp(name: &str, text: &str) -> PathBuf {
    common::temp("check-cmd", name, text)
}

fn check(args: &[&str], file: &std::path::Path) -> (Option<i32>, String) {
    let out = hvscript()
        .arg("check")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code(), err)
}

/// `file:line:col` of the first occurrence of `needle` in `text`.
fn at(file: &std::path::Path, text: &str, needle: &str) -> String {
    let i = text.find(needle).unwrap();
    let line = text[..i].matches('\n').count() + 1;
    let col = i - text[..i].rfind('\n').map_or(0, |p| p + 1) + 1;
    format!("{}:{line}:{col}", file.display())
}

#[test]
fn the_docs_event_commands_check_clean() {
    // Before: "unexpected number 0x3f8" for every one of them.
    let text = "// from HyperDbg's docs\n!ioin 0x3f8 sc on script { printf(\"IO port (in) has been access.\\n\"); }\n\
                !msrwrite 0xc000084 stage pre script {\n    @eax = @eax | (1 << 9);\n}\n\
                ? .my_counter = 0;\n!syscall script {\n    .my_counter = .my_counter + 1;\n}\nevents d 1\nevents\n";
    let f = temp("docs.txt", text);
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(&["-f"], &f);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn errors_are_located_in_the_file() {
    let text = "// probes\n!ioin 510 stage post script {\n    event_sc(1);\n}\n\
                !msrread c0000080 script { x = y; }\n!ioout 511 stage sometimes\nevents x 1\n? z = w;\n";
    let f = temp("bad.txt", text);
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(1), "{err}");
    for (needle, message) in [
        (
            "event_sc(1)",
            "error: `event_sc` in a script that only runs in the post stage",
        ),
        ("y; }", "error: `y` is read before it is assigned"),
        ("sometimes", "error: unknown stage `sometimes`"),
        ("x 1", "error: unknown `events` action `x`"),
        ("w;", "error: `w` is read before it is assigned"),
    ] {
        let want = format!("{}: {message}", at(&f, text, needle));
        assert!(err.contains(&want), "want {want}\n{err}");
    }
    // With the line and a caret under it.
    assert!(err.contains(" 3 |     event_sc(1);"), "{err}");
    assert!(err.contains("^"), "{err}");
}

#[test]
fn standard_input_and_detection() {
    let out = with_stdin(&["check", "-f", "-"], b"!cpuid script {\n  x = q;\n}\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>:2:7: error: `q` is read before it is assigned"),
        "{err}"
    );

    // A script whose first word is a debugger word is still a script.
    let f = temp("script.ds", "events = 1;\noutput = events + 1;\n");
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn symbols_reach_scripts() {
    let f = temp(
        "sym.txt",
        "!cpuid script { x = nt!Foo + 1; }\n? y = nt!Foo;\n",
    );
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nt!Foo"), "{err}");
    let (code, err) = check(&["--sym", "nt!Foo=fffff80000001000"], &f);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(&["--sym", "1Foo=1"], &f);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--sym 1Foo=1: `1Foo` is not a symbol name"),
        "{err}"
    );
    // Event arguments are expressions over the same symbols, bare names included.
    let f = temp(
        "sym-args.txt",
        "!monitor w counter counter+7
!epthook nt!Foo+4
",
    );
    let (code, err) = check(&["--sym", "counter=3000", "--sym", "nt!Foo=1000"], &f);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(&["--sym", "counter=3000"], &f);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("sym-args.txt:2:10: error: unknown symbol `nt!Foo`"),
        "{err}"
    );
}

#[test]
fn hv_kvm_refusals_are_warnings() {
    let f = temp("tsc.txt", "!tsc script { x = 1; }\n");
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(":1:1: warning: hv-kvm cannot raise !tsc"),
        "{err}"
    );
    let (_, err) = check(&["--no-warnings"], &f);
    assert!(err.is_empty(), "{err}");
}

#[test]
fn check_and_eval_agree_on_the_stack() {
    // Before: check passed this, and eval refused it when it ran.
    let big =
        "int a_[0n16000] = {0};\nint b_[0n16000] = {0};\nint c_[0n16000] = {0};\nc_[1] = 5;\n";
    let f = temp("big.ds", big);
    let (code, err) = check(&[], &f);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stack slots"), "{err}");
    let out = hvscript().args(["eval", "-f"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let eval_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        eval_err.lines().next(),
        err.lines().next(),
        "check and eval give the same error"
    );
    // What fits eval's stack passes both.
    let small = temp(
        "small.ds",
        "int a_[0n16000] = {0};\nint c_[0n16000] = {0};\nc_[1] = 5;\nprintf(\"%d\\n\", c_[1]);\n",
    );
    assert_eq!(check(&[], &small).0, Some(0));
    let out = hvscript()
        .args(["eval", "-f"])
        .arg(&small)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5\n");
    // An event script is held to hv-kvm's smaller stack.
    let ev = temp("ev.txt", "!cpuid script { long t[0n300] = {0}; }\n");
    let (code, err) = check(&[], &ev);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("more than the 256 a run has"), "{err}");
}

/// `check` mirrors hv-kvm's event limits; this keeps the copy honest: the largest event
/// array check accepts runs clean in the VM, one more element fails there (at run time
/// today, or refused at definition once hv-kvm applies the same check).
#[test]
fn check_and_the_vm_agree_on_the_event_stack() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipped: {why}");
        return;
    }
    let event = |n: u32| format!("!ioin 510 script {{ long t[0n{n}] = {{0}}; t[1] = 2; }}\n");
    // Binary search: check accepts 1 element and refuses 1024.
    let accepts = |n: u32| check(&["-f"], &temp("ev-n.txt", &event(n))).0 == Some(0);
    let (mut largest, mut refused) = (1, 1024);
    while refused - largest > 1 {
        let mid = (largest + refused) / 2;
        if accepts(mid) {
            largest = mid;
        } else {
            refused = mid;
        }
    }
    let errors = |n: u32| -> Result<u64, String> {
        let f = temp(&format!("ev-{n}.txt"), &event(n));
        let out = hvscript()
            .args(["run", "--vcpus", "1", "--iterations", "3", "-q", "-f"])
            .arg(&f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(2) {
            return Err(err);
        }
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("1  !ioin"))
            .unwrap_or_else(|| panic!("{text}\n{err}"));
        Ok(line.split_whitespace().last().unwrap().parse().unwrap())
    };
    assert_eq!(errors(largest), Ok(0), "{largest} elements");
    match errors(largest + 1) {
        Ok(n) => assert!(n > 0, "{} elements ran clean in the VM", largest + 1),
        Err(refused) => assert!(refused.contains("stack slots"), "{refused}"),
    }
}
