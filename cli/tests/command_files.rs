//! Command files and command streams as users write them (issue 14, items 12 and 14): one
//! splitter for `run -f`, `attach` and `check`, with comments anywhere (braces and quotes
//! inside them do not count); `attach -f` and multi-line commands on standard input;
//! `eval -` reads standard input; `run --seconds -1` and `attach --help`.

mod common;

use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn temp(name: &str, text: &str) -> PathBuf {
    common::temp("cmdfiles", name, text)
}

/// Comments everywhere: between commands, after them, spanning lines, and inside scripts
/// holding `}`, `{` and `"`.
const COMMENTED: &str = "/* probes for the demo guest\n   } { \" */\n\
    !ioin 510 stage post /* after the read */ script {\n\
    \x20   // a } here does not end the script\n\
    \x20   /* nor { this \" one */\n\
    \x20   @eax = 7; // and \"quotes\" }\n\
    \x20   printf(\"}{\\\"\\n\");\n\
    } // trailing\n\
    # a shell-style comment line\n\
    !msrread 40001000 // no script\n";

#[test]
fn check_reads_commented_command_files() {
    let f = temp("commented.txt", COMMENTED);
    let out = hvscript().args(["check", "-f"]).arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // A mistake after the comments is still located on its own line.
    let bad = format!("{COMMENTED}!ioout 511 script {{\n  // }}\n  x = oops;\n}}\n");
    let f = temp("commented-bad.txt", &bad);
    let out = hvscript().args(["check", "-f"]).arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = bad[..bad.find("oops").unwrap()].matches('\n').count() + 1;
    assert!(
        err.contains(&format!(
            "{}:{line}:7: error: `oops` is read before it is assigned",
            f.display()
        )),
        "{err}"
    );
}

#[test]
fn eval_reads_standard_input() {
    let out = with_stdin(
        &["eval", "-"],
        b"x = 0n41;\nprintf(\"%d\\n\", x + 1);\ny = z;\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("<stdin>:3:5: error: `z` is read before it is assigned"),
        "{err}"
    );
    let out = with_stdin(&["eval", "-"], b"printf(\"%d\\n\", 0n42);");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}

#[test]
fn run_seconds_must_be_positive_with_our_message() {
    for value in ["-1", "0", "nan", "-0.5"] {
        let out = hvscript()
            .args(["run", "--seconds", value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: --seconds {}: the run time must be a positive number of seconds",
                value.parse::<f64>().unwrap()
            )),
            "{value}: {err}"
        );
    }
}

#[test]
fn attach_help_lists_only_what_the_vmm_accepts() {
    let out = hvscript().args(["attach", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for works in [
        "!EVENT",
        "events e|d|c ID|all",
        "-f, --file",
        "!epthook2",
        "? SCRIPT",
        "pause | g",
        "r [REG [= VALUE]]",
    ] {
        assert!(help.contains(works), "{works}: {help}");
    }
    // Refused over the socket today: not offered.
    for refused in ["events sc", "!tsc", "!vmcall"] {
        assert!(!help.contains(refused), "{refused}: {help}");
    }
}

/// A VM serving `--listen` for `seconds`; killed if the test ends early.
struct Listening {
    child: Option<Child>,
    socket: PathBuf,
}

impl Listening {
    fn start(name: &str, seconds: &str) -> Listening {
        let socket =
            std::env::temp_dir().join(format!("hvscript-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let child = hvscript()
            .args([
                "run",
                "--vcpus",
                "1",
                "-q",
                "--seconds",
                seconds,
                "--listen",
            ])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < end, "the VM never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Listening {
            child: Some(child),
            socket,
        }
    }

    /// Waits for the run to end; its standard output (the summary).
    fn finish(mut self) -> String {
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn attach(socket: &Path, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut child = hvscript()
        .arg("attach")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attach_reads_multi_line_commands_and_files() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipped: {why}");
        return;
    }
    let vm = Listening::start("attach", "4");
    // Standard input: a script over several lines, with comments, is one command.
    let (code, out, err) = attach(
        &vm.socket,
        &[],
        b"!ioin 510 stage post script {\n  // } not the end\n  @eax = 7;\n}\nevents\n",
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("event 0x1 added"), "{out}");
    assert!(out.contains("0x1  enabled"), "{out}");
    // -f FILE: the same splitter, comments and all.
    let f = temp("attach.txt", COMMENTED);
    let (code, out, err) = attach(&vm.socket, &["-f", f.to_str().unwrap()], b"");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("event 0x2 added") && out.contains("event 0x3 added"),
        "{out}"
    );
    let summary = vm.finish();
    assert!(summary.contains("events:"), "{summary}");
}

#[test]
fn run_reads_commented_command_files() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipped: {why}");
        return;
    }
    let f = temp("run.txt", COMMENTED);
    let out = hvscript()
        .args(["run", "--vcpus", "1", "--iterations", "20", "-q", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    // 20 reads of port 510, each made 7 by the script.
    assert!(text.contains("0x8c"), "{text}");
}
