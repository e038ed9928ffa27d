//! Event control (`event_enable/disable/clear`, `event_sc`, `event_inject*`), debugger
//! actions (`pause`, `flush`, `event_trace_*`), timing (`rdtsc`, `rdtscp`, `microsleep`)
//! and last-branch records (`lbr_*`).
//!
//! These are statements about the world outside the script. Where the context cannot do
//! them, HyperDbg's user-mode evaluator prints `err, ... not possible in user-mode` and goes
//! on; so do we, through [`Env::warn`]. A built-in that must produce a value it cannot get
//! (`rdtsc` without a TSC) stops the script instead: it never makes up a 0.

use hvscript_abi::Builtin;

use crate::env::{Env, EventOp, LbrOp, TraceKind, Unavailable};
use crate::error::ScriptError;
use crate::warn_unavailable;

fn or_warn(env: &mut dyn Env, b: Builtin, r: Result<(), Unavailable>) {
    if let Err(u) = r {
        warn_unavailable(env, b, u.0);
    }
}

/// `event_enable`, `event_disable`, `event_clear`. An unknown id is a warning, as
/// HyperDbg's `Invalid tag id` log line.
pub(crate) fn control(env: &mut dyn Env, b: Builtin, op: EventOp, id: u64) {
    match env.event_control(op, id) {
        Ok(true) => {}
        Ok(false) => {
            let msg = alloc::format!("{}: there is no event with id {id:#x}", b.name());
            env.warn(&msg);
        }
        Err(u) => warn_unavailable(env, b, u.0),
    }
}

/// `event_sc(b)`: short-circuit on when `b != 0`. Refusals (post stage, no event) warn.
pub(crate) fn short_circuit(env: &mut dyn Env, on: u64) {
    let r = env.event_sc(on != 0);
    or_warn(env, Builtin::EventSc, r);
}

/// `event_inject(type, vector)` and `event_inject_error_code(type, vector, code)`. Out-of-
/// range operands are errors (HyperDbg logs and skips the injection; a script that injects
/// the wrong thing is broken, so we stop it).
pub(crate) fn inject(
    env: &mut dyn Env,
    b: Builtin,
    kind: u64,
    vector: u64,
    error_code: Option<u64>,
) -> Result<(), ScriptError> {
    let invalid = |value, reason| ScriptError::InvalidArgument {
        builtin: b,
        value,
        reason,
    };
    if kind >= 8 {
        return Err(invalid(kind, "the interruption type must be below 8"));
    }
    if vector >= 256 {
        return Err(invalid(vector, "the vector must be below 256"));
    }
    let code = match error_code {
        Some(c) => {
            Some(u32::try_from(c).map_err(|_| invalid(c, "the error code must fit in 32 bits"))?)
        }
        None => None,
    };
    let r = env.event_inject(kind as u8, vector as u8, code);
    or_warn(env, b, r);
    Ok(())
}

/// `pause()`.
pub(crate) fn pause(env: &mut dyn Env) {
    let r = env.pause();
    or_warn(env, Builtin::Pause, r);
}

/// `flush()`.
pub(crate) fn flush(env: &mut dyn Env) {
    let r = env.flush();
    or_warn(env, Builtin::Flush, r);
}

/// `event_trace_*()`.
pub(crate) fn trace(env: &mut dyn Env, b: Builtin, kind: TraceKind) {
    let r = env.event_trace(kind);
    or_warn(env, b, r);
}

/// `rdtsc()` / `rdtscp()`.
pub(crate) fn tsc(env: &mut dyn Env, b: Builtin) -> Result<u64, ScriptError> {
    let r = if b == Builtin::Rdtscp {
        env.rdtscp()
    } else {
        env.rdtsc()
    };
    r.map_err(|u| ScriptError::Unavailable {
        builtin: b,
        reason: u.0,
    })
}

/// `microsleep(us)`.
pub(crate) fn microsleep(env: &mut dyn Env, us: u64) {
    let r = env.microsleep(us);
    or_warn(env, Builtin::Microsleep, r);
}

/// `lbr_*`: 1 on success, 0 on failure. Without LBR support `lbr_check` answers 0 (that is
/// its question); the others answer 0 and warn.
pub(crate) fn lbr(env: &mut dyn Env, b: Builtin, op: LbrOp) -> u64 {
    match env.lbr(op) {
        Ok(v) => v,
        Err(_) if op == LbrOp::Check => 0,
        Err(u) => {
            warn_unavailable(env, b, u.0);
            0
        }
    }
}
