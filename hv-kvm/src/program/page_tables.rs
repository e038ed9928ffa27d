//! x86-64 4-level page tables for a program guest, built by the VMM in guest memory: any
//! 47-bit user address can be mapped to a guest-physical frame with the permissions of its
//! segment (user, writable, no-execute — the last needs `EFER.NXE`), unmapped, or
//! re-protected, as `mmap`, `munmap`, `mprotect` and `brk` ask. Frames come from a
//! [`FrameAllocator`] over a range of guest-physical memory; freed frames are reused.

use hvscript_stdlib::MemFault;

use crate::memory::GuestMemory;

pub const PAGE: u64 = 0x1000;
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Permissions of one mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFlags {
    pub writable: bool,
    pub executable: bool,
    pub user: bool,
}

impl PageFlags {
    fn bits(self) -> u64 {
        PRESENT
            | if self.writable { WRITABLE } else { 0 }
            | if self.user { USER } else { 0 }
            | if self.executable { 0 } else { NO_EXECUTE }
    }
}

/// Guest-physical frames `[start, end)`, handed out one page at a time.
#[derive(Clone, Debug)]
pub struct FrameAllocator {
    next: u64,
    end: u64,
    free: Vec<u64>,
}

impl FrameAllocator {
    pub fn new(start: u64, end: u64) -> FrameAllocator {
        FrameAllocator {
            next: start.next_multiple_of(PAGE),
            end,
            free: Vec::new(),
        }
    }

    /// A zeroed frame, or `None` when guest memory is exhausted.
    pub fn allocate(&mut self, mem: &GuestMemory) -> Option<u64> {
        let frame = match self.free.pop() {
            Some(f) => f,
            None if self.next + PAGE <= self.end => {
                self.next += PAGE;
                self.next - PAGE
            }
            None => return None,
        };
        mem.write(frame, &[0u8; PAGE as usize]).ok()?;
        Some(frame)
    }

    pub fn release(&mut self, frame: u64) {
        self.free.push(frame);
    }

    /// Frames still available.
    pub fn available(&self) -> u64 {
        (self.end - self.next) / PAGE + self.free.len() as u64
    }
}

/// The page tables rooted at [`PageTables::root`] (what CR3 holds).
#[derive(Clone, Copy, Debug)]
pub struct PageTables {
    pub root: u64,
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame left for a table.
    OutOfMemory,
    /// Not a canonical lower-half address, or not page aligned.
    BadAddress,
    /// Guest memory could not be written (the frame range is outside it).
    Memory,
}

impl From<MemFault> for MapError {
    fn from(_: MemFault) -> Self {
        MapError::Memory
    }
}

impl PageTables {
    pub fn new(mem: &GuestMemory, frames: &mut FrameAllocator) -> Result<PageTables, MapError> {
        let root = frames.allocate(mem).ok_or(MapError::OutOfMemory)?;
        Ok(PageTables { root })
    }

    /// The address of `va`'s last-level entry, creating the tables on the way when
    /// `create` (intermediate entries allow everything: the last level decides).
    fn entry(
        &self,
        mem: &GuestMemory,
        frames: &mut FrameAllocator,
        va: u64,
        create: bool,
    ) -> Result<Option<u64>, MapError> {
        if !va.is_multiple_of(PAGE) || va >= 1 << 47 {
            return Err(MapError::BadAddress);
        }
        let mut table = self.root;
        for level in (2..=4u32).rev() {
            let index = (va >> (12 + 9 * (level - 1))) & 0x1ff;
            let slot = table + index * 8;
            let e = mem.read_u64(slot)?;
            if e & PRESENT == 0 {
                if !create {
                    return Ok(None);
                }
                let next = frames.allocate(mem).ok_or(MapError::OutOfMemory)?;
                mem.write_u64(slot, next | PRESENT | WRITABLE | USER)?;
                table = next;
            } else if e & LARGE != 0 {
                return Err(MapError::BadAddress);
            } else {
                table = e & ADDR;
            }
        }
        Ok(Some(table + ((va >> 12) & 0x1ff) * 8))
    }

    /// Maps page `va` to frame `pa`.
    pub fn map(
        &self,
        mem: &GuestMemory,
        frames: &mut FrameAllocator,
        va: u64,
        pa: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let slot = self
            .entry(mem, frames, va, true)?
            .ok_or(MapError::BadAddress)?;
        mem.write_u64(slot, (pa & ADDR) | flags.bits())?;
        Ok(())
    }

    /// Unmaps page `va`; returns the frame it mapped.
    pub fn unmap(&self, mem: &GuestMemory, frames: &mut FrameAllocator, va: u64) -> Option<u64> {
        let slot = self.entry(mem, frames, va, false).ok()??;
        let e = mem.read_u64(slot).ok()?;
        if e & PRESENT == 0 {
            return None;
        }
        mem.write_u64(slot, 0).ok()?;
        Some(e & ADDR)
    }

    /// Changes page `va`'s permissions; false when it is not mapped.
    pub fn protect(
        &self,
        mem: &GuestMemory,
        frames: &mut FrameAllocator,
        va: u64,
        flags: PageFlags,
    ) -> bool {
        let Ok(Some(slot)) = self.entry(mem, frames, va, false) else {
            return false;
        };
        match mem.read_u64(slot) {
            Ok(e) if e & PRESENT != 0 => mem.write_u64(slot, (e & ADDR) | flags.bits()).is_ok(),
            _ => false,
        }
    }

    /// The frame and permissions of page `va`, if mapped.
    pub fn lookup(&self, mem: &GuestMemory, va: u64) -> Option<(u64, PageFlags)> {
        let mut frames = FrameAllocator::new(0, 0);
        let slot = self
            .entry(mem, &mut frames, va & !(PAGE - 1), false)
            .ok()??;
        let e = mem.read_u64(slot).ok()?;
        (e & PRESENT != 0).then_some((
            e & ADDR,
            PageFlags {
                writable: e & WRITABLE != 0,
                executable: e & NO_EXECUTE == 0,
                user: e & USER != 0,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RX: PageFlags = PageFlags {
        writable: false,
        executable: true,
        user: true,
    };
    const RW: PageFlags = PageFlags {
        writable: true,
        executable: false,
        user: true,
    };

    #[test]
    fn any_user_address_maps_and_the_cpus_walk_finds_it() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let mut frames = FrameAllocator::new(0x1000, 1 << 20);
        let pt = PageTables::new(&mem, &mut frames).unwrap();
        let cases = [
            (0x40_1000, RX),
            (0x5555_5555_4000, RW),
            (0x7fff_ffff_f000, RW),
        ];
        for (va, flags) in cases {
            let pa = frames.allocate(&mem).unwrap();
            pt.map(&mem, &mut frames, va, pa, flags).unwrap();
            mem.write(pa + 0x10, &va.to_le_bytes()).unwrap();
            assert_eq!(mem.translate(pt.root, va + 0x10), Some(pa + 0x10));
            assert_eq!(pt.lookup(&mem, va + 0x123), Some((pa, flags)));
        }
        assert_eq!(mem.translate(pt.root, 0x40_2000), None);
        assert!(pt.protect(&mem, &mut frames, 0x40_1000, RW));
        assert_eq!(pt.lookup(&mem, 0x40_1000).unwrap().1, RW);
        let pa = pt.unmap(&mem, &mut frames, 0x40_1000).unwrap();
        assert_eq!(mem.translate(pt.root, 0x40_1000), None);
        frames.release(pa);
        assert_eq!(
            frames.allocate(&mem),
            Some(pa),
            "freed frames are reused, zeroed"
        );
        let mut b = [1u8; 8];
        mem.read(pa + 0x10, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert_eq!(
            pt.map(&mem, &mut frames, 1 << 47, pa, RW),
            Err(MapError::BadAddress)
        );
        assert_eq!(
            pt.map(&mem, &mut frames, 0x1001, pa, RW),
            Err(MapError::BadAddress)
        );
    }

    #[test]
    fn running_out_of_frames_is_an_error_not_a_panic() {
        let mem = GuestMemory::new(0x3000).unwrap();
        let mut frames = FrameAllocator::new(0, 0x3000);
        let pt = PageTables::new(&mem, &mut frames).unwrap();
        // Three more tables are needed for the first page: only two frames remain.
        assert_eq!(frames.available(), 2);
        assert_eq!(
            pt.map(&mem, &mut frames, 0x40_0000, 0, RW),
            Err(MapError::OutOfMemory)
        );
    }
}
