//! [`ExecutableMemory`]: the one thing a platform must provide to run code objects — copy
//! code bytes into memory that can be executed, and release it on drop — and
//! [`LoadError`], why loading failed.
//!
//! On std hosts [`ArenaMemory`](crate::ArenaMemory) (a process-wide arena of dual-mapped
//! regions, no system call per load) and [`MmapMemory`](crate::MmapMemory) (mmap RW, copy,
//! mprotect RX, munmap on drop) implement it; a hypervisor implements it over its own page
//! allocator. This file is below every implementation and below
//! [`LoadedCode`](crate::LoadedCode)(crate::LoadedCode), which uses them; it imports none of them.

use alloc::string::String;
use core::fmt;

use crate::object::{Arch, FormatError};

/// Why a code object could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Format(FormatError),
    /// Compiled for another instruction set than this process runs.
    WrongArch(Arch),
    /// The platform refused memory.
    Memory(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Format(e) => e.fmt(f),
            LoadError::WrongArch(a) => write!(f, "the code object is for {a:?}, not this host"),
            LoadError::Memory(m) => write!(f, "cannot map code: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LoadError {}

/// Executable memory holding a copy of some machine code.
///
/// # Safety
/// Implementations must return from [`ExecutableMemory::map`] a region that holds exactly
/// the given bytes at [`ExecutableMemory::base`], is executable (and coherent with the
/// instruction cache), is not writable through the addresses it executes from, and stays
/// valid until dropped. Another, writable mapping of the same memory may exist elsewhere in
/// the process (as with [`ArenaMemory`](crate::ArenaMemory)), but nothing may write the
/// region through it while it is mapped.
pub unsafe trait ExecutableMemory: Sized {
    /// Copies `code` into fresh executable memory.
    fn map(code: &[u8]) -> Result<Self, LoadError>;
    fn base(&self) -> *const u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Refuses every load: the default memory where the runtime has no OS to ask.
pub enum NoExecutableMemory {}

// SAFETY: `map` never returns a value (the type is uninhabited), so there is no region
// whose contract could be broken.
unsafe impl ExecutableMemory for NoExecutableMemory {
    fn map(_code: &[u8]) -> Result<Self, LoadError> {
        Err(LoadError::Memory(String::from(
            "no executable memory without std: load with LoadedCode<YourMemory>",
        )))
    }

    fn base(&self) -> *const u8 {
        match *self {}
    }

    fn len(&self) -> usize {
        match *self {}
    }
}
