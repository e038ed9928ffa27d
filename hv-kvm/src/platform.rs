//! [`KvmPlatform`]: hv-kvm's rules for event commands, as data a front end checks scripts
//! against before compiling and the VM checks code objects against when it loads them
//! ([`hv_core::Platform`]):
//!
//! - event kinds this KVM cannot intercept are refused ([`refusal`], spec/kvm.md) rather
//!   than faked;
//! - register writes hv-kvm cannot apply: segment selectors, LDTR and TR (KVM loads a
//!   selector only with its hidden descriptor, and hv-kvm does not emulate a segment load);
//! - debug registers, read or written: hv-kvm owns DR0..DR7 (execute hooks and `!cpuid`
//!   stepping use them) and does not expose the guest's, except that a `!monitor` script
//!   sees the access's data in `@dr0` and its length in `@dr1` (`vmm::exits::monitor`);
//! - pseudo-registers the guest has no notion of: the demo guest has no processes or
//!   threads, so `$pid $tid $pname $proc $thread $peb $teb` have no value, and `pid`
//!   cannot filter.
//!
//! General registers, RIP, RFLAGS, CR0/CR2/CR3/CR4/CR8 and the GDTR/IDTR bases are applied
//! (the last two through `KVM_SET_SREGS`).

use hv_core::{EventKind, Platform};
use hvscript_abi::{PseudoReg, Register};
use hvscript_runtime::Limits;

/// Fuel for one execution (loop iterations plus calls): `while (1) {}` ends with an error.
pub const SCRIPT_FUEL: u64 = 100_000;

/// The limits of one event execution (and what `check` checks event scripts against).
pub const EVENT_LIMITS: Limits = Limits {
    fuel: SCRIPT_FUEL,
    max_call_depth: 64,
    stack_slots: 256,
};

/// The limits of one `? SCRIPT` evaluation: it runs outside any exit, so it may use more
/// stack.
pub const EVAL_LIMITS: Limits = Limits {
    fuel: SCRIPT_FUEL,
    max_call_depth: 64,
    stack_slots: 0x4000,
};

/// hv-kvm's [`Platform`] (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmPlatform;

impl Platform for KvmPlatform {
    fn name(&self) -> &str {
        "hv-kvm"
    }

    fn refusal(&self, kind: EventKind) -> Option<&str> {
        refusal(kind)
    }

    /// GuestRegs slots (abi::regs): 18..=23 segment selectors, 29..=34 DR0..DR7, 37 LDTR,
    /// 38 TR.
    fn register_refusal(&self, kind: EventKind, reg: Register, write: bool) -> Option<String> {
        let slot = reg.field().slot;
        let name = reg.name();
        match slot {
            18..=23 | 37 | 38 if write => Some(format!(
                "hv-kvm cannot apply a write to @{name}: KVM loads a selector only together \
                 with its hidden descriptor, and hv-kvm does not emulate a segment load"
            )),
            29 | 30 if kind == EventKind::Monitor => None,
            29..=34 => Some(format!(
                "@{name} is not available to scripts on hv-kvm: the VMM owns the debug \
                 registers (execute hooks and !cpuid stepping use them){}",
                if slot <= 30 {
                    "; only a !monitor script has @dr0/@dr1, the access's data and length"
                } else {
                    ""
                }
            )),
            _ => None,
        }
    }

    fn pseudo_refusal(&self, reg: PseudoReg) -> Option<String> {
        use PseudoReg::*;
        matches!(reg, Pid | Tid | Pname | Proc | Thread | Peb | Teb).then(|| {
            format!(
                "${} has no value on hv-kvm's demo guest: it has no processes or threads",
                reg.name()
            )
        })
    }

    fn pid_refusal(&self) -> Option<(String, String)> {
        Some((
            "`pid` cannot filter on hv-kvm's demo guest: it has no processes".into(),
            "use `core N` to filter by vCPU".into(),
        ))
    }

    fn builtin_refusal(&self, b: hvscript_abi::Builtin) -> Option<String> {
        trace_refusal(b)
    }

    fn event_limits(&self) -> Limits {
        EVENT_LIMITS
    }

    fn eval_limits(&self) -> Limits {
        EVAL_LIMITS
    }
}

/// Why `event_trace_step`, `_step_in` and `_step_out` are refused on both guests.
pub fn trace_refusal(b: hvscript_abi::Builtin) -> Option<String> {
    use hvscript_abi::Builtin::*;
    matches!(b, EventTraceStep | EventTraceStepIn | EventTraceStepOut).then(|| {
        format!(
            "{}() cannot step here: the guests' code runs at CPL3, where this KVM does not \
             single-step (KVM_GUESTDBG_SINGLESTEP does nothing), and the trap-flag steps \
             hv-kvm takes for !cpuid are not instructions a paused debugger can stop between",
            b.name()
        )
    })
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
    KvmPlatform.raised_kinds()
}
