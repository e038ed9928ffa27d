//! Long-mode boot state the VMM builds for a guest: the physical memory layout, identity
//! page tables, the GDT (kernel and user code/data, one 64-bit TSS per vCPU), the IDT
//! pointing at the guest's exception stubs, and each vCPU's initial special registers
//! (CR0/CR4/EFER for long mode, segment caches, TR, GDTR, IDTR).
//!
//! The guest starts directly in 64-bit mode at CPL0: no real-mode trampoline runs, because
//! CPL0 code on this KVM is emulated one instruction at a time (spec/kvm.md).
//!
//! Physical layout (all identity-mapped, user-accessible, 2 MiB pages):
//!
//! | address | what |
//! |---|---|
//! | 0x1000 | GDT |
//! | 0x2000 | PML4, 0x3000 PDPT, 0x4000 PD |
//! | 0x5000 | IDT (256 gates) |
//! | 0x10000 | guest code (kernel part, exception stubs, user part) |
//! | 0x100000 | per-vCPU block i at 0x100000 + i*0x10000 (see `demo` for its fields) |
//! | 0x200000 | TSS of vCPU i at 0x200000 + i*0x3000, with an all-zero I/O bitmap |

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::memory::GuestMemory;

pub const GDT_ADDR: u64 = 0x1000;
pub const PML4_ADDR: u64 = 0x2000;
pub const PDPT_ADDR: u64 = 0x3000;
pub const PD_ADDR: u64 = 0x4000;
pub const IDT_ADDR: u64 = 0x5000;
/// TSSs live in the second 2 MiB page: each has a full I/O permission bitmap.
pub const TSS_ADDR: u64 = 0x200000;
pub const TSS_STRIDE: u64 = 0x3000;
/// TSS limit: 0x68 bytes of TSS, the 8 KiB I/O bitmap, and its terminating 0xff byte.
const TSS_LIMIT: u64 = 0x68 + 0x2000;
pub const CODE_ADDR: u64 = 0x10000;
pub const PER_CPU_BASE: u64 = 0x100000;
pub const PER_CPU_SIZE: u64 = 0x10000;
/// Guest RAM size: 4 MiB (two 2 MiB pages).
pub const MEM_SIZE: usize = 4 << 20;
/// vCPUs the layout has room for (GDT TSS slots, per-vCPU blocks).
pub const MAX_VCPUS: usize = 16;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
/// GDT index of vCPU 0's TSS descriptor (16 bytes each).
const TSS_SEL_BASE: u16 = 0x28;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Writes page tables, GDT, TSSs and IDT into guest memory. `stubs[v]` is the address of
/// the exception stub for vector `v` (0..32).
pub fn write_tables(mem: &GuestMemory, vcpus: usize, stubs: &[u64]) -> Result<(), String> {
    let fault = |what: &str| format!("guest memory too small for the {what}");
    // Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = 2 MiB page i (P|RW|US|PS).
    mem.write_u64(PML4_ADDR, PDPT_ADDR | 0x7)
        .map_err(|_| fault("page tables"))?;
    mem.write_u64(PDPT_ADDR, PD_ADDR | 0x7)
        .map_err(|_| fault("page tables"))?;
    for i in 0..(mem.size() as u64 >> 21) {
        mem.write_u64(PD_ADDR + i * 8, (i << 21) | 0x87)
            .map_err(|_| fault("page tables"))?;
    }

    // GDT.
    for (i, d) in GDT_ENTRIES.iter().enumerate() {
        mem.write_u64(GDT_ADDR + i as u64 * 8, *d)
            .map_err(|_| fault("GDT"))?;
    }
    for cpu in 0..vcpus {
        let base = tss_base(cpu);
        let [low, high] = tss_descriptor(base, TSS_LIMIT);
        let at = GDT_ADDR + u64::from(tss_selector(cpu));
        mem.write_u64(at, low).map_err(|_| fault("GDT"))?;
        mem.write_u64(at + 8, high).map_err(|_| fault("GDT"))?;
        // TSS: RSP0 (offset 4, unaligned) = the vCPU's kernel stack; an I/O permission
        // bitmap allowing every port. This KVM's IRETQ to CPL3 does not keep IOPL=3
        // (measured: RFLAGS.IOPL reads 0 in user mode), so the bitmap is what lets the
        // user part do IN/OUT.
        mem.write(base + 4, &kernel_stack_top(cpu).to_le_bytes())
            .map_err(|_| fault("TSS"))?;
        mem.write(base + 0x66, &0x68u16.to_le_bytes())
            .map_err(|_| fault("TSS"))?;
        mem.write(base + 0x68, &[0u8; 0x2000])
            .map_err(|_| fault("TSS"))?;
        mem.write(base + TSS_LIMIT, &[0xff])
            .map_err(|_| fault("TSS"))?;
    }

    // IDT: interrupt gates, DPL0, for the 32 exception vectors.
    for (v, &stub) in stubs.iter().enumerate() {
        let [low, high] = interrupt_gate(stub);
        let at = IDT_ADDR + v as u64 * 16;
        mem.write_u64(at, low).map_err(|_| fault("IDT"))?;
        mem.write_u64(at + 8, high).map_err(|_| fault("IDT"))?;
    }
    Ok(())
}

/// The GDT's code and data descriptors, indexed by selector / 8: null, kernel code
/// (64-bit), kernel data, user data (DPL3), user code (64-bit, DPL3). TSS descriptors
/// follow at 0x28.
pub(crate) const GDT_ENTRIES: [u64; 5] = [
    0,
    0x00af_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
    0x00cf_f200_0000_ffff,
    0x00af_fa00_0000_ffff,
];

/// A 64-bit TSS descriptor (16 bytes), busy (type 0xB): TR is loaded by the VMM's
/// KVM_SET_SREGS, not LTR.
pub(crate) fn tss_descriptor(base: u64, limit: u64) -> [u64; 2] {
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// An IDT interrupt gate (16 bytes), DPL0, to `handler` in kernel code.
pub(crate) fn interrupt_gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

pub fn tss_base(cpu: usize) -> u64 {
    TSS_ADDR + cpu as u64 * TSS_STRIDE
}

fn tss_selector(cpu: usize) -> u16 {
    TSS_SEL_BASE + 16 * cpu as u16
}

/// The per-vCPU data block.
pub fn per_cpu(cpu: usize) -> u64 {
    PER_CPU_BASE + cpu as u64 * PER_CPU_SIZE
}

/// Top of the vCPU's kernel stack (the last page of its block).
pub fn kernel_stack_top(cpu: usize) -> u64 {
    per_cpu(cpu) + PER_CPU_SIZE
}

/// A flat code or data segment cache for `KVM_SET_SREGS`.
pub(crate) fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The special registers for a vCPU starting in 64-bit mode at CPL0.
pub fn long_mode_sregs(mut sregs: kvm_sregs, cpu: usize) -> kvm_sregs {
    sregs.cs = segment(KERNEL_CS, true, 0);
    let data = segment(KERNEL_DS, false, 0);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: tss_base(cpu),
        limit: TSS_LIMIT as u32,
        selector: tss_selector(cpu),
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        present: 0,
        type_: 0x2,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (u64::from(TSS_SEL_BASE) + 16 * MAX_VCPUS as u64 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// The general registers at entry: RIP, a kernel stack, and the guest's arguments in
/// RDI, RSI, RDX, RCX (System V order).
pub fn entry_regs(cpu: usize, rip: u64, args: [u64; 4]) -> kvm_regs {
    kvm_regs {
        rip,
        rsp: kernel_stack_top(cpu),
        // IOPL=3, though this KVM drops it on IRETQ to CPL3: the TSS I/O bitmap is
        // what lets the user part do port I/O.
        rflags: 0x3002,
        rdi: args[0],
        rsi: args[1],
        rdx: args[2],
        rcx: args[3],
        ..Default::default()
    }
}
