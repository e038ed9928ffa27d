//! The VMM: a KVM virtual machine running the demo guest on N vCPUs (one thread each),
//! with every port-I/O, user-space MSR and MMIO exit, CPL0 CPUID step, exception stub
//! report, emulated SYSCALL/SYSRET and execute-hook breakpoint turned into an hv-core
//! exit.
//!
//! ## How an exit is staged
//!
//! For `KVM_EXIT_IO` and `KVM_EXIT_X86_RDMSR/WRMSR`, when some event of that kind exists:
//! 1. the registers come from `kvm_run.s.regs` (`KVM_CAP_SYNC_REGS`, no ioctl);
//! 2. [`hv_core::Engine::handle_exit`] runs the pre stage; the *emulation* closure is the
//!    VMM's device / MSR model, fed from the registers as the pre scripts left them (an
//!    OUT sends `@eax`'s low bytes, a WRMSR writes `@edx:@eax`, a RDMSR reads MSR `@ecx`);
//! 3. when a post stage may run, the emulation then completes the instruction inside KVM
//!    right away: `immediate_exit = 1` + `KVM_RUN` finishes the I/O or MSR access (the IN
//!    lands in RAX, RIP moves on) and returns `EINTR` without running the guest; the post
//!    scripts then see and may change the registers after the instruction;
//! 4. registers changed by scripts go back through `kvm_dirty_regs`.
//!
//! A short-circuit skips the device/MSR model: an IN then returns what the scripts left in
//! `@eax` (its low `size` bytes), an OUT reaches no device, a WRMSR leaves the MSR as it
//! was, a RDMSR returns `@edx:@eax` as the scripts left them.
//!
//! When no event of the exit's kind exists, the exit takes a fast path (no register sync,
//! no engine call).
//!
//! ## `!monitor` (MMIO exits; layout and parking in [`crate::monitor`])
//!
//! `$context` is the lowest watched byte of the access (its exact address when the access
//! starts inside the range). The script sees the access data in `@dr0` and its length in
//! `@dr1` (hv-kvm exposes no guest debug registers otherwise): pre of a write = the
//! value being written, pre of a read = the value the read will return (the old memory);
//! a pre-stage change of `@dr0` changes what is written / read. `dq($context)` reads the
//! old memory in pre and the new memory in post. A write exits with RIP already past the
//! instruction; its emulation stores `@dr0` into guest RAM, and a short-circuit drops it
//! (memory unchanged). A read exits at the instruction; its emulation supplies `@dr0`;
//! for post (or when pre scripts changed registers) it is completed at once with
//! `immediate_exit` — KVM's emulator loses the destination register if registers are
//! written between the exit and the completion, so pre-stage register changes are merged
//! after it (registers the instruction did not write take the scripts' values). A
//! short-circuited read completes the instruction (RIP moves past it) and then restores
//! every register as the scripts left them. One instruction raises one event: the write
//! half of a read-modify-write completed inline is applied without an event.
//!
//! ## `!cpuid` (CPL0 single-stepping)
//!
//! While any enabled `!cpuid` (or `!sysret`) event exists, each vCPU turns on
//! `KVM_GUESTDBG_SINGLESTEP` at its next exit *in kernel mode*, and off again at its next
//! exit once none exists. Switching it on makes KVM set RFLAGS.TF in the guest (it
//! remembers the RIP it did it at); at CPL3, which this KVM runs natively, that TF is a
//! real trap flag: the next user instruction raises a #DB that KVM delivers to the guest,
//! not to the VMM (an OUT exits with RIP already past it, so stepping switched on at an
//! OUT's exit killed the guest). So `KVM_SET_GUEST_DEBUG` is never called with
//! SINGLESTEP in user mode: a vCPU there waits for its next CPL0 exit before it steps,
//! and one that must reprogram its execute hooks in user mode switches stepping off
//! until then. CPL3 code is never stepped anyway, and kernel code is entered from user
//! mode only through the VMM-owned exception stubs (SYSCALL included), which exit at
//! their OUT before any guest kernel instruction runs. A completion through
//! `immediate_exit` while stepping may come back as the step exit that follows the
//! completed instruction: the step is then taken as done and the next instruction looked
//! at after the exit's post stage.
//!
//! After every CPL0 step the VMM looks at the next instruction; at a `CPUID` (0F A2) it
//! runs pre (`$context` = EAX), then one step (KVM executes CPUID from its CPUID table),
//! then post. Short-circuit: RIP += 2, registers as the scripts left them. Cost: one
//! `KVM_EXIT_DEBUG` per CPL0 instruction (~7 µs each here, spec/kvm.md) while the event
//! exists (and one after each IN completed in user mode while stepping is on); CPL3
//! otherwise runs unaffected. **CPL3 CPUIDs are not
//! raised**: single-step does nothing at CPL3 on this KVM, and the trap-flag alternative
//! would run all user code through the guest's #DB stub (~26 k instructions/s) and is
//! visible to the guest (PUSHF), so it is not done.
//!
//! ## `!exception` (VMM-owned IDT stubs)
//!
//! Every IDT vector 0..32 points at a VMM-owned stub that OUTs the vector to the
//! exception port. That OUT is not guest I/O (no `!ioout`); it raises `!exception` with
//! `$context` = vector, and scripts see the interrupted context (RAX/RDX from the stub's
//! saves, RIP/RFLAGS/RSP from the frame; their writes go back there). Delivery = the stub
//! calls the guest's own handler for the vector (the VMM answers with its address in
//! RAX); a vector without a guest handler stops the vCPU as before. Post runs once
//! delivery is arranged. Short-circuit = not delivered: the code resumes after a `ud2`,
//! after the instruction for traps (the frame already points past `int3`/`into`), and at
//! the faulting instruction for every other fault (the script removes the cause, e.g.
//! sets a non-zero divisor for #DE).
//!
//! ## `!syscall` / `!sysret` (HyperDbg's EFER.SCE trick, adapted to this KVM)
//!
//! EFER.SCE stays clear and the VMM emulates SYSCALL and SYSRET itself, per the Intel
//! SDM's pseudo-code (`emulate_sys`), from the STAR/LSTAR/FMASK of its own MSR model
//! (guest RDMSR/WRMSR of 0xc0000081..=0xc0000084 always exit to the VMM; STAR and FMASK
//! are also given to KVM, LSTAR never is). Measured on this KVM, the trick needs two
//! adaptations:
//!
//! - **SYSCALL at CPL3 does not #UD** with SCE clear: it jumps to KVM's LSTAR *staying
//!   at CPL3* (RCX/R11 set as SYSCALL does). So KVM's LSTAR is a VMM-owned `ud2`
//!   ([`GuestImage::syscall_trap`]): the #UD there reaches the VMM-owned stub, and the
//!   VMM, checking `0F 05` at RCX - 2, takes it as that SYSCALL (RIP = RCX - 2, RFLAGS =
//!   R11; the instruction's own RCX/R11 are lost, SYSCALL overwrites them anyway). A
//!   SYSCALL at CPL0 (KVM's emulator) does #UD at the instruction and is recognised by
//!   its bytes.
//! - **SYSRET at CPL0 does not #UD** either: KVM executes it itself. While a `!sysret`
//!   event exists, CPL0 code is single-stepped as for `!cpuid`, and a `[REX] 0F 07` at
//!   RIP raises `!sysret` (`$context` = its RIP); the VMM's emulated result enters the
//!   guest through a VMM-owned IRETQ ([`GuestImage::iretq_trampoline`], frame in the
//!   vCPU's block). Without a `!sysret` event KVM's own SYSRET runs (with the STAR the
//!   VMM forwarded). A SYSRET that does #UD (another KVM) is recognised by its bytes.
//!
//! Staging: pre with `$context` = RAX (syscall) / the RIP of the SYSRET, the emulation
//! from the registers as the pre scripts left them, post with the state after it (RIP =
//! LSTAR, CS/SS from STAR, RCX/R11 saved, RFLAGS masked; for SYSRET CPL3 at RCX). The
//! result reaches the guest through the stub's IRETQ frame (selectors from the GDT,
//! which the demo lays out the way SYSCALL expects). Short-circuit: no emulation, the
//! code resumes after the instruction with the scripts' registers (a short-circuited
//! SYSCALL never reaches the kernel). A #UD that is not one of these still goes to
//! `!exception` / the guest's handler; a SYSRET at CPL3 or to a non-canonical RCX (a
//! #GP on hardware) is left a #UD. Costs: `tests/costs.rs`.
//!
//! ## `!epthook` / `!epthook2` (hardware execute breakpoints, CPL0 code)
//!
//! Each distinct hooked address takes one of DR0..DR3 (`KVM_SET_GUEST_DEBUG` with
//! `KVM_GUESTDBG_USE_HW_BP`; a fifth address is refused). Hooks change while the guest
//! runs: [`Vm`] publishes the new set and parks every vCPU once (as for memory slots),
//! and each vCPU reprograms its debug registers before it runs guest code again. The
//! breakpoint exit comes *before* the instruction executes: the events run (`!epthook`
//! then `!epthook2`, no stages, `$context` = the address, register changes applied),
//! then the VMM steps over the instruction with the breakpoints off (KVM reports a host
//! breakpoint again at the same RIP, RFLAGS.RF notwithstanding) and puts them back. The
//! guest's code bytes are never changed, so the hook is invisible to the guest reading
//! its code. In HyperDbg, `!epthook` is a hidden breakpoint (an EPT-hidden int3) and
//! `!epthook2` a hidden inline detour that does not exit per execution; here both are
//! the same breakpoint and differ only in the event kind they raise. Addresses in CPL3
//! code are refused (hardware breakpoints and int3 do not exit at CPL3 on this KVM), as
//! are instructions that leave CPL0 or exit to the VMM themselves (the step over them
//! would not end in a step exit).
//!
//! ## MSRs
//!
//! `KVM_CAP_X86_USER_SPACE_MSR` (unknown + filtered MSRs exit to user space) and an MSR
//! filter rebuilt whenever events change: the MSR named by each `!msrread X` /
//! `!msrwrite X` is denied to the guest (so it exits); an event with no MSR filter denies
//! the architectural ranges 0..0x2000 and 0xc0000000..0xc0002000. The VMM models
//! 0x40001000..=0x400010ff itself (a real per-vCPU store; the demo guest's MSR starts at
//! `0x5eed_0000_0000 + 0x100 * vcpu`); other MSRs it forwards to KVM with
//! `KVM_GET_MSRS`/`KVM_SET_MSRS` (host-initiated accesses bypass the filter); an MSR that
//! neither knows gets #GP, as on hardware.
//!
//! ## Stopping
//!
//! The guest stops on its own with an OUT to the exit port. The VMM can ask it to stop
//! (a flag in its data block the user loop checks), and past the hard timeout it kicks the
//! vCPU threads out of `KVM_RUN` with a signal: no loop here waits forever.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use hv_core::{Access, Engine, EventKind, Exit, Filter, OutputSink, SymbolMap, Target};
use hvscript_abi::GuestRegs;
use hvscript_lang::Globals;
use hvscript_stdlib::EventOp;
use kvm_bindings::{
    kvm_enable_cap, kvm_guest_debug, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, Msrs, KVM_CAP_X86_USER_SPACE_MSR, KVM_EXIT_IO, KVM_EXIT_IO_IN,
    KVM_EXIT_MMIO, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY,
    KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_SYNC_X86_REGS,
};
use kvm_ioctls::{
    Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, SyncReg, VcpuExit,
    VcpuFd, VmFd,
};

use crate::boot;
use crate::demo::{
    demo_image, field, GuestCounters, GuestImage, COUNTER_PORT, DATA_PORT, DEMO_MSR,
    EXCEPTION_PORT, EXIT_PORT, MSR_FMASK, MSR_LSTAR, MSR_STAR,
};
use crate::memory::{GuestMemory, GuestView};
use crate::monitor::{self, Slot, Watch};
use crate::output::OutputRouter;
use crate::script::{compile_event_with, EventError};
use hvscript_lang::Backend;

/// MSRs the VMM models itself.
pub const MODELLED_MSRS: std::ops::RangeInclusive<u32> = 0x4000_1000..=0x4000_10ff;

/// The SYSCALL MSRs (STAR, LSTAR, CSTAR, FMASK): guest reads and writes always exit
/// (MSR filter) and the VMM answers them from its per-vCPU model, which its
/// SYSCALL/SYSRET emulation uses. They are never given to KVM: measured, with a
/// non-zero LSTAR in KVM a CPL3 SYSCALL on this KVM no longer raises #UD but jumps to
/// LSTAR while staying at CPL3 (EFER.SCE notwithstanding).
pub const SYSCALL_MSRS: std::ops::RangeInclusive<u32> = 0xc000_0081..=0xc000_0084;

/// Execute hooks (`!epthook`/`!epthook2`) at once: one per debug register DR0..DR3.
pub const MAX_HOOKS: usize = 4;

/// The initial value of the demo MSR on a vCPU.
pub fn demo_msr_initial(cpu: usize) -> u64 {
    0x5eed_0000_0000 + 0x100 * cpu as u64
}

/// The value the data device returns for the `seq`-th IN on a vCPU.
pub fn data_value(cpu: usize, seq: u64) -> u32 {
    0x1000_0000 | ((cpu as u32 & 0xff) << 16) | (seq as u32 & 0xffff)
}

/// How to run the guest.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub vcpus: usize,
    /// User-loop iterations per vCPU; 0 runs until asked to stop.
    pub iterations: u64,
    /// Kernel-mode RDMSR/WRMSR rounds per vCPU (CPL0 is emulated: keep it small).
    pub msr_rounds: u64,
    /// Ask the guest to stop after this long (its loop ends cleanly).
    pub duration: Option<Duration>,
    /// Hard limit: past it the vCPUs are kicked out of KVM_RUN and reported as timed out.
    pub timeout: Duration,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 2,
            iterations: 1000,
            msr_rounds: 3,
            duration: None,
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
pub enum VmError {
    /// `/dev/kvm` cannot be opened or lacks something this VMM needs.
    Unavailable(String),
    Setup(String),
}

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmError::Unavailable(m) => write!(f, "KVM unavailable: {m}"),
            VmError::Setup(m) => write!(f, "VM setup failed: {m}"),
        }
    }
}

impl std::error::Error for VmError {}

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

fn kind_bit(kind: EventKind) -> u32 {
    1 << (kind as u32)
}

/// A virtual machine with the demo guest loaded, ready to run once.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Mutex<Vec<VcpuFd>>,
    vm: VmFd,
    _kvm: Kvm,
    mem: GuestMemory,
    engine: Arc<Engine>,
    globals: Arc<Globals>,
    /// Where event messages go (console, output sources, `imm no` buffers).
    output: Arc<OutputRouter>,
    /// Names usable in event arguments and scripts (`--sym`).
    symbols: RwLock<SymbolMap>,
    /// Interpret event scripts instead of compiling them (`Vm::set_interpreted`).
    interpreted: AtomicBool,
    config: VmConfig,
    image: GuestImage,
    sync_regs: bool,
    /// `KVM_CAP_READONLY_MEM` (write-only `!monitor` watching).
    readonly_mem: bool,
    /// Kinds that have at least one enabled event (recomputed by every change made
    /// through [`Vm`]; a script's `event_clear` may leave a bit set, which only costs
    /// speed) / that ever had a post-or-all event (only grows: an exit that read it
    /// before a change may run a post stage of the table it took, which needs the
    /// completion done).
    kinds: AtomicU32,
    post_kinds: AtomicU32,
    /// Serialises event changes with the MSR filter they imply.
    events_lock: Mutex<()>,
    stop_requested: AtomicBool,
    kill_requested: AtomicBool,
    /// The memory slots now registered (slot i is `slots[i]`).
    slots: Mutex<Vec<Slot>>,
    /// The enabled `!monitor` ranges (physical), read on every MMIO exit.
    watches: RwLock<Arc<Vec<Watch>>>,
    /// Parking the vCPUs outside KVM_RUN (memory slot changes).
    park: ParkControl,
    /// Set while `run` has vCPU threads.
    running: AtomicBool,
    /// The enabled execute hooks' addresses (at most [`MAX_HOOKS`], in debug-register
    /// order) and a generation each vCPU compares with what it programmed.
    hooks: RwLock<Arc<Vec<u64>>>,
    hooks_gen: AtomicU64,
    /// Per vCPU: its thread (pthread_t, 0 before it starts) and whether it finished.
    thread_ids: Vec<AtomicU64>,
    done: Vec<AtomicBool>,
}

/// The vCPU parking protocol (see [`Vm::with_vcpus_parked`]).
#[derive(Default)]
struct ParkControl {
    requested: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    parked: Vec<AtomicBool>,
}

impl Vm {
    /// Creates the VM, its memory, vCPUs and the demo guest.
    pub fn new(config: VmConfig, sink: Arc<dyn OutputSink>) -> Result<Vm, VmError> {
        if config.vcpus == 0 || config.vcpus > boot::MAX_VCPUS {
            return Err(VmError::Setup(format!(
                "--vcpus must be between 1 and {}",
                boot::MAX_VCPUS
            )));
        }
        let kvm = Kvm::new().map_err(|e| VmError::Unavailable(format!("/dev/kvm: {e}")))?;
        let vm = kvm
            .create_vm()
            .map_err(|e| VmError::Unavailable(format!("KVM_CREATE_VM: {e}")))?;
        if !kvm.check_extension(Cap::X86UserSpaceMsr) || !kvm.check_extension(Cap::X86MsrFilter) {
            return Err(VmError::Unavailable(
                "KVM_CAP_X86_USER_SPACE_MSR / KVM_CAP_X86_MSR_FILTER missing".into(),
            ));
        }
        let sync_regs = kvm.check_extension(Cap::SyncRegs);
        let readonly_mem = kvm.check_extension(Cap::ReadonlyMem);
        let setup = |what: &str, e: kvm_ioctls::Error| VmError::Setup(format!("{what}: {e}"));
        // Only VMX real mode needs it; this KVM may not: ignore failure.
        let _ = vm.set_tss_address(0xfffb_d000);
        let cap = kvm_enable_cap {
            cap: KVM_CAP_X86_USER_SPACE_MSR,
            args: [
                u64::from(KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN),
                0,
                0,
                0,
            ],
            ..Default::default()
        };
        vm.enable_cap(&cap)
            .map_err(|e| setup("KVM_CAP_X86_USER_SPACE_MSR", e))?;

        let mem =
            GuestMemory::new(boot::MEM_SIZE).map_err(|e| VmError::Setup(format!("mmap: {e}")))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size() as u64,
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: the region is our own live mapping of exactly `memory_size` bytes; it
        // outlives the VM (field order in `Vm` drops the VM first).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| setup("KVM_SET_USER_MEMORY_REGION", e))?;
        install_kick_handler();

        let image = demo_image().map_err(|e| VmError::Setup(format!("assembling: {e}")))?;
        mem.write(image.load_addr, &image.code)
            .map_err(|_| VmError::Setup("guest code does not fit".into()))?;
        boot::write_tables(&mem, config.vcpus, &image.stubs).map_err(VmError::Setup)?;

        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| setup("KVM_GET_SUPPORTED_CPUID", e))?;
        let n = config.vcpus;
        let mut vcpus = Vec::new();
        for cpu in 0..config.vcpus {
            let mut vcpu = vm
                .create_vcpu(cpu as u64)
                .map_err(|e| setup("KVM_CREATE_VCPU", e))?;
            vcpu.set_cpuid2(&cpuid)
                .map_err(|e| setup("KVM_SET_CPUID2", e))?;
            let sregs = vcpu.get_sregs().map_err(|e| setup("KVM_GET_SREGS", e))?;
            vcpu.set_sregs(&boot::long_mode_sregs(sregs, cpu))
                .map_err(|e| setup("KVM_SET_SREGS", e))?;
            let regs = boot::entry_regs(
                cpu,
                image.entry,
                [
                    cpu as u64,
                    boot::per_cpu(cpu),
                    config.iterations,
                    config.msr_rounds,
                ],
            );
            vcpu.set_regs(&regs).map_err(|e| setup("KVM_SET_REGS", e))?;
            // KVM's LSTAR is the VMM's SYSCALL trap (the guest's LSTAR lives in the
            // VMM's model): see "SYSCALL / SYSRET" in the module documentation.
            let lstar = Msrs::from_entries(&[kvm_msr_entry {
                index: MSR_LSTAR,
                data: image.syscall_trap,
                ..Default::default()
            }])
            .map_err(|e| VmError::Setup(format!("LSTAR entry: {e:?}")))?;
            vcpu.set_msrs(&lstar)
                .map_err(|e| setup("KVM_SET_MSRS (LSTAR)", e))?;
            if sync_regs {
                vcpu.set_sync_valid_reg(SyncReg::Register);
                vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            }
            vcpus.push(vcpu);
        }
        let output = Arc::new(OutputRouter::new(sink));
        let vm = Vm {
            vcpus: Mutex::new(vcpus),
            vm,
            _kvm: kvm,
            mem,
            engine: Arc::new(Engine::new(output.clone())),
            globals: Arc::new(Globals::default()),
            output,
            symbols: RwLock::new(SymbolMap::default()),
            interpreted: AtomicBool::new(false),
            config,
            image,
            sync_regs,
            readonly_mem,
            kinds: AtomicU32::new(0),
            post_kinds: AtomicU32::new(0),
            events_lock: Mutex::new(()),
            stop_requested: AtomicBool::new(false),
            kill_requested: AtomicBool::new(false),
            slots: Mutex::new(vec![Slot {
                gpa: 0,
                size: boot::MEM_SIZE as u64,
                readonly: false,
            }]),
            watches: RwLock::new(Arc::new(Vec::new())),
            park: ParkControl {
                parked: (0..n).map(|_| AtomicBool::new(false)).collect(),
                ..Default::default()
            },
            running: AtomicBool::new(false),
            hooks: RwLock::new(Arc::new(Vec::new())),
            hooks_gen: AtomicU64::new(0),
            thread_ids: (0..n).map(|_| AtomicU64::new(0)).collect(),
            done: (0..n).map(|_| AtomicBool::new(false)).collect(),
        };
        vm.update_msr_filter()?;
        Ok(vm)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session's global variables, shared by every event and `?`.
    pub fn globals(&self) -> &Arc<Globals> {
        &self.globals
    }

    /// The output router: sources, `imm no` buffers, the console.
    pub fn output(&self) -> &Arc<OutputRouter> {
        &self.output
    }

    /// The names usable in event arguments and scripts.
    pub fn symbols(&self) -> SymbolMap {
        self.symbols
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds names (`--sym NAME=ADDR`) for later commands.
    pub fn add_symbols(&self, names: impl IntoIterator<Item = (String, u64)>) {
        self.symbols
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .extend(names);
    }

    /// CR3 of the guest's boot page tables (every vCPU starts with it).
    pub fn boot_cr3(&self) -> u64 {
        boot::PML4_ADDR
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Parses, checks, compiles and adds an event command; works while the guest runs.
    pub fn add_event(&self, line: &str) -> Result<u64, EventError> {
        let backend = if self.interpreted.load(Ordering::Relaxed) {
            Backend::Interp
        } else {
            Backend::Jit
        };
        let compiled = compile_event_with(line, &self.globals, backend, &self.symbols())?;
        let whole_line = |msg: String| EventError {
            diagnostics: vec![hvscript_grammar::Diagnostic::error(
                msg,
                hvscript_grammar::ast::Span::new(0, line.trim_end().len().max(1)),
            )],
        };
        if compiled.spec.kind == EventKind::Monitor {
            if !self.readonly_mem {
                return Err(whole_line(
                    "!monitor cannot be raised by hv-kvm: this KVM lacks KVM_CAP_READONLY_MEM"
                        .into(),
                ));
            }
            self.monitor_watch(&compiled.spec.filter)
                .map_err(|why| whole_line(format!("!monitor cannot watch this range: {why}")))?;
        }
        if let (EventKind::EptHook | EventKind::EptHook2, Filter::Address(addr)) =
            (compiled.spec.kind, &compiled.spec.filter)
        {
            let name = compiled.spec.kind.command();
            self.hook_check(*addr)
                .map_err(|why| whole_line(format!("!{name} cannot hook {addr:#x}: {why}")))?;
        }
        let outputs = compiled.spec.options.output.clone();
        let immediate = compiled.spec.options.immediate;
        if let Err(why) = self.output.check_names(&outputs) {
            let at = line.find("output").unwrap_or(0);
            return Err(EventError::at(
                why,
                at,
                at + "output".len(),
                Some("output create NAME file|tcp|namedpipe ADDRESS, then output open NAME".into()),
            ));
        }
        let _g = self.events_lock.lock().unwrap_or_else(|e| e.into_inner());
        let kind = compiled.spec.kind;
        let post = compiled.spec.options.stage.runs_post();
        // Publish the exit paths before the event so no exit of the new kind is missed.
        self.kinds.fetch_or(kind_bit(kind), Ordering::SeqCst);
        if post {
            self.post_kinds.fetch_or(kind_bit(kind), Ordering::SeqCst);
        }
        let id = self
            .engine
            .add(compiled.spec, compiled.script)
            .map_err(|e| EventError {
                diagnostics: vec![hvscript_grammar::Diagnostic::error(
                    e.to_string(),
                    hvscript_grammar::ast::Span::new(0, line.trim_end().len()),
                )],
            })?;
        self.output.route(id, &outputs, immediate);
        if let Err(e) = self
            .update_msr_filter()
            .and_then(|()| self.update_watches())
            .and_then(|()| self.update_hooks())
        {
            let _ = self.engine.apply(EventOp::Clear, Target::Id(id));
            self.republish_kinds();
            let _ = self.update_watches();
            let _ = self.update_hooks();
            return Err(EventError {
                diagnostics: vec![hvscript_grammar::Diagnostic::error(
                    e.to_string(),
                    hvscript_grammar::ast::Span::new(0, line.trim_end().len()),
                )],
            });
        }
        Ok(id)
    }

    /// `events e|d|c`: enables, disables or clears events.
    pub fn apply(&self, op: EventOp, target: Target) -> Result<usize, hv_core::EngineError> {
        let _g = self.events_lock.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<u64> = match (op, target) {
            (EventOp::Clear, Target::All) => self.engine.list().iter().map(|l| l.id).collect(),
            (EventOp::Clear, Target::Id(id)) => vec![id],
            _ => Vec::new(),
        };
        let n = self.engine.apply(op, target)?;
        for id in before {
            self.output.unroute(id);
        }
        self.republish_kinds();
        let _ = self.update_msr_filter();
        let _ = self.update_watches();
        let _ = self.update_hooks();
        Ok(n)
    }

    /// Recomputes [`Vm::kinds`] from the enabled events, after the engine published its
    /// table (an exit that still sees a cleared kind's bit finds no event of it in the
    /// new table). The caller holds `events_lock`, so no bit an add set is lost.
    fn republish_kinds(&self) {
        let table = self.engine.snapshot();
        let kinds = EventKind::ALL
            .iter()
            .filter(|&&k| table.events_of(k).any(|(_, enabled)| enabled))
            .fold(0, |bits, &k| bits | kind_bit(k));
        self.kinds.store(kinds, Ordering::SeqCst);
    }

    /// The physical watch of a `!monitor` filter on this VM, or why it cannot be watched.
    fn monitor_watch(&self, filter: &Filter) -> Result<Watch, String> {
        let code_end = self.image.load_addr + self.image.code.len() as u64;
        monitor::check(filter, &self.mem, code_end, self.config.vcpus)
    }

    /// The memory slots registered now (for tests and reports).
    pub fn memory_slots(&self) -> Vec<Slot> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn current_watches(&self) -> Arc<Vec<Watch>> {
        self.watches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the memory slots from the enabled `!monitor` events (module `monitor`):
    /// parks the vCPUs while the slots change.
    fn update_watches(&self) -> Result<(), VmError> {
        let mut watches = Vec::new();
        let table = self.engine.snapshot();
        for (e, enabled) in table.events_of(EventKind::Monitor) {
            if enabled {
                if let Ok(w) = self.monitor_watch(&e.spec.filter) {
                    watches.push(w);
                }
            }
        }
        let slots = monitor::layout(self.mem.size() as u64, &monitor::page_modes(&watches));
        let watches = Arc::new(watches);
        if *self.current_watches() == *watches {
            return Ok(());
        }
        if self.memory_slots() == slots {
            *self.watches.write().unwrap_or_else(|e| e.into_inner()) = watches;
            return Ok(());
        }
        self.with_vcpus_parked(|| {
            *self.watches.write().unwrap_or_else(|e| e.into_inner()) = watches;
            self.set_slots(slots)
        })?
    }

    /// Replaces the registered memory slots (every vCPU is outside KVM_RUN).
    fn set_slots(&self, new: Vec<Slot>) -> Result<(), VmError> {
        let mut cur = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let region = |i: usize, s: &Slot, size: u64| kvm_userspace_memory_region {
            slot: i as u32,
            flags: if s.readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: s.gpa,
            memory_size: size,
            userspace_addr: self.mem.host_addr() + s.gpa,
        };
        for (i, s) in cur.iter().enumerate() {
            // SAFETY: size 0 deletes slot i; no host memory is handed to KVM.
            unsafe { self.vm.set_user_memory_region(region(i, s, 0)) }
                .map_err(|e| VmError::Setup(format!("deleting memory slot {i}: {e}")))?;
        }
        cur.clear();
        for (i, s) in new.iter().enumerate() {
            // SAFETY: each slot is a page-aligned piece of our own guest RAM mapping, which
            // outlives the VM (field order in `Vm`).
            unsafe { self.vm.set_user_memory_region(region(i, s, s.size)) }
                .map_err(|e| VmError::Setup(format!("memory slot {i} at {:#x}: {e}", s.gpa)))?;
            cur.push(*s);
        }
        Ok(())
    }

    /// Runs `f` while no vCPU is inside KVM_RUN: sets the park flag, kicks every running
    /// vCPU thread out of KVM_RUN with the kick signal (repeated until it parks, since a
    /// signal that lands outside KVM_RUN is not remembered), runs `f`, and releases them.
    fn with_vcpus_parked<R>(&self, f: impl FnOnce() -> R) -> Result<R, VmError> {
        self.park.requested.store(true, Ordering::SeqCst);
        let release = || {
            let _g = self.park.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.park.requested.store(false, Ordering::SeqCst);
            self.park.cv.notify_all();
        };
        if self.running.load(Ordering::SeqCst) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut all = true;
                for cpu in 0..self.config.vcpus {
                    if self.done[cpu].load(Ordering::SeqCst)
                        || self.park.parked[cpu].load(Ordering::SeqCst)
                    {
                        continue;
                    }
                    all = false;
                    let tid = self.thread_ids[cpu].load(Ordering::SeqCst);
                    if tid != 0 {
                        // SAFETY: `tid` is a vCPU thread of the running `run` scope that is
                        // not done (the scope joins threads only after they are done and
                        // `running` is cleared after the join); the handler does nothing.
                        unsafe { libc::pthread_kill(tid as libc::pthread_t, kick_signal()) };
                    }
                }
                if all {
                    break;
                }
                if Instant::now() > deadline {
                    release();
                    return Err(VmError::Setup(
                        "the vCPUs did not park within 5 s; memory slots unchanged".into(),
                    ));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let r = f();
        release();
        Ok(r)
    }

    /// Why an execute hook cannot be placed at `addr`, if it cannot: it must start an
    /// instruction of the guest's kernel code (CPL0: hardware execute breakpoints and
    /// int3 do not exit for CPL3 code on this KVM), that instruction must not leave
    /// CPL0 or exit to the VMM itself (the step over it must end in a step exit), and
    /// at most [`MAX_HOOKS`] distinct addresses may be hooked (DR0..DR3).
    pub fn hook_check(&self, addr: u64) -> Result<(), String> {
        use iced_x86::{Decoder, DecoderOptions, Mnemonic};
        let img = &self.image;
        let code_end = img.load_addr + img.code.len() as u64;
        if (img.user_entry..code_end).contains(&addr) {
            return Err(
                "it is in the guest's user code (CPL3), which runs natively: hardware \
                 execute breakpoints and int3 do not exit at CPL3 on this KVM (spec/kvm.md)"
                    .into(),
            );
        }
        if !(img.load_addr..img.user_entry).contains(&addr) {
            return Err(format!(
                "it is not in the guest's kernel code ({:#x}..{:#x})",
                img.load_addr, img.user_entry
            ));
        }
        let kernel = &img.code[..(img.user_entry - img.load_addr) as usize];
        let mut decoder = Decoder::with_ip(64, kernel, img.load_addr, DecoderOptions::NONE);
        let mut found = None;
        while decoder.can_decode() {
            let insn = decoder.decode();
            if insn.ip() == addr {
                found = Some(insn);
                break;
            }
            if insn.ip() > addr {
                break;
            }
        }
        let Some(insn) = found else {
            return Err("it is not the start of an instruction".into());
        };
        use Mnemonic::*;
        if matches!(
            insn.mnemonic(),
            Iret | Iretd
                | Iretq
                | Sysret
                | Sysretq
                | Sysexit
                | Sysexitq
                | Syscall
                | Ud2
                | In
                | Out
                | Insb
                | Insw
                | Insd
                | Outsb
                | Outsw
                | Outsd
                | Rdmsr
                | Wrmsr
                | Hlt
        ) {
            return Err(format!(
                "`{insn}` leaves kernel mode or exits to the VMM itself, so the step over \
                 it cannot be done"
            ));
        }
        let mut addrs: Vec<u64> = self.hook_events(false);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        if addrs.len() > MAX_HOOKS {
            return Err(format!(
                "at most {MAX_HOOKS} execute hooks exist at once (debug registers DR0..DR3); \
                 hooked now: {}",
                self.hook_events(false)
                    .iter()
                    .map(|a| format!("{a:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// The distinct addresses of the `!epthook`/`!epthook2` events (only the enabled
    /// ones when `enabled_only`), in the order they were added.
    fn hook_events(&self, enabled_only: bool) -> Vec<u64> {
        let table = self.engine.snapshot();
        let mut hooks: Vec<(u64, u64)> = table
            .events_of(EventKind::EptHook)
            .chain(table.events_of(EventKind::EptHook2))
            .filter(|(_, enabled)| *enabled || !enabled_only)
            .filter_map(|(e, _)| match e.spec.filter {
                Filter::Address(a) => Some((e.id, a)),
                _ => None,
            })
            .collect();
        hooks.sort_unstable();
        let mut addrs = Vec::new();
        for (_, a) in hooks {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs
    }

    /// The execute hooks programmed now (debug-register order).
    pub fn hooks(&self) -> Vec<u64> {
        self.hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
    }

    /// Republishes the enabled hooks; while the guest runs, parks every vCPU once so
    /// each reprograms its debug registers (`KVM_SET_GUEST_DEBUG` is a vCPU ioctl: the
    /// vCPU thread does it before its next `KVM_RUN`) before it runs guest code again.
    fn update_hooks(&self) -> Result<(), VmError> {
        let mut addrs = self.hook_events(true);
        addrs.truncate(MAX_HOOKS);
        if *self
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_slice()
            == addrs[..]
        {
            return Ok(());
        }
        *self.hooks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(addrs);
        self.hooks_gen.fetch_add(1, Ordering::SeqCst);
        self.with_vcpus_parked(|| ())
    }

    /// The enabled MSR events' filter: (index or None for "every MSR", read, write).
    fn watched_msrs(&self) -> (BTreeSet<(u32, bool)>, bool, bool) {
        let mut specific = BTreeSet::new();
        let (mut any_read, mut any_write) = (false, false);
        let table = self.engine.snapshot();
        let msr_events = table
            .events_of(EventKind::MsrRead)
            .chain(table.events_of(EventKind::MsrWrite));
        for (e, enabled) in msr_events {
            if !enabled {
                continue;
            }
            let write = e.spec.kind == EventKind::MsrWrite;
            match e.spec.filter {
                Filter::Value(v) => {
                    specific.insert((v as u32, write));
                }
                _ if write => any_write = true,
                _ => any_read = true,
            }
        }
        (specific, any_read, any_write)
    }

    /// Rebuilds the MSR filter from the events (see the module documentation).
    fn update_msr_filter(&self) -> Result<(), VmError> {
        let (specific, any_read, any_write) = self.watched_msrs();
        static ZEROS: [u8; 0x400] = [0; 0x400];
        static DENY_ONE: [u8; 1] = [0];
        // Guest accesses of the SYSCALL MSRs always exit: the VMM's model (module doc).
        let mut ranges = vec![MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: *SYSCALL_MSRS.start(),
            msr_count: SYSCALL_MSRS.end() - SYSCALL_MSRS.start() + 1,
            bitmap: &DENY_ONE,
        }];
        let mut any_flags = MsrFilterRangeFlags::empty();
        if any_read {
            any_flags |= MsrFilterRangeFlags::READ;
        }
        if any_write {
            any_flags |= MsrFilterRangeFlags::WRITE;
        }
        if !any_flags.is_empty() {
            for base in [0u32, 0xc000_0000] {
                ranges.push(MsrFilterRange {
                    flags: any_flags,
                    base,
                    msr_count: 0x2000,
                    bitmap: &ZEROS,
                });
            }
        }
        for &(msr, write) in &specific {
            if MODELLED_MSRS.contains(&msr) {
                continue; // unknown to KVM: exits anyway
            }
            ranges.push(MsrFilterRange {
                flags: if write {
                    MsrFilterRangeFlags::WRITE
                } else {
                    MsrFilterRangeFlags::READ
                },
                base: msr,
                msr_count: 1,
                bitmap: &DENY_ONE,
            });
        }
        if ranges.len() > 16 {
            return Err(VmError::Setup(
                "too many distinct MSRs watched: KVM's MSR filter holds 16 ranges".into(),
            ));
        }
        self.vm
            .set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
            .map_err(|e| VmError::Setup(format!("KVM_X86_SET_MSR_FILTER: {e}")))
    }

    /// Sets how many rounds of `ud2` + `div` by zero the demo guest's user part runs
    /// before its loop (default 0). Call before [`Vm::run`].
    pub fn set_exception_rounds(&self, rounds: u64) {
        for cpu in 0..self.config.vcpus {
            let _ = self
                .mem
                .write_u64(boot::per_cpu(cpu) + field::EXC_ROUNDS, rounds);
        }
    }

    /// Sets how many SYSCALLs (RAX = 0, 1, ...) the demo guest's user part makes after
    /// its exception rounds (default 0: then the kernel part sets no syscall MSRs
    /// either). Call before [`Vm::run`].
    pub fn set_syscall_rounds(&self, rounds: u64) {
        for cpu in 0..self.config.vcpus {
            let _ = self
                .mem
                .write_u64(boot::per_cpu(cpu) + field::SYSCALL_ROUNDS, rounds);
        }
    }

    /// Sets how many times the demo kernel calls its hookable function
    /// ([`GuestImage::hook_target`], default 0). Call before [`Vm::run`].
    /// Runs the scripts of events added from now on with the interpreter instead of the
    /// JIT (the default).
    pub fn set_interpreted(&self, interpreted: bool) {
        self.interpreted.store(interpreted, Ordering::Relaxed);
    }

    pub fn set_hook_rounds(&self, rounds: u64) {
        for cpu in 0..self.config.vcpus {
            let _ = self
                .mem
                .write_u64(boot::per_cpu(cpu) + field::HOOK_ROUNDS, rounds);
        }
    }

    /// Asks the guest to finish its loop (it exits through the exit port).
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Stops the vCPUs at once (they report `Killed`).
    pub fn kill(&self) {
        self.kill_requested.store(true, Ordering::SeqCst);
    }

    fn set_guest_stop_flags(&self) {
        for cpu in 0..self.config.vcpus {
            let _ = self.mem.write_u64(boot::per_cpu(cpu) + field::STOP, 1);
        }
    }

    /// Runs the guest to the end (every vCPU stopped). Callable once.
    pub fn run(&self) -> Result<RunReport, VmError> {
        let vcpus = std::mem::take(&mut *self.vcpus.lock().unwrap_or_else(|e| e.into_inner()));
        if vcpus.is_empty() {
            return Err(VmError::Setup("the VM has already run".into()));
        }
        install_kick_handler();
        let start = Instant::now();
        let (threads, done) = (&self.thread_ids, &self.done);
        let kicked = AtomicBool::new(false);
        self.running.store(true, Ordering::SeqCst);
        let reports = std::thread::scope(|s| {
            let handles: Vec<_> = vcpus
                .into_iter()
                .enumerate()
                .map(|(cpu, vcpu)| {
                    let kicked = &kicked;
                    std::thread::Builder::new()
                        .name(format!("vcpu{cpu}"))
                        .spawn_scoped(s, move || {
                            // SAFETY: pthread_self has no preconditions.
                            threads[cpu]
                                .store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                            let mut v = VcpuThread {
                                vm: self,
                                cpu,
                                vcpu,
                                demo_msr: demo_msr_initial(cpu),
                                msrs: Vec::new(),
                                devices: DeviceCounters::default(),
                                exits: ExitCounts::default(),
                                kicked,
                                stepping: false,
                                step_pending: false,
                                hooks_gen: 0,
                                hooks: Arc::new(Vec::new()),
                            };
                            let stop = v.run_loop();
                            done[cpu].store(true, Ordering::SeqCst);
                            v.report(stop)
                        })
                        .expect("spawning a vCPU thread")
                })
                .collect();
            // The controller: stop requests, the duration, the hard timeout.
            let mut stop_sent = false;
            while !done.iter().all(|d| d.load(Ordering::SeqCst)) {
                std::thread::sleep(Duration::from_millis(5));
                let elapsed = start.elapsed();
                let want_stop = self.stop_requested.load(Ordering::SeqCst)
                    || self.config.duration.is_some_and(|d| elapsed >= d);
                if want_stop && !stop_sent {
                    self.set_guest_stop_flags();
                    stop_sent = true;
                }
                let kill = self.kill_requested.load(Ordering::SeqCst);
                if kill || elapsed >= self.config.timeout {
                    kicked.store(true, Ordering::SeqCst);
                    for (t, d) in threads.iter().zip(done.iter()) {
                        let tid = t.load(Ordering::SeqCst);
                        if tid != 0 && !d.load(Ordering::SeqCst) {
                            // SAFETY: `tid` is a live thread of this scope (not yet
                            // done, and joined only after this loop); the signal's
                            // handler is installed and does nothing.
                            unsafe { libc::pthread_kill(tid as libc::pthread_t, kick_signal()) };
                        }
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| h.join().expect("vCPU thread panicked"))
                .collect::<Vec<_>>()
        });
        self.running.store(false, Ordering::SeqCst);
        // `imm no` messages still buffered, and output sources' queues, go out before the
        // caller prints its summary.
        self.output.flush_all();
        self.output.close_all();
        let mut reports = reports;
        if self.kill_requested.load(Ordering::SeqCst) {
            for r in &mut reports {
                if r.stop == StopReason::TimedOut {
                    r.stop = StopReason::Killed;
                }
            }
        }
        Ok(RunReport {
            vcpus: reports,
            elapsed: start.elapsed(),
        })
    }
}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {}

fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing, no SA_RESTART (so
        // KVM_RUN returns EINTR); installing it is process-wide and idempotent.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// An exit decoded from `kvm_run`, owned (no borrow of the vCPU).
enum Decoded {
    Io {
        port: u16,
        size: usize,
        count: usize,
        input: bool,
        data_offset: usize,
    },
    Msr {
        write: bool,
        index: u32,
        data: u64,
    },
    Mmio {
        addr: u64,
        len: usize,
        write: bool,
        data: [u8; 8],
    },
    /// A single-step `KVM_EXIT_DEBUG`.
    Step,
    /// A hardware execute breakpoint's `KVM_EXIT_DEBUG` (an execute hook).
    Breakpoint,
    Hlt,
    Shutdown,
    Interrupted,
    Other(String),
}

struct VcpuThread<'v> {
    vm: &'v Vm,
    cpu: usize,
    vcpu: VcpuFd,
    demo_msr: u64,
    /// Other modelled MSRs written by the guest.
    msrs: Vec<(u32, u64)>,
    devices: DeviceCounters,
    exits: ExitCounts,
    kicked: &'v AtomicBool,
    /// KVM_GUESTDBG_SINGLESTEP is on (a `!cpuid` or `!sysret` event exists).
    stepping: bool,
    /// A completion through `immediate_exit` ended in the step exit after the completed
    /// instruction: look at the next instruction once the exit is handled.
    step_pending: bool,
    /// The hook generation and addresses programmed into this vCPU's DR0..DR3.
    hooks_gen: u64,
    hooks: Arc<Vec<u64>>,
}

/// What to do after an exit.
enum Flow {
    Continue,
    Stop(StopReason),
}

impl VcpuThread<'_> {
    fn report(&self, stop: StopReason) -> VcpuReport {
        VcpuReport {
            cpu: self.cpu,
            stop,
            guest: GuestCounters::read(&self.vm.mem, self.cpu),
            devices: self.devices,
            exits: self.exits,
            demo_msr: self.demo_msr,
        }
    }

    /// Queues a script's `event_inject` for the next entry (KVM_SET_VCPU_EVENTS).
    fn inject(&mut self, i: crate::memory::Injection) -> Result<(), String> {
        let mut events = self
            .vcpu
            .get_vcpu_events()
            .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
        match i.kind {
            0 | 4 => {
                events.interrupt.injected = 1;
                events.interrupt.nr = i.vector;
                events.interrupt.soft = u8::from(i.kind == 4);
            }
            2 => events.nmi.injected = 1,
            _ => {
                events.exception.injected = 1;
                events.exception.nr = i.vector;
                events.exception.has_error_code = u8::from(i.error_code.is_some());
                events.exception.error_code = i.error_code.unwrap_or(0);
            }
        }
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(|e| format!("KVM_SET_VCPU_EVENTS (event_inject): {e}"))
    }

    /// Waits while the VMM has the vCPUs parked (memory slot changes).
    fn park_if_asked(&self) {
        let park = &self.vm.park;
        while park.requested.load(Ordering::SeqCst) {
            park.parked[self.cpu].store(true, Ordering::SeqCst);
            let mut g = park.lock.lock().unwrap_or_else(|e| e.into_inner());
            while park.requested.load(Ordering::SeqCst) && !self.kicked.load(Ordering::SeqCst) {
                g = park
                    .cv
                    .wait_timeout(g, Duration::from_millis(20))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            drop(g);
            park.parked[self.cpu].store(false, Ordering::SeqCst);
            if self.kicked.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Programs `KVM_SET_GUEST_DEBUG`: single-stepping when `step`, and the execute
    /// hooks in DR0..DR3 (+ DR7 local-enable bits, execute, length 1) when `breakpoints`.
    fn set_debug(&mut self, step: bool, breakpoints: bool) -> Result<(), String> {
        let mut debug = kvm_guest_debug::default();
        if step {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        if breakpoints && !self.hooks.is_empty() {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            let mut dr7 = 0;
            for (i, &addr) in self.hooks.iter().take(MAX_HOOKS).enumerate() {
                debug.arch.debugreg[i] = addr;
                dr7 |= 1 << (2 * i);
            }
            debug.arch.debugreg[7] = dr7;
        }
        self.vcpu
            .set_guest_debug(&debug)
            .map_err(|e| format!("KVM_SET_GUEST_DEBUG: {e}"))
    }

    /// Turns CPL0 single-stepping on while a `!cpuid` or `!sysret` event exists, off
    /// otherwise, and programs the current execute hooks (`KVM_SET_GUEST_DEBUG` is a
    /// vCPU ioctl: the vCPU thread does it, at its next exit; [`Vm::update_hooks`]
    /// forces one). Stepping is switched on only in kernel mode (module documentation:
    /// the TF KVM sets would trap natively in user mode and reach the guest).
    fn sync_debug(&mut self) -> Flow {
        let mut want = self.vm.kinds.load(Ordering::SeqCst)
            & (kind_bit(EventKind::Cpuid) | kind_bit(EventKind::Sysret))
            != 0;
        let gen = self.vm.hooks_gen.load(Ordering::SeqCst);
        if want == self.stepping && gen == self.hooks_gen {
            return Flow::Continue;
        }
        // Every KVM_SET_GUEST_DEBUG with SINGLESTEP sets TF at the current RIP, also
        // one that only reprograms the hooks: in user mode, stepping goes off instead
        // and comes back at the next kernel-mode exit.
        if want {
            match self.read_regs() {
                Ok((regs, _)) => want = regs.cs & 3 == 0,
                Err(e) => return Flow::Stop(StopReason::Error(e)),
            }
            if want == self.stepping && gen == self.hooks_gen {
                return Flow::Continue;
            }
        }
        if gen != self.hooks_gen {
            self.hooks = self
                .vm
                .hooks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            self.hooks_gen = gen;
        }
        let was = self.stepping;
        if let Err(e) = self.set_debug(want, true) {
            return Flow::Stop(StopReason::Error(e));
        }
        self.stepping = want;
        if want && !was {
            // No step exit precedes the instruction at RIP now: look at it here.
            return self.on_step();
        }
        Flow::Continue
    }

    fn run_loop(&mut self) -> StopReason {
        loop {
            self.park_if_asked();
            if self.kicked.load(Ordering::SeqCst) {
                return StopReason::TimedOut;
            }
            if let Flow::Stop(reason) = self.sync_debug() {
                return reason;
            }
            if let Some(injection) = crate::memory::take_injection() {
                if let Err(e) = self.inject(injection) {
                    return StopReason::Error(e);
                }
            }
            let decoded = match self.vcpu.run() {
                Ok(exit) => {
                    let simple = match exit {
                        VcpuExit::Hlt => Some(Decoded::Hlt),
                        VcpuExit::Shutdown => Some(Decoded::Shutdown),
                        VcpuExit::IoIn(..)
                        | VcpuExit::IoOut(..)
                        | VcpuExit::X86Rdmsr(_)
                        | VcpuExit::X86Wrmsr(_)
                        | VcpuExit::MmioRead(..)
                        | VcpuExit::MmioWrite(..) => None,
                        // Execute breakpoints set B0..B3 in DR6, a step sets BS.
                        VcpuExit::Debug(arch) if arch.dr6 & 0xf != 0 && !self.hooks.is_empty() => {
                            Some(Decoded::Breakpoint)
                        }
                        VcpuExit::Debug(_) => Some(Decoded::Step),
                        other => Some(Decoded::Other(format!("{other:?}"))),
                    };
                    simple.unwrap_or_else(|| self.decode())
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Decoded::Interrupted
                }
                Err(e) => Decoded::Other(format!("KVM_RUN: {e}")),
            };
            let flow = match decoded {
                Decoded::Io {
                    port,
                    size,
                    count,
                    input,
                    data_offset,
                } if port == EXCEPTION_PORT && !input && count == 1 => {
                    // The VMM-owned exception stub reporting: not guest I/O.
                    let _ = (size, data_offset);
                    self.exits.exceptions += 1;
                    self.on_exception()
                }
                Decoded::Io {
                    port,
                    size,
                    count,
                    input,
                    data_offset,
                } => {
                    if input {
                        self.exits.io_in += 1;
                    } else {
                        self.exits.io_out += 1;
                    }
                    self.on_io(port, size, count, input, data_offset)
                }
                Decoded::Msr { write, index, data } => {
                    if write {
                        self.exits.wrmsr += 1;
                    } else {
                        self.exits.rdmsr += 1;
                    }
                    self.on_msr(write, index, data)
                }
                Decoded::Mmio {
                    addr,
                    len,
                    write,
                    data,
                } => {
                    if write {
                        self.exits.mmio_write += 1;
                    } else {
                        self.exits.mmio_read += 1;
                    }
                    self.on_mmio(addr, len, write, data)
                }
                Decoded::Step => {
                    self.exits.steps += 1;
                    self.on_step()
                }
                Decoded::Breakpoint => {
                    self.exits.breakpoints += 1;
                    self.on_breakpoint()
                }
                Decoded::Hlt => Flow::Stop(StopReason::Halted),
                Decoded::Shutdown => Flow::Stop(StopReason::Shutdown),
                Decoded::Interrupted => Flow::Continue,
                Decoded::Other(what) => {
                    self.exits.other += 1;
                    Flow::Stop(StopReason::Error(format!("unexpected exit: {what}")))
                }
            };
            let flow = match flow {
                Flow::Continue if std::mem::take(&mut self.step_pending) && self.stepping => {
                    self.on_step()
                }
                flow => flow,
            };
            if let Flow::Stop(reason) = flow {
                return reason;
            }
        }
    }

    /// Decodes an I/O or MSR exit from `kvm_run`.
    fn decode(&mut self) -> Decoded {
        let run = self.vcpu.get_kvm_run();
        match run.exit_reason {
            KVM_EXIT_IO => {
                // SAFETY: exit_reason says the `io` member of the union is the live one.
                let io = unsafe { run.__bindgen_anon_1.io };
                Decoded::Io {
                    port: io.port,
                    size: usize::from(io.size),
                    count: io.count as usize,
                    input: u32::from(io.direction) == KVM_EXIT_IO_IN,
                    data_offset: io.data_offset as usize,
                }
            }
            KVM_EXIT_X86_RDMSR | KVM_EXIT_X86_WRMSR => {
                // SAFETY: exit_reason says the `msr` member of the union is the live one.
                let msr = unsafe { run.__bindgen_anon_1.msr };
                Decoded::Msr {
                    write: run.exit_reason == KVM_EXIT_X86_WRMSR,
                    index: msr.index,
                    data: msr.data,
                }
            }
            KVM_EXIT_MMIO => {
                // SAFETY: exit_reason says the `mmio` member of the union is the live one.
                let mmio = unsafe { run.__bindgen_anon_1.mmio };
                Decoded::Mmio {
                    addr: mmio.phys_addr,
                    len: (mmio.len as usize).clamp(1, 8),
                    write: mmio.is_write != 0,
                    data: mmio.data,
                }
            }
            r => Decoded::Other(format!("exit reason {r}")),
        }
    }

    /// The I/O data area of the current exit.
    fn io_data(&mut self, offset: usize, len: usize) -> &mut [u8] {
        let run = self.vcpu.get_kvm_run();
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        // SAFETY: KVM places the I/O data `data_offset` bytes into the kvm_run mapping,
        // which spans the whole mmap'ed run area (several pages); `len` = size * count as
        // KVM reported. The slice borrows `self`, so it cannot outlive the mapping.
        unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) }
    }

    fn set_msr_reply(&mut self, data: u64, error: bool) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only while handling an MSR exit, when `msr` is the live member.
        let msr = unsafe { &mut run.__bindgen_anon_1.msr };
        msr.data = data;
        msr.error = u8::from(error);
    }

    /// The registers at this exit, and CR3.
    fn read_regs(&mut self) -> Result<(GuestRegs, u64), String> {
        let (regs, sregs) = if self.vm.sync_regs {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: kvm_valid_regs asked KVM to fill `s.regs` on every exit.
            let s = unsafe { &run.s.regs };
            (s.regs, s.sregs)
        } else {
            (
                self.vcpu
                    .get_regs()
                    .map_err(|e| format!("KVM_GET_REGS: {e}"))?,
                self.vcpu
                    .get_sregs()
                    .map_err(|e| format!("KVM_GET_SREGS: {e}"))?,
            )
        };
        Ok((to_guest_regs(&regs, &sregs), sregs.cr3))
    }

    /// Writes the general registers back (into the guest on the next KVM_RUN).
    /// Writes the scripts' registers back if they changed anything the VMM applies
    /// (compared with `reference`, the state KVM already has), then lets the vCPU go on;
    /// a failed write stops it.
    fn write_back(&mut self, regs: &GuestRegs, reference: &GuestRegs) -> Flow {
        if !same_applied(regs, reference) {
            if let Err(e) = self.write_regs(regs) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        Flow::Continue
    }

    fn write_regs(&mut self, g: &GuestRegs) -> Result<(), String> {
        self.write_special(g)?;
        if self.vm.sync_regs {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: `s.regs` is the sync-regs area; KVM reads it on entry because of the
            // dirty bit set next.
            let r = unsafe { &mut run.s.regs.regs };
            from_guest_regs(r, g);
            run.kvm_dirty_regs |= u64::from(KVM_SYNC_X86_REGS);
            Ok(())
        } else {
            let mut r = self
                .vcpu
                .get_regs()
                .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
            from_guest_regs(&mut r, g);
            self.vcpu
                .set_regs(&r)
                .map_err(|e| format!("KVM_SET_REGS: {e}"))
        }
    }

    /// Applies the scripts' writes to CR0/CR2/CR3/CR4/CR8 and the GDTR/IDTR bases, if any
    /// differ from the vCPU's (one `KVM_GET_SREGS`/`KVM_SET_SREGS` pair then; nothing when
    /// they are unchanged, which the sync-regs copy shows without an ioctl). A value KVM
    /// refuses (a CR0 with PG but not PE, reserved CR4 bits ...) is reported as the
    /// event's output and the vCPU keeps its registers: a script never loses the guest.
    fn write_special(&mut self, g: &GuestRegs) -> Result<(), String> {
        let current = if self.vm.sync_regs {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: kvm_valid_regs asked KVM to fill `s.regs` (sregs included) on every
            // exit; nothing else writes it between the exit and here.
            let sregs = unsafe { run.s.regs.sregs };
            to_guest_regs(&kvm_regs::default(), &sregs)
        } else {
            let sregs = self
                .vcpu
                .get_sregs()
                .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
            to_guest_regs(&kvm_regs::default(), &sregs)
        };
        if special_regs(g) == special_regs(&current) {
            return Ok(());
        }
        let mut sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let before = sregs;
        sregs.cr0 = g.cr0;
        sregs.cr2 = g.cr2;
        sregs.cr3 = g.cr3;
        sregs.cr4 = g.cr4;
        sregs.cr8 = g.cr8;
        sregs.gdt.base = g.gdtr;
        sregs.idt.base = g.idtr;
        if let Err(e) = self.vcpu.set_sregs(&sregs) {
            let _ = self.vcpu.set_sregs(&before);
            self.vm.output.output(
                0,
                hv_core::Stage::Pre,
                self.cpu as u32,
                format!(
                    "warning: vCPU {}: KVM refused the scripts' control registers \
                     (cr0 {:#x} cr3 {:#x} cr4 {:#x}): {e}; they keep their values\n",
                    self.cpu, g.cr0, g.cr3, g.cr4
                )
                .as_bytes(),
            );
            return Ok(());
        }
        if self.vm.sync_regs {
            let run = self.vcpu.get_kvm_run();
            // Keep the copy current so a later comparison sees the
            // applied values (KVM refreshes it at the next exit anyway).
            run.s.regs.sregs = sregs;
        }
        Ok(())
    }

    /// Completes the pending instruction inside KVM without running the guest
    /// (`immediate_exit`), and returns the registers after it.
    fn complete(&mut self, regs: &mut GuestRegs) -> Result<(), String> {
        self.write_regs(regs)?;
        self.vcpu.set_kvm_immediate_exit(1);
        let r = self
            .vcpu
            .run()
            .map(|exit| matches!(exit, VcpuExit::Debug(_)));
        self.vcpu.set_kvm_immediate_exit(0);
        self.exits.completions += 1;
        match r {
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => return Err(format!("completing the exit: KVM_RUN: {e}")),
            // Stepping: KVM completed the instruction and reports the step after it
            // instead of returning EINTR (the guest did not run).
            Ok(true) if self.stepping => {
                self.exits.steps += 1;
                self.step_pending = true;
            }
            Ok(_) => return Err("completing the exit: KVM_RUN ran the guest".into()),
        }
        let (after, _) = self.read_regs()?;
        *regs = after;
        Ok(())
    }

    // ---- port I/O ----

    fn device_in(&mut self, port: u16) -> u32 {
        if port == DATA_PORT {
            let v = data_value(self.cpu, self.devices.data_reads);
            self.devices.data_reads += 1;
            self.devices.data_sum += u64::from(v);
            v
        } else {
            self.devices.other_in += 1;
            u32::MAX
        }
    }

    fn device_out(&mut self, port: u16, value: u32) -> Flow {
        match port {
            COUNTER_PORT => {
                self.devices.counter_writes += 1;
                self.devices.counter_sum += u64::from(value);
                Flow::Continue
            }
            EXIT_PORT => Flow::Stop(StopReason::GuestExit(value)),
            EXCEPTION_PORT => Flow::Stop(self.exception_report(value)),
            _ => {
                self.devices.other_out += 1;
                Flow::Continue
            }
        }
    }

    /// Reads the exception frame the guest's stub left on its stack.
    fn exception_report(&mut self, vector: u32) -> StopReason {
        let Ok((regs, cr3)) = self.read_regs() else {
            return StopReason::Exception {
                vector: vector as u8,
                rip: 0,
                error_code: 0,
                cs: 0,
                rflags: 0,
            };
        };
        // Stack at the OUT: rdx, rax, vector, error code, RIP, CS, RFLAGS, RSP, SS.
        let read = |off: u64| {
            self.vm
                .mem
                .translate(cr3, regs.rsp + off)
                .and_then(|pa| self.vm.mem.read_u64(pa).ok())
                .unwrap_or(0)
        };
        StopReason::Exception {
            vector: vector as u8,
            error_code: read(24),
            rip: read(32),
            cs: read(40),
            rflags: read(48),
        }
    }

    /// Performs the device side of an I/O exit: fills the IN data or delivers the OUT.
    /// For a single IN/OUT the value is the register's (`value_from_regs`).
    fn io_device(
        &mut self,
        port: u16,
        size: usize,
        count: usize,
        input: bool,
        data_offset: usize,
        out_value: Option<u32>,
    ) -> (Flow, Option<u32>) {
        let mut flow = Flow::Continue;
        let mut last_in = None;
        for i in 0..count {
            if input {
                let v = self.device_in(port);
                let bytes = v.to_le_bytes();
                self.io_data(data_offset + i * size, size)
                    .copy_from_slice(&bytes[..size]);
                last_in = Some(v);
            } else {
                let v = match out_value {
                    Some(v) if count == 1 => v,
                    _ => {
                        let mut b = [0u8; 4];
                        b[..size].copy_from_slice(self.io_data(data_offset + i * size, size));
                        u32::from_le_bytes(b)
                    }
                };
                let f = self.device_out(port, v & size_mask(size));
                if matches!(f, Flow::Stop(_)) {
                    flow = f;
                }
            }
        }
        (flow, last_in)
    }

    fn on_io(
        &mut self,
        port: u16,
        size: usize,
        count: usize,
        input: bool,
        data_offset: usize,
    ) -> Flow {
        let size = size.clamp(1, 4);
        let kind = if input {
            EventKind::IoIn
        } else {
            EventKind::IoOut
        };
        if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(kind) == 0 {
            return self
                .io_device(port, size, count, input, data_offset, None)
                .0;
        }
        let (mut regs, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let before = regs;
        let exit = Exit::new(kind, self.cpu as u32, u64::from(port));
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let mem = &vm.mem;
        let mut flow = Flow::Continue;
        let mut completed: Option<GuestRegs> = None;
        let mut error = None;
        let outcome = {
            let mut view = GuestView::new(mem, cr3);
            engine.handle_exit(&exit, &mut regs, &mut view, |regs, _| {
                let out_value = (!input).then_some(regs.rax as u32);
                let (f, last_in) = self.io_device(port, size, count, input, data_offset, out_value);
                flow = f;
                if let (Some(v), 1) = (last_in, count) {
                    regs.rax = merge_in(regs.rax, v, size);
                }
                // Read after the engine took its table: a post event in it is seen here.
                let post = vm.post_kinds.load(Ordering::SeqCst) & kind_bit(kind) != 0 && count == 1;
                if post && matches!(flow, Flow::Continue) {
                    match self.complete(regs) {
                        Ok(()) => completed = Some(*regs),
                        Err(e) => error = Some(e),
                    }
                }
            })
        };
        if let Some(e) = error {
            return Flow::Stop(StopReason::Error(e));
        }
        if outcome.short_circuited && input && count == 1 {
            // The IN returns what the scripts left in the register.
            let bytes = (regs.rax as u32).to_le_bytes();
            self.io_data(data_offset, size)
                .copy_from_slice(&bytes[..size]);
        }
        let reference = completed.unwrap_or(before);
        if regs != reference {
            if let Err(e) = self.write_regs(&regs) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        flow
    }

    // ---- memory (`!monitor`) ----

    /// Sets the data an MMIO read returns (completed on the next KVM_RUN).
    fn set_mmio_data(&mut self, data: u64, len: usize) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only while handling an MMIO exit, when `mmio` is the live member.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        mmio.data[..len].copy_from_slice(&data.to_le_bytes()[..len]);
    }

    /// Guest RAM behind a watched page, as the little-endian value of `len` bytes.
    fn mem_value(&self, addr: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.vm.mem.read(addr, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn mem_store(&self, addr: u64, len: usize, value: u64) {
        let _ = self.vm.mem.write(addr, &value.to_le_bytes()[..len]);
    }

    /// Completes a pending MMIO read inside KVM without running the guest
    /// (`immediate_exit`) and returns the registers after the instruction. Further MMIO
    /// accesses of the same instruction (the write of a read-modify-write) are applied
    /// to RAM, or dropped when `drop_rest` (a short-circuited read), without raising
    /// events: an instruction raises one event, for its first watched access.
    ///
    /// No register may be written between the MMIO read exit and its completion: KVM's
    /// emulator then drops the pending write of the destination register (measured), so
    /// pre-stage register changes are merged in afterwards ([`merge_after_read`]).
    fn complete_mmio(&mut self, drop_rest: bool) -> Result<GuestRegs, String> {
        self.vcpu.set_kvm_immediate_exit(1);
        self.exits.completions += 1;
        let mut result = Err("completing the MMIO access: too many chained accesses".into());
        for _ in 0..8 {
            let chained = match self.vcpu.run() {
                Err(e) if e.errno() == libc::EINTR => {
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    result = Err(format!("completing the MMIO access: KVM_RUN: {e}"));
                    break;
                }
                Ok(VcpuExit::Debug(_)) if self.stepping => {
                    // The step after the completed instruction (see `complete`).
                    self.exits.steps += 1;
                    self.step_pending = true;
                    result = Ok(());
                    break;
                }
                Ok(VcpuExit::MmioRead(addr, data)) => (addr, data.len(), false),
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let mut b = [0u8; 8];
                    let n = data.len().min(8);
                    b[..n].copy_from_slice(&data[..n]);
                    if !drop_rest {
                        let _ = self.vm.mem.write(addr, &b[..n]);
                    }
                    continue;
                }
                Ok(other) => {
                    result = Err(format!(
                        "completing the MMIO access: KVM_RUN exited with {other:?}"
                    ));
                    break;
                }
            };
            let (addr, len, _) = chained;
            let len = len.clamp(1, 8);
            let v = if drop_rest {
                0
            } else {
                self.mem_value(addr, len)
            };
            self.set_mmio_data(v, len);
        }
        self.vcpu.set_kvm_immediate_exit(0);
        result?;
        Ok(self.read_regs()?.0)
    }

    /// An access to a watched page: raise `!monitor` if an event's range covers it, and
    /// perform it on guest RAM (module `monitor`; stages in the crate documentation).
    ///
    /// The script sees the access in two registers hv-kvm does not otherwise expose:
    /// `@dr0` = the data (pre of a write: the value being written; pre of a read: the
    /// value the read will return, i.e. the old memory; post: the same data as
    /// performed) and `@dr1` = its length in bytes. A pre-stage write to `@dr0` changes
    /// what is written / what the read returns. Memory reads at `$context` see the old
    /// memory in pre and the new memory in post.
    fn on_mmio(&mut self, addr: u64, len: usize, write: bool, data: [u8; 8]) -> Flow {
        let access = if write { Access::WRITE } else { Access::READ };
        let watches = self.vm.current_watches();
        let hit = monitor::first_hit(&watches, addr, len as u64, access);
        let value = if write {
            let mut b = [0u8; 8];
            b[..len].copy_from_slice(&data[..len]);
            u64::from_le_bytes(b)
        } else {
            self.mem_value(addr, len)
        };
        let Some(context) = hit else {
            // A watched page, an unwatched byte: apply it, no event.
            if write {
                self.mem_store(addr, len, value);
            } else {
                self.set_mmio_data(value, len);
            }
            return Flow::Continue;
        };
        let (mut regs, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let before = regs;
        regs.dr0 = value;
        regs.dr1 = len as u64;
        let mut exit = Exit::new(EventKind::Monitor, self.cpu as u32, context);
        exit.access = access;
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let mem = &vm.mem;
        let mut error = None;
        let mut completed: Option<GuestRegs> = None;
        let outcome = {
            let mut view = GuestView::new(mem, cr3);
            engine.handle_exit(&exit, &mut regs, &mut view, |regs, _| {
                let v = regs.dr0;
                if write {
                    self.mem_store(addr, len, v);
                } else {
                    self.set_mmio_data(v, len);
                    // Read after the engine took its table: a post event in it is seen here.
                    let post =
                        vm.post_kinds.load(Ordering::SeqCst) & kind_bit(EventKind::Monitor) != 0;
                    if post || !same_applied(regs, &before) {
                        match self.complete_mmio(false) {
                            Ok(after) => {
                                let mut merged = merge_after_read(&before, regs, &after);
                                merged.dr0 = v;
                                merged.dr1 = len as u64;
                                *regs = merged;
                                completed = Some(after);
                            }
                            Err(e) => error = Some(e),
                        }
                    }
                }
            })
        };
        if let Some(e) = error {
            return Flow::Stop(StopReason::Error(e));
        }
        if outcome.short_circuited && !write {
            // The read is not performed: the instruction completes (RIP moves past it)
            // but every register is left as the pre scripts set it.
            match self.complete_mmio(true) {
                Ok(after) => {
                    completed = Some(after);
                    regs.rip = after.rip;
                }
                Err(e) => return Flow::Stop(StopReason::Error(e)),
            }
        }
        let reference = completed.unwrap_or(before);
        self.write_back(&regs, &reference)
    }

    // ---- CPUID (`!cpuid`, CPL0 single-stepping) ----

    /// After a step: while the next instruction is a CPL0 `CPUID`, raise `!cpuid` for it.
    fn on_step(&mut self) -> Flow {
        // Bounded: a run of CPUIDs longer than this is handled on later steps anyway.
        for _ in 0..64 {
            let (regs, cr3) = match self.read_regs() {
                Ok(r) => r,
                Err(e) => return Flow::Stop(StopReason::Error(e)),
            };
            if regs.cs & 3 != 0 {
                return Flow::Continue;
            }
            let mut insn = [0u8; 3];
            for (i, b) in insn.iter_mut().enumerate() {
                let mut one = [0u8; 1];
                match self.vm.mem.translate(cr3, regs.rip + i as u64) {
                    Some(pa) if self.vm.mem.read(pa, &mut one).is_ok() => *b = one[0],
                    _ => break,
                }
            }
            let flow = if insn[..2] == [0x0f, 0xa2] {
                self.on_cpuid(regs, cr3)
            } else if let Some(sysret) = self
                .sys_insn(&mut regs.clone(), cr3)
                .filter(|i| matches!(i, SysInsn::Sysret { .. }))
            {
                if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(EventKind::Sysret) == 0 {
                    return Flow::Continue;
                }
                self.on_sysret_step(sysret, regs, cr3)
            } else {
                return Flow::Continue;
            };
            if let Flow::Stop(r) = flow {
                return Flow::Stop(r);
            }
        }
        Flow::Continue
    }

    /// Executes exactly one instruction (the vCPU is single-stepping) and returns the
    /// registers after it.
    fn step_one(&mut self, regs: &GuestRegs) -> Result<GuestRegs, String> {
        self.write_regs(regs)?;
        let start = regs.rip;
        for _ in 0..100 {
            if self.kicked.load(Ordering::SeqCst) {
                return Err("stepping: the vCPU was kicked".into());
            }
            match self.vcpu.run() {
                Ok(VcpuExit::Debug(_)) => {
                    self.exits.steps += 1;
                    self.exits.completions += 1;
                    return Ok(self.read_regs()?.0);
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Ok(other) => return Err(format!("stepping at {start:#x}: exit {other:?}")),
                Err(e) => return Err(format!("stepping at {start:#x}: KVM_RUN: {e}")),
            }
        }
        Err(format!("stepping at {start:#x}: no step exit"))
    }

    /// `!cpuid` for the CPL0 CPUID at RIP: pre, then KVM executes it (one step), post.
    /// Short-circuit: RIP moves past it (2 bytes), registers as the scripts left them.
    fn on_cpuid(&mut self, mut regs: GuestRegs, cr3: u64) -> Flow {
        let exit = Exit::new(EventKind::Cpuid, self.cpu as u32, regs.rax & 0xffff_ffff);
        let before = regs;
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let mem = &vm.mem;
        let mut error = None;
        let mut completed = None;
        let outcome = {
            let mut view = GuestView::new(mem, cr3);
            engine.handle_exit(&exit, &mut regs, &mut view, |regs, _| {
                match self.step_one(regs) {
                    Ok(after) => {
                        *regs = after;
                        completed = Some(after);
                    }
                    Err(e) => error = Some(e),
                }
            })
        };
        if let Some(e) = error {
            return Flow::Stop(StopReason::Error(e));
        }
        if outcome.short_circuited {
            regs.rip = before.rip + 2;
        }
        let reference = completed.unwrap_or(before);
        self.write_back(&regs, &reference)
    }

    // ---- exceptions (`!exception`, the VMM-owned IDT stubs) ----

    /// The stub's OUT: raise `!exception`, then answer the stub in RAX with the guest
    /// handler to call (delivery) or 0 (not delivered: return to the interrupted code).
    ///
    /// Scripts see the interrupted context, not the stub's: RAX/RDX from the stub's
    /// saves, RIP/RFLAGS/RSP from the exception frame, `$context` = vector; their register
    /// writes go back there. Short-circuit = not delivered: the code resumes after a
    /// `ud2`, after the instruction for traps (#BP, #OF: the frame already points past
    /// it), and *at* the faulting instruction otherwise (the script is expected to have
    /// removed the cause, e.g. set a non-zero divisor for #DE).
    fn on_exception(&mut self) -> Flow {
        let (live, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let vector = (live.rax & 0x1f) as usize;
        // Stub stack at the OUT: rdx, rax, vector, error code, RIP, CS, RFLAGS, RSP, SS.
        let mem = &self.vm.mem;
        let slot = |off: u64| mem.translate(cr3, live.rsp + off);
        let read = |off: u64| slot(off).and_then(|pa| mem.read_u64(pa).ok()).unwrap_or(0);
        let mut regs = live;
        regs.rdx = read(0);
        regs.rax = read(8);
        regs.rip = read(32);
        regs.cs = read(40);
        regs.rflags = read(48);
        regs.rsp = read(56);
        regs.ss = read(64);
        let before = regs;
        if vector == 6 {
            let mut at = regs;
            if let Some(insn) = self.sys_insn(&mut at, cr3) {
                regs = at;
                return self.on_syscall_ud(insn, live, regs, cr3);
            }
        }
        let handler = self.vm.image.handlers.get(vector).copied().unwrap_or(0);
        let mut short_circuited = false;
        if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(EventKind::Exception) != 0 {
            let exit = Exit::new(EventKind::Exception, self.cpu as u32, vector as u64);
            let vm: &Vm = self.vm;
            let engine = vm.engine.clone();
            let mut view = GuestView::new(&vm.mem, cr3);
            // Delivery is the stub's call of the guest handler (the reply below); post
            // runs once it is arranged, still seeing the interrupted context.
            short_circuited = engine
                .handle_exit(&exit, &mut regs, &mut view, |_, _| {})
                .short_circuited;
        }
        if short_circuited {
            let mut insn = [0u8; 2];
            let ud2 = mem
                .translate(cr3, regs.rip)
                .zip(mem.translate(cr3, regs.rip + 1))
                .is_some_and(|(a, b)| {
                    mem.read(a, &mut insn[..1]).is_ok() && mem.read(b, &mut insn[1..]).is_ok()
                })
                && insn == [0x0f, 0x0b];
            if ud2 && regs.rip == before.rip {
                regs.rip += 2;
            }
        } else if handler == 0 {
            return Flow::Stop(self.exception_report(vector as u32));
        }
        if regs != before {
            let write = |off: u64, v: u64| {
                if let Some(pa) = slot(off) {
                    let _ = mem.write_u64(pa, v);
                }
            };
            write(0, regs.rdx);
            write(8, regs.rax);
            write(32, regs.rip);
            write(48, regs.rflags | 0x2);
            write(56, regs.rsp);
        }
        let mut out = regs;
        out.rax = if short_circuited { 0 } else { handler };
        out.rdx = live.rdx;
        out.rip = live.rip;
        out.rflags = live.rflags;
        out.rsp = live.rsp;
        self.write_back(&out, &live)
    }

    // ---- SYSCALL / SYSRET (`!syscall`, `!sysret`: the EFER.SCE #UD trick) ----

    /// The SYSCALL/SYSRET the #UD at `regs.rip` (the interrupted context) was, if it is
    /// one the VMM emulates: SYSCALL (0F 05) at any CPL; SYSRET (0F 07, with a REX
    /// prefix 40..4F before it; REX.W = the 64-bit form) at CPL0 with a canonical RCX.
    /// A SYSRET at CPL3 or to a non-canonical RCX is #GP(0) on hardware; the VMM does
    /// not turn the #UD into that #GP: it stays a #UD (`!exception`, guest handler).
    fn sys_insn(&self, regs: &mut GuestRegs, cr3: u64) -> Option<SysInsn> {
        let mem = &self.vm.mem;
        if regs.rip == self.vm.image.syscall_trap && regs.cs & 3 == 3 {
            // A CPL3 SYSCALL that landed on the trap (KVM's LSTAR): it is at RCX - 2,
            // with R11 = its RFLAGS. Its own RCX and R11 are gone (SYSCALL clobbers
            // them anyway).
            let at = regs.rcx.wrapping_sub(2);
            let mut b = [0u8; 2];
            let ok = mem
                .translate(cr3, at)
                .zip(mem.translate(cr3, at + 1))
                .is_some_and(|(x, y)| {
                    mem.read(x, &mut b[..1]).is_ok() && mem.read(y, &mut b[1..]).is_ok()
                });
            if !ok || b != [0x0f, 0x05] {
                return None;
            }
            regs.rip = at;
            regs.rflags = regs.r11;
            return Some(SysInsn::Syscall);
        }
        let mut b = [0u8; 3];
        for (i, byte) in b.iter_mut().enumerate() {
            let pa = mem.translate(cr3, regs.rip + i as u64)?;
            let mut one = [0u8; 1];
            if mem.read(pa, &mut one).is_err() {
                // The last bytes may be unreadable for a 2-byte instruction.
                break;
            }
            *byte = one[0];
        }
        let sysret_ok = regs.cs & 3 == 0 && is_canonical(regs.rcx);
        match b {
            [0x0f, 0x05, _] => Some(SysInsn::Syscall),
            [0x0f, 0x07, _] if sysret_ok => Some(SysInsn::Sysret {
                rex_w: false,
                len: 2,
            }),
            [rex @ 0x40..=0x4f, 0x0f, 0x07] if sysret_ok => Some(SysInsn::Sysret {
                rex_w: rex & 8 != 0,
                len: 3,
            }),
            _ => None,
        }
    }

    /// A SYSCALL/SYSRET #UD reported by the stub: `!syscall` (`$context` = RAX) or
    /// `!sysret` (`$context` = RIP of the SYSRET); pre, the VMM's emulation
    /// ([`emulate_sys`], from the registers as the pre scripts left them), post.
    /// Short-circuit: not emulated, the code resumes after the instruction with the
    /// scripts' registers. The result reaches the guest through the stub's IRETQ
    /// frame (RIP, CS, RFLAGS, RSP, SS, saved RAX/RDX) and its live registers (the
    /// rest); the stub is answered 0 (no guest handler).
    fn on_syscall_ud(
        &mut self,
        insn: SysInsn,
        live: GuestRegs,
        mut regs: GuestRegs,
        cr3: u64,
    ) -> Flow {
        // The frame's RFLAGS has RF set (a fault pushes RF = 1): the instruction's own
        // RFLAGS has it clear.
        regs.rflags &= !RFLAGS_RF;
        let before = regs;
        let (kind, context) = match insn {
            SysInsn::Syscall => {
                self.exits.syscalls += 1;
                (EventKind::Syscall, regs.rax)
            }
            SysInsn::Sysret { .. } => {
                self.exits.sysrets += 1;
                (EventKind::Sysret, regs.rip)
            }
        };
        let msrs = SyscallMsrs {
            star: self.model_msr(MSR_STAR),
            lstar: self.model_msr(MSR_LSTAR),
            fmask: self.model_msr(MSR_FMASK),
        };
        let mut short_circuited = false;
        if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(kind) != 0 {
            let exit = Exit::new(kind, self.cpu as u32, context);
            let vm: &Vm = self.vm;
            let engine = vm.engine.clone();
            let mut view = GuestView::new(&vm.mem, cr3);
            short_circuited = engine
                .handle_exit(&exit, &mut regs, &mut view, |r, _| {
                    emulate_sys(insn, r, &msrs)
                })
                .short_circuited;
        } else {
            emulate_sys(insn, &mut regs, &msrs);
        }
        if short_circuited && regs.rip == before.rip {
            regs.rip += insn.len();
        }
        // The stub's IRETQ frame: rdx, rax, vector, error code, RIP, CS, RFLAGS, RSP, SS.
        let mem = &self.vm.mem;
        let write = |off: u64, v: u64| {
            if let Some(pa) = mem.translate(cr3, live.rsp + off) {
                let _ = mem.write_u64(pa, v);
            }
        };
        write(0, regs.rdx);
        write(8, regs.rax);
        write(32, regs.rip);
        write(40, regs.cs);
        write(48, regs.rflags | 0x2);
        write(56, regs.rsp);
        write(64, regs.ss);
        let mut out = regs;
        out.rax = 0;
        out.rdx = live.rdx;
        out.rip = live.rip;
        out.rflags = live.rflags;
        out.rsp = live.rsp;
        self.write_back(&out, &live)
    }

    /// `!sysret` for a CPL0 SYSRET found by stepping (on this KVM SYSRET does not #UD
    /// with EFER.SCE clear: KVM runs it itself). Pre at the instruction (`$context` =
    /// RIP), the VMM's emulation ([`emulate_sys`]), post with the emulated state; then
    /// that state reaches the guest through the IRETQ trampoline: the VMM writes the
    /// IRETQ frame (RIP, CS, RFLAGS, RSP, SS) at [`field::SYSRET_FRAME`] in the vCPU's
    /// block and points RSP at it and RIP at the trampoline (KVM's IRETQ then lands at
    /// CPL3 with RSP as before; a single step cannot be used to see it land, since
    /// stepping stops at CPL3 on this KVM). Short-circuit: RIP moves past the SYSRET,
    /// still at CPL0, with the scripts' registers.
    fn on_sysret_step(&mut self, insn: SysInsn, mut regs: GuestRegs, cr3: u64) -> Flow {
        self.exits.sysrets += 1;
        let before = regs;
        let msrs = SyscallMsrs {
            star: self.model_msr(MSR_STAR),
            lstar: self.model_msr(MSR_LSTAR),
            fmask: self.model_msr(MSR_FMASK),
        };
        let exit = Exit::new(EventKind::Sysret, self.cpu as u32, regs.rip);
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let outcome = {
            let mut view = GuestView::new(&vm.mem, cr3);
            engine.handle_exit(&exit, &mut regs, &mut view, |r, _| {
                emulate_sys(insn, r, &msrs)
            })
        };
        let mut out = regs;
        if outcome.short_circuited {
            if regs.rip == before.rip {
                out.rip += insn.len();
            }
        } else {
            let frame = boot::per_cpu(self.cpu) + field::SYSRET_FRAME;
            let slots = [regs.rip, regs.cs, regs.rflags | 0x2, regs.rsp, regs.ss];
            for (i, v) in slots.iter().enumerate() {
                let _ = vm.mem.write_u64(frame + 8 * i as u64, *v);
            }
            out.rsp = frame;
            out.rip = vm.image.iretq_trampoline;
            out.rflags = before.rflags;
        }
        self.write_back(&out, &before)
    }

    /// A SYSCALL MSR as the VMM's model holds it (0 until the guest writes it).
    fn model_msr(&self, index: u32) -> u64 {
        self.msrs
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, v)| *v)
    }

    // ---- execute hooks (`!epthook`, `!epthook2`: hardware execute breakpoints) ----

    /// A hooked kernel instruction is about to execute (the breakpoint is a fault: RIP
    /// is at it). Raise `!epthook` then `!epthook2` for the address (no stages, no
    /// short-circuit: `$context` = RIP), apply the scripts' registers, then step over
    /// the instruction with the breakpoints off (KVM re-reports an execute breakpoint
    /// at the same RIP on every entry: it ignores RFLAGS.RF for host breakpoints) and
    /// put them back.
    fn on_breakpoint(&mut self) -> Flow {
        let (mut regs, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let addr = regs.rip;
        let kinds = self.vm.kinds.load(Ordering::Relaxed);
        for kind in [EventKind::EptHook, EventKind::EptHook2] {
            if kinds & kind_bit(kind) != 0 {
                let exit = Exit::new(kind, self.cpu as u32, addr);
                let vm: &Vm = self.vm;
                let engine = vm.engine.clone();
                let mut view = GuestView::new(&vm.mem, cr3);
                // No emulation to skip: the instruction always runs (an `event_sc` in
                // a hook script has no effect).
                engine.handle_exit(&exit, &mut regs, &mut view, |_, _| {});
            }
        }
        if let Err(e) = self.set_debug(true, false) {
            return Flow::Stop(StopReason::Error(e));
        }
        let stepped = self.step_one(&regs);
        if let Err(e) = self.set_debug(self.stepping, true) {
            return Flow::Stop(StopReason::Error(e));
        }
        if let Err(e) = stepped {
            return Flow::Stop(StopReason::Error(format!("execute hook at {addr:#x}: {e}")));
        }
        if self.stepping {
            // `!cpuid` stepping: the instruction after the hooked one may be a CPUID.
            return self.on_step();
        }
        Flow::Continue
    }

    // ---- MSRs ----

    fn msr_read(&mut self, index: u32) -> Option<u64> {
        if index == DEMO_MSR {
            return Some(self.demo_msr);
        }
        if SYSCALL_MSRS.contains(&index) {
            return Some(self.model_msr(index));
        }
        if MODELLED_MSRS.contains(&index) {
            return Some(
                self.msrs
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map_or(0, |(_, v)| *v),
            );
        }
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .ok()?;
        match self.vcpu.get_msrs(&mut msrs) {
            Ok(1) => Some(msrs.as_slice()[0].data),
            _ => None,
        }
    }

    fn msr_write(&mut self, index: u32, value: u64) -> bool {
        if index == DEMO_MSR {
            self.demo_msr = value;
            return true;
        }
        if MODELLED_MSRS.contains(&index) || SYSCALL_MSRS.contains(&index) {
            match self.msrs.iter_mut().find(|(i, _)| *i == index) {
                Some(e) => e.1 = value,
                None => self.msrs.push((index, value)),
            }
            if index == MSR_STAR || index == MSR_FMASK {
                // KVM's own SYSRET (run when no `!sysret` event exists) uses its STAR.
                if let Ok(m) = Msrs::from_entries(&[kvm_msr_entry {
                    index,
                    data: value,
                    ..Default::default()
                }]) {
                    let _ = self.vcpu.set_msrs(&m);
                }
            }
            return true;
        }
        let Ok(msrs) = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..Default::default()
        }]) else {
            return false;
        };
        matches!(self.vcpu.set_msrs(&msrs), Ok(1))
    }

    /// Performs an MSR access and sets the reply KVM completes the instruction with.
    fn msr_emulate(&mut self, write: bool, index: u32, regs: &mut GuestRegs) {
        if write {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let ok = self.msr_write(index, value);
            self.set_msr_reply(0, !ok);
        } else {
            match self.msr_read(index) {
                Some(v) => {
                    regs.rax = v & 0xffff_ffff;
                    regs.rdx = v >> 32;
                    self.set_msr_reply(v, false);
                }
                None => self.set_msr_reply(0, true),
            }
        }
    }

    fn on_msr(&mut self, write: bool, index: u32, data: u64) -> Flow {
        let kind = if write {
            EventKind::MsrWrite
        } else {
            EventKind::MsrRead
        };
        if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(kind) == 0 {
            let mut regs = GuestRegs {
                rax: data & 0xffff_ffff,
                rdx: data >> 32,
                ..Default::default()
            };
            self.msr_emulate(write, index, &mut regs);
            return Flow::Continue;
        }
        let (mut regs, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let before = regs;
        let exit = Exit::new(kind, self.cpu as u32, u64::from(index));
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let mem = &vm.mem;
        let mut completed: Option<GuestRegs> = None;
        let mut error = None;
        let outcome = {
            let mut view = GuestView::new(mem, cr3);
            engine.handle_exit(&exit, &mut regs, &mut view, |regs, _| {
                // Pre-stage register writes are the emulation's inputs: MSR @ecx.
                self.msr_emulate(write, regs.rcx as u32, regs);
                // Read after the engine took its table: a post event in it is seen here.
                if vm.post_kinds.load(Ordering::SeqCst) & kind_bit(kind) != 0 {
                    match self.complete(regs) {
                        Ok(()) => completed = Some(*regs),
                        Err(e) => error = Some(e),
                    }
                }
            })
        };
        if let Some(e) = error {
            return Flow::Stop(StopReason::Error(e));
        }
        if outcome.short_circuited {
            // Not performed: a WRMSR leaves the MSR alone, a RDMSR returns EDX:EAX as
            // the scripts left them; neither faults.
            let v = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            self.set_msr_reply(if write { 0 } else { v }, false);
        }
        let reference = completed.unwrap_or(before);
        if regs != reference {
            if let Err(e) = self.write_regs(&regs) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        Flow::Continue
    }
}

const RFLAGS_RF: u64 = 1 << 16;

/// A SYSCALL or SYSRET found at a #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SysInsn {
    Syscall,
    /// `rex_w`: SYSRETQ (back to 64-bit mode); `len`: 2 or 3 bytes.
    Sysret {
        rex_w: bool,
        len: u64,
    },
}

impl SysInsn {
    fn len(self) -> u64 {
        match self {
            SysInsn::Syscall => 2,
            SysInsn::Sysret { len, .. } => len,
        }
    }
}

/// The SYSCALL MSRs of a vCPU, from the VMM's model.
#[derive(Clone, Copy, Debug, Default)]
struct SyscallMsrs {
    star: u64,
    lstar: u64,
    fmask: u64,
}

fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

/// SYSCALL / SYSRET in 64-bit mode, per the Intel SDM's pseudo-code (the caller has
/// checked the #UD/#GP conditions, `VcpuThread::sys_insn`):
///
/// - SYSCALL: RCX = RIP of the next instruction, R11 = RFLAGS, RIP = LSTAR,
///   RFLAGS &= !FMASK (and RF cleared), CS = STAR\[47:32\] & 0xfffc (CPL 0),
///   SS = STAR\[47:32\] + 8. RSP is not changed.
/// - SYSRETQ: RIP = RCX, RFLAGS = (R11 & 0x3C7FD7) | 2, CS = (STAR\[63:48\] + 16) | 3,
///   SS = (STAR\[63:48\] + 8) | 3 (CPL 3). 32-bit SYSRET: RIP = ECX,
///   CS = STAR\[63:48\] | 3.
///
/// The selectors reach the guest through the stub's IRETQ, which loads the descriptor
/// caches from the GDT; hardware loads fixed flat caches instead. The two agree for a
/// GDT laid out the way SYSCALL expects (the demo's, Linux's).
fn emulate_sys(insn: SysInsn, r: &mut GuestRegs, msrs: &SyscallMsrs) {
    match insn {
        SysInsn::Syscall => {
            r.rcx = r.rip + 2;
            r.r11 = r.rflags;
            r.rip = msrs.lstar;
            r.rflags = (r.rflags & !msrs.fmask & !RFLAGS_RF) | 0x2;
            let base = (msrs.star >> 32) & 0xffff;
            r.cs = base & 0xfffc;
            r.ss = (base + 8) & 0xffff;
        }
        SysInsn::Sysret { rex_w, .. } => {
            let base = (msrs.star >> 48) & 0xffff;
            if rex_w {
                r.rip = r.rcx;
                r.cs = ((base + 16) | 3) & 0xffff;
            } else {
                r.rip = r.rcx & 0xffff_ffff;
                r.cs = base | 3;
            }
            r.rflags = (r.r11 & 0x3c_7fd7) | 0x2;
            r.ss = ((base + 8) | 3) & 0xffff;
        }
    }
}

/// The registers after a completed MMIO read: what the instruction changed (its
/// destination, RIP, flags) from `after`, every other register as the pre scripts left it.
fn merge_after_read(before: &GuestRegs, script: &GuestRegs, after: &GuestRegs) -> GuestRegs {
    let mut m = *script;
    let (b, a) = (before.slots(), after.slots());
    let slots = m.slots_mut();
    // RAX..R15, RIP, RFLAGS are the first 18 slots (abi's declaration order).
    for i in 0..18 {
        if a[i] != b[i] {
            slots[i] = a[i];
        }
    }
    m.rip = after.rip;
    m
}

/// Whether two register sets agree on everything `from_guest_regs` writes back.
fn same_applied(a: &GuestRegs, b: &GuestRegs) -> bool {
    let (mut x, mut y) = (kvm_regs::default(), kvm_regs::default());
    from_guest_regs(&mut x, a);
    from_guest_regs(&mut y, b);
    x == y && special_regs(a) == special_regs(b)
}

/// The special registers a script may write and hv-kvm applies through `KVM_SET_SREGS`
/// (crate::script_checks refuses the rest when the event is defined).
fn special_regs(g: &GuestRegs) -> [u64; 7] {
    [g.cr0, g.cr2, g.cr3, g.cr4, g.cr8, g.gdtr, g.idtr]
}

fn size_mask(size: usize) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// RAX after `IN` of `size` bytes: 8/16-bit INs merge, a 32-bit IN zero-extends.
fn merge_in(rax: u64, value: u32, size: usize) -> u64 {
    match size {
        1 => (rax & !0xff) | u64::from(value & 0xff),
        2 => (rax & !0xffff) | u64::from(value & 0xffff),
        _ => u64::from(value),
    }
}

fn to_guest_regs(r: &kvm_regs, s: &kvm_sregs) -> GuestRegs {
    GuestRegs {
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rbx: r.rbx,
        rsp: r.rsp,
        rbp: r.rbp,
        rsi: r.rsi,
        rdi: r.rdi,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
        cs: u64::from(s.cs.selector),
        ds: u64::from(s.ds.selector),
        es: u64::from(s.es.selector),
        fs: u64::from(s.fs.selector),
        gs: u64::from(s.gs.selector),
        ss: u64::from(s.ss.selector),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        gdtr: s.gdt.base,
        idtr: s.idt.base,
        ldtr: u64::from(s.ldt.selector),
        tr: u64::from(s.tr.selector),
        ..Default::default()
    }
}

/// The general registers, RIP and RFLAGS (the special registers go through
/// [`VcpuThread::write_special`]).
fn from_guest_regs(r: &mut kvm_regs, g: &GuestRegs) {
    r.rax = g.rax;
    r.rcx = g.rcx;
    r.rdx = g.rdx;
    r.rbx = g.rbx;
    r.rsp = g.rsp;
    r.rbp = g.rbp;
    r.rsi = g.rsi;
    r.rdi = g.rdi;
    r.r8 = g.r8;
    r.r9 = g.r9;
    r.r10 = g.r10;
    r.r11 = g.r11;
    r.r12 = g.r12;
    r.r13 = g.r13;
    r.r14 = g.r14;
    r.r15 = g.r15;
    r.rip = g.rip;
    r.rflags = g.rflags | 0x2;
}
