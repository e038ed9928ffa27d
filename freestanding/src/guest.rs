//! [`StaticGuest`]: the tiny guest the exit is dispatched with — one page of guest memory
//! at guest address 0x1000, backed by a buffer of the program, everything else faults.

use hv_core::GuestAccess;
use hvscript_stdlib::MemFault;

/// Guest address of the one page.
const BASE: u64 = 0x1000;
const SIZE: usize = 0x1000;

pub struct StaticGuest {
    page: [u8; SIZE],
}

impl StaticGuest {
    pub fn new() -> StaticGuest {
        StaticGuest { page: [0; SIZE] }
    }

    /// The page's bytes `addr..addr + len`, if they are all in it.
    fn range(addr: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(addr.checked_sub(BASE)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= SIZE).then_some(start..end)
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let r = StaticGuest::range(addr, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.page[r]);
        Some(u64::from_le_bytes(b))
    }
}

impl GuestAccess for StaticGuest {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = StaticGuest::range(addr, buf.len()).ok_or(MemFault::Invalid)?;
        buf.copy_from_slice(&self.page[r]);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = StaticGuest::range(addr, data.len()).ok_or(MemFault::Invalid)?;
        self.page[r].copy_from_slice(data);
        Ok(())
    }
}
