//! The control socket carries compiled code objects (issue 15): `attach` compiles on the
//! client side and sends the line with the object; the VM validates it (runtime), vets its
//! usage against hv-kvm's rules, and refuses a malformed or wrong-version object with a
//! located error while the guest runs on. Global variables are the VM's: a `?` from one
//! client and an event from another share `.x`; a binding compiled against names the VM
//! no longer has is refused ("recompile").

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hv_core::{EventKind, Platform, Prepared};
use hv_kvm::control::{
    bind, decode_error, encode_compiled, read_frame, serve, write_frame, Fanout, TAG_ERROR,
    TAG_OUTPUT, TAG_RESULT,
};
use hv_kvm::*;
use hvscript_abi::{PseudoReg, Register};
use hvscript_runtime::Limits;

/// Sends one frame and returns the reply (tag, text), skipping output frames.
fn ask(s: &mut UnixStream, frame: &[u8]) -> (u8, String) {
    write_frame(s, frame).unwrap();
    loop {
        let f = read_frame(s).expect("a reply");
        if f[0] != TAG_OUTPUT {
            return (f[0], String::from_utf8_lossy(&f[1..]).into_owned());
        }
    }
}

/// The code object's bytes and bindings for `line`, compiled as `attach` does.
fn compiled(s: &mut UnixStream, line: &str) -> (Vec<u8>, Vec<(String, u32)>) {
    let frame = client_frame(s, line, &mut |_| {});
    match hv_kvm::control::decode_client_frame(&frame).unwrap() {
        hv_kvm::control::ClientFrame::Command(_, p) => (p.code.expect("an object"), p.globals),
        other => panic!("{other:?}"),
    }
}

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hv-kvm-{name}-{}.sock", std::process::id()))
}

#[test]
fn malformed_truncated_flipped_and_other_version_objects_are_refused_and_the_guest_runs_on() {
    if !kvm_or_skip() {
        return;
    }
    let path = socket_path("objects");
    let fanout = Arc::new(Fanout::new(Arc::new(RecordingSink::default())));
    let mut cfg = config(2, 0);
    cfg.duration = Some(Duration::from_millis(1500));
    let vm = Vm::new(cfg, fanout.clone()).unwrap();
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);
    // Two vCPUs run it at once: the increment must be atomic for the count to be exact.
    let line = "!ioin 510 script { interlocked_increment(&.hits); }";
    let (report, results) = std::thread::scope(|s| {
        let server = s.spawn(|| serve(&vm, &fanout, listener, &stop));
        let client = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            let mut c = UnixStream::connect(&path).unwrap();
            // `.hits` must exist before the event reads it.
            let zero = client_frame(&mut c, "? .hits = 0;", &mut |_| {});
            let mut results = vec![ask(&mut c, &zero)];
            let (object, globals) = compiled(&mut c, line);
            let bad = |bytes: &[u8]| encode_compiled(line, Some(bytes), &globals);
            let truncated = &object[..object.len() / 2];
            let mut flipped = object.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0xff;
            flipped[mid + 1] ^= 0x5a;
            let mut other_version = object.clone();
            other_version[8..12]
                .copy_from_slice(&(hvscript_runtime::object::VERSION + 1).to_le_bytes());
            for frame in [bad(truncated), bad(&flipped), bad(&other_version)] {
                results.push(ask(&mut c, &frame));
            }
            // The same line with its valid object: accepted, on the same connection.
            results.push(ask(&mut c, &bad(&object)));
            std::thread::sleep(Duration::from_millis(300));
            results.push(ask(&mut c, b"events"));
            results
        });
        let report = vm.run().unwrap();
        stop.store(true, Ordering::SeqCst);
        let results = client.join().unwrap();
        server.join().unwrap().unwrap();
        (report, results)
    });
    let _ = std::fs::remove_file(&path);

    assert_eq!(results[0].0, TAG_RESULT, "{results:?}");
    // A truncated object loses its checksum's place; a flipped one fails it; another
    // version is named as such.
    for (i, what) in [(1, "checksum"), (2, "checksum"), (3, "format version")] {
        let (tag, text) = &results[i];
        assert_eq!(*tag, TAG_ERROR, "{results:?}");
        let e = decode_error(text).unwrap_or_else(|| panic!("not located: {text}"));
        assert!(e.message.contains("the code object was refused"), "{text}");
        assert!(e.message.contains(what), "case {i}: {text}");
        // Located at the script block of the line.
        assert_eq!(
            &line[e.start..e.end],
            " interlocked_increment(&.hits); ",
            "{text}"
        );
    }
    assert_eq!(results[4], (TAG_RESULT, "event 0x1 added".to_string()));
    // Only the valid object became an event.
    assert_eq!(results[5].1.lines().count(), 1, "{results:?}");

    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
    }
    let c = counters(&vm, 1);
    assert!(c.pre_runs > 0, "{c:?}");
    assert_eq!(c.script_errors, 0);
    // Every execution counted once, by the engine and by the script.
    assert_eq!(vm.global("hits"), Some(c.pre_runs));
}

#[test]
fn a_global_set_by_one_clients_question_mark_is_the_one_another_clients_event_changes() {
    if !kvm_or_skip() {
        return;
    }
    let path = socket_path("globals");
    let fanout = Arc::new(Fanout::new(Arc::new(RecordingSink::default())));
    let n = 40;
    let vm = Vm::new(config(1, n), fanout.clone()).unwrap();
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let server = s.spawn(|| serve(&vm, &fanout, listener, &stop));
        let mut a = UnixStream::connect(&path).unwrap();
        let mut b = UnixStream::connect(&path).unwrap();
        // Another name first, so `.x` is not simply slot 0 on both sides.
        let f = client_frame(&mut a, "? .other = 7; .x = 0n100;", &mut |_| {});
        assert_eq!(ask(&mut a, &f), (TAG_RESULT, String::new()));
        let f = client_frame(&mut b, "!ioout 511 script { .x = .x + 1; }", &mut |_| {});
        assert_eq!(ask(&mut b, &f).0, TAG_RESULT);
        let report = vm.run().unwrap();
        for v in &report.vcpus {
            assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
        }
        let f = client_frame(&mut a, r#"? printf("%d %d\n", .x, .other);"#, &mut |_| {});
        assert_eq!(ask(&mut a, &f), (TAG_RESULT, format!("{} 7\n", 100 + n)));
        stop.store(true, Ordering::SeqCst);
        drop((a, b));
        server.join().unwrap().unwrap();
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(vm.global("x"), Some(100 + n));
}

#[test]
fn a_binding_compiled_against_names_the_vm_no_longer_has_is_refused() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), Arc::new(RecordingSink::default())).unwrap();
    // Two clients compile against the same empty table; each gives its new name slot 0.
    let first = prepare(&vm, "? .a = 1;", Backend::Jit).unwrap();
    let second = prepare(&vm, "!ioin 510 script { .b = 2; }", Backend::Jit).unwrap();
    assert_eq!(first.globals, [("a".to_string(), 0)]);
    assert_eq!(second.globals, [("b".to_string(), 0)]);
    vm.command("? .a = 1;", &first).unwrap();
    let e = vm
        .add_event("!ioin 510 script { .b = 2; }", &second)
        .unwrap_err();
    assert!(e.message.starts_with(STALE_GLOBALS), "{e:?}");
    assert!(vm.engine().list().is_empty());
    // Compiled again against the VM's names, it goes to a free slot.
    let again = prepare(&vm, "!ioin 510 script { .b = 2; }", Backend::Jit).unwrap();
    vm.add_event("!ioin 510 script { .b = 2; }", &again)
        .unwrap();
    assert_eq!(
        vm.global_names(),
        [("a".to_string(), 0), ("b".to_string(), 1)]
    );
}

/// A platform that allows every register and pseudo-register: what a client that skips
/// the front end's checks compiles with.
struct Permissive;

impl Platform for Permissive {
    fn name(&self) -> &str {
        "anything"
    }
    fn refusal(&self, kind: EventKind) -> Option<&str> {
        KvmPlatform.refusal(kind)
    }
    fn register_refusal(&self, _: EventKind, _: Register, _: bool) -> Option<String> {
        None
    }
    fn pseudo_refusal(&self, _: PseudoReg) -> Option<String> {
        None
    }
    fn event_limits(&self) -> Limits {
        KvmPlatform.event_limits()
    }
}

#[test]
fn the_vm_vets_an_objects_register_use_itself() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), Arc::new(RecordingSink::default())).unwrap();
    for (line, name) in [
        ("!ioin 510 script { @cs = 8; }", "@cs"),
        ("!ioout 511 script { x = @dr7; }", "@dr7"),
        ("!ioout 511 script { x = $pid; }", "$pid"),
    ] {
        let target = hvscript_front::Target {
            platform: &Permissive,
            symbols: Default::default(),
            globals: vm.global_names(),
            values: None,
        };
        let prepared = hvscript_front::prepare(line, &target, Backend::Jit).unwrap();
        let e = vm.add_event(line, &prepared).unwrap_err();
        assert!(e.message.contains(name), "{line}: {e:?}");
        let script_at = line.find('{').unwrap() + 1;
        assert_eq!((e.start, e.end), (script_at, line.len() - 1), "{line}");
        // The front end, with hv-kvm's rules, refuses it before compiling.
        let err = prepare(&vm, line, Backend::Jit).unwrap_err();
        assert!(err.message().contains(name), "{line}: {err}");
    }
    assert!(vm.engine().list().is_empty());
}

#[test]
fn a_script_needs_its_compiled_form_and_a_compiled_form_needs_a_script() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), Arc::new(RecordingSink::default())).unwrap();
    let line = "!ioin 510 script { x = 1; }";
    let e = vm.add_event(line, &Prepared::default()).unwrap_err();
    assert!(e.message.contains("not compiled"), "{e:?}");
    assert_eq!(&line[e.start..e.end], " x = 1; ");
    let e = vm.command("? 1;", &Prepared::default()).unwrap_err();
    assert!(e.message.contains("not compiled"), "{e:?}");

    let compiled = prepare(&vm, line, Backend::Jit).unwrap();
    let e = vm.add_event("!ioin 510", &compiled).unwrap_err();
    assert!(e.message.contains("no script"), "{e:?}");
    let e = vm.command("events", &compiled).unwrap_err();
    assert!(e.message.contains("no script"), "{e:?}");
    // Bytes that are not a code object at all.
    let junk = Prepared {
        code: Some(b"not an object".to_vec()),
        ..Prepared::default()
    };
    let e = vm.add_event(line, &junk).unwrap_err();
    assert!(e.message.contains("the code object was refused"), "{e:?}");
    assert!(vm.engine().list().is_empty());
}
