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

criterion_group!(benches, bench);
criterion_main!(benches);
