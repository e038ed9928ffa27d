//! The built-in table compiled code calls through ([`builtin_table`]: one trampoline that
//! decodes a call-site record and the arguments and calls `hvscript_stdlib::call`) and the
//! context's [`MemoryFn`](hvscript_abi::MemoryFn) for typed loads and stores, both routing
//! the script's own stack and globals versus guest memory through [`ScriptMemory`] exactly
//! as the interpreter does. The state they reach through [`ExecCtx::host`] is `HostState`,
//! which the [`Runner`](crate::Runner) sets up for each run.
//!
//! Both are also the miss path of the translation cache compiled code checks inline
//! (`crate::tlb`): after a guest access they serve, they cache the page's direct pointer if
//! the environment hands one out, and after a write that reached the environment they drop
//! every cached page.
//!
//! Compiled code never links the stdlib: it reaches it only through this table, which the
//! runtime hands it in the context (DESIGN.md), so a code object has no relocations.

use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;

use hvscript_abi::exec::{
    call_record, string_record, ARG_NARROW_STR, ARG_VALUE, ARG_WIDE_STR, BUILTIN_TABLE_LEN,
    PRINTF_VALUES,
};
use hvscript_abi::{Builtin, BuiltinFn, ExecCtx, ExecError, MemoryAccess};
use hvscript_stdlib::{Arg, ArgList, Env, MemFault, ScriptError};

use crate::script_memory::ScriptMemory;
use crate::tlb::Tlb;

/// The runtime's state behind [`ExecCtx::host`] during a run. The script's globals and
/// read-only data are reached through the context's own words ([`globals_of`],
/// [`rodata_of`]): a run writes as little as it can before compiled code starts.
pub(crate) struct HostState<'a> {
    pub(crate) env: &'a mut dyn Env,
    /// The error of the built-in that failed, for [`ExecError::Builtin`].
    pub(crate) error: Option<ScriptError>,
    /// The typed access that failed, for [`ExecError::Memory`].
    pub(crate) memory_fault: Option<MemoryFault>,
    /// The runner's translation cache ([`ExecCtx::tlb`] points into it).
    pub(crate) tlb: &'a Tlb,
}

/// The run's global slots, as [`Runner::run`](crate::Runner::run) put them in the context.
pub(crate) fn globals_of<'a>(ctx: &ExecCtx) -> &'a [AtomicU64] {
    // SAFETY: `Runner::run` set `globals`/`global_count` from the invocation's global
    // slots (`AtomicU64`s, which have `u64`'s layout), alive for the whole run; only
    // shared references to atomics are made from them.
    unsafe {
        core::slice::from_raw_parts(
            ctx.globals.cast::<AtomicU64>().cast_const(),
            ctx.global_count as usize,
        )
    }
}

/// The code object's read-only data, as [`Runner::run`](crate::Runner::run) put it in the
/// context.
pub(crate) fn rodata_of<'a>(ctx: &ExecCtx) -> &'a [u8] {
    // SAFETY: `Runner::run` set `rodata`/`rodata_len` from the image's rodata, which
    // outlives the run; nothing writes it.
    unsafe { core::slice::from_raw_parts(ctx.rodata, ctx.rodata_len as usize) }
}

/// After a slow-path access through `mem`: drops the cached pages if it wrote to the
/// environment, then caches the page of `cache` (a guest access that succeeded).
fn update_tlb(tlb: &Tlb, mem: &mut ScriptMemory<'_>, cache: Option<(u64, bool)>) {
    if mem.wrote_host {
        tlb.clear();
    }
    if let Some((addr, write)) = cache {
        if let Some(page) = mem.direct_page(addr, write) {
            tlb.insert(addr, page, || mem.mapping_id());
        }
    }
}

/// The guest access a successful call of built-in `b` made, for the translation cache:
/// (address, write). Only the built-ins compiled code serves inline.
fn cached_access(b: Builtin, args: &[u64], result: u64) -> Option<(u64, bool)> {
    let addr = *args.first()?;
    match b {
        Builtin::Poi | Builtin::Dq | Builtin::Dd | Builtin::Dw | Builtin::Db => Some((addr, false)),
        // 0: the address was not writable; nothing to cache.
        Builtin::Eq | Builtin::Ed | Builtin::Eb if result == 1 => Some((addr, true)),
        _ => None,
    }
}

/// A failed typed load or store, as [`RunErrorKind::memory`](crate::RunErrorKind::memory) needs it.
#[derive(Clone, Copy)]
pub(crate) struct MemoryFault {
    pub(crate) addr: u64,
    pub(crate) len: usize,
    pub(crate) write: bool,
    pub(crate) fault: MemFault,
}

/// The built-in table compiled code calls through, indexed by [`Builtin::id`], with
/// [`PRINTF_VALUES`] after them.
pub fn builtin_table() -> &'static [BuiltinFn] {
    &BUILTINS
}

/// Every built-in goes through [`call_builtin`]; the printf of values alone has its own
/// entry ([`crate::printf_call`]), so that recording one on an exit path decodes nothing.
pub(crate) static BUILTINS: [BuiltinFn; BUILTIN_TABLE_LEN] = {
    let mut table = [call_builtin as BuiltinFn; BUILTIN_TABLE_LEN];
    table[PRINTF_VALUES] = crate::printf_call::call_printf_values;
    table
};

/// Records a failed built-in in the context.
pub(crate) fn record_error(
    ctx: &mut ExecCtx,
    host: &mut HostState<'_>,
    site: u32,
    e: ScriptError,
) -> u64 {
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
/// [`Runner::run`], `call` the rodata offset of a call-site record, and `args`
/// pointing to as many initialised `u64`s as the record has tags.
pub(crate) unsafe extern "C" fn call_builtin(
    ctx: *mut ExecCtx,
    call: u64,
    args: *const u64,
) -> u64 {
    // SAFETY: compiled code passes the context `Runner::run` made; no other
    // reference to it is live while compiled code is suspended in this call.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `ctx.host` is the `HostState` on `Runner::run`'s frame, alive for the
    // whole run and not otherwise borrowed while compiled code runs.
    let host = unsafe { &mut *(ctx.host as *mut HostState<'_>) };
    let rodata = rodata_of(ctx);
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
        unsafe { core::slice::from_raw_parts(args, record.tags.len()) }
    };
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
    let mut decoded = ArgList::new();
    let mut wide_iter = wide.iter();
    for (&tag, &value) in record.tags.iter().zip(raw) {
        let arg = match tag {
            ARG_VALUE => {
                note_stack_address(ctx, value);
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
    run_decoded(ctx, host, b, site, raw, decoded.as_slice())
}

/// A built-in given an address inside the local stack may write anywhere in it: the whole
/// stack must then be zeroed before the next run.
pub(crate) fn note_stack_address(ctx: &mut ExecCtx, value: u64) {
    let (stack_lo, stack_hi) = (ctx.stack as u64, ctx.stack as u64 + ctx.stack_slots * 8);
    if (stack_lo..stack_hi).contains(&value) {
        ctx.stack_high = ctx.stack_slots;
    }
}

/// Calls built-in `b` with its decoded arguments (`raw`: their words as compiled code
/// passed them) on the script's memory, updates the translation cache, stores any error.
pub(crate) fn run_decoded(
    ctx: &mut ExecCtx,
    host: &mut HostState<'_>,
    b: Builtin,
    site: u32,
    raw: &[u64],
    decoded: &[Arg<'_>],
) -> u64 {
    // SAFETY: the stack is `Runner::stack`, `stack_slots` long; compiled code does
    // not touch it while suspended in this call, so this is the only live reference.
    let stack = unsafe { core::slice::from_raw_parts_mut(ctx.stack, ctx.stack_slots as usize) };
    let mut mem = ScriptMemory::new(stack, globals_of(ctx), &mut *host.env);
    let result = hvscript_stdlib::call(b, &mut mem, decoded);
    let cache = result.as_ref().ok().and_then(|&v| cached_access(b, raw, v));
    update_tlb(host.tlb, &mut mem, cache);
    match result {
        Ok(v) => v,
        Err(e) => record_error(ctx, host, site, e),
    }
}

/// The context's [`MemoryFn`](hvscript_abi::MemoryFn): a typed load or store outside the
/// part of the local stack compiled code serves inline, routed through [`ScriptMemory`]
/// exactly as the interpreter routes the IR's typed loads and stores.
///
/// # Safety
/// Called by compiled code only, with the context of a run started by
/// [`Runner::run`].
pub(crate) unsafe extern "C" fn memory_access(
    ctx: *mut ExecCtx,
    access: u64,
    addr: u64,
    value: u64,
) -> u64 {
    // SAFETY: compiled code passes the context `Runner::run` made; no other
    // reference to it is live while compiled code is suspended in this call.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `ctx.host` is the `HostState` on `Runner::run`'s frame, alive for the
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
    // SAFETY: the stack is `Runner::stack`, `stack_slots` long; compiled code does
    // not touch it while suspended in this call, so this is the only live reference.
    let stack = unsafe { core::slice::from_raw_parts_mut(ctx.stack, ctx.stack_slots as usize) };
    let mut mem = ScriptMemory::new(stack, globals_of(ctx), &mut *host.env);
    let result = if write {
        mem.write_le(addr, len, value).map(|()| 0)
    } else {
        mem.read_le(addr, len)
    };
    update_tlb(host.tlb, &mut mem, result.is_ok().then_some((addr, write)));
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

pub(crate) fn bad_string(builtin: Builtin, offset: u64) -> ScriptError {
    ScriptError::InvalidArgument {
        builtin,
        value: offset,
        reason: "corrupt code object: string operand outside its read-only data",
    }
}
