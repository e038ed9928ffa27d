//! A freestanding host for hv-core + the runtime: no std, no libc, no start files — the
//! proof (issue 15) that a bare-metal hypervisor can run compiled scripts with these two
//! crates and nothing else of hvscript.
//!
//! It reads a code object from stdin (raw `read` system calls), loads it into executable
//! memory it maps itself ([`sys::SyscallMemory`]), attaches it to `!cpuid stage all`, and
//! dispatches one CPUID exit through [`hv_core::Engine::handle_exit`] with a tiny guest
//! ([`guest::StaticGuest`], guest memory at 0x1000 over a static buffer). The exit status
//! says what happened: 0 only if everything the driving test expects held (see
//! [`check`]), a distinct code per failed check otherwise, with a line on stderr.
//!
//! What the program supplies because there is no OS library: `_start`, the allocator, the
//! panic handler, `mem*` and the system calls ([`sys`]).

#![no_std]
#![no_main]

extern crate alloc;

mod guest;
mod rt;
mod sys;

use alloc::sync::Arc;
use alloc::vec::Vec;

use hv_core::{parse_event_command, CodeScript, Engine, EventKind, Exit, OutputSink, Stage};
use hvscript_abi::GuestRegs;
use hvscript_runtime::{GlobalSlots, Limits, LoadedCode};

use crate::guest::StaticGuest;
use crate::sys::SyscallMemory;

/// What the script printed, in order.
struct Captured(spin::Mutex<Vec<u8>>);

impl OutputSink for Captured {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, text: &[u8]) {
        self.0.lock().extend_from_slice(text);
    }
}

/// Fails with `code` (and says why on stderr) unless `ok`.
fn check(ok: bool, code: i32, what: &str) {
    if !ok {
        sys::write(2, b"freestanding: check failed: ");
        sys::write(2, what.as_bytes());
        sys::write(2, b"\n");
        sys::exit(code);
    }
}

/// Called by `_start` with the stack 16-byte aligned; never returns.
extern "C" fn main() -> ! {
    let bytes = sys::read_all(0);
    let code = match LoadedCode::<SyscallMemory>::from_bytes(&bytes) {
        Ok(code) => code,
        Err(e) => {
            sys::write(
                2,
                alloc::format!("freestanding: load failed: {e}\n").as_bytes(),
            );
            sys::exit(10)
        }
    };
    check(
        !code.object().calls_event_sc(),
        11,
        "the usage sets say no event_sc",
    );
    let limits = Limits {
        fuel: 10_000,
        max_call_depth: 16,
        stack_slots: 256,
    };
    let script = CodeScript::new(code, Arc::new(GlobalSlots::default()), limits);

    let sink = Arc::new(Captured(spin::Mutex::new(Vec::new())));
    let engine = Engine::new(sink.clone());
    let spec = match parse_event_command("!cpuid stage all") {
        Ok(spec) => spec,
        Err(_) => sys::exit(12),
    };
    check(
        engine.add(spec, Some(Arc::new(script))).is_ok(),
        13,
        "the event is added",
    );

    let mut regs = GuestRegs {
        rax: 1,
        ..GuestRegs::default()
    };
    let mut guest = StaticGuest::new();
    let mut emulated = false;
    let outcome = engine.handle_exit(
        &Exit::new(EventKind::Cpuid, 0, 1),
        &mut regs,
        &mut guest,
        |regs, _| {
            // CPUID leaf 1's emulation, as far as the script can tell.
            emulated = true;
            regs.rax = 0x1234;
        },
    );

    check(emulated, 20, "the emulation ran");
    check(
        !outcome.short_circuited && outcome.pre_executions == 1 && outcome.post_executions == 1,
        21,
        "one pre and one post execution",
    );
    check(
        *sink.0.lock() == b"stage 0 rax=1\nstage 1 rax=1234\n"[..],
        22,
        "the script printed $stage 0 then 1 with the guest's rax",
    );
    // The script shifts ($stage + 1) into rbx each time: 0x1 in pre, then 0x102.
    check(regs.rbx == 0x102, 23, "rbx records stage 0 then stage 1");
    check(
        guest.read_u64(0x1000) == Some(0x1234),
        24,
        "the post stage stored the emulated rax into guest memory",
    );
    sys::exit(0)
}
