//! Running compiled code on the host.
//!
//! The JIT (`hvscript-jit`) turns a [`crate::Program`] into native functions of type
//! [`EntryFn`] that reach everything through an [`ExecCtx`]. This module is the runtime
//! side of that contract for std hosts: it builds an `ExecCtx` from an [`Invocation`],
//! provides the table of built-ins compiled code calls ([`builtin_table`]: one trampoline
//! that decodes the arguments and calls `hvscript_stdlib::call` with the same
//! [`ScriptMemory`] routing as the interpreter; and the [`MemoryFn`] serving typed loads
//! and stores the same way), runs a loaded image, and turns the error
//! state compiled code leaves in the context into the same [`RunError`] the interpreter
//! produces. It lives here, not in the JIT: compiled code reaches the stdlib only through
//! the table a runtime hands it (DESIGN.md), and hv-core provides its own.

use core::ffi::c_void;
use std::fmt;
use std::sync::atomic::AtomicU64;

use hvscript_abi::exec::{call_record, string_record, ARG_NARROW_STR, ARG_VALUE, ARG_WIDE_STR};
use hvscript_abi::{Builtin, BuiltinFn, EntryFn, ExecCtx, ExecError, MemoryAccess, MemoryFn};
use hvscript_grammar::ast::Span;
use hvscript_stdlib::{Arg, Env, MemFault, ScriptError};

use crate::interp::{memory_error, Invocation, RunError, RunErrorKind, RunStats};
use crate::ir::{NumTy, ScalarTy};
use crate::script_memory::ScriptMemory;

/// A loaded code object, as the runtime needs it: entry points (function 0 is the
/// script's body), read-only data, the error-site table and the slot counts.
#[derive(Clone, Copy)]
pub struct NativeImage<'a> {
    entries: &'a [EntryFn],
    rodata: &'a [u8],
    sites: &'a [Span],
    main_locals: u32,
    global_slots: u32,
}

impl<'a> NativeImage<'a> {
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
        sites: &'a [Span],
        main_locals: u32,
        global_slots: u32,
    ) -> NativeImage<'a> {
        NativeImage {
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

/// Why a native run did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeError {
    /// The script stopped with an error, exactly as the interpreter reports it.
    Run(RunError),
    /// The image does not fit this invocation (e.g. more global slots than the table has).
    Incompatible(String),
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NativeError::Run(e) => f.write_str(&e.message()),
            NativeError::Incompatible(m) => write!(f, "cannot run this code object: {m}"),
        }
    }
}

/// The runtime's state behind [`ExecCtx::host`] during a run.
struct HostState<'a> {
    env: &'a mut dyn Env,
    globals: &'a [AtomicU64],
    rodata: &'a [u8],
    /// The error of the built-in that failed, for [`ExecError::Builtin`].
    error: Option<ScriptError>,
    /// The typed access that failed, for [`ExecError::Memory`].
    memory_fault: Option<MemoryFault>,
}

/// A failed typed load or store, as [`memory_error`] needs it.
#[derive(Clone, Copy)]
struct MemoryFault {
    addr: u64,
    len: usize,
    write: bool,
    fault: MemFault,
}

/// Reusable state of native runs (the local stack), so repeated runs do not allocate.
#[derive(Default)]
pub struct NativeRunner {
    stack: Vec<u64>,
    /// Slots `dirty..` of the stack are known to be zero.
    dirty: usize,
}

impl NativeRunner {
    pub fn new() -> NativeRunner {
        NativeRunner::default()
    }

    /// Runs the image's function 0 once. Same contract as [`crate::Interpreter::run`].
    pub fn run(
        &mut self,
        image: &NativeImage<'_>,
        inv: &mut Invocation<'_>,
    ) -> Result<RunStats, NativeError> {
        let Some(&main) = image.entries.first() else {
            return Err(NativeError::Incompatible(
                "the code object has no functions".into(),
            ));
        };
        let Some(&main_span) = image.sites.first() else {
            return Err(NativeError::Incompatible(
                "the code object has no error sites".into(),
            ));
        };
        let globals = inv.globals.slots();
        if image.global_slots as usize > globals.len() {
            return Err(NativeError::Incompatible(format!(
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
            self.stack[..dirty].fill(0);
        }
        self.dirty = 0;
        let fail = |kind| {
            Err(NativeError::Run(RunError {
                kind,
                span: main_span,
            }))
        };
        if limits.max_call_depth == 0 {
            return fail(RunErrorKind::CallDepth(0));
        }
        if image.main_locals as usize > slots {
            return fail(RunErrorKind::StackExhausted(slots));
        }

        let mut host = HostState {
            env: &mut *inv.host,
            globals,
            rodata: image.rodata,
            error: None,
            memory_fault: None,
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
        };
        // SAFETY: `NativeImage::new`'s contract makes `main` compiled code for this
        // context layout. Every pointer in `ctx` is valid for the whole call: registers,
        // pseudo-registers and globals borrow from `inv`, the stack is `self.stack` (not
        // touched otherwise until the call returns), rodata and the entry table borrow
        // from the image, the built-in table is static, and `host` lives on this frame.
        unsafe { main(&mut ctx) };
        self.dirty = (ctx.stack_high as usize).min(slots);
        let fuel_used = limits.fuel.saturating_sub(ctx.fuel_left);
        let kind = match ExecError::from_u32(ctx.error_kind) {
            Some(ExecError::None) => return Ok(RunStats { fuel_used }),
            Some(ExecError::Builtin) => match host.error.take() {
                Some(e) => RunErrorKind::Builtin(e),
                None => {
                    return Err(NativeError::Incompatible(
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
                    return Err(NativeError::Incompatible(format!(
                        "unknown conversion target {}",
                        ctx.error_value
                    )))
                }
            },
            Some(ExecError::Memory) => match host.memory_fault.take() {
                // The span is filled in from the site below.
                Some(f) => memory_error(f.addr, f.len, f.write, f.fault, main_span).kind,
                None => {
                    return Err(NativeError::Incompatible(format!(
                        "a memory access at {:#x} failed without an error",
                        ctx.error_value
                    )))
                }
            },
            Some(ExecError::FuelExhausted) => RunErrorKind::FuelExhausted(limits.fuel),
            Some(ExecError::CallDepth) => RunErrorKind::CallDepth(limits.max_call_depth),
            Some(ExecError::StackExhausted) => RunErrorKind::StackExhausted(slots),
            None => {
                return Err(NativeError::Incompatible(format!(
                    "unknown error kind {}",
                    ctx.error_kind
                )))
            }
        };
        match image.sites.get(ctx.error_site as usize) {
            Some(&span) => Err(NativeError::Run(RunError { kind, span })),
            None => Err(NativeError::Incompatible(format!(
                "error site {} is not in the site table",
                ctx.error_site
            ))),
        }
    }
}

/// The built-in table compiled code calls through, indexed by [`Builtin::id`].
pub fn builtin_table() -> &'static [BuiltinFn] {
    &BUILTINS
}

static BUILTINS: [BuiltinFn; Builtin::ALL.len()] = [call_builtin; Builtin::ALL.len()];

/// Records a failed built-in in the context.
fn record_error(ctx: &mut ExecCtx, host: &mut HostState<'_>, site: u32, e: ScriptError) -> u64 {
    host.error = Some(e);
    ctx.error_kind = ExecError::Builtin as u32;
    ctx.error_site = site;
    0
}

/// The one entry of the built-in table: decodes the call-site record and the arguments,
/// routes `&local` and `&.global` addresses to the script's own memory, calls the stdlib,
/// stores any error.
///
/// # Safety
/// Called by compiled code only, with the context of a run started by
/// [`NativeRunner::run`], `call` the rodata offset of a call-site record, and `args`
/// pointing to as many initialised `u64`s as the record has tags.
unsafe extern "C" fn call_builtin(ctx: *mut ExecCtx, call: u64, args: *const u64) -> u64 {
    // SAFETY: compiled code passes the context `NativeRunner::run` made; no other
    // reference to it is live while compiled code is suspended in this call.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `ctx.host` is the `HostState` on `NativeRunner::run`'s frame, alive for the
    // whole run and not otherwise borrowed while compiled code runs.
    let host = unsafe { &mut *(ctx.host as *mut HostState<'_>) };
    let rodata = host.rodata;
    let corrupt = |reason| ScriptError::Unavailable {
        builtin: Builtin::Reference,
        reason,
    };
    let Some(record) = call_record(rodata, call) else {
        let e = corrupt("corrupt code object: call-site record outside its read-only data");
        return record_error(ctx, host, 0, e);
    };
    let site = record.site;
    let Some(b) = Builtin::from_id(record.builtin) else {
        let e = corrupt("corrupt code object: unknown built-in id");
        return record_error(ctx, host, site, e);
    };
    let raw: &[u64] = if record.tags.is_empty() || args.is_null() {
        &[]
    } else {
        // SAFETY: compiled code stores one value per tag in a stack slot of its frame and
        // passes its (non-null, aligned) address.
        unsafe { std::slice::from_raw_parts(args, record.tags.len()) }
    };
    let (stack_lo, stack_hi) = (ctx.stack as u64, ctx.stack as u64 + ctx.stack_slots * 8);
    let mut wide: Vec<Vec<u16>> = Vec::new();
    for (&tag, &value) in record.tags.iter().zip(raw) {
        if tag == ARG_WIDE_STR {
            match string_record(rodata, value, true) {
                Some(bytes) => wide.push(
                    bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                ),
                None => return record_error(ctx, host, site, bad_string(b, value)),
            }
        }
    }
    let mut decoded: Vec<Arg<'_>> = Vec::with_capacity(raw.len());
    let mut wide_iter = wide.iter();
    for (&tag, &value) in record.tags.iter().zip(raw) {
        let arg = match tag {
            ARG_VALUE => {
                // A built-in given an address inside the local stack may write anywhere in
                // it: the whole stack must be zeroed before the next run.
                if (stack_lo..stack_hi).contains(&value) {
                    ctx.stack_high = ctx.stack_slots;
                }
                Arg::Val(value)
            }
            ARG_NARROW_STR => match string_record(rodata, value, false) {
                Some(s) => Arg::Str(s),
                None => return record_error(ctx, host, site, bad_string(b, value)),
            },
            ARG_WIDE_STR => match wide_iter.next() {
                Some(w) => Arg::WStr(w),
                None => return record_error(ctx, host, site, bad_string(b, value)),
            },
            _ => return record_error(ctx, host, site, bad_string(b, value)),
        };
        decoded.push(arg);
    }
    // SAFETY: the stack is `NativeRunner::stack`, `stack_slots` long; compiled code does
    // not touch it while suspended in this call, so this is the only live reference.
    let stack = unsafe { std::slice::from_raw_parts_mut(ctx.stack, ctx.stack_slots as usize) };
    let mut mem = ScriptMemory {
        stack,
        globals: host.globals,
        host: &mut *host.env,
    };
    match hvscript_stdlib::call(b, &mut mem, &decoded) {
        Ok(v) => v,
        Err(e) => {
            drop(decoded);
            record_error(ctx, host, site, e)
        }
    }
}

/// The context's [`MemoryFn`]: a typed load or store outside the part of the local stack
/// compiled code serves inline, routed through [`ScriptMemory`] exactly as the
/// interpreter routes [`crate::ir::Inst::Load`] and [`crate::ir::Inst::Store`].
///
/// # Safety
/// Called by compiled code only, with the context of a run started by
/// [`NativeRunner::run`].
unsafe extern "C" fn memory_access(ctx: *mut ExecCtx, access: u64, addr: u64, value: u64) -> u64 {
    // SAFETY: compiled code passes the context `NativeRunner::run` made; no other
    // reference to it is live while compiled code is suspended in this call.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `ctx.host` is the `HostState` on `NativeRunner::run`'s frame, alive for the
    // whole run and not otherwise borrowed while compiled code runs.
    let host = unsafe { &mut *(ctx.host as *mut HostState<'_>) };
    let MemoryAccess { site, width, write } = MemoryAccess::decode(access);
    let len = width as usize;
    if !matches!(len, 1 | 2 | 4 | 8) {
        // Corrupt code: reported as an incompatible image (no fault recorded).
        ctx.error_kind = ExecError::Memory as u32;
        ctx.error_site = site;
        ctx.error_value = addr;
        return 0;
    }
    // SAFETY: the stack is `NativeRunner::stack`, `stack_slots` long; compiled code does
    // not touch it while suspended in this call, so this is the only live reference.
    let stack = unsafe { std::slice::from_raw_parts_mut(ctx.stack, ctx.stack_slots as usize) };
    let mut mem = ScriptMemory {
        stack,
        globals: host.globals,
        host: &mut *host.env,
    };
    let result = if write {
        mem.write_le(addr, len, value).map(|()| 0)
    } else {
        mem.read_le(addr, len)
    };
    match result {
        Ok(_) if write => {
            // Compiled code only zeroes what it handed out; a write above that must be
            // cleared before the next run too.
            let (stack_lo, stack_hi) = (ctx.stack as u64, ctx.stack as u64 + ctx.stack_slots * 8);
            if (stack_lo..stack_hi).contains(&addr) {
                ctx.stack_high = ctx.stack_slots;
            }
            0
        }
        Ok(raw) => raw,
        Err(fault) => {
            host.memory_fault = Some(MemoryFault {
                addr,
                len,
                write,
                fault,
            });
            ctx.error_kind = ExecError::Memory as u32;
            ctx.error_site = site;
            ctx.error_value = addr;
            0
        }
    }
}

fn bad_string(builtin: Builtin, offset: u64) -> ScriptError {
    ScriptError::InvalidArgument {
        builtin,
        value: offset,
        reason: "corrupt code object: string operand outside its read-only data",
    }
}
