//! The environment one script execution sees, as the built-ins' [`Env`]: guest memory
//! (and the event's safe buffer at `$buffer`; the guest's direct pages for compiled
//! code's translation cache where nothing of its own shadows them), output recorded into
//! the vCPU's ring (printf as its format and raw values, formatted later:
//! [`crate::event_output`]), the execution's short-circuit flag, and event-table requests
//! applied after the exit.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hvscript_runtime::output_recorder::Flush;
use hvscript_runtime::Recorder;
use hvscript_stdlib::{
    AtomicRmw, CallerMemory, DirectPage, Env, EventOp, MemFault, ScriptError, Unavailable,
    DIRECT_PAGE_SIZE,
};

use crate::event::{Event, Stage};
use crate::event_output::EventOutput;
use crate::guest::GuestAccess;

/// `event_enable/disable/clear` from a script, applied once the exit is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRequest {
    pub op: EventOp,
    pub id: u64,
}

pub(crate) struct ExecutionEnv<'a, 'r> {
    pub guest: &'a mut dyn GuestAccess,
    pub event: &'a Event,
    pub stage: Stage,
    pub short_circuit: bool,
    pub refused_short_circuits: u64,
    /// Where output goes; `None` when the exit has not taken its ring yet (then `claim`
    /// takes it at the first message) or another exit held it (then each message is counted
    /// in `lost`).
    pub recorder: Option<&'a mut Recorder<'r>>,
    /// How to take the ring at the first message, when the exit has not tried yet.
    pub claim: Option<ClaimLater<'a, 'r>>,
    pub lost: &'a AtomicU64,
    pub requests: &'a mut Vec<EventRequest>,
    /// Whether an event id exists in the table this exit uses.
    pub known_id: &'a dyn Fn(u64) -> bool,
    /// The strings `$date` and `$time` point to (read-only to the script).
    pub clock: &'a [u8],
    /// `pause()` ran: the guest stops once the script returns.
    pub pause: bool,
}

/// What taking an exit's output ring in the middle of an execution needs: where the exit
/// keeps its recorder, the output, and the execution's header.
pub(crate) struct ClaimLater<'a, 'r> {
    pub slot: &'a mut Option<Recorder<'r>>,
    pub tried: &'a mut bool,
    pub output: &'r EventOutput,
    pub flush: Option<Flush<'r>>,
    pub core: u32,
    pub event_id: u64,
    pub stage: Stage,
    pub pid: u64,
    pub rip: u64,
}

impl<'a, 'r> ClaimLater<'a, 'r> {
    /// Where an execution's output goes as it starts: the exit's recorder if it has one, or
    /// one taken now for a script that may print; otherwise nothing yet, and the claim
    /// itself to take the ring at the first message (none once the exit found its ring
    /// held by another: then messages are counted as lost).
    pub fn start(self, may_output: bool) -> (Option<&'a mut Recorder<'r>>, Option<Self>) {
        if self.slot.is_some() || (may_output && !*self.tried) {
            (self.recorder(), None)
        } else if *self.tried {
            (None, None)
        } else {
            (None, Some(self))
        }
    }

    /// The exit's recorder, taking the ring first if the exit has none (once per exit),
    /// with the execution's records started in it.
    pub fn recorder(self) -> Option<&'a mut Recorder<'r>> {
        if self.slot.is_none() {
            *self.tried = true;
            *self.slot = self.output.recorder(self.core, self.flush);
        }
        let r = self.slot.as_mut()?;
        r.begin(self.event_id, self.stage, self.core, self.pid, self.rip);
        Some(r)
    }
}

impl ExecutionEnv<'_, '_> {
    /// Takes the exit's output ring now if it has not tried yet (the first message of an
    /// exit whose earlier scripts could not print).
    fn take_ring_if_needed(&mut self) {
        if self.recorder.is_none() {
            if let Some(later) = self.claim.take() {
                self.recorder = later.recorder();
            }
        }
    }

    /// Whether `[addr, addr+len)` overlaps the `$date`/`$time` strings or the safe buffer,
    /// which shadow guest memory at their addresses.
    fn overlaps_own(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        let overlaps = |base: u64, size: u64| size != 0 && addr < base + size && end > base;
        overlaps(self.clock.as_ptr() as u64, self.clock.len() as u64)
            || self.event.buffer.as_ref().is_some_and(|b| {
                let b = b.lock();
                overlaps(b.as_ptr() as u64, b.len() as u64)
            })
    }

    /// The offset into the safe buffer if `[addr, addr+len)` lies inside it.
    fn in_buffer(&self, addr: u64, len: usize) -> Option<usize> {
        let buf = self.event.buffer.as_ref()?;
        let b = buf.lock();
        let base = b.as_ptr() as u64;
        let end = addr.checked_add(len as u64)?;
        (addr >= base && end <= base + b.len() as u64).then(|| (addr - base) as usize)
    }
}

impl Env for ExecutionEnv<'_, '_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let clock = self.clock.as_ptr() as u64;
        if !self.clock.is_empty()
            && addr >= clock
            && addr.saturating_add(buf.len() as u64) <= clock + self.clock.len() as u64
        {
            let off = (addr - clock) as usize;
            buf.copy_from_slice(&self.clock[off..off + buf.len()]);
            return Ok(());
        }
        if let Some(off) = self.in_buffer(addr, buf.len()) {
            if let Some(b) = &self.event.buffer {
                buf.copy_from_slice(&b.lock()[off..off + buf.len()]);
                return Ok(());
            }
        }
        self.guest.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        if let Some(off) = self.in_buffer(addr, data.len()) {
            if let Some(b) = &self.event.buffer {
                b.lock()[off..off + data.len()].copy_from_slice(data);
                return Ok(());
            }
        }
        self.guest.write(addr, data)
    }

    /// The guest's page, unless the clock strings or the safe buffer shadow part of it:
    /// those are served (under the buffer's lock) by `read`/`write` only.
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        let base = addr & !(DIRECT_PAGE_SIZE - 1);
        if self.overlaps_own(base, DIRECT_PAGE_SIZE) {
            return None;
        }
        self.guest.direct_page(addr, write)
    }

    /// The guest's, unless this execution has a clock or a safe buffer: those live at
    /// addresses a later execution's may not, and a page cached now could then shadow them.
    fn mapping_id(&self) -> u64 {
        if !self.clock.is_empty() || self.event.buffer.is_some() {
            return 0;
        }
        self.guest.mapping_id()
    }

    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        if let Some(off) = self.in_buffer(addr, 8) {
            if let Some(b) = &self.event.buffer {
                let mut g = b.lock();
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&g[off..off + 8]);
                let old = u64::from_le_bytes(bytes);
                g[off..off + 8].copy_from_slice(&op.apply(old).to_le_bytes());
                return Ok(old);
            }
        }
        self.guest.atomic_rmw_u64(addr, op)
    }

    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        if let Some(off) = self.in_buffer(addr, 4) {
            if let Some(b) = &self.event.buffer {
                let mut g = b.lock();
                let old = u32::from_le_bytes([g[off], g[off + 1], g[off + 2], g[off + 3]]);
                if old == expected {
                    g[off..off + 4].copy_from_slice(&new.to_le_bytes());
                }
                return Ok(old);
            }
        }
        self.guest.cmpxchg_u32(addr, expected, new)
    }

    fn read_phys(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.guest.read_phys(addr, buf)
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.guest.write_phys(addr, data)
    }
    fn virt_to_phys(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.guest.virt_to_phys(addr)
    }
    fn phys_to_virt(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.guest.phys_to_virt(addr)
    }

    fn output(&mut self, bytes: &[u8]) {
        self.take_ring_if_needed();
        match self.recorder.as_deref_mut() {
            Some(r) => r.text(bytes),
            None => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Recorded, not formatted: the exit path pays for the format's id, the values and the
    /// `%s` strings it must read now. Without a ring the call is formatted (its errors
    /// still stop the script) and its text counted as lost.
    fn defer_printf(
        &mut self,
        fmt: &[u8],
        args: &[u64],
        caller: &mut dyn CallerMemory,
    ) -> Option<Result<(), ScriptError>> {
        self.take_ring_if_needed();
        let recorder = self.recorder.take()?;
        let result = recorder.printf(caller, self, fmt, args);
        self.recorder = Some(recorder);
        Some(result)
    }

    fn record_printf_values(&mut self, fmt: &[u8], args: &[u64]) -> bool {
        self.take_ring_if_needed();
        match self.recorder.as_deref_mut() {
            Some(r) => r.printf_values(fmt, args),
            None => false,
        }
    }

    /// HyperDbg's kernel-side `test_statement` does nothing; so here.
    fn test_statement(&mut self, _value: u64) {}

    fn rdtsc(&mut self) -> Result<u64, Unavailable> {
        Ok(read_tsc())
    }
    fn rdtscp(&mut self) -> Result<u64, Unavailable> {
        Ok(read_tsc())
    }

    fn event_control(&mut self, op: EventOp, id: u64) -> Result<bool, Unavailable> {
        if !(self.known_id)(id) {
            return Ok(false);
        }
        self.requests.push(EventRequest { op, id });
        Ok(true)
    }

    fn event_sc(&mut self, on: bool) -> Result<(), Unavailable> {
        match self.stage {
            Stage::Pre => self.short_circuit = on,
            Stage::Post => {
                self.refused_short_circuits += 1;
                self.warn("event_sc in the post stage changes nothing: the emulation has already happened");
            }
        }
        Ok(())
    }

    fn microsleep(&mut self, us: u64) -> Result<(), Unavailable> {
        self.guest.microsleep(us)
    }

    fn local_time(&mut self) -> Option<hvscript_stdlib::LocalTime> {
        self.guest.local_time()
    }

    fn event_inject(
        &mut self,
        kind: u8,
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<(), Unavailable> {
        self.guest.inject(kind, vector, error_code)
    }

    fn pause(&mut self) -> Result<(), Unavailable> {
        if !self.guest.can_pause() {
            return Err(Unavailable(
                "no debugger console is attached, so the guest goes on (attach one with \
                 `hvscript attach SOCKET`)",
            ));
        }
        self.pause = true;
        Ok(())
    }
}

fn read_tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions in the modes a hypervisor runs in.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}
