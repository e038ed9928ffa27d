//! [`ArenaMemory`]: the default executable memory of [`LoadedCode`](crate::LoadedCode) on
//! std hosts, a process-wide arena of code regions that makes loading a code object a
//! `memcpy` under a mutex instead of three system calls.
//!
//! # What it owns
//! One global arena (behind a [`Mutex`]) owns every *region*: a `memfd_create` file
//! (1 MiB, or page-rounded larger for an object that does not fit) mapped twice, once
//! read+write (the *RW view*, where the loader copies code) and once read+execute (the *RX
//! view*, where code runs), at unrelated addresses. Each [`ArenaMemory`] owns one chunk of
//! one region (64-byte granules, so objects never share a cache line), handed out first-fit
//! from a per-region free list (`offset -> length`, coalesced with its neighbours on free,
//! so the space of a dropped object is reused at the same address). Once a region exists,
//! loading and dropping make no system call and cause no page fault in the steady state;
//! `mmap` + `mprotect` + `munmap` per object cost 13-20 µs on the (nested-virtualization)
//! development VM, the arena 0.1-0.3 µs.
//!
//! Freed chunks, and the padding after the code in a chunk, are overwritten with `int3`
//! (`0xCC`) at once, so a stale entry point traps instead of running part of whatever is
//! loaded there next. A region is unmapped when its last chunk is freed if it is larger
//! than the default or another region is already empty (one empty region is kept so a
//! load/drop loop at a region boundary does not map and unmap every time).
//!
//! # W^X
//! The address code is executed from is never writable, but the same physical pages are
//! writable at another address of the process (the RW view) for as long as the region
//! lives — the trade-off of every JIT that uses dual mapping (.NET's W^X mode, for one): a
//! write primitive in the process that also learns the RW view's (unrelated, randomised)
//! address can plant code, where with `mprotect` flipping it could not. In exchange
//! nothing is ever both writable and executable at one address and loading needs no
//! `mprotect`. Code written through the RW view is visible to the RX view at once (same
//! pages) and x86-64 keeps the instruction cache coherent with stores; a chunk is only
//! rewritten after its previous [`LoadedCode`](crate::LoadedCode) was dropped, so no thread
//! can still be executing it.
//!
//! # Fallback and `fork`
//! If the arena cannot be set up — `memfd_create` missing or refused (seccomp,
//! `vm.memfd_noexec = 2`), an executable shared mapping refused (SELinux `execmem`), not
//! Linux — every load transparently falls back to a private [`MmapMemory`]; a later failure
//! to map one more region only sends that object to `MmapMemory`. The regions are shared
//! memory, so they are marked `MADV_DONTFORK`: a child of `fork()` does not inherit them
//! (otherwise parent and child would both write into them), starts with an empty arena of
//! its own, and cannot run code its parent loaded before the fork (it faults); dropping
//! such inherited code in the child is a no-op. x86-64 only, like `MmapMemory`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::memory::{ExecutableMemory, LoadError};
use crate::mmap::MmapMemory;
use crate::page::{page_size, require_coherent_icache};

/// Allocation granule and chunk alignment (one cache line).
const GRANULE: usize = 64;
/// Size of an ordinary region.
const REGION_SIZE: usize = 1 << 20;
/// `int3`: what every byte of a region that holds no live code is set to once used.
const INT3: u8 = 0xCC;

/// Executable memory for one code object: a chunk of the process-wide arena, or private
/// `mmap`ed pages if the arena is unavailable (see the [module docs](self)).
pub struct ArenaMemory(Kind);

enum Kind {
    Chunk(Chunk),
    Mmap(MmapMemory),
}

/// A chunk of a region; returned to the region's free list on drop.
struct Chunk {
    /// Where the chunk starts in the RX view.
    rx: *const u8,
    len: usize,
    /// The region's key (its RX base) and identity: after a `fork` another region may be
    /// mapped at the same address in the child.
    region: usize,
    region_id: u64,
}

// SAFETY: the chunk is owned by this value alone and only read or executed through `rx`;
// writes go through the arena's mutex.
unsafe impl Send for ArenaMemory {}
// SAFETY: as above; shared access only reads or executes the code.
unsafe impl Sync for ArenaMemory {}

/// One memfd mapped RW at `rw` and RX at the region's key, both `size` bytes.
struct Region {
    id: u64,
    rw: *mut u8,
    size: usize,
    /// Free ranges, `offset -> length`, never adjacent (coalesced).
    free: BTreeMap<usize, usize>,
    free_bytes: usize,
}

impl Region {
    /// First fit: the lowest free range of at least `len` bytes.
    fn alloc(&mut self, len: usize) -> Option<usize> {
        if self.free_bytes < len {
            return None;
        }
        let (&offset, &have) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&offset);
        if have > len {
            self.free.insert(offset + len, have - len);
        }
        self.free_bytes -= len;
        Some(offset)
    }

    /// Returns `offset..offset + len` to the free list, merged with free neighbours.
    fn release(&mut self, offset: usize, len: usize) {
        let (mut start, mut total) = (offset, len);
        if let Some((&before, &before_len)) = self.free.range(..offset).next_back() {
            debug_assert!(before + before_len <= offset, "double free");
            if before + before_len == offset {
                self.free.remove(&before);
                start = before;
                total += before_len;
            }
        }
        if let Some(after_len) = self.free.remove(&(offset + len)) {
            total += after_len;
        }
        debug_assert!(self.free.range(offset..offset + len).next().is_none());
        self.free.insert(start, total);
        self.free_bytes += len;
    }

    fn is_empty(&self) -> bool {
        self.free_bytes == self.size
    }
}

/// Whether regions can be made at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Untried,
    Works,
    /// The first attempt failed: every load uses `MmapMemory`.
    Unavailable,
}

struct Arena {
    /// Keyed by the RX view's base address.
    regions: BTreeMap<usize, Region>,
    next_id: u64,
    state: State,
    /// Whether the `fork` handlers are registered.
    fork_handlers: bool,
}

// SAFETY: the raw pointers are addresses of mappings the arena owns; every access to them
// goes through the `ARENA` mutex.
unsafe impl Send for Arena {}

static ARENA: Mutex<Arena> = Mutex::new(Arena {
    regions: BTreeMap::new(),
    next_id: 0,
    state: State::Untried,
    fork_handlers: false,
});

fn lock() -> MutexGuard<'static, Arena> {
    // Nothing panics while the lock is held with the arena half-updated.
    ARENA.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Arena {
    /// A chunk of `len` bytes (a multiple of the granule): `(region key, offset)`.
    fn alloc(&mut self, len: usize) -> Option<(usize, usize)> {
        if self.state == State::Unavailable {
            return None;
        }
        for (&key, region) in self.regions.iter_mut() {
            if let Some(offset) = region.alloc(len) {
                return Some((key, offset));
            }
        }
        let size = len.max(REGION_SIZE).div_ceil(page_size()) * page_size();
        if !self.fork_handlers {
            // Once only: a second `before_fork` would wait for the lock the first holds.
            if !sys::register_fork_handlers() {
                self.state = State::Unavailable;
                return None;
            }
            self.fork_handlers = true;
        }
        match sys::map_region(size) {
            Ok((rw, rx)) => {
                self.state = State::Works;
                let mut region = Region {
                    id: self.next_id,
                    rw,
                    size,
                    free: BTreeMap::from([(0, size)]),
                    free_bytes: size,
                };
                self.next_id += 1;
                let offset = region.alloc(len).expect("a fresh region fits the chunk");
                self.regions.insert(rx as usize, region);
                Some((rx as usize, offset))
            }
            Err(_) => {
                // Refused once for an ordinary region: refused for good (seccomp, policy).
                if self.state == State::Untried && size == REGION_SIZE {
                    self.state = State::Unavailable;
                }
                None
            }
        }
    }
}

// SAFETY: a chunk is copied through the RW view of its region and executed through the RX
// view, which maps the same file pages (so it holds exactly the bytes) and is never
// writable; x86-64 keeps the instruction cache coherent; the chunk is the caller's alone
// until `Drop` returns it, and its region stays mapped while any chunk of it is allocated.
// The fallback is `MmapMemory`, which upholds the contract itself.
unsafe impl ExecutableMemory for ArenaMemory {
    fn map(code: &[u8]) -> Result<ArenaMemory, LoadError> {
        require_coherent_icache("ArenaMemory")?;
        let len = code.len().max(1).div_ceil(GRANULE) * GRANULE;
        let mut arena = lock();
        let Some((key, offset)) = arena.alloc(len) else {
            drop(arena);
            return MmapMemory::map(code).map(|m| ArenaMemory(Kind::Mmap(m)));
        };
        let region = &arena.regions[&key];
        // SAFETY: `offset..offset + len` lies inside the region (the free list only holds
        // ranges of it) and was just taken off the free list, so no other chunk and no
        // running code uses it; the RW view is writable and does not overlap `code`.
        unsafe {
            let dst = region.rw.add(offset);
            std::ptr::copy_nonoverlapping(code.as_ptr(), dst, code.len());
            std::ptr::write_bytes(dst.add(code.len()), INT3, len - code.len());
        }
        let chunk = Chunk {
            rx: (key + offset) as *const u8,
            len,
            region: key,
            region_id: region.id,
        };
        Ok(ArenaMemory(Kind::Chunk(chunk)))
    }

    fn base(&self) -> *const u8 {
        match &self.0 {
            Kind::Chunk(c) => c.rx,
            Kind::Mmap(m) => m.base(),
        }
    }

    fn len(&self) -> usize {
        match &self.0 {
            Kind::Chunk(c) => c.len,
            Kind::Mmap(m) => m.len(),
        }
    }
}

impl ArenaMemory {
    /// Whether this object is in the shared arena (false: private `mmap` fallback).
    pub fn in_arena(&self) -> bool {
        matches!(self.0, Kind::Chunk(_))
    }
}

impl Drop for ArenaMemory {
    fn drop(&mut self) {
        let Kind::Chunk(chunk) = &self.0 else {
            return; // `MmapMemory` unmaps itself.
        };
        let mut arena = lock();
        let Some(region) = arena.regions.get_mut(&chunk.region) else {
            return; // Loaded by the parent of this forked process: not mapped here.
        };
        if region.id != chunk.region_id {
            return; // As above, and another region now lives at that address.
        }
        let offset = chunk.rx as usize - chunk.region;
        // SAFETY: the chunk lies inside the region and is still allocated to `self`, whose
        // borrowers (the `LoadedCode` and anyone running its code) are gone; the RW view is
        // writable.
        unsafe { std::ptr::write_bytes(region.rw.add(offset), INT3, chunk.len) };
        region.release(offset, chunk.len);
        if !region.is_empty() {
            return;
        }
        let (id, size) = (region.id, region.size);
        let keep = size == REGION_SIZE
            && !arena
                .regions
                .values()
                .any(|r| r.id != id && r.is_empty() && r.size == REGION_SIZE);
        if keep {
            return;
        }
        let region = arena.regions.remove(&chunk.region).expect("found above");
        drop(arena);
        // SAFETY: the region is out of the arena and wholly free, so nothing refers to
        // either view any more.
        unsafe { sys::unmap_region(region.rw, chunk.region as *mut u8, region.size) };
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::cell::RefCell;
    use std::io::Error;
    use std::sync::MutexGuard;

    use super::{lock, Arena};

    /// A fresh memfd of `size` bytes mapped RW and RX: `(rw, rx)`.
    pub(super) fn map_region(size: usize) -> Result<(*mut u8, *mut u8), Error> {
        let name = c"hvscript-jit";
        // `MFD_EXEC` asks for an executable memfd where `vm.memfd_noexec = 1` would seal it
        // against execution; kernels before 6.3 do not know the flag.
        // SAFETY: `name` is a NUL-terminated string; memfd_create touches no memory of ours.
        let mut fd =
            unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_EXEC) };
        if fd < 0 && Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // SAFETY: as above.
            fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        }
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        let result = map_views(fd, size);
        // SAFETY: `fd` is ours; the mappings (if any) keep the file alive without it.
        unsafe { libc::close(fd) };
        result
    }

    fn map_views(fd: libc::c_int, size: usize) -> Result<(*mut u8, *mut u8), Error> {
        // SAFETY: `fd` is an open memfd of ours.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            return Err(Error::last_os_error());
        }
        let map = |prot| {
            // SAFETY: a shared mapping of our own file at an address of the kernel's
            // choosing touches no existing memory.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), size, prot, libc::MAP_SHARED, fd, 0) };
            if p == libc::MAP_FAILED {
                return Err(Error::last_os_error());
            }
            // Shared pages must not be inherited by a forked child (see the module docs).
            // SAFETY: `p..p + size` is the mapping just made.
            if unsafe { libc::madvise(p, size, libc::MADV_DONTFORK) } != 0 {
                let e = Error::last_os_error();
                // SAFETY: unmapping the mapping just made, not used afterwards.
                unsafe { libc::munmap(p, size) };
                return Err(e);
            }
            Ok(p as *mut u8)
        };
        let rw = map(libc::PROT_READ | libc::PROT_WRITE)?;
        match map(libc::PROT_READ | libc::PROT_EXEC) {
            Ok(rx) => Ok((rw, rx)),
            Err(e) => {
                // SAFETY: unmapping the RW view just made, not used afterwards.
                unsafe { libc::munmap(rw as *mut libc::c_void, size) };
                Err(e)
            }
        }
    }

    /// # Safety
    /// `rw` and `rx` must be the views of one region of `size` bytes that nothing uses.
    pub(super) unsafe fn unmap_region(rw: *mut u8, rx: *mut u8, size: usize) {
        // SAFETY: the caller's contract: both are whole mappings made by `map_region`.
        unsafe {
            libc::munmap(rw as *mut libc::c_void, size);
            libc::munmap(rx as *mut libc::c_void, size);
        }
    }

    std::thread_local! {
        /// The arena's lock, held by the forking thread across `fork()` so the child gets
        /// a consistent arena (the other threads do not exist in the child).
        static FORK_GUARD: RefCell<Option<MutexGuard<'static, Arena>>> =
            const { RefCell::new(None) };
    }

    extern "C" fn before_fork() {
        let guard = lock();
        // If this thread is exiting (no TLS), fork without holding the lock.
        let _ = FORK_GUARD.try_with(|g| *g.borrow_mut() = Some(guard));
    }

    extern "C" fn after_fork_parent() {
        let _ = FORK_GUARD.try_with(|g| g.borrow_mut().take());
    }

    extern "C" fn after_fork_child() {
        if let Ok(Some(mut arena)) = FORK_GUARD.try_with(|g| g.borrow_mut().take()) {
            // The regions are `MADV_DONTFORK`, so not mapped in this process: forget them
            // (leaked rather than freed, to call as little as possible after `fork`).
            std::mem::forget(std::mem::take(&mut arena.regions));
        }
    }

    /// Registers the handlers that keep the arena consistent across `fork()`.
    pub(super) fn register_fork_handlers() -> bool {
        // SAFETY: the handlers are `extern "C"` functions that live for the whole program.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            ) == 0
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io::{Error, ErrorKind};

    pub(super) fn map_region(_size: usize) -> Result<(*mut u8, *mut u8), Error> {
        Err(Error::new(ErrorKind::Unsupported, "no memfd_create"))
    }

    /// # Safety
    /// Never called: no region is ever mapped here.
    pub(super) unsafe fn unmap_region(_rw: *mut u8, _rx: *mut u8, _size: usize) {}

    pub(super) fn register_fork_handlers() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(size: usize) -> Region {
        Region {
            id: 0,
            rw: std::ptr::null_mut(),
            size,
            free: BTreeMap::from([(0, size)]),
            free_bytes: size,
        }
    }

    #[test]
    fn free_list_coalesces_and_reuses_first_fit() {
        let mut r = region(1024);
        let a = r.alloc(64).unwrap();
        let b = r.alloc(128).unwrap();
        let c = r.alloc(64).unwrap();
        assert_eq!((a, b, c), (0, 64, 192));
        assert!(r.alloc(1024).is_none());
        r.release(b, 128);
        assert_eq!(r.alloc(64), Some(64)); // first fit, in the hole
        r.release(64, 64);
        r.release(a, 64);
        assert_eq!(r.free, BTreeMap::from([(0, 192), (256, 768)]));
        r.release(c, 64);
        assert_eq!(r.free, BTreeMap::from([(0, 1024)]));
        assert!(r.is_empty());
        assert_eq!(r.alloc(1024), Some(0));
        assert_eq!(r.free_bytes, 0);
    }
}
