//! [`GlobalSlots`]: the values of the global variables (`.name`) every script, event and
//! core of a session shares, as in HyperDbg. Only the values: binding names to slots is
//! the compiler's business (`hvscript_lang::Globals` wraps this table with its names).
//! Slots are atomics because several cores run scripts at once and `interlocked_*`
//! operate on them; values start at 0 and persist.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

/// HyperDbg's limit (`MAX_VAR_COUNT`).
pub const DEFAULT_GLOBAL_SLOTS: usize = 512;

/// A fixed-size table of 64-bit global slots.
pub struct GlobalSlots {
    values: Box<[AtomicU64]>,
}

impl Default for GlobalSlots {
    fn default() -> Self {
        GlobalSlots::with_capacity(DEFAULT_GLOBAL_SLOTS)
    }
}

impl GlobalSlots {
    pub fn with_capacity(slots: usize) -> GlobalSlots {
        GlobalSlots {
            values: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    pub fn get(&self, slot: u32) -> u64 {
        self.values[slot as usize].load(Ordering::Relaxed)
    }

    pub fn set(&self, slot: u32, value: u64) {
        self.values[slot as usize].store(value, Ordering::Relaxed)
    }

    pub fn slot(&self, slot: u32) -> &AtomicU64 {
        &self.values[slot as usize]
    }

    /// The slots, for code that addresses them by pointer (`&.name`, JIT code).
    pub fn slots(&self) -> &[AtomicU64] {
        &self.values
    }
}
