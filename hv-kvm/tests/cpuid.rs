//! `!cpuid` from CPL0 CPUIDs by single-stepping: pre at the instruction with
//! `$context` = EAX, KVM executes it in one step, post after; a post script's register
//! changes are what the guest sees; a short-circuit skips CPUID and keeps the script's
//! registers. CPL3 CPUIDs are not raised (single-step does nothing at CPL3 here).

mod common;

use common::*;

#[test]
fn cpuid_fires_for_kernel_cpuids_with_eax_context_in_both_stages() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_with(
        config(2, 20),
        &[r#"!cpuid stage all script { printf("%d %x\n", $stage, $context); }"#],
    );
    let kernel: u64 = report.vcpus.iter().map(|v| v.guest.cpuid_count).sum();
    let user: u64 = report.vcpus.iter().map(|v| v.guest.user_cpuid_count).sum();
    assert_eq!((kernel, user), (4, 2));
    let c = counters(&vm, ids[0]);
    assert_eq!(
        (c.pre_runs, c.post_runs),
        (kernel, kernel),
        "CPL0 CPUIDs only"
    );
    let lines = sink.lines_of(ids[0]);
    for leaf in ["0", "1"] {
        for stage in ["0", "1"] {
            let l = format!("{stage} {leaf}\n");
            assert_eq!(lines.iter().filter(|x| **x == l).count(), 2, "{lines:?}");
        }
    }
    for v in &report.vcpus {
        assert!(v.exits.steps > 0);
    }
}

#[test]
fn post_stage_cpuid_script_changes_what_the_guest_sees() {
    if !kvm_or_skip() {
        return;
    }
    let (_, _, base, _) = run_with(config(1, 5), &[]);
    let ecx = base.vcpus[0].guest.cpuid1[2];
    assert_ne!(ecx, 0);
    let bit = ecx.trailing_zeros();
    let (vm, ids, report, _) = run_with(
        config(1, 5),
        &[&format!(
            "!cpuid 1 stage post script {{ @ecx = @ecx & ~{:x}; }}",
            1u64 << bit
        )],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.cpuid1[2], ecx & !(1 << bit), "the feature bit is cleared");
    assert_eq!(g.cpuid1[0], base.vcpus[0].guest.cpuid1[0]);
    // The CPL3 CPUID is not intercepted.
    assert_eq!(g.user_cpuid1_ecx & (1 << bit), 1 << bit);
    assert_eq!(counters(&vm, ids[0]).post_runs, 1, "leaf 1 only");
}

#[test]
fn short_circuited_cpuid_keeps_the_scripts_registers() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(
        config(1, 5),
        &["!cpuid 1 script { @eax = 0x11; @ebx = 0x22; @ecx = 0x33; @edx = 0x44; event_sc(1); }"],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.cpuid1, [0x11, 0x22, 0x33, 0x44]);
    assert_eq!(
        g.cpuid_count, 2,
        "the guest went on after the skipped CPUID"
    );
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (1, 1));
}

#[test]
fn without_cpuid_events_nothing_is_stepped() {
    if !kvm_or_skip() {
        return;
    }
    let (_, _, report, _) = run_with(config(1, 5), &["!ioin 510"]);
    assert_eq!(report.vcpus[0].exits.steps, 0);
    assert_eq!(report.vcpus[0].guest.cpuid_count, 2);
}
