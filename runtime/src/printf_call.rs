//! Compiled code's `printf` entry in the built-in table. When the environment defers
//! printf ([`Env::defer_printf`](hvscript_stdlib::Env::defer_printf)), the call-site
//! record's values go to it as they are, with no argument decoding, no allocation and no
//! formatting, which is what keeps a printf on an exit path to a few nanoseconds; an
//! environment that formats now gets the general entry, [`call_builtin`].

use hvscript_abi::exec::{call_record, string_record, ARG_NARROW_STR, ARG_VALUE};
use hvscript_abi::{Builtin, ExecCtx};
use hvscript_stdlib::{CallerMemory, MemFault, NoCallerMemory};

use crate::builtins::{call_builtin, globals_of, record_error, rodata_of, HostState};
use crate::script_memory::OwnAreas;

/// The table's `printf` entry.
///
/// # Safety
/// As [`call_builtin`]'s: called by compiled code only, with the context of a run started
/// by [`Runner::run`](crate::Runner::run), `call` the rodata offset of a call-site record,
/// and `args` pointing to as many initialised `u64`s as the record has tags.
pub(crate) unsafe extern "C" fn call_printf(ctx: *mut ExecCtx, call: u64, args: *const u64) -> u64 {
    {
        // SAFETY: compiled code passes the context `Runner::run` made; no other reference
        // to it is live while compiled code is suspended in this call (this one ends
        // before `call_builtin` makes its own).
        let ctx = unsafe { &mut *ctx };
        // SAFETY: `ctx.host` is the `HostState` on `Runner::run`'s frame, alive for the
        // whole run and not otherwise borrowed while compiled code runs.
        let host = unsafe { &mut *(ctx.host as *mut HostState<'_>) };
        let rodata = rodata_of(ctx);
        if let Some(record) = call_record(rodata, call) {
            let plain = record.builtin == Builtin::Printf.id()
                && !args.is_null()
                && record.tags.first() == Some(&ARG_NARROW_STR)
                && record.tags[1..].iter().all(|&t| t == ARG_VALUE);
            if plain {
                // SAFETY: compiled code stores one value per tag in a stack slot of its
                // frame and passes its (non-null, aligned) address.
                let raw = unsafe { core::slice::from_raw_parts(args, record.tags.len()) };
                if let Some(fmt) = string_record(rodata, raw[0], false) {
                    let mut own = ContextMemory(ctx);
                    // Printf never writes: the stack needs no clearing for it.
                    match host.env.defer_printf(fmt, &raw[1..], &mut own) {
                        Some(Ok(())) => return 0,
                        Some(Err(e)) => return record_error(ctx, host, record.site, e),
                        None => {}
                    }
                }
            }
        }
    }
    // SAFETY: this function's own contract, which is `call_builtin`'s.
    unsafe { call_builtin(ctx, call, args) }
}

/// The script's own stack and globals, as the run's context describes them, made into
/// slices only when a `%s` is read (most printf calls read none).
struct ContextMemory<'a>(&'a ExecCtx);

impl CallerMemory for ContextMemory<'_> {
    fn read_caller(&mut self, addr: u64, buf: &mut [u8]) -> Option<Result<(), MemFault>> {
        let ctx = self.0;
        // SAFETY: the stack is `Runner::stack`, `stack_slots` long; compiled code does not
        // touch it while suspended in this call, and printf only reads it.
        let stack = unsafe { core::slice::from_raw_parts(ctx.stack, ctx.stack_slots as usize) };
        OwnAreas {
            stack,
            globals: globals_of(ctx),
            outer: &mut NoCallerMemory,
        }
        .read_caller(addr, buf)
    }
}
