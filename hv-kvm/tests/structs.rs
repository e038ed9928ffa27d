//! A struct over guest memory, in an event script on a real guest: the script casts the
//! demo guest's data-block pointer (R15 in the guest's user loop) to a struct that
//! describes the block's layout and reads and writes the guest's own counters through
//! `->`, with typed loads and stores that go through the guest's page tables.

mod common;

use common::*;
use hv_kvm::*;

/// The first fields of the demo guest's per-vCPU data block (`hv_kvm::demo::field`).
const DATA_BLOCK: &str = "struct DataBlock {
    unsigned long long iterations;
    unsigned long long in_count;
    unsigned long long out_count;
    unsigned long long in_sum;
    unsigned long long in_last;
    unsigned long long rdmsr_count;
    unsigned long long wrmsr_count;
    unsigned long long msr_first;
    unsigned long long msr_final;
    unsigned long long stop;
};";

fn check_layout_matches_the_guest() {
    assert_eq!(demo::field::IN_COUNT, 0x08);
    assert_eq!(demo::field::OUT_COUNT, 0x10);
    assert_eq!(demo::field::IN_LAST, 0x20);
    assert_eq!(demo::field::STOP, 0x48);
}

fn reads_the_guests_counters_through_a_struct_pointer(interpreted: bool) {
    check_layout_matches_the_guest();
    let script = format!(
        "!ioout 511 script {{ {DATA_BLOCK}
            struct DataBlock *blk = (struct DataBlock *) @r15;
            printf(\"out %d in_count %d out_count %d in_last %x\\n\", @eax, blk->in_count, blk->out_count, blk->in_last);
        }}"
    );
    let n = 50;
    let backend = if interpreted {
        Backend::Interp
    } else {
        Backend::Jit
    };
    let (vm, ids, report, sink) = run_prepared_with(config(1, n), &[&script], backend, |_| {});
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.script_errors), (n, 0));
    let lines = sink.lines_of(ids[0]);
    assert_eq!(lines.len() as u64, n);
    // At the OUT of iteration i the guest has done i + 1 INs and counted i OUTs; the last
    // IN's value is what the data device gave it.
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], i.to_string(), "{line}");
        assert_eq!(fields[3], (i + 1).to_string(), "{line}");
        assert_eq!(fields[5], i.to_string(), "{line}");
    }
    assert_eq!(report.vcpus[0].guest.out_count, n);
}

#[test]
fn jit_script_reads_guest_counters_through_a_struct() {
    if !kvm_or_skip() {
        return;
    }
    reads_the_guests_counters_through_a_struct_pointer(false);
}

#[test]
fn interpreted_script_reads_guest_counters_through_a_struct() {
    if !kvm_or_skip() {
        return;
    }
    reads_the_guests_counters_through_a_struct_pointer(true);
}

#[test]
fn script_stops_the_guest_loop_by_writing_a_struct_member() {
    if !kvm_or_skip() {
        return;
    }
    // The guest runs until told to stop (iterations 0); the script tells it through the
    // `stop` member at the 10th OUT.
    let script = format!(
        "!ioout 511 script {{ {DATA_BLOCK}
            struct DataBlock *blk = (struct DataBlock *) @r15;
            if (@eax == 0n9) {{ blk->stop = 1; }}
        }}"
    );
    let mut cfg = config(1, 0);
    cfg.timeout = std::time::Duration::from_secs(30);
    let (_vm, _ids, report, _sink) = run_with(cfg, &[&script]);
    let g = &report.vcpus[0].guest;
    assert_eq!(g.out_count, 10, "{g:?}");
    assert_eq!(g.iterations, 10, "{g:?}");
}

#[test]
fn a_struct_pointer_to_unmapped_guest_memory_is_a_located_script_error() {
    if !kvm_or_skip() {
        return;
    }
    let script = format!(
        "!ioout 511 script {{ {DATA_BLOCK}
            struct DataBlock *blk = (struct DataBlock *) 0xffff800000000000;
            x = blk->in_count;
        }}"
    );
    let (vm, ids, _report, sink) = run_with(config(1, 5), &[&script]);
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.script_errors), (5, 5));
    let text = sink.text();
    // `in_count` is the second member: 8 bytes into the struct. The error names the line
    // and column of `blk->in_count` in the command.
    let (line, col) = script
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("blk->in_count").map(|c| (i + 1, c + 1)))
        .unwrap();
    assert!(
        text.contains(&format!(
            "(pre stage): {line}:{col}: cannot read 8 bytes at 0xffff800000000008 (invalid address)"
        )),
        "{text}"
    );
}
