//! Dispatch cost of one exit: with no matching event, with one trivial script, with ten
//! events; the emulation is a register write. `cargo bench -p hv-core --bench dispatch`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use hv_core::*;
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_lang::{
    compile_source, CompileOptions, Globals, Interpreter, Invocation, Limits, Program,
};
use hvscript_stdlib::Env;

/// The cheapest possible script: what dispatch itself costs around a native call.
struct Native;

impl Script for Native {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        _p: &PseudoValues,
        _env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        regs.rax = regs.rax.wrapping_add(1);
        Ok(())
    }
    fn uses_short_circuit(&self) -> bool {
        false
    }
}

/// The same script through the host interpreter.
struct Interpreted {
    program: Program,
    globals: Globals,
}

impl Script for Interpreted {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let limits = Limits {
            fuel: 10_000,
            max_call_depth: 16,
            stack_slots: 64,
        };
        Interpreter::new()
            .run(
                &self.program,
                &mut Invocation {
                    regs,
                    pseudo,
                    globals: &self.globals,
                    host: env,
                    limits,
                },
            )
            .map(|_| ())
            .map_err(|e| ScriptFailure::Error(e.message()))
    }
}

/// The same script compiled by the JIT and run from its loaded code object.
struct Jitted {
    code: hvscript_runtime::LoadedCode,
    globals: Globals,
}

thread_local! {
    static RUNNER: std::cell::RefCell<hvscript_runtime::Runner> = Default::default();
}

impl Script for Jitted {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let limits = Limits {
            fuel: 10_000,
            max_call_depth: 16,
            stack_slots: 64,
        };
        RUNNER.with(|r| {
            r.borrow_mut()
                .run(
                    &self.code.image(),
                    &mut Invocation {
                        regs,
                        pseudo,
                        globals: &self.globals,
                        host: env,
                        limits,
                    },
                )
                .map(|_| ())
                .map_err(|e| ScriptFailure::Error(e.to_string()))
        })
    }
}

fn exit_once(engine: &Engine, regs: &mut GuestRegs) {
    let o = engine.handle_exit(
        &Exit::new(EventKind::IoOut, 0, 0x80),
        regs,
        &mut NoGuestMemory,
        |r, _| r.rdx = 1,
    );
    std::hint::black_box(o);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let mut regs = GuestRegs::default();

    let engine = Engine::new(Arc::new(NullSink));
    engine
        .add(
            parse_event_command("!ioin").unwrap(),
            Some(Arc::new(Native)),
        )
        .unwrap();
    g.bench_function("no matching event", |b| {
        b.iter(|| exit_once(&engine, &mut regs))
    });

    let engine = Engine::new(Arc::new(NullSink));
    engine
        .add(
            parse_event_command("!ioout 80").unwrap(),
            Some(Arc::new(Native)),
        )
        .unwrap();
    g.bench_function("one native script", |b| {
        b.iter(|| exit_once(&engine, &mut regs))
    });

    let engine = Engine::new(Arc::new(NullSink));
    let globals = Globals::default();
    let program = compile_source("@rax = @rax + 1;", &globals, &CompileOptions::default()).unwrap();
    let code = hvscript_runtime::LoadedCode::load(
        hvscript_jit::Jit::new().unwrap().compile(&program).unwrap(),
    )
    .unwrap();
    engine
        .add(
            parse_event_command("!ioout 80").unwrap(),
            Some(Arc::new(Jitted { code, globals })),
        )
        .unwrap();
    g.bench_function("one JIT script", |b| {
        b.iter(|| exit_once(&engine, &mut regs))
    });

    let engine = Engine::new(Arc::new(NullSink));
    let program = compile_source(
        "@rax = @rax + 1;",
        &Globals::default(),
        &CompileOptions::default(),
    )
    .unwrap();
    engine
        .add(
            parse_event_command("!ioout 80").unwrap(),
            Some(Arc::new(Interpreted {
                program,
                globals: Globals::default(),
            })),
        )
        .unwrap();
    g.bench_function("one interpreted script", |b| {
        b.iter(|| exit_once(&engine, &mut regs))
    });

    let engine = Engine::new(Arc::new(NullSink));
    for i in 0..10 {
        let stage = if i % 2 == 0 { "pre" } else { "all" };
        engine
            .add(
                parse_event_command(&format!("!ioout stage {stage}")).unwrap(),
                Some(Arc::new(Native)),
            )
            .unwrap();
    }
    g.bench_function("ten native scripts (5 pre, 5 all)", |b| {
        b.iter(|| exit_once(&engine, &mut regs))
    });
    g.finish();
}

/// One matching event among N installed events of the same kind that do not match: the
/// exit must cost the same at N = 1, 100 and 10 000 (issue 17). Exact keys (`!ioout PORT`)
/// and ranges (`!monitor w FROM l LEN`), each with one native script on the match.
fn table_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("table size");
    let mut regs = GuestRegs::default();
    for n in [1usize, 100, 10_000] {
        let engine = Engine::new(Arc::new(NullSink));
        let mut events: Vec<(EventSpec, Option<Arc<dyn Script>>)> = (1..n)
            .map(|i| {
                (
                    parse_event_command(&format!("!ioout {:x}", 0x1000 + i)).unwrap(),
                    None,
                )
            })
            .collect();
        events.push((
            parse_event_command("!ioout 80").unwrap(),
            Some(Arc::new(Native)),
        ));
        engine.add_all(events).unwrap();
        g.bench_function(format!("exact keys, {n} installed"), |b| {
            b.iter(|| exit_once(&engine, &mut regs))
        });

        let engine = Engine::new(Arc::new(NullSink));
        let mut events: Vec<(EventSpec, Option<Arc<dyn Script>>)> = (1..n)
            .map(|i| {
                let line = format!("!monitor w {:x} l 10", 0x10_0000 + 0x100 * i as u64);
                (parse_event_command(&line).unwrap(), None)
            })
            .collect();
        events.push((
            parse_event_command("!monitor w 8000 l 10").unwrap(),
            Some(Arc::new(Native)),
        ));
        engine.add_all(events).unwrap();
        let mut exit = Exit::new(EventKind::Monitor, 0, 0x8008);
        exit.access = Access::WRITE;
        g.bench_function(format!("ranges, {n} installed"), |b| {
            b.iter(|| {
                let o = engine.handle_exit(&exit, &mut regs, &mut NoGuestMemory, |r, _| r.rdx = 1);
                std::hint::black_box(o);
            })
        });
    }
    g.finish();
}

/// The same comparison as A/B pairs run alternately (this machine is shared and noisy):
/// 1 installed event vs 10 000, 21 pairs of 200 000 exits each; the median pair ratio with
/// its min and max.
fn table_size_pairs(_: &mut Criterion) {
    let build = |n: usize, range: bool| {
        let engine = Engine::new(Arc::new(NullSink));
        let line = |i: usize| {
            if range {
                format!("!monitor w {:x} l 10", 0x10_0000 + 0x100 * i as u64)
            } else {
                format!("!ioout {:x}", 0x1000 + i)
            }
        };
        let mut events: Vec<(EventSpec, Option<Arc<dyn Script>>)> = (1..n)
            .map(|i| (parse_event_command(&line(i)).unwrap(), None))
            .collect();
        let hit = if range {
            "!monitor w 8000 l 10"
        } else {
            "!ioout 80"
        };
        events.push((parse_event_command(hit).unwrap(), Some(Arc::new(Native))));
        engine.add_all(events).unwrap();
        engine
    };
    for range in [false, true] {
        let (small, large) = (build(1, range), build(10_000, range));
        let mut exit = if range {
            Exit::new(EventKind::Monitor, 0, 0x8008)
        } else {
            Exit::new(EventKind::IoOut, 0, 0x80)
        };
        exit.access = Access::WRITE;
        let mut regs = GuestRegs::default();
        let mut time = |engine: &Engine| {
            let t = std::time::Instant::now();
            for _ in 0..200_000 {
                let o = engine.handle_exit(&exit, &mut regs, &mut NoGuestMemory, |r, _| r.rdx = 1);
                std::hint::black_box(o);
            }
            t.elapsed().as_secs_f64()
        };
        let mut ratios: Vec<f64> = (0..21)
            .map(|_| {
                let a = time(&small);
                let b = time(&large);
                b / a
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "table size pairs, {}: 10 000 installed / 1 installed = median {:.3} (min {:.3}, max {:.3}) over {} pairs",
            if range { "ranges" } else { "exact keys" },
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            ratios.len()
        );
    }
}

criterion_group!(benches, bench, table_size, table_size_pairs);
criterion_main!(benches);
