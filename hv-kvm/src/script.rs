//! Event commands to engine events: parse the HyperDbg command line (hv-core), refuse
//! the events this KVM cannot intercept (spec/kvm.md), compile the script with
//! script-lang, and wrap it as a [`hv_core::Script`]: by default a code object compiled
//! by the JIT and loaded into executable memory ([`JitScript`]), or IR run by the
//! interpreter ([`InterpScript`], the reference back end).
//!
//! Every error is located in the command line (byte range), so a front end can render it
//! with a caret ([`EventError::render`]). Script diagnostics are shifted by the script's
//! offset inside the line.

use std::cell::RefCell;
use std::sync::Arc;

use hv_core::{
    parse_event_command_with, EventKind, EventSpec, Script, ScriptFailure, StageMode, SymbolMap,
};
use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_grammar::ast::Span;
use hvscript_grammar::Diagnostic;
use hvscript_lang::{
    compile_source, Backend, CompileOptions, Globals, Interpreter, Invocation, Limits, Program,
    RunErrorKind, StageUse,
};
use hvscript_stdlib::Env;

/// Fuel for one execution (loop iterations plus calls): `while (1) {}` ends with an error.
pub const SCRIPT_FUEL: u64 = 100_000;

/// The limits of one event execution, the same on both back ends (and what `check`
/// checks event scripts against).
pub const EVENT_LIMITS: Limits = Limits {
    fuel: SCRIPT_FUEL,
    max_call_depth: 64,
    stack_slots: 256,
};

/// Where a script came from: its command line and the script's offset in it, so a run-time
/// error names the line and column of the failing expression as a compile error would.
#[derive(Clone, Debug)]
pub struct ScriptOrigin {
    command: Arc<str>,
    offset: usize,
}

impl ScriptOrigin {
    pub fn new(command: &str, offset: usize) -> ScriptOrigin {
        ScriptOrigin {
            command: command.into(),
            offset,
        }
    }

    /// `line:col: message` for an error at `span` of the script.
    fn locate(&self, span: Span, message: &str) -> String {
        let (line, col) = hvscript_grammar::diagnostic::line_col(
            &self.command,
            self.offset + span.start as usize,
        );
        format!("{line}:{col}: {message}")
    }
}

fn failure(e: &hvscript_lang::RunError, origin: &ScriptOrigin) -> ScriptFailure {
    match e.kind {
        RunErrorKind::FuelExhausted(_) => ScriptFailure::FuelExhausted,
        _ => ScriptFailure::Error(origin.locate(e.span, &e.message())),
    }
}

/// Runs `f` with this vCPU thread's engine (interpreter or native runner) so its stack is
/// reused across exits; a re-entered call (a script running a script) gets a fresh one.
fn with_thread_engine<E: Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<E>>,
    f: impl FnOnce(&mut E) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut engine) => f(&mut engine),
        Err(_) => f(&mut E::default()),
    })
}

/// Whether a compiled program reads `$date` or `$time`.
fn uses_clock(program: &Program) -> bool {
    reads_pseudo(program, PseudoReg::Date) || reads_pseudo(program, PseudoReg::Time)
}

/// Whether a compiled program calls `event_sc` anywhere.
fn calls_event_sc(program: &Program) -> bool {
    program
        .functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.insts)
        .any(|i| {
            matches!(
                i,
                hvscript_lang::ir::Inst::CallBuiltin {
                    builtin: hvscript_abi::Builtin::EventSc,
                    ..
                }
            )
        })
}

/// A script compiled by the JIT: a loaded code object, run by the runtime's runner.
pub struct JitScript {
    code: hvscript_runtime::LoadedCode,
    globals: Arc<Globals>,
    uses_sc: bool,
    uses_clock: bool,
    origin: ScriptOrigin,
}

thread_local! {
    /// One runner (and its local stack) per vCPU thread, reused across exits.
    static RUNNER: RefCell<hvscript_runtime::Runner> = RefCell::default();
}

impl JitScript {
    pub fn new(
        program: &Program,
        globals: Arc<Globals>,
        origin: ScriptOrigin,
    ) -> Result<JitScript, String> {
        let object = hvscript_jit::Jit::new()
            .and_then(|mut jit| jit.compile(program))
            .map_err(|e| format!("the JIT failed: {e}"))?;
        let code = hvscript_runtime::LoadedCode::load(object)
            .map_err(|e| format!("loading the code failed: {e}"))?;
        Ok(JitScript {
            code,
            globals,
            uses_sc: calls_event_sc(program),
            uses_clock: uses_clock(program),
            origin,
        })
    }
}

impl Script for JitScript {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let mut invocation = Invocation {
            regs,
            pseudo,
            globals: &self.globals,
            host: env,
            limits: EVENT_LIMITS,
        };
        let image = self.code.image();
        let result = with_thread_engine(&RUNNER, |runner| runner.run(&image, &mut invocation));
        result.map(|_| ()).map_err(|e| match e {
            hvscript_runtime::RunnerError::Run(e) => failure(&e.into(), &self.origin),
            other => ScriptFailure::Error(other.to_string()),
        })
    }

    fn uses_short_circuit(&self) -> bool {
        self.uses_sc
    }

    fn reads_pseudo(&self, reg: PseudoReg) -> bool {
        !matches!(reg, PseudoReg::Date | PseudoReg::Time) || self.uses_clock
    }
}

/// A script run by script-lang's interpreter (the reference back end).
pub struct InterpScript {
    program: Program,
    globals: Arc<Globals>,
    uses_sc: bool,
    uses_clock: bool,
    origin: ScriptOrigin,
}

thread_local! {
    /// One interpreter (and its stack) per vCPU thread, reused across exits.
    static INTERPRETER: RefCell<Interpreter> = RefCell::default();
}

impl InterpScript {
    pub fn new(program: Program, globals: Arc<Globals>, origin: ScriptOrigin) -> InterpScript {
        InterpScript {
            uses_sc: calls_event_sc(&program),
            uses_clock: uses_clock(&program),
            program,
            globals,
            origin,
        }
    }
}

impl Script for InterpScript {
    fn execute(
        &self,
        regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        let mut invocation = Invocation {
            regs,
            pseudo,
            globals: &self.globals,
            host: env,
            limits: EVENT_LIMITS,
        };
        let result = with_thread_engine(&INTERPRETER, |interp| {
            interp.run(&self.program, &mut invocation)
        });
        result.map(|_| ()).map_err(|e| failure(&e, &self.origin))
    }

    fn uses_short_circuit(&self) -> bool {
        self.uses_sc
    }

    fn reads_pseudo(&self, reg: PseudoReg) -> bool {
        !matches!(reg, PseudoReg::Date | PseudoReg::Time) || self.uses_clock
    }
}

/// A rejected event command: what and where in the line.
#[derive(Clone, Debug)]
pub struct EventError {
    pub diagnostics: Vec<Diagnostic>,
}

impl EventError {
    pub fn at(message: impl Into<String>, start: usize, end: usize, help: Option<String>) -> Self {
        let mut d = Diagnostic::error(message, Span::new(start, end));
        if let Some(h) = help {
            d = d.with_help(h);
        }
        EventError {
            diagnostics: vec![d],
        }
    }

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

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Why hv-kvm refuses an event kind, or `None` when it raises it from real exits.
pub fn refusal(kind: EventKind) -> Option<&'static str> {
    use EventKind::*;
    Some(match kind {
        IoIn | IoOut | MsrRead | MsrWrite | Monitor | Cpuid | Exception | Syscall | Sysret
        | EptHook | EptHook2 => return None,
        Vmcall => "VMCALL never reaches user space on this KVM (at CPL0 KVM_RUN can even spin)",
        Tsc => {
            "RDTSC/RDTSCP are handled inside KVM at CPL0 and fault at CPL3: no exit reaches the VMM"
        }
        Pmc => "RDPMC is handled inside KVM at CPL0 and faults at CPL3: no exit reaches the VMM",
        Dr => "MOV to/from debug registers is handled inside KVM: no exit reaches the VMM",
        CrWrite => "MOV to CR0/CR4 is handled inside KVM: no exit reaches the VMM",
        Xsetbv => "XSETBV is handled inside KVM: no exit reaches the VMM",
        Interrupt => "external interrupts are delivered inside KVM: no exit reaches the VMM",
        Mode => {
            "user/kernel mode changes happen inside KVM here (IRETQ, interrupts and exceptions \
             change CPL without an exit); the VMM sees only the changes it makes itself, so \
             !mode would miss transitions"
        }
        Trace => {
            "instrumentation tracing steps every instruction, and single-stepping works only \
             in guest kernel code on this KVM (KVM_GUESTDBG_SINGLESTEP does nothing at CPL3)"
        }
    })
}

/// The event commands hv-kvm raises, for messages.
pub fn raised_kinds() -> String {
    let names: Vec<String> = EventKind::ALL
        .iter()
        .filter(|k| refusal(**k).is_none())
        .map(|k| format!("!{}", k.command()))
        .collect();
    names.join(", ")
}

/// The byte range of the option word `name` in `line`, before the script block (which
/// starts at `script_at`) so a `pid` inside the script is not taken for it.
fn option_word(line: &str, name: &str, script_at: Option<usize>) -> (usize, usize) {
    let head = &line[..script_at.unwrap_or(line.len()).min(line.len())];
    let mut at = 0;
    for word in head.split_ascii_whitespace() {
        let start = at + head[at..].find(word).unwrap_or(0);
        at = start + word.len();
        if word == name {
            return (start, at);
        }
    }
    (0, line.trim_end().len().max(1))
}

/// Whether a compiled program reads `$reg` anywhere.
fn reads_pseudo(program: &Program, reg: hvscript_abi::PseudoReg) -> bool {
    program
        .functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.insts)
        .any(|i| matches!(i, hvscript_lang::ir::Inst::ReadPseudo { reg: r, .. } if *r == reg))
}

/// A parsed, checked, compiled event command.
pub struct CompiledEvent {
    pub spec: EventSpec,
    pub script: Option<Arc<dyn Script>>,
}

/// Parses `line` as an event command, refuses what this KVM cannot intercept, and
/// compiles its script. `globals` is the session's table of global variables.
pub fn compile_event(line: &str, globals: &Arc<Globals>) -> Result<CompiledEvent, EventError> {
    compile_event_with(line, globals, Backend::Jit, &SymbolMap::default())
}

/// [`compile_event`] with a chosen back end.
pub fn compile_event_with(
    line: &str,
    globals: &Arc<Globals>,
    backend: Backend,
    symbols: &SymbolMap,
) -> Result<CompiledEvent, EventError> {
    let spec = parse_event_command_with(line, symbols).map_err(|e| {
        // An error at the very end of the line still needs one character to point at.
        let end = e.end.max(e.start + usize::from(e.start == e.end));
        EventError::at(e.message, e.start, end, e.help)
    })?;
    if let Some(why) = refusal(spec.kind) {
        let start = line.len() - line.trim_start().len();
        let name_len = spec.kind.command().len() + 1;
        return Err(EventError::at(
            format!("!{} cannot be raised by hv-kvm: {why}", spec.kind.command()),
            start,
            start + name_len,
            Some(format!("hv-kvm raises {} from real exits", raised_kinds())),
        ));
    }
    if spec.options.pid.is_some() {
        let (start, end) = option_word(line, "pid", spec.script.as_ref().map(|s| s.1));
        return Err(EventError::at(
            "`pid` cannot filter on hv-kvm's demo guest: it has no processes",
            start,
            end,
            Some("use `core N` to filter by vCPU".into()),
        ));
    }
    let script = match &spec.script {
        None => None,
        Some((text, offset)) => {
            let stage = if spec.options.stage == StageMode::Post {
                StageUse::PostOnly
            } else {
                StageUse::Any
            };
            let options = CompileOptions {
                stage,
                symbols: symbols.0.clone(),
            };
            let program = compile_source(text, globals, &options).map_err(|ds| EventError {
                diagnostics: ds.into_iter().map(|d| d.offset_by(*offset)).collect(),
            })?;
            if let Err(d) = hvscript_lang::stack::check(&program, &EVENT_LIMITS) {
                return Err(EventError {
                    diagnostics: vec![d.offset_by(*offset)],
                });
            }
            let refused = crate::script_checks::check(spec.kind, text);
            if !refused.is_empty() {
                return Err(EventError {
                    diagnostics: refused.into_iter().map(|d| d.offset_by(*offset)).collect(),
                });
            }
            let origin = ScriptOrigin::new(line, *offset);
            let script: Arc<dyn Script> = match backend {
                Backend::Jit => Arc::new(
                    JitScript::new(&program, globals.clone(), origin)
                        .map_err(|e| EventError::at(e, *offset, *offset + text.len(), None))?,
                ),
                Backend::Interp => Arc::new(InterpScript::new(program, globals.clone(), origin)),
            };
            Some(script)
        }
    };
    Ok(CompiledEvent { spec, script })
}
