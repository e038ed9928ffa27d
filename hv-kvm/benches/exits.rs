//! Exit overhead of hv-kvm on the demo guest, measured honestly on a shared machine: each
//! configuration is run against the same guest with no event, alternately (A B B A A B
//! ...: each pair's order alternates too), and reported as the median of the per-pair
//! ratios of ns per exit, with min and max.
//! Configurations: events with no script, a trivial script, `printf` with 3 arguments on
//! every exit, a 50-line script, a post-stage event (one extra `immediate_exit` re-entry
//! per exit), and `!monitor` rows (every buffer access of the guest's loop is then an MMIO
//! exit too; ns per exit counts the I/O and MMIO exits together).
//!
//! `cargo bench -p hv-kvm --bench exits` (skips without /dev/kvm).
//! `HV_KVM_BENCH_ITERS` sets the loop iterations per vCPU (default 20000),
//! `HV_KVM_BENCH_PAIRS` the pairs per configuration (default 10), `HV_KVM_BENCH_ONLY` a
//! comma-separated list of label beginnings (`trivial,printf`) to run only those rows.
//!
//! Event output goes to a sink that discards it, through the VM's output thread: the
//! vCPUs record printf calls in their rings and that thread formats them, so the ns per
//! exit count the recording and not the formatting (which hv-kvm never does on a vCPU).

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

/// One run: ns per exit per vCPU.
fn measure(events: &[String], vcpus: usize, iterations: u64) -> f64 {
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
    let per_vcpu = report.total_exits() as f64 / vcpus as f64;
    report.elapsed.as_secs_f64() * 1e9 / per_vcpu
}

/// `pairs` runs of no event and of `events`, alternately; prints the median pair ratio.
fn compare(label: &str, events: &[String], vcpus: usize, iterations: u64, pairs: usize) {
    let mut ratios = Vec::with_capacity(pairs);
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        // Every other pair runs the event first: a load that rises or falls during a pair
        // then biases half the ratios up and half down instead of all one way.
        let (a, b) = if pair % 2 == 0 {
            let a = measure(&[], vcpus, iterations);
            (a, measure(events, vcpus, iterations))
        } else {
            let b = measure(events, vcpus, iterations);
            (measure(&[], vcpus, iterations), b)
        };
        ratios.push(b / a);
        base.push(a);
        with.push(b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rm, bm, wm) = (median(&mut ratios), median(&mut base), median(&mut with));
    println!(
        "{label:<30} vcpus={vcpus} {wm:>7.0} ns/exit vs {bm:>7.0} with no event: x{rm:.3} \
         (min {:.3}, max {:.3}, {pairs} pairs)",
        ratios[0],
        ratios[ratios.len() - 1]
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
    let pairs: usize = std::env::var("HV_KVM_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let only: Vec<String> = std::env::var("HV_KVM_BENCH_ONLY")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let fifty = fifty_line_script();
    for vcpus in [1, 2] {
        let monitor = |attr: &str, suffix: &str| -> Vec<String> {
            (0..vcpus)
                .map(|c| {
                    let buf = hv_kvm::boot::per_cpu(c) + hv_kvm::demo::field::BUFFER;
                    format!("!monitor {attr} {buf:x} l 1000 core {c} {suffix}")
                })
                .collect()
        };
        let configs: Vec<(&str, Vec<String>)> = vec![
            ("events, no script", both("")),
            ("trivial script", both("script { x = 1; }")),
            (
                "printf with 3 arguments",
                both(r#"script { printf("%x %x %x\n", @rax, @rcx, @rdx); }"#),
            ),
            ("50-line script", both(&fifty)),
            (
                "post stage (trivial script)",
                both("stage post script { x = 1; }"),
            ),
            (
                "monitor w, trivial script",
                monitor("w", "script { x = 1; }"),
            ),
            (
                "monitor r, post stage",
                monitor("r", "stage post script { x = 1; }"),
            ),
        ];
        for (label, events) in &configs {
            if only.is_empty() || only.iter().any(|o| label.starts_with(o.as_str())) {
                compare(label, events, vcpus, iters, pairs);
            }
        }
    }
}
