//! `!monitor`: MMIO exits of watched pages (layout and parking in [`crate::monitor`]).
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

use std::sync::atomic::Ordering;

use hv_core::{Access, EventKind, Exit};
use hvscript_abi::GuestRegs;
use kvm_ioctls::VcpuExit;

use crate::memory::GuestView;
use crate::monitor;
use crate::vmm::run_area::same_applied;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{kind_bit, StopReason, Vm};

impl VcpuThread<'_> {
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
    /// perform it on guest RAM ([`crate::monitor`]; stages in this module's documentation).
    ///
    /// The script sees the access in two registers hv-kvm does not otherwise expose:
    /// `@dr0` = the data (pre of a write: the value being written; pre of a read: the
    /// value the read will return, i.e. the old memory; post: the same data as
    /// performed) and `@dr1` = its length in bytes. A pre-stage write to `@dr0` changes
    /// what is written / what the read returns. Memory reads at `$context` see the old
    /// memory in pre and the new memory in post.
    pub(in crate::vmm) fn on_mmio(
        &mut self,
        addr: u64,
        len: usize,
        write: bool,
        data: [u8; 8],
    ) -> Flow {
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
            let mut view = GuestView::new(mem, cr3).with_debugger(&self.vm.debugger);
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
