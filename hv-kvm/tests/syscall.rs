//! `!syscall` / `!sysret` from real SYSCALL/SYSRET instructions with HyperDbg's trick:
//! EFER.SCE stays clear, each SYSCALL/SYSRET is a #UD the VMM-owned stub reports, and
//! the VMM emulates the instruction (STAR/LSTAR/FMASK from its MSR model). The demo
//! guest's user part makes `ROUNDS` SYSCALLs (RAX = 0, 1, ...) into its kernel handler,
//! which counts them and returns with SYSRETQ.

mod common;

use std::sync::Arc;

use common::*;
use hv_kvm::demo::{syscall_result, DEMO_FMASK};
use hv_kvm::*;

const ROUNDS: u64 = 8;

fn run_sc(vcpus: usize, events: &[&str]) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    run_prepared(config(vcpus, 10), events, |vm| {
        vm.set_syscall_rounds(ROUNDS)
    })
}

fn result_sum(numbers: impl Iterator<Item = u64>) -> u64 {
    numbers.map(syscall_result).sum()
}

#[test]
fn syscalls_are_emulated_without_events() {
    if !kvm_or_skip() {
        return;
    }
    let (_vm, _, report, _) = run_sc(2, &[]);
    for v in &report.vcpus {
        let g = v.guest;
        assert_eq!((g.syscall_handled, g.syscall_done), (ROUNDS, ROUNDS));
        assert_eq!(g.syscall_num_sum, (0..ROUNDS).sum::<u64>());
        assert_eq!(g.syscall_ret_sum, result_sum(0..ROUNDS));
        // Without a `!sysret` event KVM runs SYSRET itself (no stepping).
        assert_eq!(
            (v.exits.syscalls, v.exits.sysrets, v.exits.steps),
            (ROUNDS, 0, 0)
        );
        // The guest's own #UD handler never saw them.
        assert_eq!(g.ud_handled, 0);
    }
}

#[test]
fn syscall_and_sysret_events_count_every_call_with_their_context() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_sc(
        2,
        &[
            r#"!syscall stage all script { printf("sc %d %x\n", $stage, $context); }"#,
            r#"!sysret script { printf("sr %x %x\n", $context, @rip); }"#,
        ],
    );
    let handled: u64 = report.vcpus.iter().map(|v| v.guest.syscall_handled).sum();
    assert_eq!(handled, 2 * ROUNDS);
    let c = counters(&vm, ids[0]);
    assert_eq!(
        (c.pre_runs, c.post_runs, c.script_errors),
        (handled, handled, 0)
    );
    let c = counters(&vm, ids[1]);
    assert_eq!((c.pre_runs, c.post_runs), (handled, 0));
    let lines = sink.lines_of(ids[0]);
    for n in 0..ROUNDS {
        for stage in 0..2 {
            let l = format!("sc {stage} {n:x}\n");
            assert_eq!(lines.iter().filter(|x| **x == l).count(), 2, "{lines:?}");
        }
    }
    // `!sysret`: $context = the RIP of the SYSRETQ (= @rip in pre).
    let sysret = vm.image().sysret_addr;
    let l = format!("sr {sysret:x} {sysret:x}\n");
    assert!(sink.lines_of(ids[1]).iter().all(|x| *x == l));
    for v in &report.vcpus {
        let g = v.guest;
        assert_eq!(g.syscall_done, ROUNDS);
        assert_eq!(g.syscall_ret_sum, result_sum(0..ROUNDS));
        assert_eq!((v.exits.syscalls, v.exits.sysrets), (ROUNDS, ROUNDS));
    }
}

#[test]
fn sysret_post_stage_sees_the_emulated_return() {
    if !kvm_or_skip() {
        return;
    }
    // Post sees the emulated SYSRETQ: CPL3 selectors from STAR[63:48], RIP = RCX; a
    // post change of RAX is what the user part gets back.
    let (_, ids, report, sink) = run_sc(
        1,
        &[
            r#"!sysret stage post script { printf("%x %x %x\n", @rip - @rcx, @cs, @ss); @rax = 1; }"#,
        ],
    );
    let lines = sink.lines_of(ids[0]);
    assert_eq!(lines.len() as u64, ROUNDS);
    assert!(lines.iter().all(|l| l == "0 23 1b\n"), "{lines:?}");
    assert_eq!(report.vcpus[0].guest.syscall_ret_sum, ROUNDS);
}

#[test]
fn syscall_number_filter() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, _, _) = run_sc(2, &["!syscall 5", "!syscall 0x55"]);
    assert_eq!(counters(&vm, ids[0]).pre_runs, 2);
    assert_eq!(counters(&vm, ids[1]).pre_runs, 0);
}

#[test]
fn short_circuited_syscall_never_reaches_the_kernel() {
    if !kvm_or_skip() {
        return;
    }
    // Number 3 is answered by the script: RAX = 0x777, no kernel handler, no SYSRET.
    let (vm, ids, report, _) = run_sc(
        1,
        &[
            "!syscall 3 script { @rax = 0x777; event_sc(1); }",
            "!sysret",
        ],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.syscall_done, ROUNDS);
    assert_eq!(
        g.syscall_handled,
        ROUNDS - 1,
        "the handler's counter did not move"
    );
    assert_eq!(g.syscall_num_sum, (0..ROUNDS).sum::<u64>() - 3);
    assert_eq!(
        g.syscall_ret_sum,
        result_sum((0..ROUNDS).filter(|n| *n != 3)) + 0x777
    );
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (1, 1));
    assert_eq!(counters(&vm, ids[1]).pre_runs, ROUNDS - 1);
    assert_eq!(g.ud_handled, 0);
}

#[test]
fn post_stage_sees_the_state_after_the_emulated_syscall() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_sc(
        1,
        &[
            r#"!syscall 2 stage post script { printf("%x %x %x %x %x\n", @rip, @cs, @ss, @rflags, @r11); }"#,
            r#"!syscall 4 stage post script { @rax = 0x40; }"#,
        ],
    );
    let line = &sink.lines_of(ids[0])[0];
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| u64::from_str_radix(x, 16).unwrap())
        .collect();
    let img = vm.image();
    assert_eq!(f[0], img.syscall_entry, "RIP = LSTAR");
    assert_eq!((f[1], f[2]), (0x08, 0x10), "CS/SS from STAR[47:32]");
    assert_eq!(f[3] & DEMO_FMASK, 0, "RFLAGS masked by FMASK");
    assert_eq!(
        f[3] & !DEMO_FMASK,
        f[4] & !DEMO_FMASK,
        "R11 = RFLAGS before"
    );
    let g = report.vcpus[0].guest;
    // The handler saw RCX = the user RIP after the SYSCALL, R11 = the user RFLAGS.
    assert!(g.syscall_rcx > img.user_entry, "{:#x}", g.syscall_rcx);
    assert_eq!(g.syscall_r11, f[4]);
    // Number 4 entered the kernel with RAX = 0x40 (the post script's change).
    assert_eq!(g.syscall_num_sum, (0..ROUNDS).sum::<u64>() - 4 + 0x40);
}
