//! `run --json` (issue 18): every line is a JSON object (parsed with serde_json), event
//! messages carry their event, stage, core, pid and rip, and their count per event matches
//! the summary rows; a program guest's JSON goes to standard error with its pid.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn run_json_lines_parse_and_match_the_summary() {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "--json", "--vcpus", "2", "--iterations", "300"])
        .args(["-e", "? .n = 0;"])
        .args(["-e", "!ioin 510 script { printf(\"in %d\\n\", @rax); }"])
        .args([
            "-e",
            "!ioout 511 stage all script { if ($stage == 1) { printf(\"post\\n\"); } }",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = lines(&String::from_utf8(out.stdout).unwrap());
    let mut messages: BTreeMap<u64, u64> = BTreeMap::new();
    let mut summary: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut vcpus = 0;
    for v in &values {
        match v["type"].as_str().unwrap() {
            "event" => {
                let id = v["event"].as_u64().unwrap();
                *messages.entry(id).or_default() += 1;
                assert!(v["rip"].as_str().unwrap().starts_with("0x"));
                assert!(v["core"].as_u64().unwrap() < 2);
                assert!(v["pid"].is_null(), "the demo guest has no processes");
                assert!(v["time"].as_f64().unwrap() > 1.7e9);
                let stage = v["stage"].as_str().unwrap();
                assert!(
                    id == 1 && stage == "pre" || id == 2 && stage == "post",
                    "{v}"
                );
            }
            "summary" => {
                let id = v["event"].as_u64().unwrap();
                summary.insert(
                    id,
                    (v["pre"].as_u64().unwrap(), v["post"].as_u64().unwrap()),
                );
            }
            "vcpu" => {
                vcpus += 1;
                assert_eq!(v["stop"], "exit(0)");
            }
            "result" | "exits" => {}
            other => panic!("unknown line type {other}"),
        }
    }
    assert_eq!(vcpus, 2);
    assert_eq!(summary[&1].0, 600, "300 iterations on each of 2 vCPUs");
    assert_eq!(messages[&1], summary[&1].0, "one message per pre execution");
    assert_eq!(
        messages[&2], summary[&2].1,
        "one message per post execution"
    );
}

#[test]
fn a_programs_json_has_its_pid_and_its_ending() {
    let Some(exe) = common::static_program(
        "json",
        "pid",
        "#include <unistd.h>\nint main(void) { return getpid() ? 3 : 4; }\n",
    ) else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args([
            "run",
            "--json",
            "-e",
            "!syscall 0n39 stage post script { printf(\"%d\\n\", @rax); }",
            "--",
        ])
        .arg(&exe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        out.stdout.is_empty(),
        "the program's standard output stays its own"
    );
    let values = lines(&String::from_utf8(out.stderr).unwrap());
    let event = values.iter().find(|v| v["type"] == "event").unwrap();
    let pid = event["pid"].as_u64().unwrap();
    assert_eq!(event["text"], format!("{pid}\n"));
    assert_eq!(event["stage"], "post");
    let end = values.iter().find(|v| v["type"] == "program").unwrap();
    assert_eq!(
        (end["status"].as_i64(), end["ending"].as_str()),
        (Some(3), Some("exit(3)"))
    );
    let summary = values.iter().find(|v| v["type"] == "summary").unwrap();
    assert_eq!(summary["post"], 1);
}

#[test]
fn attach_json_lines_parse() {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("json");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("attach.sock");
    let _ = std::fs::remove_file(&socket);
    let mut run = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-q", "--seconds", "20", "--listen"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !socket.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .arg("attach")
        .arg(&socket)
        .args(["--json", "--follow", "0.5"])
        .args(["-e", "!ioin 510 script { printf(\"x\\n\"); }", "-e", "frob"])
        .output()
        .unwrap();
    let _ = run.kill();
    let _ = run.wait();
    let values = lines(&String::from_utf8(out.stdout).unwrap());
    assert!(values
        .iter()
        .any(|v| v["type"] == "result" && v["text"] == "event 0x1 added"));
    assert!(values
        .iter()
        .any(|v| v["type"] == "error" && v["text"].as_str().unwrap().contains("unknown command")));
    let events = values.iter().filter(|v| v["type"] == "event").count();
    assert!(events > 10, "{values:?}");
    assert!(values
        .iter()
        .filter(|v| v["type"] == "event")
        .all(|v| v["event"] == 1 && v["text"] == "x\n"));
}
