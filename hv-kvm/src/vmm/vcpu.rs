//! A vCPU thread: its state ([`VcpuThread`]) and its loop, which parks when the VMM asks,
//! syncs the debug registers, runs `KVM_RUN`, decodes the exit and hands it to the
//! handler of its kind (`super::exits`), until the vCPU stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::demo::{GuestCounters, EXCEPTION_PORT};
use crate::vmm::{DeviceCounters, ExitCounts, StopReason, VcpuReport, Vm};

/// An exit decoded from `kvm_run`, owned (no borrow of the vCPU).
pub(super) enum Decoded {
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

pub(super) struct VcpuThread<'v> {
    pub(super) vm: &'v Vm,
    pub(super) cpu: usize,
    pub(super) vcpu: VcpuFd,
    pub(super) demo_msr: u64,
    /// Other modelled MSRs written by the guest.
    pub(super) msrs: Vec<(u32, u64)>,
    pub(super) devices: DeviceCounters,
    pub(super) exits: ExitCounts,
    pub(super) kicked: &'v AtomicBool,
    /// KVM_GUESTDBG_SINGLESTEP is on (a `!cpuid` or `!sysret` event exists).
    pub(super) stepping: bool,
    /// A completion through `immediate_exit` ended in the step exit after the completed
    /// instruction: look at the next instruction once the exit is handled.
    pub(super) step_pending: bool,
    /// The hook generation and addresses programmed into this vCPU's DR0..DR3.
    pub(super) hooks_gen: u64,
    pub(super) hooks: Arc<Vec<u64>>,
}

/// What to do after an exit.
pub(super) enum Flow {
    Continue,
    Stop(StopReason),
}

impl VcpuThread<'_> {
    pub(super) fn report(&self, stop: StopReason) -> VcpuReport {
        VcpuReport {
            cpu: self.cpu,
            stop,
            guest: GuestCounters::read(&self.vm.mem, self.cpu),
            devices: self.devices,
            exits: self.exits,
            demo_msr: self.demo_msr,
        }
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

    /// Runs the vCPU until it stops, registered with the debugger meanwhile (so `pause`
    /// can kick it and never kicks a thread that has ended).
    pub(super) fn run_loop(&mut self) -> StopReason {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() } as u64;
        self.vm
            .debugger
            .register_thread(self.cpu as u32, Some(thread));
        let stop = self.run_exits();
        self.vm.debugger.register_thread(self.cpu as u32, None);
        stop
    }

    /// Stops this vCPU while the guest is paused, with the registers it will go on with
    /// (the latest: what KVM has, or what is queued for it in the run area); a console's
    /// changes are written back.
    fn debug_stop(&mut self) -> Flow {
        let run = self.vcpu.get_kvm_run();
        let queued = run.kvm_dirty_regs;
        // SAFETY: `s.regs` is the sync-regs area, read only when this thread queued it.
        let (queued_regs, queued_sregs) = unsafe { (run.s.regs.regs, run.s.regs.sregs) };
        let regs = if queued & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0 {
            Ok(queued_regs)
        } else {
            self.vcpu.get_regs()
        };
        let sregs = if queued & u64::from(kvm_bindings::KVM_SYNC_X86_SREGS) != 0 {
            Ok(queued_sregs)
        } else {
            self.vcpu.get_sregs()
        };
        let (regs, sregs) = match (regs, sregs) {
            (Ok(r), Ok(s)) => (r, s),
            (Err(e), _) | (_, Err(e)) => {
                return Flow::Stop(StopReason::Error(format!(
                    "reading registers to pause: {e}"
                )))
            }
        };
        let mut g = crate::vmm::to_guest_regs(&regs, &sregs);
        if self.vm.debugger.stop(self.cpu as u32, &mut g, sregs.cr3) {
            if let Err(e) = self.write_regs(&g) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        Flow::Continue
    }

    fn run_exits(&mut self) -> StopReason {
        loop {
            self.park_if_asked();
            if self.vm.debugger.is_paused() {
                if let Flow::Stop(reason) = self.debug_stop() {
                    return reason;
                }
            }
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
}
