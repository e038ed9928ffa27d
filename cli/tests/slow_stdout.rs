//! `hvscript run` with a standard output that does not keep up never slows the guest
//! (issue 17): scripts print on every exit of 2 vCPUs while the pipe behind standard
//! output is not read until the run is over. The vCPUs only record their output; the
//! output thread that writes it blocks on the full pipe, the rings fill up, and messages
//! are dropped and counted in the summary instead of holding the guest. The guest's
//! iteration rate is compared with runs whose output is read as it comes, alternately
//! (A B A B ...): the median of the per-pair ratios is printed, best against best is
//! asserted (the machine is shared).
//!
//! `HVSCRIPT_PIPE_PAIRS` sets the pairs (default 3); `cargo test --release -p hvscript
//! --test slow_stdout -- --nocapture` prints the figures.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SECONDS: &str = "2";
const IN: &str = r#"!ioin 510 script { printf("in %d %x\n", $core, @rip); }"#;
const OUT: &str = r#"!ioout 511 script { printf("out %d %x\n", $core, $context); }"#;

struct Measured {
    rate: f64,
    lines: usize,
    dropped: u64,
}

/// One run; the pipe is read as it fills, or only after `stall`.
fn measure(stall: Option<Duration>) -> Measured {
    let mut child = common::hvscript()
        .args([
            "run",
            "--vcpus",
            "2",
            "--seconds",
            SECONDS,
            "-e",
            IN,
            "-e",
            OUT,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "hvscript run did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = String::from_utf8(reader.join().unwrap()).unwrap();
    let err = common::read_stderr(&mut child);
    assert!(status.success(), "{status}: {err}\n{}", tail(&text));
    let (output, summary) = text.split_at(text.find("\nevents:\n").expect("a summary") + 1);
    // Whole lines only: a dropped message is dropped whole.
    for line in output.lines() {
        let mut words = line.split(' ');
        let ok = matches!(words.next(), Some("in" | "out"))
            && words.next().is_some_and(|c| c == "0" || c == "1")
            && words
                .next()
                .is_some_and(|v| u64::from_str_radix(v, 16).is_ok())
            && words.next().is_none();
        assert!(ok || line.is_empty(), "torn output line {line:?}");
    }
    let iterations: u64 = summary
        .lines()
        .skip_while(|l| !l.starts_with("guest:"))
        .skip(2)
        .take(2)
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    let secs: f64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("exits: "))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("the exits line");
    let dropped = summary
        .lines()
        .find_map(|l| l.strip_prefix("output: "))
        .map_or(0, |l| l.split(' ').next().unwrap().parse().unwrap());
    Measured {
        rate: iterations as f64 / secs,
        lines: output.lines().filter(|l| !l.is_empty()).count(),
        dropped,
    }
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(2000)..]
}

#[test]
fn a_standard_output_nobody_reads_does_not_slow_the_guest() {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return;
    }
    let pairs: usize = std::env::var("HVSCRIPT_PIPE_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    // Read only well after the guest's 2 s are over.
    let stall = Duration::from_millis(4500);
    let mut ratios = Vec::new();
    let (mut read_rates, mut stalled_rates) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let read = measure(None);
        let stalled = measure(Some(stall));
        println!(
            "pair {pair}: read as it comes {:.0} iterations/s, {} lines, {} dropped; \
             not read during the run {:.0} iterations/s, {} lines, {} dropped",
            read.rate, read.lines, read.dropped, stalled.rate, stalled.lines, stalled.dropped
        );
        assert!(stalled.dropped > 0, "the rings filled while nobody read");
        assert!(
            stalled.lines > 0,
            "what the rings held was written once the pipe was read"
        );
        ratios.push(stalled.rate / read.rate);
        read_rates.push(read.rate);
        stalled_rates.push(stalled.rate);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "iteration rate, pipe not read / read: median {median:.3} (min {:.3}, max {:.3}, {pairs} pairs)",
        ratios[0],
        ratios[ratios.len() - 1]
    );
    // The machine is shared: a pair can lose a run to someone else's load. Best against
    // best is what a consumer that slows the guest cannot pass.
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (best_read, best_stalled) = (best(&read_rates), best(&stalled_rates));
    assert!(
        best_stalled >= 0.7 * best_read,
        "the guest slowed down: {ratios:?}"
    );
}
