//! Page-size and instruction-cache facts the std loaders ([`MmapMemory`](crate::MmapMemory),
//! [`ArenaMemory`](crate::ArenaMemory)) share; at the bottom of both, importing neither.

use alloc::format;

use crate::memory::LoadError;

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Code copied into memory may only run without an instruction-cache flush on x86-64, the
/// one architecture the loaders support.
pub(crate) fn require_coherent_icache(loader: &str) -> Result<(), LoadError> {
    if cfg!(target_arch = "x86_64") {
        Ok(())
    } else {
        Err(LoadError::Memory(format!(
            "{loader} supports x86-64 only (no instruction-cache maintenance yet)"
        )))
    }
}
