//! Adding many events costs each add what it touches, not the whole table over and over
//! (issue 14, item 14: 3000 adds took 16.5 s, each add rescanning every event once per
//! event). Measured as a ratio within one run, so the machine's speed cancels out: 200
//! adds to a table of 1450 events against 200 adds to a table of 50 (before the fix:
//! about 50x; after: 1.3-2x, what is left being the copy-on-write publication of the
//! table).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hv_kvm::Vm;

fn line(i: usize) -> String {
    match i % 4 {
        0 => format!("!ioin {:x} script {{ x = {i:x}; }}", i % 0x500),
        1 => format!("!syscall {i:x}"),
        2 => format!("!ioout {:x}", i % 0x500),
        _ => "!exception 6".to_string(),
    }
}

#[test]
fn adding_to_a_full_table_costs_about_what_adding_to_an_empty_one_does() {
    if !kvm_or_skip() {
        return;
    }
    const BATCH: usize = 200;
    const FILL: usize = 1200;
    let vm = Vm::new(config(1, 1), std::sync::Arc::new(hv_core::NullSink)).unwrap();
    let mut next = 0;
    // The front end compiles first, outside the timing: what is measured is the VM's add
    // (load, vet, publish), not Cranelift on a machine shared with a fuzzer.
    let mut add = |n: usize| {
        let batch: Vec<(String, hv_core::Prepared)> = (next..next + n)
            .map(|i| {
                let l = line(i);
                let p = prepare(&vm, &l, Backend::Jit).unwrap();
                (l, p)
            })
            .collect();
        next += n;
        let t = Instant::now();
        for (l, p) in &batch {
            vm.add_event(l, p).unwrap();
        }
        t.elapsed()
    };
    add(50); // warm-up: first compilations, allocator
    let empty: Duration = add(BATCH);
    add(FILL);
    let full = add(BATCH);
    assert_eq!(vm.engine().list().len(), 50 + 2 * BATCH + FILL);
    let ratio = full.as_secs_f64() / empty.as_secs_f64();
    println!(
        "{BATCH} adds: {empty:?} to a table of 50, {full:?} to a table of {}: {ratio:.2}x",
        50 + BATCH + FILL
    );
    assert!(ratio < 8.0, "adding to a full table costs {ratio:.1}x");
}
