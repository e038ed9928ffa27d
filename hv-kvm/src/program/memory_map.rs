//! A program's address space as its system calls see it: which pages are mapped, with
//! which permissions, where the program break is and where `mmap` puts new mappings. This
//! is bookkeeping in guest-virtual page units; the VMM backs the pages with guest memory
//! and page tables ([`AddressSpace`] is what it must provide).

use std::collections::BTreeMap;

pub const PAGE: u64 = 0x1000;

/// Page permissions (`PROT_READ | PROT_WRITE | PROT_EXEC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Prot {
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        execute: false,
    };
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        execute: false,
    };

    /// From `mmap`/`mprotect`'s `prot` argument; `None` for unknown bits.
    pub fn from_linux(prot: u64) -> Option<Prot> {
        (prot & !7 == 0).then_some(Prot {
            read: prot & 1 != 0,
            write: prot & 2 != 0,
            execute: prot & 4 != 0,
        })
    }
}

/// What the VMM does for the pages a system call maps, unmaps or re-protects.
pub trait AddressSpace {
    /// Maps `[addr, addr+len)` (page aligned) as zeroed memory with `prot`.
    fn map(&mut self, addr: u64, len: u64, prot: Prot) -> Result<(), i64>;
    /// Removes the pages (their contents are gone).
    fn unmap(&mut self, addr: u64, len: u64);
    /// Changes the pages' permissions.
    fn protect(&mut self, addr: u64, len: u64, prot: Prot);
    /// Copies page contents (`mremap` moving a mapping): `len` bytes from `from` to `to`.
    fn copy(&mut self, from: u64, to: u64, len: u64);
}

/// The mapped pages of a program, by start address (one entry per page).
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    pages: BTreeMap<u64, Prot>,
    /// The program break: `[brk_start, brk)` is the heap.
    pub brk_start: u64,
    pub brk: u64,
    /// `mmap` without an address places mappings below this, downwards (Linux's
    /// top-down layout), and above `mmap_floor`.
    pub mmap_top: u64,
    pub mmap_floor: u64,
}

/// Rounds up to a page; `None` on overflow.
pub fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl MemoryMap {
    /// An empty address space whose heap starts at `brk_start` and whose `mmap` area is
    /// `[mmap_floor, mmap_top)`.
    pub fn new(brk_start: u64, mmap_floor: u64, mmap_top: u64) -> MemoryMap {
        MemoryMap {
            pages: BTreeMap::new(),
            brk_start,
            brk: brk_start,
            mmap_top,
            mmap_floor,
        }
    }

    pub fn is_mapped(&self, page: u64) -> bool {
        self.pages.contains_key(&page)
    }

    pub fn prot(&self, addr: u64) -> Option<Prot> {
        self.pages.get(&(addr & !(PAGE - 1))).copied()
    }

    /// Whether every page of `[addr, addr+len)` is mapped with at least `need`.
    pub fn allows(&self, addr: u64, len: u64, need: Prot) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut page = addr & !(PAGE - 1);
        while page < end {
            match self.pages.get(&page) {
                Some(p) if (!need.read || p.read) && (!need.write || p.write) => {}
                _ => return false,
            }
            page += PAGE;
        }
        true
    }

    /// Records pages as mapped (used for the executable's segments and the stack too).
    pub fn insert(&mut self, addr: u64, len: u64, prot: Prot) {
        let mut page = addr & !(PAGE - 1);
        while page < addr + len {
            self.pages.insert(page, prot);
            page += PAGE;
        }
    }

    fn free(&self, addr: u64, len: u64) -> bool {
        self.pages.range(addr..addr + len).next().is_none()
    }

    /// A free range of `len` bytes for `mmap(NULL, ...)`: the highest below `mmap_top`.
    pub fn find_free(&self, len: u64) -> Option<u64> {
        let mut top = self.mmap_top;
        loop {
            let start = top.checked_sub(len)?;
            if start < self.mmap_floor {
                return None;
            }
            match self.pages.range(start..top).next_back() {
                None => return Some(start),
                Some((&page, _)) => top = page,
            }
        }
    }

    /// `mmap`: anonymous private memory. `hint` with `fixed` replaces what is there.
    pub fn map(
        &mut self,
        space: &mut dyn AddressSpace,
        hint: u64,
        len: u64,
        prot: Prot,
        fixed: bool,
    ) -> Result<u64, i64> {
        let len = page_up(len).filter(|&l| l > 0).ok_or(EINVAL)?;
        let addr = if fixed {
            if !hint.is_multiple_of(PAGE) || hint.checked_add(len).is_none_or(|e| e > USER_TOP) {
                return Err(EINVAL);
            }
            self.unmap(space, hint, len)?;
            hint
        } else if hint != 0
            && hint.is_multiple_of(PAGE)
            && hint.checked_add(len).is_some_and(|e| e <= USER_TOP)
            && self.free(hint, len)
        {
            hint
        } else {
            self.find_free(len).ok_or(ENOMEM)?
        };
        space.map(addr, len, prot)?;
        self.insert(addr, len, prot);
        Ok(addr)
    }

    /// `munmap`: unmapping pages that are not mapped is not an error (as in Linux).
    pub fn unmap(&mut self, space: &mut dyn AddressSpace, addr: u64, len: u64) -> Result<(), i64> {
        if !addr.is_multiple_of(PAGE) || len == 0 {
            return Err(EINVAL);
        }
        let len = page_up(len).ok_or(EINVAL)?;
        let end = addr
            .checked_add(len)
            .filter(|&e| e <= USER_TOP)
            .ok_or(EINVAL)?;
        let pages: Vec<u64> = self.pages.range(addr..end).map(|(&p, _)| p).collect();
        for p in pages {
            self.pages.remove(&p);
            space.unmap(p, PAGE);
        }
        Ok(())
    }

    /// `mprotect`: every page must be mapped (`ENOMEM` otherwise, as in Linux).
    pub fn protect(
        &mut self,
        space: &mut dyn AddressSpace,
        addr: u64,
        len: u64,
        prot: Prot,
    ) -> Result<(), i64> {
        if !addr.is_multiple_of(PAGE) {
            return Err(EINVAL);
        }
        let len = page_up(len).ok_or(EINVAL)?;
        let end = addr.checked_add(len).ok_or(ENOMEM)?;
        let mut page = addr;
        while page < end {
            if !self.pages.contains_key(&page) {
                return Err(ENOMEM);
            }
            page += PAGE;
        }
        self.insert(addr, len, prot);
        space.protect(addr, len, prot);
        Ok(())
    }

    /// `brk`: grows or shrinks the heap; an impossible request returns the old break.
    pub fn set_brk(&mut self, space: &mut dyn AddressSpace, wanted: u64) -> u64 {
        if wanted == 0 || wanted < self.brk_start {
            return self.brk;
        }
        let (Some(old_end), Some(new_end)) = (page_up(self.brk), page_up(wanted)) else {
            return self.brk;
        };
        if new_end > old_end {
            if new_end > self.brk_start + BRK_LIMIT
                || !self.free(old_end, new_end - old_end)
                || space.map(old_end, new_end - old_end, Prot::RW).is_err()
            {
                return self.brk;
            }
            self.insert(old_end, new_end - old_end, Prot::RW);
        } else if new_end < old_end {
            let _ = self.unmap(space, new_end, old_end - new_end);
        }
        self.brk = wanted;
        self.brk
    }

    /// `mremap` without `MREMAP_FIXED`: shrink in place, grow in place when the pages
    /// after are free, else move (with `MREMAP_MAYMOVE`).
    pub fn remap(
        &mut self,
        space: &mut dyn AddressSpace,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
    ) -> Result<u64, i64> {
        if !old.is_multiple_of(PAGE) || new_len == 0 {
            return Err(EINVAL);
        }
        let old_len = page_up(old_len).ok_or(EINVAL)?;
        let new_len = page_up(new_len).ok_or(EINVAL)?;
        let prot = self.prot(old).ok_or(EFAULT)?;
        if !self.allows(old, old_len, Prot::NONE) {
            return Err(EFAULT);
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.unmap(space, old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let grow = new_len - old_len;
        if old + new_len <= USER_TOP && self.free(old + old_len, grow) {
            space.map(old + old_len, grow, prot)?;
            self.insert(old + old_len, grow, prot);
            return Ok(old);
        }
        if !may_move {
            return Err(ENOMEM);
        }
        let to = self.find_free(new_len).ok_or(ENOMEM)?;
        space.map(to, new_len, prot)?;
        space.copy(old, to, old_len);
        self.insert(to, new_len, prot);
        self.unmap(space, old, old_len)?;
        Ok(to)
    }
}

/// The end of x86-64 user space (47 bits).
pub const USER_TOP: u64 = 1 << 47;
/// How far the heap may grow (Linux bounds it by RLIMIT_DATA; here by guest memory).
pub const BRK_LIMIT: u64 = 1 << 30;

pub const EFAULT: i64 = 14;
pub const EINVAL: i64 = 22;
pub const ENOMEM: i64 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    /// An address space that remembers page contents, to check copies.
    #[derive(Default)]
    struct Fake {
        bytes: BTreeMap<u64, u8>,
        maps: usize,
    }
    impl AddressSpace for Fake {
        fn map(&mut self, _: u64, _: u64, _: Prot) -> Result<(), i64> {
            self.maps += 1;
            Ok(())
        }
        fn unmap(&mut self, addr: u64, len: u64) {
            let keys: Vec<u64> = self
                .bytes
                .range(addr..addr + len)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.bytes.remove(&k);
            }
        }
        fn protect(&mut self, _: u64, _: u64, _: Prot) {}
        fn copy(&mut self, from: u64, to: u64, len: u64) {
            let moved: Vec<(u64, u8)> = self
                .bytes
                .range(from..from + len)
                .map(|(k, v)| (k - from + to, *v))
                .collect();
            self.bytes.extend(moved);
        }
    }

    fn map() -> MemoryMap {
        MemoryMap::new(0x60_0000, 0x1000_0000, 0x7fff_0000_0000)
    }

    #[test]
    fn mmap_goes_top_down_and_munmap_frees() {
        let (mut m, mut s) = (map(), Fake::default());
        let a = m.map(&mut s, 0, 0x2000, Prot::RW, false).unwrap();
        let b = m.map(&mut s, 0, 0x1000, Prot::RW, false).unwrap();
        assert_eq!(a, 0x7fff_0000_0000 - 0x2000);
        assert_eq!(b, a - 0x1000);
        assert!(m.allows(a, 0x2000, Prot::RW));
        m.unmap(&mut s, a, 0x2000).unwrap();
        assert!(!m.is_mapped(a));
        assert_eq!(
            m.map(&mut s, 0, 0x1000, Prot::RW, false),
            Ok(0x7fff_0000_0000 - 0x1000)
        );
        assert_eq!(m.map(&mut s, 0, 0, Prot::RW, false), Err(EINVAL));
        assert_eq!(m.unmap(&mut s, 0x1001, 0x1000), Err(EINVAL));
    }

    #[test]
    fn brk_grows_shrinks_and_refuses_what_it_cannot() {
        let (mut m, mut s) = (map(), Fake::default());
        assert_eq!(m.set_brk(&mut s, 0), 0x60_0000);
        assert_eq!(m.set_brk(&mut s, 0x60_2010), 0x60_2010);
        assert!(m.allows(0x60_0000, 0x3000, Prot::RW));
        assert_eq!(m.set_brk(&mut s, 0x60_1000), 0x60_1000);
        assert!(!m.is_mapped(0x60_1000));
        assert_eq!(
            m.set_brk(&mut s, 0x10),
            0x60_1000,
            "below the start: unchanged"
        );
        assert_eq!(m.set_brk(&mut s, 1 << 46), 0x60_1000, "too far: unchanged");
    }

    #[test]
    fn mprotect_needs_mapped_pages_and_mremap_moves_contents() {
        let (mut m, mut s) = (map(), Fake::default());
        let a = m.map(&mut s, 0, 0x1000, Prot::RW, false).unwrap();
        let _guard = m.map(&mut s, 0, 0x1000, Prot::RW, false).unwrap();
        assert_eq!(m.protect(&mut s, a, 0x1000, Prot::NONE), Ok(()));
        assert_eq!(m.prot(a), Some(Prot::NONE));
        assert_eq!(m.protect(&mut s, a, 0x2000, Prot::RW), Err(ENOMEM));
        m.protect(&mut s, a, 0x1000, Prot::RW).unwrap();
        s.bytes.insert(a + 5, 42);
        // The page above is taken by nothing (top-down), the one below by `_guard`:
        // growing in place fails only if the next page is mapped.
        let grown = m.remap(&mut s, a, 0x1000, 0x3000, true).unwrap();
        if grown != a {
            assert_eq!(s.bytes.get(&(grown + 5)), Some(&42));
            assert!(!m.is_mapped(a));
        }
        assert!(m.allows(grown, 0x3000, Prot::RW));
        assert_eq!(
            m.remap(&mut s, 0x5000_0000, 0x1000, 0x2000, true),
            Err(EFAULT)
        );
    }
}
