//! `!monitor`'s exits on a program: the MMIO accesses KVM reports for watched frames
//! ([`super::watches`]), and the instructions KVM's emulator cannot run on them (SSE, AVX),
//! which the VMM runs natively for one trap-flag step with the watches lifted.
//!
//! Pre sees the old memory (`dq($context)`) and the access's data in `@dr0` (a write's
//! value, which a pre script may change; a read's value, which it may change too), its
//! length in `@dr1`; post sees the new memory. A short-circuit drops the access: a write
//! leaves memory as it was, a read leaves the destination as the scripts left it (RIP moves
//! past the instruction). For an instruction stepped natively, pre's `@dr0` is the old
//! memory for reads and writes alike and a change to it is not applied.

use hv_core::{Access, EventKind, Filter};
use hvscript_abi::GuestRegs;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::exits::{program_exit, segv, Machine};
use super::faults::{self, FaultFrame, FAULT_PORT_BASE};
use super::vm::Ending;
use super::watches::Watches;
use crate::vmm::{from_guest_regs, to_guest_regs};

impl Machine<'_> {
    /// An access to a watched frame at guest-physical `addr`: `value` for a write, `None`
    /// for a read. `!monitor` runs if an event's range covers it; the access is performed
    /// on guest RAM unless a pre script short-circuited.
    pub(super) fn on_access(
        &mut self,
        addr: u64,
        len: usize,
        value: Option<u64>,
    ) -> Result<Option<Ending>, String> {
        let len = len.clamp(1, 8);
        let Some(page) = self.watches.page_of(addr) else {
            return segv(format!(
                "SIGSEGV: access to guest-physical {addr:#x}, outside the program's memory"
            ));
        };
        let va = page | (addr & 0xfff);
        let mem = self.space.mem;
        let old = {
            let mut b = [0u8; 8];
            let _ = mem.read(addr, &mut b[..len]);
            u64::from_le_bytes(b)
        };
        let write = value.is_some();
        let access = if write { Access::WRITE } else { Access::READ };
        let r = self.read_regs()?;
        let mut g = to_guest_regs(&r, &self.sregs);
        let before = g;
        g.dr0 = value.unwrap_or(old);
        g.dr1 = len as u64;
        let mut exit = program_exit(EventKind::Monitor, va, self.process.pid);
        exit.access = access;
        let post = self.post_wanted(va, len, access);
        let mut view = self.view();
        let mut completed = None;
        let mut error = None;
        let vcpu = &mut self.vcpu;
        let synced = self.synced;
        let outcome = self
            .engine
            .handle_exit(&exit, &mut g, &mut view, |regs, _| {
                let data = regs.dr0.to_le_bytes();
                if write {
                    let _ = mem.write(addr, &data[..len]);
                    return;
                }
                set_mmio_data(vcpu, &data[..len]);
                if post || !same_registers(regs, &before) {
                    // Complete the read now so post sees its result (registers written
                    // between a read exit and its completion are lost by KVM's emulator).
                    match complete_read(vcpu, mem, synced, false) {
                        Ok(after) => {
                            let mut merged = merge_after_read(&before, regs, &after);
                            (merged.dr0, merged.dr1) = (regs.dr0, regs.dr1);
                            *regs = merged;
                            completed = Some(after);
                        }
                        Err(e) => error = Some(e),
                    }
                }
            });
        if let Some(e) = error {
            return Err(e);
        }
        if outcome.short_circuited && !write {
            // The read is not performed: the instruction completes (RIP moves past it)
            // and every register is left as the pre scripts set it.
            let after = complete_read(&mut self.vcpu, mem, synced, true)?;
            g.rip = after.rip;
            completed = Some(after);
        }
        if completed.is_some() || !same_registers(&g, &before) {
            let mut out = r;
            if let Some(after) = completed {
                out = after;
            }
            from_guest_regs(&mut out, &g);
            out.rflags = faults::user_rflags(out.rflags);
            self.write_regs(&out)?;
        }
        Ok(None)
    }

    /// KVM's emulator gave up on an instruction. On a watched page (an SSE or AVX access,
    /// which KVM does not emulate) the VMM runs it natively instead: pre stage (`@dr0` =
    /// the memory before, for reads and writes alike; a change to it is not applied), the
    /// watches lifted for one trap-flag step, post stage; a short-circuit skips the
    /// instruction. Anywhere else the VM cannot go on, and says where.
    pub(super) fn on_unemulated(&mut self) -> Result<Option<Ending>, String> {
        let r = self.read_regs()?;
        let instruction = faults::instruction_at(r.rip, |b| {
            super::syscalls::Guest::read(&self.space, r.rip, b)
        });
        let g0 = to_guest_regs(&r, &self.sregs);
        let (fs, gs) = (self.sregs.fs.base, self.sregs.gs.base);
        let watched = instruction.as_ref().and_then(|i| {
            let mut factory = iced_x86::InstructionInfoFactory::new();
            let info = factory.info(i);
            info.used_memory().iter().find_map(|m| {
                let addr =
                    m.virtual_address(0, |reg, _, _| super::hooks::register(&g0, fs, gs, reg))?;
                let len = m.memory_size().size().max(1) as u64;
                let write = matches!(
                    m.access(),
                    iced_x86::OpAccess::Write
                        | iced_x86::OpAccess::CondWrite
                        | iced_x86::OpAccess::ReadWrite
                        | iced_x86::OpAccess::ReadCondWrite
                );
                self.watches
                    .touches(addr, len)
                    .then_some((addr, len, write))
            })
        });
        let (Some(instruction), Some((addr, len, write))) = (instruction, watched) else {
            return Err(format!(
                "KVM could not emulate the instruction at rip {:#x}, and it touches no \
                 watched page",
                r.rip
            ));
        };
        let access = if write { Access::WRITE } else { Access::READ };
        let mem_value = |m: &Self| {
            let mut b = [0u8; 8];
            let n = (len as usize).min(8);
            super::syscalls::Guest::read(&m.space, addr, &mut b[..n]);
            u64::from_le_bytes(b)
        };
        let mut g = g0;
        (g.dr0, g.dr1) = (mem_value(self), len);
        let mut exit = program_exit(EventKind::Monitor, addr, self.process.pid);
        exit.access = access;
        let engine = self.engine;
        let (vm, mem, synced, sregs) = (self.vm, self.space.mem, self.synced, self.sregs);
        let mut view = self.view();
        let (vcpu, watches) = (&mut self.vcpu, &mut self.watches);
        let mut stepped: Option<Result<(kvm_regs, FaultFrame, u8), String>> = None;
        let outcome = engine.handle_exit(&exit, &mut g, &mut view, |regs, guest| {
            // The access: one native step with the watches lifted, the trap flag's #DB
            // coming back through the stub of vector 1. Post sees the registers after it.
            let mut out = r;
            from_guest_regs(&mut out, regs);
            out.rflags = faults::user_rflags(out.rflags) | 0x100;
            let step = step_natively(vcpu, watches, vm, mem, synced, &out);
            if let Ok((stub, frame, _)) = &step {
                let mut user = *stub;
                (user.rip, user.rsp, user.rflags) = (frame.rip, frame.rsp, frame.rflags);
                *regs = to_guest_regs(&user, &sregs);
                // Post: @dr0 is the memory after the access.
                let mut b = [0u8; 8];
                let _ = guest.read(addr, &mut b[..(len as usize).min(8)]);
                (regs.dr0, regs.dr1) = (u64::from_le_bytes(b), len);
            }
            stepped = Some(step);
        });
        match stepped {
            None => {
                // Short-circuited: the instruction is skipped.
                let mut out = r;
                from_guest_regs(&mut out, &g);
                out.rflags = faults::user_rflags(out.rflags);
                out.rip = if g.rip == r.rip {
                    instruction.next_ip()
                } else {
                    g.rip
                };
                debug_assert!(outcome.short_circuited);
                self.write_regs(&out)?;
                Ok(None)
            }
            Some(Err(e)) => Err(e),
            Some(Ok((stub, frame, vector))) => {
                if vector != 1 {
                    // The instruction faulted: that fault is the program's.
                    return self.on_fault(vector);
                }
                // Scripts' registers (post) go back through the stub's frame; the trap
                // flag is off again.
                g.rflags &= !0x100;
                self.resume(stub, &frame, &g, g.rip, g.rsp)
            }
        }
    }

    /// Whether an enabled `!monitor` with a post stage covers this access.
    fn post_wanted(&self, va: u64, len: usize, access: Access) -> bool {
        let table = self.engine.snapshot();
        let hit = table.events_of(EventKind::Monitor).any(|(e, enabled)| {
            enabled
                && e.spec.options.stage.runs_post()
                && matches!(e.spec.filter, Filter::Range { access: a, from, to, .. }
                    if a.contains(access) && from < va + len as u64 && va <= to)
        });
        hit
    }
}

/// Runs the instruction at `regs.rip` natively for one trap-flag step with every watch
/// lifted (`regs` has TF set), and returns the stub's registers, the frame it reported
/// and the vector: 1 for the step, another if the instruction faulted. The frame's TF is
/// cleared again.
fn step_natively(
    vcpu: &mut VcpuFd,
    watches: &mut Watches,
    vm: &VmFd,
    mem: &crate::memory::GuestMemory,
    synced: bool,
    regs: &kvm_regs,
) -> Result<(kvm_regs, FaultFrame, u8), String> {
    if synced {
        let run = vcpu.get_kvm_run();
        run.s.regs.regs = *regs;
        run.kvm_dirty_regs |= u64::from(kvm_bindings::KVM_SYNC_X86_REGS);
    } else {
        vcpu.set_regs(regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    }
    watches.suspend(true, vm, mem)?;
    let exit = vcpu.run().map(|e| match e {
        VcpuExit::IoOut(port, _) => Some(port),
        _ => None,
    });
    watches.suspend(false, vm, mem)?;
    let port = match exit {
        Ok(Some(port)) => port,
        Ok(None) => return Err("stepping over a watched access: unexpected exit".into()),
        Err(e) => return Err(format!("stepping over a watched access: KVM_RUN: {e}")),
    };
    let vector = port.wrapping_sub(FAULT_PORT_BASE);
    if vector >= 32 {
        return Err(format!(
            "stepping over a watched access: port {port:#x} instead of the step"
        ));
    }
    let stub = if synced {
        let run = vcpu.get_kvm_run();
        // SAFETY: `kvm_valid_regs` asked KVM to fill `s.regs` on every exit.
        unsafe { run.s.regs.regs }
    } else {
        vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?
    };
    let mut frame = FaultFrame::read(mem, stub.rsp, vector as u8)?;
    frame.rflags &= !0x100;
    frame.resume_at(mem, frame.rip, frame.rsp, frame.rflags)?;
    Ok((stub, frame, vector as u8))
}

/// The data an MMIO read returns, written into the run area before the vCPU resumes.
fn set_mmio_data(vcpu: &mut VcpuFd, data: &[u8]) {
    let run = vcpu.get_kvm_run();
    // SAFETY: called only while handling an MMIO read exit, when `mmio` is the live member.
    let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
    mmio.data[..data.len()].copy_from_slice(data);
}

/// Completes a pending MMIO read inside KVM without running the guest (`immediate_exit`)
/// and returns the registers after the instruction. Further accesses of the same
/// instruction to watched frames (the write of a read-modify-write) are applied to RAM,
/// or dropped when `drop_rest`, without events: an instruction raises one event.
fn complete_read(
    vcpu: &mut VcpuFd,
    mem: &crate::memory::GuestMemory,
    synced: bool,
    drop_rest: bool,
) -> Result<kvm_regs, String> {
    vcpu.set_kvm_immediate_exit(1);
    let mut result = Err("completing a watched read: too many chained accesses".to_string());
    for _ in 0..8 {
        match vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => {
                result = Ok(());
                break;
            }
            Err(e) => {
                result = Err(format!("completing a watched read: KVM_RUN: {e}"));
                break;
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !drop_rest {
                    let _ = mem.write(addr, data);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !drop_rest {
                    let _ = mem.read(addr, data);
                } else {
                    data.fill(0);
                }
            }
            Ok(other) => {
                result = Err(format!(
                    "completing a watched read: KVM_RUN exited with {other:?}"
                ));
                break;
            }
        }
    }
    vcpu.set_kvm_immediate_exit(0);
    result?;
    if synced {
        let run = vcpu.get_kvm_run();
        // SAFETY: `kvm_valid_regs` asked KVM to fill `s.regs` on every exit.
        return Ok(unsafe { run.s.regs.regs });
    }
    vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))
}

/// Whether scripts left every general register, RIP and RFLAGS as they were.
fn same_registers(a: &GuestRegs, b: &GuestRegs) -> bool {
    a.slots()[..18] == b.slots()[..18]
}

/// The registers after a completed read: what the instruction changed (its destination,
/// RIP, flags) from `after`, every other register as the pre scripts left it.
fn merge_after_read(before: &GuestRegs, script: &GuestRegs, after: &kvm_regs) -> GuestRegs {
    let after = to_guest_regs(after, &kvm_sregs::default());
    let mut merged = *script;
    let (b, a) = (before.slots(), after.slots());
    let slots = merged.slots_mut();
    // RAX..R15, RIP, RFLAGS are the first 18 slots (abi's declaration order).
    for i in 0..18 {
        if a[i] != b[i] {
            slots[i] = a[i];
        }
    }
    merged.rip = after.rip;
    merged
}
