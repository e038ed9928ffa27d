//! Shared helpers for the hv-kvm tests: a recording output sink, a KVM check that skips
//! (with a printed reason) where `/dev/kvm` cannot be opened, a one-call runner, and the
//! front end the tests compile commands with ([`Front`], [`compiled_frame`]): hv-kvm
//! itself only loads what a front end compiled.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv_core::{OutputSink, Prepared, Stage};
use hv_kvm::{KvmPlatform, RunReport, StopReason, Vm, VmConfig};
pub use hvscript_front::{Backend, FrontError};

/// Compiles `line` with the front end against `vm`'s rules, symbols and globals.
pub fn prepare(vm: &Vm, line: &str, backend: Backend) -> Result<Prepared, FrontError> {
    let target = hvscript_front::Target {
        platform: &KvmPlatform,
        symbols: vm.symbols(),
        globals: vm.global_names(),
        values: Some(vm.globals().clone()),
    };
    hvscript_front::prepare(line, &target, backend)
}

/// The control socket's frame for `line` as `hvscript attach` sends it: compiled against
/// `vm`'s globals and symbols when it has a script, else the text.
pub fn compiled_frame(vm: &Vm, line: &str) -> Vec<u8> {
    let prepared = prepare(vm, line, Backend::Jit).unwrap_or_else(|e| panic!("{line}: {e}"));
    if prepared.has_script() {
        hv_kvm::control::encode_compiled(line, prepared.code.as_deref(), &prepared.globals)
    } else {
        line.as_bytes().to_vec()
    }
}

/// The frame `hvscript attach` sends for `line` over the control socket `s`: for a line
/// with a script (or a `?`), it asks the VM for its globals and symbols (a session frame),
/// compiles on this side and encodes the line with the code object; other lines go as
/// text. Every frame read meanwhile is given to `on_frame` (output, the session reply). A
/// script that does not compile goes as text, for the VM to refuse.
pub fn client_frame(
    s: &mut std::os::unix::net::UnixStream,
    line: &str,
    on_frame: &mut dyn FnMut(&[u8]),
) -> Vec<u8> {
    use hv_kvm::control::{self, TAG_OUTPUT, TAG_RESULT};
    if !(line.contains('{') || line.trim_start().starts_with('?')) {
        return line.as_bytes().to_vec();
    }
    control::write_frame(s, &control::encode_session_request()).expect("session request");
    let reply = loop {
        let f = control::read_frame(s).expect("a session reply");
        on_frame(&f);
        if f.first() != Some(&TAG_OUTPUT) {
            break f;
        }
    };
    assert_eq!(reply[0], TAG_RESULT, "{}", String::from_utf8_lossy(&reply));
    let (globals, symbols) = control::parse_session(&String::from_utf8_lossy(&reply[1..]));
    let target = hvscript_front::Target {
        platform: &KvmPlatform,
        symbols,
        globals,
        values: None,
    };
    match hvscript_front::prepare(line, &target, Backend::Jit) {
        Ok(p) if p.has_script() => control::encode_compiled(line, p.code.as_deref(), &p.globals),
        _ => line.as_bytes().to_vec(),
    }
}

/// The compiled frame for `line` against a session with no globals and no symbols (for a
/// script that uses neither), made without asking the VM.
pub fn offline_frame(line: &str) -> Vec<u8> {
    let target = hvscript_front::Target {
        platform: &KvmPlatform,
        symbols: Default::default(),
        globals: Vec::new(),
        values: None,
    };
    let p = hvscript_front::prepare(line, &target, Backend::Jit)
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    hv_kvm::control::encode_compiled(line, p.code.as_deref(), &p.globals)
}

/// A VM's commands compiled by the front end first, as `hvscript run` does.
pub trait Front {
    /// `Vm::command` of `line` compiled for the JIT.
    fn front_command(&self, line: &str) -> Result<String, FrontError>;
    /// `Vm::add_event` of `line` compiled for the JIT.
    fn front_add_event(&self, line: &str) -> Result<u64, FrontError> {
        self.front_add_event_with(line, Backend::Jit)
    }
    fn front_add_event_with(&self, line: &str, backend: Backend) -> Result<u64, FrontError>;
}

impl Front for Vm {
    fn front_command(&self, line: &str) -> Result<String, FrontError> {
        let prepared = prepare(self, line, Backend::Jit)?;
        Ok(self.command(line, &prepared)?)
    }

    fn front_add_event_with(&self, line: &str, backend: Backend) -> Result<u64, FrontError> {
        let prepared = prepare(self, line, backend)?;
        Ok(self.add_event(line, &prepared)?)
    }
}

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
    run_prepared_with(cfg, events, Backend::Jit, prepare)
}

/// [`run_prepared`] with the events' scripts compiled for `backend`.
pub fn run_prepared_with(
    cfg: VmConfig,
    events: &[&str],
    backend: Backend,
    prepare: impl FnOnce(&Vm),
) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let vm = Vm::new(cfg, sink.clone()).expect("VM setup");
    prepare(&vm);
    let ids = events
        .iter()
        .map(|e| {
            vm.front_add_event_with(e, backend)
                .unwrap_or_else(|err| panic!("{e}: {err}"))
        })
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
