//! `!exception` from the VMM-owned IDT stubs: the demo guest's user part runs `ud2` and
//! a `div` by zero, each delivered to the guest's own handler unless short-circuited;
//! `$context` = vector; scripts see the interrupted context's registers.

mod common;

use std::sync::Arc;

use common::*;
use hv_kvm::*;

const ROUNDS: u64 = 5;

fn run_exc(events: &[&str]) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    run_prepared(config(1, 10), events, |vm| vm.set_exception_rounds(ROUNDS))
}

#[test]
fn exceptions_are_raised_with_the_vector_and_delivered_to_the_guest_handler() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_exc(&[
        r#"!exception stage all script { printf("%d %x %x\n", $stage, $context, @rax); }"#,
    ]);
    let g = report.vcpus[0].guest;
    assert_eq!(
        (g.exc_done, g.ud_handled, g.de_handled),
        (ROUNDS, ROUNDS, ROUNDS)
    );
    assert_eq!(
        g.div_sum,
        100 * ROUNDS,
        "the handler skipped the div, RAX kept 100"
    );
    assert_eq!(report.vcpus[0].exits.exceptions, 2 * ROUNDS);
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.post_runs), (2 * ROUNDS, 2 * ROUNDS));
    let lines = sink.lines_of(ids[0]);
    // #UD comes with the RAX of the user code; #DE with the dividend 100 (0x64).
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("0 6 ")).count() as u64,
        ROUNDS
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "0 0 64\n").count() as u64,
        ROUNDS
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "1 0 64\n").count() as u64,
        ROUNDS
    );
}

#[test]
fn short_circuited_ud2_is_skipped_and_not_delivered() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_exc(&["!exception 6 sc on"]);
    let g = report.vcpus[0].guest;
    assert_eq!(
        (g.exc_done, g.ud_handled, g.de_handled),
        (ROUNDS, 0, ROUNDS)
    );
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (ROUNDS, ROUNDS));
}

#[test]
fn short_circuited_de_resumes_at_the_div_with_the_scripts_registers() {
    if !kvm_or_skip() {
        return;
    }
    // Not delivered: the div runs again with the divisor the script put in RCX.
    let (vm, ids, report, _) = run_exc(&["!exception 0 script { @rcx = 4; event_sc(1); }"]);
    let g = report.vcpus[0].guest;
    assert_eq!(
        (g.exc_done, g.ud_handled, g.de_handled),
        (ROUNDS, ROUNDS, 0)
    );
    assert_eq!(g.div_sum, 25 * ROUNDS);
    assert_eq!(counters(&vm, ids[0]).short_circuits, ROUNDS);
}
