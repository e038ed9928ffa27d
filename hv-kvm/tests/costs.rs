//! Timing of the newest events (prints figures; run with `--nocapture`): ns per
//! emulated SYSCALL (the trap's #UD, the stub's report, the VMM's emulation, the
//! stub's IRETQ, the kernel handler and KVM's SYSRET), with `!syscall` events, with a
//! `!sysret` event (which single-steps CPL0 code), and ns per hooked execution
//! (breakpoint exit, event, step over with the breakpoints off). Each figure is the
//! difference to the same run without the work, divided by the count; the machine is
//! shared, so the figures are rough. The counts are checked exactly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hv_kvm::*;

const N: u64 = 2000;

fn timed(syscalls: u64, hooks: u64, events: &[String]) -> (Duration, RunReport) {
    let vm = Vm::new(config(1, 10), Arc::new(hv_core::NullSink)).unwrap();
    vm.set_syscall_rounds(syscalls);
    vm.set_hook_rounds(hooks);
    for e in events {
        vm.front_add_event(e)
            .unwrap_or_else(|err| panic!("{e}: {err}"));
    }
    let report = vm.run().unwrap();
    assert_eq!(report.vcpus[0].stop, StopReason::GuestExit(0));
    (report.elapsed, report)
}

/// The fastest of 3 runs.
fn best(syscalls: u64, hooks: u64, events: &[String]) -> (Duration, RunReport) {
    (0..3)
        .map(|_| timed(syscalls, hooks, events))
        .min_by_key(|r| r.0)
        .unwrap()
}

fn per(with: Duration, without: Duration, n: u64) -> f64 {
    with.saturating_sub(without).as_nanos() as f64 / n as f64
}

#[test]
fn cost_of_emulated_syscalls_and_hooked_executions() {
    if !kvm_or_skip() {
        return;
    }
    let (base, _) = best(0, 0, &[]);
    let (t, r) = best(N, 0, &[]);
    assert_eq!(r.vcpus[0].guest.syscall_done, N);
    eprintln!(
        "SYSCALL + SYSRET round trip, no event:            {:>8.0} ns",
        per(t, base, N)
    );
    let (t, r) = best(N, 0, &["!syscall".into()]);
    assert_eq!(r.vcpus[0].exits.syscalls, N);
    eprintln!(
        "  with !syscall (no script):                      {:>8.0} ns",
        per(t, base, N)
    );
    let (t, _) = best(N, 0, &["!syscall stage all script { x = @rax; }".into()]);
    eprintln!(
        "  with !syscall stage all (trivial script):       {:>8.0} ns",
        per(t, base, N)
    );
    let (t, r) = best(N, 0, &["!syscall".into(), "!sysret".into()]);
    assert_eq!(r.vcpus[0].exits.sysrets, N);
    eprintln!(
        "  with !syscall and !sysret (CPL0 stepping):      {:>8.0} ns",
        per(t, base, N)
    );
    let t_hook = demo::demo_image().unwrap().hook_target;
    let (base, _) = best(0, N, &[]);
    let (t, r) = best(0, N, &[format!("!epthook {t_hook:x}")]);
    assert_eq!(r.vcpus[0].exits.breakpoints, N);
    eprintln!(
        "hooked execution (!epthook, no script):          {:>8.0} ns",
        per(t, base, N)
    );
    let (t, _) = best(
        0,
        N,
        &[format!("!epthook {t_hook:x} script {{ @rdi = @rdi; }}")],
    );
    eprintln!(
        "hooked execution (!epthook, trivial script):     {:>8.0} ns",
        per(t, base, N)
    );
}
