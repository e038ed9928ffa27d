//! `!monitor` through memory slots: which guest pages leave the normal RAM slot, and how.
//!
//! This KVM cannot trap individual accesses except through memory slots (spec/kvm.md):
//! - a page watched only for **writes** goes into a `KVM_MEM_READONLY` slot: reads run
//!   natively, every write exits as `KVM_EXIT_MMIO` (address, length, value);
//! - a page watched for **reads** (`r`, `rw`) is in **no** slot: every read and write on it
//!   exits as MMIO, and the VMM serves it from its own mapping of guest RAM;
//! - **execute** watching is refused: executing from a page in no slot fails on this KVM.
//!
//! Watching has page granularity in KVM but byte granularity for events: an access to a
//! watched page outside every event's range is applied by the VMM without raising an event.
//!
//! The layout is rebuilt from the enabled `!monitor` events whenever events change
//! ([`layout`]). Changing memory slots under a running vCPU is not safe for the guest:
//! between deleting the RAM slot and creating its pieces the guest would see a hole (its
//! code and page tables included). So the VMM first **parks every vCPU** outside
//! `KVM_RUN` (a flag checked at the top of each vCPU loop, plus a kick signal that ends a
//! `KVM_RUN` in progress with `EINTR`), then deletes and recreates the slots with
//! `KVM_SET_USER_MEMORY_REGION`, then lets the vCPUs go (see `Vm::with_vcpus_parked`).
//! A park takes about as long as the slowest vCPU's current exit: well under a
//! millisecond for the demo guest.
//!
//! Pages the VMM itself needs native (page tables, GDT, IDT, guest code, TSSs, kernel
//! stacks) cannot be watched: the event is refused with the reason.

use std::collections::BTreeMap;

use hv_core::{Access, Filter};

use crate::boot;
use crate::memory::GuestMemory;

pub const PAGE: u64 = 0x1000;

/// How one guest page is presented to KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageMode {
    /// In a read-only slot: writes exit.
    ReadOnly,
    /// In no slot: reads and writes exit.
    Absent,
}

/// One memory slot of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub gpa: u64,
    pub size: u64,
    pub readonly: bool,
}

/// A watched range of an enabled `!monitor` event (physical addresses, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub from: u64,
    pub to: u64,
    pub access: Access,
}

impl Watch {
    /// The lowest byte of `[addr, addr+len)` this watch covers for `access`, if any.
    pub fn hit(&self, addr: u64, len: u64, access: Access) -> Option<u64> {
        if self.access.0 & access.0 == 0 {
            return None;
        }
        let end = addr.saturating_add(len.max(1) - 1);
        (addr <= self.to && end >= self.from).then(|| addr.max(self.from))
    }
}

/// The lowest watched byte of an access, over every watch (the event's `$context`).
pub fn first_hit(watches: &[Watch], addr: u64, len: u64, access: Access) -> Option<u64> {
    watches
        .iter()
        .filter_map(|w| w.hit(addr, len, access))
        .min()
}

/// The page modes the watches need.
pub fn page_modes(watches: &[Watch]) -> BTreeMap<u64, PageMode> {
    let mut pages = BTreeMap::new();
    for w in watches {
        let mode = if w.access.0 & Access::READ.0 != 0 {
            PageMode::Absent
        } else {
            PageMode::ReadOnly
        };
        let mut p = w.from & !(PAGE - 1);
        while p <= w.to {
            let e = pages.entry(p).or_insert(mode);
            *e = (*e).max(mode);
            match p.checked_add(PAGE) {
                Some(n) => p = n,
                None => break,
            }
        }
    }
    pages
}

/// The memory slots for `mem_size` bytes of RAM with these pages taken out.
pub fn layout(mem_size: u64, pages: &BTreeMap<u64, PageMode>) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::new();
    let mut gpa = 0;
    while gpa < mem_size {
        let mode = pages.get(&gpa).copied();
        if mode != Some(PageMode::Absent) {
            let readonly = mode == Some(PageMode::ReadOnly);
            match slots.last_mut() {
                Some(s) if s.readonly == readonly && s.gpa + s.size == gpa => s.size += PAGE,
                _ => slots.push(Slot {
                    gpa,
                    size: PAGE,
                    readonly,
                }),
            }
        }
        gpa += PAGE;
    }
    slots
}

/// Guest-physical ranges (start, end exclusive, what) that must stay native.
fn protected(code_end: u64, vcpus: usize) -> Vec<(u64, u64, &'static str)> {
    let mut v = vec![(
        0,
        code_end.next_multiple_of(PAGE),
        "GDT, page tables, IDT and guest code",
    )];
    v.push((
        boot::TSS_ADDR,
        boot::tss_base(vcpus) + PAGE,
        "the vCPUs' TSSs",
    ));
    for cpu in 0..vcpus {
        let top = boot::kernel_stack_top(cpu);
        v.push((top - PAGE, top, "a vCPU's kernel stack"));
    }
    v
}

/// Checks a `!monitor` filter against this VM and returns its physical watch, or why
/// hv-kvm cannot watch it.
pub fn check(
    filter: &Filter,
    mem: &GuestMemory,
    code_end: u64,
    vcpus: usize,
) -> Result<Watch, String> {
    let Filter::Range {
        access,
        physical,
        from,
        to,
    } = *filter
    else {
        return Err("not a !monitor range".into());
    };
    if access.0 & Access::EXECUTE.0 != 0 {
        return Err("execute watching (x) needs the page in no memory slot, and executing from such a page fails on this KVM; hardware breakpoints (4) are the only execute trap here".into());
    }
    if to >= mem.size() as u64 {
        return Err(format!(
            "the range {from:#x}..={to:#x} is not inside guest RAM (0..{:#x})",
            mem.size()
        ));
    }
    if !physical {
        // MMIO exits carry the physical address only: a virtual range is accepted where
        // the guest maps it 1:1 (the demo guest identity-maps its RAM).
        let mut p = from & !(PAGE - 1);
        while p <= to {
            let va = p.max(from);
            if mem.translate(boot::PML4_ADDR, va) != Some(va) {
                return Err(format!(
                    "virtual address {va:#x} is not identity-mapped by the guest; MMIO exits carry physical addresses only (use `!monitor pa ...`)"
                ));
            }
            p += PAGE;
        }
    }
    for (start, end, what) in protected(code_end, vcpus) {
        if from < end && to >= start {
            return Err(format!(
                "{start:#x}..{end:#x} holds {what}, which the VMM keeps in a normal memory slot (KVM walks and executes it natively)"
            ));
        }
    }
    Ok(Watch {
        from,
        to,
        access: Access(access.0 & (Access::READ.0 | Access::WRITE.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_splits_ram_around_watched_pages() {
        let watches = [
            Watch {
                from: 0x3008,
                to: 0x300f,
                access: Access::WRITE,
            },
            Watch {
                from: 0x5000,
                to: 0x6fff,
                access: Access(3),
            },
        ];
        let slots = layout(0x8000, &page_modes(&watches));
        let s = |gpa, size, readonly| Slot {
            gpa,
            size,
            readonly,
        };
        assert_eq!(
            slots,
            vec![
                s(0, 0x3000, false),
                s(0x3000, 0x1000, true),
                s(0x4000, 0x1000, false),
                s(0x7000, 0x1000, false)
            ]
        );
        assert_eq!(layout(0x8000, &BTreeMap::new()), vec![s(0, 0x8000, false)]);
        assert_eq!(first_hit(&watches, 0x3004, 8, Access::WRITE), Some(0x3008));
        assert_eq!(first_hit(&watches, 0x3004, 4, Access::WRITE), None);
        assert_eq!(first_hit(&watches, 0x3008, 8, Access::READ), None);
    }
}
