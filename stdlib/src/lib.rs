//! HyperDbg's built-in script functions, implemented once.
//!
//! The host interpreter calls [`call`] directly; JIT-compiled code reaches the same functions
//! through the runtime's table of built-ins; the hypervisor core links this crate as well.
//! Hence `no_std` + `alloc`, no panics on any input, and no unbounded loops: every string
//! read, copy and spin has a documented bound.
//!
//! The runtime supplies an [`Env`] (guest memory, atomics, output, event control ...). A
//! built-in that must produce a value and cannot (an unreadable address for `poi`, no TSC
//! for `rdtsc`) returns a [`ScriptError`], which ends the script; a statement the context
//! cannot carry out (`event_enable` outside the hypervisor) is reported through
//! [`Env::warn`] and the script goes on, in the spirit of HyperDbg's user-mode
//! `err, ... not possible in user-mode`. Nothing quietly yields 0.
//!
//! Statement-only built-ins (`print`, `event_sc`, ...) return `Ok(0)` from [`call`]; the
//! compiler never uses that value.
#![no_std]

extern crate alloc;

mod atomics;
mod direct;
mod disasm;
mod env;
mod error;
mod events;
mod format_error;
mod formats;
mod memory;
mod printf;
mod printf_format;
#[cfg(test)]
mod printf_format_tests;
mod printf_render;
mod strings;

use alloc::vec::Vec;

use hvscript_abi::{ArgKind, Builtin};

pub use atomics::SPINLOCK_DEFAULT_MAX_WAIT;
pub use direct::{fresh_mapping_id, DirectPage, DIRECT_PAGE_SIZE};
pub use env::{
    AtomicRmw, CallerMemory, Env, EventOp, LbrOp, LocalTime, MemFault, NoCallerMemory, TraceKind,
    Unavailable, DEFAULT_SPIN_BUDGET,
};
pub use error::{Access, ScriptError, Space};
pub use memory::MAX_MEMCPY;
pub use printf::{
    format_printf, parse_format, printf, Conversion, FormatError, FormatErrorKind, FormatSpec,
    Length, MAX_FLOAT_PRECISION, MAX_PRINTF_OUTPUT,
};
pub use printf_format::{cut_warning, ParsedFormat};
pub use strings::MAX_STRING_UNITS;

/// One argument of a built-in call. String literals arrive decoded, without their NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg<'a> {
    Val(u64),
    Str(&'a [u8]),
    WStr(&'a [u16]),
}

/// The arguments of one built-in call, collected on the stack for the usual few (every
/// caller builds one per call, on the script's path) and on the heap past that.
pub struct ArgList<'a> {
    /// `inline[..len]` are initialised while `len <= INLINE`.
    inline: [core::mem::MaybeUninit<Arg<'a>>; ArgList::INLINE],
    len: usize,
    heap: alloc::vec::Vec<Arg<'a>>,
}

impl<'a> ArgList<'a> {
    const INLINE: usize = 8;

    #[inline]
    pub fn new() -> ArgList<'a> {
        ArgList {
            // Left uninitialised: a call writes only the arguments it has.
            inline: [core::mem::MaybeUninit::uninit(); ArgList::INLINE],
            len: 0,
            heap: alloc::vec::Vec::new(),
        }
    }

    #[inline]
    pub fn push(&mut self, arg: Arg<'a>) {
        if self.len < ArgList::INLINE {
            self.inline[self.len].write(arg);
        } else {
            if self.heap.is_empty() {
                let mut heap = alloc::vec::Vec::with_capacity(ArgList::INLINE * 2);
                heap.extend_from_slice(self.inline_args());
                self.heap = heap;
            }
            self.heap.push(arg);
        }
        self.len += 1;
    }

    #[inline]
    fn inline_args(&self) -> &[Arg<'a>] {
        let n = self.len.min(ArgList::INLINE);
        // SAFETY: `push` initialised `inline[..n]`; `MaybeUninit<Arg>` has `Arg`'s layout.
        unsafe { core::slice::from_raw_parts(self.inline.as_ptr().cast::<Arg<'a>>(), n) }
    }

    #[inline]
    pub fn as_slice(&self) -> &[Arg<'a>] {
        if self.len <= ArgList::INLINE {
            self.inline_args()
        } else {
            &self.heap
        }
    }
}

impl Default for ArgList<'_> {
    fn default() -> Self {
        ArgList::new()
    }
}

/// Reports that built-in `b` could not do its work here; the script continues.
pub(crate) fn warn_unavailable(env: &mut dyn Env, b: Builtin, reason: &str) {
    let msg = alloc::format!("{}: unavailable: {reason}", b.name());
    env.warn(&msg);
}

/// Checks `args` against the call shape of `b` (the compiler already did; this guards the
/// runtime against a buggy caller without panicking).
fn check_args(b: Builtin, args: &[Arg<'_>]) -> Result<(), ScriptError> {
    let shape = b.shape();
    let (min, max) = (shape.min_args(), shape.max_args());
    if args.len() < min || max.is_some_and(|m| args.len() > m) {
        return Err(ScriptError::ArgCount {
            builtin: b,
            min,
            max,
            got: args.len(),
        });
    }
    for (index, a) in args.iter().enumerate() {
        let expected = shape.arg_kind(index);
        let ok = matches!(
            (expected, a),
            (ArgKind::Value, Arg::Val(_))
                | (ArgKind::NarrowStrOrValue, Arg::Val(_) | Arg::Str(_))
                | (ArgKind::WideStrOrValue, Arg::Val(_) | Arg::WStr(_))
                | (ArgKind::Format, Arg::Str(_))
        );
        if !ok {
            return Err(ScriptError::ArgKind {
                builtin: b,
                index,
                expected,
            });
        }
    }
    Ok(())
}

/// Whether `b` is one of `poi dq dd dw db` (one value: the address) or `eb ed eq` (two:
/// the address and the value), the guest-memory built-ins [`call_virtual_memory`] serves.
pub fn is_virtual_memory(b: Builtin) -> bool {
    use Builtin::*;
    matches!(b, Poi | Dq | Dd | Dw | Db | Eb | Ed | Eq)
}

/// `poi dq dd dw db` at `addr`, or `eb ed eq` of `value` at `addr`, as [`call`] does them
/// but without an argument list to build and check: what an interpreter calls for the
/// guest-memory reads and writes event scripts make most. Any other built-in is refused.
pub fn call_virtual_memory(
    b: Builtin,
    env: &mut dyn Env,
    addr: u64,
    value: u64,
) -> Result<u64, ScriptError> {
    use Builtin::*;
    let virt = Space::Virtual;
    match b {
        Poi | Dq => memory::read_uint(env, b, virt, addr, 8),
        Dd => memory::read_uint(env, b, virt, addr, 4),
        Dw => memory::read_uint(env, b, virt, addr, 2),
        Db => memory::read_uint(env, b, virt, addr, 1),
        Eb => Ok(memory::write_uint(env, b, virt, addr, 1, value)),
        Ed => Ok(memory::write_uint(env, b, virt, addr, 4, value)),
        Eq => Ok(memory::write_uint(env, b, virt, addr, 8, value)),
        _ => Err(ScriptError::NotCallable {
            builtin: b,
            reason: "not a guest-memory read or write of values",
        }),
    }
}

/// Calls built-in `b`. Returns its value (0 for statement-only built-ins).
pub fn call(b: Builtin, env: &mut dyn Env, args: &[Arg<'_>]) -> Result<u64, ScriptError> {
    use Builtin::*;
    check_args(b, args)?;
    // After `check_args`, every `Value` position holds an `Arg::Val`.
    let v = |i: usize| match args.get(i) {
        Some(Arg::Val(x)) => *x,
        _ => 0,
    };
    let (virt, phys) = (Space::Virtual, Space::Physical);
    match b {
        Poi | Dq | Dd | Dw | Db | Eb | Ed | Eq => call_virtual_memory(b, env, v(0), v(1)),
        Hi => memory::hi(env, b, virt, v(0)),
        Low => memory::low(env, b, virt, v(0)),
        PoiPa | DqPa => memory::read_uint(env, b, phys, v(0), 8),
        DdPa => memory::read_uint(env, b, phys, v(0), 4),
        DwPa => memory::read_uint(env, b, phys, v(0), 2),
        DbPa => memory::read_uint(env, b, phys, v(0), 1),
        HiPa => memory::hi(env, b, phys, v(0)),
        LowPa => memory::low(env, b, phys, v(0)),
        EbPa => Ok(memory::write_uint(env, b, phys, v(0), 1, v(1))),
        EdPa => Ok(memory::write_uint(env, b, phys, v(0), 4, v(1))),
        EqPa => Ok(memory::write_uint(env, b, phys, v(0), 8, v(1))),
        CheckAddress => memory::check_address(env, v(0)),
        Memcpy => memory::memcpy(env, b, virt, v(0), v(1), v(2)).map(|()| 0),
        MemcpyPa => memory::memcpy(env, b, phys, v(0), v(1), v(2)).map(|()| 0),
        VirtualToPhysical | PhysicalToVirtual => memory::translate(env, b, v(0)),
        Reference => Err(ScriptError::NotCallable {
            builtin: b,
            reason: "the compiler turns reference(x) into &x; it has no run-time form",
        }),

        Neg => Ok(v(0).wrapping_neg()),
        Not => Ok(!v(0)),

        Strlen => strings::strlen(env, b, &args[0], false),
        Wcslen => strings::strlen(env, b, &args[0], true),
        Strcmp => strings::strcmp(env, b, &args[0], &args[1], false, None),
        Wcscmp => strings::strcmp(env, b, &args[0], &args[1], true, None),
        Strncmp => strings::strcmp(env, b, &args[0], &args[1], false, Some(v(2))),
        Wcsncmp => strings::strcmp(env, b, &args[0], &args[1], true, Some(v(2))),
        Memcmp => strings::memcmp(env, &args[0], &args[1], v(2)),

        InterlockedExchange => atomics::exchange(env, v(0), v(1)),
        InterlockedExchangeAdd => atomics::exchange_add(env, v(0), v(1)),
        InterlockedIncrement => atomics::step(env, b, v(0), 1),
        InterlockedDecrement => atomics::step(env, b, v(0), u64::MAX),
        InterlockedCompareExchange => atomics::compare_exchange(env, v(0), v(1), v(2)),
        SpinlockLock => atomics::lock(env, b, v(0), SPINLOCK_DEFAULT_MAX_WAIT).map(|()| 0),
        // HyperDbg's MaxWait is an `unsigned`: the low 32 bits.
        SpinlockLockCustomWait => atomics::lock(env, b, v(0), v(1) as u32).map(|()| 0),
        SpinlockUnlock => atomics::unlock(env, v(0)).map(|()| 0),

        Print => {
            printf::print(env, v(0));
            Ok(0)
        }
        Formats => {
            formats::formats(env, v(0));
            Ok(0)
        }
        Printf => {
            let fmt = match args[0] {
                Arg::Str(s) => s,
                _ => &[],
            };
            // Most calls have a few arguments: no allocation for them.
            let mut few = [0u64; 16];
            let many: Vec<u64>;
            let values = match args.len().saturating_sub(1) {
                n if n <= few.len() => {
                    for (i, slot) in few[..n].iter_mut().enumerate() {
                        *slot = v(i + 1);
                    }
                    &few[..n]
                }
                _ => {
                    many = (1..args.len()).map(v).collect();
                    &many[..]
                }
            };
            printf::printf(env, fmt, values).map(|()| 0)
        }
        TestStatement => {
            env.test_statement(v(0));
            Ok(0)
        }

        EventEnable => {
            events::control(env, b, EventOp::Enable, v(0));
            Ok(0)
        }
        EventDisable => {
            events::control(env, b, EventOp::Disable, v(0));
            Ok(0)
        }
        EventClear => {
            events::control(env, b, EventOp::Clear, v(0));
            Ok(0)
        }
        EventSc => {
            events::short_circuit(env, v(0));
            Ok(0)
        }
        EventInject => events::inject(env, b, v(0), v(1), None).map(|()| 0),
        EventInjectErrorCode => events::inject(env, b, v(0), v(1), Some(v(2))).map(|()| 0),
        Pause => {
            events::pause(env);
            Ok(0)
        }
        Flush => {
            events::flush(env);
            Ok(0)
        }
        EventTraceStep | EventTraceStepIn => {
            events::trace(env, b, TraceKind::StepIn);
            Ok(0)
        }
        EventTraceStepOut => {
            events::trace(env, b, TraceKind::StepOut);
            Ok(0)
        }
        EventTraceInstrumentationStep | EventTraceInstrumentationStepIn => {
            events::trace(env, b, TraceKind::InstrumentationStepIn);
            Ok(0)
        }

        Rdtsc | Rdtscp => events::tsc(env, b),
        Microsleep => {
            events::microsleep(env, v(0));
            Ok(0)
        }

        LbrSave => Ok(events::lbr(env, b, LbrOp::Save)),
        LbrDump | LbrPrint => Ok(events::lbr(env, b, LbrOp::Print)),
        LbrRestore => Ok(events::lbr(env, b, LbrOp::Restore)),
        LbrCheck => Ok(events::lbr(env, b, LbrOp::Check)),
        LbrRestoreByFilter => Ok(events::lbr(env, b, LbrOp::RestoreByFilter(v(0)))),

        DisassembleLen | DisassembleLen64 => disasm::disassemble_len(env, b, v(0), true),
        DisassembleLen32 => disasm::disassemble_len(env, b, v(0), false),
    }
}

#[cfg(test)]
mod arg_list_tests {
    use super::{Arg, ArgList};

    #[test]
    fn keeps_every_argument_in_order_on_the_stack_and_past_it() {
        for n in [0usize, 1, 8, 9, 17] {
            let mut list = ArgList::new();
            for i in 0..n {
                list.push(if i % 3 == 1 {
                    Arg::Str(b"s")
                } else {
                    Arg::Val(i as u64)
                });
            }
            let got = list.as_slice();
            assert_eq!(got.len(), n);
            for (i, a) in got.iter().enumerate() {
                let want = if i % 3 == 1 {
                    Arg::Str(b"s")
                } else {
                    Arg::Val(i as u64)
                };
                assert_eq!(*a, want, "argument {i} of {n}");
            }
        }
    }
}
