//! hv-kvm: a real hypervisor on Linux KVM that raises hv-core events.
//!
//! [`Vm`] boots the embedded demo guest ([`demo`]) in 64-bit mode on several vCPUs (one
//! thread each), and turns the exits this machine's KVM delivers (spec/kvm.md) into
//! hv-core exits with real calling stages: `!ioin`/`!ioout` from `KVM_EXIT_IO`,
//! `!msrread`/`!msrwrite` from user-space MSR exits, `!monitor r|w|rw` from MMIO exits of
//! pages taken out of the RAM slot ([`monitor`]), `!cpuid` for CPL0 CPUIDs by
//! single-stepping CPL0 code, `!exception` from the VMM-owned IDT stubs, `!syscall` /
//! `!sysret` from SYSCALL/SYSRET the VMM emulates (EFER.SCE kept clear), `!epthook` /
//! `!epthook2` from hardware execute breakpoints on kernel code (details in [`vmm`], one
//! module per exit kind).
//! Events KVM cannot deliver here are
//! refused ([`script::refusal`]) rather than faked. Scripts are compiled by script-lang and
//! run by its interpreter ([`script::InterpScript`]). Events can be added, enabled, disabled
//! and cleared while the guest runs, over a unix socket ([`control`]).

pub mod boot;
mod commands;
pub mod control;
pub mod demo;
pub mod memory;
pub mod monitor;
pub mod output;
pub mod program;
pub mod script;
pub mod script_checks;
pub mod vmm;

pub use demo::{GuestCounters, COUNTER_PORT, DATA_PORT, DEMO_MSR, EXIT_PORT};
pub use script::{
    compile_event, compile_event_with, refusal, CompiledEvent, EventError, InterpScript, JitScript,
};
pub use vmm::{
    data_value, demo_msr_initial, DeviceCounters, ExitCounts, RunReport, StopReason, VcpuReport,
    Vm, VmConfig, VmError,
};

/// Whether `/dev/kvm` can be opened here; `Err` says why not (for tests that skip).
pub fn kvm_available() -> Result<(), String> {
    kvm_ioctls::Kvm::new()
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
}
