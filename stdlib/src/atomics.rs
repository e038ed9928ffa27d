//! `interlocked_*` and the spinlocks.
//!
//! The interlocked functions are 8-byte atomics on an address (usually `&.global`), done by
//! the [`Env`] so that the hypervisor can use real locked instructions on guest or script
//! memory. The spinlock is HyperDbg's: a 32-bit lock word, taken by setting bit 0 when the
//! word is 0, with exponential back-off capped at a maximum wait per round. Unlike
//! HyperDbg's, ours gives up after [`Env::spin_budget`] pauses in total and reports a
//! probable deadlock instead of hanging the core.

use hvscript_abi::Builtin;

use crate::env::{AtomicRmw, Env};
use crate::error::{Access, ScriptError, Space};
use crate::memory::fault;

/// HyperDbg's back-off cap for `spinlock_lock` (`MaxWait` in its `Spinlock.c`).
pub const SPINLOCK_DEFAULT_MAX_WAIT: u32 = 65536;

fn rmw(env: &mut dyn Env, b: Builtin, addr: u64, op: AtomicRmw) -> Result<u64, ScriptError> {
    env.atomic_rmw_u64(addr, op)
        .map_err(|f| fault(b, Space::Virtual, Access::Write, addr, 8, f))
}

/// `interlocked_exchange(&T, v)`: the old value.
pub(crate) fn exchange(env: &mut dyn Env, addr: u64, v: u64) -> Result<u64, ScriptError> {
    rmw(
        env,
        Builtin::InterlockedExchange,
        addr,
        AtomicRmw::Exchange(v),
    )
}

/// `interlocked_exchange_add(&T, v)`: the old value.
pub(crate) fn exchange_add(env: &mut dyn Env, addr: u64, v: u64) -> Result<u64, ScriptError> {
    rmw(
        env,
        Builtin::InterlockedExchangeAdd,
        addr,
        AtomicRmw::Add(v),
    )
}

/// `interlocked_increment` / `interlocked_decrement`: the new value.
pub(crate) fn step(
    env: &mut dyn Env,
    b: Builtin,
    addr: u64,
    delta: u64,
) -> Result<u64, ScriptError> {
    Ok(rmw(env, b, addr, AtomicRmw::Add(delta))?.wrapping_add(delta))
}

/// `interlocked_compare_exchange(&D, exchange, comparand)`: the old value; stores
/// `exchange` when it equalled `comparand`.
pub(crate) fn compare_exchange(
    env: &mut dyn Env,
    addr: u64,
    exchange: u64,
    comparand: u64,
) -> Result<u64, ScriptError> {
    rmw(
        env,
        Builtin::InterlockedCompareExchange,
        addr,
        AtomicRmw::CompareExchange {
            expected: comparand,
            new: exchange,
        },
    )
}

/// `spinlock_lock` / `spinlock_lock_custom_wait`. `max_wait` is the most pauses between two
/// attempts (HyperDbg's `unsigned MaxWait`; 0 behaves as 1 here so that every round still
/// spends budget).
pub(crate) fn lock(
    env: &mut dyn Env,
    b: Builtin,
    addr: u64,
    max_wait: u32,
) -> Result<(), ScriptError> {
    let budget = env.spin_budget();
    let max_wait = u64::from(max_wait.max(1));
    let mut wait: u64 = 1;
    let mut spent: u64 = 0;
    loop {
        let old = env
            .cmpxchg_u32(addr, 0, 1)
            .map_err(|f| fault(b, Space::Virtual, Access::Write, addr, 4, f))?;
        if old == 0 {
            return Ok(());
        }
        if spent >= budget {
            return Err(ScriptError::SpinlockNotAcquired { addr, spins: spent });
        }
        let n = wait.min(budget - spent);
        for _ in 0..n {
            core::hint::spin_loop();
        }
        spent += n;
        wait = (wait * 2).min(max_wait);
    }
}

/// `spinlock_unlock`: stores 0 into the lock word, as HyperDbg does (it does not check
/// that the lock was held).
pub(crate) fn unlock(env: &mut dyn Env, addr: u64) -> Result<(), ScriptError> {
    env.store_u32(addr, 0).map_err(|f| {
        fault(
            Builtin::SpinlockUnlock,
            Space::Virtual,
            Access::Write,
            addr,
            4,
            f,
        )
    })
}
