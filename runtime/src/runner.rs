//! Running loaded code: [`Runner`] over a [`CodeImage`].
//!
//! The JIT (`hvscript-jit`) turns a script into native functions of type [`EntryFn`] that
//! reach everything through an [`ExecCtx`]. This module is the runtime side of that
//! contract: it builds an `ExecCtx` from an [`Invocation`] (with the built-in table and
//! memory entry of [`crate::builtins`]), calls the script's body, and turns the error state
//! compiled code leaves in the context into a [`RunError`] with the same kind and message
//! the interpreter produces, located by the code object's site table (byte offsets).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt;

use hvscript_abi::{EntryFn, ExecCtx, ExecError, MemoryFn};

use crate::builtins::{memory_access, HostState, BUILTINS};
use crate::invocation::{Invocation, RunStats};
use crate::run_error::{RunError, RunErrorKind};
use crate::scalar::{NumTy, ScalarTy};
use crate::source_range::SourceRange;
use crate::tlb::{OwnMemory, Tlb};

/// A loaded code object, as the runtime needs it: entry points (function 0 is the
/// script's body), read-only data, the error-site table and the slot counts.
#[derive(Clone, Copy)]
pub struct CodeImage<'a> {
    entries: &'a [EntryFn],
    rodata: &'a [u8],
    sites: &'a [SourceRange],
    main_locals: u32,
    global_slots: u32,
}

impl<'a> CodeImage<'a> {
    /// Describes loaded code.
    ///
    /// # Safety
    /// Every entry must point to executable code compiled for the [`ExecCtx`] contract
    /// (by `hvscript-jit`) together with this `rodata`, and stay valid while the image is
    /// used. `main_locals` must be function 0's local slot count, `sites` the code
    /// object's error-site table (site 0 is the body's span) and `global_slots` one past
    /// the highest global slot the code touches.
    pub unsafe fn new(
        entries: &'a [EntryFn],
        rodata: &'a [u8],
        sites: &'a [SourceRange],
        main_locals: u32,
        global_slots: u32,
    ) -> CodeImage<'a> {
        CodeImage {
            entries,
            rodata,
            sites,
            main_locals,
            global_slots,
        }
    }

    /// The table compiled code calls its own functions through.
    pub fn entries(&self) -> &'a [EntryFn] {
        self.entries
    }
}

/// Why a run did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerError {
    /// The script stopped with an error, as the interpreter reports it (byte offsets for
    /// its span).
    Run(RunError),
    /// The image does not fit this invocation (e.g. more global slots than the table has).
    Incompatible(String),
}

impl fmt::Display for RunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerError::Run(e) => f.write_str(&e.message()),
            RunnerError::Incompatible(m) => write!(f, "cannot run this code object: {m}"),
        }
    }
}

/// Slots of the last run's stack up to which zeroing is done by plain stores.
const SMALL_DIRTY: usize = 16;

/// Reusable state of runs (the local stack), so repeated runs do not allocate.
#[derive(Default)]
pub struct Runner {
    stack: Vec<u64>,
    /// Slots `dirty..` of the stack are known to be zero.
    dirty: usize,
    /// The guest-memory translation cache compiled code checks inline.
    tlb: Tlb,
}

impl Runner {
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Runs the image's function 0 once, with the interpreter's semantics
    /// (`hvscript_lang::Interpreter::run`).
    ///
    /// Inlined into callers: a run's fixed cost is most of a short script's (7.9 instead
    /// of 11.5 ns for `@rax = 1;` in the `jit_pairs` bench).
    #[inline]
    pub fn run(
        &mut self,
        image: &CodeImage<'_>,
        inv: &mut Invocation<'_>,
    ) -> Result<RunStats, RunnerError> {
        let Some(&main) = image.entries.first() else {
            return Err(RunnerError::Incompatible(
                "the code object has no functions".into(),
            ));
        };
        let Some(&main_span) = image.sites.first() else {
            return Err(RunnerError::Incompatible(
                "the code object has no error sites".into(),
            ));
        };
        let globals = inv.globals.slots();
        if image.global_slots as usize > globals.len() {
            return Err(RunnerError::Incompatible(format!(
                "it uses {} global slots, the table has {}",
                image.global_slots,
                globals.len()
            )));
        }
        let limits = inv.limits;
        let slots = limits.stack_slots;
        // The interpreter starts every run with a zeroed stack; zero what the last run used.
        if self.stack.len() != slots {
            self.stack = vec![0; slots];
        } else {
            let dirty = self.dirty.min(slots);
            if dirty <= SMALL_DIRTY {
                // A few stores beat a call to memset, which `fill` becomes (1.5 ns a run).
                for slot in &mut self.stack[..dirty] {
                    // SAFETY: `slot` is a valid, aligned `&mut u64`; volatile only keeps the
                    // loop from being turned back into a memset call.
                    unsafe { core::ptr::write_volatile(slot, 0) };
                }
            } else {
                self.stack[..dirty].fill(0);
            }
        }
        self.dirty = 0;
        let fail = |kind| {
            Err(RunnerError::Run(RunError {
                kind,
                range: main_span,
            }))
        };
        if limits.max_call_depth == 0 {
            return fail(RunErrorKind::CallDepth(0));
        }
        if image.main_locals as usize > slots {
            return fail(RunErrorKind::StackExhausted(slots));
        }

        let own = OwnMemory {
            stack: (self.stack.as_ptr() as u64, slots as u64 * 8),
            globals: (globals.as_ptr() as u64, globals.len() as u64 * 8),
        };
        self.tlb.begin_run(own, || inv.host.mapping_id());
        let tlb = &self.tlb;
        let mut host = HostState {
            env: &mut *inv.host,
            globals,
            rodata: image.rodata,
            error: None,
            memory_fault: None,
            tlb,
        };
        let mut ctx = ExecCtx {
            regs: &mut *inv.regs,
            pseudo: inv.pseudo,
            globals: globals.as_ptr() as *mut u64,
            global_count: globals.len() as u64,
            stack: self.stack.as_mut_ptr(),
            stack_slots: slots as u64,
            sp: 0,
            stack_high: image.main_locals as u64,
            rodata: image.rodata.as_ptr(),
            rodata_len: image.rodata.len() as u64,
            builtins: BUILTINS.as_ptr(),
            functions: image.entries.as_ptr(),
            host: &mut host as *mut HostState<'_> as *mut c_void,
            fuel_left: limits.fuel,
            depth: 1,
            depth_limit: limits.max_call_depth,
            error_kind: 0,
            error_site: 0,
            error_value: 0,
            memory: Some(memory_access as MemoryFn),
            tlb: tlb.entries(),
        };
        // SAFETY: `CodeImage::new`'s contract makes `main` compiled code for this
        // context layout. Every pointer in `ctx` is valid for the whole call: registers,
        // pseudo-registers and globals borrow from `inv`, the stack is `self.stack` (not
        // touched otherwise until the call returns), rodata and the entry table borrow
        // from the image, the built-in table is static, `host` lives on this frame, and the
        // translation cache is `self.tlb`, written only by the runtime's callbacks.
        unsafe { main(&mut ctx) };
        self.dirty = (ctx.stack_high as usize).min(slots);
        let fuel_used = limits.fuel.saturating_sub(ctx.fuel_left);
        let kind = match ExecError::from_u32(ctx.error_kind) {
            Some(ExecError::None) => return Ok(RunStats { fuel_used }),
            Some(ExecError::Builtin) => match host.error.take() {
                Some(e) => RunErrorKind::Builtin(e),
                None => {
                    return Err(RunnerError::Incompatible(
                        "a built-in failed without an error".into(),
                    ))
                }
            },
            Some(ExecError::DivisionByZero) => RunErrorKind::DivisionByZero,
            Some(ExecError::DivisionOverflow) => RunErrorKind::DivisionOverflow(NumTy::I64),
            Some(ExecError::DivisionOverflow32) => RunErrorKind::DivisionOverflow(NumTy::I32),
            Some(ExecError::ShiftCount) => RunErrorKind::ShiftCount {
                count: ctx.error_value,
                bits: 64,
            },
            Some(ExecError::ShiftCount32) => RunErrorKind::ShiftCount {
                count: ctx.error_value,
                bits: 32,
            },
            Some(ExecError::FloatRange) => RunErrorKind::FloatRange,
            Some(ExecError::FloatConversion) => match ScalarTy::from_code(ctx.error_value) {
                Some(to) => RunErrorKind::FloatConversion { to },
                None => {
                    return Err(RunnerError::Incompatible(format!(
                        "unknown conversion target {}",
                        ctx.error_value
                    )))
                }
            },
            Some(ExecError::Memory) => match host.memory_fault.take() {
                // The range is filled in from the site below.
                Some(f) => RunErrorKind::memory(f.addr, f.len, f.write, f.fault),
                None => {
                    return Err(RunnerError::Incompatible(format!(
                        "a memory access at {:#x} failed without an error",
                        ctx.error_value
                    )))
                }
            },
            Some(ExecError::FuelExhausted) => RunErrorKind::FuelExhausted(limits.fuel),
            Some(ExecError::CallDepth) => RunErrorKind::CallDepth(limits.max_call_depth),
            Some(ExecError::StackExhausted) => RunErrorKind::StackExhausted(slots),
            None => {
                return Err(RunnerError::Incompatible(format!(
                    "unknown error kind {}",
                    ctx.error_kind
                )))
            }
        };
        match image.sites.get(ctx.error_site as usize) {
            Some(&range) => Err(RunnerError::Run(RunError { kind, range })),
            None => Err(RunnerError::Incompatible(format!(
                "error site {} is not in the site table",
                ctx.error_site
            ))),
        }
    }
}
