//! Global variables (`.name`): one table of names and 64-bit slots shared by every script,
//! event and core of a session, as in HyperDbg. Names are bound to slots when a script
//! that assigns them compiles; values start at 0 and persist. Slots are atomics because
//! several cores run scripts at once and `interlocked_*` operate on them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// HyperDbg's limit (`MAX_VAR_COUNT`).
pub const DEFAULT_GLOBAL_SLOTS: usize = 512;

pub struct Globals {
    names: Mutex<HashMap<String, u32>>,
    values: Box<[AtomicU64]>,
}

impl Default for Globals {
    fn default() -> Self {
        Globals::with_capacity(DEFAULT_GLOBAL_SLOTS)
    }
}

impl Globals {
    pub fn with_capacity(slots: usize) -> Globals {
        Globals {
            names: Mutex::new(HashMap::new()),
            values: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The slot of a known name.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// Binds names to fresh slots (or their existing ones). `None` when the table is full.
    pub fn bind(&self, names: &[String]) -> Option<Vec<u32>> {
        let mut table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let next = table.len() as u32;
            let slot = match table.get(n) {
                Some(&s) => s,
                None if (next as usize) < self.values.len() => {
                    table.insert(n.clone(), next);
                    next
                }
                None => return None,
            };
            out.push(slot);
        }
        Some(out)
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

    /// Every bound name with its current value, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u64)> = table
            .iter()
            .map(|(n, &s)| (n.clone(), self.get(s)))
            .collect();
        v.sort();
        v
    }
}
