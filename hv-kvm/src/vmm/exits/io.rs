//! `!ioin` / `!ioout`: port I/O exits (`KVM_EXIT_IO`), and the demo's devices behind
//! them (data, counter and exit ports). How the exit is staged, and what a short-circuit
//! does to an IN or an OUT, is in the parent module ([`crate::vmm`], "How an exit is
//! staged"). The exception stubs' OUT is not guest I/O: [`super::exception`].

use std::sync::atomic::Ordering;

use hv_core::{EventKind, Exit};
use hvscript_abi::GuestRegs;

use crate::demo::{COUNTER_PORT, DATA_PORT, EXCEPTION_PORT, EXIT_PORT};
use crate::memory::GuestView;
use crate::vmm::vcpu::{Flow, VcpuThread};
use crate::vmm::{data_value, kind_bit, StopReason, Vm};

impl VcpuThread<'_> {
    fn device_in(&mut self, port: u16) -> u32 {
        if port == DATA_PORT {
            let v = data_value(self.cpu, self.devices.data_reads);
            self.devices.data_reads += 1;
            self.devices.data_sum += u64::from(v);
            v
        } else {
            self.devices.other_in += 1;
            u32::MAX
        }
    }

    fn device_out(&mut self, port: u16, value: u32) -> Flow {
        match port {
            COUNTER_PORT => {
                self.devices.counter_writes += 1;
                self.devices.counter_sum += u64::from(value);
                Flow::Continue
            }
            EXIT_PORT => Flow::Stop(StopReason::GuestExit(value)),
            EXCEPTION_PORT => Flow::Stop(self.exception_report(value)),
            _ => {
                self.devices.other_out += 1;
                Flow::Continue
            }
        }
    }

    /// Performs the device side of an I/O exit: fills the IN data or delivers the OUT.
    /// For a single IN/OUT the value is the register's (`value_from_regs`).
    fn io_device(
        &mut self,
        port: u16,
        size: usize,
        count: usize,
        input: bool,
        data_offset: usize,
        out_value: Option<u32>,
    ) -> (Flow, Option<u32>) {
        let mut flow = Flow::Continue;
        let mut last_in = None;
        for i in 0..count {
            if input {
                let v = self.device_in(port);
                let bytes = v.to_le_bytes();
                self.io_data(data_offset + i * size, size)
                    .copy_from_slice(&bytes[..size]);
                last_in = Some(v);
            } else {
                let v = match out_value {
                    Some(v) if count == 1 => v,
                    _ => {
                        let mut b = [0u8; 4];
                        b[..size].copy_from_slice(self.io_data(data_offset + i * size, size));
                        u32::from_le_bytes(b)
                    }
                };
                let f = self.device_out(port, v & size_mask(size));
                if matches!(f, Flow::Stop(_)) {
                    flow = f;
                }
            }
        }
        (flow, last_in)
    }

    pub(in crate::vmm) fn on_io(
        &mut self,
        port: u16,
        size: usize,
        count: usize,
        input: bool,
        data_offset: usize,
    ) -> Flow {
        if self.cpu == 0
            && self
                .vm
                .probe_slot()
                .pending
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let job = self
                .vm
                .probe_slot()
                .job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(job) = job {
                job();
            }
        }
        let size = size.clamp(1, 4);
        let kind = if input {
            EventKind::IoIn
        } else {
            EventKind::IoOut
        };
        if self.vm.kinds.load(Ordering::Relaxed) & kind_bit(kind) == 0 {
            return self
                .io_device(port, size, count, input, data_offset, None)
                .0;
        }
        let (mut regs, cr3) = match self.read_regs() {
            Ok(r) => r,
            Err(e) => return Flow::Stop(StopReason::Error(e)),
        };
        let before = regs;
        let exit = Exit::new(kind, self.cpu as u32, u64::from(port));
        let vm: &Vm = self.vm;
        let engine = vm.engine.clone();
        let mem = &vm.mem;
        let mut flow = Flow::Continue;
        let mut completed: Option<GuestRegs> = None;
        let mut error = None;
        let outcome = {
            let mut view = GuestView::new(mem, cr3).with_debugger(&self.vm.debugger);
            engine.handle_exit(&exit, &mut regs, &mut view, |regs, _| {
                let out_value = (!input).then_some(regs.rax as u32);
                let (f, last_in) = self.io_device(port, size, count, input, data_offset, out_value);
                flow = f;
                if let (Some(v), 1) = (last_in, count) {
                    regs.rax = merge_in(regs.rax, v, size);
                }
                // Read after the engine took its table: a post event in it is seen here.
                let post = vm.post_kinds.load(Ordering::SeqCst) & kind_bit(kind) != 0 && count == 1;
                if post && matches!(flow, Flow::Continue) {
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
        if outcome.short_circuited && input && count == 1 {
            // The IN returns what the scripts left in the register.
            let bytes = (regs.rax as u32).to_le_bytes();
            self.io_data(data_offset, size)
                .copy_from_slice(&bytes[..size]);
        }
        let reference = completed.unwrap_or(before);
        if regs != reference {
            if let Err(e) = self.write_regs(&regs) {
                return Flow::Stop(StopReason::Error(e));
            }
        }
        flow
    }
}

fn size_mask(size: usize) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// RAX after `IN` of `size` bytes: 8/16-bit INs merge, a 32-bit IN zero-extends.
fn merge_in(rax: u64, value: u32, size: usize) -> u64 {
    match size {
        1 => (rax & !0xff) | u64::from(value & 0xff),
        2 => (rax & !0xffff) | u64::from(value & 0xffff),
        _ => u64::from(value),
    }
}
