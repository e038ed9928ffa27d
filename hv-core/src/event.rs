//! Events: what a user attached (kind, filters, options, script) and what happened to it
//! (counters). An [`Event`] is immutable once created except for its counters, so event
//! tables can share it between versions.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::script::Script;

/// HyperDbg's tag seed: `$event_tag` is `id + EVENT_TAG_BASE`.
pub const EVENT_TAG_BASE: u64 = 0x100_0000;

/// Every event command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Monitor,
    EptHook,
    EptHook2,
    Cpuid,
    MsrRead,
    MsrWrite,
    IoIn,
    IoOut,
    Exception,
    Interrupt,
    Syscall,
    Sysret,
    Vmcall,
    Tsc,
    Pmc,
    Dr,
    CrWrite,
    Xsetbv,
    /// `!mode u|k|uk`: the guest moved between user and kernel mode.
    Mode,
    /// `!trace step-in|step-out|instrument-step`: a step of instrumentation tracing.
    Trace,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = &[
        EventKind::Monitor,
        EventKind::EptHook,
        EventKind::EptHook2,
        EventKind::Cpuid,
        EventKind::MsrRead,
        EventKind::MsrWrite,
        EventKind::IoIn,
        EventKind::IoOut,
        EventKind::Exception,
        EventKind::Interrupt,
        EventKind::Syscall,
        EventKind::Sysret,
        EventKind::Vmcall,
        EventKind::Tsc,
        EventKind::Pmc,
        EventKind::Dr,
        EventKind::CrWrite,
        EventKind::Xsetbv,
        EventKind::Mode,
        EventKind::Trace,
    ];

    /// The command name, without `!`.
    pub fn command(self) -> &'static str {
        match self {
            EventKind::Monitor => "monitor",
            EventKind::EptHook => "epthook",
            EventKind::EptHook2 => "epthook2",
            EventKind::Cpuid => "cpuid",
            EventKind::MsrRead => "msrread",
            EventKind::MsrWrite => "msrwrite",
            EventKind::IoIn => "ioin",
            EventKind::IoOut => "ioout",
            EventKind::Exception => "exception",
            EventKind::Interrupt => "interrupt",
            EventKind::Syscall => "syscall",
            EventKind::Sysret => "sysret",
            EventKind::Vmcall => "vmcall",
            EventKind::Tsc => "tsc",
            EventKind::Pmc => "pmc",
            EventKind::Dr => "dr",
            EventKind::CrWrite => "crwrite",
            EventKind::Xsetbv => "xsetbv",
            EventKind::Mode => "mode",
            EventKind::Trace => "trace",
        }
    }

    /// The kind a command name raises. HyperDbg's `!syscall2`/`!sysret2` differ from
    /// `!syscall`/`!sysret` only in how its hypervisor recognises the instruction (every
    /// #UD by a RIP heuristic instead of the instruction's bytes); an engine that
    /// recognises SYSCALL one way raises the same event for both spellings.
    pub fn from_command(name: &str) -> Option<EventKind> {
        match name {
            "syscall2" => Some(EventKind::Syscall),
            "sysret2" => Some(EventKind::Sysret),
            _ => EventKind::ALL.iter().copied().find(|k| k.command() == name),
        }
    }

    /// The event's own arguments, as HyperDbg documents them (its options come after).
    pub fn syntax(self) -> &'static str {
        match self {
            EventKind::Monitor => "[va|pa] r|w|x|rw|... FROM (TO | l LENGTH)",
            EventKind::EptHook | EventKind::EptHook2 => "ADDRESS",
            EventKind::Cpuid => "[EAX]",
            EventKind::MsrRead | EventKind::MsrWrite => "[MSR]",
            EventKind::IoIn | EventKind::IoOut => "[PORT]",
            EventKind::Exception => "[VECTOR < 0x20]",
            EventKind::Interrupt => "VECTOR (0x20..0xff)",
            EventKind::Syscall => "[NUMBER]",
            EventKind::Sysret | EventKind::Vmcall | EventKind::Tsc | EventKind::Pmc => "",
            EventKind::Dr => "",
            EventKind::CrWrite => "0|4 [MASK]",
            EventKind::Xsetbv => "[XCR]",
            EventKind::Mode => "u|k|uk",
            EventKind::Trace => "step-in|step-out|instrument-step",
        }
    }

    /// Whether the event has an emulation to stage: not the EPT hooks, nor `!mode` and
    /// `!trace`, which HyperDbg never calls in a post stage.
    pub fn has_stages(self) -> bool {
        !matches!(
            self,
            EventKind::EptHook | EventKind::EptHook2 | EventKind::Mode | EventKind::Trace
        )
    }
}

/// When an event's script runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StageMode {
    #[default]
    Pre,
    Post,
    All,
}

impl StageMode {
    pub fn runs_pre(self) -> bool {
        matches!(self, StageMode::Pre | StageMode::All)
    }
    pub fn runs_post(self) -> bool {
        matches!(self, StageMode::Post | StageMode::All)
    }
    pub fn name(self) -> &'static str {
        match self {
            StageMode::Pre => "pre",
            StageMode::Post => "post",
            StageMode::All => "all",
        }
    }
}

/// The stage of one execution; `$stage` is its number (the ABI's one `Stage`).
pub use hvscript_abi::Stage;

/// `!monitor` access kinds, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(pub u8);

impl Access {
    pub const READ: Access = Access(1);
    pub const WRITE: Access = Access(2);
    pub const EXECUTE: Access = Access(4);
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

/// The event's own filter: which exits of its kind it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every exit of the kind.
    Any,
    /// MSR index, port, vector, CPUID leaf, syscall number, XCR: equal to `$context`.
    Value(u64),
    /// `!monitor`: accesses of these kinds inside `[from, to]`.
    Range {
        access: Access,
        physical: bool,
        from: u64,
        to: u64,
    },
    /// `!epthook`/`!epthook2`: the hooked address.
    Address(u64),
    /// `!crwrite`: the control register and the bits watched (all when `None`).
    ControlRegister { cr: u8, mask: Option<u64> },
    /// `!mode`: which arrivals (`$context` 3 = reached user mode, 0 = reached kernel mode,
    /// HyperDbg's values).
    Mode { user: bool, kernel: bool },
}

/// `!trace` types, HyperDbg's `DEBUGGER_EVENT_TRACE_TYPE` values.
pub mod trace_type {
    pub const STEP_IN: u64 = 1;
    pub const STEP_OUT: u64 = 2;
    pub const INSTRUMENT_STEP: u64 = 3;
}

/// The options common to every event command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventOptions {
    pub pid: Option<u64>,
    pub core: Option<u32>,
    pub immediate: bool,
    pub short_circuit: bool,
    pub stage: StageMode,
    pub buffer: Option<u64>,
    pub output: Vec<String>,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            pid: None,
            core: None,
            immediate: true,
            short_circuit: false,
            stage: StageMode::Pre,
            buffer: None,
            output: Vec::new(),
        }
    }
}

/// What happened to an event; shared by every table version that holds it.
#[derive(Debug, Default)]
pub struct Counters {
    pub pre_runs: AtomicU64,
    pub post_runs: AtomicU64,
    /// Pre executions that ended short-circuited.
    pub short_circuits: AtomicU64,
    /// `event_sc` calls refused in the post stage.
    pub refused_short_circuits: AtomicU64,
    pub script_errors: AtomicU64,
    pub fuel_exhaustions: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub pre_runs: u64,
    pub post_runs: u64,
    pub short_circuits: u64,
    pub refused_short_circuits: u64,
    pub script_errors: u64,
    pub fuel_exhaustions: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        CounterValues {
            pre_runs: self.pre_runs.load(Ordering::Relaxed),
            post_runs: self.post_runs.load(Ordering::Relaxed),
            short_circuits: self.short_circuits.load(Ordering::Relaxed),
            refused_short_circuits: self.refused_short_circuits.load(Ordering::Relaxed),
            script_errors: self.script_errors.load(Ordering::Relaxed),
            fuel_exhaustions: self.fuel_exhaustions.load(Ordering::Relaxed),
        }
    }
}

/// A parsed event command, before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub kind: EventKind,
    pub filter: Filter,
    pub options: EventOptions,
    /// The text inside `script { ... }` and its byte offset in the command line, so a
    /// compiler's diagnostics can point into the command.
    pub script: Option<(String, usize)>,
    /// The command as the user typed it (for the `events` listing).
    pub text: String,
}

/// An event in the table.
pub struct Event {
    pub id: u64,
    pub spec: EventSpec,
    pub script: Option<Arc<dyn Script>>,
    /// Shared by every version of the event (see `Engine::replace_script`).
    pub counters: Arc<Counters>,
    /// The safe buffer of `buffer SIZE`, visible to the script at `$buffer`.
    pub buffer: Option<Arc<spin::Mutex<Vec<u8>>>>,
}

impl Event {
    pub fn tag(&self) -> u64 {
        self.id + EVENT_TAG_BASE
    }
}
