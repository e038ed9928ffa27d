//! HyperDbg's command window (`hvscript attach` on a terminal), driven through a
//! pseudo-terminal against a demo guest served by `hvscript run --listen` (issue 18):
//! an event command and its output, Tab completion, a multi-line script whose `pause()`
//! stops the guest, `r`, `dq`, `u`, `g` and the guest going on, Ctrl-C breaking in, and
//! located errors after which the session goes on.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use expectrl::{ControlCode, Regex, Session};

struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_guest(socket: &std::path::Path) -> Option<Guest> {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return None;
    }
    let _ = std::fs::remove_file(socket);
    let child = Command::new(env!("CARGO_BIN_EXE_hvscript"))
        .args(["run", "-q", "--vcpus", "2", "--seconds", "120", "--listen"])
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guest = Guest(child);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(guest)
}

fn console(socket: &std::path::Path, history: &std::path::Path) -> Session {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hvscript"));
    cmd.arg("attach")
        .arg(socket)
        .env("HVSCRIPT_HISTORY", history)
        .env("TERM", "xterm");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(20)));
    p
}

#[test]
fn the_command_window_pauses_inspects_and_continues_the_guest() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("vm.sock");
    let history = dir.join("history");
    let _ = std::fs::remove_file(&history);
    let Some(_guest) = start_guest(&socket) else {
        return;
    };
    let mut p = console(&socket, &history);
    p.expect("console attached").unwrap();
    p.expect("hvscript> ").unwrap();

    // Tab completion: an event kind and a built-in function.
    typed(&mut p, "!mon\t");
    p.expect("!monitor").unwrap();
    p.send(ControlCode::NegativeAcknowledge).unwrap(); // Ctrl-U: clear the line
    typed(&mut p, "? interl\t");
    p.expect("interlocked_").unwrap();
    p.send(ControlCode::NegativeAcknowledge).unwrap();

    // An event command and its output.
    typed_line(&mut p, "? .n = 0; .k = 0;");
    typed_line(&mut p, "!ioout 511 script { if (.n == 0) { printf(\"first out on core %d\\n\", $core); } .n = .n + 1; }");
    // The event's first output may come before or after the command's reply.
    p.expect(Regex(
        "(?s)(event 0x1 added.*first out on core|first out on core.*event 0x1 added)",
    ))
    .unwrap();

    // A multi-line script: pause() stops the guest at the event.
    typed_line(&mut p, "!ioin 510 script {");
    typed_line(&mut p, "  .k = .k + 1;");
    typed_line(
        &mut p,
        "  if (.k == 0n50) { printf(\"fifty\\n\"); pause(); }",
    );
    typed_line(&mut p, "}");
    p.expect(Regex("(?s)fifty.*break: event 0x2 \\(pre stage"))
        .unwrap();

    // The registers of that exit, memory, disassembly.
    typed_line(&mut p, "r");
    p.expect(Regex("RIP=[0-9a-f]{16}")).unwrap();
    p.expect("CS=0023").unwrap();
    typed_line(&mut p, "dq @rsp l 10");
    p.expect(Regex("[0-9a-f]{8}`[0-9a-f]{8}  [0-9a-f]{8}`[0-9a-f]{8}"))
        .unwrap();
    typed_line(&mut p, "u @rip l 8");
    p.expect(Regex("[0-9a-f]{8}`[0-9a-f]{8}  [0-9a-f]+ +[a-z]"))
        .unwrap();
    // The guest is stopped: .n does not move.
    typed_line(&mut p, "? printf(\"n=%d\\n\", .n);");
    let first = captured(&mut p);
    std::thread::sleep(Duration::from_millis(300));
    typed_line(&mut p, "? printf(\"n=%d\\n\", .n);");
    assert_eq!(captured(&mut p), first, "the guest ran while paused");

    // Errors are located and the session goes on.
    typed_line(&mut p, "frob");
    p.expect("unknown command `frob`").unwrap();
    typed_line(&mut p, "dq 7fff00000000");
    p.expect("is not mapped").unwrap();

    // g: the guest goes on, its counters move.
    typed_line(&mut p, "g");
    p.expect("continuing").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    typed_line(&mut p, "? printf(\"n=%d\\n\", .n);");
    assert!(captured(&mut p) > first, "the guest did not continue");

    // Ctrl-C breaks in.
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("paused by the console").unwrap();
    typed_line(&mut p, "g");
    p.expect("continuing").unwrap();

    // Ctrl-D leaves; the history file has what was typed.
    p.send(ControlCode::EndOfTransmission).unwrap();
    p.expect(expectrl::Eof).unwrap();
    let h = std::fs::read_to_string(&history).unwrap();
    assert!(h.contains("dq @rsp l 10"), "{h}");
}

/// Types `text` as a user does, a key at a time (rustyline reads a burst of typeahead
/// while it also waits for event output only up to its first key until the next one).
fn typed(p: &mut Session, text: &str) {
    let mut buf = [0u8; 4];
    for c in text.chars() {
        p.send(c.encode_utf8(&mut buf).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Types `line` and Enter.
fn typed_line(p: &mut Session, line: &str) {
    typed(p, line);
    typed(p, "\r");
}

/// The number in the next `n=NUMBER` line.
fn captured(p: &mut Session) -> u64 {
    let c = p.expect(Regex("n=([0-9]+)")).unwrap();
    std::str::from_utf8(&c[1]).unwrap().parse().unwrap()
}
