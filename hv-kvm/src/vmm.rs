//! The VMM: a KVM virtual machine running the demo guest on N vCPUs (one thread each),
//! with every port-I/O, user-space MSR and MMIO exit, CPL0 CPUID step, exception stub
//! report, emulated SYSCALL/SYSRET and execute-hook breakpoint turned into an hv-core
//! exit.
//!
//! This module owns [`Vm`]: creating it, its configuration, running it (the vCPU threads
//! and the controller that stops them) and the kick signal. The rest is split by what it
//! touches:
//!
//! - `events`: the event-table side of [`Vm`] (adding and applying events, the MSR filter,
//!   the `!monitor` watches and memory slots, the execute hooks, parking the vCPUs while
//!   they change);
//! - `report`: what a run gives back ([`RunReport`], [`StopReason`], the counters);
//! - `vcpu`: a vCPU thread and its loop (`KVM_RUN`, decode, hand the exit to its kind);
//! - `run_area`: the one place that touches KVM's run area (the `kvm_run` union,
//!   sync-regs, completions through `immediate_exit`, register conversion, injection);
//! - `exits`: one file per exit kind, each with the documentation of its kind: `io`,
//!   `msr`, `monitor`, `stepping` (`!cpuid`), `exception`, `syscall` (`!syscall` /
//!   `!sysret`), `epthook`.
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
//! ## Stopping
//!
//! The guest stops on its own with an OUT to the exit port. The VMM can ask it to stop
//! (a flag in its data block the user loop checks), and past the hard timeout it kicks the
//! vCPU threads out of `KVM_RUN` with a signal: no loop here waits forever.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use hv_core::{Engine, EventKind, OutputSink, SymbolMap};
use hvscript_runtime::GlobalSlots;
use kvm_bindings::{
    kvm_enable_cap, kvm_msr_entry, Msrs, KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES,
    KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_UNKNOWN,
};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd, VmFd};

use crate::boot;
use crate::demo::{demo_image, field, GuestImage, MSR_LSTAR};
use crate::memory::GuestMemory;
use crate::monitor::{Slot, Watch};
use crate::output::OutputRouter;
use vcpu::VcpuThread;

mod events;
mod exits;
mod report;
mod run_area;
pub(crate) use run_area::{from_guest_regs, to_guest_regs};
mod vcpu;

pub use report::{vector_name, DeviceCounters, ExitCounts, RunReport, StopReason, VcpuReport};

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

fn kind_bit(kind: EventKind) -> u32 {
    1 << (kind as u32)
}

use crate::global_names::GlobalNames;
/// The start of the error for a script compiled against global bindings the VM no longer
/// has (a front end refreshes its names and compiles again).
pub use crate::global_names::STALE_GLOBALS;

/// A virtual machine with the demo guest loaded, ready to run once.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Mutex<Vec<VcpuFd>>,
    vm: VmFd,
    _kvm: Kvm,
    mem: GuestMemory,
    engine: Arc<Engine>,
    /// Writes what the exits record while the guest runs, and what a pause must follow.
    output_thread: Arc<crate::output_thread::OutputThread>,
    /// The session's global variables: the values every event and `?` share ...
    globals: Arc<GlobalSlots>,
    /// ... and the authoritative name -> slot table front ends compile against
    /// ([`Vm::global_names`], [`Vm::bind_globals`]).
    global_names: GlobalNames,
    /// Breaking into the debugger: `pause`, `pause()`, `g`, `r`.
    pub debugger: crate::debugger::Debugger,
    /// Where event messages go (console, output sources, `imm no` buffers).
    output: Arc<OutputRouter>,
    /// Names usable in event arguments and scripts (`--sym`).
    symbols: RwLock<SymbolMap>,
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
    /// A script waiting for vCPU 0's next I/O exit ([`Vm::run_on_exit`]).
    probe: crate::probe::ProbeSlot,
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
        let region = mem.slot(0, 0, mem.size() as u64, 0);
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
            // VMM's model): see `exits::syscall`.
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
        // Deferred: exits record their output, the output thread of `run` formats it.
        let engine = Arc::new(Engine::deferred(output.clone()));
        let vm = Vm {
            vcpus: Mutex::new(vcpus),
            vm,
            _kvm: kvm,
            mem,
            output_thread: crate::output_thread::OutputThread::new(engine.clone()),
            engine,
            globals: Arc::new(GlobalSlots::default()),
            global_names: GlobalNames::default(),
            debugger: crate::debugger::Debugger::default(),
            probe: crate::probe::ProbeSlot::default(),
            output,
            symbols: RwLock::new(SymbolMap::default()),
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
        vm.debugger
            .set_notices(vm.output.clone(), vm.output_thread.clone());
        Ok(vm)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session's global variable values, shared by every event and `?`.
    pub fn globals(&self) -> &Arc<GlobalSlots> {
        &self.globals
    }

    pub(crate) fn probe_slot(&self) -> &crate::probe::ProbeSlot {
        &self.probe
    }

    /// Forgets every global name and zeroes every value: a fresh session (conformance
    /// runs each case in one).
    pub fn reset_globals(&self) {
        self.global_names.clear();
        for slot in 0..self.globals.capacity() {
            self.globals.set(slot as u32, 0);
        }
    }

    /// The session's global names with their slots: what a front end compiles against.
    pub fn global_names(&self) -> Vec<(String, u32)> {
        self.global_names.names()
    }

    /// The current value of global `.name`, if a script bound it.
    pub fn global(&self, name: &str) -> Option<u64> {
        self.global_names.slot(name).map(|s| self.globals.get(s))
    }

    /// Accepts the bindings a script was compiled with ([`GlobalNames::bind`]).
    pub fn bind_globals(&self, bindings: &[(String, u32)]) -> Result<(), String> {
        self.global_names.bind(&self.globals, bindings)
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
        // The output thread formats and writes what the vCPUs record while they run; once
        // they have all stopped, the rest of it goes out before `run_while` returns.
        let (reports, elapsed) = self.output_thread.run_while(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = vcpus
                    .into_iter()
                    .enumerate()
                    .map(|(cpu, vcpu)| {
                        let kicked = &kicked;
                        std::thread::Builder::new()
                            .name(format!("vcpu{cpu}"))
                            .spawn_scoped(s, move || {
                                // SAFETY: pthread_self has no preconditions.
                                threads[cpu].store(
                                    unsafe { libc::pthread_self() } as u64,
                                    Ordering::SeqCst,
                                );
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
                                unsafe {
                                    libc::pthread_kill(tid as libc::pthread_t, kick_signal())
                                };
                            }
                        }
                    }
                }
                let reports = handles
                    .into_iter()
                    .map(|h| h.join().expect("vCPU thread panicked"))
                    .collect::<Vec<_>>();
                // The guest's time ends here, not when its output has been written.
                (reports, start.elapsed())
            })
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
            elapsed,
        })
    }
}

/// Interrupts `KVM_RUN` on the thread `thread` (a `pthread_t`): it returns `EINTR`.
pub(crate) fn kick(thread: u64) {
    install_kick_handler();
    // SAFETY: callers pass a live thread: one registered as running a vCPU loop, kicked
    // under the lock it unregisters with before it can end; the handler is installed and
    // does nothing.
    unsafe { libc::pthread_kill(thread as libc::pthread_t, kick_signal()) };
}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {}

pub(crate) fn install_kick_handler() {
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
