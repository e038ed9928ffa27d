//! The exit handlers, one file per exit kind, each an `impl VcpuThread` block with the
//! documentation of its kind: what raises the event, what `$context` and the registers
//! are, what the emulation and a short-circuit do.
//!
//! - [`io`]: `!ioin` / `!ioout` (port I/O, and the demo's devices);
//! - [`msr`]: `!msrread` / `!msrwrite` (user-space MSR exits, the VMM's MSR model);
//! - [`monitor`]: `!monitor` (MMIO exits of watched pages);
//! - [`stepping`]: `!cpuid` (CPL0 single-stepping, `KVM_SET_GUEST_DEBUG`);
//! - [`exception`]: `!exception` (the VMM-owned IDT stubs);
//! - [`syscall`]: `!syscall` / `!sysret` (the EFER.SCE #UD trick);
//! - [`epthook`]: `!epthook` / `!epthook2` (hardware execute breakpoints).

mod epthook;
mod exception;
mod io;
mod monitor;
mod msr;
mod stepping;
mod syscall;
