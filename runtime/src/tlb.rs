//! The guest-memory translation cache a [`Runner`](crate::Runner) keeps for compiled code
//! ([`hvscript_abi::TlbEntry`], checked inline by every guest access the JIT emits).
//!
//! Compiled code only reads the entries; this module is the only writer. Entries are filled
//! after a slow-path access succeeded (the built-in or the memory function has just walked
//! the page tables), from what the environment hands out with
//! [`Env::direct_page`](hvscript_stdlib::Env::direct_page), so the environment decides
//! what may be cached. An entry never outlives what made it valid:
//! - a run starts by dropping every entry unless the environment says its translations
//!   are unchanged since they were filled ([`Env::mapping_id`](hvscript_stdlib::Env::mapping_id)
//!   non-zero and equal) and the script's own stack and globals are where they were (a
//!   guest page overlapping them is never cached, and they may move between runs);
//! - a slow-path write that reached the environment (which may have changed the page
//!   tables) drops every entry.

use core::cell::{Cell, UnsafeCell};

use hvscript_abi::exec::{TLB_ENTRIES, TLB_NO_PAGE, TLB_PAGE_SHIFT};
use hvscript_abi::TlbEntry;
use hvscript_stdlib::DirectPage;

/// Where the script's own memory is: start and length in bytes of its local stack and of
/// its global slots. A cached guest page never overlaps them, and they may move between
/// runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OwnMemory {
    pub(crate) stack: (u64, u64),
    pub(crate) globals: (u64, u64),
}

/// The cache. Shared (`&Tlb`) between the runner and its callbacks while compiled code
/// holds a raw pointer to the entries, so every field is a cell: no `&mut` to the entries
/// exists while that pointer is live.
pub(crate) struct Tlb {
    entries: UnsafeCell<[TlbEntry; TLB_ENTRIES]>,
    /// Bit `i` set: entry `i` may hold a page (so clearing touches only those).
    filled: Cell<u32>,
    /// The environment's [`Env::mapping_id`](hvscript_stdlib::Env::mapping_id) when the
    /// first of the current entries was filled; 0 keeps nothing past the run.
    mapping_id: Cell<u64>,
    own: Cell<OwnMemory>,
}

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb {
            entries: UnsafeCell::new([TlbEntry::EMPTY; TLB_ENTRIES]),
            filled: Cell::new(0),
            mapping_id: Cell::new(0),
            own: Cell::new(OwnMemory::default()),
        }
    }
}

impl Tlb {
    /// The entries, for [`hvscript_abi::ExecCtx::tlb`] (compiled code only reads them).
    pub(crate) fn entries(&self) -> *const TlbEntry {
        self.entries.get().cast::<TlbEntry>()
    }

    fn set(&self, i: usize, entry: TlbEntry) {
        // SAFETY: `i < TLB_ENTRIES` (callers index by `% TLB_ENTRIES` or a bit of the
        // 16-bit mask); the cell is only ever accessed through raw pointers (here and by
        // compiled code, which does not run while the runtime is in a callback), so no
        // reference to the entries is live.
        unsafe { self.entries().cast_mut().add(i).write(entry) }
    }

    /// Whether no entry holds a page.
    pub(crate) fn is_empty(&self) -> bool {
        self.filled.get() == 0
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        let mut filled = self.filled.get();
        while filled != 0 {
            self.set(filled.trailing_zeros() as usize, TlbEntry::EMPTY);
            filled &= filled - 1;
        }
        self.filled.set(0);
    }

    /// Starts a run: keeps the entries only if the script's memory has not moved and the
    /// environment vouches that its translations are those the entries were filled under
    /// (`mapping_id` is asked only when there is something to keep).
    pub(crate) fn begin_run(&self, own: OwnMemory, mapping_id: impl FnOnce() -> u64) {
        if !self.is_empty() {
            let keep = own == self.own.get() && {
                let id = mapping_id();
                id != 0 && id == self.mapping_id.get()
            };
            if !keep {
                self.clear();
            }
        }
        // Compared rather than stored: it rarely changes, and a run's stores are its cost.
        if self.own.get() != own {
            self.own.set(own);
        }
    }

    /// Caches `page`, the direct page of the guest page holding `addr`; `mapping_id` is
    /// the environment's, asked when this is the first entry since the cache was empty.
    pub(crate) fn insert(&self, addr: u64, page: DirectPage, mapping_id: impl FnOnce() -> u64) {
        if self.is_empty() {
            self.mapping_id.set(mapping_id());
        }
        let number = addr >> TLB_PAGE_SHIFT;
        let i = number as usize % TLB_ENTRIES;
        let base = number << TLB_PAGE_SHIFT;
        self.set(
            i,
            TlbEntry {
                read_page: number,
                write_page: if page.writable() { number } else { TLB_NO_PAGE },
                delta: (page.host() as u64).wrapping_sub(base),
                reserved: 0,
            },
        );
        self.filled.set(self.filled.get() | 1 << i);
    }

    #[cfg(test)]
    fn entry(&self, i: usize) -> TlbEntry {
        assert!(i < TLB_ENTRIES);
        // SAFETY: in bounds; no compiled code runs in these tests.
        unsafe { self.entries().add(i).read() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(host: usize, writable: bool) -> DirectPage {
        // SAFETY: these pages are only stored and compared, never dereferenced.
        unsafe { DirectPage::new(host as *mut u8, writable) }
    }

    const OWN: OwnMemory = OwnMemory {
        stack: (0x1000, 0x800),
        globals: (0x9000, 0x100),
    };

    #[test]
    fn an_entry_maps_its_page_by_delta() {
        let t = Tlb::default();
        t.insert(0x7_3456, page(0x5000_0000, false), || 0);
        // Page 0x73 lives in entry 0x73 % 16.
        let e = t.entry(3);
        assert_eq!(e.read_page, 0x73);
        assert_eq!(e.write_page, TLB_NO_PAGE);
        assert_eq!(0x7_3456u64.wrapping_add(e.delta), 0x5000_0456);
        t.insert(0x7_3000, page(0x6000_0000, true), || 0);
        assert_eq!(t.entry(3).write_page, 0x73);
    }

    #[test]
    fn a_run_keeps_entries_only_under_the_same_vouching_environment() {
        let t = Tlb::default();
        t.begin_run(OWN, || unreachable!("nothing to keep"));
        t.insert(0x2000, page(0x4000_0000, true), || 9);
        t.begin_run(OWN, || 9);
        assert!(!t.is_empty());
        assert_eq!(t.entry(2).read_page, 2);
        // Another environment (or changed mappings).
        t.begin_run(OWN, || 10);
        assert!(t.is_empty());
        // The stack moved: a cached guest page could now overlap it.
        t.insert(0x2000, page(0x4000_0000, true), || 9);
        let moved = OwnMemory {
            stack: (0x3000, 0x800),
            ..OWN
        };
        t.begin_run(moved, || 9);
        assert!(t.is_empty());
        assert_eq!(t.entry(2), TlbEntry::EMPTY);
        // Mapping id 0: valid for one run only.
        t.insert(0x2000, page(0x4000_0000, true), || 0);
        t.begin_run(moved, || 0);
        assert!(t.is_empty());
    }

    #[test]
    fn clear_empties_every_filled_entry() {
        let t = Tlb::default();
        for p in 0..TLB_ENTRIES as u64 + 3 {
            t.insert(
                p << 12,
                page(0x1000_0000 + (p as usize) * 4096, false),
                || 1,
            );
        }
        t.clear();
        assert!(t.is_empty());
        for i in 0..TLB_ENTRIES {
            assert_eq!(t.entry(i), TlbEntry::EMPTY);
        }
    }
}
