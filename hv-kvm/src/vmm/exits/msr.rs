//! `!msrread` / `!msrwrite`: user-space MSR exits, and the VMM's MSR model.
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
//! The filter itself is rebuilt by [`Vm`] when events change (`vmm::events`); staging
//! is the parent's "How an exit is staged".

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};
use hvscript_abi::GuestRegs;
use kvm_bindings::{kvm_msr_entry, Msrs};

use crate::demo::{DEMO_MSR, MSR_FMASK, MSR_STAR};
use crate::memory::GuestView;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, StopReason, Vm, MODELLED_MSRS, SYSCALL_MSRS};

impl VcpuThread<'_> {
    pub(in crate::vmm) fn on_msr(&mut self, write: bool, index: u32, data: u64) -> Flow {
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
            let mut view = GuestView::new(mem, cr3).with_debugger(&self.vm.debugger);
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

    /// A SYSCALL MSR as the VMM's model holds it (0 until the guest writes it).
    pub(in crate::vmm) fn model_msr(&self, index: u32) -> u64 {
        self.msrs
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, v)| *v)
    }
}
