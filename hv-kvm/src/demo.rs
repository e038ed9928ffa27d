//! The embedded demo guest, generated at run time with iced-x86's `CodeAssembler` (no
//! external assembler, no downloaded image).
//!
//! Every vCPU runs the same code with its own arguments (RDI = vCPU number, RSI = its data
//! block, RDX = user-loop iterations or 0 for "until told to stop", RCX = kernel MSR
//! rounds):
//!
//! 1. **Kernel part (CPL0, emulated by this KVM: kept tiny).** `rounds` times: RDMSR of
//!    [`DEMO_MSR`] (a made-up MSR modelled by the VMM, one value per vCPU), record it,
//!    WRMSR of value + 1. Then one last RDMSR, recorded as the final value. Then CPUID
//!    leaf 0 and leaf 1 (counted, leaf 1's registers recorded). When
//!    [`field::SYSCALL_ROUNDS`] is non-zero: WRMSR of STAR, LSTAR (the kernel's syscall
//!    handler) and FMASK. Then [`field::HOOK_ROUNDS`] calls (default 0) of the hookable
//!    function (RDI = 0, 1, ...; it counts and returns RDI + 1), after which the kernel
//!    reads the function's first 8 code bytes into [`field::HOOK_CODE`]. Then IRETQ to
//!    CPL3 with IOPL=3.
//! 2. **User part (CPL3, native).** One CPUID leaf 1 (counted, ECX recorded). Loop: stop when the iteration count is reached or the
//!    VMM set the stop flag in the data block; IN from [`DATA_PORT`] (count it, add the
//!    value to a sum, keep the last); write the value into a 4 KiB buffer and read it back
//!    (counted, summed); OUT of the iteration number to [`COUNTER_PORT`] (count it, sum
//!    it). At the end, OUT to [`EXIT_PORT`]: the VMM stops the vCPU there.
//!    Before the loop, [`field::EXC_ROUNDS`] rounds (set by the VMM, default 0) of `ud2`
//!    and a `div` by zero, each handled by the guest's own handler (which skips it).
//! 3. **Exception stubs** (VMM-owned), one per vector 0..32, installed in the IDT: push a
//!    dummy error code where the CPU pushes none, push the vector, OUT it to
//!    [`EXCEPTION_PORT`] (the VMM reads the frame from the stack and raises
//!    `!exception`); the VMM answers in RAX with the guest handler to call (0: return at
//!    once), then IRETQ.
//! 4. **The guest's own handlers** for #DE and #UD: count, skip the instruction.
//! 5. **The kernel's SYSCALL handler** (LSTAR, CPL0, on the caller's stack): counts,
//!    records RAX, RCX and R11, returns RAX + 0x100 with SYSRETQ. After the exception
//!    rounds the user part makes [`field::SYSCALL_ROUNDS`] SYSCALLs with RAX = 0, 1, ...
//!    EFER.SCE stays clear, so each SYSCALL/SYSRET is a #UD the VMM emulates
//!    (`vmm::exits::syscall`).
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
/// The SYSCALL MSRs (the VMM models them, `vmm::exits::msr`).
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_FMASK: u32 = 0xc000_0084;

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
    /// CPUIDs the kernel part executed (leaf 0, then leaf 1), and leaf 1's registers.
    pub const CPUID_COUNT: u64 = 0x68;
    pub const CPUID1_EAX: u64 = 0x70;
    pub const CPUID1_EBX: u64 = 0x78;
    pub const CPUID1_ECX: u64 = 0x80;
    pub const CPUID1_EDX: u64 = 0x88;
    /// CPUIDs the user part executed (one, leaf 1, at CPL3), and its ECX.
    pub const USER_CPUID_COUNT: u64 = 0x90;
    pub const USER_CPUID1_ECX: u64 = 0x98;
    /// Written by the VMM: rounds of `ud2` + `div` by zero the user part runs first.
    pub const EXC_ROUNDS: u64 = 0xa0;
    /// Rounds done, the guest's own #UD / #DE handler runs, the sum of the quotients.
    pub const EXC_DONE: u64 = 0xa8;
    pub const UD_HANDLED: u64 = 0xb0;
    pub const DE_HANDLED: u64 = 0xb8;
    pub const DIV_SUM: u64 = 0xc0;
    /// Always 0: the divisor of the user part's `div`.
    pub const DIVISOR: u64 = 0xc8;
    /// Written by the VMM: SYSCALLs the user part makes (RAX = 0, 1, 2, ...); non-zero
    /// also makes the kernel part set STAR/LSTAR/FMASK (default 0).
    pub const SYSCALL_ROUNDS: u64 = 0xd0;
    /// The kernel syscall handler: calls, sum of the RAX numbers, the last RCX and R11.
    pub const SYSCALL_HANDLED: u64 = 0xd8;
    pub const SYSCALL_NUM_SUM: u64 = 0xe0;
    pub const SYSCALL_RCX: u64 = 0xe8;
    pub const SYSCALL_R11: u64 = 0xf0;
    /// The user part: SYSCALLs returned from, and the sum of the RAX they returned.
    pub const SYSCALL_DONE: u64 = 0xf8;
    pub const SYSCALL_RET_SUM: u64 = 0x100;
    /// Written by the VMM: calls of the kernel's hookable function (default 0).
    pub const HOOK_ROUNDS: u64 = 0x108;
    /// The hookable function: calls, sum of its arguments (RDI); the caller: sum of the
    /// results; the first 8 code bytes of the function as the guest reads them.
    pub const HOOK_CALLS: u64 = 0x110;
    pub const HOOK_ARG_SUM: u64 = 0x118;
    pub const HOOK_RET_SUM: u64 = 0x120;
    pub const HOOK_CODE: u64 = 0x128;
    /// The VMM's IRETQ frame for an emulated SYSRET (5 quadwords, see `vmm::exits::syscall`).
    pub const SYSRET_FRAME: u64 = 0x3f00;
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
    /// The guest's own handler for each vector 0..32 (0: none; the VMM then stops the
    /// vCPU with the exception, as an unhandled fault).
    pub handlers: Vec<u64>,
    /// The kernel's SYSCALL handler (LSTAR), its SYSRETQ, and the hookable function.
    pub syscall_entry: u64,
    pub sysret_addr: u64,
    pub hook_target: u64,
    /// A `ud2` the VMM gives KVM as LSTAR (never the guest's LSTAR): on this KVM a CPL3
    /// SYSCALL jumps to KVM's LSTAR without leaving CPL3 (`vmm::exits::syscall`).
    pub syscall_trap: u64,
    /// An `iretq` the VMM's SYSRET emulation returns to CPL3 through (frame at
    /// [`field::SYSRET_FRAME`]).
    pub iretq_trampoline: u64,
}

/// FMASK the demo kernel sets: SYSCALL clears TF, IF, DF and AC (bits 8, 9, 10, 18).
pub const DEMO_FMASK: u64 = 0x4_0700;
/// STAR the demo kernel sets: SYSCALL CS/SS = 0x08/0x10, SYSRET base 0x10 (user SS
/// 0x1b, user CS 0x23), matching the GDT in [`crate::boot`].
pub const DEMO_STAR: u64 = (0x10 << 48) | (0x08 << 32);
/// The value the demo's syscall handler returns in RAX for number `n`.
pub fn syscall_result(n: u64) -> u64 {
    n + 0x100
}

/// Length of `ud2` and of the user part's `div rcx` (REX.W F7 /6): what the guest's
/// handlers skip.
pub const UD2_LEN: u64 = 2;
pub const DIV_RCX_LEN: u64 = 3;

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
    pub cpuid_count: u64,
    /// EAX, EBX, ECX, EDX of the kernel part's CPUID leaf 1.
    pub cpuid1: [u64; 4],
    pub user_cpuid_count: u64,
    pub user_cpuid1_ecx: u64,
    pub exc_done: u64,
    pub ud_handled: u64,
    pub de_handled: u64,
    pub div_sum: u64,
    pub syscall_handled: u64,
    pub syscall_num_sum: u64,
    pub syscall_rcx: u64,
    pub syscall_r11: u64,
    pub syscall_done: u64,
    pub syscall_ret_sum: u64,
    pub hook_calls: u64,
    pub hook_arg_sum: u64,
    pub hook_ret_sum: u64,
    pub hook_code: u64,
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
            cpuid_count: r(field::CPUID_COUNT),
            cpuid1: [
                r(field::CPUID1_EAX),
                r(field::CPUID1_EBX),
                r(field::CPUID1_ECX),
                r(field::CPUID1_EDX),
            ],
            user_cpuid_count: r(field::USER_CPUID_COUNT),
            user_cpuid1_ecx: r(field::USER_CPUID1_ECX),
            exc_done: r(field::EXC_DONE),
            ud_handled: r(field::UD_HANDLED),
            de_handled: r(field::DE_HANDLED),
            div_sum: r(field::DIV_SUM),
            syscall_handled: r(field::SYSCALL_HANDLED),
            syscall_num_sum: r(field::SYSCALL_NUM_SUM),
            syscall_rcx: r(field::SYSCALL_RCX),
            syscall_r11: r(field::SYSCALL_R11),
            syscall_done: r(field::SYSCALL_DONE),
            syscall_ret_sum: r(field::SYSCALL_RET_SUM),
            hook_calls: r(field::HOOK_CALLS),
            hook_arg_sum: r(field::HOOK_ARG_SUM),
            hook_ret_sum: r(field::HOOK_RET_SUM),
            hook_code: r(field::HOOK_CODE),
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
    // CPUID leaf 0, then leaf 1 (recorded): `!cpuid` at CPL0.
    a.xor(eax, eax)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.inc(qword_ptr(r15 + field::CPUID_COUNT))?;
    a.mov(eax, 1)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.inc(qword_ptr(r15 + field::CPUID_COUNT))?;
    a.mov(qword_ptr(r15 + field::CPUID1_EAX), rax)?;
    a.mov(qword_ptr(r15 + field::CPUID1_EBX), rbx)?;
    a.mov(qword_ptr(r15 + field::CPUID1_ECX), rcx)?;
    a.mov(qword_ptr(r15 + field::CPUID1_EDX), rdx)?;
    // Syscalls wanted: STAR, LSTAR, FMASK (the VMM models them: EFER.SCE stays clear).
    let mut syscall_entry = a.create_label();
    let mut hook_target = a.create_label();
    let mut no_syscalls = a.create_label();
    a.cmp(qword_ptr(r15 + field::SYSCALL_ROUNDS), 0)?;
    a.je(no_syscalls)?;
    a.mov(ecx, MSR_STAR)?;
    a.mov(eax, DEMO_STAR as u32)?;
    a.mov(edx, (DEMO_STAR >> 32) as u32)?;
    a.wrmsr()?;
    a.mov(ecx, MSR_LSTAR)?;
    a.lea(rax, ptr(syscall_entry))?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 32)?;
    a.wrmsr()?;
    a.mov(ecx, MSR_FMASK)?;
    a.mov(eax, DEMO_FMASK as u32)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    a.set_label(&mut no_syscalls)?;
    // The hookable function, called HOOK_ROUNDS times with RDI = 0, 1, 2, ...; then
    // the guest reads the function's first code bytes (a hook must not show).
    let mut hloop = a.create_label();
    let mut hdone = a.create_label();
    a.mov(r12, qword_ptr(r15 + field::HOOK_ROUNDS))?;
    a.test(r12, r12)?;
    a.jz(hdone)?;
    a.xor(r13, r13)?;
    a.set_label(&mut hloop)?;
    a.mov(rdi, r13)?;
    a.call(hook_target)?;
    a.add(qword_ptr(r15 + field::HOOK_RET_SUM), rax)?;
    a.inc(r13)?;
    a.cmp(r13, r12)?;
    a.jb(hloop)?;
    a.mov(rax, qword_ptr(hook_target))?;
    a.mov(qword_ptr(r15 + field::HOOK_CODE), rax)?;
    a.set_label(&mut hdone)?;
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
    // The VMM answers in RAX: the guest handler to call, or 0 to return at once.
    let mut resume = a.create_label();
    a.test(rax, rax)?;
    a.jz(resume)?;
    a.push(rdi)?;
    a.lea(rdi, qword_ptr(rsp + 24))?;
    a.call(rax)?;
    a.pop(rdi)?;
    a.set_label(&mut resume)?;
    a.pop(rdx)?;
    a.pop(rax)?;
    a.add(rsp, 16)?;
    a.iretq()?;

    // ---- the guest's own exception handlers (CPL0), called with RDI = &vector ----
    // (frame: vector, error code, RIP, ...). They skip the faulting instruction.
    let mut ud_handler = a.create_label();
    a.set_label(&mut ud_handler)?;
    a.add(qword_ptr(rdi + 16), UD2_LEN as i32)?;
    a.inc(qword_ptr(r15 + field::UD_HANDLED))?;
    a.ret()?;
    let mut de_handler = a.create_label();
    a.set_label(&mut de_handler)?;
    a.add(qword_ptr(rdi + 16), DIV_RCX_LEN as i32)?;
    a.inc(qword_ptr(r15 + field::DE_HANDLED))?;
    a.ret()?;

    // ---- the kernel's SYSCALL handler (CPL0, on the caller's stack) ----
    // Counts, records the number (RAX), RCX and R11, returns number + 0x100, SYSRETQ.
    a.set_label(&mut syscall_entry)?;
    a.inc(qword_ptr(r15 + field::SYSCALL_HANDLED))?;
    a.add(qword_ptr(r15 + field::SYSCALL_NUM_SUM), rax)?;
    a.mov(qword_ptr(r15 + field::SYSCALL_RCX), rcx)?;
    a.mov(qword_ptr(r15 + field::SYSCALL_R11), r11)?;
    a.add(rax, 0x100)?;
    let mut sysret_label = a.create_label();
    a.set_label(&mut sysret_label)?;
    a.sysretq()?;

    // ---- the VMM's SYSCALL trap (KVM's LSTAR, exits::syscall): a CPL3 SYSCALL lands here ----
    let mut syscall_trap = a.create_label();
    a.set_label(&mut syscall_trap)?;
    a.ud2()?;
    // ---- the VMM's SYSRET trampoline: the VMM's emulated SYSRET returns through it ----
    let mut iretq_trampoline = a.create_label();
    a.set_label(&mut iretq_trampoline)?;
    a.iretq()?;

    // ---- the hookable kernel function: RAX = RDI + 1, counted ----
    a.set_label(&mut hook_target)?;
    a.lea(rax, qword_ptr(rdi + 1))?;
    a.add(qword_ptr(r15 + field::HOOK_ARG_SUM), rdi)?;
    a.inc(qword_ptr(r15 + field::HOOK_CALLS))?;
    a.ret()?;

    // ---- user part (CPL3) ----
    a.set_label(&mut user_entry)?;
    // One CPUID at CPL3 (not raised by hv-kvm: see `vmm::exits::stepping`).
    a.mov(eax, 1)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.inc(qword_ptr(r15 + field::USER_CPUID_COUNT))?;
    a.mov(qword_ptr(r15 + field::USER_CPUID1_ECX), rcx)?;
    // Exception rounds: `ud2`, then 100 / 0.
    a.mov(r12, qword_ptr(r15 + field::EXC_ROUNDS))?;
    let mut exc_loop = a.create_label();
    let mut exc_done = a.create_label();
    a.set_label(&mut exc_loop)?;
    a.test(r12, r12)?;
    a.jz(exc_done)?;
    a.ud2()?;
    a.mov(eax, 100)?;
    a.xor(edx, edx)?;
    a.mov(rcx, qword_ptr(r15 + field::DIVISOR))?;
    a.div(rcx)?;
    a.add(qword_ptr(r15 + field::DIV_SUM), rax)?;
    a.inc(qword_ptr(r15 + field::EXC_DONE))?;
    a.dec(r12)?;
    a.jmp(exc_loop)?;
    a.set_label(&mut exc_done)?;
    // Syscall rounds: SYSCALL with RAX = 0, 1, 2, ... (RCX and R11 are clobbered).
    let mut sc_loop = a.create_label();
    let mut sc_done = a.create_label();
    a.mov(r12, qword_ptr(r15 + field::SYSCALL_ROUNDS))?;
    a.xor(ebx, ebx)?;
    a.set_label(&mut sc_loop)?;
    a.cmp(rbx, r12)?;
    a.jae(sc_done)?;
    a.mov(rax, rbx)?;
    a.syscall()?;
    a.add(qword_ptr(r15 + field::SYSCALL_RET_SUM), rax)?;
    a.inc(qword_ptr(r15 + field::SYSCALL_DONE))?;
    a.inc(rbx)?;
    a.jmp(sc_loop)?;
    a.set_label(&mut sc_done)?;
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
    let mut handlers = vec![0u64; 32];
    handlers[0] = result.label_ip(&de_handler)?;
    handlers[6] = result.label_ip(&ud_handler)?;
    Ok(GuestImage {
        handlers,
        entry: result.label_ip(&entry)?,
        syscall_entry: result.label_ip(&syscall_entry)?,
        sysret_addr: result.label_ip(&sysret_label)?,
        syscall_trap: result.label_ip(&syscall_trap)?,
        iretq_trampoline: result.label_ip(&iretq_trampoline)?,
        hook_target: result.label_ip(&hook_target)?,
        user_entry: result.label_ip(&user_entry)?,
        code: result.inner.code_buffer,
        load_addr: CODE_ADDR,
        stubs,
    })
}
