//! Compiled code's entry for the printf of values alone
//! ([`PRINTF_VALUES`](hvscript_abi::exec::PRINTF_VALUES): a narrow literal format, every
//! other argument a value), the printf of nearly every event script. The format's bytes and
//! the values go to the environment's shortcut
//! ([`Env::record_printf_values`](hvscript_stdlib::Env::record_printf_values)) as compiled
//! code passed them: nothing to decode, allocate or format, which keeps a printf on an exit
//! path to a few nanoseconds. Anything else (a format not recorded yet, `%s`, an error, an
//! environment that formats now) takes the general printf built-in, [`run_decoded`].

use hvscript_abi::exec::{call_record, unpack_bytes};
use hvscript_abi::{Builtin, ExecCtx};
use hvscript_stdlib::{Arg, ArgList};

use crate::builtins::{bad_string, record_error, rodata_of, run_decoded, HostState};

/// The table's [`PRINTF_VALUES`](hvscript_abi::exec::PRINTF_VALUES) entry.
///
/// # Safety
/// Called by compiled code only, with the context of a run started by
/// [`Runner::run`](crate::Runner::run), `call` and `args` as `PRINTF_VALUES` says:
/// `args` points to the packed format and then as many initialised `u64`s as `call` counts.
pub(crate) unsafe extern "C" fn call_printf_values(
    ctx: *mut ExecCtx,
    call: u64,
    args: *const u64,
) -> u64 {
    let count = (call >> 32) as usize;
    // SAFETY: compiled code passes the context `Runner::run` made; no other reference to
    // it is live while compiled code is suspended in this call.
    let ctx_ref = unsafe { &*ctx };
    // SAFETY: `ctx.host` is the `HostState` on `Runner::run`'s frame, alive for the whole
    // run and not otherwise borrowed while compiled code runs.
    let host = unsafe { &mut *(ctx_ref.host as *mut HostState<'_>) };
    // SAFETY: compiled code stores the format and one word per value in a stack slot of
    // its frame and passes its (non-null, aligned) address.
    let raw = unsafe { core::slice::from_raw_parts(args, 1 + count) };
    if let Some(fmt) = unpack_bytes(rodata_of(ctx_ref), raw[0]) {
        if host.env.record_printf_values(fmt, &raw[1..]) {
            return 0;
        }
    }
    // SAFETY: this function's own contract.
    unsafe { printf_values_otherwise(ctx, call, args) }
}

/// The rest of [`call_printf_values`], out of its way: the general printf built-in, which
/// defers the call the general way ([`Env::defer_printf`](hvscript_stdlib::Env::defer_printf),
/// reading `%s` strings in the script's own memory too) or formats it now, and reports its
/// errors at the call's site.
///
/// # Safety
/// As [`call_printf_values`]'s.
#[cold]
#[inline(never)]
unsafe fn printf_values_otherwise(ctx: *mut ExecCtx, call: u64, args: *const u64) -> u64 {
    let record = u64::from(call as u32);
    let count = (call >> 32) as usize;
    // SAFETY: as in `call_printf_values`, whose references have ended.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: as in `call_printf_values`.
    let host = unsafe { &mut *(ctx.host as *mut HostState<'_>) };
    // SAFETY: as in `call_printf_values`.
    let raw = unsafe { core::slice::from_raw_parts(args, 1 + count) };
    let (format, values) = (raw[0], &raw[1..]);
    let rodata = rodata_of(ctx);
    let site = call_record(rodata, record).map_or(0, |r| r.site);
    let Some(fmt) = unpack_bytes(rodata, format) else {
        return record_error(ctx, host, site, bad_string(Builtin::Printf, format));
    };
    // Printf never writes: a value that points into the stack needs no clearing after.
    let mut decoded = ArgList::new();
    decoded.push(Arg::Str(fmt));
    for &v in values {
        decoded.push(Arg::Val(v));
    }
    run_decoded(ctx, host, Builtin::Printf, site, raw, decoded.as_slice())
}
