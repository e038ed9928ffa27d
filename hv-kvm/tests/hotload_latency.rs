//! Hot-load latency: a command sent over the control socket until its event is armed (the
//! reply arrives, the event is in the published table), median of many, while the guest
//! runs. A figure for the closing notes, not a pass/fail bound (timings belong to benches):
//! `cargo test --release -p hv-kvm --test hotload_latency -- --ignored --nocapture`.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hv_kvm::control::{bind, read_frame, serve, write_frame, Fanout, TAG_OUTPUT, TAG_RESULT};
use hv_kvm::*;

fn ask(s: &mut UnixStream, line: &str) -> u8 {
    send(s, line.as_bytes(), line)
}

/// Sends a frame (`line` names it in messages) and returns the reply's tag.
fn send(s: &mut UnixStream, frame: &[u8], line: &str) -> u8 {
    write_frame(s, frame).unwrap();
    loop {
        let f = read_frame(s).unwrap();
        if f[0] != TAG_OUTPUT {
            if f[0] != TAG_RESULT {
                eprintln!("{line}: {}", String::from_utf8_lossy(&f[1..]));
            }
            return f[0];
        }
    }
}

#[test]
#[ignore]
fn command_sent_to_event_armed() {
    if !kvm_or_skip() {
        return;
    }
    const N: usize = 300;
    let path = std::env::temp_dir().join(format!("hv-kvm-latency-{}.sock", std::process::id()));
    let fanout = Arc::new(Fanout::new(Arc::new(hv_core::NullSink)));
    let mut cfg = config(1, 0);
    cfg.duration = Some(Duration::from_secs(60));
    let vm = Vm::new(cfg, fanout.clone()).unwrap();
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);
    let (mut times, mut client) = std::thread::scope(|s| {
        s.spawn(|| serve(&vm, &fanout, listener, &stop));
        let runner = s.spawn(|| vm.run().unwrap());
        let mut c = UnixStream::connect(&path).unwrap();
        let mut times = Vec::new();
        let mut client = Vec::new();
        for i in 0..N {
            let line = format!(
                "!ioout 511 script {{ if (@eax == 0x{i:x}) {{ printf(\"%x %d\\n\", @eax, $core); }} }}"
            );
            // Compiled on the client side first, as `attach` does: the figure is the VM's
            // part, from the compiled frame sent to the event armed.
            let t = Instant::now();
            let frame = client_frame(&mut c, &line, &mut |_| {});
            client.push(t.elapsed());
            let t = Instant::now();
            assert_eq!(send(&mut c, &frame, &line), TAG_RESULT);
            times.push(t.elapsed());
            assert_eq!(ask(&mut c, "events c all"), TAG_RESULT);
        }
        vm.request_stop();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        runner.join().unwrap();
        (times, client)
    });
    times.sort();
    client.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "hot-load, command sent -> event armed, {N} adds while the guest runs: median {:.0} us, p10 {:.0} us, p90 {:.0} us",
        us(times[N / 2]),
        us(times[N / 10]),
        us(times[N * 9 / 10])
    );
    // What `attach` adds before it sends: the session request and the compile (the VM
    // compiled in-process before issue 15, inside the figure above).
    println!(
        "client side, session request + compile: median {:.0} us, p10 {:.0} us, p90 {:.0} us",
        us(client[N / 2]),
        us(client[N / 10]),
        us(client[N * 9 / 10])
    );
}
