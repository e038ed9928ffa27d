//! Events on a program guest: which kinds hv-kvm raises from a program's real exits
//! (`!syscall`, `!sysret`, `!epthook`, `!epthook2`, `!monitor`, `!exception`; the exits
//! and their stages are in [`super::exits`]), as the rules a front end checks scripts
//! against ([`ProgramPlatform`]), and the loading of what it compiled.
//!
//! `!syscall [NUM]` runs at every system call the program makes: `$context` is the number,
//! the registers are its arguments as the program set them (RDI, RSI, RDX, R10, R8, R9; a
//! pre script may change them, and the call sees the change); `event_sc(1)` or `sc on`
//! skips the call and the program gets the scripts' `@rax` as its result; the post stage
//! sees the result in `@rax` and may change it. `!sysret` runs when the call returns to
//! the program (`$context` = the address it returns to; `@rax` = the result), with nothing
//! left to skip. The program's memory is readable and writable by scripts through its page
//! tables.
//!
//! OS awareness: `$pid`/`$tid` are the program's (what `getpid` returns), `$pname` points to
//! its name (the file name, NUL-terminated), and the VMM keeps two records in guest memory,
//! readable by scripts (not by the program: supervisor pages):
//!
//! | record | at | fields (u64 each) |
//! |---|---|---|
//! | process (`$proc`) | 0x8000 | +0 pid, +8 address of the name, +16 address of the path, +24 address of the thread record |
//! | thread (`$thread`) | 0x8040 | +0 tid, +8 address of the process record |

use std::sync::Arc;

use hv_core::platform::Platform;
use hv_core::{
    parse_event_command_with, CodeScript, CommandError, Engine, EventKind, EventSpec, GuestAccess,
    Prepared, SymbolMap,
};
use hvscript_abi::{PseudoReg, Register};
use hvscript_runtime::{CodeObject, GlobalSlots, Limits, LoadedCode};
use hvscript_stdlib::MemFault;

use crate::global_names::GlobalNames;
use crate::memory::GuestMemory;
use crate::platform::EVENT_LIMITS;

/// A program guest's rules, for front ends.
pub struct ProgramPlatform;

impl Platform for ProgramPlatform {
    fn name(&self) -> &str {
        "hv-kvm program guest"
    }

    fn refusal(&self, kind: EventKind) -> Option<&str> {
        use EventKind::*;
        Some(match kind {
            Syscall | Sysret | EptHook | EptHook2 | Monitor | Exception => return None,
            IoIn | IoOut => {
                "a program runs at CPL3, where IN and OUT fault (#GP, then SIGSEGV) instead \
                 of reaching a port: no I/O exit comes from a program"
            }
            MsrRead | MsrWrite => {
                "a program runs at CPL3, where RDMSR and WRMSR fault (#GP): no MSR exit \
                 comes from a program"
            }
            Cpuid => {
                "CPUID at CPL3 is not intercepted by this KVM (the program gets the outer \
                 hypervisor's values without an exit)"
            }
            other => match crate::platform::refusal(other) {
                Some(why) => why,
                None => "a program guest does not raise this event",
            },
        })
    }

    fn register_refusal(&self, kind: EventKind, reg: Register, write: bool) -> Option<String> {
        let slot = reg.field().slot;
        // The general registers, RIP and RFLAGS are the program's and take writes; the
        // segment selectors and control registers are shown as they are; `!monitor`
        // carries its access's data and length in @dr0 and @dr1.
        let monitor_data = kind == EventKind::Monitor && matches!(slot, 29 | 30);
        let allowed = slot <= 17 || monitor_data || (!write && slot <= 28);
        (!allowed).then(|| {
            format!(
                "@{} is not {} at a program's exit: the general registers, @rip and @rflags \
                 are (and !monitor's @dr0/@dr1){}",
                reg.name(),
                if write { "applied" } else { "available" },
                if write && slot <= 28 {
                    "; segments and control registers are the VMM's"
                } else {
                    ""
                }
            )
        })
    }

    fn pseudo_refusal(&self, reg: PseudoReg) -> Option<String> {
        use PseudoReg::*;
        matches!(reg, Peb | Teb).then(|| {
            format!(
                "${} is a Windows structure: a Linux program has none",
                reg.name()
            )
        })
    }

    fn pid_refusal(&self) -> Option<(String, String)> {
        None
    }

    fn builtin_refusal(&self, b: hvscript_abi::Builtin) -> Option<String> {
        crate::platform::trace_refusal(b)
    }

    fn filter_refusal(&self, _kind: EventKind, filter: &hv_core::Filter) -> Option<String> {
        super::watches::refusal(filter)
    }

    fn event_limits(&self) -> Limits {
        EVENT_LIMITS
    }
}

/// Adds the event `line` with what the front end compiled for it.
pub fn add_event(
    engine: &Engine,
    globals: &Arc<GlobalSlots>,
    names: &GlobalNames,
    symbols: &SymbolMap,
    line: &str,
    prepared: &Prepared,
) -> Result<(u64, EventSpec), CommandError> {
    let spec = parse_event_command_with(line, symbols)?;
    hv_core::platform::check_event(&ProgramPlatform, line, &spec)?;
    names
        .bind(globals, &prepared.globals)
        .map_err(|e| CommandError::whole(line, e))?;
    let script: Option<Arc<dyn hv_core::Script>> = match (&spec.script, &prepared.code) {
        (None, None) => None,
        (Some((_, offset)), Some(bytes)) => {
            let at = |m: String| CommandError::whole(line, m);
            let object = CodeObject::from_bytes(bytes)
                .map_err(|e| at(format!("the code object was refused: {}", e.0)))?;
            if let Some(r) =
                hv_core::platform::usage_refusals(&ProgramPlatform, spec.kind, object.usage())
                    .into_iter()
                    .next()
            {
                return Err(at(r));
            }
            let code: LoadedCode =
                LoadedCode::load(object).map_err(|e| at(format!("loading: {e}")))?;
            Some(Arc::new(
                CodeScript::new(code, globals.clone(), EVENT_LIMITS).with_origin(line, *offset),
            ))
        }
        _ => {
            return Err(CommandError::whole(
                line,
                "the script block and its compiled form must come together",
            ))
        }
    };
    let kept = spec.clone();
    engine
        .add(spec, script)
        .map(|id| (id, kept))
        .map_err(|e| CommandError::whole(line, e.to_string()))
}

/// The program's memory for scripts: virtual addresses through its page tables.
pub struct ProgramMemory<'a> {
    pub mem: &'a GuestMemory,
    pub root: u64,
    /// Where `pause()` stops, for the views of exits.
    pub debugger: Option<&'a crate::debugger::Debugger>,
    /// Shows scripts the original bytes where the VMM patched the program's code.
    pub session: Option<&'a super::session::ProgramSession>,
}

impl GuestAccess for ProgramMemory<'_> {
    fn can_pause(&self) -> bool {
        self.debugger.is_some_and(|d| d.has_console())
    }

    fn pause(&mut self, at: &hv_core::PauseInfo, regs: &mut hvscript_abi::GuestRegs) {
        if let Some(d) = self.debugger {
            d.break_in(at, regs, self.root);
        }
    }

    /// The host's clock, UTC, for `$date` and `$time`.
    fn local_time(&mut self) -> Option<hvscript_stdlib::LocalTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(hvscript_stdlib::LocalTime::from_unix(
            now.as_secs(),
            now.subsec_millis() as u16,
        ))
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        crate::memory::GuestView::new(self.mem, self.root).read(addr, buf)?;
        if let Some(session) = self.session {
            session.show_original(addr, buf);
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        crate::memory::GuestView::new(self.mem, self.root).write(addr, data)
    }
}
