//! `!syscall` / `!sysret`: HyperDbg's EFER.SCE trick, adapted to this KVM.
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
//! [`GuestImage::syscall_trap`]: crate::demo::GuestImage::syscall_trap
//! [`GuestImage::iretq_trampoline`]: crate::demo::GuestImage::iretq_trampoline

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};
use hvscript_abi::GuestRegs;

use crate::boot;
use crate::demo::{field, MSR_FMASK, MSR_LSTAR, MSR_STAR};
use crate::memory::GuestView;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, Vm};

impl VcpuThread<'_> {
    /// The SYSCALL/SYSRET the #UD at `regs.rip` (the interrupted context) was, if it is
    /// one the VMM emulates: SYSCALL (0F 05) at any CPL; SYSRET (0F 07, with a REX
    /// prefix 40..4F before it; REX.W = the 64-bit form) at CPL0 with a canonical RCX.
    /// A SYSRET at CPL3 or to a non-canonical RCX is #GP(0) on hardware; the VMM does
    /// not turn the #UD into that #GP: it stays a #UD (`!exception`, guest handler).
    pub(in crate::vmm) fn sys_insn(&self, regs: &mut GuestRegs, cr3: u64) -> Option<SysInsn> {
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
    pub(in crate::vmm) fn on_syscall_ud(
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
            let mut view = GuestView::new(&vm.mem, cr3).with_debugger(&self.vm.debugger);
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
    pub(in crate::vmm) fn on_sysret_step(
        &mut self,
        insn: SysInsn,
        mut regs: GuestRegs,
        cr3: u64,
    ) -> Flow {
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
            let mut view = GuestView::new(&vm.mem, cr3).with_debugger(&self.vm.debugger);
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
}

const RFLAGS_RF: u64 = 1 << 16;

/// A SYSCALL or SYSRET found at a #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::vmm) enum SysInsn {
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
