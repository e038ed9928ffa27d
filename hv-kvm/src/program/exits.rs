//! The program guest's run loop: what each exit of a program means and which events it
//! raises, in both stages where the kind has them.
//!
//! | exit | what it is | events |
//! |---|---|---|
//! | `OUT` to the system-call port from the system-call page, or from a rewritten site | a `SYSCALL` ([`super::vm`], [`super::syscall_sites`]) | `!syscall` (pre: arguments; the call; post: result), then `!sysret` |
//! | `OUT` to a fault port from a stub | an exception ([`super::faults`]) | a hooked `int3`: `!epthook`, `!epthook2` ([`super::hooks`]); else `!exception` (pre; delivery = the signal; post), short-circuit = the instruction is skipped |
//! | MMIO read or write, or an instruction KVM cannot emulate on a watched page | an access to a watched page ([`super::watches`]; handled in `accesses.rs`) | `!monitor` (pre: old memory; the access; post: new memory), short-circuit = the access is dropped |
//! | anything else | the program did what Linux would not allow | the program ends with SIGSEGV |
//!
//! The events' output is only recorded by the exits; the output thread of
//! [`super::vm::Program::run`] formats and writes it. Before the program writes to its
//! standard output or error, what earlier exits recorded goes out, so where both reach
//! the same terminal they show in the order they happened (the output of the `write`'s own
//! `!syscall` events, still being recorded, follows the program's bytes).

use std::sync::Arc;

use hv_core::{Engine, EventKind, EventTable, Exit, Filter};
use hvscript_abi::GuestRegs;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::events::ProgramMemory;
use super::faults::{self, FaultFrame, FAULT_PORT_BASE};
use super::hooks::Hooks;
use super::session::ProgramSession;
use super::syscall_sites::SyscallSites;
use super::syscalls::{Outcome, Process};
use super::vm::{Ending, Space, NAME, PROCESS_RECORD, SYSCALL_PAGE, SYSCALL_PORT, THREAD_RECORD};
use super::watches::Watches;
use crate::vmm::{from_guest_regs, to_guest_regs};

/// The system calls after which the watched frames may have moved: mmap, mprotect,
/// munmap, brk, mremap.
const MAPPING_CALLS: [u64; 5] = [9, 10, 11, 12, 25];

/// The system calls that write to a file descriptor: write, writev.
const WRITE_CALLS: [u64; 2] = [1, 20];

/// A program's vCPU and everything its exits touch.
pub struct Machine<'a> {
    pub vcpu: VcpuFd,
    pub vm: &'a VmFd,
    pub process: Process,
    pub space: Space<'a>,
    pub engine: &'a Engine,
    pub session: &'a ProgramSession,
    pub hooks: Hooks,
    pub watches: Watches,
    pub sites: SyscallSites,
    /// The special registers the VMM set: only the FS base changes (`arch_prctl`).
    pub sregs: kvm_sregs,
    /// Whether KVM syncs the general registers through the run area.
    pub synced: bool,
    /// The event table the hooks and watches were last laid out for.
    table: Option<Arc<EventTable>>,
}

/// An exit, copied out of KVM's run area so the vCPU can be used again.
enum KvmExit {
    Out(u16),
    In(u16),
    MmioRead(u64, usize),
    MmioWrite(u64, usize, [u8; 8]),
    Shutdown,
    Hlt,
    /// KVM's emulator could not run an instruction (on a watched page: SSE, AVX, ...).
    Unemulated,
    Other(String),
}

/// A system call's (or any program exit's) context as hv-core sees it.
pub(super) fn program_exit(kind: EventKind, context: u64, pid: u32) -> Exit {
    let mut e = Exit::new(kind, 0, context);
    (e.pid, e.tid) = (u64::from(pid), u64::from(pid));
    (e.pname, e.process, e.thread) = (NAME, PROCESS_RECORD, THREAD_RECORD);
    e
}

pub(super) fn segv(what: String) -> Result<Option<Ending>, String> {
    Ok(Some(Ending::Signal { signal: 11, what }))
}

impl<'a> Machine<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vcpu: VcpuFd,
        vm: &'a VmFd,
        process: Process,
        space: Space<'a>,
        session: &'a ProgramSession,
        hooks: Hooks,
    ) -> Result<Machine<'a>, String> {
        let sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let mut vcpu = vcpu;
        let synced =
            vcpu.get_kvm_run().kvm_valid_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0;
        Ok(Machine {
            vcpu,
            vm,
            process,
            space,
            engine: &session.engine,
            session,
            hooks,
            watches: Watches::new(),
            sites: SyscallSites::default(),
            sregs,
            synced,
            table: None,
        })
    }

    /// Lays hooks and watches out for the event table as it is now, if it changed, and
    /// tells the session which of its changes are in place. A hook that cannot be placed
    /// clears its event (the session reports why).
    pub fn sync_events(&mut self) -> Result<(), String> {
        let change = self.session.pending();
        let table = self.engine.snapshot();
        if self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, &table)) {
            self.session.synced(change);
            return Ok(());
        }
        let mut wanted: Vec<(u64, u64)> = table
            .events_of(EventKind::EptHook)
            .chain(table.events_of(EventKind::EptHook2))
            .filter(|(_, enabled)| *enabled)
            .filter_map(|(e, _)| match e.spec.filter {
                Filter::Address(a) => Some((a, e.id)),
                _ => None,
            })
            .collect();
        wanted.sort_unstable();
        let stale: Vec<u64> = self
            .hooks
            .addresses()
            .filter(|a| wanted.binary_search_by_key(a, |w| w.0).is_err())
            .collect();
        for addr in stale {
            self.hooks.remove(&mut self.space, addr);
        }
        for &(addr, id) in &wanted {
            // A hooked system call is relocated as itself, not as its rewritten form.
            self.sites.restore(&mut self.space, addr);
            if let Err(why) = self
                .hooks
                .install(&mut self.space, &mut self.process.memory, addr)
            {
                self.session
                    .hook_failed(id, format!("the hook cannot be placed: {why}"));
            }
        }
        self.refresh_watches(&table)?;
        self.table = Some(table);
        self.publish_originals();
        self.session.synced(change);
        Ok(())
    }

    /// Tells the session which code bytes the VMM patched, and what they were.
    fn publish_originals(&mut self) {
        let originals = self
            .hooks
            .originals()
            .chain(self.sites.originals())
            .collect();
        self.session.set_originals(originals);
    }

    fn refresh_watches(&mut self, table: &EventTable) -> Result<(), String> {
        self.watches.refresh(
            table,
            &self.process.memory,
            self.space.mem,
            self.space.tables.root,
            self.vm,
        )?;
        self.process.notes.append(&mut self.watches.notes);
        Ok(())
    }

    pub(super) fn read_regs(&mut self) -> Result<kvm_regs, String> {
        if self.synced {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: `kvm_valid_regs` asked KVM to fill `s.regs` on every exit.
            return Ok(unsafe { run.s.regs.regs });
        }
        self.vcpu
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))
    }

    /// Sets the general registers for the next entry (through the run area when synced).
    pub(super) fn write_regs(&mut self, r: &kvm_regs) -> Result<(), String> {
        if self.synced {
            let run = self.vcpu.get_kvm_run();
            run.s.regs.regs = *r;
            run.kvm_dirty_regs |= u64::from(kvm_bindings::KVM_SYNC_X86_REGS);
            return Ok(());
        }
        self.vcpu
            .set_regs(r)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))
    }

    pub(super) fn view(&self) -> ProgramMemory<'a> {
        ProgramMemory::of_exit(self.space.mem, self.space.tables.root, self.session)
    }

    /// Runs the program to its end.
    pub fn run(&mut self) -> Result<Ending, String> {
        crate::vmm::install_kick_handler();
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() } as u64;
        self.session.set_vcpu_thread(thread);
        self.session.debugger.register_thread(0, Some(thread));
        let ended = self.run_loop();
        self.session.debugger.register_thread(0, None);
        self.session.set_vcpu_thread(0);
        ended
    }

    fn run_loop(&mut self) -> Result<Ending, String> {
        self.sync_events()?;
        loop {
            if self.session.debugger.is_paused() {
                self.debug_stop()?;
            }
            let exit = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, _)) => KvmExit::Out(port),
                Ok(VcpuExit::IoIn(port, _)) => KvmExit::In(port),
                Ok(VcpuExit::MmioRead(addr, data)) => KvmExit::MmioRead(addr, data.len()),
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let mut b = [0u8; 8];
                    let n = data.len().min(8);
                    b[..n].copy_from_slice(&data[..n]);
                    KvmExit::MmioWrite(addr, n, b)
                }
                Ok(VcpuExit::Shutdown) => KvmExit::Shutdown,
                Ok(VcpuExit::Hlt) => KvmExit::Hlt,
                Ok(VcpuExit::InternalError) => KvmExit::Unemulated,
                Ok(other) => KvmExit::Other(format!("{other:?}")),
                Err(e) if e.errno() == libc::EINTR => {
                    // A kick: the session changed the event table.
                    self.sync_events()?;
                    continue;
                }
                Err(e) => return Err(format!("KVM_RUN: {e}")),
            };
            let ended = match exit {
                KvmExit::Out(SYSCALL_PORT) => self.on_syscall()?,
                KvmExit::Out(port) if (FAULT_PORT_BASE..FAULT_PORT_BASE + 32).contains(&port) => {
                    self.on_fault((port - FAULT_PORT_BASE) as u8)?
                }
                KvmExit::MmioWrite(addr, len, data) => {
                    self.on_access(addr, len, Some(u64::from_le_bytes(data)))?
                }
                KvmExit::MmioRead(addr, len) => self.on_access(addr, len, None)?,
                KvmExit::In(port) | KvmExit::Out(port) => {
                    segv(format!("SIGSEGV: port I/O to {port:#x}"))?
                }
                KvmExit::Shutdown => {
                    segv("SIGSEGV: the vCPU shut down (a fault while delivering a fault)".into())?
                }
                KvmExit::Hlt => return Err("the vCPU halted".into()),
                KvmExit::Unemulated => self.on_unemulated()?,
                KvmExit::Other(what) => return Err(format!("unexpected exit: {what}")),
            };
            if let Some(ending) = ended {
                return Ok(ending);
            }
            // Scripts may have enabled, disabled or cleared events.
            self.sync_events()?;
        }
    }

    /// Stops the vCPU while the guest is paused; a console's register changes are
    /// written back (the general registers, RIP and RFLAGS: the program's own).
    fn debug_stop(&mut self) -> Result<(), String> {
        let run = self.vcpu.get_kvm_run();
        let queued = run.kvm_dirty_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0;
        let r = if queued {
            // SAFETY: this thread queued `s.regs` for the next entry: the latest values.
            unsafe { run.s.regs.regs }
        } else {
            self.vcpu
                .get_regs()
                .map_err(|e| format!("KVM_GET_REGS: {e}"))?
        };
        let mut g = to_guest_regs(&r, &self.sregs);
        let root = self.space.tables.root;
        if self.session.debugger.stop(0, &mut g, root) {
            let mut out = r;
            from_guest_regs(&mut out, &g);
            out.rflags = faults::user_rflags(out.rflags);
            self.write_regs(&out)?;
        }
        Ok(())
    }

    /// A `SYSCALL`: `!syscall` around the call, then `!sysret` on the way back.
    fn on_syscall(&mut self) -> Result<Option<Ending>, String> {
        let mut r = self.read_regs()?;
        if r.rip == SYSCALL_PAGE + 2 {
            // The slow way, through LSTAR: rewrite the site so it exits directly next time.
            let site = r.rcx.wrapping_sub(2);
            if self.sites.ran(&mut self.space, &self.process.memory, site) {
                // Scripts, from this exit's on, are shown the SYSCALL that was there.
                self.publish_originals();
            }
        } else if self.sites.is_patched(r.rip.wrapping_sub(2)) {
            // A rewritten site: what SYSCALL itself does.
            (r.rcx, r.r11) = (r.rip, r.rflags);
        } else {
            return segv(format!(
                "SIGSEGV: port I/O at rip {:#x}",
                r.rip.wrapping_sub(2)
            ));
        }
        let nr = r.rax;
        // The events' output before a write to the program's terminal goes out before the
        // bytes (on a terminal both streams are the user's, and the order is what happened):
        // the output of earlier exits and, with events, of this call's pre stage. Bounded: a
        // consumer stuck on a sink that is not read costs the order, not the program's
        // writes.
        let to_terminal = WRITE_CALLS.contains(&nr) && self.process.files.is_output(r.rdi);
        let events = !self.engine.snapshot().is_empty();
        let outcome = if events {
            // The engine stages the call: pre scripts see (and may change) the number and
            // arguments, the call runs unless one short-circuits (then the scripts' @rax
            // is its result), post scripts see the result.
            let mut g = to_guest_regs(&r, &self.sregs);
            let mut done = None;
            let exit = program_exit(EventKind::Syscall, r.rax, self.process.pid);
            let mut view = self.view();
            let (process, space, engine) = (&mut self.process, &mut self.space, self.engine);
            let output = &self.session.output;
            engine.handle_exit(&exit, &mut g, &mut view, |regs, _| {
                if to_terminal {
                    output.flush_ordered(exit.core);
                }
                let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
                let o = process.syscall(space, regs.rax, args);
                if let Outcome::Return(v) = o {
                    regs.rax = v;
                }
                if matches!(o, Outcome::SetFsBase(_)) {
                    regs.rax = 0;
                }
                done = Some(o);
            });
            from_guest_regs(&mut r, &g);
            match done {
                // Short-circuited: the scripts' @rax is the result.
                None | Some(Outcome::Return(_)) => Outcome::Return(r.rax),
                Some(other) => other,
            }
        } else {
            if to_terminal {
                // No exit of the engine's here; the program runs on core 0.
                self.session.output.flush_ordered(0);
            }
            let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9];
            self.process.syscall(&mut self.space, r.rax, args)
        };
        let result = match outcome {
            Outcome::Exit(status) => return Ok(Some(Ending::Exited(status))),
            Outcome::Signal(signal) => {
                return Ok(Some(Ending::Signal {
                    signal,
                    what: format!("signal {signal} sent by the program to itself"),
                }))
            }
            Outcome::Return(v) => v,
            Outcome::SetFsBase(base) => {
                self.sregs.fs.base = base;
                self.vcpu
                    .set_sregs(&self.sregs)
                    .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
                0
            }
        };
        r.rax = result;
        r.rip = r.rcx;
        r.rflags = faults::user_rflags(r.r11);
        if events {
            // `!sysret`: the return to the program, with the registers it will see
            // (`$context` = the address it returns to); scripts may change them. There is
            // nothing to skip, so a short-circuit changes nothing.
            let mut g = to_guest_regs(&r, &self.sregs);
            let exit = program_exit(EventKind::Sysret, r.rip, self.process.pid);
            let mut view = self.view();
            self.engine.handle_exit(&exit, &mut g, &mut view, |_, _| {});
            from_guest_regs(&mut r, &g);
            r.rflags = faults::user_rflags(r.rflags);
        }
        self.write_regs(&r)?;
        if MAPPING_CALLS.contains(&nr) {
            let table = self.engine.snapshot();
            if table.events_of(EventKind::Monitor).next().is_some() {
                self.refresh_watches(&table)?;
            }
        }
        Ok(None)
    }

    /// A stub's report of `vector`: a hook's `int3`, or the program's own fault.
    pub(super) fn on_fault(&mut self, vector: u8) -> Result<Option<Ending>, String> {
        let stub = self.read_regs()?;
        let frame = FaultFrame::read(self.space.mem, stub.rsp, vector)?;
        if !frame.from_program() {
            return Err(format!(
                "vector {vector} in the VMM's own code at {:#x}",
                frame.rip
            ));
        }
        // The program's registers: the stub changed none but RIP, RSP and RFLAGS.
        let mut user = stub;
        (user.rip, user.rsp, user.rflags) = (frame.rip, frame.rsp, frame.rflags);
        let hooked = frame.rip.wrapping_sub(1);
        if vector == 3 && self.hooks.contains(hooked) {
            user.rip = hooked;
            return self.on_hook(stub, user, frame);
        }
        self.on_exception(vector, stub, user, frame)
    }

    /// Resumes the program with `g` (its registers as scripts left them) at `rip`/`rsp`
    /// through the stub's `iretq`.
    pub(super) fn resume(
        &mut self,
        stub: kvm_regs,
        frame: &FaultFrame,
        g: &GuestRegs,
        rip: u64,
        rsp: u64,
    ) -> Result<Option<Ending>, String> {
        frame.resume_at(self.space.mem, rip, rsp, g.rflags)?;
        let mut r = stub;
        from_guest_regs(&mut r, g);
        // The stub still has to run its `iretq` on its own stack.
        (r.rip, r.rsp, r.rflags) = (stub.rip, stub.rsp, stub.rflags);
        self.write_regs(&r)?;
        Ok(None)
    }

    /// `!epthook` then `!epthook2` at a hooked address (no stages, no short-circuit),
    /// then the hooked instruction runs (or the script's new `@rip` is taken).
    fn on_hook(
        &mut self,
        stub: kvm_regs,
        user: kvm_regs,
        frame: FaultFrame,
    ) -> Result<Option<Ending>, String> {
        let addr = user.rip;
        let mut g = to_guest_regs(&user, &self.sregs);
        for kind in [EventKind::EptHook, EventKind::EptHook2] {
            let exit = program_exit(kind, addr, self.process.pid);
            let mut view = self.view();
            self.engine.handle_exit(&exit, &mut g, &mut view, |_, _| {});
        }
        if g.rip != addr {
            return self.resume(stub, &frame, &g, g.rip, g.rsp);
        }
        let (fs, gs) = (self.sregs.fs.base, self.sregs.gs.base);
        match self.hooks.resume(&mut self.space, addr, &g, fs, gs) {
            Some(next) => self.resume(stub, &frame, &g, next.rip, next.rsp),
            None => segv(format!(
                "SIGSEGV: the hooked call at {addr:#x} has no readable target"
            )),
        }
    }

    /// `!exception`: pre, then delivery (the signal that ends the program) unless a pre
    /// script short-circuited, then post. A short-circuit skips the faulting instruction
    /// (a trap's frame already points past it).
    fn on_exception(
        &mut self,
        vector: u8,
        stub: kvm_regs,
        user: kvm_regs,
        frame: FaultFrame,
    ) -> Result<Option<Ending>, String> {
        // CR2 for #PF, as the program's fault left it.
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let mut g = to_guest_regs(&user, &sregs);
        let exit = program_exit(EventKind::Exception, u64::from(vector), self.process.pid);
        let mut view = self.view();
        let outcome = self.engine.handle_exit(&exit, &mut g, &mut view, |_, _| {});
        let (signal, name) = faults::signal_of(vector);
        let address = if vector == 14 {
            format!(" (address {:#x})", sregs.cr2)
        } else {
            String::new()
        };
        let what = format!(
            "{name}: {} at rip {:#x}{address}",
            crate::vmm::vector_name(vector),
            frame.rip
        );
        if !outcome.short_circuited {
            return Ok(Some(Ending::Signal { signal, what }));
        }
        let rip = if g.rip != user.rip || faults::is_trap(vector) {
            g.rip
        } else {
            let space = &self.space;
            match faults::instruction_at(g.rip, |b| super::syscalls::Guest::read(space, g.rip, b)) {
                Some(i) => i.next_ip(),
                None => {
                    return Ok(Some(Ending::Signal {
                        signal,
                        what: format!(
                            "{what}; !exception's short-circuit could not skip it: no \
                             instruction can be read there"
                        ),
                    }))
                }
            }
        };
        self.resume(stub, &frame, &g, rip, g.rsp)
    }
}
