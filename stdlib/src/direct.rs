//! Direct access to guest pages: what an environment hands out so compiled code can read
//! and write a guest page with plain host loads and stores ([`DirectPage`], through
//! [`Env::direct_page`](crate::Env::direct_page)), and the identifiers that say how long
//! such a page stays valid ([`fresh_mapping_id`], [`Env::mapping_id`](crate::Env::mapping_id)).
//!
//! The runtime keeps the pages it is handed in a small translation cache that compiled code
//! checks inline; the environment stays the only judge of what may be cached, so it can
//! refuse pages whose accesses must keep going through `read`/`write` (a locked buffer,
//! the page tables themselves).

use core::sync::atomic::{AtomicU64, Ordering};

/// The bytes of one page: direct pages are this big and start at a multiple of it.
pub const DIRECT_PAGE_SIZE: u64 = 4096;

/// The host address of one guest-virtual page an environment lets compiled code access
/// directly. Only [`DirectPage::new`], an `unsafe` promise, makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectPage {
    host: *mut u8,
    writable: bool,
}

impl DirectPage {
    /// A page whose first byte is at `host`.
    ///
    /// # Safety
    /// `host` must be valid for reads of [`DIRECT_PAGE_SIZE`] bytes (and for writes too when
    /// `writable`), and reading or writing byte `i` there must be exactly what
    /// [`Env::read`](crate::Env::read) / [`Env::write`](crate::Env::write) of byte `i` of the
    /// guest page asked for would do, for as long as [`Env::direct_page`](crate::Env::direct_page)
    /// says. Writes through it must never change the translation of a page the environment
    /// has handed out.
    pub unsafe fn new(host: *mut u8, writable: bool) -> DirectPage {
        DirectPage { host, writable }
    }

    /// The host address of the page's first byte.
    pub fn host(&self) -> *mut u8 {
        self.host
    }

    /// Whether writes may go through [`DirectPage::host`] too.
    pub fn writable(&self) -> bool {
        self.writable
    }
}

static NEXT_MAPPING_ID: AtomicU64 = AtomicU64::new(1);

/// A mapping identifier no other caller in this process has been given (never 0), for
/// [`Env::mapping_id`](crate::Env::mapping_id).
pub fn fresh_mapping_id() -> u64 {
    NEXT_MAPPING_ID.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_ids_are_distinct_and_never_zero() {
        let a = fresh_mapping_id();
        let b = fresh_mapping_id();
        assert_ne!(a, 0);
        assert_ne!(a, b);
    }
}
