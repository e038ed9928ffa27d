//! `!monitor` on a program's memory: the guest frames behind the watched virtual pages
//! are carved out of the program's one memory slot, so the program's accesses to them
//! exit to the VMM as MMIO (`../shared/spec/kvm.md`): a page watched for writes only is
//! in a `KVM_MEM_READONLY` slot (reads and instruction fetches run natively, every write
//! exits), a page watched for reads is in no slot at all (every access exits; such a page
//! must not hold code, since this KVM cannot execute from one). KVM's instruction
//! emulator decodes the access, the VMM performs it on guest RAM (`exits.rs` raises the
//! events around it).
//!
//! The watched frames follow the program's mappings: they are recomputed after every
//! system call that maps, unmaps or moves memory and whenever the event table changes,
//! and the slots are rebuilt only when the set of frames changed. A watch over memory not
//! mapped yet starts watching when the program maps it. Writes the VMM makes on the
//! program's behalf (a `read` into a watched buffer) are not accesses by the program and
//! raise no event.

use std::collections::BTreeMap;

use hv_core::{Access, EventKind, EventTable, Filter};
use kvm_bindings::KVM_MEM_READONLY;
use kvm_ioctls::VmFd;

use super::memory_map::{MemoryMap, PAGE};
use crate::memory::GuestMemory;

/// The most pages one program may watch at once (each is a memory slot boundary).
pub const MAX_WATCHED_PAGES: usize = 4096;

/// The program's watched frames and the memory slots that make them exit.
pub struct Watches {
    /// Watched guest frame -> (its virtual page, whether reads must exit too).
    frames: BTreeMap<u64, (u64, bool)>,
    /// Slots 0..slots are in use.
    slots: u32,
    /// Pages whose reads are not watched because they hold code, already told.
    pub notes: Vec<String>,
}

impl Watches {
    /// The program's memory as one slot (what `run_program` created as slot 0).
    pub fn new() -> Watches {
        Watches {
            frames: BTreeMap::new(),
            slots: 1,
            notes: Vec::new(),
        }
    }

    /// The virtual page whose frame is `frame`, if it is watched.
    pub fn page_of(&self, frame: u64) -> Option<u64> {
        self.frames
            .get(&(frame & !(PAGE - 1)))
            .map(|(page, _)| *page)
    }

    /// Recomputes the watched frames from the enabled `!monitor` events and the program's
    /// page tables (`root`), and rebuilds the slots if they changed.
    pub fn refresh(
        &mut self,
        table: &EventTable,
        memory: &MemoryMap,
        mem: &GuestMemory,
        root: u64,
        vm: &VmFd,
    ) -> Result<(), String> {
        let mut wanted: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        for (event, enabled) in table.events_of(EventKind::Monitor) {
            let Filter::Range {
                access, from, to, ..
            } = event.spec.filter
            else {
                continue;
            };
            if !enabled {
                continue;
            }
            let mut page = from & !(PAGE - 1);
            while page <= to {
                if let Some(frame) = mem.translate(root, page) {
                    let code = memory.prot(page).is_some_and(|p| p.execute);
                    let mut read = access.contains(Access::READ);
                    if read && code {
                        read = false;
                        let note = format!(
                            "!monitor: reads of {page:#x} are not watched: the page holds \
                             code, and this KVM cannot run code from a page that exits on \
                             reads (its writes are watched)"
                        );
                        if !self.notes.contains(&note) {
                            self.notes.push(note);
                        }
                    }
                    let entry = wanted.entry(frame & !(PAGE - 1)).or_insert((page, false));
                    entry.1 |= read;
                }
                if wanted.len() > MAX_WATCHED_PAGES {
                    return Err(format!(
                        "!monitor: at most {MAX_WATCHED_PAGES} pages can be watched at once"
                    ));
                }
                page = match page.checked_add(PAGE) {
                    Some(p) => p,
                    None => break,
                };
            }
        }
        if wanted != self.frames {
            self.frames = wanted;
            self.rebuild_slots(vm, mem, false)?;
        }
        Ok(())
    }

    /// Whether any frame is watched.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether an access of `len` bytes at virtual `addr` touches a watched page.
    pub fn touches(&self, addr: u64, len: u64) -> bool {
        let last = addr.saturating_add(len.max(1) - 1) & !(PAGE - 1);
        self.frames
            .values()
            .any(|(page, _)| (addr & !(PAGE - 1)..=last).contains(page))
    }

    /// Lifts every watch (`true`) so one instruction can run natively, or puts them back.
    pub fn suspend(&mut self, suspended: bool, vm: &VmFd, mem: &GuestMemory) -> Result<(), String> {
        self.rebuild_slots(vm, mem, suspended)
    }

    /// Lays the memory slots out again: the program's memory, with each watched frame
    /// either read-only (writes exit) or left out (every access exits); with `plain`, as
    /// one slot.
    fn rebuild_slots(&mut self, vm: &VmFd, mem: &GuestMemory, plain: bool) -> Result<(), String> {
        let size = mem.size() as u64;
        let mut regions = Vec::new();
        let mut cursor = 0;
        let none = BTreeMap::new();
        let frames = if plain { &none } else { &self.frames };
        for (&frame, &(_, read)) in frames {
            if frame >= size {
                continue;
            }
            if frame > cursor {
                regions.push((cursor, frame - cursor, 0));
            }
            if !read {
                regions.push((frame, PAGE, KVM_MEM_READONLY));
            }
            cursor = frame + PAGE;
        }
        if cursor < size {
            regions.push((cursor, size - cursor, 0));
        }
        let set = |slot: u32, gpa: u64, len: u64, flags: u32| {
            let region = mem.slot(slot, gpa, len, flags);
            // SAFETY: every region lies inside `mem`'s own live mapping (gpa + len <= its
            // size), which outlives the VM; a zero size deletes the slot.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION (slot {slot}): {e}"))
        };
        for slot in 0..self.slots {
            set(slot, 0, 0, 0)?;
        }
        for (slot, &(gpa, len, flags)) in regions.iter().enumerate() {
            set(slot as u32, gpa, len, flags)?;
        }
        self.slots = regions.len() as u32;
        Ok(())
    }
}

impl Default for Watches {
    fn default() -> Self {
        Watches::new()
    }
}

/// Why a `!monitor` range cannot be watched in a program, if it cannot.
pub fn refusal(filter: &Filter) -> Option<String> {
    let Filter::Range {
        access,
        physical,
        from,
        to,
    } = *filter
    else {
        return None;
    };
    if physical {
        return Some(
            "a program's memory is watched by virtual address (`va`); its physical frames \
             change as it maps memory"
                .into(),
        );
    }
    if access.contains(Access::EXECUTE) {
        return Some(
            "execute watches need hardware breakpoints, which do not fire at CPL3 on this \
             KVM: hook the code with !epthook instead"
                .into(),
        );
    }
    if from < super::vm::FIRST_PROGRAM_ADDRESS {
        return Some(format!(
            "addresses below {:#x} are the VMM's own pages, not the program's",
            super::vm::FIRST_PROGRAM_ADDRESS
        ));
    }
    if to.saturating_sub(from) / PAGE >= MAX_WATCHED_PAGES as u64 {
        return Some(format!(
            "the range spans more than {MAX_WATCHED_PAGES} pages (16 MiB)"
        ));
    }
    None
}
