//! One [`Runner`] reused across runs keeps only what it should: the context it keeps between
//! runs (call depth, frame base, error words) starts every run as a fresh one would, even
//! after a run that stopped with an error deep inside user-function calls.

use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_jit::Jit;
use hvscript_lang::{compile_source, CompileOptions, Globals, HostEnv, Invocation, Limits, Stage};
use hvscript_runtime::{LoadedCode, Runner, RunnerError};

fn load(src: &str, globals: &Globals) -> LoadedCode {
    let program = compile_source(src, globals, &CompileOptions::default()).expect("compiles");
    LoadedCode::load(Jit::new().unwrap().compile(&program).unwrap()).unwrap()
}

fn run(
    runner: &mut Runner,
    code: &LoadedCode,
    globals: &Globals,
    limits: Limits,
) -> (Result<u64, RunnerError>, GuestRegs) {
    let mut regs = GuestRegs::default();
    let mut env = HostEnv::new(Stage::Pre);
    let pseudo = PseudoValues::default();
    let mut inv = Invocation {
        regs: &mut regs,
        pseudo: &pseudo,
        globals,
        host: &mut env,
        limits,
    };
    let result = runner.run(&code.image(), &mut inv).map(|s| s.fuel_used);
    (result, regs)
}

#[test]
fn a_run_after_an_error_deep_in_calls_starts_fresh() {
    let globals = Globals::default();
    // Divides by zero four calls deep, with locals in every frame.
    let failing = load(
        "int fail_at(int n) { kept = n; if (n == 0) { return 1 / n; } return fail_at(n - 1) + kept; } x = fail_at(3);",
        &globals,
    );
    // Nests exactly 4 calls: fits a depth limit of 5 (the body counts as one) only if the
    // depth starts at 1 again.
    let nesting = load(
        "int nest(int n) { twice = n * 2; if (n == 0) { return 0; } return nest(n - 1) + twice; } @rax = nest(3);",
        &globals,
    );
    let limits = Limits {
        max_call_depth: 5,
        ..Limits::default()
    };
    let mut runner = Runner::new();
    for _ in 0..3 {
        let (failed, _) = run(&mut runner, &failing, &globals, limits);
        let err = failed.expect_err("division by zero");
        assert!(err.to_string().contains("division by zero"), "{err}");
        let (ok, regs) = run(&mut runner, &nesting, &globals, limits);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(regs.rax, 12, "2 * (3 + 2 + 1), computed in fresh frames");
    }
    // One call deeper than the limit still stops where it should.
    let too_deep = load(
        "int deep(int n) { if (n == 0) { return 0; } return deep(n - 1); } @rax = deep(4);",
        &globals,
    );
    let (failed, _) = run(&mut runner, &too_deep, &globals, limits);
    let err = failed.unwrap_err().to_string();
    assert!(err.contains("nested deeper than 5"), "{err}");
    let (ok, regs) = run(&mut runner, &nesting, &globals, limits);
    assert_eq!((ok.is_ok(), regs.rax), (true, 12));
}

#[test]
fn other_limits_give_a_new_stack_and_zero_slots_work() {
    let globals = Globals::default();
    let code = load("@rax = 5;", &globals);
    let mut runner = Runner::new();
    for slots in [0, 64, 0, 16 * 1024] {
        let limits = Limits {
            stack_slots: slots,
            ..Limits::default()
        };
        let (ok, regs) = run(&mut runner, &code, &globals, limits);
        assert_eq!((ok.is_ok(), regs.rax), (true, 5), "{slots} slots");
    }
}
