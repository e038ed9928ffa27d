//! A program guest's command session: the commands `run -e/-f` and attached clients send
//! (`!EVENT ...`, `events [e|d|c ID|all]`, `? SCRIPT`), the globals and symbols a front
//! end compiles against, and the hand-over of every event-table change to the vCPU.
//!
//! Hooks and watches are laid out by the vCPU thread itself (it owns the program's code
//! patches and memory slots), at its next exit. A command that changes the table while
//! the program runs kicks the vCPU out of `KVM_RUN` (a signal) and waits, bounded, until
//! the vCPU has laid the new table out, so "event added" means the hook is in place; a
//! hook the vCPU could not place is cleared and the command fails with the reason.
//!
//! `? SCRIPT` runs once on the calling thread with the session's globals and the
//! program's memory through its page tables (no registers: they read 0), as on the demo
//! guest. `output ...` and `events sc` are refused with the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hv_core::{
    parse_command_with, Command, CommandError, Engine, EventKind, Filter, Prepared, SymbolMap,
    Target,
};
use hvscript_runtime::{CodeObject, GlobalSlots, LoadedCode};
use hvscript_stdlib::EventOp;

use super::events::{add_event, ProgramMemory};
use super::faults::instruction_at;
use crate::debugger::Debugger;
use crate::global_names::GlobalNames;
use crate::memory::GuestMemory;

/// How long a command waits for the running vCPU to lay out its change.
const HAND_OVER: Duration = Duration::from_secs(2);

/// The session of one program guest.
pub struct ProgramSession {
    pub(super) engine: Arc<Engine>,
    /// The program's output thread: it writes what the exits record, and sends it before
    /// the program's own writes to its terminal.
    pub(super) output: Arc<crate::output_thread::OutputThread>,
    globals: Arc<GlobalSlots>,
    names: GlobalNames,
    symbols: SymbolMap,
    pub(super) mem: Arc<GuestMemory>,
    pub(super) root: u64,
    /// The executable segments of the image: where a hook may go.
    code: Vec<(u64, u64)>,
    /// Serialises table changes (and their hand-over).
    changing: Mutex<()>,
    /// Table changes made, and the last one the vCPU laid out.
    changes: AtomicU64,
    synced: AtomicU64,
    /// The vCPU thread while it runs the program (a `pthread_t`), 0 otherwise; kicks are
    /// sent with it locked, so none reaches the thread after it unregistered.
    vcpu_thread: Mutex<u64>,
    /// Hooks the vCPU could not place: (event id, why).
    failures: Mutex<Vec<(u64, String)>>,
    /// Breaking into the debugger: `pause`, `pause()`, `g`, `r`.
    pub debugger: Debugger,
    /// The bytes the VMM changed in the program's code (hooks' `int3`, rewritten
    /// system-call sites), by address: what the debugger and scripts are shown instead.
    originals: Mutex<std::collections::BTreeMap<u64, u8>>,
}

impl crate::debugger_commands::DebugTarget for ProgramSession {
    fn debugger(&self) -> &Debugger {
        &self.debugger
    }
    fn guest_memory(&self) -> &GuestMemory {
        &self.mem
    }
    fn running_cr3(&self) -> u64 {
        self.root
    }
    fn debug_symbols(&self) -> SymbolMap {
        self.symbols.clone()
    }
    fn unpatch(&self, at: u64, bytes: &mut [u8]) {
        self.show_original(at, bytes);
    }
}

impl ProgramSession {
    pub(super) fn new(
        engine: Arc<Engine>,
        globals: Arc<GlobalSlots>,
        symbols: SymbolMap,
        mem: Arc<GuestMemory>,
        root: u64,
        code: Vec<(u64, u64)>,
    ) -> ProgramSession {
        ProgramSession {
            output: crate::output_thread::OutputThread::new(engine.clone()),
            engine,
            globals,
            names: GlobalNames::default(),
            symbols,
            mem,
            root,
            code,
            changing: Mutex::new(()),
            changes: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            vcpu_thread: Mutex::new(0),
            failures: Mutex::new(Vec::new()),
            debugger: Debugger::default(),
            originals: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn globals(&self) -> &Arc<GlobalSlots> {
        &self.globals
    }

    /// The session's global names with their slots: what a front end compiles against.
    pub fn global_names(&self) -> Vec<(String, u32)> {
        self.names.names()
    }

    /// The current value of global `.name`, if a script bound it.
    pub fn global(&self, name: &str) -> Option<u64> {
        self.names.slot(name).map(|s| self.globals.get(s))
    }

    /// The names usable in event arguments and scripts.
    pub fn symbols(&self) -> SymbolMap {
        self.symbols.clone()
    }

    /// Runs one command line with what a front end compiled for it; `Ok` is its result.
    pub fn command(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError> {
        let command = parse_command_with(line, &self.symbols)
            .map_err(|e| CommandError::new(e.message, e.start, e.end, e.help))?;
        let whole = |message: String| CommandError::whole(line, message);
        let target_text = |t: Target| match t {
            Target::All => "all events".to_string(),
            Target::Id(id) => format!("event {id:#x}"),
        };
        let apply = |op: EventOp, t: Target, what: &str| {
            let _g = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            let n = self.engine.apply(op, t).map_err(|e| whole(e.to_string()))?;
            self.hand_over();
            Ok(format!("{what} {} ({n})", target_text(t)))
        };
        match command {
            Command::Event(_) => self.add(line, prepared),
            Command::List => Ok(self.listing()),
            Command::Enable(t) => apply(EventOp::Enable, t, "enabled"),
            Command::Disable(t) => apply(EventOp::Disable, t, "disabled"),
            Command::Clear(t) => apply(EventOp::Clear, t, "cleared"),
            Command::ShortCircuit(_) => Err(whole(
                "`events sc` applies to an execution the debugger is stopped in; a program \
                 guest never stops in one"
                    .into(),
            )),
            Command::Eval(script, offset) => self.evaluate(line, script, offset, prepared),
            Command::Debugger(d) => crate::debugger_commands::run(self, line, d),
            Command::Output(_) => Err(whole(
                "output sources are the demo guest's; a program's event output goes to \
                 standard error and to attached clients"
                    .into(),
            )),
        }
    }

    fn add(&self, line: &str, prepared: &Prepared) -> Result<String, CommandError> {
        let _g = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let spec = hv_core::parse_event_command_with(line, &self.symbols)?;
        if let (EventKind::EptHook | EventKind::EptHook2, Filter::Address(addr)) =
            (spec.kind, &spec.filter)
        {
            self.hook_check(*addr).map_err(|why| {
                CommandError::whole(
                    line,
                    format!("!{} cannot hook {addr:#x}: {why}", spec.kind.command()),
                )
            })?;
        }
        let (id, _) = add_event(
            &self.engine,
            &self.globals,
            &self.names,
            &self.symbols,
            line,
            prepared,
        )?;
        self.hand_over();
        let failed = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let at = failures.iter().position(|(i, _)| *i == id);
            at.map(|i| failures.remove(i).1)
        };
        match failed {
            Some(why) => Err(CommandError::whole(line, why)),
            None => Ok(format!("event {id:#x} added")),
        }
    }

    /// Whether a hook can go at `addr`: an instruction in the image's executable code.
    fn hook_check(&self, addr: u64) -> Result<(), String> {
        if !self
            .code
            .iter()
            .any(|&(from, to)| (from..to).contains(&addr))
        {
            return Err("it is not in the program's executable code".into());
        }
        let mut view = ProgramMemory::new(&self.mem, self.root, Some(self));
        match instruction_at(addr, |b| {
            hv_core::GuestAccess::read(&mut view, addr, b).is_ok()
        }) {
            Some(_) => Ok(()),
            None => Err("no valid instruction starts there".into()),
        }
    }

    /// The `events` listing.
    pub fn listing(&self) -> String {
        crate::commands::listing(&self.engine)
    }

    fn evaluate(
        &self,
        line: &str,
        script: String,
        offset: usize,
        prepared: &Prepared,
    ) -> Result<String, CommandError> {
        let whole_script = |m: String| CommandError::new(m, offset, offset + script.len(), None);
        let code = match &prepared.code {
            Some(bytes) => {
                let object = CodeObject::from_bytes(bytes)
                    .map_err(|e| whole_script(format!("the code object was refused: {}", e.0)))?;
                let code: LoadedCode = LoadedCode::load(object).map_err(|e| {
                    whole_script(format!("the code object could not be loaded: {e}"))
                })?;
                Some(code)
            }
            None => None,
        };
        if code.is_none() && prepared.script.is_none() {
            return Err(CommandError::whole(
                line,
                "`?` needs its script compiled by a front end (hvscript run or attach)",
            ));
        }
        self.names
            .bind(&self.globals, &prepared.globals)
            .map_err(whole_script)?;
        let mut view = ProgramMemory::new(&self.mem, self.root, Some(self));
        crate::commands::run_once(
            &(script.clone(), offset),
            code.as_ref(),
            prepared.script.as_deref(),
            &self.globals,
            &mut view,
            self.root,
        )
    }

    /// Hands the table's latest change to the running vCPU: kicks it out of `KVM_RUN` and
    /// waits (bounded) until it has laid the change out. Called with `changing` held.
    fn hand_over(&self) {
        let change = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + HAND_OVER;
        loop {
            {
                let thread = self.vcpu_thread.lock().unwrap_or_else(|e| e.into_inner());
                if *thread == 0 || self.synced.load(Ordering::SeqCst) >= change {
                    return;
                }
                crate::vmm::kick(*thread);
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The program's code as it was: the bytes the VMM patched in `[at, at+len)` replaced by
    /// their originals (scripts and the debugger see those; the program itself sees the
    /// patches, since the VMM cannot make its code pages execute-only).
    pub fn show_original(&self, at: u64, bytes: &mut [u8]) {
        let originals = self.originals.lock().unwrap_or_else(|e| e.into_inner());
        if originals.is_empty() {
            return;
        }
        let end = at.saturating_add(bytes.len() as u64);
        for (&addr, &b) in originals.range(at..end) {
            bytes[(addr - at) as usize] = b;
        }
    }

    /// Whether the VMM patched a byte of the program's code in `[at, at + len)` (which
    /// scripts must then read through [`ProgramSession::show_original`]).
    pub fn patched(&self, at: u64, len: u64) -> bool {
        let originals = self.originals.lock().unwrap_or_else(|e| e.into_inner());
        originals.range(at..at.saturating_add(len)).next().is_some()
    }

    /// The VMM patched the program's code: these are the original bytes now covered.
    pub(super) fn set_originals(&self, originals: std::collections::BTreeMap<u64, u8>) {
        *self.originals.lock().unwrap_or_else(|e| e.into_inner()) = originals;
    }

    /// The vCPU thread starts (or stops, with 0) running the program.
    pub(super) fn set_vcpu_thread(&self, thread: u64) {
        *self.vcpu_thread.lock().unwrap_or_else(|e| e.into_inner()) = thread;
    }

    /// The change count the vCPU is about to lay out.
    pub(super) fn pending(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// The vCPU laid out every change up to `change`.
    pub(super) fn synced(&self, change: u64) {
        self.synced.fetch_max(change, Ordering::SeqCst);
    }

    /// A hook the vCPU could not place: its event is cleared, and the command that added
    /// it (if one waits) fails with `why`.
    pub(super) fn hook_failed(&self, id: u64, why: String) {
        let _ = self.engine.apply(EventOp::Clear, Target::Id(id));
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, why));
    }
}
