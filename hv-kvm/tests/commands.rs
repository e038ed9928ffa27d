//! Debugger commands on a real guest, as HyperDbg's docs write them, and no silent no-op
//! (issue 14): `?` sharing globals with events, expressions and symbols in event
//! arguments, output sources and `imm no`, register writes applied or refused,
//! pseudo-registers with a value or refused, `event_inject`, `microsleep`, and the event
//! kinds this KVM cannot raise refused with the reason.

mod common;

use std::io::Read;
use std::sync::Arc;

use common::*;
use hv_kvm::boot::per_cpu;
use hv_kvm::demo::field;
use hv_kvm::*;

const N: u64 = 5;

fn new_vm(vcpus: usize, iterations: u64) -> (Vm, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    (
        Vm::new(config(vcpus, iterations), sink.clone()).expect("VM setup"),
        sink,
    )
}

fn finish(vm: &Vm) -> RunReport {
    let report = vm.run().expect("run");
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
    }
    report
}

/// The rendered error of a refused command.
fn refused(vm: &Vm, line: &str) -> String {
    match vm.front_command(line) {
        Ok(t) => panic!("`{line}` was accepted: {t}"),
        Err(e) => e.render("test", line),
    }
}

#[test]
fn question_mark_shares_globals_with_every_event() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, _sink) = new_vm(1, N);
    // HyperDbg's counter idiom: without the `?`, the event reads a global nobody assigned.
    let line = "!ioout 511 script { .my_counter = .my_counter + 1; }";
    assert!(refused(&vm, line).contains("read before it is assigned"));
    assert_eq!(vm.front_command("? .my_counter = 0n10;").unwrap(), "");
    vm.front_command(line).unwrap();
    finish(&vm);
    assert_eq!(
        vm.front_command(r#"? printf("%d\n", .my_counter);"#)
            .unwrap(),
        format!("{}\n", 10 + N)
    );
    // `?` reads guest memory through the guest's page tables, and reports its errors.
    let iterations = per_cpu(0) + field::ITERATIONS;
    assert_eq!(
        vm.front_command(&format!(r#"? printf("%d\n", dq({iterations:x}));"#))
            .unwrap(),
        format!("{N}\n")
    );
    let e = refused(&vm, "? x = dq(0xffff800000000000);");
    assert!(e.contains("test:1:7") && e.contains("cannot read"), "{e}");
}

#[test]
fn event_arguments_are_expressions_over_symbols() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, sink) = new_vm(1, N);
    let buf = per_cpu(0) + field::BUFFER;
    vm.add_symbols([("demo!buffer0".to_string(), buf)]);
    let id = vm
        .front_command(r#"!monitor w buffer0 buffer0+fff script { printf("w %x\n", $context - demo!buffer0); }"#)
        .map(|t| u64::from_str_radix(t.trim_start_matches("event 0x").trim_end_matches(" added"), 16).unwrap())
        .unwrap();
    let e = refused(&vm, "!monitor w buffer0 bufer0+8");
    assert!(
        e.contains("unknown symbol `bufer0`") && e.contains("demo!buffer0"),
        "{e}"
    );
    finish(&vm);
    assert_eq!(counters(&vm, id).pre_runs, N);
    assert_eq!(sink.lines_of(id).len() as u64, N);
}

#[test]
fn output_sources_receive_their_events_messages() {
    if !kvm_or_skip() {
        return;
    }
    let dir = std::env::temp_dir();
    let file = dir.join(format!("hv-kvm-output-{}.txt", std::process::id()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tcp = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    let (vm, sink) = new_vm(1, N);
    for c in [
        format!("output create log file {}", file.display()),
        format!("output create net tcp 127.0.0.1:{port}"),
        "output open log".into(),
        "output open net".into(),
    ] {
        vm.front_command(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let e = refused(&vm, "!ioin 510 output {nolog} script { printf(\"x\"); }");
    assert!(e.contains("no output source named `nolog`"), "{e}");
    vm.front_command(r#"!ioin 510 output {log, net} script { printf("in %d\n", $core); }"#)
        .unwrap();
    let buffered = vm
        .front_command(r#"!ioout 511 imm no script { printf("out %x\n", @eax); }"#)
        .unwrap();
    assert!(buffered.contains("added"));
    finish(&vm);
    let expected: String = (0..N).map(|_| "in 0\n").collect();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
    assert_eq!(tcp.join().unwrap(), expected);
    // Not on the console; the buffered event's messages arrive at the end, in order.
    let console = sink.text();
    assert!(!console.contains("in 0"), "{console}");
    let outs: String = (0..N).map(|i| format!("out {i:x}\n")).collect();
    assert_eq!(console, outs);
    let listing = vm.front_command("output").unwrap();
    assert!(
        listing.contains(&format!("sent {N} dropped 0")),
        "{listing}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn register_writes_are_applied_or_refused_with_the_register_named() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, sink) = new_vm(1, N);
    // CR2 is written on each OUT and read back at the next IN: KVM_SET_SREGS applied it.
    let w = vm
        .front_command("!ioout 511 script { @cr2 = 0xc2000 + @eax; }")
        .unwrap();
    let r = vm
        .front_command(r#"!ioin 510 script { printf("%x ", @cr2); }"#)
        .unwrap();
    assert!(w.contains("added") && r.contains("added"));
    for (line, reg) in [
        ("!ioin 510 script { @cs = 0x10; }", "@cs"),
        ("!ioin 510 script { @tr = 0; }", "@tr"),
        ("!ioin 510 script { @dr7 = 0x400; }", "@dr7"),
        ("!ioin 510 script { x = @dr0; }", "@dr0"),
    ] {
        let e = refused(&vm, line);
        let col = line.find(reg).unwrap() + 1;
        assert!(e.contains(&format!("test:1:{col}")), "{e}");
        assert!(e.contains(reg), "{e}");
    }
    finish(&vm);
    let seen = sink.text();
    let expected: String = std::iter::once("0 ".to_string())
        .chain((0..N - 1).map(|i| format!("{:x} ", 0xc2000 + i)))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn pseudo_registers_have_a_value_or_are_refused() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, sink) = new_vm(1, 2);
    for (line, word) in [
        ("!ioin 510 script { printf(\"%x\", $pid); }", "$pid"),
        ("!ioin 510 script { x = $pname; }", "$pname"),
        ("!ioin 510 script { x = $teb; }", "$teb"),
        ("!ioin 510 pid 4 script { x = 1; }", "pid"),
    ] {
        let e = refused(&vm, line);
        let col = line.find(word).unwrap() + 1;
        assert!(e.contains(&format!("test:1:{col}")), "{word}: {e}");
    }
    vm.front_command(r#"!ioin 510 script { printf("%s %s|", $date, $time); }"#)
        .unwrap();
    finish(&vm);
    let today = hvscript_stdlib::LocalTime::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        0,
    );
    let date = String::from_utf8(today.date_string()[..10].to_vec()).unwrap();
    for stamp in sink.text().split('|').filter(|s| !s.is_empty()) {
        let (d, t) = stamp.split_once(' ').unwrap();
        assert_eq!(d, date);
        let b = t.as_bytes();
        assert_eq!((b.len(), b[2], b[5], b[8]), (12, b':', b':', b'.'), "{t}");
    }
}

#[test]
fn event_inject_reaches_the_guest_and_microsleep_is_bounded() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, sink) = new_vm(1, 3);
    vm.front_command("!ioout 511 script { event_inject(3, 3); }")
        .unwrap();
    let bp = vm
        .front_command(r##"!exception 3 sc on script { printf("#BP "); }"##)
        .unwrap();
    let sleep = vm
        .front_command("!ioin 510 script { microsleep(0n1000); }")
        .unwrap();
    assert!(bp.contains("added") && sleep.contains("added"));
    let report = finish(&vm);
    assert_eq!(sink.text(), "#BP #BP #BP ");
    assert_eq!(report.vcpus[0].exits.exceptions, 3);

    let (vm, sink) = new_vm(1, 1);
    vm.front_command("!ioin 510 script { microsleep(0n700000); microsleep(0n700000); }")
        .unwrap();
    let started = std::time::Instant::now();
    finish(&vm);
    let took = started.elapsed();
    assert!(
        took.as_millis() >= 1000 && took.as_millis() < 5000,
        "{took:?}"
    );
    assert!(
        sink.text().contains("at most one second"),
        "{}",
        sink.text()
    );
}

#[test]
fn kinds_this_kvm_cannot_raise_are_refused_with_the_reason() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, _) = new_vm(1, 1);
    assert!(refused(&vm, "!mode u").contains("mode changes happen inside KVM"));
    assert!(refused(&vm, "!trace step-in").contains("single-stepping works only"));
    assert!(refused(&vm, "!ioin 510 asm condition { nop }").contains("machine code"));
    assert!(vm.front_command("!syscall2").unwrap().contains("added"));
    assert!(vm.front_command("!sysret2").unwrap().contains("added"));
}
