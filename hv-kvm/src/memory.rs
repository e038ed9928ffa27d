//! Guest memory: one anonymous `mmap` registered with KVM as memory slot 0 at guest-physical
//! address 0, and the accessors the VMM and the scripts use on it.
//!
//! Scripts reach guest memory through [`GuestView`], hv-core's [`GuestAccess`] for one
//! exit: guest-virtual addresses are translated by walking the guest's own 4-level page
//! tables from the vCPU's CR3 (4 KiB, 2 MiB and 1 GiB pages), so a script sees exactly what
//! the guest instruction would. Every access is bounds-checked against the slot: a bad
//! address is a [`MemFault`], never a host fault. The view also hands translated pages to
//! compiled code's translation cache (`GuestView::direct_page`), keeping page-table pages
//! out of what it lets compiled code write.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hv_core::GuestAccess;
use hvscript_stdlib::{AtomicRmw, DirectPage, MemFault, Unavailable};

/// The guest's RAM, mapped in the VMM.
pub struct GuestMemory {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this struct for its whole life; every
// access goes through bounds-checked raw-pointer copies or atomics, never through Rust
// references that could alias, so sharing it between vCPU threads is sound (the guest
// itself writes it concurrently, as with any VMM).
unsafe impl Send for GuestMemory {}
// SAFETY: see `Send` above.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes (a multiple of the page size) of zeroed anonymous memory.
    pub fn new(size: usize) -> std::io::Result<GuestMemory> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions;
        // the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(GuestMemory {
            ptr: ptr.cast(),
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The host address of guest-physical 0 (for the KVM memory slot).
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    /// KVM memory slot `slot` over `[gpa, gpa + len)` of this memory, with `flags`.
    pub fn slot(
        &self,
        slot: u32,
        gpa: u64,
        len: u64,
        flags: u32,
    ) -> kvm_bindings::kvm_userspace_memory_region {
        kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: self.host_addr() + gpa,
        }
    }

    fn check(&self, gpa: u64, len: usize) -> Result<usize, MemFault> {
        let start = usize::try_from(gpa).map_err(|_| MemFault::Invalid)?;
        let end = start.checked_add(len).ok_or(MemFault::Invalid)?;
        if end > self.size {
            return Err(MemFault::Invalid);
        }
        Ok(start)
    }

    /// Copies guest-physical memory out.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let off = self.check(gpa, buf.len())?;
        // SAFETY: `check` proved [off, off+len) lies inside the mapping; `buf` is a distinct
        // host buffer, so the regions cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies into guest-physical memory.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemFault> {
        let off = self.check(gpa, data.len())?;
        // SAFETY: as in `read`, the destination range is inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
        Ok(())
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemFault> {
        Ok(self.atomic_u64(gpa)?.load(Ordering::SeqCst))
    }

    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), MemFault> {
        self.atomic_u64(gpa)?.store(value, Ordering::SeqCst);
        Ok(())
    }

    /// An aligned 8-byte word of guest memory as an atomic: the guest's own `lock`ed
    /// instructions and the VMM's operations on it are then atomic with each other.
    pub fn atomic_u64(&self, gpa: u64) -> Result<&AtomicU64, MemFault> {
        if !gpa.is_multiple_of(8) {
            return Err(MemFault::Invalid);
        }
        let off = self.check(gpa, 8)?;
        // SAFETY: in bounds (checked), 8-byte aligned (the mapping is page-aligned and the
        // offset is a multiple of 8), and the memory lives as long as `self`.
        Ok(unsafe { &*(self.ptr.add(off) as *const AtomicU64) })
    }

    fn atomic_u32(&self, gpa: u64) -> Result<&AtomicU32, MemFault> {
        if !gpa.is_multiple_of(4) {
            return Err(MemFault::Invalid);
        }
        let off = self.check(gpa, 4)?;
        // SAFETY: in bounds, 4-byte aligned, lives as long as `self` (as `atomic_u64`).
        Ok(unsafe { &*(self.ptr.add(off) as *const AtomicU32) })
    }

    /// Translates a guest-virtual address with the page tables rooted at `cr3`
    /// (4-level paging, as the guests of this VMM use). `None`: not mapped.
    pub fn translate(&self, cr3: u64, va: u64) -> Option<u64> {
        self.walk(cr3, va, |_| {})
    }

    /// [`GuestMemory::translate`], telling `table` the guest-physical address of each
    /// page-table page the walk reads.
    fn walk(&self, cr3: u64, va: u64, mut table_page: impl FnMut(u64)) -> Option<u64> {
        const PRESENT: u64 = 1;
        const LARGE: u64 = 1 << 7;
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let mut table = cr3 & ADDR;
        for level in (1..=4u32).rev() {
            let shift = 12 + 9 * (level - 1);
            let index = (va >> shift) & 0x1ff;
            table_page(table);
            let entry = self.read_u64(table + index * 8).ok()?;
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 1 || ((level == 2 || level == 3) && entry & LARGE != 0) {
                let page_mask = (1u64 << shift) - 1;
                return Some((entry & ADDR & !page_mask) | (va & page_mask));
            }
            table = entry & ADDR;
        }
        None
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are exactly the mapping made in `new`, unmapped once; KVM
        // (the VM fd) is dropped before the memory by the owner's field order.
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

/// Guest memory as one exit's scripts see it: virtual addresses through the page tables
/// of the vCPU's CR3 at the exit; also what else a script may ask of the platform during
/// the exit (sleeping, injecting an interruption).
pub struct GuestView<'a> {
    pub mem: &'a GuestMemory,
    pub cr3: u64,
    /// `microsleep` time spent in this exit.
    slept: std::time::Duration,
    /// Where `pause()` stops (the VM's debugger), for the views of exits.
    debugger: Option<&'a crate::debugger::Debugger>,
    /// What this view has handed out as direct pages.
    direct: DirectPages,
}

/// The guest-physical pages behind the direct pages a [`GuestView`] handed out: the
/// page-table pages their walks read, and the pages given out writable. A writable page
/// that is also a page table would let compiled code change a translation behind the
/// cache's back, so the two sets are kept apart: a write request for a table page gets a
/// read-only page, and a walk through a page already given out writable gets none. Both
/// are small (a script's cache holds 16 pages); when one is full, no more pages are
/// handed out.
#[derive(Default)]
struct DirectPages {
    tables: Vec<u64>,
    writable: Vec<u64>,
}

const MAX_DIRECT_TABLES: usize = 64;
const MAX_DIRECT_WRITABLE: usize = 32;

/// The most `microsleep` may wait in one exit: a script never holds a vCPU longer.
pub const MAX_SLEEP_PER_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// An interruption a script asked for with `event_inject` / `event_inject_error_code`:
/// HyperDbg's interruption type (0 external interrupt, 2 NMI, 3 hardware exception,
/// 4 software interrupt, 5 privileged software exception, 6 software exception), vector,
/// error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub kind: u8,
    pub vector: u8,
    pub error_code: Option<u32>,
}

thread_local! {
    /// The injection this vCPU thread's scripts asked for, taken by the vCPU loop before
    /// it enters the guest again (scripts run on their vCPU's thread).
    static PENDING_INJECTION: std::cell::Cell<Option<Injection>> = const { std::cell::Cell::new(None) };
}

/// Takes the injection the scripts of this thread's last exit asked for.
pub fn take_injection() -> Option<Injection> {
    PENDING_INJECTION.with(|p| p.take())
}

impl<'a> GuestView<'a> {
    pub fn new(mem: &'a GuestMemory, cr3: u64) -> GuestView<'a> {
        GuestView {
            mem,
            cr3,
            slept: std::time::Duration::ZERO,
            debugger: None,
            direct: DirectPages::default(),
        }
    }

    /// The view of an exit: `pause()` in its scripts stops in `debugger`.
    pub fn with_debugger(mut self, debugger: &'a crate::debugger::Debugger) -> GuestView<'a> {
        self.debugger = Some(debugger);
        self
    }
}

impl GuestView<'_> {
    /// Applies `f` to each physically contiguous piece of `[va, va+len)`.
    fn pieces(
        &self,
        va: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), MemFault>,
    ) -> Result<(), MemFault> {
        let mut done = 0usize;
        while done < len {
            let addr = va.checked_add(done as u64).ok_or(MemFault::Invalid)?;
            let pa = self
                .mem
                .translate(self.cr3, addr)
                .ok_or(MemFault::Invalid)?;
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let n = in_page.min(len - done);
            f(pa, done, n)?;
            done += n;
        }
        Ok(())
    }

    fn phys_of(&self, va: u64, len: u64) -> Result<u64, MemFault> {
        let pa = self.mem.translate(self.cr3, va).ok_or(MemFault::Invalid)?;
        // Atomics need the whole word in one page.
        if (va & 0xfff) + len > 0x1000 {
            return Err(MemFault::Invalid);
        }
        Ok(pa)
    }
}

impl GuestAccess for GuestView<'_> {
    fn can_pause(&self) -> bool {
        self.debugger.is_some_and(|d| d.has_console())
    }

    fn pause(&mut self, at: &hv_core::PauseInfo, regs: &mut hvscript_abi::GuestRegs) {
        if let Some(d) = self.debugger {
            d.break_in(at, regs, self.cr3);
        }
    }

    /// Sleeps on the vCPU's thread (the guest's vCPU waits, as HyperDbg's core does), at
    /// most [`MAX_SLEEP_PER_EXIT`] in all per exit.
    fn microsleep(&mut self, us: u64) -> Result<(), Unavailable> {
        let want = std::time::Duration::from_micros(us);
        let left = MAX_SLEEP_PER_EXIT.saturating_sub(self.slept);
        std::thread::sleep(want.min(left));
        self.slept += want.min(left);
        if want > left {
            return Err(Unavailable(
                "microsleep: one exit may sleep at most one second in all; the rest is skipped",
            ));
        }
        Ok(())
    }

    /// Queued for the vCPU's next entry (`KVM_SET_VCPU_EVENTS`); a later request in the
    /// same exit replaces an earlier one, as only one event can be injected at a time.
    fn inject(&mut self, kind: u8, vector: u8, error_code: Option<u32>) -> Result<(), Unavailable> {
        if !matches!(kind, 0 | 2..=6) {
            return Err(Unavailable("this interruption type cannot be injected"));
        }
        PENDING_INJECTION.with(|p| {
            p.set(Some(Injection {
                kind,
                vector,
                error_code,
            }))
        });
        Ok(())
    }

    /// The host's clock, UTC (hvscript has no time-zone database).
    fn local_time(&mut self) -> Option<hvscript_stdlib::LocalTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(hvscript_stdlib::LocalTime::from_unix(
            now.as_secs(),
            now.subsec_millis() as u16,
        ))
    }

    /// Valid for this execution only ([`GuestAccess::mapping_id`] stays 0): the guest may
    /// change its page tables between exits. Within the execution, see [`DirectPages`];
    /// a write through `write`, `write_phys` or the atomics makes the runtime drop every
    /// page, so page-table edits by the script itself are seen. (Edits by another vCPU in
    /// the middle of the execution are seen as a hardware TLB would: maybe not yet.)
    fn direct_page(&mut self, addr: u64, write: bool) -> Option<DirectPage> {
        let mut walked = [0u64; 4];
        let mut n = 0;
        let pa = self.mem.walk(self.cr3, addr, |t| {
            walked[n] = t;
            n += 1;
        })?;
        let page = pa & !0xfff;
        let offset = self.mem.check(page, 0x1000).ok()?;
        let d = &mut self.direct;
        if walked[..n].iter().any(|t| d.writable.contains(t)) {
            return None;
        }
        for &t in &walked[..n] {
            if !d.tables.contains(&t) {
                if d.tables.len() == MAX_DIRECT_TABLES {
                    return None;
                }
                d.tables.push(t);
            }
        }
        let writable = write
            && !d.tables.contains(&page)
            && (d.writable.contains(&page) || d.writable.len() < MAX_DIRECT_WRITABLE);
        if writable && !d.writable.contains(&page) {
            d.writable.push(page);
        }
        // SAFETY: `check` proved the page lies inside the mapping, which outlives this
        // view and is readable and writable; `read`/`write` of the same guest-virtual
        // bytes reach exactly these host bytes (same walk, same slot); the page is valid
        // for this execution only (mapping id 0), and a writable page is never one of the
        // page tables behind a page this view handed out (`DirectPages`).
        Some(unsafe { DirectPage::new(self.mem.ptr.add(offset), writable) })
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.pieces(addr, buf.len(), |pa, at, n| {
            mem.read(pa, &mut buf[at..at + n])
        })
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.pieces(addr, data.len(), |pa, at, n| {
            mem.write(pa, &data[at..at + n])
        })
    }

    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        let pa = self.phys_of(addr, 8)?;
        let cell = self.mem.atomic_u64(pa)?;
        let mut old = cell.load(Ordering::SeqCst);
        loop {
            match cell.compare_exchange_weak(old, op.apply(old), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(v) => return Ok(v),
                Err(v) => old = v,
            }
        }
    }

    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        let pa = self.phys_of(addr, 4)?;
        let cell = self.mem.atomic_u32(pa)?;
        Ok(
            match cell.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }

    fn read_phys(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.mem.read(addr, buf)
    }

    fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.mem.write(addr, data)
    }

    fn virt_to_phys(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        Ok(self.mem.translate(self.cr3, addr))
    }

    /// The demo guests identity-map their memory, so a physical address inside the slot
    /// is also its virtual address when that mapping is present.
    fn phys_to_virt(&mut self, addr: u64) -> Result<Option<u64>, Unavailable> {
        Ok((self.mem.translate(self.cr3, addr) == Some(addr)).then_some(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT_RW: u64 = 0b11;

    /// 1 MiB of guest memory with 4-level tables (PML4 0x1000, PDPT 0x2000, PD 0x3000,
    /// PT 0x4000) mapping VA 0x400000 -> 0x10000, VA 0x401000 -> 0x4000 (the page table
    /// itself), VA 0x402000 -> 0x20000, and through a second page table that is page
    /// 0x20000, VA 0x600000 -> 0x30000.
    fn guest() -> GuestMemory {
        let m = GuestMemory::new(1 << 20).unwrap();
        let set = |table: u64, index: u64, to: u64| {
            m.write_u64(table + index * 8, to | PRESENT_RW).unwrap()
        };
        set(0x1000, 0, 0x2000);
        set(0x2000, 0, 0x3000);
        set(0x3000, 2, 0x4000);
        set(0x4000, 0, 0x10000);
        set(0x4000, 1, 0x4000);
        set(0x4000, 2, 0x20000);
        set(0x3000, 3, 0x20000);
        set(0x20000, 0, 0x30000);
        m.write(0x10008, &0x1122_3344_5566_7788u64.to_le_bytes())
            .unwrap();
        m
    }

    #[test]
    fn a_direct_page_is_the_translated_host_page() {
        let m = guest();
        let mut view = GuestView::new(&m, 0x1000);
        let page = view.direct_page(0x400008, false).unwrap();
        assert_eq!(page.host() as u64, m.host_addr() + 0x10000);
        let mut via_read = [0u8; 8];
        view.read(0x400008, &mut via_read).unwrap();
        // SAFETY: the page is 4 KiB of the live mapping (what `direct_page` promises).
        let direct = unsafe { page.host().add(8).cast::<u64>().read_unaligned() };
        assert_eq!(direct, u64::from_le_bytes(via_read));
        assert!(view.direct_page(0x1_0000_0000, false).is_none(), "unmapped");
    }

    #[test]
    fn page_tables_are_never_handed_out_writable() {
        let m = guest();
        // The page table mapped at 0x401000: its own walk reads it.
        let mut view = GuestView::new(&m, 0x1000);
        let pt = view.direct_page(0x401000, true).unwrap();
        assert!(!pt.writable());
        assert!(view.direct_page(0x400000, true).unwrap().writable());

        // A data page handed out writable, then found to be a page table: the walk
        // through it gets no direct page.
        let mut view = GuestView::new(&m, 0x1000);
        assert!(view.direct_page(0x402000, true).unwrap().writable());
        assert!(view.direct_page(0x600000, false).is_none());

        // The other order: once it is a table, it is read-only.
        let mut view = GuestView::new(&m, 0x1000);
        assert!(view.direct_page(0x600000, false).is_some());
        assert!(!view.direct_page(0x402000, true).unwrap().writable());
    }
}
