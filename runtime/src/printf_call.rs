//! Compiled code's `printf` when the environment defers it ([`Env::defer_printf`]): the
//! call-site record's values go to the environment as they are, with no argument
//! decoding, no allocation and no formatting, which is what keeps a printf on an exit
//! path to a few nanoseconds. An environment that formats now gets the general path.

use hvscript_abi::exec::{string_record, CallRecord, ARG_NARROW_STR, ARG_VALUE};
use hvscript_abi::ExecCtx;
use hvscript_stdlib::{NoCallerMemory, ScriptError};

use crate::builtins::HostState;
use crate::script_memory::OwnAreas;

/// Hands a compiled `printf` to a deferring environment: `None` when the environment
/// formats printf itself or the record is not a plain printf (the general path then
/// runs), else the call's outcome.
pub(crate) fn defer(
    ctx: &ExecCtx,
    host: &mut HostState<'_>,
    record: &CallRecord<'_>,
    raw: &[u64],
) -> Option<Result<(), ScriptError>> {
    let (&format, values) = raw.split_first()?;
    let (&first, rest) = record.tags.split_first()?;
    if first != ARG_NARROW_STR || rest.iter().any(|&t| t != ARG_VALUE) {
        return None;
    }
    let fmt = string_record(host.rodata, format, false)?;
    // SAFETY: the stack is `Runner::stack`, `stack_slots` long; compiled code does not
    // touch it while suspended in this call, and printf only reads it.
    let stack = unsafe { core::slice::from_raw_parts(ctx.stack, ctx.stack_slots as usize) };
    let mut own = OwnAreas {
        stack,
        globals: host.globals,
        outer: &mut NoCallerMemory,
    };
    host.env.defer_printf(fmt, values, &mut own)
}
