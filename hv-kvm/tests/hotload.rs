//! Hot-load over the control socket: events added, listed, disabled and cleared while
//! the guest runs; event output reaches the client; malformed frames get an error and
//! the VMM keeps running.

#![allow(clippy::vec_init_then_push)]

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hv_kvm::control::{
    bind, read_frame, serve, write_frame, Fanout, TAG_ERROR, TAG_OUTPUT, TAG_RESULT,
};
use hv_kvm::*;

/// Sends a command and returns the reply (tag, text), collecting output frames.
fn ask(s: &mut UnixStream, payload: &[u8], output: &mut String) -> (u8, String) {
    // Compiled on this side, as `hvscript attach` does.
    let payload = match std::str::from_utf8(payload) {
        Ok(line) => client_frame(s, line, &mut |f| {
            if f[0] == TAG_OUTPUT {
                output.push_str(&String::from_utf8_lossy(&f[1..]));
            }
        }),
        Err(_) => payload.to_vec(),
    };
    write_frame(s, &payload).unwrap();
    loop {
        let f = read_frame(s).expect("reply");
        let text = String::from_utf8_lossy(&f[1..]).into_owned();
        if f[0] == TAG_OUTPUT {
            output.push_str(&text);
        } else {
            return (f[0], text);
        }
    }
}

#[test]
fn events_are_added_and_removed_while_the_guest_runs() {
    if !kvm_or_skip() {
        return;
    }
    let path = std::env::temp_dir().join(format!("hv-kvm-hotload-{}.sock", std::process::id()));
    let sink = Arc::new(RecordingSink::default());
    let fanout = Arc::new(Fanout::new(sink.clone()));
    let mut cfg = config(2, 0);
    cfg.duration = Some(Duration::from_millis(1500));
    let vm = Vm::new(cfg, fanout.clone()).unwrap();
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);
    let (report, client_output, results) = std::thread::scope(|s| {
        let server = s.spawn(|| serve(&vm, &fanout, listener, &stop));
        let client = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            let mut c = UnixStream::connect(&path).unwrap();
            let mut out = String::new();
            let mut results = Vec::new();
            results.push(ask(
                &mut c,
                br#"!ioin 510 script { printf("hot %d\n", $core); }"#,
                &mut out,
            ));
            results.push(ask(&mut c, b"!ioout 511 sc on", &mut out));
            results.push(ask(&mut c, &[0xff, 0xfe, 0x00], &mut out));
            results.push(ask(&mut c, b"!vmcall", &mut out));
            results.push(ask(&mut c, b"!ioin 510 stage pst", &mut out));
            std::thread::sleep(Duration::from_millis(300));
            results.push(ask(&mut c, b"events d 1", &mut out));
            results.push(ask(&mut c, b"events c 2", &mut out));
            results.push(ask(&mut c, b"events", &mut out));
            // A frame over the limit: an error, then the server closes this connection.
            c.write_all_len_only(u32::MAX);
            let f = read_frame(&mut c).unwrap();
            results.push((f[0], String::from_utf8_lossy(&f[1..]).into_owned()));
            (out, results)
        });
        let report = vm.run().unwrap();
        stop.store(true, Ordering::SeqCst);
        let (out, results) = client.join().unwrap();
        server.join().unwrap().unwrap();
        (report, out, results)
    });
    let _ = std::fs::remove_file(&path);

    assert_eq!(results[0].0, TAG_RESULT, "{results:?}");
    assert!(results[0].1.contains("event 0x1 added"), "{results:?}");
    assert_eq!(results[1].0, TAG_RESULT, "{results:?}");
    assert_eq!(results[2].0, TAG_ERROR);
    assert!(results[2].1.contains("not UTF-8"), "{results:?}");
    assert_eq!(results[3].0, TAG_ERROR);
    assert!(
        results[3].1.contains("cannot be raised by hv-kvm"),
        "{results:?}"
    );
    assert_eq!(results[4].0, TAG_ERROR);
    // Located: the byte range of `pst` in the line (column 17), for the client's caret.
    assert!(results[4].1.starts_with("@16:19\n"), "{results:?}");
    assert!(results[4].1.contains("unknown stage"), "{results:?}");
    assert_eq!(
        results[5],
        (TAG_RESULT, "disabled event 0x1 (1)".to_string())
    );
    assert_eq!(
        results[6],
        (TAG_RESULT, "cleared event 0x2 (1)".to_string())
    );
    assert!(results[7].1.contains("0x1  disabled"), "{results:?}");
    assert!(!results[7].1.contains("0x2 "), "{results:?}");
    assert_eq!(results[8].0, TAG_ERROR);

    // The guest ran on, cleanly, the whole time.
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0));
    }
    let guest_in: u64 = report.vcpus.iter().map(|v| v.guest.in_count).sum();
    let c = counters(&vm, 1);
    assert!(
        c.pre_runs > 0 && c.pre_runs < guest_in,
        "{c:?} of {guest_in}"
    );
    // Output reached the client and the local sink alike.
    let local = sink.lines_of(1).len() as u64;
    assert_eq!(local, c.pre_runs);
    assert!(client_output.contains("hot "), "{client_output}");
    // While !ioout 511 sc on was live, the device missed OUTs the guest made.
    let missed: u64 = report
        .vcpus
        .iter()
        .map(|v| v.guest.out_count - v.devices.counter_writes)
        .sum();
    assert!(missed > 0);
}

trait LenOnly {
    fn write_all_len_only(&mut self, len: u32);
}

impl LenOnly for UnixStream {
    fn write_all_len_only(&mut self, len: u32) {
        use std::io::Write;
        self.write_all(&len.to_le_bytes()).unwrap();
    }
}
