//! Global variables (`.name`): the compiler's side of the one table of names and 64-bit
//! slots shared by every script, event and core of a session, as in HyperDbg. Names are
//! bound to slots here when a script that assigns them compiles; the values are the
//! runtime's [`GlobalSlots`] (what a run needs), which [`Globals`] derefs to, so an
//! [`crate::Invocation`] takes `&globals` directly.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

pub use hvscript_runtime::{GlobalSlots, DEFAULT_GLOBAL_SLOTS};

pub struct Globals {
    names: Mutex<HashMap<String, u32>>,
    values: Arc<GlobalSlots>,
}

impl Default for Globals {
    fn default() -> Self {
        Globals::with_capacity(DEFAULT_GLOBAL_SLOTS)
    }
}

impl Deref for Globals {
    type Target = GlobalSlots;

    fn deref(&self) -> &GlobalSlots {
        &self.values
    }
}

impl Globals {
    pub fn with_capacity(slots: usize) -> Globals {
        Globals {
            names: Mutex::new(HashMap::new()),
            values: Arc::new(GlobalSlots::with_capacity(slots)),
        }
    }

    /// The value table, shared, for runners that outlive a borrow of `self` (an
    /// `hv_core::CodeScript`).
    pub fn values(&self) -> &Arc<GlobalSlots> {
        &self.values
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
                None if (next as usize) < self.values.capacity() => {
                    table.insert(n.clone(), next);
                    next
                }
                None => return None,
            };
            out.push(slot);
        }
        Some(out)
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
