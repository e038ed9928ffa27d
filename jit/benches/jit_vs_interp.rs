//! JIT vs interpreter, side by side in one run (`cargo bench -p hvscript-jit`), plus the
//! compile latency of a typical event script (text -> loaded code object) at both
//! Cranelift optimisation levels.
//!
//! Each run group executes the same compiled script against the same inputs on both back
//! ends, with the default limits (`eval`'s). `*_small_stack` repeats the first three with a
//! 64-slot local stack, which takes the interpreter's per-run stack clearing (16 Ki slots by
//! default) out of the comparison.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{
    compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits, Program,
    Stage,
};
use hvscript_runtime::LoadedCode;
use hvscript_runtime::Runner;

mod scripts;
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
    targets = runs, compile_latency
}
criterion_main!(benches);
