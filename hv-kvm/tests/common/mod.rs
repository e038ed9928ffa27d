//! Shared helpers for the hv-kvm tests: a recording output sink, a KVM check that skips
//! (with a printed reason) where `/dev/kvm` cannot be opened, and a one-call runner.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv_core::{OutputSink, Stage};
use hv_kvm::{RunReport, StopReason, Vm, VmConfig};

#[derive(Default)]
pub struct RecordingSink {
    pub lines: Mutex<Vec<(u64, Stage, u32, String)>>,
}

impl OutputSink for RecordingSink {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        self.lines.lock().unwrap().push((
            event_id,
            stage,
            core,
            String::from_utf8_lossy(text).into_owned(),
        ));
    }
}

impl RecordingSink {
    pub fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.3.as_str())
            .collect()
    }
    pub fn lines_of(&self, id: u64) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.0 == id)
            .map(|l| l.3.clone())
            .collect()
    }
}

/// `false` (after printing why) when KVM is not usable here.
pub fn kvm_or_skip() -> bool {
    match hv_kvm::kvm_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

pub fn config(vcpus: usize, iterations: u64) -> VmConfig {
    VmConfig {
        vcpus,
        iterations,
        msr_rounds: 3,
        duration: None,
        timeout: Duration::from_secs(60),
    }
}

/// Builds a VM, adds `events`, runs it; returns the VM (for counters), the report and
/// the recorded output. Panics with the event's message if an event is refused.
pub fn run_with(cfg: VmConfig, events: &[&str]) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    run_prepared(cfg, events, |_| {})
}

/// [`run_with`], with `prepare` applied to the VM before the events are added (the demo
/// guest's opt-in parts: `set_syscall_rounds`, `set_hook_rounds`, ...).
pub fn run_prepared(
    cfg: VmConfig,
    events: &[&str],
    prepare: impl FnOnce(&Vm),
) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let vm = Vm::new(cfg, sink.clone()).expect("VM setup");
    prepare(&vm);
    let ids = events
        .iter()
        .map(|e| vm.add_event(e).unwrap_or_else(|err| panic!("{e}: {err}")))
        .collect();
    let report = vm.run().expect("run");
    for v in &report.vcpus {
        assert_eq!(
            v.stop,
            StopReason::GuestExit(0),
            "vCPU {} did not finish cleanly: {v:?}",
            v.cpu
        );
    }
    (vm, ids, report, sink)
}

pub fn counters(vm: &Vm, id: u64) -> hv_core::CounterValues {
    vm.engine()
        .event(id)
        .expect("event exists")
        .counters
        .values()
}

/// A small seeded generator (SplitMix64): the stress and fuzz tests are reproducible
/// from the seed they print.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The seed of a randomised test: `HV_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("HV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
