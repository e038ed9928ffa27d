//! `hvscript run -- PROGRAM` whose event output (standard error) is not read for a while
//! (issue 17): the program's exits only record their scripts' output, the output thread
//! that writes it blocks on the full pipe, the ring fills up and messages are dropped, not
//! waited for. Once the pipe is read, every message is either there, whole, or counted in
//! the summary's `output: N messages dropped` line, as on the demo guest.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// `hvscript run` on `exe` with a hook on `work` that prints 100 messages per call (100 000
/// for 1000 calls: far more than a ring and a pipe hold), both output streams piped.
fn run_loud(exe: &std::path::Path) -> std::process::Child {
    let hook = r#"!epthook work script { for (i = 0; i < 0n100; i++) { printf("work(%d) %d\n", @rdi, i); } }"#;
    common::hvscript()
        .args(["run", "-e", hook, "--"])
        .arg(exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn messages_a_stalled_stderr_could_not_take_are_counted_in_the_summary() {
    let Some(exe) = common::static_program(
        "program_slow_stderr",
        "loud",
        r#"volatile long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(void) { for (long i = 0; i < 1000; i++) work(i); return 0; }
"#,
    ) else {
        return;
    };
    let mut child = run_loud(&exe);
    std::thread::sleep(Duration::from_secs(2));
    let err = common::read_stderr(&mut child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        &err[err.len().saturating_sub(2000)..]
    );
    let (output, summary) = err.split_at(err.find("events:\n").expect("a summary"));
    let mut lines = 0u64;
    for line in output.lines() {
        let whole = line
            .strip_prefix("work(")
            .and_then(|l| l.split_once(") "))
            .is_some_and(|(call, i)| call.parse::<u32>().is_ok() && i.parse::<u32>().is_ok());
        assert!(whole, "torn output line {line:?}");
        lines += 1;
    }
    assert!(summary.contains("pre 1000 post 0"), "{summary}");
    let dropped: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("output: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped messages counted: {summary}"));
    assert!(dropped > 0 && lines > 0, "{lines} lines, {dropped} dropped");
    assert_eq!(
        lines + dropped,
        100_000,
        "every message is printed or counted"
    );
}

/// The program also writes to its standard output, which is read: its writes wait for the
/// events' output before them only while that output moves. With standard error stalled,
/// the first write waits a little and the rest go at once: all 1000 lines are out long
/// before anyone reads standard error.
#[test]
fn a_stalled_stderr_does_not_hold_up_the_programs_own_writes() {
    let Some(exe) = common::static_program(
        "program_slow_stderr",
        "loud_writer",
        r#"#include <unistd.h>
volatile long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(void) { for (long i = 0; i < 1000; i++) { work(i); write(1, "w\n", 2); } return 0; }
"#,
    ) else {
        return;
    };
    let mut child = run_loud(&exe);
    let mut stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lines.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let new = buf[..n].iter().filter(|&&b| b == b'\n').count();
            counted.fetch_add(new, std::sync::atomic::Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    let before_stderr = lines.load(std::sync::atomic::Ordering::SeqCst);
    // Read to its end at last, so that the run can finish.
    common::read_stderr(&mut child);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        before_stderr, 1000,
        "the program's writes waited for a standard error nobody read"
    );
}
