//! Exit throughput of hv-kvm on the demo guest: ns per exit and exits/s with no event,
//! with events and no script, with a trivial script, with a 50-line script, and with a
//! post-stage event (one extra `immediate_exit` re-entry per exit). Every IN and OUT of
//! the guest's user loop (CPL3) exits; the events watch both. The `monitor` rows watch
//! each vCPU's buffer page instead: every buffer access is then an MMIO exit too (ns per
//! exit counts the I/O exits and the MMIO exits together).
//!
//! `cargo bench -p hv-kvm --bench exits` (prints a table; skips without /dev/kvm).
//! `HV_KVM_BENCH_ITERS` sets the loop iterations per vCPU (default 20000).

use std::sync::Arc;
use std::time::Duration;

use hv_kvm::{StopReason, Vm, VmConfig};

fn fifty_line_script() -> String {
    let mut s = String::from("script {\n");
    s.push_str("  va = @rax; vb = 0; vc = 0;\n");
    for i in 0..48 {
        match i % 4 {
            0 => s.push_str(&format!("  vb = vb + va * {};\n", i + 1)),
            1 => s.push_str("  if (vb > 0x1000) { vc = vc + 1; } else { vc = vc - 1; }\n"),
            2 => s.push_str(&format!("  va = (va ^ 0x{:x}) & 0xffff;\n", i * 77)),
            _ => s.push_str("  vb = vb >> 1;\n"),
        }
    }
    s.push_str("  g_total = vc;\n}");
    s
}

fn measure(label: &str, events: &[String], vcpus: usize, iterations: u64) {
    let config = VmConfig {
        vcpus,
        iterations,
        msr_rounds: 1,
        duration: None,
        timeout: Duration::from_secs(120),
    };
    let vm = Vm::new(config, Arc::new(hv_core::NullSink)).expect("VM");
    for e in events {
        // Compiled as `hvscript run` does: the front end compiles, the VM loads.
        let target = hvscript_front::Target {
            platform: &hv_kvm::KvmPlatform,
            symbols: vm.symbols(),
            globals: vm.global_names(),
            values: Some(vm.globals().clone()),
        };
        let prepared = hvscript_front::prepare(e, &target, hvscript_front::Backend::Jit)
            .unwrap_or_else(|err| panic!("{e}: {err}"));
        vm.add_event(e, &prepared)
            .unwrap_or_else(|err| panic!("{e}: {err}"));
    }
    let report = vm.run().expect("run");
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
    }
    let exits = report.total_exits();
    let secs = report.elapsed.as_secs_f64();
    // Per vCPU: each thread handles its own exits, so wall time / (exits per vCPU).
    let per_vcpu = exits as f64 / vcpus as f64;
    println!(
        "{label:<34} vcpus={vcpus} exits={exits:>8} {:>8.0} ns/exit (per vCPU) {:>9.0} exits/s total",
        secs * 1e9 / per_vcpu,
        exits as f64 / secs
    );
}

fn main() {
    if let Err(why) = hv_kvm::kvm_available() {
        println!("skipping: {why}");
        return;
    }
    let iters: u64 = std::env::var("HV_KVM_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let both = |suffix: &str| {
        vec![
            format!("!ioin 510 {suffix}"),
            format!("!ioout 511 {suffix}"),
        ]
    };
    let fifty = fifty_line_script();
    for vcpus in [1, 2] {
        measure("no event", &[], vcpus, iters);
        measure("events, no script", &both(""), vcpus, iters);
        measure("trivial script", &both("script { x = 1; }"), vcpus, iters);
        measure("50-line script", &both(&fifty), vcpus, iters);
        measure(
            "post stage (trivial script)",
            &both("stage post script { x = 1; }"),
            vcpus,
            iters,
        );
        // `!monitor`: the buffer page of each vCPU leaves the RAM slot; every buffer
        // write (w: read-only slot) or read and write (r: no slot) is an MMIO exit.
        let monitor = |attr: &str, suffix: &str| -> Vec<String> {
            (0..vcpus)
                .map(|c| {
                    let buf = hv_kvm::boot::per_cpu(c) + hv_kvm::demo::field::BUFFER;
                    format!("!monitor {attr} {buf:x} l 1000 core {c} {suffix}")
                })
                .collect()
        };
        measure(
            "monitor w, trivial script",
            &monitor("w", "script { x = 1; }"),
            vcpus,
            iters,
        );
        measure(
            "monitor r, trivial script",
            &monitor("r", "script { x = 1; }"),
            vcpus,
            iters,
        );
        measure(
            "monitor r, post stage",
            &monitor("r", "stage post script { x = 1; }"),
            vcpus,
            iters,
        );
    }
}
