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
use crate::invocation::{Invocation, Limits, RunStats};
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

/// Slots of the last run's stack up to which zeroing is a few fixed-size stores.
const SMALL_DIRTY: usize = 16;

/// Reusable state of runs, so repeated runs do not allocate and write little: the local
/// stack, the translation cache, and the context compiled code gets, kept between runs.
pub struct Runner {
    /// The context of the last run. What stays the same from run to run (the built-in
    /// table, the memory function, the stack) is written once; a run writes the rest.
    /// Between runs its pointers are stale and never dereferenced.
    ctx: ExecCtx,
    stack: Vec<u64>,
    /// Slots `dirty..` of the stack are known to be zero.
    dirty: usize,
    /// The guest-memory translation cache compiled code checks inline.
    tlb: Tlb,
}

// SAFETY: the raw pointers in `ctx` point into this runner's own heap allocations (the
// stack), to statics (the built-in table), or are stale values from the last run that
// `run` rewrites before compiled code can use them; nothing is shared with another thread.
unsafe impl Send for Runner {}

impl Default for Runner {
    fn default() -> Runner {
        let mut ctx = ExecCtx::empty();
        ctx.builtins = BUILTINS.as_ptr();
        ctx.memory = Some(memory_access as MemoryFn);
        ctx.depth = 1;
        // Empty, but a valid (dangling, aligned) pointer for a zero-slot stack.
        let mut stack = Vec::new();
        ctx.stack = stack.as_mut_ptr();
        Runner {
            ctx,
            stack,
            dirty: 0,
            tlb: Tlb::default(),
        }
    }
}

impl Runner {
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Runs the image's function 0 once, with the interpreter's semantics
    /// (`hvscript_lang::Interpreter::run`).
    ///
    /// A run's fixed cost is most of a short script's, so this path is kept to checks and
    /// the context words that change; refusals and errors are decoded out of line, and it
    /// is inlined into its few callers (an event engine's script, `eval`): a call of its own
    /// costs about 3 ns more per run.
    #[inline(always)]
    pub fn run(
        &mut self,
        image: &CodeImage<'_>,
        inv: &mut Invocation<'_>,
    ) -> Result<RunStats, RunnerError> {
        let globals = inv.globals.slots();
        let limits = inv.limits;
        let slots = limits.stack_slots;
        let main = match image.entries.first() {
            Some(&main)
                if !image.sites.is_empty()
                    && image.global_slots as usize <= globals.len()
                    && limits.max_call_depth != 0
                    && image.main_locals as usize <= slots =>
            {
                main
            }
            _ => return Err(refusal(image, globals.len(), limits)),
        };
        self.prepare_stack(slots);
        let own = OwnMemory {
            stack: (self.stack.as_ptr() as u64, slots as u64 * 8),
            globals: (globals.as_ptr() as u64, globals.len() as u64 * 8),
        };
        self.tlb.begin_run(own, || inv.host.mapping_id());
        let mut host = HostState {
            env: &mut *inv.host,
            error: None,
            memory_fault: None,
            tlb: &self.tlb,
        };
        let ctx = &mut self.ctx;
        ctx.regs = &mut *inv.regs;
        ctx.pseudo = inv.pseudo;
        ctx.globals = globals.as_ptr() as *mut u64;
        ctx.global_count = globals.len() as u64;
        ctx.sp = 0;
        ctx.stack_high = image.main_locals as u64;
        ctx.rodata = image.rodata.as_ptr();
        ctx.rodata_len = image.rodata.len() as u64;
        ctx.functions = image.entries.as_ptr();
        ctx.host = &mut host as *mut HostState<'_> as *mut c_void;
        ctx.fuel_left = limits.fuel;
        ctx.depth_limit = limits.max_call_depth;
        ctx.tlb = self.tlb.entries();
        // SAFETY: `CodeImage::new`'s contract makes `main` compiled code for this
        // context layout. Every pointer in `ctx` is valid for the whole call: registers,
        // pseudo-registers and globals borrow from `inv`, the stack is `self.stack`
        // (`prepare_stack` set `stack`/`stack_slots`; not touched otherwise until the call
        // returns), rodata and the entry table borrow from the image, the built-in table is
        // static, `host` lives on this frame, and the translation cache is `self.tlb`,
        // written only by the runtime's callbacks. `depth` is 1 and the error words are 0
        // between runs (the error path restores them).
        unsafe { main(ctx) };
        self.dirty = (ctx.stack_high as usize).min(slots);
        if ctx.error_kind != ExecError::None as u32 {
            return Err(run_error(ctx, &mut host, image, limits));
        }
        Ok(RunStats {
            fuel_used: limits.fuel.saturating_sub(ctx.fuel_left),
        })
    }

    /// Makes the stack `slots` long and zero, zeroing only what the last run used, and
    /// points the context at it.
    #[inline(always)]
    fn prepare_stack(&mut self, slots: usize) {
        if self.stack.len() != slots {
            self.new_stack(slots);
        } else {
            let dirty = self.dirty.min(slots);
            let stack = self.stack.as_mut_ptr();
            // Zeroing more than was used is harmless (the rest is zero already), and a few
            // fixed-size vector stores beat both a loop and a call to memset (1.5 ns a run).
            if dirty == 0 {
                // Nothing was used.
            } else if dirty <= 4 && slots >= 4 {
                // SAFETY: the stack has at least 4 slots; `[u64; 4]` has `u64`'s alignment.
                unsafe { stack.cast::<[u64; 4]>().write([0; 4]) };
            } else if dirty <= SMALL_DIRTY && slots >= SMALL_DIRTY {
                // SAFETY: the stack has at least SMALL_DIRTY slots; same alignment.
                unsafe { stack.cast::<[u64; SMALL_DIRTY]>().write([0; SMALL_DIRTY]) };
            } else {
                self.stack[..dirty].fill(0);
            }
        }
        self.dirty = 0;
    }

    /// A zeroed stack of `slots` slots, in the context: the first run, or other limits.
    #[cold]
    #[inline(never)]
    fn new_stack(&mut self, slots: usize) {
        self.stack = vec![0; slots];
        self.ctx.stack = self.stack.as_mut_ptr();
        self.ctx.stack_slots = slots as u64;
    }
}

/// Why `image` cannot run with these globals and limits, as the interpreter reports it
/// (the main span for the limits it checks before running).
#[cold]
#[inline(never)]
fn refusal(image: &CodeImage<'_>, global_count: usize, limits: Limits) -> RunnerError {
    if image.entries.is_empty() {
        return RunnerError::Incompatible("the code object has no functions".into());
    }
    let Some(&main_span) = image.sites.first() else {
        return RunnerError::Incompatible("the code object has no error sites".into());
    };
    if image.global_slots as usize > global_count {
        return RunnerError::Incompatible(format!(
            "it uses {} global slots, the table has {global_count}",
            image.global_slots,
        ));
    }
    let kind = if limits.max_call_depth == 0 {
        RunErrorKind::CallDepth(0)
    } else {
        RunErrorKind::StackExhausted(limits.stack_slots)
    };
    RunnerError::Run(RunError {
        kind,
        range: main_span,
    })
}

/// The error compiled code left in `ctx`, as the interpreter reports it; restores the
/// context words a successful run leaves as they were (depth, the error words).
#[cold]
#[inline(never)]
fn run_error(
    ctx: &mut ExecCtx,
    host: &mut HostState<'_>,
    image: &CodeImage<'_>,
    limits: Limits,
) -> RunnerError {
    let (error_kind, error_site, error_value) = (ctx.error_kind, ctx.error_site, ctx.error_value);
    ctx.error_kind = ExecError::None as u32;
    ctx.error_site = 0;
    ctx.error_value = 0;
    ctx.depth = 1;
    let slots = limits.stack_slots;
    let kind = match ExecError::from_u32(error_kind) {
        Some(ExecError::None) => unreachable!("run_error is called only for an error"),
        Some(ExecError::Builtin) => match host.error.take() {
            Some(e) => RunErrorKind::Builtin(e),
            None => return RunnerError::Incompatible("a built-in failed without an error".into()),
        },
        Some(ExecError::DivisionByZero) => RunErrorKind::DivisionByZero,
        Some(ExecError::DivisionOverflow) => RunErrorKind::DivisionOverflow(NumTy::I64),
        Some(ExecError::DivisionOverflow32) => RunErrorKind::DivisionOverflow(NumTy::I32),
        Some(ExecError::ShiftCount) => RunErrorKind::ShiftCount {
            count: error_value,
            bits: 64,
        },
        Some(ExecError::ShiftCount32) => RunErrorKind::ShiftCount {
            count: error_value,
            bits: 32,
        },
        Some(ExecError::FloatRange) => RunErrorKind::FloatRange,
        Some(ExecError::FloatConversion) => match ScalarTy::from_code(error_value) {
            Some(to) => RunErrorKind::FloatConversion { to },
            None => {
                return RunnerError::Incompatible(format!(
                    "unknown conversion target {error_value}"
                ))
            }
        },
        Some(ExecError::Memory) => match host.memory_fault.take() {
            // The range is filled in from the site below.
            Some(f) => RunErrorKind::memory(f.addr, f.len, f.write, f.fault),
            None => {
                return RunnerError::Incompatible(format!(
                    "a memory access at {error_value:#x} failed without an error"
                ))
            }
        },
        Some(ExecError::FuelExhausted) => RunErrorKind::FuelExhausted(limits.fuel),
        Some(ExecError::CallDepth) => RunErrorKind::CallDepth(limits.max_call_depth),
        Some(ExecError::StackExhausted) => RunErrorKind::StackExhausted(slots),
        None => return RunnerError::Incompatible(format!("unknown error kind {error_kind}")),
    };
    match image.sites.get(error_site as usize) {
        Some(&range) => RunnerError::Run(RunError { kind, range }),
        None => {
            RunnerError::Incompatible(format!("error site {error_site} is not in the site table"))
        }
    }
}
