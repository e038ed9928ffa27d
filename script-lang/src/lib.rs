//! The middle of the compiler and the reference semantics.
//!
//! `AST --lower (resolve + check)--> IR --interp--> result`. The IR ([`ir`]) is what the JIT
//! compiles too; [`interp`] executes it on the host and defines what every back end must
//! produce. [`host_env`] is a simulated guest for running scripts on the host.

pub mod backend;
pub mod globals;
pub mod host_env;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod run_error;
pub mod semantics;
pub mod stack;
pub mod types;

pub use backend::Backend;
pub use globals::Globals;
pub use host_env::{GuestMemory, HostEnv, Stage};
pub use interp::{Interpreter, Invocation, Limits, RunError, RunErrorKind, RunStats};
pub use ir::Program;
pub use lower::{compile, CompileOptions, StageUse};

use hvscript_grammar::Diagnostic;

/// Parses, checks and lowers a script. Errors come back all together, located.
pub fn compile_source(
    src: &str,
    globals: &Globals,
    options: &CompileOptions,
) -> Result<Program, Vec<Diagnostic>> {
    let script = hvscript_grammar::parse_checked(src)?;
    compile(&script, globals, options)
}
