//! The guest-memory translation cache compiled code checks inline: that a hit never calls
//! the runtime, that a miss fills the cache, that nothing stale is ever used (a new
//! environment, a run of an environment that vouches for one execution only, a page-table
//! change made by the script itself), that page-straddling accesses and faults behave as
//! on the interpreter, and that a page the environment hands out read-only keeps its writes
//! on the slow path.
//!
//! The environments here count the calls that reach them, which is how a hit shows.

mod common;

use std::cell::UnsafeCell;

use common::{assert_same, Setup};
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_jit::Jit;
use hvscript_lang::{compile_source, CompileOptions, Globals, HostEnv, Limits, Stage};
use hvscript_runtime::{Invocation, LoadedCode, Runner, RunnerError};
use hvscript_stdlib::{AtomicRmw, DirectPage, Env, MemFault};

/// A [`HostEnv`] that counts the reads and writes reaching it, and can hand out its pages
/// read-only or for one execution only.
struct Counting {
    inner: HostEnv,
    reads: u64,
    writes: u64,
    read_only: bool,
    one_execution: bool,
}

impl Counting {
    fn new(inner: HostEnv) -> Counting {
        Counting {
            inner,
            reads: 0,
            writes: 0,
            read_only: false,
            one_execution: false,
        }
    }
}

impl Env for Counting {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.reads += 1;
        self.inner.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.writes += 1;
        self.inner.write(addr, data)
    }
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        self.inner.atomic_rmw_u64(addr, op)
    }
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        self.inner.cmpxchg_u32(addr, expected, new)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.inner.output(bytes)
    }
    fn test_statement(&mut self, value: u64) {
        self.inner.test_statement(value)
    }
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        let page = self.inner.direct_page(addr, write)?;
        if self.read_only {
            // SAFETY: the same page `HostEnv` vouched for, with fewer rights.
            return Some(unsafe { DirectPage::new(page.host(), false) });
        }
        Some(page)
    }
    fn mapping_id(&self) -> u64 {
        if self.one_execution {
            0
        } else {
            self.inner.mapping_id()
        }
    }
}

fn compiled(src: &str) -> LoadedCode {
    let globals = Globals::default();
    let program = compile_source(src, &globals, &CompileOptions::default()).expect("compiles");
    LoadedCode::load(Jit::new().unwrap().compile(&program).unwrap()).unwrap()
}

fn run(
    runner: &mut Runner,
    code: &LoadedCode,
    env: &mut dyn Env,
    regs: &mut GuestRegs,
) -> Result<(), RunnerError> {
    let globals = hvscript_runtime::GlobalSlots::default();
    let mut inv = Invocation {
        regs,
        pseudo: &PseudoValues::default(),
        globals: &globals,
        host: env,
        limits: Limits::default(),
    };
    runner.run(&code.image(), &mut inv).map(|_| ())
}

/// Guest memory with pages 0x2000..0x4000 mapped and filled with a known pattern.
fn memory() -> HostEnv {
    let mut env = HostEnv::new(Stage::Pre);
    let bytes: Vec<u8> = (0..0x2000u32).map(|i| (i * 7 + 3) as u8).collect();
    env.memory.load(0x2000, &bytes);
    env
}

const READ_LOOP: &str = "s = 0;
for (i = 0; i < 0n100; i++) { s = s + dq(0x2000 + i * 8) + dd(0x2400 + i * 4) + dw(0x2600 + i * 2) + db(0x2700 + i); }
unsigned int *p = (unsigned int *) 0x2800;
for (i = 0; i < 0n100; i++) { s = s + p[i]; }
@rax = s;";

#[test]
fn reads_of_one_page_call_the_runtime_once_per_page() {
    let code = compiled(READ_LOOP);
    let mut env = Counting::new(memory());
    let mut regs = GuestRegs::default();
    let mut runner = Runner::new();
    run(&mut runner, &code, &mut env, &mut regs).unwrap();
    // One miss fills the page; the other 499 accesses hit.
    assert_eq!(env.reads, 1);
    assert_eq!(regs.rax, interp_rax(READ_LOOP, memory()));
    assert_ne!(regs.rax, 0);
}

/// `@rax` after `src` on the interpreter with `env` (checked equal on the JIT too).
fn interp_rax(src: &str, env: HostEnv) -> u64 {
    let setup = Setup {
        env,
        ..Setup::default()
    };
    assert_same(&mut Jit::new().unwrap(), src, &setup).regs.rax
}

#[test]
fn the_cache_survives_runs_only_while_the_environment_vouches_for_it() {
    let code = compiled(READ_LOOP);
    let mut runner = Runner::new();
    let mut regs = GuestRegs::default();
    let mut env = Counting::new(memory());
    run(&mut runner, &code, &mut env, &mut regs).unwrap();
    run(&mut runner, &code, &mut env, &mut regs).unwrap();
    assert_eq!(
        env.reads, 1,
        "same memory, same mapping id: the second run only hits"
    );

    // A copy of the memory is another mapping: its pages are other host memory.
    let mut copy = Counting::new(env.inner.clone());
    copy.inner.memory.load(0x2000, &[0xff; 8]);
    let before = regs.rax;
    run(&mut runner, &code, &mut copy, &mut regs).unwrap();
    assert_eq!(copy.reads, 1);
    assert_ne!(
        regs.rax, before,
        "the copy's changed bytes are read, not the original's"
    );
    assert_eq!(regs.rax, interp_rax(READ_LOOP, copy.inner.clone()));

    // An environment whose pages are valid for one execution: a miss every run.
    let mut once = Counting::new(memory());
    once.one_execution = true;
    for _ in 0..3 {
        run(&mut runner, &code, &mut once, &mut regs).unwrap();
    }
    assert_eq!(once.reads, 3);
}

#[test]
fn writes_hit_writable_pages_and_stay_on_the_slow_path_on_read_only_ones() {
    let src = "for (i = 0; i < 0n50; i++) { eq(0x3000 + i * 8, i * 3); ed(0x3200 + i * 4, i); eb(0x3300 + i, i); }
unsigned short *p = (unsigned short *) 0x3400;
for (i = 0; i < 0n50; i++) { p[i] = i + 1; }
@rax = dq(0x3000 + 0n49 * 8) + dd(0x3200 + 0n49 * 4) + db(0x3300 + 0n49) + p[0n49];";
    let code = compiled(src);
    let mut runner = Runner::new();
    let mut regs = GuestRegs::default();
    let mut env = Counting::new(memory());
    run(&mut runner, &code, &mut env, &mut regs).unwrap();
    assert_eq!(env.writes, 1, "the first write fills the page as writable");
    assert_eq!(regs.rax, 49 * 3 + 49 + 49 + 50);
    let mut b = [0u8; 8];
    env.inner.memory.read(0x3000 + 7 * 8, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 21);

    let mut ro = Counting::new(memory());
    ro.read_only = true;
    run(&mut runner, &code, &mut ro, &mut regs).unwrap();
    assert_eq!(
        ro.writes, 200,
        "a read-only page keeps every write on the slow path"
    );
    assert_eq!(regs.rax, 49 * 3 + 49 + 49 + 50);
}

#[test]
fn page_straddling_accesses_take_the_slow_path_and_fault_as_on_the_interpreter() {
    let src = "s = 0; for (i = 0; i < 0n10; i++) { s = s + dq(0x2ffc) + dd(0x2ffe); } @rax = s;";
    let code = compiled(src);
    let mut env = Counting::new(memory());
    let mut regs = GuestRegs::default();
    run(&mut Runner::new(), &code, &mut env, &mut regs).unwrap();
    assert_eq!(env.reads, 20, "a straddling access never hits");
    assert_eq!(regs.rax, interp_rax(src, memory()));
    let setup = Setup {
        env: memory(),
        ..Setup::default()
    };

    // Across the end of mapped memory: the interpreter's error, at the same place.
    for src in [
        "x = dq(0x3ff0); y = dq(0x3ffc); @rax = x + y;",
        "x = dq(0x3ff0); unsigned int *p = (unsigned int *) 0x3ffe; @rax = x + *p;",
        "x = dq(0x3ff0); y = eq(0x3ffa, 1); @rax = x + y;",
        "x = dq(0x3ff0); unsigned long long *p = (unsigned long long *) 0x3ffa; *p = 5;",
    ] {
        let seen = assert_same(&mut Jit::new().unwrap(), src, &setup);
        if !src.contains("eq(") {
            assert!(seen.result.is_err(), "{src}");
        }
    }
}

#[test]
fn faults_after_hits_keep_their_located_errors() {
    let setup = Setup {
        env: memory(),
        ..Setup::default()
    };
    for src in [
        "x = dq(0x2000); y = dq(0x2008); z = dq(0x9000); @rax = x + y + z;",
        "x = dq(0x2000); struct R { int m1; int m2; }; struct R *r = (struct R *) 0x8ff8; @rax = x + r->m2;",
        "x = db(0x2000); eb(0x2001, 1); y = eb(0x7000, 1); @rax = x + y;",
    ] {
        let seen = assert_same(&mut Jit::new().unwrap(), src, &setup);
        if !src.contains("eb(0x7000") {
            assert!(seen.result.is_err(), "{src}");
        }
    }
}

/// A guest with page tables of one entry: the virtual page at `VIRT` maps to backing page
/// A or B by the word at `PTE` (0 or not), so a script that writes that word remaps it.
/// The `PTE` page is handed out read-only, as a hypervisor must hand out page tables.
struct Remap {
    pages: [Box<UnsafeCell<[u8; 4096]>>; 3],
}

const VIRT: u64 = 0x10000;
// Another cache entry than VIRT's (page 0x21 vs 0x10, modulo 16), so caching it does not
// evict VIRT by chance.
const PTE: u64 = 0x21000;

impl Remap {
    fn new() -> Remap {
        let page = |fill: u8| Box::new(UnsafeCell::new([fill; 4096]));
        Remap {
            pages: [page(0xaa), page(0xbb), page(0)],
        }
    }

    /// The backing page and offset of `addr`, through the current "page table".
    fn translate(&self, addr: u64) -> Option<(*mut u8, usize)> {
        let off = (addr & 0xfff) as usize;
        match addr & !0xfff {
            VIRT => {
                // SAFETY: the PTE page is live; only raw-pointer accesses are made to it.
                let pte = unsafe { (*self.pages[2].get())[0] };
                Some((self.pages[if pte == 0 { 0 } else { 1 }].get().cast(), off))
            }
            PTE => Some((self.pages[2].get().cast(), off)),
            _ => None,
        }
    }
}

impl Env for Remap {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let (p, off) = self.translate(addr).ok_or(MemFault::Invalid)?;
        if off + buf.len() > 4096 {
            return Err(MemFault::Invalid);
        }
        // SAFETY: in bounds of a live page.
        unsafe { std::ptr::copy_nonoverlapping(p.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let (p, off) = self.translate(addr).ok_or(MemFault::Invalid)?;
        if off + data.len() > 4096 {
            return Err(MemFault::Invalid);
        }
        // SAFETY: in bounds of a live page.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(off), data.len()) };
        Ok(())
    }
    fn atomic_rmw_u64(&mut self, _addr: u64, _op: AtomicRmw) -> Result<u64, MemFault> {
        Err(MemFault::Invalid)
    }
    fn cmpxchg_u32(&mut self, _addr: u64, _expected: u32, _new: u32) -> Result<u32, MemFault> {
        Err(MemFault::Invalid)
    }
    fn output(&mut self, _bytes: &[u8]) {}
    fn test_statement(&mut self, _value: u64) {}
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        let (p, _) = self.translate(addr)?;
        let writable = write && addr & !0xfff != PTE;
        // SAFETY: a live page of this environment, exactly what `read`/`write` reach now;
        // the page-table page is never writable, and a write through `write` (which may
        // remap) makes the runtime drop every page.
        Some(unsafe { DirectPage::new(p, writable) })
    }
    fn mapping_id(&self) -> u64 {
        0
    }
}

#[test]
fn a_page_table_write_by_the_script_is_seen_by_the_next_access() {
    for src in [
        "va = dq(0x10000); eb(0x21000, 1); vb = dq(0x10000); @rax = va; @rbx = vb;",
        "va = dq(0x10000); x = db(0x21000); unsigned char *pte = (unsigned char *) 0x21000; *pte = 1; vb = dq(0x10000); @rax = va; @rbx = vb;",
        "for (i = 0; i < 2; i++) { v = dq(0x10008); if (i == 0) { eb(0x21000, 1); @rax = v; } else { @rbx = v; } }",
    ] {
        let code = compiled(src);
        let mut env = Remap::new();
        let mut regs = GuestRegs::default();
        run(&mut Runner::new(), &code, &mut env, &mut regs).unwrap();
        assert_eq!(regs.rax, 0xaaaa_aaaa_aaaa_aaaa, "{src}");
        assert_eq!(regs.rbx, 0xbbbb_bbbb_bbbb_bbbb, "{src}");
    }
}
