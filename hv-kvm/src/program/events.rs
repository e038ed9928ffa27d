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
//! tables, and compiled code reaches most of it directly through its translation cache
//! ([`ProgramMemory`] says which pages).
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
use hvscript_stdlib::{DirectPage, MemFault, DIRECT_PAGE_SIZE};

use super::page_tables::PageTables;
use crate::global_names::GlobalNames;
use crate::memory::{GuestMemory, GuestView};
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
///
/// Compiled code's translation cache ([`GuestAccess::direct_page`]) gets the program's pages
/// only in the views of the program's own exits ([`ProgramMemory::of_exit`]), which run on
/// the vCPU thread: the VMM patches the program's code (hooks' `int3`, rewritten system-call
/// sites) on that thread too, between exits, so nothing is patched while a script of an
/// exit runs and holds pages. A page holding a patched byte is never handed out (scripts
/// must be shown the original there, which only [`ProgramMemory::read`]'s
/// `show_original` does), and a page is handed out writable only where the program may
/// write it itself. Pages are valid for one execution (`mapping_id` stays 0): the program's
/// `mmap`, `munmap`, `mprotect` and `brk` change its page tables between exits.
pub struct ProgramMemory<'a> {
    view: GuestView<'a>,
    /// Where `pause()` stops, for the views of exits.
    debugger: Option<&'a crate::debugger::Debugger>,
    /// Shows scripts the original bytes where the VMM patched the program's code.
    session: Option<&'a super::session::ProgramSession>,
    /// Whether compiled code may cache pages of this view (the views of exits only).
    direct_pages: bool,
}

impl<'a> ProgramMemory<'a> {
    /// The program's memory (page tables at `root`) for a script run apart from its exits:
    /// a `?` or a hook's check on a command's thread, while the program may run and the
    /// vCPU patch its code, so compiled code caches none of its pages.
    pub fn new(
        mem: &'a GuestMemory,
        root: u64,
        session: Option<&'a super::session::ProgramSession>,
    ) -> ProgramMemory<'a> {
        ProgramMemory {
            view: GuestView::new(mem, root),
            debugger: None,
            session,
            direct_pages: false,
        }
    }

    /// The view of one of the program's exits, on its vCPU thread: `pause()` stops in the
    /// session's debugger, and compiled code may cache pages (see [`ProgramMemory`]).
    pub fn of_exit(
        mem: &'a GuestMemory,
        root: u64,
        session: &'a super::session::ProgramSession,
    ) -> ProgramMemory<'a> {
        ProgramMemory {
            view: GuestView::new(mem, root),
            debugger: Some(&session.debugger),
            session: Some(session),
            direct_pages: true,
        }
    }
}

impl GuestAccess for ProgramMemory<'_> {
    fn can_pause(&self) -> bool {
        self.debugger.is_some_and(|d| d.has_console())
    }

    fn pause(&mut self, at: &hv_core::PauseInfo, regs: &mut hvscript_abi::GuestRegs) {
        if let Some(d) = self.debugger {
            d.break_in(at, regs, self.view.cr3);
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
        self.view.read(addr, buf)?;
        if let Some(session) = self.session {
            session.show_original(addr, buf);
        }
        Ok(())
    }

    /// Straight to the program's memory through its page tables, whatever the page's
    /// permissions, and with no `!monitor` event (a script's write is not the program's
    /// access): what a writable direct page does too.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.view.write(addr, data)
    }

    /// [`GuestView::direct_page`] (which keeps the page tables behind the pages it hands out
    /// from being written through them), for the views of exits, unless the VMM patched a
    /// byte of the page; writable only where the program's own page is (user, writable):
    /// elsewhere a write takes [`ProgramMemory::write`], which does the same to memory.
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        if !self.direct_pages {
            return None;
        }
        let page = addr & !(DIRECT_PAGE_SIZE - 1);
        if self
            .session
            .is_some_and(|s| s.patched(page, DIRECT_PAGE_SIZE))
        {
            return None;
        }
        let tables = PageTables {
            root: self.view.cr3,
        };
        let (_, flags) = tables.lookup(self.view.mem, page)?;
        self.view
            .direct_page(addr, write && flags.writable && flags.user)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hv_core::{Engine, GuestAccess, NullSink, SymbolMap};

    use super::super::page_tables::{FrameAllocator, PageFlags};
    use super::super::session::ProgramSession;
    use super::*;

    const CODE: u64 = 0x40_1000;
    const OTHER_CODE: u64 = 0x40_2000;
    const RODATA: u64 = 0x50_0000;
    const DATA: u64 = 0x60_0000;
    /// A page of the VMM's (supervisor, writable), as the process record's.
    const VMM_PAGE: u64 = 0x8000;

    /// A program's address space: code, read-only data, data and one VMM page, each page's
    /// first word its own address; a hook's `int3` patched into `CODE + 0x10`.
    fn program() -> (Arc<GuestMemory>, ProgramSession, Vec<(u64, u64)>) {
        let mem = Arc::new(GuestMemory::new(4 << 20).unwrap());
        let mut frames = FrameAllocator::new(0x10_0000, 4 << 20);
        let tables = PageTables::new(&mem, &mut frames).unwrap();
        let flags = |writable, executable, user| PageFlags {
            writable,
            executable,
            user,
        };
        let mut mapped = Vec::new();
        for (va, f) in [
            (CODE, flags(false, true, true)),
            (OTHER_CODE, flags(false, true, true)),
            (RODATA, flags(false, false, true)),
            (DATA, flags(true, false, true)),
            (VMM_PAGE, flags(true, false, false)),
        ] {
            let frame = frames.allocate(&mem).unwrap();
            tables.map(&mem, &mut frames, va, frame, f).unwrap();
            mem.write_u64(frame, va).unwrap();
            mapped.push((va, frame));
        }
        let session = ProgramSession::new(
            Arc::new(Engine::new(Arc::new(NullSink))),
            Default::default(),
            SymbolMap::default(),
            mem.clone(),
            tables.root,
            vec![(CODE, OTHER_CODE + 0x1000)],
        );
        let code_frame = mapped[0].1;
        let mut original = [0u8];
        mem.read(code_frame + 0x10, &mut original).unwrap();
        mem.write(code_frame + 0x10, &[0xcc]).unwrap();
        session.set_originals([(CODE + 0x10, original[0])].into_iter().collect());
        (mem, session, mapped)
    }

    fn frame_of(mapped: &[(u64, u64)], va: u64) -> u64 {
        mapped.iter().find(|(v, _)| *v == va).unwrap().1
    }

    /// An exit's script reads the program's data through the host page itself; its writes
    /// go there only where the program may write; a page the VMM patched, an unmapped
    /// address, and scripts apart from the exits (`?`) get no direct page.
    #[test]
    fn exits_get_the_programs_pages_but_never_a_patched_one() {
        let (mem, session, mapped) = program();
        let mut view = ProgramMemory::of_exit(&mem, session.root, &session);
        let host = |va: u64| mem.host_addr() + frame_of(&mapped, va);

        let data = view.direct_page(DATA + 8, true).expect("a data page");
        assert_eq!(data.host() as u64, host(DATA));
        assert!(data.writable());
        // SAFETY: a direct page is 4 KiB of the live guest mapping.
        let word = unsafe { data.host().cast::<u64>().read_unaligned() };
        let mut via_read = [0u8; 8];
        view.read(DATA, &mut via_read).unwrap();
        assert_eq!(word, u64::from_le_bytes(via_read));
        assert_eq!(word, DATA);

        assert_eq!(view.direct_page(CODE, false), None, "the hooked page");
        assert_eq!(view.direct_page(CODE + 0x10, true), None);
        let mut byte = [0u8];
        view.read(CODE + 0x10, &mut byte).unwrap();
        assert_ne!(byte[0], 0xcc, "read shows the original byte");

        // Pages the program cannot write are read directly, written through `write`.
        for va in [OTHER_CODE, RODATA, VMM_PAGE] {
            let page = view.direct_page(va + 0x20, true).expect("a mapped page");
            assert_eq!(page.host() as u64, host(va), "{va:#x}");
            assert!(!page.writable(), "{va:#x}");
        }
        assert_eq!(view.direct_page(0x70_0000, false), None, "unmapped");
        assert_eq!(view.direct_page(1 << 47, false), None, "not canonical");

        let mut console = ProgramMemory::new(&mem, session.root, Some(&session));
        assert_eq!(console.direct_page(DATA, false), None);
    }

    /// Once the VMM patches a page, the next execution's view refuses it (a view's pages
    /// are valid for one execution: `mapping_id` stays 0).
    #[test]
    fn a_page_patched_later_is_refused_from_then_on() {
        let (mem, session, _) = program();
        assert_eq!(
            ProgramMemory::of_exit(&mem, session.root, &session).mapping_id(),
            0
        );
        let mut view = ProgramMemory::of_exit(&mem, session.root, &session);
        assert!(view.direct_page(OTHER_CODE, false).is_some());
        session.set_originals([(CODE + 0x10, 0x55), (OTHER_CODE + 0xff0, 0x0f)].into());
        let mut view = ProgramMemory::of_exit(&mem, session.root, &session);
        assert_eq!(view.direct_page(OTHER_CODE, false), None);
    }
}
