//! Loading a [`CodeObject`] into executable memory.
//!
//! [`ExecutableMemory`] is the one thing a platform must provide: copy code bytes into
//! memory that can be executed and release it on drop. On std hosts [`ArenaMemory`] (the
//! default: a process-wide arena of dual-mapped regions, no system call per load) and
//! [`MmapMemory`] (mmap RW, copy, mprotect RX, munmap on drop) implement it; the hypervisor
//! core implements the trait for its own page allocator. [`LoadedCode`] ties the memory to
//! the object and fills the table of entry points that calls between the script's functions
//! go through, so nothing in the code is patched.

use std::fmt;

use hvscript_abi::EntryFn;
use hvscript_lang::native::NativeImage;

use crate::arena::ArenaMemory;
use crate::object::{Arch, CodeObject, FormatError};

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

impl std::error::Error for LoadError {}

/// Executable memory holding a copy of some machine code.
///
/// # Safety
/// Implementations must return from [`ExecutableMemory::map`] a region that holds exactly
/// the given bytes at [`ExecutableMemory::base`], is executable (and coherent with the
/// instruction cache), is not writable through the addresses it executes from, and stays
/// valid until dropped. Another, writable mapping of the same memory may exist elsewhere in
/// the process (as with [`ArenaMemory`]), but nothing may write the region through it while
/// it is mapped.
pub unsafe trait ExecutableMemory: Sized {
    fn map(code: &[u8]) -> Result<Self, LoadError>;
    fn base(&self) -> *const u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Anonymous pages from `mmap`, made read+execute after the copy.
pub struct MmapMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is immutable (RX) after `map` and owned by this value alone.
unsafe impl Send for MmapMemory {}
// SAFETY: as above; shared access only reads or executes the code.
unsafe impl Sync for MmapMemory {}

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

/// A code object in executable memory, ready to run.
pub struct LoadedCode<M: ExecutableMemory = ArenaMemory> {
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
                // `extern "C" fn(*mut ExecCtx) -> u64` (the `NativeImage` contract).
                unsafe {
                    std::mem::transmute::<*const u8, EntryFn>(memory.base().add(f.offset as usize))
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

    /// The image the host runtime ([`hvscript_lang::native::NativeRunner`]) runs.
    pub fn image(&self) -> NativeImage<'_> {
        // SAFETY: the entries point into `self.memory` (mapped for as long as `self`
        // lives) at functions the JIT compiled for the ExecCtx contract with this rodata
        // and site table; the borrow of `self` keeps all of it alive.
        unsafe {
            NativeImage::new(
                &self.entries,
                &self.object.rodata,
                &self.object.sites,
                self.object.main_locals(),
                self.object.global_slots,
            )
        }
    }
}
