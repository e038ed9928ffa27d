//! The embedded demo guest, generated at run time with iced-x86's `CodeAssembler` (no
//! external assembler, no downloaded image).
//!
//! Every vCPU runs the same code with its own arguments (RDI = vCPU number, RSI = its data
//! block, RDX = user-loop iterations or 0 for "until told to stop", RCX = kernel MSR
//! rounds):
//!
//! 1. **Kernel part (CPL0, emulated by this KVM: kept tiny).** `rounds` times: RDMSR of
//!    [`DEMO_MSR`] (a made-up MSR modelled by the VMM, one value per vCPU), record it,
//!    WRMSR of value + 1. Then one last RDMSR, recorded as the final value. Then IRETQ to
//!    CPL3 with IOPL=3.
//! 2. **User part (CPL3, native).** Loop: stop when the iteration count is reached or the
//!    VMM set the stop flag in the data block; IN from [`DATA_PORT`] (count it, add the
//!    value to a sum, keep the last); write the value into a 4 KiB buffer and read it back
//!    (counted, summed); OUT of the iteration number to [`COUNTER_PORT`] (count it, sum
//!    it). At the end, OUT to [`EXIT_PORT`]: the VMM stops the vCPU there.
//! 3. **Exception stubs**, one per vector 0..32, installed in the IDT: push a dummy error
//!    code where the CPU pushes none, push the vector, OUT it to [`EXCEPTION_PORT`] (the
//!    VMM reads the frame from the stack) and IRETQ.
//!
//! The guest's own counters live in its data block ([`GuestCounters`]), so a test can
//! check that they agree with what the VMM's events counted.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::boot::{per_cpu, CODE_ADDR, USER_CS, USER_DS};
use crate::memory::GuestMemory;

/// IN: the data device (a per-vCPU sequence of values).
pub const DATA_PORT: u16 = 0x510;
/// OUT: the counter device (counts and sums what it receives).
pub const COUNTER_PORT: u16 = 0x511;
/// OUT: the guest is done (EAX = status).
pub const EXIT_PORT: u16 = 0x5f0;
/// OUT: an exception stub reports (EAX = vector).
pub const EXCEPTION_PORT: u16 = 0x5f1;
/// The made-up MSR the kernel part reads and writes.
pub const DEMO_MSR: u32 = 0x4000_1000;

/// Offsets in a vCPU's data block.
pub mod field {
    pub const ITERATIONS: u64 = 0x00;
    pub const IN_COUNT: u64 = 0x08;
    pub const OUT_COUNT: u64 = 0x10;
    pub const IN_SUM: u64 = 0x18;
    pub const IN_LAST: u64 = 0x20;
    pub const RDMSR_COUNT: u64 = 0x28;
    pub const WRMSR_COUNT: u64 = 0x30;
    pub const MSR_FIRST: u64 = 0x38;
    pub const MSR_FINAL: u64 = 0x40;
    /// Written by the VMM: non-zero asks the user loop to finish.
    pub const STOP: u64 = 0x48;
    pub const BUF_OPS: u64 = 0x50;
    pub const BUF_SUM: u64 = 0x58;
    pub const OUT_SUM: u64 = 0x60;
    pub const BUFFER: u64 = 0x1000;
    pub const USER_STACK_TOP: u64 = 0x3000;
}

/// Assembled guest code.
pub struct GuestImage {
    pub code: Vec<u8>,
    /// Guest-physical (= virtual) address of the code.
    pub load_addr: u64,
    pub entry: u64,
    /// Exception stub address for each vector 0..32.
    pub stubs: Vec<u64>,
    /// Where the user part starts (for reports).
    pub user_entry: u64,
}

/// What one vCPU of the demo guest counted in its own memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestCounters {
    pub iterations: u64,
    pub in_count: u64,
    pub out_count: u64,
    pub in_sum: u64,
    pub in_last: u64,
    pub rdmsr_count: u64,
    pub wrmsr_count: u64,
    pub msr_first: u64,
    pub msr_final: u64,
    pub buf_ops: u64,
    pub buf_sum: u64,
    pub out_sum: u64,
}

impl GuestCounters {
    pub fn read(mem: &GuestMemory, cpu: usize) -> GuestCounters {
        let base = per_cpu(cpu);
        let r = |f: u64| mem.read_u64(base + f).unwrap_or(0);
        GuestCounters {
            iterations: r(field::ITERATIONS),
            in_count: r(field::IN_COUNT),
            out_count: r(field::OUT_COUNT),
            in_sum: r(field::IN_SUM),
            in_last: r(field::IN_LAST),
            rdmsr_count: r(field::RDMSR_COUNT),
            wrmsr_count: r(field::WRMSR_COUNT),
            msr_first: r(field::MSR_FIRST),
            msr_final: r(field::MSR_FINAL),
            buf_ops: r(field::BUF_OPS),
            buf_sum: r(field::BUF_SUM),
            out_sum: r(field::OUT_SUM),
        }
    }
}

/// Vectors for which the CPU pushes an error code.
fn has_error_code(vector: u32) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Assembles the demo guest.
pub fn demo_image() -> Result<GuestImage, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut user_entry = a.create_label();
    let mut exception_common = a.create_label();

    // ---- kernel part (CPL0) ----
    let mut entry = a.create_label();
    a.set_label(&mut entry)?;
    a.mov(r15, rsi)?;
    a.mov(r14, rdx)?;
    a.mov(r12, rcx)?;
    a.xor(r13, r13)?;
    let mut kloop = a.create_label();
    let mut kdone = a.create_label();
    a.set_label(&mut kloop)?;
    a.cmp(r13, r12)?;
    a.jae(kdone)?;
    a.mov(ecx, DEMO_MSR)?;
    a.rdmsr()?;
    a.inc(qword_ptr(r15 + field::RDMSR_COUNT))?;
    a.mov(eax, eax)?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    let mut not_first = a.create_label();
    a.test(r13, r13)?;
    a.jnz(not_first)?;
    a.mov(qword_ptr(r15 + field::MSR_FIRST), rax)?;
    a.set_label(&mut not_first)?;
    a.inc(rax)?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 32)?;
    a.mov(ecx, DEMO_MSR)?;
    a.wrmsr()?;
    a.inc(qword_ptr(r15 + field::WRMSR_COUNT))?;
    a.inc(r13)?;
    a.jmp(kloop)?;
    a.set_label(&mut kdone)?;
    a.mov(ecx, DEMO_MSR)?;
    a.rdmsr()?;
    a.inc(qword_ptr(r15 + field::RDMSR_COUNT))?;
    a.mov(eax, eax)?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(qword_ptr(r15 + field::MSR_FINAL), rax)?;
    // IRETQ frame: SS, RSP, RFLAGS (IOPL=3), CS, RIP.
    a.push(i32::from(USER_DS))?;
    a.lea(rax, qword_ptr(r15 + field::USER_STACK_TOP))?;
    a.push(rax)?;
    a.push(0x3002)?;
    a.push(i32::from(USER_CS))?;
    a.lea(rax, ptr(user_entry))?;
    a.push(rax)?;
    a.iretq()?;

    // ---- exception stubs (CPL0) ----
    let mut stub_labels = Vec::new();
    for vector in 0..32u32 {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        if !has_error_code(vector) {
            a.push(0)?;
        }
        a.push(vector as i32)?;
        a.jmp(exception_common)?;
        stub_labels.push(l);
    }
    a.set_label(&mut exception_common)?;
    // Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    a.push(rax)?;
    a.push(rdx)?;
    a.mov(rax, qword_ptr(rsp + 16))?;
    a.mov(dx, EXCEPTION_PORT as u32)?;
    a.out(dx, eax)?;
    a.pop(rdx)?;
    a.pop(rax)?;
    a.add(rsp, 16)?;
    a.iretq()?;

    // ---- user part (CPL3) ----
    a.set_label(&mut user_entry)?;
    a.xor(r13, r13)?;
    let mut uloop = a.create_label();
    let mut no_limit = a.create_label();
    let mut udone = a.create_label();
    a.set_label(&mut uloop)?;
    a.test(r14, r14)?;
    a.jz(no_limit)?;
    a.cmp(r13, r14)?;
    a.jae(udone)?;
    a.set_label(&mut no_limit)?;
    a.cmp(qword_ptr(r15 + field::STOP), 0)?;
    a.jne(udone)?;
    a.mov(dx, DATA_PORT as u32)?;
    a.in_(eax, dx)?;
    a.inc(qword_ptr(r15 + field::IN_COUNT))?;
    a.add(qword_ptr(r15 + field::IN_SUM), rax)?;
    a.mov(qword_ptr(r15 + field::IN_LAST), rax)?;
    a.mov(rbx, r13)?;
    a.and(rbx, 0x1ff)?;
    a.mov(qword_ptr(r15 + rbx * 8 + field::BUFFER), rax)?;
    a.mov(rcx, qword_ptr(r15 + rbx * 8 + field::BUFFER))?;
    a.add(qword_ptr(r15 + field::BUF_SUM), rcx)?;
    a.inc(qword_ptr(r15 + field::BUF_OPS))?;
    a.mov(dx, COUNTER_PORT as u32)?;
    a.mov(eax, r13d)?;
    a.out(dx, eax)?;
    a.inc(qword_ptr(r15 + field::OUT_COUNT))?;
    a.add(qword_ptr(r15 + field::OUT_SUM), r13)?;
    a.inc(r13)?;
    a.mov(qword_ptr(r15 + field::ITERATIONS), r13)?;
    a.jmp(uloop)?;
    a.set_label(&mut udone)?;
    a.mov(dx, EXIT_PORT as u32)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)?;
    a.jmp(udone)?;

    let result = a.assemble_options(
        CODE_ADDR,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let stubs = stub_labels
        .iter()
        .map(|l| result.label_ip(l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GuestImage {
        entry: result.label_ip(&entry)?,
        user_entry: result.label_ip(&user_entry)?,
        code: result.inner.code_buffer,
        load_addr: CODE_ADDR,
        stubs,
    })
}
