//! The demo guest boots in long mode on several vCPUs, runs its kernel part (MSRs at
//! CPL0) and its user loop (port I/O at CPL3), and its own counters match the devices.

mod common;

use common::*;
use hv_kvm::*;

#[test]
fn demo_guest_runs_on_two_vcpus_without_events() {
    if !kvm_or_skip() {
        return;
    }
    let (_vm, _, report, _) = run_with(config(2, 500), &[]);
    assert_eq!(report.vcpus.len(), 2);
    for v in &report.vcpus {
        let g = v.guest;
        eprintln!("{v:?}");
        assert_eq!(g.iterations, 500);
        assert_eq!((g.in_count, g.out_count, g.buf_ops), (500, 500, 500));
        assert_eq!(v.devices.data_reads, 500);
        assert_eq!(v.devices.counter_writes, 500);
        assert_eq!(g.in_sum, v.devices.data_sum);
        assert_eq!(g.buf_sum, g.in_sum);
        assert_eq!(g.out_sum, v.devices.counter_sum);
        assert_eq!(g.out_sum, (0..500).sum::<u64>());
        // 3 rounds of read + (write value+1), then a final read.
        assert_eq!((g.rdmsr_count, g.wrmsr_count), (4, 3));
        assert_eq!(g.msr_first, demo_msr_initial(v.cpu));
        assert_eq!(g.msr_final, demo_msr_initial(v.cpu) + 3);
        assert_eq!(v.demo_msr, demo_msr_initial(v.cpu) + 3);
        assert_eq!((v.exits.rdmsr, v.exits.wrmsr), (4, 3));
    }
}

#[test]
fn a_duration_asks_the_guest_to_finish_its_loop() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = config(2, 0);
    cfg.duration = Some(std::time::Duration::from_millis(200));
    let (_vm, _, report, _) = run_with(cfg, &[]);
    for v in &report.vcpus {
        assert!(v.guest.iterations > 0);
        assert_eq!(v.guest.in_count, v.devices.data_reads);
        assert_eq!(v.guest.out_count, v.devices.counter_writes);
    }
}

#[test]
fn the_hard_timeout_kicks_a_guest_that_never_finishes() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = config(1, 5);
    cfg.timeout = std::time::Duration::from_millis(300);
    let vm = Vm::new(cfg, std::sync::Arc::new(hv_core::NullSink)).unwrap();
    // The exit port never reaches the device: the guest retries it forever.
    vm.front_add_event(&format!("!ioout {EXIT_PORT:x} sc on"))
        .unwrap();
    let start = std::time::Instant::now();
    let report = vm.run().unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(report.vcpus[0].stop, StopReason::TimedOut);
    assert_eq!(report.vcpus[0].guest.iterations, 5);
}

#[test]
fn a_vm_runs_only_once() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    vm.run().unwrap();
    assert!(vm.run().is_err());
}
