//! The script's own memory, seen through the built-ins' [`Env`].
//!
//! `&local` and `&.global` are real addresses (of the interpreter's local stack and of the
//! global slots), as in HyperDbg, so `poi(&x)`, `interlocked_increment(&.n)` and
//! `memcpy(&a, &b, 8)` work on them. [`ScriptMemory`] serves accesses that fall inside those
//! two areas itself and passes everything else — guest memory, output, events — to the
//! host environment. The interpreter (`hvscript-lang`) and the [`Runner`](crate::Runner)
//! both route through it, so the two back ends cannot disagree on what is the script's own.
//! It also keeps the script's own memory out of the translation cache (no direct page
//! overlaps it) and notes writes that reach the host, after which cached translations may
//! be stale. [`OwnAreas`] is the same routing for a host that defers printf and reads its
//! `%s` strings itself.

use core::sync::atomic::{AtomicU64, Ordering};

use hvscript_stdlib::{
    AtomicRmw, CallerMemory, DirectPage, Env, EventOp, LbrOp, LocalTime, MemFault, ScriptError,
    TraceKind, Unavailable, DIRECT_PAGE_SIZE,
};

pub struct ScriptMemory<'a> {
    pub stack: &'a mut [u64],
    pub globals: &'a [AtomicU64],
    pub host: &'a mut dyn Env,
    /// Set when a write (plain, physical or atomic) went to the host environment: it may
    /// have changed the guest's page tables.
    pub wrote_host: bool,
}

enum Area {
    Stack(usize),
    Global(usize),
    Host,
}

fn base_of<T>(s: &[T]) -> u64 {
    s.as_ptr() as u64
}

impl<'a> ScriptMemory<'a> {
    pub fn new(
        stack: &'a mut [u64],
        globals: &'a [AtomicU64],
        host: &'a mut dyn Env,
    ) -> ScriptMemory<'a> {
        ScriptMemory {
            stack,
            globals,
            host,
            wrote_host: false,
        }
    }
}

/// Which of the script's areas holds `[addr, addr + len)`; `None` when it straddles an
/// area's edge.
fn area_of(stack: &[u64], globals: &[AtomicU64], addr: u64, len: usize) -> Option<Area> {
    let end = addr.checked_add(len as u64)?;
    for (base, size, is_stack) in [
        (base_of(stack), stack.len() * 8, true),
        (base_of(globals), globals.len() * 8, false),
    ] {
        let top = base + size as u64;
        if addr >= base && end <= top {
            let off = (addr - base) as usize;
            return Some(if is_stack {
                Area::Stack(off)
            } else {
                Area::Global(off)
            });
        }
        if addr < top && end > base {
            return None;
        }
    }
    Some(Area::Host)
}

fn global_read(globals: &[AtomicU64], off: usize, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = off + i;
        *b = globals[at / 8].load(Ordering::Relaxed).to_le_bytes()[at % 8];
    }
}

/// The script's own stack and globals as a deferred printf reads `%s` strings in them
/// ([`Env::defer_printf`]), then whatever memory `outer` claims.
pub struct OwnAreas<'a> {
    pub stack: &'a [u64],
    pub globals: &'a [AtomicU64],
    pub outer: &'a mut dyn CallerMemory,
}

impl CallerMemory for OwnAreas<'_> {
    fn read_caller(&mut self, addr: u64, buf: &mut [u8]) -> Option<Result<(), MemFault>> {
        match area_of(self.stack, self.globals, addr, buf.len()) {
            None => Some(Err(MemFault::Invalid)),
            Some(Area::Stack(off)) => {
                // SAFETY: a [u64] of n elements is n*8 initialised bytes with no padding,
                // and u8 has alignment 1; the slice borrows `self.stack`.
                let bytes = unsafe {
                    core::slice::from_raw_parts(
                        self.stack.as_ptr().cast::<u8>(),
                        self.stack.len() * 8,
                    )
                };
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                Some(Ok(()))
            }
            Some(Area::Global(off)) => {
                global_read(self.globals, off, buf);
                Some(Ok(()))
            }
            Some(Area::Host) => self.outer.read_caller(addr, buf),
        }
    }
}

impl ScriptMemory<'_> {
    /// Which area holds `[addr, addr + len)`; `None` when it straddles an area's edge.
    fn area(&self, addr: u64, len: usize) -> Option<Area> {
        area_of(self.stack, self.globals, addr, len)
    }

    fn stack_bytes(&mut self) -> &mut [u8] {
        let len = self.stack.len() * 8;
        // SAFETY: a [u64] of n elements is n*8 initialised bytes with no padding, and u8
        // has alignment 1; the borrow of `self.stack` is held for the slice's lifetime.
        unsafe { core::slice::from_raw_parts_mut(self.stack.as_mut_ptr().cast::<u8>(), len) }
    }

    fn global_read(&self, off: usize, buf: &mut [u8]) {
        global_read(self.globals, off, buf);
    }

    fn global_write(&self, off: usize, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            let slot = &self.globals[at / 8];
            let first = at % 8;
            let n = (8 - first).min(data.len() - i);
            let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let mut bytes = old.to_le_bytes();
                bytes[first..first + n].copy_from_slice(&data[i..i + n]);
                Some(u64::from_le_bytes(bytes))
            });
            i += n;
        }
    }
}

impl ScriptMemory<'_> {
    /// A typed load's bytes: `len` (at most 8) bytes at `addr`, little-endian,
    /// zero-extended. Both back ends read the IR's typed loads through this.
    pub fn read_le(&mut self, addr: u64, len: usize) -> Result<u64, MemFault> {
        let mut bytes = [0u8; 8];
        self.read(addr, &mut bytes[..len])?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// A typed store's bytes: the low `len` (at most 8) bytes of `value` at `addr`,
    /// little-endian.
    pub fn write_le(&mut self, addr: u64, len: usize, value: u64) -> Result<(), MemFault> {
        self.write(addr, &value.to_le_bytes()[..len])
    }
}

impl Env for ScriptMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        match self.area(addr, buf.len()).ok_or(MemFault::Invalid)? {
            Area::Stack(off) => {
                buf.copy_from_slice(&self.stack_bytes()[off..off + buf.len()]);
                Ok(())
            }
            Area::Global(off) => {
                self.global_read(off, buf);
                Ok(())
            }
            Area::Host => self.host.read(addr, buf),
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        match self.area(addr, data.len()).ok_or(MemFault::Invalid)? {
            Area::Stack(off) => {
                self.stack_bytes()[off..off + data.len()].copy_from_slice(data);
                Ok(())
            }
            Area::Global(off) => {
                self.global_write(off, data);
                Ok(())
            }
            Area::Host => {
                self.wrote_host = true;
                self.host.write(addr, data)
            }
        }
    }

    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        match self.area(addr, 8).ok_or(MemFault::Invalid)? {
            Area::Stack(off) if off % 8 == 0 => {
                let slot = &mut self.stack[off / 8];
                let old = *slot;
                *slot = op.apply(old);
                Ok(old)
            }
            Area::Global(off) if off % 8 == 0 => {
                let slot = &self.globals[off / 8];
                Ok(match op {
                    AtomicRmw::Exchange(v) => slot.swap(v, Ordering::SeqCst),
                    AtomicRmw::Add(v) => slot.fetch_add(v, Ordering::SeqCst),
                    AtomicRmw::CompareExchange { expected, new } => {
                        match slot.compare_exchange(
                            expected,
                            new,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(v) | Err(v) => v,
                        }
                    }
                })
            }
            // An interlocked operation on a misaligned variable address.
            Area::Stack(_) | Area::Global(_) => Err(MemFault::Invalid),
            Area::Host => {
                self.wrote_host = true;
                self.host.atomic_rmw_u64(addr, op)
            }
        }
    }

    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        match self.area(addr, 4).ok_or(MemFault::Invalid)? {
            Area::Stack(off) => {
                let bytes = &mut self.stack_bytes()[off..off + 4];
                let old = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                if old == expected {
                    bytes.copy_from_slice(&new.to_le_bytes());
                }
                Ok(old)
            }
            Area::Global(off) if off % 4 == 0 => {
                let slot = &self.globals[off / 8];
                let shift = (off % 8) * 8;
                let mut seen = 0;
                let _ = slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    seen = (v >> shift) as u32;
                    (seen == expected)
                        .then(|| (v & !(0xffff_ffffu64 << shift)) | ((new as u64) << shift))
                });
                Ok(seen)
            }
            Area::Global(_) => Err(MemFault::Invalid),
            Area::Host => {
                self.wrote_host = true;
                self.host.cmpxchg_u32(addr, expected, new)
            }
        }
    }

    fn spin_budget(&self) -> u64 {
        self.host.spin_budget()
    }
    fn output(&mut self, bytes: &[u8]) {
        self.host.output(bytes)
    }
    fn defer_printf(
        &mut self,
        fmt: &[u8],
        args: &[u64],
        caller: &mut dyn CallerMemory,
    ) -> Option<Result<(), ScriptError>> {
        // The host records the call; `%s` into the script's own memory is read here.
        let ScriptMemory {
            stack,
            globals,
            host,
            ..
        } = self;
        let mut own = OwnAreas {
            stack,
            globals,
            outer: caller,
        };
        host.defer_printf(fmt, args, &mut own)
    }
    fn record_printf_values(&mut self, fmt: &[u8], args: &[u64]) -> bool {
        self.host.record_printf_values(fmt, args)
    }
    fn warn(&mut self, msg: &str) {
        self.host.warn(msg)
    }
    fn test_statement(&mut self, value: u64) {
        self.host.test_statement(value)
    }
    fn read_phys(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.host.read_phys(addr, buf)
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.wrote_host = true;
        self.host.write_phys(addr, data)
    }
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        let base = addr & !(DIRECT_PAGE_SIZE - 1);
        // A page overlapping the script's own memory would bypass its routing.
        match self.area(base, DIRECT_PAGE_SIZE as usize)? {
            Area::Host => self.host.direct_page(addr, write),
            Area::Stack(_) | Area::Global(_) => None,
        }
    }
    fn mapping_id(&self) -> u64 {
        self.host.mapping_id()
    }
    fn virt_to_phys(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.host.virt_to_phys(addr)
    }
    fn phys_to_virt(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.host.phys_to_virt(addr)
    }
    fn rdtsc(&mut self) -> Result<u64, Unavailable> {
        self.host.rdtsc()
    }
    fn rdtscp(&mut self) -> Result<u64, Unavailable> {
        self.host.rdtscp()
    }
    fn microsleep(&mut self, us: u64) -> Result<(), Unavailable> {
        self.host.microsleep(us)
    }
    fn event_control(&mut self, op: EventOp, id: u64) -> Result<bool, Unavailable> {
        self.host.event_control(op, id)
    }
    fn event_sc(&mut self, on: bool) -> Result<(), Unavailable> {
        self.host.event_sc(on)
    }
    fn event_inject(
        &mut self,
        kind: u8,
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<(), Unavailable> {
        self.host.event_inject(kind, vector, error_code)
    }
    fn pause(&mut self) -> Result<(), Unavailable> {
        self.host.pause()
    }
    fn flush(&mut self) -> Result<(), Unavailable> {
        self.host.flush()
    }
    fn event_trace(&mut self, kind: TraceKind) -> Result<(), Unavailable> {
        self.host.event_trace(kind)
    }
    fn lbr(&mut self, op: LbrOp) -> Result<u64, Unavailable> {
        self.host.lbr(op)
    }
    fn local_time(&mut self) -> Option<LocalTime> {
        self.host.local_time()
    }
}
