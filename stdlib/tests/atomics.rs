//! Tests of the interlocked built-ins and the bounded spinlocks.

mod common;

use common::{callv, TestEnv, BASE, MEM};
use hvscript_abi::Builtin;
use hvscript_stdlib::{Access, ScriptError, Space, DEFAULT_SPIN_BUDGET, SPINLOCK_DEFAULT_MAX_WAIT};

const T: u64 = BASE + 0x100;

#[test]
fn exchange_and_exchange_add_return_the_old_value() {
    let mut env = TestEnv::new(MEM);
    env.put_u64(T, 5);
    assert_eq!(
        callv(&mut env, Builtin::InterlockedExchange, &[T, 9]),
        Ok(5)
    );
    assert_eq!(env.get_u64(T), 9);
    assert_eq!(
        callv(&mut env, Builtin::InterlockedExchangeAdd, &[T, 3]),
        Ok(9)
    );
    assert_eq!(env.get_u64(T), 12);
    // Adding a negative number, and wrapping.
    assert_eq!(
        callv(&mut env, Builtin::InterlockedExchangeAdd, &[T, u64::MAX]),
        Ok(12)
    );
    assert_eq!(env.get_u64(T), 11);
    env.put_u64(T, u64::MAX);
    assert_eq!(
        callv(&mut env, Builtin::InterlockedExchangeAdd, &[T, 2]),
        Ok(u64::MAX)
    );
    assert_eq!(env.get_u64(T), 1);
}

#[test]
fn increment_and_decrement_return_the_new_value() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(callv(&mut env, Builtin::InterlockedIncrement, &[T]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::InterlockedIncrement, &[T]), Ok(2));
    assert_eq!(env.get_u64(T), 2);
    assert_eq!(callv(&mut env, Builtin::InterlockedDecrement, &[T]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::InterlockedDecrement, &[T]), Ok(0));
    assert_eq!(
        callv(&mut env, Builtin::InterlockedDecrement, &[T]),
        Ok(u64::MAX)
    );
    assert_eq!(env.get_u64(T), u64::MAX);
    assert_eq!(callv(&mut env, Builtin::InterlockedIncrement, &[T]), Ok(0));
}

#[test]
fn compare_exchange_stores_only_on_match() {
    let mut env = TestEnv::new(MEM);
    env.put_u64(T, 7);
    // (destination, exchange, comparand)
    assert_eq!(
        callv(&mut env, Builtin::InterlockedCompareExchange, &[T, 100, 8]),
        Ok(7)
    );
    assert_eq!(env.get_u64(T), 7);
    assert_eq!(
        callv(&mut env, Builtin::InterlockedCompareExchange, &[T, 100, 7]),
        Ok(7)
    );
    assert_eq!(env.get_u64(T), 100);
}

#[test]
fn interlocked_on_an_invalid_address_is_an_error() {
    let mut env = TestEnv::new(MEM);
    env.readonly.push(0x2000..0x2008);
    let calls: [(Builtin, &[u64]); 5] = [
        (Builtin::InterlockedExchange, &[1]),
        (Builtin::InterlockedExchangeAdd, &[1]),
        (Builtin::InterlockedIncrement, &[]),
        (Builtin::InterlockedDecrement, &[]),
        (Builtin::InterlockedCompareExchange, &[1, 0]),
    ];
    for (b, rest) in calls {
        for addr in [0x8, 0x2000, 0x3ffc] {
            let mut args = vec![addr];
            args.extend_from_slice(rest);
            assert_eq!(
                callv(&mut env, b, &args),
                Err(ScriptError::InvalidAddress {
                    builtin: b,
                    space: Space::Virtual,
                    access: Access::Write,
                    addr,
                    len: 8
                }),
                "{} at {addr:#x}",
                b.name()
            );
        }
    }
}

#[test]
fn spinlock_lock_and_unlock() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(callv(&mut env, Builtin::SpinlockLock, &[T]), Ok(0));
    assert_eq!(env.get_u32(T), 1);
    assert_eq!(callv(&mut env, Builtin::SpinlockUnlock, &[T]), Ok(0));
    assert_eq!(env.get_u32(T), 0);
    assert_eq!(
        callv(&mut env, Builtin::SpinlockLockCustomWait, &[T, 10]),
        Ok(0)
    );
    assert_eq!(env.get_u32(T), 1);
    // Only the 4-byte lock word is touched.
    env.put(T + 4, &[0xee; 4]);
    callv(&mut env, Builtin::SpinlockUnlock, &[T]).unwrap();
    assert_eq!(env.get(T, 8), &[0, 0, 0, 0, 0xee, 0xee, 0xee, 0xee]);
}

#[test]
fn a_held_spinlock_fails_after_the_spin_budget() {
    let mut env = TestEnv::new(MEM);
    env.spin_budget = 5000;
    callv(&mut env, Builtin::SpinlockLock, &[T]).unwrap();
    for (b, args) in [
        (Builtin::SpinlockLock, vec![T]),
        (Builtin::SpinlockLockCustomWait, vec![T, 16]),
        // A maximum wait of 0 still spends budget and ends.
        (Builtin::SpinlockLockCustomWait, vec![T, 0]),
        (Builtin::SpinlockLockCustomWait, vec![T, u64::MAX]),
    ] {
        let e = callv(&mut env, b, &args).unwrap_err();
        assert_eq!(
            e,
            ScriptError::SpinlockNotAcquired {
                addr: T,
                spins: 5000
            },
            "{args:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("spinlock at {T:#x} not acquired after 5000 spins (deadlock?)")
        );
    }
    assert_eq!(env.get_u32(T), 1);
}

#[test]
fn a_lock_word_with_other_bits_set_is_not_free() {
    // HyperDbg takes the lock only when the whole 32-bit word is 0.
    let mut env = TestEnv::new(MEM);
    env.spin_budget = 10;
    env.put(T, &2u32.to_le_bytes());
    assert!(matches!(
        callv(&mut env, Builtin::SpinlockLock, &[T]),
        Err(ScriptError::SpinlockNotAcquired { .. })
    ));
    assert_eq!(env.get_u32(T), 2);
}

#[test]
fn spinlocks_on_invalid_addresses_are_errors() {
    let mut env = TestEnv::new(MEM);
    for (b, args) in [
        (Builtin::SpinlockLock, vec![0x10]),
        (Builtin::SpinlockLockCustomWait, vec![0x10, 5]),
        (Builtin::SpinlockUnlock, vec![0x10]),
    ] {
        assert_eq!(
            callv(&mut env, b, &args),
            Err(ScriptError::InvalidAddress {
                builtin: b,
                space: Space::Virtual,
                access: Access::Write,
                addr: 0x10,
                len: 4
            }),
            "{}",
            b.name()
        );
    }
}

#[test]
fn documented_constants() {
    assert_eq!(DEFAULT_SPIN_BUDGET, 1 << 24);
    assert_eq!(SPINLOCK_DEFAULT_MAX_WAIT, 65536);
}
