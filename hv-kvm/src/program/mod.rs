//! Program guests (issue 16, `hvscript run -- PROGRAM ARGS`): an unmodified static x86-64
//! Linux executable run natively at CPL3 under hv-kvm's small kernel. This module holds the
//! parts that do not need a vCPU: reading the executable ([`elf`]), laying out the initial
//! stack Linux gives a new process ([`stack`]), the address space's bookkeeping
//! ([`memory_map`]) and its page tables in guest memory ([`page_tables`]), the file
//! descriptors ([`files`]) and the system-call layer ([`syscalls`], whose module doc is the
//! table of what is served and what is refused).

mod accesses;
pub mod elf;
pub mod events;
pub mod exits;
pub mod faults;
pub mod files;
pub mod hooks;
pub mod memory_map;
pub mod page_tables;
pub mod session;
pub mod stack;
pub mod syscall_sites;
pub mod syscalls;
pub mod vm;
pub mod watches;
