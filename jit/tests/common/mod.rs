//! Shared by the JIT's integration tests: run one script on the interpreter and on the JIT
//! with identical inputs and compare everything a run can change.
#![allow(dead_code)]

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_jit::Jit;
use hvscript_lang::{
    compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits, Program,
    RunError, RunErrorKind, Stage,
};
use hvscript_runtime::LoadedCode;
use hvscript_runtime::{Runner, RunnerError};
use hvscript_stdlib::ScriptError;

/// Addresses at or above this are host addresses (stacks), not simulated guest memory.
pub const HOST_ADDRESSES: u64 = 0x1_0000_0000;

/// Everything observable after one run.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub output: String,
    pub regs: GuestRegs,
    pub globals: Vec<(String, u64)>,
    pub short_circuit: bool,
    pub refused_short_circuits: u64,
    pub test_values: Vec<u64>,
    pub warnings: u64,
    pub result: Result<u64, RunError>,
}

/// The inputs of one run.
#[derive(Clone)]
pub struct Setup {
    pub regs: GuestRegs,
    pub pseudo: PseudoValues,
    pub env: HostEnv,
    pub limits: Limits,
    pub options: CompileOptions,
    /// How many times to run (globals persist between runs).
    pub runs: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            regs: GuestRegs::default(),
            pseudo: PseudoValues::default(),
            env: HostEnv::new(Stage::Pre),
            limits: Limits::default(),
            options: CompileOptions::default(),
            runs: 1,
        }
    }
}

impl Setup {
    pub fn stage(mut self, stage: Stage) -> Setup {
        self.env.stage = stage;
        self.pseudo
            .set(PseudoReg::EventStage, (stage == Stage::Post) as u64);
        self
    }
}

pub use hvscript_lang::Backend;

/// Runs an already-compiled program on `backend`; `globals` must be the table it was
/// compiled against (a fresh copy per back end is made by the caller).
pub fn run_program(
    backend: Backend,
    jit: &mut Jit,
    program: &Program,
    globals: &Globals,
    setup: &Setup,
) -> Observed {
    let code: Option<LoadedCode> = match backend {
        Backend::Interp => None,
        Backend::Jit => {
            Some(LoadedCode::load(jit.compile(program).expect("jit compile")).expect("load"))
        }
        Backend::Vm => panic!("the JIT's tests compare the in-process back ends"),
    };
    // One interpreter and one runner per test thread, reused by every program it runs: what
    // they keep from run to run (the runner's context, stack and translation cache) must
    // never show, whatever ran before (another program, an error, other limits).
    REUSED.with(|reused| {
        let (interp, runner) = &mut *reused.borrow_mut();
        run_with(interp, runner, program, globals, setup, &code)
    })
}

thread_local! {
    static REUSED: std::cell::RefCell<(Interpreter, Runner)> =
        std::cell::RefCell::new((Interpreter::new(), Runner::new()));
}

fn run_with(
    interp: &mut Interpreter,
    runner: &mut Runner,
    program: &Program,
    globals: &Globals,
    setup: &Setup,
    code: &Option<LoadedCode>,
) -> Observed {
    let mut regs = setup.regs;
    let mut env = setup.env.clone();
    let mut result = Ok(0);
    for _ in 0..setup.runs {
        let mut inv = Invocation {
            regs: &mut regs,
            pseudo: &setup.pseudo,
            globals,
            host: &mut env,
            limits: setup.limits,
        };
        result = match code {
            None => interp.run(program, &mut inv).map(|s| s.fuel_used),
            Some(code) => match runner.run(&code.image(), &mut inv) {
                Ok(s) => Ok(s.fuel_used),
                Err(RunnerError::Run(e)) => Err(e.into()),
                Err(RunnerError::Incompatible(m)) => panic!("incompatible: {m}"),
            },
        };
        if result.is_err() {
            break;
        }
    }
    // The script-visible addresses of local variables are each back end's own stack, so a
    // fault just past the stack names a different host address; compare those as equal.
    if let Err(RunError {
        kind:
            RunErrorKind::Builtin(ScriptError::InvalidAddress { addr, .. })
            | RunErrorKind::Memory { addr, .. },
        ..
    }) = &mut result
    {
        if *addr >= HOST_ADDRESSES {
            *addr = HOST_ADDRESSES;
        }
    }
    Observed {
        output: env.output_text(),
        regs,
        globals: globals.snapshot(),
        short_circuit: env.short_circuit,
        refused_short_circuits: env.refused_short_circuits,
        test_values: env.test_values.clone(),
        warnings: env.warnings,
        result,
    }
}

/// Compiles `src` against a fresh global table per back end, runs it on both, and returns
/// both observations (interpreter first). `None` if the script does not compile.
pub fn run_both(jit: &mut Jit, src: &str, setup: &Setup) -> Option<(Observed, Observed)> {
    let g1 = Globals::default();
    let p1 = compile_source(src, &g1, &setup.options).ok()?;
    let g2 = Globals::default();
    let p2 = compile_source(src, &g2, &setup.options).ok()?;
    let a = run_program(Backend::Interp, jit, &p1, &g1, setup);
    let b = run_program(Backend::Jit, jit, &p2, &g2, setup);
    Some((a, b))
}

/// Asserts both back ends agree on `src`; returns the interpreter's observation.
#[track_caller]
pub fn assert_same(jit: &mut Jit, src: &str, setup: &Setup) -> Observed {
    let (a, b) = run_both(jit, src, setup).unwrap_or_else(|| {
        let g = Globals::default();
        let errs = compile_source(src, &g, &setup.options)
            .err()
            .unwrap_or_default();
        panic!(
            "script does not compile:\n{src}\n{}",
            errs.iter().map(|d| d.render("t", src)).collect::<String>()
        )
    });
    assert_eq!(a, b, "interpreter vs JIT differ on:\n{src}");
    a
}
