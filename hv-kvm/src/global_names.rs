//! A session's global variables by name: which slot of the shared [`GlobalSlots`] each
//! `.name` a front end compiled against lives in. Both guests (the demo VM and a program)
//! keep one; clients compile against [`GlobalNames::names`] and the VM accepts their
//! bindings with [`GlobalNames::bind`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use hvscript_runtime::GlobalSlots;

/// The start of the refusal a client gets when another client bound globals since it
/// asked: recompile against the new names.
pub const STALE_GLOBALS: &str = "the VM's globals changed; recompile";

/// Names to slots, for one session.
#[derive(Default)]
pub struct GlobalNames {
    table: Mutex<BTreeMap<String, u32>>,
}

impl GlobalNames {
    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The names with their slots: what a front end compiles against.
    pub fn names(&self) -> Vec<(String, u32)> {
        self.table().iter().map(|(n, &s)| (n.clone(), s)).collect()
    }

    /// The slot of `.name`, if a script bound it.
    pub fn slot(&self, name: &str) -> Option<u32> {
        self.table().get(name).copied()
    }

    /// Forgets every name.
    pub fn clear(&self) {
        self.table().clear();
    }

    /// Accepts the bindings a script was compiled with: a known name must have its slot,
    /// a new name must take a slot no name holds (and that exists in `globals`). Anything
    /// else means another client bound names since this one asked: `Err` says to
    /// recompile, and nothing is bound.
    pub fn bind(&self, globals: &GlobalSlots, bindings: &[(String, u32)]) -> Result<(), String> {
        let mut table = self.table();
        let mut taken: BTreeMap<u32, &str> = table.iter().map(|(n, &s)| (s, n.as_str())).collect();
        let mut new = Vec::new();
        for (name, slot) in bindings {
            let stale = match table.get(name) {
                Some(&s) => s != *slot,
                None => {
                    let free = (*slot as usize) < globals.capacity() && !taken.contains_key(slot);
                    if free {
                        taken.insert(*slot, name);
                        new.push((name.clone(), *slot));
                    }
                    !free
                }
            };
            if stale {
                return Err(format!(
                    "{STALE_GLOBALS} (`.{name}` was compiled into slot {slot}, which the VM \
                     does not have for it)"
                ));
            }
        }
        table.extend(new);
        Ok(())
    }
}
