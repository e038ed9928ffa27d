//! hvscript-front: everything that turns a HyperDbg command line into what a hypervisor
//! loads, on the user's side of the line the design draws ("the hypervisor side never
//! links the compiler").
//!
//! [`prepare`] parses the line (hv-core), checks an event against the hypervisor's
//! [`Platform`] rules (the kinds it raises, its `pid` support, the register writes it can
//! apply and the pseudo-registers it has: [`checks`]), compiles the script (script-lang)
//! against the hypervisor's global-variable names, and JITs it to a code object's bytes
//! ([`Backend::Jit`]) or keeps the IR for the interpreter ([`Backend::Interp`], an
//! in-process [`InterpScript`]). The result is a [`Prepared`] the hypervisor loads with the
//! line (`hv_kvm::Vm::command`). Errors are grammar [`Diagnostic`]s located in the line; a
//! hypervisor's own [`CommandError`]s are rendered the same way ([`diagnostic`]).

pub mod checks;
pub mod interp;

use std::sync::Arc;

use hv_core::{
    parse_command_with, Command, CommandError, Platform, Prepared, StageMode, SymbolMap,
};
use hvscript_grammar::ast::Span;
use hvscript_lang::{compile_source, CompileOptions, Globals, Program, StageUse};
use hvscript_runtime::GlobalSlots;

pub use hvscript_grammar::Diagnostic;
pub use hvscript_lang::Backend;
pub use interp::{InterpScript, ScriptOrigin};

/// What the front end compiles against: the hypervisor's rules, its symbols, and its
/// session's global variables.
pub struct Target<'a> {
    pub platform: &'a dyn Platform,
    pub symbols: SymbolMap,
    /// The hypervisor's `(name, slot)` global bindings (`hv_kvm::Vm::global_names`, or
    /// the control socket's globals request).
    pub globals: Vec<(String, u32)>,
    /// The hypervisor's global values when it runs in this process: the interpreter back
    /// end runs against them. `None` over a socket (code objects need only the slots).
    pub values: Option<Arc<GlobalSlots>>,
}

/// A refused command line: every diagnostic, located in the line.
#[derive(Clone, Debug)]
pub struct FrontError {
    pub diagnostics: Vec<Diagnostic>,
}

impl FrontError {
    /// The first message, without location.
    pub fn message(&self) -> String {
        self.diagnostics
            .first()
            .map(|d| d.message.clone())
            .unwrap_or_default()
    }

    /// Every diagnostic as `source:line:col: error: ...` with the line and a caret.
    pub fn render(&self, source: &str, line: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(source, line))
            .collect()
    }
}

impl std::fmt::Display for FrontError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl From<CommandError> for FrontError {
    fn from(e: CommandError) -> FrontError {
        FrontError {
            diagnostics: vec![diagnostic(&e)],
        }
    }
}

/// A hypervisor's located error as a diagnostic (an empty range widened to one byte).
pub fn diagnostic(e: &CommandError) -> Diagnostic {
    let end = e.end.max(e.start + usize::from(e.start == e.end));
    let mut d = Diagnostic::error(e.message.clone(), Span::new(e.start, end));
    if let Some(h) = &e.help {
        d = d.with_help(h.clone());
    }
    d
}

fn shifted(ds: Vec<Diagnostic>, offset: usize) -> FrontError {
    FrontError {
        diagnostics: ds.into_iter().map(|d| d.offset_by(offset)).collect(),
    }
}

/// Parses, checks and compiles one command line for `target` (see the crate doc). A
/// command without a script gives an empty [`Prepared`].
pub fn prepare(line: &str, target: &Target<'_>, backend: Backend) -> Result<Prepared, FrontError> {
    if backend == Backend::Interp && target.values.is_none() {
        return Err(CommandError::whole(
            line,
            "the interpreter back end runs in the hypervisor's process only; send code objects",
        )
        .into());
    }
    let command = parse_command_with(line, &target.symbols)?;
    let (text, offset, stage, limits) = match &command {
        Command::Event(spec) => {
            hv_core::platform::check_event(target.platform, line, spec)?;
            let Some((text, offset)) = &spec.script else {
                return Ok(Prepared::default());
            };
            let stage = if spec.options.stage == StageMode::Post {
                StageUse::PostOnly
            } else {
                StageUse::Any
            };
            let refused = checks::check(target.platform, spec.kind, text);
            // Compile first: a script that does not compile gets the compiler's errors.
            let compiled = compile(text, *offset, stage, target)?;
            if let Err(d) =
                hvscript_lang::stack::check(&compiled.0, &target.platform.event_limits())
            {
                return Err(shifted(vec![d], *offset));
            }
            if !refused.is_empty() {
                return Err(shifted(refused, *offset));
            }
            return finish(
                line,
                compiled,
                *offset,
                text.len(),
                target.platform.event_limits(),
                backend,
            );
        }
        Command::Eval(text, offset) => (
            text.as_str(),
            *offset,
            StageUse::Any,
            target.platform.eval_limits(),
        ),
        _ => return Ok(Prepared::default()),
    };
    let compiled = compile(text, offset, stage, target)?;
    finish(line, compiled, offset, text.len(), limits, backend)
}

fn compile(
    text: &str,
    offset: usize,
    stage: StageUse,
    target: &Target<'_>,
) -> Result<(Program, Arc<Globals>), FrontError> {
    let values = target.values.clone().unwrap_or_default();
    let globals = Arc::new(Globals::with_names(values, target.globals.iter().cloned()));
    let options = CompileOptions {
        stage,
        symbols: target.symbols.0.clone(),
    };
    let program = compile_source(text, &globals, &options).map_err(|ds| shifted(ds, offset))?;
    Ok((program, globals))
}

fn finish(
    line: &str,
    (program, globals): (Program, Arc<Globals>),
    offset: usize,
    len: usize,
    limits: hvscript_lang::Limits,
    backend: Backend,
) -> Result<Prepared, FrontError> {
    let mut prepared = Prepared {
        globals: globals.bindings(),
        ..Prepared::default()
    };
    match backend {
        Backend::Jit | Backend::Vm => {
            let object = hvscript_jit::Jit::new()
                .and_then(|mut jit| jit.compile(&program))
                .map_err(|e| {
                    FrontError::from(CommandError::new(
                        format!("the JIT failed: {e}"),
                        offset,
                        offset + len,
                        None,
                    ))
                })?;
            prepared.code = Some(object.to_bytes());
        }
        Backend::Interp => {
            prepared.script = Some(Arc::new(InterpScript::new(
                program,
                globals,
                limits,
                ScriptOrigin::new(line, offset),
            )));
        }
    }
    Ok(prepared)
}
