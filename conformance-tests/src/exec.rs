//! One script execution on a chosen back end: compile, run, and collect everything a
//! conformance check compares (output, `test_statement` values, errors with locations).
//!
//! This module owns [`Backend`] (the list of engines the suite can drive) and [`execute`],
//! the single place that knows how to run a script on each of them.

use std::fmt;

use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_grammar::diagnostic::line_col;
use hvscript_grammar::Diagnostic;
use hvscript_lang::{
    compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits,
};

/// The engine a conformance run drives (script-lang's one `Backend`).
pub use hvscript_lang::Backend;

/// The context of one execution: what the script sees.
pub struct Setup {
    pub regs: GuestRegs,
    pub pseudo: PseudoValues,
    pub env: HostEnv,
    pub options: CompileOptions,
    pub limits: Limits,
}

/// An error with its 1-based location in the script text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Located {
    fn new(src: &str, d: &Diagnostic) -> Located {
        let (line, column) = line_col(src, d.span.start as usize);
        Located {
            line,
            column,
            message: d.message.clone(),
        }
    }

    /// Whether the span really points into the script (a "located" diagnostic).
    pub fn is_located(&self) -> bool {
        self.line >= 1 && self.column >= 1
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: error: {}", self.line, self.column, self.message)
    }
}

/// What one execution produced.
#[derive(Debug)]
pub struct Execution {
    /// Compile-time diagnostics (then nothing ran).
    pub compile_errors: Vec<Located>,
    /// The run-time error that stopped the run, if any.
    pub run_error: Option<Located>,
    /// Everything printed (warnings included), up to the error.
    pub output: String,
    /// Every value passed to `test_statement`, in order.
    pub test_values: Vec<u64>,
    /// The registers after the run.
    pub regs: GuestRegs,
    /// The environment after the run (memory, flags).
    pub env: HostEnv,
}

impl Execution {
    /// The first error, compile-time or run-time.
    pub fn first_error(&self) -> Option<&Located> {
        self.compile_errors.first().or(self.run_error.as_ref())
    }
}

/// Compiles and runs `src` once on `backend` with `setup`, against `globals`.
pub fn execute(backend: Backend, src: &str, setup: Setup, globals: &Globals) -> Execution {
    let Setup {
        mut regs,
        pseudo,
        mut env,
        options,
        limits,
    } = setup;
    let fresh = globals.bindings().is_empty();
    let program = match compile_source(src, globals, &options) {
        Ok(p) => p,
        Err(errors) => {
            return Execution {
                compile_errors: errors.iter().map(|d| Located::new(src, d)).collect(),
                run_error: None,
                output: String::new(),
                test_values: Vec::new(),
                regs,
                env,
            }
        }
    };
    if backend == Backend::Vm {
        // The environment moves to the vCPU's thread and back; if the VM cannot take the
        // case, the case reports why (a copy of the environment stands in).
        let fallback = env.clone();
        let (regs, env, run_error) = match crate::vm_backend::run(
            fresh, src, &program, globals, regs, pseudo, env, limits,
        ) {
            Ok(done) => done,
            Err(why) => (
                regs,
                fallback,
                Some(Located {
                    line: 0,
                    column: 0,
                    message: format!("--backend vm: {why}"),
                }),
            ),
        };
        return Execution {
            compile_errors: Vec::new(),
            run_error,
            output: env.output_text(),
            test_values: env.test_values.clone(),
            regs,
            env,
        };
    }
    let mut inv = Invocation {
        regs: &mut regs,
        pseudo: &pseudo,
        globals,
        host: &mut env,
        limits,
    };
    let run_error = match backend {
        Backend::Interp => Interpreter::new()
            .run(&program, &mut inv)
            .err()
            .map(|e| Located::new(src, &e.to_diagnostic())),
        Backend::Jit => run_jit(&program, &mut inv, src),
        Backend::Vm => unreachable!("handled above"),
    };
    Execution {
        compile_errors: Vec::new(),
        run_error,
        output: env.output_text(),
        test_values: env.test_values.clone(),
        regs,
        env,
    }
}

/// Compiles to native code, loads it and runs it. A failure of the JIT itself (not of the
/// script) is reported as an error at the script's start, so it shows as a difference.
fn run_jit(
    program: &hvscript_lang::Program,
    inv: &mut Invocation<'_>,
    src: &str,
) -> Option<Located> {
    let internal = |what: String| {
        let d = hvscript_grammar::Diagnostic::error(what, hvscript_grammar::ast::Span::new(0, 0));
        Some(Located::new(src, &d))
    };
    let object = match hvscript_jit::Jit::new().and_then(|mut j| j.compile(program)) {
        Ok(o) => o,
        Err(e) => return internal(format!("jit: {e}")),
    };
    let code: hvscript_runtime::LoadedCode = match hvscript_runtime::LoadedCode::load(object) {
        Ok(c) => c,
        Err(e) => return internal(format!("jit load: {e}")),
    };
    match hvscript_runtime::Runner::new().run(&code.image(), inv) {
        Ok(_) => None,
        Err(hvscript_runtime::RunnerError::Run(e)) => Some(Located::new(
            src,
            &hvscript_lang::RunError::from(e).to_diagnostic(),
        )),
        Err(e) => internal(format!("jit run: {e}")),
    }
}
