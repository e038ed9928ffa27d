//! [`LoadedCode`]: a validated [`CodeObject`] in [`ExecutableMemory`], ready to run. It
//! ties the memory to the object and fills the table of entry points that calls between
//! the script's functions go through, so nothing in the code is patched;
//! [`LoadedCode::image`] is what a [`Runner`](crate::Runner) runs.

use alloc::vec::Vec;

use hvscript_abi::EntryFn;

#[cfg(not(feature = "std"))]
use crate::memory::NoExecutableMemory;
use crate::memory::{ExecutableMemory, LoadError};
use crate::object::{Arch, CodeObject};
use crate::runner::CodeImage;

/// The memory [`LoadedCode`] uses unless told otherwise: the arena on std hosts; without
/// std there is no default a loader could use (a platform names its own implementation),
/// so [`NoExecutableMemory`](crate::NoExecutableMemory) refuses every load.
#[cfg(feature = "std")]
pub type DefaultMemory = crate::arena::ArenaMemory;
#[cfg(not(feature = "std"))]
pub type DefaultMemory = NoExecutableMemory;

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
