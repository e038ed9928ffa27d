//! `!epthook` / `!epthook2`: hardware execute breakpoints on CPL0 code.
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

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};

use crate::memory::GuestView;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, StopReason, Vm};

impl VcpuThread<'_> {
    /// A hooked kernel instruction is about to execute (the breakpoint is a fault: RIP
    /// is at it). Raise `!epthook` then `!epthook2` for the address (no stages, no
    /// short-circuit: `$context` = RIP), apply the scripts' registers, then step over
    /// the instruction with the breakpoints off (KVM re-reports an execute breakpoint
    /// at the same RIP on every entry: it ignores RFLAGS.RF for host breakpoints) and
    /// put them back.
    pub(in crate::vmm) fn on_breakpoint(&mut self) -> Flow {
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
                let mut view = GuestView::new(&vm.mem, cr3).with_debugger(&self.vm.debugger);
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
}
