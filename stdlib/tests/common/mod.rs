//! The test environments shared by the integration tests: [`TestEnv`], a `Vec<u8>`-backed
//! guest with unreadable holes, read-only ranges, optional physical memory and a record of
//! everything the built-ins asked of it; and [`BareEnv`], which implements only the
//! required methods of `Env` so that the defaults (every capability unavailable) are tested.
#![allow(dead_code)]

use std::ops::Range;

use hvscript_abi::Builtin;
use hvscript_stdlib::{
    call, Arg, AtomicRmw, Env, EventOp, LbrOp, LocalTime, MemFault, ScriptError, TraceKind,
    Unavailable,
};

/// Start of the virtual memory of a [`TestEnv`].
pub const BASE: u64 = 0x1000;

/// The usual memory size: three pages, `0x1000..0x4000`.
pub const MEM: usize = 0x3000;

pub struct TestEnv {
    pub mem: Vec<u8>,
    /// Unreadable and unwritable.
    pub holes: Vec<Range<u64>>,
    /// Readable, not writable.
    pub readonly: Vec<Range<u64>>,
    /// Physical memory at physical address 0, when the context has it.
    pub phys: Option<Vec<u8>>,
    /// `virt_to_phys` and `phys_to_virt` add / subtract this offset when set.
    pub translation: Option<u64>,
    pub out: Vec<u8>,
    pub warnings: Vec<String>,
    pub tests: Vec<u64>,
    pub events: Vec<(EventOp, u64)>,
    pub known_events: Vec<u64>,
    pub sc: Vec<bool>,
    /// When set, `event_sc` refuses with this reason (the post stage).
    pub sc_refusal: Option<&'static str>,
    pub injected: Vec<(u8, u8, Option<u32>)>,
    pub pauses: usize,
    pub flushes: usize,
    pub traces: Vec<TraceKind>,
    pub tsc: u64,
    pub sleeps: Vec<u64>,
    pub lbr_ops: Vec<LbrOp>,
    pub time: Option<LocalTime>,
    pub spin_budget: u64,
    /// Number of `read` calls, to check that bounded loops stay bounded.
    pub reads: usize,
}

impl TestEnv {
    /// `size` bytes of zeroed, readable and writable memory at [`BASE`].
    pub fn new(size: usize) -> Self {
        TestEnv {
            mem: vec![0; size],
            holes: Vec::new(),
            readonly: Vec::new(),
            phys: None,
            translation: None,
            out: Vec::new(),
            warnings: Vec::new(),
            tests: Vec::new(),
            events: Vec::new(),
            known_events: vec![1, 2],
            sc: Vec::new(),
            sc_refusal: None,
            injected: Vec::new(),
            pauses: 0,
            flushes: 0,
            traces: Vec::new(),
            tsc: 1000,
            sleeps: Vec::new(),
            lbr_ops: Vec::new(),
            time: None,
            spin_budget: 1000,
            reads: 0,
        }
    }

    pub fn with_phys(mut self, size: usize) -> Self {
        self.phys = Some(vec![0; size]);
        self
    }

    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        let at = (addr - BASE) as usize;
        self.mem[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }

    pub fn put_wide(&mut self, addr: u64, units: &[u16]) {
        let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
        self.put(addr, &bytes);
    }

    pub fn get(&self, addr: u64, len: usize) -> &[u8] {
        let at = (addr - BASE) as usize;
        &self.mem[at..at + len]
    }

    pub fn get_u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.get(addr, 8).try_into().unwrap())
    }

    pub fn get_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.get(addr, 4).try_into().unwrap())
    }

    pub fn out_str(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// The index range of `[addr, addr + len)` in `mem` if every byte is accessible.
    fn range(&self, addr: u64, len: usize, write: bool) -> Result<Range<usize>, MemFault> {
        let end = addr.checked_add(len as u64).ok_or(MemFault::Invalid)?;
        if addr < BASE || end > BASE + self.mem.len() as u64 {
            return Err(MemFault::Invalid);
        }
        let overlaps = |r: &Range<u64>| addr < r.end && r.start < end;
        if self.holes.iter().any(overlaps) || (write && self.readonly.iter().any(overlaps)) {
            return Err(MemFault::Invalid);
        }
        Ok((addr - BASE) as usize..(end - BASE) as usize)
    }

    fn phys_range(&self, addr: u64, len: usize) -> Result<Range<usize>, MemFault> {
        let phys = self.phys.as_ref().ok_or(MemFault::Unavailable(Unavailable(
            "no physical memory in this test",
        )))?;
        let end = addr.checked_add(len as u64).ok_or(MemFault::Invalid)?;
        if end > phys.len() as u64 {
            return Err(MemFault::Invalid);
        }
        Ok(addr as usize..end as usize)
    }
}

impl Env for TestEnv {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.reads += 1;
        let r = self.range(addr, buf.len(), false)?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = self.range(addr, data.len(), true)?;
        self.mem[r].copy_from_slice(data);
        Ok(())
    }

    fn read_phys(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = self.phys_range(addr, buf.len())?;
        buf.copy_from_slice(&self.phys.as_ref().unwrap()[r]);
        Ok(())
    }

    fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = self.phys_range(addr, data.len())?;
        self.phys.as_mut().unwrap()[r].copy_from_slice(data);
        Ok(())
    }

    fn virt_to_phys(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        let off = self
            .translation
            .ok_or(Unavailable("no translation in this test"))?;
        Ok(self.range(addr, 1, false).ok().map(|_| addr - off))
    }

    fn phys_to_virt(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        let off = self
            .translation
            .ok_or(Unavailable("no translation in this test"))?;
        let va = addr + off;
        Ok(self.range(va, 1, false).ok().map(|_| va))
    }

    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        let r = self.range(addr, 8, true)?;
        let old = u64::from_le_bytes(self.mem[r.clone()].try_into().unwrap());
        self.mem[r].copy_from_slice(&op.apply(old).to_le_bytes());
        Ok(old)
    }

    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        let r = self.range(addr, 4, true)?;
        let old = u32::from_le_bytes(self.mem[r.clone()].try_into().unwrap());
        if old == expected {
            self.mem[r].copy_from_slice(&new.to_le_bytes());
        }
        Ok(old)
    }

    fn spin_budget(&self) -> u64 {
        self.spin_budget
    }

    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn warn(&mut self, msg: &str) {
        self.warnings.push(msg.to_string());
    }

    fn test_statement(&mut self, value: u64) {
        self.tests.push(value);
    }

    fn rdtsc(&mut self) -> Result<u64, Unavailable> {
        self.tsc += 10;
        Ok(self.tsc)
    }

    fn rdtscp(&mut self) -> Result<u64, Unavailable> {
        self.tsc += 20;
        Ok(self.tsc)
    }

    fn microsleep(&mut self, us: u64) -> Result<(), Unavailable> {
        self.sleeps.push(us);
        Ok(())
    }

    fn event_control(&mut self, op: EventOp, id: u64) -> Result<bool, Unavailable> {
        self.events.push((op, id));
        Ok(self.known_events.contains(&id))
    }

    fn event_sc(&mut self, on: bool) -> Result<(), Unavailable> {
        if let Some(reason) = self.sc_refusal {
            return Err(Unavailable(reason));
        }
        self.sc.push(on);
        Ok(())
    }

    fn event_inject(
        &mut self,
        kind: u8,
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<(), Unavailable> {
        self.injected.push((kind, vector, error_code));
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Unavailable> {
        self.pauses += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Unavailable> {
        self.flushes += 1;
        Ok(())
    }

    fn event_trace(&mut self, kind: TraceKind) -> Result<(), Unavailable> {
        self.traces.push(kind);
        Ok(())
    }

    fn lbr(&mut self, op: LbrOp) -> Result<u64, Unavailable> {
        self.lbr_ops.push(op);
        Ok(match op {
            LbrOp::RestoreByFilter(mask) => u64::from(mask != 0),
            _ => 1,
        })
    }

    fn local_time(&mut self) -> Option<LocalTime> {
        self.time
    }
}

/// An environment with 0x100 bytes of memory at [`BASE`] that implements only what `Env`
/// requires.
#[derive(Default)]
pub struct BareEnv {
    pub inner: Option<Box<TestEnv>>,
    pub out: Vec<u8>,
    pub tests: Vec<u64>,
}

impl BareEnv {
    pub fn new() -> Self {
        BareEnv {
            inner: Some(Box::new(TestEnv::new(0x100))),
            out: Vec::new(),
            tests: Vec::new(),
        }
    }

    fn mem(&mut self) -> &mut TestEnv {
        self.inner
            .get_or_insert_with(|| Box::new(TestEnv::new(0x100)))
    }

    pub fn out_str(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

impl Env for BareEnv {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.mem().read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.mem().write(addr, data)
    }
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        self.mem().atomic_rmw_u64(addr, op)
    }
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        self.mem().cmpxchg_u32(addr, expected, new)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn test_statement(&mut self, value: u64) {
        self.tests.push(value);
    }
}

/// Calls `b` with value arguments.
pub fn callv(env: &mut dyn Env, b: Builtin, args: &[u64]) -> Result<u64, ScriptError> {
    let args: Vec<Arg<'_>> = args.iter().map(|&v| Arg::Val(v)).collect();
    call(b, env, &args)
}

/// UTF-16 units of a Rust string.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}
