//! Hot-loading the single-stepped kinds (`!cpuid`, `!sysret`) under running vCPUs:
//! stepping is switched on and off many times while the guest is in its user loop and in
//! its exception rounds (kernel-mode exits), and must never leak into the guest (issue 14,
//! item 1: a step switched on at an OUT's exit left RFLAGS.TF set in user mode, and the
//! guest died of a #DB; a post-stage completion while stepping came back as a step exit).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hv_core::Target;
use hv_kvm::*;
use hvscript_stdlib::EventOp;

/// Waits (bounded) until every vCPU of `vm` has started its user loop.
fn await_user_loop(vm: &Vm, vcpus: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..vcpus).any(|cpu| GuestCounters::read(vm.memory(), cpu).in_count == 0) {
        assert!(
            Instant::now() < deadline,
            "the guest never reached its loop"
        );
        std::thread::yield_now();
    }
}

fn churn_stepping(vcpus: usize, exception_rounds: u64, changes: usize) -> (u64, RunReport) {
    let sink = std::sync::Arc::new(RecordingSink::default());
    let vm = Vm::new(config(vcpus, 0), sink).unwrap();
    vm.set_exception_rounds(exception_rounds);
    // A post stage while stepping: the completion may come back as the step after it.
    let ins = vm.front_add_event("!ioin 510 stage post").unwrap();
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| vm.run().unwrap());
        if exception_rounds == 0 {
            await_user_loop(&vm, vcpus);
        }
        for i in 0..changes {
            if run.is_finished() {
                break;
            }
            // The repro of the issue: `!cpuid` twice, `events d`, `events c all` (which
            // also clears the sentinel: it is added again).
            match i % 5 {
                0 | 1 => {
                    vm.front_add_event("!cpuid").unwrap();
                }
                2 => {
                    let _ = vm.apply(EventOp::Disable, Target::All);
                }
                3 => {
                    let _ = vm.apply(EventOp::Enable, Target::All);
                }
                _ => {
                    let _ = vm.apply(EventOp::Clear, Target::All);
                }
            }
            // Let some exits happen under each event set.
            let until = Instant::now() + Duration::from_millis(3);
            while Instant::now() < until {
                std::thread::yield_now();
            }
        }
        vm.request_stop();
        run.join().unwrap()
    });
    let _ = ins;
    for v in &report.vcpus {
        assert_eq!(
            v.stop,
            StopReason::GuestExit(0),
            "vCPU {} died after stepping changed under it: {v:?}",
            v.cpu
        );
        assert_eq!(v.guest.ud_handled, exception_rounds);
        assert_eq!(v.guest.de_handled, exception_rounds);
    }
    (report.vcpus.iter().map(|v| v.exits.steps).sum(), report)
}

#[test]
fn stepping_switched_on_and_off_in_user_mode_never_reaches_the_guest() {
    if !kvm_or_skip() {
        return;
    }
    for vcpus in [1, 2, 1, 2] {
        let (steps, report) = churn_stepping(vcpus, 0, 100);
        println!(
            "{vcpus} vCPU(s), user loop: 100 changes, {steps} steps, {} exits",
            report.total_exits()
        );
    }
}

#[test]
fn stepping_changes_during_kernel_exits_and_post_completions_never_reach_the_guest() {
    if !kvm_or_skip() {
        return;
    }
    let (steps, report) = churn_stepping(2, 400, 150);
    println!(
        "2 vCPUs, 400 exception rounds each: 150 changes, {steps} steps, {} exits",
        report.total_exits()
    );
}
