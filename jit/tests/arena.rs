//! The code arena ([`ArenaMemory`], the default memory of [`LoadedCode`]): many objects
//! load, run and drop in any order, freed space is reused (at the same addresses) and
//! wiped with int3, threads load and drop concurrently, and an object larger than a region
//! gets a region of its own.
//!
//! The tests that look at addresses take `SERIAL` so no other test of this binary
//! allocates from the (process-wide) arena at the same time.

use std::collections::HashSet;
use std::sync::Mutex;

use hvscript_abi::GuestRegs;
use hvscript_jit::Jit;
use hvscript_lang::{compile_source, CompileOptions, Globals, HostEnv, Invocation, Limits, Stage};
use hvscript_runtime::Runner;
use hvscript_runtime::{ArenaMemory, CodeObject, ExecutableMemory, LoadedCode};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A script whose code size grows with `n` and which leaves a value depending on `n` in rax.
fn source(n: u64) -> String {
    // Numeric literals are hexadecimal in the script language.
    let mut s = format!("x = 0x{n:x};");
    for i in 0..n % 7 {
        s += &format!(" if (@rbx == 0x{i:x}) {{ x = x + 0x{:x}; }}", i + 1);
    }
    s + " @rax = x * 3 + 1;"
}

fn expected(n: u64) -> u64 {
    n * 3 + 1
}

fn compile(jit: &mut Jit, n: u64) -> CodeObject {
    let g = Globals::default();
    let p = compile_source(&source(n), &g, &CompileOptions::default()).unwrap();
    jit.compile(&p).unwrap()
}

/// Runs `code` with rbx = 1000 (no branch taken) and returns rax.
fn run<M: ExecutableMemory>(code: &LoadedCode<M>) -> u64 {
    let g = Globals::default();
    let mut regs = GuestRegs {
        rbx: 1000,
        ..GuestRegs::default()
    };
    let mut env = HostEnv::new(Stage::Pre);
    let mut inv = Invocation {
        regs: &mut regs,
        pseudo: &Default::default(),
        globals: &g,
        host: &mut env,
        limits: Limits::default(),
    };
    Runner::new().run(&code.image(), &mut inv).unwrap();
    regs.rax
}

/// xorshift64*: a reproducible shuffle without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn many_objects_load_run_drop_in_random_order_and_reload() {
    let _serial = serial();
    let mut jit = Jit::new().unwrap();
    let objects: Vec<(u64, CodeObject)> = (0..40).map(|n| (n, compile(&mut jit, n))).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<(u64, LoadedCode)> = Vec::new();
    for round in 0..30 {
        // Load a random batch (duplicates allowed), run everything live, drop a random part.
        for _ in 0..20 {
            let (n, o) = &objects[rng.below(objects.len())];
            let code: LoadedCode = LoadedCode::load(o.clone()).unwrap();
            assert_eq!(code.base() as usize % 64, 0);
            live.push((*n, code));
        }
        let mut bases = HashSet::new();
        for (n, code) in &live {
            assert!(bases.insert(code.base()), "two live objects at one address");
            assert_eq!(run(code), expected(*n), "round {round}, object {n}");
        }
        for _ in 0..live.len() / 2 + rng.below(live.len() / 2 + 1) {
            if live.is_empty() {
                break;
            }
            live.swap_remove(rng.below(live.len()));
        }
    }
    for (n, code) in &live {
        assert_eq!(run(code), expected(*n));
    }
}

#[test]
fn freed_space_is_reused_and_wiped_with_int3() {
    let _serial = serial();
    let mut jit = Jit::new().unwrap();
    let big = compile(&mut jit, 6);
    let small = compile(&mut jit, 0);
    assert!(small.code.len() + 64 < big.code.len());

    let a: LoadedCode = LoadedCode::load(big.clone()).unwrap();
    let a_base = a.base();
    drop(a);
    let again: LoadedCode = LoadedCode::load(big.clone()).unwrap();
    assert_eq!(again.base(), a_base, "the freed chunk is reused");
    drop(again);

    // A smaller object takes the start of the freed chunk; the rest of the chunk (its
    // padding and the freed space after it) is int3, not the old code.
    let s: LoadedCode = LoadedCode::load(small.clone()).unwrap();
    assert_eq!(s.base(), a_base);
    let old_len = big.code.len();
    // SAFETY: `s` keeps its region mapped; the region extends past `old_len` from its base
    // (the big object's chunk was there) and the RX view is readable.
    let after = unsafe { std::slice::from_raw_parts(s.base(), old_len) };
    assert_eq!(&after[..small.code.len()], &small.code[..]);
    assert!(after[small.code.len()..].iter().all(|&b| b == 0xCC));
    assert_eq!(run(&s), expected(0));

    // A set of objects dropped in a shuffled order comes back at the same addresses.
    let objects: Vec<CodeObject> = (0..30).map(|n| compile(&mut jit, n)).collect();
    let load_all = || -> Vec<LoadedCode> {
        objects
            .iter()
            .map(|o| LoadedCode::load(o.clone()).unwrap())
            .collect()
    };
    let mut first = load_all();
    let first_bases: Vec<_> = first.iter().map(|c| c.base()).collect();
    let mut rng = Rng(42);
    while !first.is_empty() {
        first.swap_remove(rng.below(first.len()));
    }
    let second = load_all();
    let second_bases: Vec<_> = second.iter().map(|c| c.base()).collect();
    assert_eq!(first_bases, second_bases);
    for (n, code) in second.iter().enumerate() {
        assert_eq!(run(code), expected(n as u64));
    }
}

#[test]
fn memory_holds_exactly_the_bytes_and_is_not_writable_where_it_runs() {
    let _serial = serial();
    let code: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let m = ArenaMemory::map(&code).unwrap();
    assert!(m.in_arena(), "memfd arena unavailable on this host");
    assert_eq!(m.len() % 64, 0);
    assert!(m.len() >= code.len());
    // SAFETY: `m` is mapped and readable for `m.len()` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(m.base(), m.len()) };
    assert_eq!(&bytes[..code.len()], &code[..]);
    assert!(bytes[code.len()..].iter().all(|&b| b == 0xCC));
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let at = m.base() as usize;
    let line = maps
        .lines()
        .find(|l| {
            let (range, _) = l.split_once(' ').unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            let lo = usize::from_str_radix(lo, 16).unwrap();
            let hi = usize::from_str_radix(hi, 16).unwrap();
            (lo..hi).contains(&at)
        })
        .unwrap();
    assert!(line.contains(" r-xs "), "{line}");
    let empty = ArenaMemory::map(&[]).unwrap();
    assert_eq!(empty.len(), 64);
}

#[test]
fn threads_load_run_and_drop_concurrently() {
    let _serial = serial();
    let objects: Vec<CodeObject> = {
        let mut jit = Jit::new().unwrap();
        (0..16).map(|n| compile(&mut jit, n)).collect()
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let objects = &objects;
            s.spawn(move || {
                let mut rng = Rng(t * 7919 + 1);
                let mut live: Vec<(usize, LoadedCode)> = Vec::new();
                for _ in 0..500 {
                    if live.len() < 8 || rng.below(2) == 0 {
                        let n = rng.below(objects.len());
                        live.push((n, LoadedCode::load(objects[n].clone()).unwrap()));
                    } else {
                        let (n, code) = live.swap_remove(rng.below(live.len()));
                        assert_eq!(run(&code), expected(n as u64));
                    }
                }
                for (n, code) in &live {
                    assert_eq!(run(code), expected(*n as u64));
                }
            });
        }
    });
}

#[test]
fn an_object_larger_than_a_region_gets_its_own() {
    let _serial = serial();
    let mut jit = Jit::new().unwrap();
    let mut huge = compile(&mut jit, 5);
    let code_len = huge.code.len();
    // Functions stay where they are; the padding after them is never reached.
    huge.code.resize(3 << 20, 0xCC);
    let small: LoadedCode = LoadedCode::load(compile(&mut jit, 1)).unwrap();
    let big: LoadedCode = LoadedCode::load(huge.clone()).unwrap();
    assert_eq!(run(&big), expected(5));
    assert_eq!(run(&small), expected(1));
    let (b, s) = (big.base() as usize, small.base() as usize);
    assert!(s + 64 <= b || b + (3 << 20) <= s, "overlap");
    // SAFETY: `big` is mapped and readable for the whole object.
    let bytes = unsafe { std::slice::from_raw_parts(big.base(), huge.code.len()) };
    assert_eq!(bytes[..code_len], huge.code[..code_len]);
    assert_eq!(bytes, &huge.code[..]);
    drop(big);
    // Loading and dropping it again works (its region was returned or reused).
    let big: LoadedCode = LoadedCode::load(huge).unwrap();
    assert_eq!(run(&big), expected(5));
}

#[test]
fn mmap_memory_stays_available() {
    let mut jit = Jit::new().unwrap();
    let code: LoadedCode<hvscript_runtime::MmapMemory> =
        LoadedCode::load(compile(&mut jit, 3)).unwrap();
    assert_eq!(run(&code), expected(3));
}

/// The regions are shared memory and not inherited (`MADV_DONTFORK`): a forked child gets an
/// arena of its own, dropping inherited code there writes nothing, and the parent's code is
/// intact whatever the child loads and drops.
#[cfg(target_os = "linux")]
#[test]
fn a_forked_child_has_its_own_arena() {
    let _serial = serial();
    let mut jit = Jit::new().unwrap();
    let objects: Vec<CodeObject> = (0..8).map(|n| compile(&mut jit, n)).collect();
    let parent: Vec<LoadedCode> = objects
        .iter()
        .map(|o| LoadedCode::load(o.clone()).unwrap())
        .collect();
    // SAFETY: the child only loads, runs and drops code (glibc keeps malloc usable after
    // fork) and leaves with `_exit`, running no destructors or exit handlers of the parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            drop(parent);
            for round in 0..3 {
                let child: Vec<LoadedCode> = objects
                    .iter()
                    .rev()
                    .map(|o| LoadedCode::load(o.clone()).unwrap())
                    .collect();
                for (i, code) in child.iter().enumerate() {
                    assert_eq!(
                        run(code),
                        expected((objects.len() - 1 - i) as u64),
                        "{round}"
                    );
                }
            }
        })
        .is_ok();
        // SAFETY: leaving the child without unwinding into the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
    for (n, code) in parent.iter().enumerate() {
        assert_eq!(run(code), expected(n as u64));
    }
}
