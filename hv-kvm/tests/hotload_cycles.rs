//! Hot-load under a running guest, counted exactly: 1 000 events are added and cleared
//! over the control socket (as `hvscript attach` does) while two vCPUs run the demo loop.
//! Two permanent events must see every IN and OUT the guest made (its own counters), and
//! every transient event must have printed exactly as many lines as its counters say:
//! nothing lost, nothing doubled.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hv_core::Event;
use hv_kvm::control::{bind, read_frame, serve, write_frame, Fanout, TAG_OUTPUT, TAG_RESULT};
use hv_kvm::*;

/// Sends one command line and returns the result text (event output frames skipped).
fn command(s: &mut UnixStream, line: &str) -> String {
    let frame = client_frame(s, line, &mut |_| {});
    write_frame(s, &frame).unwrap();
    loop {
        let f = read_frame(s).expect("a reply");
        if f[0] != TAG_OUTPUT {
            assert_eq!(
                f[0],
                TAG_RESULT,
                "{line}: {}",
                String::from_utf8_lossy(&f[1..])
            );
            return String::from_utf8_lossy(&f[1..]).into_owned();
        }
    }
}

const CYCLES: usize = 1000;

#[test]
fn a_thousand_add_remove_cycles_lose_no_trigger() {
    if !kvm_or_skip() {
        return;
    }
    let sink = Arc::new(RecordingSink::default());
    let fanout = Arc::new(Fanout::new(sink.clone()));
    let mut cfg = config(2, 0);
    cfg.duration = Some(Duration::from_secs(50));
    let vm = Vm::new(cfg, fanout.clone()).unwrap();
    let ins = vm.front_add_event("!ioin 510").unwrap();
    let outs = vm
        .front_add_event("!ioout 511 script { n = $context; }")
        .unwrap();
    let path = std::env::temp_dir().join(format!("hv-kvm-cycles-{}.sock", std::process::id()));
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);

    let (report, transients, elapsed) = std::thread::scope(|s| {
        let server = s.spawn(|| serve(&vm, &fanout, listener, &stop));
        let mutator = s.spawn(|| {
            let mut c = UnixStream::connect(&path).unwrap();
            let start = Instant::now();
            let mut kept: Vec<Arc<Event>> = Vec::with_capacity(CYCLES);
            for i in 0..CYCLES {
                let stage = ["pre", "post", "all"][i % 3];
                let port = ["510", "511"][i % 2];
                let kind = ["!ioin", "!ioout"][(i / 2) % 2];
                let reply = command(
                    &mut c,
                    &format!(
                        "{kind} {port} stage {stage} script {{ printf(\"t%d\\n\", $stage); }}"
                    ),
                );
                let id = reply
                    .strip_prefix("event 0x")
                    .and_then(|r| r.strip_suffix(" added"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
                // Holding the event keeps its counters after it is cleared, so exits that
                // still run on an older table are counted where they belong.
                kept.push(vm.engine().event(id).unwrap());
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                command(&mut c, &format!("events c {id:x}"));
            }
            let elapsed = start.elapsed();
            vm.request_stop();
            (kept, elapsed)
        });
        let report = vm.run().unwrap();
        let (kept, elapsed) = mutator.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap().unwrap();
        (report, kept, elapsed)
    });
    let _ = std::fs::remove_file(&path);

    let guest_in: u64 = report.vcpus.iter().map(|v| v.guest.in_count).sum();
    let guest_out: u64 = report.vcpus.iter().map(|v| v.guest.out_count).sum();
    assert_eq!(
        counters(&vm, ins).pre_runs,
        guest_in,
        "every IN the guest made raised !ioin once"
    );
    assert_eq!(
        counters(&vm, outs).pre_runs,
        guest_out,
        "every OUT the guest made raised !ioout once"
    );
    assert!(guest_in > 0 && guest_out > 0);

    let mut transient_runs = 0;
    for e in &transients {
        let c = e.counters.values();
        let printed = sink.lines_of(e.id).len() as u64;
        assert_eq!(
            c.pre_runs + c.post_runs,
            printed,
            "event {}: counters vs its output",
            e.id
        );
        assert!(c.pre_runs + c.post_runs <= guest_in + guest_out);
        transient_runs += printed;
    }
    assert_eq!(transients.len(), CYCLES);
    assert!(
        transient_runs > 0,
        "the transient events ran while they existed"
    );
    println!(
        "{CYCLES} add/clear cycles over the socket in {elapsed:?} while the guest made {guest_in} INs and {guest_out} OUTs; \
         {transient_runs} transient executions, all accounted for"
    );
}
