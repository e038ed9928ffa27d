//! The event-table side of [`Vm`]: adding events and enabling, disabling or clearing
//! them while the guest runs, and publishing what the exit paths read from the table:
//! the kinds that have events, the MSR filter (`exits::msr`), the `!monitor` watches and
//! memory slots ([`crate::monitor`]), and the execute hooks (`exits::epthook`). Changes
//! that a vCPU must see before it runs guest code again park every vCPU outside
//! `KVM_RUN` while they are made ([`Vm::with_vcpus_parked`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_core::{CommandError, EventKind, Filter, Platform, Prepared, Target};
use hvscript_stdlib::EventOp;
use kvm_bindings::KVM_MEM_READONLY;
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};

use crate::monitor::{self, Slot, Watch};
use crate::platform::KvmPlatform;
use crate::vmm::{kick_signal, kind_bit, Vm, VmError, MAX_HOOKS, MODELLED_MSRS, SYSCALL_MSRS};

/// A parsed event command with its loaded script.
struct Compiled {
    spec: hv_core::EventSpec,
    script: Option<Arc<dyn hv_core::Script>>,
}

impl Vm {
    /// Adds an event command with what a front end compiled for it ([`Prepared`]): parses
    /// the line, refuses what this KVM cannot raise, loads the script (`crate::loading`);
    /// works while the guest runs.
    pub fn add_event(&self, line: &str, prepared: &Prepared) -> Result<u64, CommandError> {
        let spec = hv_core::parse_event_command_with(line, &self.symbols())
            .map_err(|e| CommandError::new(e.message, e.start, e.end, e.help))?;
        hv_core::platform::check_event(&KvmPlatform, line, &spec)?;
        let script = self.load_script(
            line,
            spec.script.as_ref(),
            Some(spec.kind),
            prepared,
            KvmPlatform.event_limits(),
        )?;
        let compiled = Compiled { spec, script };
        let whole_line = |msg: String| CommandError::whole(line, msg);
        if compiled.spec.kind == EventKind::Monitor {
            if !self.readonly_mem {
                return Err(whole_line(
                    "!monitor cannot be raised by hv-kvm: this KVM lacks KVM_CAP_READONLY_MEM"
                        .into(),
                ));
            }
            self.monitor_watch(&compiled.spec.filter)
                .map_err(|why| whole_line(format!("!monitor cannot watch this range: {why}")))?;
        }
        if let (EventKind::EptHook | EventKind::EptHook2, Filter::Address(addr)) =
            (compiled.spec.kind, &compiled.spec.filter)
        {
            let name = compiled.spec.kind.command();
            self.hook_check(*addr)
                .map_err(|why| whole_line(format!("!{name} cannot hook {addr:#x}: {why}")))?;
        }
        let outputs = compiled.spec.options.output.clone();
        let immediate = compiled.spec.options.immediate;
        if let Err(why) = self.output.check_names(&outputs) {
            let at = line.find("output").unwrap_or(0);
            return Err(CommandError::new(
                why,
                at,
                at + "output".len(),
                Some("output create NAME file|tcp|namedpipe ADDRESS, then output open NAME".into()),
            ));
        }
        let _g = self.events_lock.lock().unwrap_or_else(|e| e.into_inner());
        let kind = compiled.spec.kind;
        let post = compiled.spec.options.stage.runs_post();
        // Publish the exit paths before the event so no exit of the new kind is missed.
        self.kinds.fetch_or(kind_bit(kind), Ordering::SeqCst);
        if post {
            self.post_kinds.fetch_or(kind_bit(kind), Ordering::SeqCst);
        }
        let id = self
            .engine
            .add(compiled.spec, compiled.script)
            .map_err(|e| whole_line(e.to_string()))?;
        self.output.route(id, &outputs, immediate);
        if let Err(e) = self
            .update_msr_filter()
            .and_then(|()| self.update_watches())
            .and_then(|()| self.update_hooks())
        {
            let _ = self.engine.apply(EventOp::Clear, Target::Id(id));
            self.republish_kinds();
            let _ = self.update_watches();
            let _ = self.update_hooks();
            return Err(whole_line(e.to_string()));
        }
        Ok(id)
    }

    /// `events e|d|c`: enables, disables or clears events.
    pub fn apply(&self, op: EventOp, target: Target) -> Result<usize, hv_core::EngineError> {
        let _g = self.events_lock.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<u64> = match (op, target) {
            (EventOp::Clear, Target::All) => self.engine.list().iter().map(|l| l.id).collect(),
            (EventOp::Clear, Target::Id(id)) => vec![id],
            _ => Vec::new(),
        };
        let n = self.engine.apply(op, target)?;
        if !before.is_empty() {
            // What cleared events recorded goes out by their routes before those go.
            self.engine.drain_output();
        }
        for id in before {
            self.output.unroute(id);
        }
        self.republish_kinds();
        let _ = self.update_msr_filter();
        let _ = self.update_watches();
        let _ = self.update_hooks();
        Ok(n)
    }

    /// Recomputes [`Vm::kinds`] from the enabled events, after the engine published its
    /// table (an exit that still sees a cleared kind's bit finds no event of it in the
    /// new table). The caller holds `events_lock`, so no bit an add set is lost.
    fn republish_kinds(&self) {
        let table = self.engine.snapshot();
        let kinds = EventKind::ALL
            .iter()
            .filter(|&&k| table.events_of(k).any(|(_, enabled)| enabled))
            .fold(0, |bits, &k| bits | kind_bit(k));
        self.kinds.store(kinds, Ordering::SeqCst);
    }

    /// The physical watch of a `!monitor` filter on this VM, or why it cannot be watched.
    fn monitor_watch(&self, filter: &Filter) -> Result<Watch, String> {
        let code_end = self.image.load_addr + self.image.code.len() as u64;
        monitor::check(filter, &self.mem, code_end, self.config.vcpus)
    }

    /// The memory slots registered now (for tests and reports).
    pub fn memory_slots(&self) -> Vec<Slot> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn current_watches(&self) -> Arc<Vec<Watch>> {
        self.watches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the memory slots from the enabled `!monitor` events (module `monitor`):
    /// parks the vCPUs while the slots change.
    fn update_watches(&self) -> Result<(), VmError> {
        let mut watches = Vec::new();
        let table = self.engine.snapshot();
        for (e, enabled) in table.events_of(EventKind::Monitor) {
            if enabled {
                if let Ok(w) = self.monitor_watch(&e.spec.filter) {
                    watches.push(w);
                }
            }
        }
        let slots = monitor::layout(self.mem.size() as u64, &monitor::page_modes(&watches));
        let watches = Arc::new(watches);
        if *self.current_watches() == *watches {
            return Ok(());
        }
        if self.memory_slots() == slots {
            *self.watches.write().unwrap_or_else(|e| e.into_inner()) = watches;
            return Ok(());
        }
        self.with_vcpus_parked(|| {
            *self.watches.write().unwrap_or_else(|e| e.into_inner()) = watches;
            self.set_slots(slots)
        })?
    }

    /// Replaces the registered memory slots (every vCPU is outside KVM_RUN).
    fn set_slots(&self, new: Vec<Slot>) -> Result<(), VmError> {
        let mut cur = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let region = |i: usize, s: &Slot, size: u64| {
            let flags = if s.readonly { KVM_MEM_READONLY } else { 0 };
            self.mem.slot(i as u32, s.gpa, size, flags)
        };
        for (i, s) in cur.iter().enumerate() {
            // SAFETY: size 0 deletes slot i; no host memory is handed to KVM.
            unsafe { self.vm.set_user_memory_region(region(i, s, 0)) }
                .map_err(|e| VmError::Setup(format!("deleting memory slot {i}: {e}")))?;
        }
        cur.clear();
        for (i, s) in new.iter().enumerate() {
            // SAFETY: each slot is a page-aligned piece of our own guest RAM mapping, which
            // outlives the VM (field order in `Vm`).
            unsafe { self.vm.set_user_memory_region(region(i, s, s.size)) }
                .map_err(|e| VmError::Setup(format!("memory slot {i} at {:#x}: {e}", s.gpa)))?;
            cur.push(*s);
        }
        Ok(())
    }

    /// Runs `f` while no vCPU is inside KVM_RUN: sets the park flag, kicks every running
    /// vCPU thread out of KVM_RUN with the kick signal (repeated until it parks, since a
    /// signal that lands outside KVM_RUN is not remembered), runs `f`, and releases them.
    fn with_vcpus_parked<R>(&self, f: impl FnOnce() -> R) -> Result<R, VmError> {
        self.park.requested.store(true, Ordering::SeqCst);
        let release = || {
            let _g = self.park.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.park.requested.store(false, Ordering::SeqCst);
            self.park.cv.notify_all();
        };
        if self.running.load(Ordering::SeqCst) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut all = true;
                for cpu in 0..self.config.vcpus {
                    if self.done[cpu].load(Ordering::SeqCst)
                        || self.park.parked[cpu].load(Ordering::SeqCst)
                    {
                        continue;
                    }
                    all = false;
                    let tid = self.thread_ids[cpu].load(Ordering::SeqCst);
                    if tid != 0 {
                        // SAFETY: `tid` is a vCPU thread of the running `run` scope that is
                        // not done (the scope joins threads only after they are done and
                        // `running` is cleared after the join); the handler does nothing.
                        unsafe { libc::pthread_kill(tid as libc::pthread_t, kick_signal()) };
                    }
                }
                if all {
                    break;
                }
                if Instant::now() > deadline {
                    release();
                    return Err(VmError::Setup(
                        "the vCPUs did not park within 5 s; memory slots unchanged".into(),
                    ));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let r = f();
        release();
        Ok(r)
    }

    /// Why an execute hook cannot be placed at `addr`, if it cannot: it must start an
    /// instruction of the guest's kernel code (CPL0: hardware execute breakpoints and
    /// int3 do not exit for CPL3 code on this KVM), that instruction must not leave
    /// CPL0 or exit to the VMM itself (the step over it must end in a step exit), and
    /// at most [`MAX_HOOKS`] distinct addresses may be hooked (DR0..DR3).
    pub fn hook_check(&self, addr: u64) -> Result<(), String> {
        use iced_x86::{Decoder, DecoderOptions, Mnemonic};
        let img = &self.image;
        let code_end = img.load_addr + img.code.len() as u64;
        if (img.user_entry..code_end).contains(&addr) {
            return Err(
                "it is in the guest's user code (CPL3), which runs natively: hardware \
                 execute breakpoints and int3 do not exit at CPL3 on this KVM (spec/kvm.md)"
                    .into(),
            );
        }
        if !(img.load_addr..img.user_entry).contains(&addr) {
            return Err(format!(
                "it is not in the guest's kernel code ({:#x}..{:#x})",
                img.load_addr, img.user_entry
            ));
        }
        let kernel = &img.code[..(img.user_entry - img.load_addr) as usize];
        let mut decoder = Decoder::with_ip(64, kernel, img.load_addr, DecoderOptions::NONE);
        let mut found = None;
        while decoder.can_decode() {
            let insn = decoder.decode();
            if insn.ip() == addr {
                found = Some(insn);
                break;
            }
            if insn.ip() > addr {
                break;
            }
        }
        let Some(insn) = found else {
            return Err("it is not the start of an instruction".into());
        };
        use Mnemonic::*;
        if matches!(
            insn.mnemonic(),
            Iret | Iretd
                | Iretq
                | Sysret
                | Sysretq
                | Sysexit
                | Sysexitq
                | Syscall
                | Ud2
                | In
                | Out
                | Insb
                | Insw
                | Insd
                | Outsb
                | Outsw
                | Outsd
                | Rdmsr
                | Wrmsr
                | Hlt
        ) {
            return Err(format!(
                "`{insn}` leaves kernel mode or exits to the VMM itself, so the step over \
                 it cannot be done"
            ));
        }
        let mut addrs: Vec<u64> = self.hook_events(false);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        if addrs.len() > MAX_HOOKS {
            return Err(format!(
                "at most {MAX_HOOKS} execute hooks exist at once (debug registers DR0..DR3); \
                 hooked now: {}",
                self.hook_events(false)
                    .iter()
                    .map(|a| format!("{a:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// The distinct addresses of the `!epthook`/`!epthook2` events (only the enabled
    /// ones when `enabled_only`), in the order they were added.
    fn hook_events(&self, enabled_only: bool) -> Vec<u64> {
        let table = self.engine.snapshot();
        let mut hooks: Vec<(u64, u64)> = table
            .events_of(EventKind::EptHook)
            .chain(table.events_of(EventKind::EptHook2))
            .filter(|(_, enabled)| *enabled || !enabled_only)
            .filter_map(|(e, _)| match e.spec.filter {
                Filter::Address(a) => Some((e.id, a)),
                _ => None,
            })
            .collect();
        hooks.sort_unstable();
        let mut addrs = Vec::new();
        for (_, a) in hooks {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs
    }

    /// The execute hooks programmed now (debug-register order).
    pub fn hooks(&self) -> Vec<u64> {
        self.hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
    }

    /// Republishes the enabled hooks; while the guest runs, parks every vCPU once so
    /// each reprograms its debug registers (`KVM_SET_GUEST_DEBUG` is a vCPU ioctl: the
    /// vCPU thread does it before its next `KVM_RUN`) before it runs guest code again.
    fn update_hooks(&self) -> Result<(), VmError> {
        let mut addrs = self.hook_events(true);
        addrs.truncate(MAX_HOOKS);
        if *self
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_slice()
            == addrs[..]
        {
            return Ok(());
        }
        *self.hooks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(addrs);
        self.hooks_gen.fetch_add(1, Ordering::SeqCst);
        self.with_vcpus_parked(|| ())
    }

    /// The enabled MSR events' filter: (index or None for "every MSR", read, write).
    fn watched_msrs(&self) -> (BTreeSet<(u32, bool)>, bool, bool) {
        let mut specific = BTreeSet::new();
        let (mut any_read, mut any_write) = (false, false);
        let table = self.engine.snapshot();
        let msr_events = table
            .events_of(EventKind::MsrRead)
            .chain(table.events_of(EventKind::MsrWrite));
        for (e, enabled) in msr_events {
            if !enabled {
                continue;
            }
            let write = e.spec.kind == EventKind::MsrWrite;
            match e.spec.filter {
                Filter::Value(v) => {
                    specific.insert((v as u32, write));
                }
                _ if write => any_write = true,
                _ => any_read = true,
            }
        }
        (specific, any_read, any_write)
    }

    /// Rebuilds the MSR filter from the events (see `exits::msr`).
    pub(super) fn update_msr_filter(&self) -> Result<(), VmError> {
        let (specific, any_read, any_write) = self.watched_msrs();
        static ZEROS: [u8; 0x400] = [0; 0x400];
        static DENY_ONE: [u8; 1] = [0];
        // Guest accesses of the SYSCALL MSRs always exit: the VMM's model (`exits::syscall`).
        let mut ranges = vec![MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: *SYSCALL_MSRS.start(),
            msr_count: SYSCALL_MSRS.end() - SYSCALL_MSRS.start() + 1,
            bitmap: &DENY_ONE,
        }];
        let mut any_flags = MsrFilterRangeFlags::empty();
        if any_read {
            any_flags |= MsrFilterRangeFlags::READ;
        }
        if any_write {
            any_flags |= MsrFilterRangeFlags::WRITE;
        }
        if !any_flags.is_empty() {
            for base in [0u32, 0xc000_0000] {
                ranges.push(MsrFilterRange {
                    flags: any_flags,
                    base,
                    msr_count: 0x2000,
                    bitmap: &ZEROS,
                });
            }
        }
        for &(msr, write) in &specific {
            if MODELLED_MSRS.contains(&msr) {
                continue; // unknown to KVM: exits anyway
            }
            ranges.push(MsrFilterRange {
                flags: if write {
                    MsrFilterRangeFlags::WRITE
                } else {
                    MsrFilterRangeFlags::READ
                },
                base: msr,
                msr_count: 1,
                bitmap: &DENY_ONE,
            });
        }
        if ranges.len() > 16 {
            return Err(VmError::Setup(
                "too many distinct MSRs watched: KVM's MSR filter holds 16 ranges".into(),
            ));
        }
        self.vm
            .set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
            .map_err(|e| VmError::Setup(format!("KVM_X86_SET_MSR_FILTER: {e}")))
    }
}
