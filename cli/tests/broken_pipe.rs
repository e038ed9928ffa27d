//! Every command ends cleanly when its standard output goes away (`hvscript ... | head -1`):
//! no panic, a prompt exit, status 141 (as a tool killed by SIGPIPE; see cli/src/out.rs).
//! Each test reads from a real pipe and closes it early.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hvscript() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvscript"))
}

/// Spawns `cmd` with its standard output on a pipe, reads `lines` lines, closes the pipe
/// and waits (at most `limit`). Returns the exit status and standard error.
fn close_early(mut cmd: Command, lines: usize, limit: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "the command printed fewer than {lines} lines"
        );
    }
    drop(out);
    let status = wait(&mut child, limit);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the command did not exit within {limit:?} of its output going away");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_clean((status, err): (Option<i32>, String)) {
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status, Some(141), "{err}");
}

#[test]
fn eval() {
    // Far more than a pipe holds, so the write is still going when the pipe closes.
    let mut cmd = hvscript();
    cmd.args([
        "eval",
        "for (i = 0; i < 0n200000; i++) { printf(\"line %d\\n\", i); }",
    ]);
    assert_clean(close_early(cmd, 1, Duration::from_secs(30)));
}

#[test]
fn check() {
    let dir = std::env::temp_dir().join(format!("hvscript-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.ds");
    std::fs::write(&big, "x = 1;\n".repeat(40_000)).unwrap();
    let mut cmd = hvscript();
    cmd.args(["check", "--ast"]).arg(&big);
    assert_clean(close_early(cmd, 1, Duration::from_secs(30)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn conformance() {
    // The report comes at the end, all at once: close the pipe before it is written.
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance-tests/cases");
    let mut cmd = hvscript();
    cmd.arg("conformance").arg(cases);
    assert_clean(close_early(cmd, 0, Duration::from_secs(120)));
}

#[test]
fn run() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipped: {why}");
        return;
    }
    // The guest would run 60 s; with its output gone it must stop at once.
    let mut cmd = hvscript();
    cmd.args([
        "run",
        "--vcpus",
        "1",
        "--seconds",
        "60",
        "-e",
        "!ioin 510 script { printf(\"in %x\\n\", @rax); }",
    ]);
    let started = Instant::now();
    assert_clean(close_early(cmd, 1, Duration::from_secs(20)));
    assert!(started.elapsed() < Duration::from_secs(20));
}
