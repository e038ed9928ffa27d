//! `!cpuid`: CPL0 single-stepping.
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
//! This module also owns `KVM_SET_GUEST_DEBUG` (single-stepping and the execute hooks'
//! debug registers, [`super::epthook`]), which the vCPU loop syncs before each entry.

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};
use hvscript_abi::GuestRegs;
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};
use kvm_ioctls::VcpuExit;

use crate::memory::GuestView;
use crate::vmm::exits::syscall::SysInsn;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, StopReason, Vm, MAX_HOOKS};

impl VcpuThread<'_> {
    /// Programs `KVM_SET_GUEST_DEBUG`: single-stepping when `step`, and the execute
    /// hooks in DR0..DR3 (+ DR7 local-enable bits, execute, length 1) when `breakpoints`.
    pub(in crate::vmm) fn set_debug(
        &mut self,
        step: bool,
        breakpoints: bool,
    ) -> Result<(), String> {
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
    pub(in crate::vmm) fn sync_debug(&mut self) -> Flow {
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

    /// After a step: while the next instruction is a CPL0 `CPUID`, raise `!cpuid` for it.
    pub(in crate::vmm) fn on_step(&mut self) -> Flow {
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
    pub(in crate::vmm) fn step_one(&mut self, regs: &GuestRegs) -> Result<GuestRegs, String> {
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
            let mut view = GuestView::new(mem, cr3).with_debugger(&self.vm.debugger);
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
}
