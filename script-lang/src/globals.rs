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

    /// A table bound exactly to `names` (`(name, slot)`, as a hypervisor that owns the
    /// session's table reports them) over `values`: a front end compiles against it, and
    /// names new to it go to slots no name holds.
    pub fn with_names(
        values: Arc<GlobalSlots>,
        names: impl IntoIterator<Item = (String, u32)>,
    ) -> Globals {
        Globals {
            names: Mutex::new(names.into_iter().collect()),
            values,
        }
    }

    /// Every bound name with its slot, sorted by slot.
    pub fn bindings(&self) -> Vec<(String, u32)> {
        let table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u32)> = table.iter().map(|(n, &s)| (n.clone(), s)).collect();
        v.sort_by_key(|b| b.1);
        v
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
            if let Some(&s) = table.get(n) {
                out.push(s);
                continue;
            }
            // The lowest slot no name holds: a table given by `with_names` may have gaps.
            let used: std::collections::HashSet<u32> = table.values().copied().collect();
            let next = (0..self.values.capacity() as u32).find(|s| !used.contains(s));
            let slot = match next {
                Some(next) => {
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
