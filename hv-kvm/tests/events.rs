//! Events raised from real guest instructions: each phase-1 kind fires with the right
//! `$context` and `$stage`, pre/post/all and short-circuiting act on real exits, and the
//! guest's own counters agree exactly with the events' counters.

mod common;

use common::*;
use hv_kvm::*;

const N: u64 = 200;

fn sum_in(report: &RunReport) -> u64 {
    report.vcpus.iter().map(|v| v.guest.in_count).sum()
}

#[test]
fn ioin_and_ioout_fire_with_port_context_and_stages() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_with(
        config(2, N),
        &[
            r#"!ioin 510 script { printf("in %x %d\n", $context, $stage); }"#,
            r#"!ioout 511 stage all script { printf("out %x %d\n", $context, $stage); }"#,
        ],
    );
    let (ioin, ioout) = (ids[0], ids[1]);
    let guest_in = sum_in(&report);
    let guest_out: u64 = report.vcpus.iter().map(|v| v.guest.out_count).sum();
    assert_eq!(guest_in, 2 * N);
    assert_eq!(guest_out, 2 * N);
    let c = counters(&vm, ioin);
    assert_eq!((c.pre_runs, c.post_runs, c.script_errors), (guest_in, 0, 0));
    let c = counters(&vm, ioout);
    assert_eq!(
        (c.pre_runs, c.post_runs, c.script_errors),
        (guest_out, guest_out, 0)
    );
    let in_lines = sink.lines_of(ioin);
    assert_eq!(in_lines.len() as u64, guest_in);
    assert!(in_lines.iter().all(|l| l == "in 510 0\n"), "{in_lines:?}");
    let out_lines = sink.lines_of(ioout);
    assert_eq!(out_lines.len() as u64, 2 * guest_out);
    assert_eq!(
        out_lines.iter().filter(|l| *l == "out 511 0\n").count() as u64,
        guest_out
    );
    assert_eq!(
        out_lines.iter().filter(|l| *l == "out 511 1\n").count() as u64,
        guest_out
    );
}

#[test]
fn msrread_and_msrwrite_fire_with_ecx_context_and_see_the_values() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_with(
        config(2, 10),
        &[
            r#"!msrread 40001000 stage all script { printf("r %x %d %llx\n", $context, $stage, (@rdx << 0x20) | @eax); }"#,
            r#"!msrwrite stage all script { printf("w %x %d %llx\n", $context, $stage, (@rdx << 0x20) | @eax); }"#,
        ],
    );
    let rd: u64 = report.vcpus.iter().map(|v| v.guest.rdmsr_count).sum();
    let wr: u64 = report.vcpus.iter().map(|v| v.guest.wrmsr_count).sum();
    assert_eq!((rd, wr), (8, 6));
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.post_runs), (rd, rd));
    let c = counters(&vm, ids[1]);
    assert_eq!((c.pre_runs, c.post_runs), (wr, wr));
    let text = sink.text();
    for v in &report.vcpus {
        let init = demo_msr_initial(v.cpu);
        // The post stage of the first read sees the MSR's value; the write's pre stage
        // sees the value being written.
        assert!(text.contains(&format!("r 40001000 1 {init:x}\n")), "{text}");
        assert!(
            text.contains(&format!("w 40001000 0 {:x}\n", init + 1)),
            "{text}"
        );
        assert!(
            text.contains(&format!("r 40001000 1 {:x}\n", init + 3)),
            "{text}"
        );
        assert_eq!(v.demo_msr, init + 3);
        assert_eq!(v.guest.msr_final, init + 3);
    }
}

#[test]
fn post_stage_ioin_script_decides_what_the_guest_reads() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) =
        run_with(config(2, N), &["!ioin 510 stage post script { @eax = 7; }"]);
    for v in &report.vcpus {
        // The device answered every IN, but the guest read what the post script left.
        assert_eq!(v.devices.data_reads, N);
        assert_eq!(v.guest.in_count, N);
        assert_eq!(v.guest.in_last, 7);
        assert_eq!(v.guest.in_sum, 7 * N);
        assert_eq!(
            v.exits.completions, N,
            "one immediate_exit completion per IN"
        );
    }
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.post_runs), (0, sum_in(&report)));
}

#[test]
fn short_circuited_ioin_skips_the_device_and_returns_the_scripts_eax() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(
        config(2, N),
        &["!ioin 510 script { @eax = 0x42; event_sc(1); }"],
    );
    for v in &report.vcpus {
        assert_eq!(v.devices.data_reads, 0, "the device never saw the IN");
        assert_eq!(v.guest.in_count, N);
        assert_eq!(v.guest.in_sum, 0x42 * N);
    }
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (2 * N, 2 * N));
}

#[test]
fn short_circuited_ioout_is_not_seen_by_the_device() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(
        config(2, N),
        &["!ioout 511 stage all script { if ($stage == 0 && (@eax & 1)) { event_sc(1); } }"],
    );
    let evens: u64 = (0..N).filter(|i| i % 2 == 0).sum();
    for v in &report.vcpus {
        assert_eq!(v.guest.out_count, N);
        assert_eq!(v.devices.counter_writes, N / 2);
        assert_eq!(v.devices.counter_sum, evens);
    }
    let c = counters(&vm, ids[0]);
    // Odd values were short-circuited: no post stage for them.
    assert_eq!((c.pre_runs, c.short_circuits, c.post_runs), (2 * N, N, N));
}

#[test]
fn pre_stage_register_writes_are_the_emulations_inputs() {
    if !kvm_or_skip() {
        return;
    }
    let (_vm, _, report, _) = run_with(
        config(2, N),
        &[
            "!ioout 511 script { @eax = 5; }",
            "!msrwrite 40001000 script { @eax = 0x99; @edx = 0; }",
        ],
    );
    for v in &report.vcpus {
        assert_eq!(v.devices.counter_sum, 5 * N);
        assert_eq!(v.demo_msr, 0x99);
        assert_eq!(v.guest.msr_final, 0x99);
    }
}

#[test]
fn short_circuited_msrwrite_leaves_the_msr_unchanged() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(config(2, 10), &["!msrwrite 40001000 sc on"]);
    for v in &report.vcpus {
        let init = demo_msr_initial(v.cpu);
        assert_eq!(v.demo_msr, init, "the VMM's MSR was never written");
        assert_eq!(v.guest.msr_first, init);
        assert_eq!(v.guest.msr_final, init, "the guest reads the unchanged MSR");
        assert_eq!(v.guest.wrmsr_count, 3);
    }
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (6, 6));
}

#[test]
fn post_stage_msrread_script_decides_what_the_guest_reads() {
    if !kvm_or_skip() {
        return;
    }
    let (_vm, _, report, _) = run_with(
        config(2, 10),
        &["!msrread 40001000 stage post script { @eax = 0x1234; @edx = 0; }"],
    );
    for v in &report.vcpus {
        assert_eq!(v.guest.msr_first, 0x1234);
        assert_eq!(v.guest.msr_final, 0x1234);
        // The guest wrote what it read plus one.
        assert_eq!(v.demo_msr, 0x1235);
    }
}

#[test]
fn short_circuited_msrread_returns_the_scripts_edx_eax() {
    if !kvm_or_skip() {
        return;
    }
    let (_vm, _, report, _) = run_with(
        config(1, 10),
        &["!msrread 40001000 script { @edx = 0xab; @eax = 0xcd; event_sc(1); }"],
    );
    let v = &report.vcpus[0];
    assert_eq!(v.guest.msr_first, 0xab_0000_00cd);
    assert_eq!(v.guest.msr_final, 0xab_0000_00cd);
    assert_eq!(v.demo_msr, 0xab_0000_00ce);
}

#[test]
fn core_filter_and_core_pseudo_register() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_with(
        config(2, N),
        &[r#"!ioin 510 core 1 script { printf("%d\n", $core); }"#],
    );
    let c = counters(&vm, ids[0]);
    assert_eq!(c.pre_runs, report.vcpus[1].guest.in_count);
    assert!(sink.lines_of(ids[0]).iter().all(|l| l == "1\n"));
}

#[test]
fn scripts_read_guest_memory_through_the_guest_page_tables() {
    if !kvm_or_skip() {
        return;
    }
    // At the OUT of iteration i, the guest's IN counter (at r15+8) is i+1.
    let (_vm, ids, _report, sink) = run_with(
        config(1, 20),
        &[r#"!ioout 511 script { printf("%d:%d ", @eax, dq(@r15 + 8)); }"#],
    );
    let text: String = sink.lines_of(ids[0]).concat();
    let expected: String = (0..20).map(|i| format!("{i}:{} ", i + 1)).collect();
    assert_eq!(text, expected);
}

#[test]
fn events_without_a_filter_see_every_exit_of_their_kind() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(config(2, 50), &["!ioout", "!ioin", "!msrread"]);
    let outs: u64 = report.vcpus.iter().map(|v| v.exits.io_out).sum();
    let ins: u64 = report.vcpus.iter().map(|v| v.exits.io_in).sum();
    // Every OUT of the loop plus each vCPU's final OUT to the exit port.
    assert_eq!(outs, 2 * 50 + 2);
    assert_eq!(counters(&vm, ids[0]).pre_runs, outs);
    assert_eq!(counters(&vm, ids[1]).pre_runs, ins);
    assert_eq!(counters(&vm, ids[2]).pre_runs, 8);
}

#[test]
fn uninterceptable_events_are_refused_with_the_reason() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    for cmd in [
        "!vmcall",
        "!tsc",
        "!pmc",
        "!dr",
        "!crwrite 0",
        "!xsetbv",
        "!interrupt 0x30",
    ] {
        let err = vm.front_add_event(cmd).unwrap_err();
        let msg = err.message();
        assert!(msg.contains("cannot be raised by hv-kvm"), "{cmd}: {msg}");
        let rendered = err.render("-e", cmd);
        assert!(rendered.contains("-e:1:1: error"), "{rendered}");
    }
    assert!(vm.engine().list().is_empty());
}

#[test]
fn syscall_sysret_and_execute_hooks_are_accepted() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    let hook = vm.image().hook_target;
    for cmd in [
        "!syscall".to_string(),
        "!syscall 5 stage all".into(),
        "!sysret sc on".into(),
        format!("!epthook {hook:x}"),
        format!("!epthook2 {hook:x}"),
    ] {
        vm.front_add_event(&cmd)
            .unwrap_or_else(|e| panic!("{cmd}: {}", e.message()));
    }
    assert_eq!(vm.hooks(), vec![hook], "one debug register for one address");
    // No stages and no short-circuit on execute hooks (hv-core's checks).
    assert!(vm
        .front_add_event(&format!("!epthook {hook:x} sc on"))
        .is_err());
}

#[test]
fn bad_commands_are_located_in_the_line() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    let line = "!ioin 510 script { printf(\"%d\\n\", ; }";
    let err = vm.front_add_event(line).unwrap_err();
    let rendered = err.render("-e", line);
    assert!(rendered.starts_with("-e:1:"), "{rendered}");
    let col: usize = rendered.split(':').nth(2).unwrap().parse().unwrap();
    assert!(col > 18, "the column points inside the script: {rendered}");

    let err = vm.front_add_event("!ioin 0x10000").unwrap_err();
    assert!(err.message().contains("port"), "{}", err.message());
    let err = vm
        .front_add_event("!ioin stage post script { event_sc(1); }")
        .unwrap_err();
    assert!(err.message().contains("event_sc"), "{}", err.message());
}
