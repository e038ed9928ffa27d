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
//! refused ([`platform::refusal`]) rather than faked.
//!
//! **The VM loads; it does not compile.** hv-kvm links hv-core and the runtime, never the
//! compiler (grammar, script-lang, the JIT, Cranelift). A front end (the `hvscript-front`
//! crate, used by `hvscript run` and `attach`) parses a command line, checks it against
//! [`KvmPlatform`] (the kinds, registers and pseudo-registers hv-kvm supports), compiles
//! it, and hands [`Vm::command`] the line with a [`Prepared`]: code-object bytes (or an
//! in-process `Script`, the interpreter) and the global bindings it compiled against. The
//! VM parses the line itself for the event's spec, validates and loads the object
//! (`hvscript_runtime::CodeObject`, `LoadedCode`), vets its usage sets against
//! [`KvmPlatform`] again, and runs it as an `hv_core::CodeScript`. It owns the session's
//! global names and values ([`Vm::global_names`], [`Vm::bind_globals`]). Events can be
//! added, enabled, disabled and cleared while the guest runs, over a unix socket
//! ([`control`]) that carries code objects.

pub mod boot;
mod commands;
pub mod control;
pub mod debugger;
pub mod debugger_commands;
pub mod demo;
pub mod global_names;
mod loading;
pub mod memory;
pub mod monitor;
pub mod output;
pub mod output_json;
pub mod output_thread;
pub mod platform;
pub mod probe;
pub mod program;
pub mod vmm;

pub use demo::{GuestCounters, COUNTER_PORT, DATA_PORT, DEMO_MSR, EXIT_PORT};
pub use hv_core::{CommandError, Prepared};
pub use platform::{refusal, KvmPlatform};
pub use vmm::{
    data_value, demo_msr_initial, DeviceCounters, ExitCounts, RunReport, StopReason, VcpuReport,
    Vm, VmConfig, VmError, STALE_GLOBALS,
};

/// Whether `/dev/kvm` can be opened here; `Err` says why not (for tests that skip).
pub fn kvm_available() -> Result<(), String> {
    kvm_ioctls::Kvm::new()
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
}
