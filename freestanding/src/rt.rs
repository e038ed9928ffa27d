//! What a Rust program gets from libc and the start files, supplied here: the `_start`
//! entry, a `#[global_allocator]` over a static buffer, the `#[panic_handler]`, and the
//! `mem*` functions compiled code and `core` call.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys;

// The kernel enters `_start` with the stack pointer 16-byte aligned and argc/argv/envp on
// the stack (unused here). `call` pushes the return address, so `main` sees the stack as
// after any other call, as the ABI requires; `main` never returns.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym crate::main,
);

const HEAP_SIZE: usize = 8 << 20;

/// A bump allocator over a static buffer: the program makes a handful of allocations and
/// exits, so freed memory is not reused.
struct Bump {
    heap: UnsafeCell<[u8; HEAP_SIZE]>,
    next: AtomicUsize,
}

// SAFETY: each allocation is a disjoint range of `heap`, claimed with an atomic bump.
unsafe impl Sync for Bump {}

// SAFETY: `alloc` hands out disjoint, suitably aligned ranges of the buffer that stay
// valid for the program's life, or null when it is exhausted.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.heap.get() as usize;
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + current).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= HEAP_SIZE) else {
                return core::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange(current, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (base + start) as *mut u8,
                Err(seen) => current = seen,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    heap: UnsafeCell::new([0; HEAP_SIZE]),
    next: AtomicUsize::new(0),
};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    sys::write(2, b"freestanding: panic");
    if let Some(loc) = info.location() {
        sys::write(2, b" at ");
        sys::write(2, loc.file().as_bytes());
    }
    sys::write(2, b"\n");
    sys::exit(101)
}

// The mem* functions by string instructions: a loop written in Rust could be turned back
// into a call to the very function being defined.

/// # Safety
/// `dst` and `src` valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the direction flag is clear (the ABI's default).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `dst` and `src` valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dst;
    }
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src or past its end: copying forward never reads a written byte.
        // SAFETY: as for `memcpy`, and forward is safe for this overlap.
        unsafe { memcpy(dst, src, n) };
    } else {
        // SAFETY: backward from the last byte, with the direction flag restored after.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dst
}

/// # Safety
/// `dst` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, inside both ranges.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// As [`memcmp`].
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}
