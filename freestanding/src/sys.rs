//! Linux x86-64 system calls by inline assembly (there is no libc), and what the program
//! builds on them: reading stdin, writing stderr, exiting, and [`SyscallMemory`], the
//! program's own [`ExecutableMemory`] over `mmap`/`mprotect`/`munmap`.

use alloc::vec::Vec;
use core::arch::asm;

use hvscript_runtime::{ExecutableMemory, LoadError};

const SYS_READ: usize = 0;
const SYS_WRITE: usize = 1;
const SYS_MMAP: usize = 9;
const SYS_MPROTECT: usize = 10;
const SYS_MUNMAP: usize = 11;
const SYS_EXIT_GROUP: usize = 231;

const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const PROT_EXEC: usize = 4;
const MAP_PRIVATE: usize = 0x02;
const MAP_ANONYMOUS: usize = 0x20;
const PAGE: usize = 4096;

/// One system call; the result is the kernel's (a negative errno on failure).
///
/// # Safety
/// The call and its arguments must be valid for that system call (pointers to memory of
/// the lengths given, and nothing the program still uses unmapped or changed).
unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers rcx and r11 only,
    // and the kernel does not touch the user stack.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

pub fn exit(status: i32) -> ! {
    // SAFETY: exit_group takes a status and ends the process; nothing is passed by pointer.
    unsafe { syscall6(SYS_EXIT_GROUP, [status as usize, 0, 0, 0, 0, 0]) };
    // exit_group does not return; if it somehow did, trap rather than run on.
    loop {
        // SAFETY: ud2 raises #UD; it touches no memory.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
}

/// Writes all of `bytes` to `fd` (best effort: a failing write is dropped).
pub fn write(fd: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is readable for its length.
        let n = unsafe {
            syscall6(
                SYS_WRITE,
                [fd, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
            )
        };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Everything readable from `fd` until end of file.
pub fn read_all(fd: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            syscall6(
                SYS_READ,
                [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
            )
        };
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Private anonymous pages: mapped read+write, filled, then made read+execute.
pub struct SyscallMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the pages are immutable (RX) after `map` and owned by this value alone.
unsafe impl Send for SyscallMemory {}
// SAFETY: as above; shared access only reads or executes the code.
unsafe impl Sync for SyscallMemory {}

fn failed(what: &'static str) -> LoadError {
    LoadError::Memory(what.into())
}

// SAFETY: `map` copies the code into fresh private pages and makes them read+execute (not
// writable) before returning; x86-64 keeps the instruction cache coherent with the copy;
// `Drop` unmaps them, and nothing else maps or writes them.
unsafe impl ExecutableMemory for SyscallMemory {
    fn map(code: &[u8]) -> Result<SyscallMemory, LoadError> {
        let len = code.len().max(1).div_ceil(PAGE) * PAGE;
        let flags = MAP_PRIVATE | MAP_ANONYMOUS;
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing touches
        // no existing memory.
        let ret = unsafe {
            syscall6(
                SYS_MMAP,
                [0, len, PROT_READ | PROT_WRITE, flags, usize::MAX, 0],
            )
        };
        if (-4095..0).contains(&ret) {
            return Err(failed("mmap refused"));
        }
        let ptr = ret as *mut u8;
        // SAFETY: the mapping is `len >= code.len()` writable bytes, new, so no overlap.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len()) };
        // SAFETY: `ptr..ptr + len` is exactly the mapping made above.
        let ret = unsafe {
            syscall6(
                SYS_MPROTECT,
                [ptr as usize, len, PROT_READ | PROT_EXEC, 0, 0, 0],
            )
        };
        if ret != 0 {
            // SAFETY: unmapping the mapping made above, which nothing else refers to.
            unsafe { syscall6(SYS_MUNMAP, [ptr as usize, len, 0, 0, 0, 0]) };
            return Err(failed("mprotect refused"));
        }
        Ok(SyscallMemory { ptr, len })
    }

    fn base(&self) -> *const u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SyscallMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this length and is owned by `self`;
        // code ran from it only while the `LoadedCode` holding `self` was borrowed.
        unsafe { syscall6(SYS_MUNMAP, [self.ptr as usize, self.len, 0, 0, 0, 0]) };
    }
}
