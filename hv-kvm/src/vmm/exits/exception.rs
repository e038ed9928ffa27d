//! `!exception`: the reports of the VMM-owned IDT stubs.
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

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};

use crate::memory::GuestView;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, StopReason, Vm};

impl VcpuThread<'_> {
    /// The stub's OUT: raise `!exception`, then answer the stub in RAX with the guest
    /// handler to call (delivery) or 0 (not delivered: return to the interrupted code).
    ///
    /// Scripts see the interrupted context, not the stub's: RAX/RDX from the stub's
    /// saves, RIP/RFLAGS/RSP from the exception frame, `$context` = vector; their register
    /// writes go back there. Short-circuit = not delivered: the code resumes after a
    /// `ud2`, after the instruction for traps (#BP, #OF: the frame already points past
    /// it), and *at* the faulting instruction otherwise (the script is expected to have
    /// removed the cause, e.g. set a non-zero divisor for #DE).
    pub(in crate::vmm) fn on_exception(&mut self) -> Flow {
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
            let mut view = GuestView::new(&vm.mem, cr3).with_debugger(&self.vm.debugger);
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

    /// Reads the exception frame the guest's stub left on its stack.
    pub(in crate::vmm) fn exception_report(&mut self, vector: u32) -> StopReason {
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
}
