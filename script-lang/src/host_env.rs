//! The host's stand-in for a guest: an [`Env`] with a sparse, page-mapped guest memory,
//! captured output, and one simulated event execution in a chosen calling stage. It is
//! what `hvscript eval` and the conformance runner run scripts against. Its pages are
//! handed out to compiled code's translation cache and stay valid across runs.
//!
//! What the host cannot have is reported, not invented: physical memory, event-table
//! control and debugger actions are unavailable (the built-ins print HyperDbg's warning
//! and the script goes on). `event_sc` works as in an event: in the pre stage it sets the
//! short-circuit flag, in the post stage it is refused and counted.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use hvscript_stdlib::{
    fresh_mapping_id, AtomicRmw, DirectPage, Env, LocalTime, MemFault, Unavailable,
};

pub const PAGE_SIZE: u64 = 0x1000;

/// The calling stage a host run simulates (the ABI's one `Stage`).
pub use hvscript_abi::Stage;

/// One zeroed-at-birth page of simulated guest memory. Its bytes are reached only through
/// the raw pointer, never through a reference: compiled code may hold the page's address
/// (a direct page, see [`Env::direct_page`]) while the page is read and written here.
struct Page(NonNull<u8>);

const PAGE_BYTES: usize = PAGE_SIZE as usize;

impl Page {
    fn zeroed() -> Page {
        let raw = Box::into_raw(Box::new([0u8; PAGE_BYTES]));
        // SAFETY: `Box::into_raw` never returns null.
        Page(unsafe { NonNull::new_unchecked(raw.cast::<u8>()) })
    }

    fn ptr(&self) -> *mut u8 {
        self.0.as_ptr()
    }

    /// Copies `buf.len()` bytes out from offset `off`.
    fn read(&self, off: usize, buf: &mut [u8]) {
        assert!(off + buf.len() <= PAGE_BYTES);
        // SAFETY: in bounds (asserted) of the page's live allocation; `buf` is other memory.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr().add(off), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` in at offset `off`.
    fn write(&mut self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= PAGE_BYTES);
        // SAFETY: in bounds (asserted) of the page's live allocation; `data` is other memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().add(off), data.len()) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` of a `[u8; PAGE_BYTES]` in
        // `zeroed` and is freed once, here.
        drop(unsafe { Box::from_raw(self.ptr().cast::<[u8; PAGE_BYTES]>()) });
    }
}

impl Clone for Page {
    fn clone(&self) -> Page {
        let mut copy = Page::zeroed();
        let mut bytes = [0u8; PAGE_BYTES];
        self.read(0, &mut bytes);
        copy.write(0, &bytes);
        copy
    }
}

// SAFETY: a `Page` owns its allocation as a `Box` would; the bytes are plain data.
unsafe impl Send for Page {}
// SAFETY: `&Page` only reads (`read`); writing needs `&mut Page`, as with a `Box`.
unsafe impl Sync for Page {}

/// Guest memory as a set of mapped pages; everything else faults.
///
/// Pages are never unmapped, so a page's address stays valid as long as the memory lives:
/// that is what lets [`HostEnv`] hand pages out to compiled code and keep its
/// [`Env::mapping_id`] across runs. Each instance (a clone too) has its own id.
pub struct GuestMemory {
    pages: BTreeMap<u64, Page>,
    mapping_id: u64,
}

impl Default for GuestMemory {
    fn default() -> GuestMemory {
        GuestMemory {
            pages: BTreeMap::new(),
            mapping_id: fresh_mapping_id(),
        }
    }
}

impl Clone for GuestMemory {
    fn clone(&self) -> GuestMemory {
        GuestMemory {
            pages: self.pages.clone(),
            mapping_id: fresh_mapping_id(),
        }
    }
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("pages", &self.pages.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl GuestMemory {
    /// Maps (zeroed) every page that `[addr, addr + len)` touches.
    pub fn map(&mut self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = addr / PAGE_SIZE;
        let last = addr.saturating_add(len - 1) / PAGE_SIZE;
        for page in first..=last {
            self.pages.entry(page).or_insert_with(Page::zeroed);
        }
    }

    /// Maps the pages and stores `bytes` at `addr`.
    pub fn load(&mut self, addr: u64, bytes: &[u8]) {
        self.map(addr, bytes.len() as u64);
        let _ = self.write(addr, bytes);
    }

    pub fn is_mapped(&self, addr: u64) -> bool {
        self.pages.contains_key(&(addr / PAGE_SIZE))
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let off = (addr % PAGE_SIZE) as usize;
        if !buf.is_empty() && off + buf.len() <= PAGE_BYTES {
            // Within one page (nearly every access): one lookup, not two.
            let page = self
                .pages
                .get(&(addr / PAGE_SIZE))
                .ok_or(MemFault::Invalid)?;
            page.read(off, buf);
            return Ok(());
        }
        self.check(addr, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let a = addr + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_BYTES - off).min(buf.len() - done);
            self.pages[&(a / PAGE_SIZE)].read(off, &mut buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let off = (addr % PAGE_SIZE) as usize;
        if !data.is_empty() && off + data.len() <= PAGE_BYTES {
            let page = self
                .pages
                .get_mut(&(addr / PAGE_SIZE))
                .ok_or(MemFault::Invalid)?;
            page.write(off, data);
            return Ok(());
        }
        self.check(addr, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let a = addr + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_BYTES - off).min(data.len() - done);
            if let Some(p) = self.pages.get_mut(&(a / PAGE_SIZE)) {
                p.write(off, &data[done..done + n]);
            }
            done += n;
        }
        Ok(())
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), MemFault> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len as u64 - 1).ok_or(MemFault::Invalid)?;
        for page in addr / PAGE_SIZE..=end / PAGE_SIZE {
            if !self.pages.contains_key(&page) {
                return Err(MemFault::Invalid);
            }
        }
        Ok(())
    }

    /// The page holding `addr`, for compiled code to read and write directly.
    fn direct_page(&self, addr: u64) -> Option<DirectPage> {
        let page = self.pages.get(&(addr / PAGE_SIZE))?;
        // SAFETY: the page's allocation is PAGE_SIZE bytes, readable and writable, and
        // lives until this memory is dropped (pages are never unmapped), which changes the
        // mapping id the page was handed out under; `read`/`write` reach the same bytes
        // through the same pointer; and there are no page tables a write could change.
        Some(unsafe { DirectPage::new(page.ptr(), true) })
    }
}

/// The host environment of one or more runs.
#[derive(Clone, Debug, Default)]
pub struct HostEnv {
    pub memory: GuestMemory,
    pub stage: Stage,
    /// Everything the script printed, warnings included.
    pub output: Vec<u8>,
    /// Values passed to `test_statement`, in order.
    pub test_values: Vec<u64>,
    /// The short-circuit flag of the simulated execution.
    pub short_circuit: bool,
    /// `event_sc` calls refused because the stage is post.
    pub refused_short_circuits: u64,
    pub warnings: u64,
}

impl HostEnv {
    pub fn new(stage: Stage) -> HostEnv {
        HostEnv {
            stage,
            ..HostEnv::default()
        }
    }

    pub fn output_text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

impl Env for HostEnv {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.memory.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.memory.write(addr, data)
    }

    fn direct_page(&mut self, addr: u64, _write: bool) -> Option<DirectPage> {
        self.memory.direct_page(addr)
    }

    fn mapping_id(&self) -> u64 {
        self.memory.mapping_id
    }

    // The host runs one script at a time on this memory, so read-modify-write is atomic.
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.memory.read(addr, &mut b)?;
        let old = u64::from_le_bytes(b);
        self.memory.write(addr, &op.apply(old).to_le_bytes())?;
        Ok(old)
    }

    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.memory.read(addr, &mut b)?;
        let old = u32::from_le_bytes(b);
        if old == expected {
            self.memory.write(addr, &new.to_le_bytes())?;
        }
        Ok(old)
    }

    fn output(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    fn warn(&mut self, msg: &str) {
        self.warnings += 1;
        self.output.extend_from_slice(b"warning: ");
        self.output.extend_from_slice(msg.as_bytes());
        self.output.push(b'\n');
    }

    fn test_statement(&mut self, value: u64) {
        self.test_values.push(value);
    }

    fn rdtsc(&mut self) -> Result<u64, Unavailable> {
        Ok(read_tsc())
    }

    fn rdtscp(&mut self) -> Result<u64, Unavailable> {
        Ok(read_tsc())
    }

    fn microsleep(&mut self, us: u64) -> Result<(), Unavailable> {
        // A host run must not hang: longer waits are cut to one second, with a warning.
        const MAX_US: u64 = 1_000_000;
        if us > MAX_US {
            self.warn(&format!(
                "microsleep({us:#x}) shortened to one second on the host"
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(us.min(MAX_US)));
        Ok(())
    }

    fn event_sc(&mut self, on: bool) -> Result<(), Unavailable> {
        match self.stage {
            Stage::Pre => {
                self.short_circuit = on;
                Ok(())
            }
            Stage::Post => {
                self.refused_short_circuits += 1;
                self.warn("event_sc in the post stage changes nothing: the emulation has already happened");
                Ok(())
            }
        }
    }

    fn local_time(&mut self) -> Option<LocalTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(LocalTime::from_unix(
            now.as_secs(),
            now.subsec_millis() as u16,
        ))
    }
}

fn read_tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions on x86_64 user mode.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let t = LocalTime::from_unix(20_000 * 86_400 + 3723, 45);
        assert_eq!((t.year, t.month, t.day), (2024, 10, 4));
        assert_eq!(&t.date_string(), b"2024-10-04\0");
        assert_eq!(&t.time_string(), b"01:02:03.045\0");
        assert_eq!(LocalTime::from_unix(0, 0).date_string(), *b"1970-01-01\0");
    }

    #[test]
    fn memory_faults_outside_mapped_pages() {
        let mut m = GuestMemory::default();
        m.load(0x1ffe, &[1, 2, 3, 4]);
        let mut b = [0u8; 4];
        m.read(0x1ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(m.read(0x3ffe, &mut b), Err(MemFault::Invalid));
        assert_eq!(m.read(u64::MAX - 1, &mut b), Err(MemFault::Invalid));
    }
}
