//! Loading a [`CodeObject`] into executable memory.
//!
//! [`ExecutableMemory`] is the one thing a platform must provide: copy code bytes into
//! memory that can be executed and release it on drop. On std hosts
//! [`ArenaMemory`](crate::ArenaMemory) (the default: a process-wide arena of dual-mapped
//! regions, no system call per load) and [`MmapMemory`](crate::MmapMemory) (mmap RW, copy,
//! mprotect RX, munmap on drop) implement it; a hypervisor implements the trait over its
//! own page allocator. [`LoadedCode`] ties the memory to the object and fills the table of
//! entry points that calls between the script's functions go through, so nothing in the
//! code is patched. This file depends on no implementation of the trait but the default
//! type parameter.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hvscript_abi::EntryFn;

use crate::object::{Arch, CodeObject, FormatError};
use crate::runner::CodeImage;

/// The memory [`LoadedCode`] uses unless told otherwise: the arena on std hosts; without
/// std there is no default a loader could use (a platform names its own implementation),
/// so [`NoExecutableMemory`] refuses every load.
#[cfg(feature = "std")]
pub type DefaultMemory = crate::arena::ArenaMemory;
#[cfg(not(feature = "std"))]
pub type DefaultMemory = NoExecutableMemory;

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
/// the process (as with [`ArenaMemory`](crate::ArenaMemory)), but nothing may write the region through it while
/// it is mapped.
pub unsafe trait ExecutableMemory: Sized {
    /// Copies `code` into fresh executable memory.
    fn map(code: &[u8]) -> Result<Self, LoadError>;
    fn base(&self) -> *const u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A code object in executable memory, ready to run.
pub struct LoadedCode<M: ExecutableMemory = DefaultMemory> {
    memory: M,
    entries: Vec<EntryFn>,
    object: CodeObject,
}

impl<M: ExecutableMemory> LoadedCode<M> {
    /// Validates `object` and maps its code.
    pub fn load(object: CodeObject) -> Result<LoadedCode<M>, LoadError> {
        object.validate().map_err(LoadError::Format)?;
        if Arch::host() != Some(object.arch) {
            return Err(LoadError::WrongArch(object.arch));
        }
        let memory = M::map(&object.code)?;
        let entries = object
            .functions
            .iter()
            .map(|f| {
                // SAFETY: `validate` checked that every function lies inside the code, so
                // the address is inside the mapping; the code there was compiled as an
                // `extern "C" fn(*mut ExecCtx) -> u64` (the `CodeImage` contract).
                unsafe {
                    core::mem::transmute::<*const u8, EntryFn>(memory.base().add(f.offset as usize))
                }
            })
            .collect();
        Ok(LoadedCode {
            memory,
            entries,
            object,
        })
    }

    /// Parses, validates and maps serialized code-object bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<LoadedCode<M>, LoadError> {
        LoadedCode::load(CodeObject::from_bytes(bytes).map_err(LoadError::Format)?)
    }

    pub fn object(&self) -> &CodeObject {
        &self.object
    }

    /// Where the code is mapped.
    pub fn base(&self) -> *const u8 {
        self.memory.base()
    }

    /// The image a [`Runner`](crate::Runner) runs.
    pub fn image(&self) -> CodeImage<'_> {
        // SAFETY: the entries point into `self.memory` (mapped for as long as `self`
        // lives) at functions the JIT compiled for the ExecCtx contract with this rodata
        // and site table; the borrow of `self` keeps all of it alive.
        unsafe {
            CodeImage::new(
                &self.entries,
                &self.object.rodata,
                &self.object.sites,
                self.object.main_locals(),
                self.object.global_slots,
            )
        }
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
