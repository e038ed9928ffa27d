//! [`MmapMemory`]: executable memory as private anonymous pages of its own — `mmap` RW,
//! copy, `mprotect` RX, `munmap` on drop. Three system calls per load; the fallback of
//! [`ArenaMemory`](crate::ArenaMemory) and the simplest correct [`ExecutableMemory`].

use alloc::string::ToString;

use crate::memory::{ExecutableMemory, LoadError};
use crate::page::{page_size, require_coherent_icache};

/// Anonymous pages from `mmap`, made read+execute after the copy.
pub struct MmapMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is immutable (RX) after `map` and owned by this value alone.
unsafe impl Send for MmapMemory {}
// SAFETY: as above; shared access only reads or executes the code.
unsafe impl Sync for MmapMemory {}

// SAFETY: `map` copies the bytes into fresh private pages and flips them to RX before
// returning; x86-64 keeps the instruction cache coherent; `Drop` unmaps them.
unsafe impl ExecutableMemory for MmapMemory {
    fn map(code: &[u8]) -> Result<MmapMemory, LoadError> {
        require_coherent_icache("MmapMemory")?;
        let page = page_size();
        let len = code.len().max(1).div_ceil(page) * page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(LoadError::Memory(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        let ptr = ptr as *mut u8;
        // SAFETY: the mapping is `len >= code.len()` bytes, writable, and new (no overlap).
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len()) };
        // SAFETY: `ptr..ptr+len` is exactly the mapping made above.
        if unsafe {
            libc::mprotect(
                ptr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_EXEC,
            )
        } != 0
        {
            let e = std::io::Error::last_os_error().to_string();
            // SAFETY: unmapping the mapping made above, not used afterwards.
            unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
            return Err(LoadError::Memory(e));
        }
        Ok(MmapMemory { ptr, len })
    }

    fn base(&self) -> *const u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for MmapMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this length and is owned by `self`;
        // whoever ran code from it held a borrow of the `LoadedCode`, which has ended.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
