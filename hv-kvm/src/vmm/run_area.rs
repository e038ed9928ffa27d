//! The one place that touches KVM's run area: the `kvm_run` union of the current exit
//! (decoding it, the I/O data, the MSR and MMIO replies), the sync-regs copy of the
//! registers and its dirty bits, the completion of an exit through `immediate_exit`,
//! event injection, and the conversion between KVM's register structs and the
//! scripts' [`GuestRegs`]. Every `unsafe` access to the union is here, next to the
//! exit reason that makes its member the live one.

use hvscript_abi::GuestRegs;
use kvm_bindings::{
    kvm_regs, kvm_sregs, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_MMIO, KVM_EXIT_X86_RDMSR,
    KVM_EXIT_X86_WRMSR, KVM_SYNC_X86_REGS,
};
use kvm_ioctls::VcpuExit;

use crate::vmm::vcpu::{Decoded, Flow, VcpuThread};
use crate::vmm::StopReason;

impl VcpuThread<'_> {
    /// Queues a script's `event_inject` for the next entry (KVM_SET_VCPU_EVENTS).
    pub(super) fn inject(&mut self, i: crate::memory::Injection) -> Result<(), String> {
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

    /// Decodes an I/O or MSR exit from `kvm_run`.
    pub(super) fn decode(&mut self) -> Decoded {
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
    pub(super) fn io_data(&mut self, offset: usize, len: usize) -> &mut [u8] {
        let run = self.vcpu.get_kvm_run();
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        // SAFETY: KVM places the I/O data `data_offset` bytes into the kvm_run mapping,
        // which spans the whole mmap'ed run area (several pages); `len` = size * count as
        // KVM reported. The slice borrows `self`, so it cannot outlive the mapping.
        unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) }
    }

    pub(super) fn set_msr_reply(&mut self, data: u64, error: bool) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only while handling an MSR exit, when `msr` is the live member.
        let msr = unsafe { &mut run.__bindgen_anon_1.msr };
        msr.data = data;
        msr.error = u8::from(error);
    }

    /// Sets the data an MMIO read returns (completed on the next KVM_RUN).
    pub(super) fn set_mmio_data(&mut self, data: u64, len: usize) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only while handling an MMIO exit, when `mmio` is the live member.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        mmio.data[..len].copy_from_slice(&data.to_le_bytes()[..len]);
    }

    /// The registers at this exit, and CR3.
    pub(super) fn read_regs(&mut self) -> Result<(GuestRegs, u64), String> {
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
    pub(super) fn write_back(&mut self, regs: &GuestRegs, reference: &GuestRegs) -> Flow {
        if !same_applied(regs, reference) {
            if let Err(e) = self.write_regs(regs) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        Flow::Continue
    }

    pub(super) fn write_regs(&mut self, g: &GuestRegs) -> Result<(), String> {
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
            self.vm.engine.note(
                self.cpu as u32,
                0,
                hv_core::Stage::Pre,
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
    pub(super) fn complete(&mut self, regs: &mut GuestRegs) -> Result<(), String> {
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
}

/// Whether two register sets agree on everything `from_guest_regs` writes back.
pub(super) fn same_applied(a: &GuestRegs, b: &GuestRegs) -> bool {
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

pub(crate) fn to_guest_regs(r: &kvm_regs, s: &kvm_sregs) -> GuestRegs {
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
pub(crate) fn from_guest_regs(r: &mut kvm_regs, g: &GuestRegs) {
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
