//! The JIT's ops as ratios to its own long-arithmetic script (`arith`), measured the way a
//! shared, noisy machine allows: alternating A/B pairs (arith, op, arith, op, ...), each
//! measurement the best of a few short batches, and per op the median of the pair ratios
//! with their min and max, next to the absolute medians. A ratio holds from machine to
//! machine where absolute nanoseconds do not.
//!
//! `cargo bench -p hvscript-jit --bench jit_pairs` (`HVSCRIPT_PAIRS=N`: pairs per op,
//! default 15; `HVSCRIPT_PAIRS_ONLY=NAME`: one op). `dq_eq_cold` runs `dq_eq` against an environment whose pages are valid for
//! one execution only (as in a hypervisor, where the guest may change its page tables
//! between exits), so every run starts with an empty translation cache: one miss per page.
//! `printf3_exit` runs `printf3` the way an exit does (`exit_env`): recorded into an output
//! ring, the consumer's formatting between timed chunks.

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_jit::Jit;
use hvscript_lang::{compile_source, CompileOptions, Globals, HostEnv, Invocation, Limits, Stage};
use hvscript_runtime::{FormatTable, LoadedCode, OutputRing, Recorder, Runner};
use hvscript_stdlib::{AtomicRmw, DirectPage, Env, MemFault};

mod exit_env;
mod scripts;
use exit_env::{timed_chunks, Deferring};
use scripts::*;

/// [`HostEnv`] whose direct pages are valid for one execution only.
struct OneExecution(HostEnv);

impl Env for OneExecution {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.0.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.0.write(addr, data)
    }
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        self.0.atomic_rmw_u64(addr, op)
    }
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        self.0.cmpxchg_u32(addr, expected, new)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.0.output(bytes)
    }
    fn test_statement(&mut self, value: u64) {
        self.0.test_statement(value)
    }
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        self.0.direct_page(addr, write)
    }
    fn mapping_id(&self) -> u64 {
        0
    }
}

/// Where a case's script runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// `eval`'s host environment: printf formatted now.
    Host,
    /// The host environment with pages valid for one execution only.
    Cold,
    /// An exit's: printf recorded into an output ring.
    Exit,
}

enum CaseEnv {
    Host(Box<dyn Env>),
    /// The ring and the format table live as long as the bench (leaked), as a VM's do.
    Exit {
        env: Box<Deferring<'static>>,
        ring: &'static OutputRing,
        formats: &'static FormatTable,
    },
}

/// One script ready to run on the JIT, as `jit_vs_interp` runs it.
struct Case {
    code: LoadedCode,
    globals: Globals,
    env: CaseEnv,
    regs: GuestRegs,
    runner: Runner,
}

impl Case {
    fn new(src: &str, setting: Setting) -> Case {
        let globals = Globals::default();
        let program =
            compile_source(src, &globals, &CompileOptions::default()).expect("bench script");
        let code = LoadedCode::load(Jit::new().unwrap().compile(&program).unwrap()).unwrap();
        let mut host = HostEnv::new(Stage::Pre);
        host.memory.load(0x1000, &[0x11; 0x40]);
        let env = match setting {
            Setting::Host => CaseEnv::Host(Box::new(host)),
            Setting::Cold => CaseEnv::Host(Box::new(OneExecution(host))),
            Setting::Exit => {
                let ring: &'static OutputRing = Box::leak(Box::new(OutputRing::new(256 * 1024)));
                let formats: &'static FormatTable = Box::leak(Box::new(FormatTable::new()));
                let stamps: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
                let recorder = Recorder::new(ring.claim(stamps).unwrap(), formats);
                CaseEnv::Exit {
                    env: Box::new(Deferring { host, recorder }),
                    ring,
                    formats,
                }
            }
        };
        let mut regs = GuestRegs::default();
        for (i, s) in regs.slots_mut().iter_mut().enumerate() {
            *s = 0x1234_5678 * (i as u64 + 1);
        }
        regs.rax = 7;
        Case {
            code,
            globals,
            env,
            regs,
            runner: Runner::new(),
        }
    }

    /// Runs the script `n` times; the time the runs took (without an exit's consumer).
    fn run(&mut self, n: u64) -> Duration {
        let pseudo = PseudoValues::default();
        let image = self.code.image();
        let (regs, globals, runner) = (&mut self.regs, &self.globals, &mut self.runner);
        let mut once = |host: &mut dyn Env| {
            let mut inv = Invocation {
                regs: &mut *regs,
                pseudo: &pseudo,
                globals,
                host,
                limits: Limits::default(),
            };
            black_box(runner.run(&image, &mut inv).unwrap());
        };
        match &mut self.env {
            CaseEnv::Host(env) => {
                let t = Instant::now();
                for _ in 0..n {
                    once(&mut **env);
                }
                t.elapsed()
            }
            CaseEnv::Exit { env, ring, formats } => timed_chunks(n, ring, formats, || {
                env.recorder.begin(1, hvscript_abi::Stage::Pre, 0, 0, 0);
                once(&mut **env);
                env.recorder.end();
            }),
        }
    }

    /// Runs per batch of about `target`.
    fn calibrate(&mut self, target: Duration) -> u64 {
        let mut n = 1;
        loop {
            if self.run(n) >= target {
                return n;
            }
            n *= 2;
        }
    }

    /// Nanoseconds per run: the best of `batches` batches of `n` runs.
    fn measure(&mut self, n: u64, batches: u32) -> f64 {
        (0..batches)
            .map(|_| self.run(n).as_nanos() as f64 / n as f64)
            .fold(f64::INFINITY, f64::min)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let pairs: usize = std::env::var("HVSCRIPT_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 15 });
    let batch = Duration::from_millis(if quick { 1 } else { 4 });
    let only = std::env::var("HVSCRIPT_PAIRS_ONLY").ok();
    let mut arith = Case::new(ARITH, Setting::Host);
    arith.run(10_000);
    let arith_n = arith.calibrate(batch);
    println!(
        "{:<16} {:>5}  {:>28}  {:>28}  {:>12}",
        "op (JIT)", "pairs", "op/arith median [min, max]", "op ns median [min, max]", "arith ns"
    );
    for (name, src, setting) in [
        ("arith", ARITH, Setting::Host),
        ("trivial", "@rax = 1;", Setting::Host),
        ("if_elsif", IF_CHAIN, Setting::Host),
        ("dq_eq", MEMORY, Setting::Host),
        ("dq_eq_cold", MEMORY, Setting::Cold),
        ("printf3", PRINTF, Setting::Host),
        ("printf3_exit", PRINTF, Setting::Exit),
        ("struct_guest_4", STRUCT_GUEST, Setting::Host),
        ("array_64", ARRAY, Setting::Host),
        ("for_1000", FOR_LOOP, Setting::Host),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut op = Case::new(src, setting);
        op.run(10_000);
        let op_n = op.calibrate(batch);
        let (mut ratios, mut op_ns, mut arith_ns) = (vec![], vec![], vec![]);
        for _ in 0..pairs {
            let a = arith.measure(arith_n, 5);
            let b = op.measure(op_n, 5);
            ratios.push(b / a);
            op_ns.push(b);
            arith_ns.push(a);
        }
        let rmin = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let rmax = ratios.iter().copied().fold(0.0, f64::max);
        let omin = op_ns.iter().copied().fold(f64::INFINITY, f64::min);
        let omax = op_ns.iter().copied().fold(0.0, f64::max);
        println!(
            "{name:<16} {pairs:>5}  {:>8.3} [{rmin:>7.3}, {rmax:>7.3}]  {:>8.2} [{omin:>7.2}, {omax:>8.2}]  {:>12.2}",
            median(&mut ratios),
            median(&mut op_ns),
            median(&mut arith_ns),
        );
    }
}
