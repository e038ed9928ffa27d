//! The debugger commands a VM takes, from `run -e/-f` and from the control socket alike:
//! event commands, `events [e|d|c ID|all]`, `output ...` and `? SCRIPT`.
//!
//! `? SCRIPT` runs the script once in the hypervisor's context, as HyperDbg's `?` does:
//! outside any event (`$stage` 0, `event_sc` refused), with the session's global variables
//! (so `? .count = 0;` creates a global every event's script can then read and change),
//! guest memory through the demo guest's boot page tables, and the registers of no vCPU
//! (every register reads 0; the guest keeps running while it evaluates). Its output is the
//! command's result, not event output.
//!
//! A command with a script comes compiled by a front end ([`Prepared`]; the VM does not
//! compile): a `?` runs its code object (or in-process script) once. Every error is a
//! [`CommandError`] located in the command line.

use hv_core::{parse_command_with, Command, CommandError, OutputCommand, Prepared, Target};
use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_runtime::{CodeObject, Invocation, LoadedCode, Runner, RunnerError};
use hvscript_stdlib::{Env, EventOp, LocalTime, MemFault, Unavailable};

use crate::memory::GuestView;
use crate::platform::EVAL_LIMITS;
use crate::vmm::Vm;

impl crate::debugger_commands::DebugTarget for Vm {
    fn debugger(&self) -> &crate::debugger::Debugger {
        &self.debugger
    }
    fn guest_memory(&self) -> &crate::memory::GuestMemory {
        self.memory()
    }
    fn running_cr3(&self) -> u64 {
        self.boot_cr3()
    }
    fn debug_symbols(&self) -> hv_core::SymbolMap {
        self.symbols()
    }
}

impl Vm {
    /// Runs one command line with what a front end compiled for it (an empty
    /// [`Prepared`] for a command without a script); `Ok` is the text of its result.
    pub fn command(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError> {
        let symbols = self.symbols();
        let command = parse_command_with(line, &symbols)
            .map_err(|e| CommandError::new(e.message, e.start, e.end, e.help))?;
        if !matches!(command, Command::Event(_) | Command::Eval(..)) && prepared.has_script() {
            return Err(CommandError::whole(
                line,
                "a compiled script came with a command that has no script",
            ));
        }
        let whole = |message: String| CommandError::whole(line, message);
        let target_text = |t: Target| match t {
            Target::All => "all events".to_string(),
            Target::Id(id) => format!("event {id:#x}"),
        };
        let apply = |op: EventOp, t: Target, what: &str| {
            self.apply(op, t)
                .map(|n| format!("{what} {} ({n})", target_text(t)))
                .map_err(|e| whole(e.to_string()))
        };
        match command {
            Command::Event(_) => self
                .add_event(line, prepared)
                .map(|id| format!("event {id:#x} added")),
            Command::List => Ok(self.listing()),
            Command::Enable(t) => apply(EventOp::Enable, t, "enabled"),
            Command::Disable(t) => apply(EventOp::Disable, t, "disabled"),
            Command::Clear(t) => apply(EventOp::Clear, t, "cleared"),
            Command::ShortCircuit(_) => Err(whole(
                "`events sc` applies to an execution the debugger is stopped in; hv-kvm never stops in one"
                    .into(),
            )),
            Command::Eval(script, offset) => self.evaluate(line, script, offset, prepared),
            Command::Output(o) => self.output_command(o).map_err(whole),
            Command::Debugger(d) => crate::debugger_commands::run(self, line, d),
        }
    }

    /// The `events` listing.
    pub fn listing(&self) -> String {
        listing(self.engine())
    }

    fn output_command(&self, command: OutputCommand) -> Result<String, String> {
        let router = self.output();
        match command {
            OutputCommand::Create {
                name,
                kind,
                address,
            } => router
                .create(&name, kind.clone(), &address)
                .map(|()| format!("output source `{name}` created ({} {address})", kind.name())),
            OutputCommand::Open(name) => router
                .open(&name)
                .map(|()| format!("output source `{name}` opened")),
            OutputCommand::Close(name) => router
                .close(&name)
                .map(|()| format!("output source `{name}` closed")),
            OutputCommand::List => {
                let mut out = String::new();
                for s in router.list() {
                    out.push_str(&format!(
                        "{:<16} {:<9} {:<7} {}  [sent {} dropped {} failed {}]\n",
                        s.name, s.kind, s.state, s.address, s.sent, s.dropped, s.failed
                    ));
                }
                if out.is_empty() {
                    out.push_str("no output sources\n");
                }
                Ok(out)
            }
        }
    }

    /// `? SCRIPT` (see the module documentation); `offset` is the script's in the line.
    fn evaluate(
        &self,
        line: &str,
        script: String,
        offset: usize,
        prepared: &Prepared,
    ) -> Result<String, CommandError> {
        let block = (script, offset);
        let at = |start: usize, end: usize, message: String| {
            CommandError::new(message, offset + start, offset + end, None)
        };
        // A code object runs here with the runtime's runner (not as a `CodeScript`) so a
        // run-time error keeps its byte range for the caret; an in-process script (the
        // front end's interpreter) runs through `Script`.
        let code = match &prepared.code {
            Some(bytes) if prepared.script.is_none() => {
                let object = CodeObject::from_bytes(bytes).map_err(|e| {
                    at(
                        0,
                        block.0.len(),
                        format!("the code object was refused: {}", e.0),
                    )
                })?;
                let code: LoadedCode = LoadedCode::load(object).map_err(|e| {
                    at(
                        0,
                        block.0.len(),
                        format!("the code object could not be loaded: {e}"),
                    )
                })?;
                self.bind_globals(&prepared.globals)
                    .map_err(|e| at(0, block.0.len(), e))?;
                Some(code)
            }
            _ => None,
        };
        let script = match code {
            Some(_) => None,
            None => self.load_script(line, Some(&block), None, prepared, EVAL_LIMITS)?,
        };
        let mut view = GuestView::new(self.memory(), self.boot_cr3());
        run_once(
            &block,
            code.as_ref(),
            script.as_deref(),
            self.globals(),
            &mut view,
            self.boot_cr3(),
        )
    }
}

/// The `events` listing of an engine's table: `ID  enabled|disabled  COMMAND  [counters]`.
pub(crate) fn listing(engine: &hv_core::Engine) -> String {
    let mut out = String::new();
    for l in engine.list() {
        let c = l.counters;
        out.push_str(&format!(
            "{:#x}  {:<8}  {}  [pre {} post {} sc {} errors {}]\n",
            l.id,
            if l.enabled { "enabled" } else { "disabled" },
            l.text,
            c.pre_runs,
            c.post_runs,
            c.short_circuits,
            c.script_errors
        ));
    }
    if out.is_empty() {
        out.push_str("no events\n");
    }
    out
}

/// Runs a `?` once — its code object, or an in-process script — outside any event, with
/// the session's `globals` and guest memory through `view` (page tables at `cr3`); `Ok` is
/// what it printed. `block` is the script's text and offset in the command line, for the
/// located errors.
pub(crate) fn run_once(
    block: &(String, usize),
    code: Option<&LoadedCode>,
    script: Option<&dyn hv_core::Script>,
    globals: &hvscript_runtime::GlobalSlots,
    view: &mut dyn hv_core::GuestAccess,
    cr3: u64,
) -> Result<String, CommandError> {
    let offset = block.1;
    let at = |start: usize, end: usize, message: String| {
        CommandError::new(message, offset + start, offset + end, None)
    };
    let mut regs = GuestRegs {
        cr3,
        ..Default::default()
    };
    let mut pseudo = PseudoValues::default();
    let mut env = EvalEnv {
        view,
        output: Vec::new(),
        clock: [0; 32],
    };
    if let Some(t) = env.view.local_time() {
        env.clock[..11].copy_from_slice(&t.date_string());
        env.clock[16..29].copy_from_slice(&t.time_string());
        pseudo.set(PseudoReg::Date, env.clock.as_ptr() as u64);
        pseudo.set(PseudoReg::Time, env.clock.as_ptr() as u64 + 16);
    }
    let result = match (code, script) {
        (Some(code), _) => {
            let mut invocation = Invocation {
                regs: &mut regs,
                pseudo: &pseudo,
                globals,
                host: &mut env,
                limits: EVAL_LIMITS,
            };
            Runner::new()
                .run(&code.image(), &mut invocation)
                .map(|_| ())
                .map_err(|e| match e {
                    RunnerError::Run(e) => {
                        at(e.range.start as usize, e.range.end as usize, e.message())
                    }
                    other => at(0, block.0.len(), other.to_string()),
                })
        }
        (None, Some(script)) => script.execute(&mut regs, &pseudo, &mut env).map_err(|e| {
            let message = match e {
                hv_core::ScriptFailure::FuelExhausted(_) => {
                    hvscript_runtime::RunErrorKind::FuelExhausted(EVAL_LIMITS.fuel).message()
                }
                hv_core::ScriptFailure::Error(m) => m,
            };
            at(0, block.0.len(), message)
        }),
        (None, None) => Ok(()),
    };
    let mut text = String::from_utf8_lossy(&env.output).into_owned();
    match result {
        Ok(()) => Ok(text),
        Err(mut e) => {
            if !text.is_empty() {
                text.truncate(text.trim_end().len());
                e.help = Some(format!("printed before the error: {text}"));
            }
            Err(e)
        }
    }
}

/// The environment of a `?` evaluation: guest memory, collected output, the clock strings.
struct EvalEnv<'a> {
    view: &'a mut dyn hv_core::GuestAccess,
    output: Vec<u8>,
    clock: [u8; 32],
}

impl EvalEnv<'_> {
    fn clock_range(&self, addr: u64, len: usize) -> Option<usize> {
        let base = self.clock.as_ptr() as u64;
        (addr >= base && addr.checked_add(len as u64)? <= base + 32).then(|| (addr - base) as usize)
    }
}

impl Env for EvalEnv<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        if let Some(off) = self.clock_range(addr, buf.len()) {
            buf.copy_from_slice(&self.clock[off..off + buf.len()]);
            return Ok(());
        }
        self.view.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.view.write(addr, data)
    }
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<hvscript_stdlib::DirectPage> {
        let page = addr & !(hvscript_stdlib::DIRECT_PAGE_SIZE - 1);
        let clock = self.clock.as_ptr() as u64;
        // The clock strings shadow guest memory at their address.
        if page < clock + self.clock.len() as u64
            && clock < page + hvscript_stdlib::DIRECT_PAGE_SIZE
        {
            return None;
        }
        self.view.direct_page(addr, write)
    }
    fn atomic_rmw_u64(
        &mut self,
        addr: u64,
        op: hvscript_stdlib::AtomicRmw,
    ) -> Result<u64, MemFault> {
        self.view.atomic_rmw_u64(addr, op)
    }
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        self.view.cmpxchg_u32(addr, expected, new)
    }
    fn read_phys(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.view.read_phys(addr, buf)
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.view.write_phys(addr, data)
    }
    fn virt_to_phys(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.view.virt_to_phys(addr)
    }
    fn phys_to_virt(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        self.view.phys_to_virt(addr)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }
    fn test_statement(&mut self, _value: u64) {}
    fn local_time(&mut self) -> Option<LocalTime> {
        self.view.local_time()
    }
}
