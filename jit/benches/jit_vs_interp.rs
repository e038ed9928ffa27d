//! JIT vs interpreter, side by side in one run (`cargo bench -p hvscript-jit`), plus the
//! compile latency of a typical event script (text -> loaded code object) at both
//! Cranelift optimisation levels.
//!
//! Each run group executes the same compiled script against the same inputs on both back
//! ends, with the default limits (`eval`'s). `*_small_stack` repeats the first three with a
//! 64-slot local stack, which takes the interpreter's per-run stack clearing (16 Ki slots by
//! default) out of the comparison.
//!
//! Those groups format printf now (`eval`'s environment). `exit_path` runs compiled scripts
//! the way a hypervisor's exit does (issue 17): printf recorded into the vCPU's output ring
//! as a format id and raw values, one execution header per run, published at its end; the
//! consumer's formatting happens between timed chunks, off the clock, as it happens on
//! another thread in hv-kvm. `*_interp` runs the interpreter the same way. `printf3_claim`
//! adds what an exit with events pays once for its ring (claim, stamp, release), which the
//! others leave out.

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{
    compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits, Program,
    Stage,
};
use hvscript_runtime::Runner;
use hvscript_runtime::{FormatTable, LoadedCode, OutputRing, Recorder};

mod exit_env;
mod scripts;
use exit_env::{timed_chunks, Deferring};
use scripts::*;

/// A typical 20-line event script (the EFER example, grown).
const EVENT_SCRIPT: &str = include_str!("event_script.ds");

fn compile(src: &str, globals: &Globals) -> Program {
    compile_source(src, globals, &CompileOptions::default()).expect("bench script compiles")
}

fn regs() -> GuestRegs {
    let mut r = GuestRegs::default();
    for (i, s) in r.slots_mut().iter_mut().enumerate() {
        *s = 0x1234_5678 * (i as u64 + 1);
    }
    r.rax = 7;
    r
}

fn run_group(c: &mut Criterion, name: &str, src: &str, limits: Limits) {
    let globals = Globals::default();
    let program = compile(src, &globals);
    let mut jit = Jit::new().unwrap();
    let code: LoadedCode = LoadedCode::load(jit.compile(&program).unwrap()).unwrap();
    let pseudo = PseudoValues::default();
    let mut env = HostEnv::new(Stage::Pre);
    env.memory.load(0x1000, &[0x11; 0x40]);
    let mut group = c.benchmark_group(name);
    let mut interp = Interpreter::new();
    group.bench_function("interp", |b| {
        let mut r = regs();
        b.iter(|| {
            env.output.clear();
            let mut inv = Invocation {
                regs: &mut r,
                pseudo: &pseudo,
                globals: &globals,
                host: &mut env,
                limits,
            };
            black_box(interp.run(&program, &mut inv).unwrap());
        })
    });
    let mut runner = Runner::new();
    let image = code.image();
    group.bench_function("jit", |b| {
        let mut r = regs();
        b.iter(|| {
            env.output.clear();
            let mut inv = Invocation {
                regs: &mut r,
                pseudo: &pseudo,
                globals: &globals,
                host: &mut env,
                limits,
            };
            black_box(runner.run(&image, &mut inv).unwrap());
        })
    });
    group.finish();
}

fn runs(c: &mut Criterion) {
    let small = Limits {
        stack_slots: 64,
        ..Limits::default()
    };
    for (name, src) in [
        ("arith", ARITH),
        ("for_1000", FOR_LOOP),
        ("if_elsif", IF_CHAIN),
        ("printf3", PRINTF),
        ("dq_eq", MEMORY),
        ("array_64", ARRAY),
        ("struct_guest_4", STRUCT_GUEST),
    ] {
        run_group(c, name, src, Limits::default());
    }
    for (name, src) in [
        ("arith_small_stack", ARITH),
        ("for_1000_small_stack", FOR_LOOP),
        ("if_elsif_small_stack", IF_CHAIN),
    ] {
        run_group(c, name, src, small);
    }
}

fn exit_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("exit_path");
    let globals = Globals::default();
    let pseudo = PseudoValues::default();
    let stamps = AtomicU64::new(0);
    for (name, src) in [("arith", ARITH), ("printf3", PRINTF)] {
        let program = compile(src, &globals);
        let code: LoadedCode =
            LoadedCode::load(Jit::new().unwrap().compile(&program).unwrap()).unwrap();
        let image = code.image();
        let ring = OutputRing::new(256 * 1024);
        let formats = FormatTable::new();
        let mut env = Deferring {
            host: HostEnv::new(Stage::Pre),
            recorder: Recorder::new(ring.claim(&stamps).unwrap(), &formats),
        };
        let mut runner = Runner::new();
        let mut r = regs();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_chunks(iters, &ring, &formats, || {
                    env.recorder.begin(1, hvscript_abi::Stage::Pre, 0, 0, 0);
                    let mut inv = Invocation {
                        regs: &mut r,
                        pseudo: &pseudo,
                        globals: &globals,
                        host: &mut env,
                        limits: Limits::default(),
                    };
                    black_box(runner.run(&image, &mut inv).unwrap());
                    env.recorder.end();
                })
            })
        });
        // The interpreter on the same exit path (its printf is deferred the same way).
        let mut interp = Interpreter::new();
        group.bench_function(format!("{name}_interp"), |b| {
            b.iter_custom(|iters| {
                timed_chunks(iters, &ring, &formats, || {
                    env.recorder.begin(1, hvscript_abi::Stage::Pre, 0, 0, 0);
                    let mut inv = Invocation {
                        regs: &mut r,
                        pseudo: &pseudo,
                        globals: &globals,
                        host: &mut env,
                        limits: Limits::default(),
                    };
                    black_box(interp.run(&program, &mut inv).unwrap());
                    env.recorder.end();
                })
            })
        });
    }
    let program = compile(PRINTF, &globals);
    let code: LoadedCode =
        LoadedCode::load(Jit::new().unwrap().compile(&program).unwrap()).unwrap();
    let image = code.image();
    let ring = OutputRing::new(256 * 1024);
    let formats = FormatTable::new();
    let mut runner = Runner::new();
    let mut r = regs();
    let mut host = Some(HostEnv::new(Stage::Pre));
    group.bench_function("printf3_claim", |b| {
        b.iter_custom(|iters| {
            timed_chunks(iters, &ring, &formats, || {
                let claim = ring.claim(&stamps).unwrap();
                let mut env = Deferring {
                    host: host.take().unwrap(),
                    recorder: Recorder::new(claim, &formats),
                };
                env.recorder.begin(1, hvscript_abi::Stage::Pre, 0, 0, 0);
                let mut inv = Invocation {
                    regs: &mut r,
                    pseudo: &pseudo,
                    globals: &globals,
                    host: &mut env,
                    limits: Limits::default(),
                };
                black_box(runner.run(&image, &mut inv).unwrap());
                host = Some(env.host);
            })
        })
    });
    group.finish();
}

const LEVELS: [(&str, OptLevel); 3] = [
    ("fast", OptLevel::Fast),
    ("none", OptLevel::None),
    ("speed", OptLevel::Speed),
];

fn compile_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_event_script");
    for (name, opt) in LEVELS {
        let globals = Globals::default();
        let mut jit = Jit::with_opt_level(opt).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let program = compile(black_box(EVENT_SCRIPT), &globals);
                let code: LoadedCode = LoadedCode::load(jit.compile(&program).unwrap()).unwrap();
                black_box(code.base());
            })
        });
    }
    group.finish();
    // Run time of the loop and the arithmetic at every level.
    for (gname, src) in [("levels_for_1000", FOR_LOOP), ("levels_arith", ARITH)] {
        let mut group = c.benchmark_group(gname);
        for (name, opt) in LEVELS {
            let globals = Globals::default();
            let program = compile(src, &globals);
            let code: LoadedCode =
                LoadedCode::load(Jit::with_opt_level(opt).unwrap().compile(&program).unwrap())
                    .unwrap();
            let image = code.image();
            let pseudo = PseudoValues::default();
            let mut env = HostEnv::new(Stage::Pre);
            let mut runner = Runner::new();
            let mut r = regs();
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut inv = Invocation {
                        regs: &mut r,
                        pseudo: &pseudo,
                        globals: &globals,
                        host: &mut env,
                        limits: Limits::default(),
                    };
                    black_box(runner.run(&image, &mut inv).unwrap());
                })
            });
        }
        group.finish();
    }
    // Run time of the event script at every level (post stage, the longer path).
    let mut group = c.benchmark_group("run_event_script");
    for (name, opt) in LEVELS {
        let globals = Globals::default();
        let program = compile(EVENT_SCRIPT, &globals);
        let code: LoadedCode =
            LoadedCode::load(Jit::with_opt_level(opt).unwrap().compile(&program).unwrap()).unwrap();
        let image = code.image();
        let mut pseudo = PseudoValues::default();
        pseudo.set(hvscript_abi::PseudoReg::EventStage, 1);
        let mut env = HostEnv::new(Stage::Post);
        let mut runner = Runner::new();
        let mut r = regs();
        r.rax = 0xd01;
        group.bench_function(name, |b| {
            b.iter(|| {
                env.output.clear();
                r.rax = 0xd01;
                let mut inv = Invocation {
                    regs: &mut r,
                    pseudo: &pseudo,
                    globals: &globals,
                    host: &mut env,
                    limits: Limits::default(),
                };
                black_box(runner.run(&image, &mut inv).unwrap());
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = runs, exit_path, compile_latency
}
criterion_main!(benches);
