//! `!monitor r|w|rw` from real MMIO exits: watched pages leave the RAM slot (read-only
//! slot for writes, no slot for reads), the guest's buffer and counters agree with the
//! events' counters, short-circuits drop writes and keep the script's registers for
//! reads, unwatched bytes of a watched page still work, and watching is added and
//! removed while the guest runs.

mod common;

use std::time::Duration;

use common::*;
use hv_core::Target;
use hv_kvm::boot::per_cpu;
use hv_kvm::demo::field;
use hv_kvm::*;
use hvscript_stdlib::EventOp;

const N: u64 = 200;

fn buffer(cpu: usize) -> u64 {
    per_cpu(cpu) + field::BUFFER
}

fn buffer_words(vm: &Vm, cpu: usize) -> Vec<u64> {
    (0..0x200)
        .map(|i| vm.memory().read_u64(buffer(cpu) + i * 8).unwrap())
        .collect()
}

#[test]
fn monitor_w_sees_address_old_and_new_values_in_both_stages() {
    if !kvm_or_skip() {
        return;
    }
    let script = r#"stage all script { if ($stage == 0) { printf("pre %llx %llx %llx %d\n", $context, dq($context), @dr0, @dr1); } else { printf("post %llx %llx\n", $context, dq($context)); } }"#;
    let events: Vec<String> = (0..2)
        .map(|c| format!("!monitor w {:x} l 1000 core {c} {script}", buffer(c)))
        .collect();
    let refs: Vec<&str> = events.iter().map(|s| s.as_str()).collect();
    let (vm, ids, report, sink) = run_with(config(2, N), &refs);
    for v in &report.vcpus {
        let g = v.guest;
        assert_eq!(g.buf_ops, N);
        assert_eq!(g.buf_sum, g.in_sum, "the guest read back what it wrote");
        assert_eq!(v.exits.mmio_write, N, "one write exit per buffer write");
        assert_eq!(
            v.exits.mmio_read, 0,
            "reads of a write-watched page run natively"
        );
        let c = counters(&vm, ids[v.cpu]);
        assert_eq!((c.pre_runs, c.post_runs, c.script_errors), (N, N, 0));
        let lines = sink.lines_of(ids[v.cpu]);
        for i in 0..N {
            let addr = buffer(v.cpu) + (i & 0x1ff) * 8;
            let new = u64::from(data_value(v.cpu, i));
            assert_eq!(lines[2 * i as usize], format!("pre {addr:x} 0 {new:x} 8\n"));
            assert_eq!(
                lines[2 * i as usize + 1],
                format!("post {addr:x} {new:x}\n")
            );
        }
        let words = buffer_words(&vm, v.cpu);
        assert_eq!(words[(N - 1) as usize], u64::from(data_value(v.cpu, N - 1)));
    }
    // Each buffer page sits in its own read-only slot.
    let slots = vm.memory_slots();
    assert_eq!(slots.iter().filter(|s| s.readonly).count(), 2, "{slots:?}");
}

#[test]
fn short_circuited_monitor_w_leaves_memory_unchanged() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(
        config(1, N),
        &[&format!("!monitor w {:x} l 1000 sc on", buffer(0))],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.buf_ops, N);
    assert!(g.in_sum > 0);
    assert_eq!(
        g.buf_sum, 0,
        "every read-back saw the unchanged (zero) memory"
    );
    assert!(buffer_words(&vm, 0).iter().all(|w| *w == 0));
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits, c.post_runs), (N, N, 0));
}

#[test]
fn pre_stage_dr0_is_the_value_written() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, _, report, _) = run_with(
        config(1, N),
        &[&format!(
            "!monitor w {:x} l 1000 script {{ @dr0 = @dr0 + 1; }}",
            buffer(0)
        )],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.buf_sum, g.in_sum + N);
    assert_eq!(buffer_words(&vm, 0)[0], u64::from(data_value(0, 0)) + 1);
}

#[test]
fn monitor_r_counts_reads_and_applies_unwatched_writes() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, sink) = run_with(
        config(1, N),
        &[&format!(
            r#"!monitor r {:x} l 1000 script {{ printf("%llx %llx\n", $context, @dr0); }}"#,
            buffer(0)
        )],
    );
    let v = &report.vcpus[0];
    assert_eq!(v.guest.buf_ops, N);
    assert_eq!(v.guest.buf_sum, v.guest.in_sum);
    // The page is in no slot: its writes exit too, and are applied without an event.
    assert_eq!((v.exits.mmio_read, v.exits.mmio_write), (N, N));
    assert_eq!(counters(&vm, ids[0]).pre_runs, N);
    let lines = sink.lines_of(ids[0]);
    for i in 0..N {
        let addr = buffer(0) + (i & 0x1ff) * 8;
        assert_eq!(
            lines[i as usize],
            format!("{addr:x} {:x}\n", data_value(0, i)),
            "pre sees the value the read returns"
        );
    }
    assert!(vm.memory_slots().iter().all(|s| !s.readonly));
    assert_eq!(
        vm.memory_slots().len(),
        2,
        "RAM split around the absent page"
    );
}

#[test]
fn monitor_r_pre_dr0_and_post_registers_decide_what_the_guest_reads() {
    if !kvm_or_skip() {
        return;
    }
    let (_, _, report, _) = run_with(
        config(1, N),
        &[&format!(
            "!monitor r {:x} l 1000 script {{ @dr0 = 5; }}",
            buffer(0)
        )],
    );
    assert_eq!(report.vcpus[0].guest.buf_sum, 5 * N);
    // The guest's read is `mov rcx, [buffer + i*8]`: post sees RCX loaded and may change it.
    let (vm, ids, report, _) = run_with(
        config(1, N),
        &[&format!(
            "!monitor r {:x} l 1000 stage post script {{ if (@rcx == @rax) {{ @rcx = 7; }} }}",
            buffer(0)
        )],
    );
    let v = &report.vcpus[0];
    assert_eq!(v.guest.buf_sum, 7 * N);
    assert_eq!(
        v.exits.completions, N,
        "one immediate_exit completion per read"
    );
    assert_eq!(counters(&vm, ids[0]).post_runs, N);
}

#[test]
fn short_circuited_monitor_r_keeps_the_scripts_registers() {
    if !kvm_or_skip() {
        return;
    }
    let (vm, ids, report, _) = run_with(
        config(1, N),
        &[&format!(
            "!monitor r {:x} l 1000 script {{ @rcx = 9; event_sc(1); }}",
            buffer(0)
        )],
    );
    let g = report.vcpus[0].guest;
    assert_eq!(g.buf_ops, N);
    assert_eq!(g.buf_sum, 9 * N);
    // The writes were not short-circuited (only reads are watched).
    assert_eq!(buffer_words(&vm, 0)[1], u64::from(data_value(0, 1)));
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.short_circuits), (N, N));
}

#[test]
fn monitor_rw_on_part_of_a_page_raises_only_for_watched_bytes() {
    if !kvm_or_skip() {
        return;
    }
    // Words 8..16 of the buffer (0x40 bytes): iterations 8..16 touch them.
    let from = buffer(0) + 0x40;
    let (vm, ids, report, sink) = run_with(
        config(1, N),
        &[&format!(
            r#"!monitor rw {from:x} l 40 script {{ printf("%x ", ($context - {from:x}) / 8); }}"#
        )],
    );
    let v = &report.vcpus[0];
    assert_eq!(v.guest.buf_sum, v.guest.in_sum);
    assert_eq!((v.exits.mmio_read, v.exits.mmio_write), (N, N));
    let c = counters(&vm, ids[0]);
    assert_eq!(c.pre_runs, 16, "8 words, each written then read");
    let text: String = sink.lines_of(ids[0]).concat();
    assert_eq!(text, "0 0 1 1 2 2 3 3 4 4 5 5 6 6 7 7 ");
}

#[test]
fn monitor_is_added_and_removed_while_the_guest_runs() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = config(2, 0);
    cfg.duration = Some(Duration::from_millis(1500));
    let sink = std::sync::Arc::new(RecordingSink::default());
    let vm = Vm::new(cfg, sink).unwrap();
    let (report, during, slots_during) = std::thread::scope(|s| {
        let runner = s.spawn(|| vm.run().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let w = vm
            .front_add_event(&format!("!monitor w {:x} l 1000", buffer(0)))
            .unwrap();
        let r = vm
            .front_add_event(&format!("!monitor rw {:x} l 1000", buffer(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let slots_during = vm.memory_slots().len();
        let (we, re) = (vm.engine().event(w).unwrap(), vm.engine().event(r).unwrap());
        vm.apply(EventOp::Clear, Target::Id(w)).unwrap();
        vm.apply(EventOp::Disable, Target::Id(r)).unwrap();
        let during = (we.counters.values().pre_runs, re.counters.values().pre_runs);
        (runner.join().unwrap(), during, slots_during)
    });
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
        assert_eq!(
            v.guest.buf_sum, v.guest.in_sum,
            "no access was lost or torn"
        );
        assert!(v.guest.iterations > 0);
    }
    assert!(during.0 > 0 && during.1 > 0, "{during:?}");
    // vCPU 1's page in no slot splits RAM in 2 slots and vCPU 0's read-only page adds 2.
    assert_eq!(slots_during, 4);
    assert_eq!(vm.memory_slots().len(), 1, "RAM is one slot again");
    // After removal the buffers run natively again: far fewer exits than accesses.
    let v0 = &report.vcpus[0];
    assert!(v0.exits.mmio_write < v0.guest.buf_ops, "{v0:?}");
}

#[test]
fn monitor_ranges_hv_kvm_cannot_watch_are_refused_with_the_reason() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    for (cmd, why) in [
        ("!monitor x 101000 l 10", "executing"),
        ("!monitor w 1000 1010", "page tables"),
        ("!monitor r 10000 l 8", "guest code"),
        ("!monitor w 10f000 l 8", "kernel stack"),
        ("!monitor pa w 400000 l 8", "not inside guest RAM"),
    ] {
        let err = vm.front_add_event(cmd).unwrap_err();
        assert!(err.message().contains(why), "{cmd}: {}", err.message());
    }
    assert!(vm.engine().list().is_empty());
    assert_eq!(vm.memory_slots().len(), 1);
}
