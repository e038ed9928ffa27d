//! What a run gives back: why each vCPU stopped ([`StopReason`]) and what it did
//! (exits, devices, guest counters), per vCPU and for the whole run.

use std::time::Duration;

use crate::demo::GuestCounters;

/// Why a vCPU stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// OUT to the exit port, with EAX.
    GuestExit(u32),
    /// An exception reached the guest's IDT stub.
    Exception {
        vector: u8,
        rip: u64,
        error_code: u64,
        /// CS and RFLAGS of the interrupted code.
        cs: u64,
        rflags: u64,
    },
    Halted,
    Shutdown,
    /// Kicked out after the hard timeout.
    TimedOut,
    /// `Vm::kill` asked for it.
    Killed,
    Error(String),
}

/// The short name of an exception vector (`#DB`, `#GP`, ...), as the SDM writes it.
pub fn vector_name(vector: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
        "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    NAMES
        .get(usize::from(vector))
        .copied()
        .unwrap_or("interrupt")
}

/// In words and hex, for summaries: `exit(0)`, `#DB at rip 0x10315`, ...
impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::GuestExit(code) => write!(f, "exit({code})"),
            StopReason::Exception {
                vector,
                rip,
                error_code,
                cs,
                ..
            } => {
                write!(
                    f,
                    "{} at rip {rip:#x} (vector {vector}, CPL{}",
                    vector_name(*vector),
                    cs & 3
                )?;
                if *error_code != 0 {
                    write!(f, ", error code {error_code:#x}")?;
                }
                f.write_str(", no guest handler)")
            }
            StopReason::Halted => f.write_str("halted (HLT)"),
            StopReason::Shutdown => f.write_str("shutdown (triple fault)"),
            StopReason::TimedOut => f.write_str("timed out"),
            StopReason::Killed => f.write_str("killed"),
            StopReason::Error(e) => write!(f, "VMM error: {e}"),
        }
    }
}

/// The devices one vCPU talked to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// INs from the data port the device answered.
    pub data_reads: u64,
    /// Sum of the values it answered.
    pub data_sum: u64,
    /// OUTs to the counter port the device received, and the sum of their values.
    pub counter_writes: u64,
    pub counter_sum: u64,
    /// Accesses to other ports (IN answers all ones).
    pub other_in: u64,
    pub other_out: u64,
}

/// Exits seen by one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    pub io_in: u64,
    pub io_out: u64,
    pub rdmsr: u64,
    pub wrmsr: u64,
    /// `KVM_EXIT_MMIO` reads and writes (watched pages of `!monitor`).
    pub mmio_read: u64,
    pub mmio_write: u64,
    /// `KVM_EXIT_DEBUG` single-step exits (CPL0 stepping for `!cpuid`).
    pub steps: u64,
    /// Reports of the VMM-owned exception stubs (an OUT to the exception port, which is
    /// not guest I/O and raises no `!ioout`).
    pub exceptions: u64,
    /// Of those, the #UDs that were a SYSCALL / SYSRET the VMM emulated (not in
    /// [`ExitCounts::total`]: already counted in `exceptions`).
    pub syscalls: u64,
    pub sysrets: u64,
    /// Hardware execute-breakpoint exits (`!epthook`/`!epthook2`); the step over the
    /// hooked instruction counts in `steps`.
    pub breakpoints: u64,
    pub other: u64,
    /// `immediate_exit` re-entries made to run a post stage.
    pub completions: u64,
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.io_in
            + self.io_out
            + self.rdmsr
            + self.wrmsr
            + self.mmio_read
            + self.mmio_write
            + self.steps
            + self.exceptions
            + self.breakpoints
            + self.other
    }
}

/// What one vCPU did.
#[derive(Clone, Debug)]
pub struct VcpuReport {
    pub cpu: usize,
    pub stop: StopReason,
    pub guest: GuestCounters,
    pub devices: DeviceCounters,
    pub exits: ExitCounts,
    /// The demo MSR's value in the VMM's model at the end.
    pub demo_msr: u64,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub vcpus: Vec<VcpuReport>,
    pub elapsed: Duration,
}

impl RunReport {
    pub fn total_exits(&self) -> u64 {
        self.vcpus.iter().map(|v| v.exits.total()).sum()
    }
}
