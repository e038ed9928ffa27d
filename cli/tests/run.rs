//! `hvscript run` as a user runs it: commands of every kind in `-e`, and a summary that
//! says in words what happened to the guest.

mod common;

use std::process::Command;

fn run(args: &[&str]) -> Option<(Option<i32>, String, String)> {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return None;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .arg("run")
        .args(["--vcpus", "1"])
        .args(args)
        .output()
        .unwrap();
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn a_guest_that_dies_is_reported_in_words_and_hex() {
    let Some((code, out, _)) = run(&["--iterations", "2", "-e", "!ioout 511 script { @rip = 0; }"])
    else {
        return;
    };
    assert_eq!(code, Some(1));
    assert!(out.contains("vCPU 0 stopped: #PF at rip 0x"), "{out}");
    assert!(!out.contains("Exception {"), "{out}");
}

#[test]
fn question_marks_and_output_commands_run_in_order_with_events() {
    let log = std::env::temp_dir().join(format!("hvscript-run-output-{}.txt", std::process::id()));
    let create = format!("output create log file {}", log.display());
    let Some((code, out, err)) = run(&[
        "--iterations",
        "3",
        "-e",
        "? .seen = 0n100;",
        "-e",
        &create,
        "-e",
        "output open log",
        "-e",
        "!ioin 510 output {log} script { .seen = .seen + 1; printf(\"in %d\\n\", .seen); }",
        "-e",
        "? printf(\"start %d\\n\", .seen);",
    ]) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("output source `log` created"), "{out}");
    assert!(out.contains("start 100\n"), "{out}");
    assert!(!out.contains("in 10"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "in 101\nin 102\nin 103\n"
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn symbols_name_addresses_in_event_arguments() {
    let Some((code, out, err)) = run(&[
        "--iterations",
        "2",
        "--sym",
        "port=510",
        "-e",
        "!ioin port script { printf(\"%x\\n\", $context); }",
        "-e",
        "!ioout port+1",
    ]) else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("510\n510\n"), "{out}");
    let (_, _, err) = run(&["--iterations", "1", "--sym", "port=510", "-e", "!ioin prot"]).unwrap();
    assert!(
        err.contains("-e:1:7: error: unknown symbol `prot`"),
        "{err}"
    );
    assert!(err.contains("did you mean `port`?"), "{err}");
}

/// `hvscript run -- PROGRAM ARGS` (issue 16): a static C program built here runs as the
/// guest; its output, arguments, environment and exit status are the user's, it reads
/// only what `--allow-read` allows, and a fault ends it with Linux's signal status.
#[test]
fn a_static_program_runs_as_the_guest() {
    let Some(exe) = build_c(
        "cat1",
        r#"#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "r");
    char line[64] = "";
    if (f) fgets(line, sizeof line, f);
    printf("%s|%s|%s", f ? "opened" : "refused", getenv("HVS_TEST"), line);
    if (argc > 2) { volatile int *p = 0; return *p; }
    return f ? 0 : 7;
}
"#,
    ) else {
        return;
    };
    let dir = exe.parent().unwrap().to_path_buf();
    let data = dir.join("data.txt");
    std::fs::write(&data, "line one\n").unwrap();
    let run = |allow: bool, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvscript"));
        c.arg("run").env("HVS_TEST", "env-ok");
        if allow {
            c.arg("--allow-read").arg(&data);
        }
        c.arg("--").arg(&exe).arg(&data).args(extra);
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        run(true, &[]),
        (Some(0), "opened|env-ok|line one\n".into(), String::new())
    );
    let (code, out, _) = run(false, &[]);
    assert_eq!((code, out.as_str()), (Some(7), "refused|env-ok|"));
    let (code, _, err) = run(true, &["crash"]);
    assert_eq!(code, Some(128 + 11), "{err}");
    assert!(err.contains("SIGSEGV: #PF"), "{err}");
}

/// `!syscall` on a real program (issue 16): a post-stage script that sets `@rax = 0` for
/// `getuid` (102) makes the program print uid 0; `!syscall 1 sc on` silences its writes
/// and counts every skipped call; a pre-stage script that shortens a `write` changes what
/// is printed.
#[test]
fn syscall_events_stage_a_programs_system_calls() {
    let Some(exe) = build_c(
        "uid",
        r#"#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("uid %d\n", (int)getuid());
    fflush(stdout);
    write(1, "abcdef\n", 7);
    return 0;
}
"#,
    ) else {
        return;
    };
    let run = |events: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvscript"));
        c.arg("run");
        for e in events {
            c.args(["-e", e]);
        }
        let out = c.arg("--").arg(&exe).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["!syscall 0n102 stage post script { @rax = 0x2a; }"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("uid 42\n"), "{out}");
    // Skipped writes return the scripts' @rax: claiming every byte written (@rdx) makes
    // exactly the program's two writes; plain `sc on` leaves @rax = 1 (the number), one
    // byte "written" per call, and stdio retries the rest: silent all the same.
    let (code, out, err) = run(&["!syscall 1 sc on script { @rax = @rdx; }"]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(
        err.contains("pre 2 post 0 sc 2"),
        "both writes skipped and counted: {err}"
    );
    let (code, out, err) = run(&["!syscall 1 sc on"]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    let (_, out, err) = run(&["!syscall 1 script { if (@rdx == 7) { @rdx = 3; } }"]);
    assert!(out.ends_with("abc"), "{out} {err}");
    let (code, _, err) = run(&["!ioin 510"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no I/O exit comes from a program"), "{err}");
    // `!sysret` sees each call's result on its way back: every call but exit_group returns.
    let (code, out, err) = run(&[
        "!syscall",
        "!sysret script { if (@rax == 7) { @rax = 2; } }",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("abcdef\n"), "{out}");
    let count = |prefix: &str| -> u64 {
        let line = err.lines().find(|l| l.contains(prefix)).unwrap();
        line.split("pre ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(count("!sysret"), count("!syscall ") - 1, "{err}");
}

/// A program guest for these tests ([`common::static_program`]).
fn build_c(name: &str, source: &str) -> Option<std::path::PathBuf> {
    common::static_program("run_program", name, source)
}

/// What only the demo guest has is refused with a program, and `--allow-read` without one:
/// never parsed and ignored.
#[test]
fn options_of_the_other_guest_are_refused() {
    let Some(exe) = build_c("nothing", "int main(void) { return 0; }\n") else {
        return;
    };
    for extra in [
        &["--vcpus", "2"][..],
        &["--iterations", "5"],
        &["--seconds", "1"],
        &["--interp"],
        &["--hook-rounds", "1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
            .arg("run")
            .args(extra)
            .arg("--")
            .arg(&exe)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(extra[0]) && err.contains("demo guest only"),
            "{err}"
        );
    }
    // `?` runs before the program starts, sharing globals (its output on stderr: the
    // program's stdout is its own); `output` sources are refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args([
            "run",
            "-e",
            "? .x = 1;",
            "-e",
            "? printf(\"x+1=%d\\n\", .x + 1);",
            "--",
        ])
        .arg(&exe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.starts_with("x+1=2\n"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-e", "output create a file /tmp/never", "--"])
        .arg(&exe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("-e:1:1: error: output sources are the demo guest's"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "--allow-read", "/tmp", "--iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-read is for a program guest"));
}

/// Hooks and watches by symbol on a program (issue 16): `!epthook work` prints each call's
/// argument; a misspelt name is a located error with the close match; what cannot be done
/// on a program (an execute watch, a hook on data) is refused with the reason.
#[test]
fn hooks_and_watches_by_symbol() {
    let Some(exe) = build_c(
        "symbols",
        r#"#include <stdio.h>
volatile long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(void) {
    for (long i = 0; i < 3; i++) work(i);
    printf("counter=%ld\n", counter);
    return 0;
}
"#,
    ) else {
        return;
    };
    let run = |events: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvscript"));
        c.arg("run");
        for e in events {
            c.arg("-e").arg(e);
        }
        let out = c.arg("--").arg(&exe).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "!epthook work script { printf(\"work(%d)\\n\", @rdi); }",
        "!monitor w symbols!counter counter+7 stage post script { printf(\"counter <- %d\\n\", dq($context)); }",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "counter=3\n"), "{err}");
    assert!(
        err.contains("work(0)\ncounter <- 0\nwork(1)\ncounter <- 1\nwork(2)\ncounter <- 3\n"),
        "{err}"
    );
    let (code, _, err) = run(&["!epthook wrok"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("-e:1:10") && err.contains("work"), "{err}");
    let (code, _, err) = run(&["!monitor x work work+3"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("-e:1:10") && err.contains("!epthook instead"),
        "{err}"
    );
    let (code, _, err) = run(&["!epthook counter"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("-e:1:1: error: !epthook cannot hook")
            && err.contains("not in the program's executable code"),
        "{err}"
    );
}

/// `run --listen` with a program (issue 16): a client attaches while the program runs,
/// declares a global with `?`, hooks a function by name, and its script stops the
/// program's loop by writing the program's own variable; `events` lists the counts.
#[test]
fn a_program_takes_commands_over_the_socket_while_it_runs() {
    let Some(exe) = build_c(
        "live",
        r#"#include <stdio.h>
#include <time.h>
volatile long counter, stop;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(void) {
    struct timespec ms = {0, 1000000};
    long i = 0;
    while (!stop && i < 20000) { work(i++); nanosleep(&ms, 0); }
    printf("stopped=%ld\n", stop);
    return 0;
}
"#,
    ) else {
        return;
    };
    let socket = exe.with_file_name("live.sock");
    let _ = std::fs::remove_file(&socket);
    let run = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "--listen"])
        .arg(&socket)
        .arg("--")
        .arg(&exe)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !socket.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let attach = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .arg("attach")
        .arg(&socket)
        .args(["-e", "? .n = 0;"])
        .args([
            "-e",
            "!epthook work script { .n = .n + 1; if (.n == 0n50) { eq(live!stop, 1); } }",
        ])
        .args(["-e", "output create a file /tmp/never"])
        .output()
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let (run_out, run_err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let attach_out = String::from_utf8_lossy(&attach.stdout);
    let attach_err = String::from_utf8_lossy(&attach.stderr);
    assert!(
        attach_out.contains("event 0x1 added"),
        "{attach_out} {attach_err}"
    );
    assert!(
        attach_err.contains("output sources are the demo guest's"),
        "{attach_err}"
    );
    assert_eq!(out.status.code(), Some(0), "{run_err}");
    assert_eq!(run_out, "stopped=1\n", "{run_err}");
    assert!(run_err.contains("pre 50 post 0"), "{run_err}");
}

/// `run -l [GLOB]` (issue 18): the event kinds with their arguments, stages, and whether
/// each guest raises them, from the platforms' own rules.
#[test]
fn run_l_lists_event_kinds_and_where_they_are_raised() {
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-l", "sys*"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(text.starts_with("!syscall [NUMBER]\n"), "{text}");
    assert!(text.contains("!sysret"), "{text}");
    assert!(!text.contains("!monitor"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-l"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("!vmcall \n") || text.contains("!vmcall\n"),
        "{text}"
    );
    assert!(
        text.contains("demo     refused: VMCALL never reaches user space"),
        "{text}"
    );
    assert!(text.contains("program  refused: a program runs at CPL3, where IN and OUT fault"));
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-l", "nothing*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `event_trace_step()` and friends are refused where the event is defined, with the reason
/// (issue 18: no stepping from a paused state at CPL3 on this KVM).
#[test]
fn stepping_from_a_script_is_refused_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args([
            "run",
            "--iterations",
            "1",
            "-e",
            "!ioin 510 script { event_trace_step_out(); }",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("-e:1:20: error: event_trace_step_out() cannot step here"),
        "{err}"
    );
}
