//! A program guest on one vCPU: the executable's segments, its stack and the VMM's own
//! pages in a fresh address space, entered directly at CPL3 (no guest kernel code runs:
//! on this KVM it would be emulated instruction by instruction), with Linux's system calls
//! served by [`super::syscalls`].
//!
//! How a system call reaches the VMM without running emulated kernel code: `EFER.SCE` stays
//! clear, and on this KVM a CPL3 `SYSCALL` then jumps to KVM's `LSTAR` *staying at CPL3*
//! (measured; see `vmm/exits/syscall.rs`), with RCX and R11 set as `SYSCALL` does. `LSTAR`
//! points at a user-executable VMM page holding `out 0xf1, al`; the TSS's I/O bitmap allows
//! that one port, so the `OUT` exits to the VMM, which serves the call and returns to
//! RCX with RFLAGS = R11, as `SYSRET` would. An `OUT` to that port from anywhere else is
//! the program's own and ends it like a fault.
//!
//! A fault (any exception vector) goes through the IDT to a VMM-owned stub at CPL0 that
//! reports it on a port of its own ([`super::faults`]); unless it is a hook's `int3` or an
//! `!exception` script skips it, the program ends with the signal Linux would send
//! (SIGSEGV for #PF/#GP, SIGILL for #UD, SIGFPE for #DE, SIGTRAP for #BP/#DB, SIGBUS for
//! #AC). The run loop and the events each exit raises are in [`super::exits`].
//!
//! Layout: guest-physical frames come from one large lazily-backed region; the VMM's
//! pages (GDT, IDT, TSS, the exception stubs, a kernel stack for the stubs, the system-call
//! page) are at low virtual addresses no static executable uses, mapped for the
//! supervisor except the system-call page.

use std::path::PathBuf;

use kvm_bindings::{kvm_msr_entry, kvm_segment, kvm_xcrs, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::elf::Executable;
use super::exits::Machine;
use super::faults;
use super::files::Files;
use super::hooks::{self, Hooks};
use super::memory_map::{AddressSpace, MemoryMap, Prot, PAGE};
use super::page_tables::{FrameAllocator, PageFlags, PageTables};
use super::stack::{self, ProcessInfo};
use super::syscalls::{Guest, Process};
use crate::boot::{self, USER_CS, USER_DS};
use crate::memory::{GuestMemory, GuestView};
use std::sync::Arc;

use hv_core::Engine;

use super::session::ProgramSession;

/// Guest-physical memory for a program (lazily backed: only touched pages cost).
const PHYS_SIZE: usize = 1 << 30;
/// The VMM's pages: virtual = physical, below the first frame the allocator hands out.
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000; // 0x68 bytes + the 8 KiB I/O bitmap + 1: up to 0x5069
const STUBS: u64 = 0x6000;
pub const SYSCALL_PAGE: u64 = 0x7000;
/// The process and thread records scripts see as `$proc` and `$thread`, and the name
/// `$pname` points to (layout: [`super::events`]).
pub const PROCESS_RECORD: u64 = 0x8000;
pub const THREAD_RECORD: u64 = 0x8040;
pub const NAME: u64 = 0x8100;
const PATH: u64 = 0x8200;
const KERNEL_STACK_TOP: u64 = 0x10000;
/// Below this, every page is the VMM's.
pub const FIRST_PROGRAM_ADDRESS: u64 = KERNEL_STACK_TOP;
const FIRST_FRAME: u64 = 0x10_0000;
/// The port of the system-call page's `OUT` (the exception stubs': [`super::faults`]).
pub const SYSCALL_PORT: u16 = 0xf1;
/// The top of the program's stack, and how much of it is mapped from the start.
const STACK_TOP: u64 = 0x7fff_ffff_f000;
const STACK_SIZE: u64 = 8 << 20;

/// The TSS descriptor's selector: right after boot's code and data descriptors.
const TSS_SEL: u16 = 0x28;

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `exit`/`exit_group` with this status.
    Exited(i32),
    /// Ended by a fault, with the signal Linux would send and what happened.
    Signal { signal: i32, what: String },
}

impl Ending {
    /// The status `run` exits with: the program's, or 128 + the signal.
    pub fn status(&self) -> i32 {
        match self {
            Ending::Exited(s) => *s & 0xff,
            Ending::Signal { signal, .. } => 128 + signal,
        }
    }
}

/// The program's memory as its system calls and the VMM see it.
pub struct Space<'a> {
    pub mem: &'a GuestMemory,
    pub tables: PageTables,
    frames: FrameAllocator,
}

fn flags(prot: Prot) -> PageFlags {
    PageFlags {
        writable: prot.write,
        executable: prot.execute,
        user: true,
    }
}

impl AddressSpace for Space<'_> {
    fn map(&mut self, addr: u64, len: u64, prot: Prot) -> Result<(), i64> {
        for page in (addr..addr + len).step_by(PAGE as usize) {
            let frame = self.frames.allocate(self.mem).ok_or(12)?;
            self.tables
                .map(self.mem, &mut self.frames, page, frame, flags(prot))
                .map_err(|_| 12)?;
        }
        Ok(())
    }

    fn unmap(&mut self, addr: u64, len: u64) {
        for page in (addr..addr + len).step_by(PAGE as usize) {
            if let Some(frame) = self.tables.unmap(self.mem, &mut self.frames, page) {
                self.frames.release(frame);
            }
        }
    }

    fn protect(&mut self, addr: u64, len: u64, prot: Prot) {
        for page in (addr..addr + len).step_by(PAGE as usize) {
            self.tables
                .protect(self.mem, &mut self.frames, page, flags(prot));
        }
    }

    fn copy(&mut self, from: u64, to: u64, len: u64) {
        let mut buf = vec![0u8; PAGE as usize];
        for off in (0..len).step_by(PAGE as usize) {
            if Guest::read(self, from + off, &mut buf) {
                Guest::write(self, to + off, &buf);
            }
        }
    }
}

impl Guest for Space<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        hv_core::GuestAccess::read(&mut GuestView::new(self.mem, self.tables.root), addr, buf)
            .is_ok()
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        hv_core::GuestAccess::write(&mut GuestView::new(self.mem, self.tables.root), addr, data)
            .is_ok()
    }
}

/// What to run and with what.
pub struct ProgramSpec {
    pub path: PathBuf,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub allow_read: Vec<PathBuf>,
    pub pid: u32,
    /// Event commands (and `?`) and what a front end compiled for them, run in order
    /// before the program starts ([`run_program`]).
    pub events: Vec<(String, hv_core::Prepared)>,
    /// The global variables the events' scripts share.
    pub globals: Arc<hvscript_runtime::GlobalSlots>,
    /// Names for event arguments.
    pub symbols: hv_core::SymbolMap,
    /// Rewrite system-call sites to exit directly ([`super::syscall_sites`]); off, the
    /// program's code is never changed but for hooks, and each call costs two trips.
    pub patch_syscalls: bool,
}

/// What a run leaves: how the program ended, notes for the user, and the events' table.
pub struct ProgramRun {
    pub ending: Ending,
    pub notes: Vec<String>,
    pub engine: Arc<Engine>,
}

/// A program loaded into a fresh address space, not started yet: commands can be given
/// to its [`session`](Program::session) (they see its memory and symbols), then
/// [`run`](Program::run) starts it.
pub struct Program {
    session: Arc<ProgramSession>,
    tables: PageTables,
    frames: FrameAllocator,
    process: Process,
    entry: u64,
    rsp: u64,
    trampolines: u64,
    patch_syscalls: bool,
}

/// Loads the program of `spec`, runs `spec.events` through its session, and runs it to
/// its end; `stdout`/`stderr` receive its output, `sink` the events'.
pub fn run_program(
    spec: &ProgramSpec,
    stdout: super::files::Output,
    stderr: super::files::Output,
    sink: Arc<dyn hv_core::OutputSink>,
) -> Result<ProgramRun, String> {
    let program = Program::load(spec, stdout, stderr, sink)?;
    for (line, prepared) in &spec.events {
        program
            .session()
            .command(line, prepared)
            .map_err(|e| format!("{line}: {}", e.message))?;
    }
    program.run()
}

impl Program {
    /// Reads the executable and lays out its memory, stack and the VMM's pages.
    pub fn load(
        spec: &ProgramSpec,
        stdout: super::files::Output,
        stderr: super::files::Output,
        sink: Arc<dyn hv_core::OutputSink>,
    ) -> Result<Program, String> {
        let bytes =
            std::fs::read(&spec.path).map_err(|e| format!("{}: {e}", spec.path.display()))?;
        let exe = super::elf::parse(&bytes).map_err(|e| format!("{}: {e}", spec.path.display()))?;
        let mem = Arc::new(GuestMemory::new(PHYS_SIZE).map_err(|e| format!("guest memory: {e}"))?);
        let mut frames = FrameAllocator::new(FIRST_FRAME, PHYS_SIZE as u64);
        let tables = PageTables::new(&mem, &mut frames).map_err(|e| format!("{e:?}"))?;
        let mut space = Space {
            mem: &mem,
            tables,
            frames,
        };
        vmm_pages(&mut space)?;
        let mut memory = MemoryMap::new(exe.end_of_image(), 0x1000_0000, 0x7f00_0000_0000);
        load_segments(&mut space, &mut memory, &exe, &bytes)?;
        let mut allowed = spec.allow_read.clone();
        allowed.push(spec.path.clone());
        let files = Files::new(&allowed, stdout, stderr);
        let mut process = Process::new(spec.pid, spec.path.clone(), memory, files);
        // The stack, mapped up front.
        process
            .memory
            .map(
                &mut space,
                STACK_TOP - STACK_SIZE,
                STACK_SIZE,
                Prot::RW,
                true,
            )
            .map_err(|e| format!("stack: errno {e}"))?;
        write_records(&mem, spec)?;
        let mut random = [0u8; 16];
        let _ = std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?,
            &mut random,
        );
        let info = ProcessInfo {
            phdr: exe.phdr,
            phent: exe.phent,
            phnum: exe.phnum,
            entry: exe.entry,
            uid: process.uid,
            gid: process.gid,
            hwcap: 0,
            execfn: spec.path.as_os_str().as_encoded_bytes().to_vec(),
            random,
        };
        let initial = stack::build(STACK_TOP, &spec.args, &spec.env, &info);
        if !Guest::write(&mut space, initial.rsp, &initial.bytes) {
            return Err("the initial stack does not fit".into());
        }
        let Space { tables, frames, .. } = space;
        let code = exe
            .segments
            .iter()
            .filter(|s| s.execute)
            .map(|s| (s.vaddr, s.vaddr + s.mem_size))
            .collect();
        // Deferred: the program's exits record their events' output, and the output thread
        // of `run` formats it (`crate::output_thread`).
        let engine = Arc::new(Engine::deferred(sink.clone()));
        let session = Arc::new(ProgramSession::new(
            engine,
            spec.globals.clone(),
            spec.symbols.clone(),
            mem.clone(),
            tables.root,
            code,
        ));
        session.debugger.set_notices(sink, session.output.clone());
        Ok(Program {
            session,
            tables,
            frames,
            process,
            entry: exe.entry,
            rsp: initial.rsp,
            trampolines: trampoline_area(&exe)?,
            patch_syscalls: spec.patch_syscalls,
        })
    }

    /// The program's command session (events, `?`, globals, symbols).
    pub fn session(&self) -> &Arc<ProgramSession> {
        &self.session
    }

    /// Runs the program on one vCPU to its end, with the output thread writing its events'
    /// output meanwhile ([`crate::output_thread`]); all of it is out when this returns.
    pub fn run(self) -> Result<ProgramRun, String> {
        let session = self.session;
        let mem = session.mem.clone();
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        let region = mem.slot(0, 0, mem.size() as u64, 0);
        // SAFETY: the region is our own live mapping of exactly `memory_size` bytes, and it
        // outlives the VM (`vm` is dropped before `mem` at the end of this function).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        let vcpu = setup_vcpu(&kvm, &vm, self.tables.root, self.entry, self.rsp)?;
        let space = Space {
            mem: &mem,
            tables: self.tables,
            frames: self.frames,
        };
        let hooks = Hooks::new(self.trampolines);
        let mut machine = Machine::new(vcpu, &vm, self.process, space, &session, hooks)?;
        machine.sites.disabled = !self.patch_syscalls;
        // Everything the exits recorded is out when `run_while` returns: however the program
        // ended (its exit, a signal, a VMM error), before the caller prints its summary.
        let ending = session.output.run_while(|| machine.run());
        let notes = std::mem::take(&mut machine.process.notes);
        drop(machine);
        drop(vm);
        Ok(ProgramRun {
            ending: ending?,
            notes,
            engine: session.engine.clone(),
        })
    }
}

/// Where hooks' trampolines go: just below the program's image, so RIP-relative operands
/// of relocated instructions stay within reach (±2 GiB).
fn trampoline_area(exe: &Executable) -> Result<u64, String> {
    let low = exe
        .segments
        .iter()
        .map(|s| s.pages().0)
        .min()
        .ok_or("the executable has no loadable segment")?;
    low.checked_sub(hooks::AREA_SIZE)
        .filter(|a| *a >= FIRST_FRAME)
        .ok_or_else(|| format!("no room for hook trampolines below the image at {low:#x}"))
}

/// GDT, IDT, TSS (I/O bitmap allowing only the system-call port), exception stubs, a
/// kernel stack for them, and the system-call page.
fn vmm_pages(space: &mut Space<'_>) -> Result<(), String> {
    let sup = |executable: bool| PageFlags {
        writable: !executable,
        executable,
        user: false,
    };
    for page in (GDT..KERNEL_STACK_TOP).step_by(PAGE as usize) {
        let f = match page {
            STUBS => sup(true),
            SYSCALL_PAGE => PageFlags {
                writable: false,
                executable: true,
                user: true,
            },
            _ => sup(false),
        };
        space
            .tables
            .map(space.mem, &mut space.frames, page, page, f)
            .map_err(|e| format!("{e:?}"))?;
    }
    let m = space.mem;
    let w = |addr: u64, v: u64| m.write_u64(addr, v).map_err(|_| "VMM pages".to_string());
    for (i, d) in boot::GDT_ENTRIES.iter().enumerate() {
        w(GDT + 8 * i as u64, *d)?;
    }
    let [low, high] = boot::tss_descriptor(TSS, 0x68 + 0x2000);
    w(GDT + u64::from(TSS_SEL), low)?;
    w(GDT + u64::from(TSS_SEL) + 8, high)?;
    // TSS: RSP0, the I/O bitmap: every port denied but SYSCALL_PORT.
    m.write(TSS + 4, &KERNEL_STACK_TOP.to_le_bytes())
        .map_err(|_| "TSS")?;
    m.write(TSS + 0x66, &0x68u16.to_le_bytes())
        .map_err(|_| "TSS")?;
    let mut bitmap = vec![0xffu8; 0x2001];
    bitmap[usize::from(SYSCALL_PORT / 8)] &= !(1 << (SYSCALL_PORT % 8));
    m.write(TSS + 0x68, &bitmap).map_err(|_| "TSS")?;
    // Stubs: for vector v at STUBS + 16*v ([`super::faults`]). `int3` and `into` are
    // instructions the program may execute: their gates have DPL 3.
    for v in 0..32u8 {
        let stub = STUBS + 16 * u64::from(v);
        m.write(stub, &faults::stub(v)).map_err(|_| "stubs")?;
        let [mut low, high] = boot::interrupt_gate(stub);
        if matches!(v, 3 | 4) {
            low |= 3 << 45;
        }
        w(IDT + 16 * u64::from(v), low)?;
        w(IDT + 16 * u64::from(v) + 8, high)?;
    }
    // The system-call page: out SYSCALL_PORT, al (then nothing: the VMM returns to RCX).
    m.write(SYSCALL_PAGE, &[0xe6, SYSCALL_PORT as u8, 0x0f, 0x0b])
        .map_err(|_| "system-call page")?;
    Ok(())
}

/// The process and thread records (see [`super::events`]).
fn write_records(mem: &GuestMemory, spec: &ProgramSpec) -> Result<(), String> {
    let fail = |_| "process records".to_string();
    let name = spec
        .path
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default();
    let mut name = name[..name.len().min(255)].to_vec();
    name.push(0);
    let mut path = spec.path.as_os_str().as_encoded_bytes().to_vec();
    path.truncate(0xdff);
    path.push(0);
    mem.write(NAME, &name).map_err(fail)?;
    mem.write(PATH, &path).map_err(fail)?;
    for (at, v) in [
        (PROCESS_RECORD, u64::from(spec.pid)),
        (PROCESS_RECORD + 8, NAME),
        (PROCESS_RECORD + 16, PATH),
        (PROCESS_RECORD + 24, THREAD_RECORD),
        (THREAD_RECORD, u64::from(spec.pid)),
        (THREAD_RECORD + 8, PROCESS_RECORD),
    ] {
        mem.write_u64(at, v).map_err(fail)?;
    }
    Ok(())
}

/// Maps each PT_LOAD segment with its permissions and copies its file bytes.
fn load_segments(
    space: &mut Space<'_>,
    memory: &mut MemoryMap,
    exe: &Executable,
    bytes: &[u8],
) -> Result<(), String> {
    for s in &exe.segments {
        let (start, end) = s.pages();
        // Pages shared by two segments take the union of their permissions.
        let mut prot = Prot {
            read: s.read,
            write: s.write,
            execute: s.execute,
        };
        let mut page = start;
        while page < end {
            if let Some(old) = memory.prot(page) {
                prot.write |= old.write;
                prot.execute |= old.execute;
                space.protect(page, PAGE, prot);
            } else {
                space
                    .map(page, PAGE, prot)
                    .map_err(|_| "out of guest memory")?;
            }
            memory.insert(page, PAGE, prot);
            page += PAGE;
        }
        let data = &bytes[s.file_offset as usize..(s.file_offset + s.file_size) as usize];
        if !Guest::write(space, s.vaddr, data) {
            return Err(format!("segment at {:#x} could not be written", s.vaddr));
        }
    }
    Ok(())
}

fn setup_vcpu(kvm: &Kvm, vm: &VmFd, cr3: u64, entry: u64, rsp: u64) -> Result<VcpuFd, String> {
    let e = |what: &str, err: kvm_ioctls::Error| format!("{what}: {err}");
    let mut vcpu = vm.create_vcpu(0).map_err(|x| e("KVM_CREATE_VCPU", x))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|x| e("KVM_GET_SUPPORTED_CPUID", x))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|x| e("KVM_SET_CPUID2", x))?;
    let mut s = vcpu.get_sregs().map_err(|x| e("KVM_GET_SREGS", x))?;
    s.cs = boot::segment(USER_CS, true, 3);
    let data = boot::segment(USER_DS, false, 3);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.tr = kvm_segment {
        base: TSS,
        limit: 0x68 + 0x2000,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    s.ldt = kvm_segment {
        unusable: 1,
        type_: 0x2,
        ..Default::default()
    };
    s.gdt.base = GDT;
    s.gdt.limit = TSS_SEL + 15;
    s.idt.base = IDT;
    s.idt.limit = 32 * 16 - 1;
    s.cr3 = cr3;
    // PAE, OSFXSR, OSXMMEXCPT, OSXSAVE: glibc reads CPUID at CPL3, which this KVM does not
    // intercept, and uses the XSAVE features the host has.
    s.cr4 = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 18);
    s.cr0 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
    s.efer = (1 << 8) | (1 << 10) | (1 << 11); // LME, LMA, NXE; SCE clear
    vcpu.set_sregs(&s).map_err(|x| e("KVM_SET_SREGS", x))?;
    let mut xcrs = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0].xcr = 0;
    // What the host enables, as far as the vCPU's CPUID (leaf 0xd) supports it.
    let supported = cpuid
        .as_slice()
        .iter()
        .find(|c| c.function == 0xd && c.index == 0)
        .map_or(3, |c| u64::from(c.eax) | (u64::from(c.edx) << 32));
    xcrs.xcrs[0].value = host_xcr0() & supported | 3;
    vcpu.set_xcrs(&xcrs).map_err(|x| e("KVM_SET_XCRS", x))?;
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0xc000_0082, // LSTAR
        data: SYSCALL_PAGE,
        ..Default::default()
    }])
    .map_err(|x| format!("MSRs: {x:?}"))?;
    vcpu.set_msrs(&msrs).map_err(|x| e("KVM_SET_MSRS", x))?;
    let regs = kvm_bindings::kvm_regs {
        rip: entry,
        rsp,
        rflags: 0x202,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|x| e("KVM_SET_REGS", x))?;
    if kvm.check_extension(kvm_ioctls::Cap::SyncRegs) {
        // The registers of every exit arrive in the run area: a system call then costs no
        // register ioctl (each is several microseconds here).
        vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
    }
    Ok(vcpu)
}

/// The host's XCR0 (the state components the program may use, as natively).
fn host_xcr0() -> u64 {
    // SAFETY: XGETBV with ECX = 0 is valid whenever CR4.OSXSAVE is set, which the host's
    // kernel does on every x86-64 machine that runs KVM guests with XSAVE.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}
