//! Program guests (issue 16, `hvscript run -- PROGRAM ARGS`): an unmodified static x86-64
//! Linux executable run natively at CPL3 under hv-kvm's small kernel. This module holds the
//! parts that do not need a vCPU: reading the executable ([`elf`]) and laying out the
//! initial stack Linux gives a new process ([`stack`]).

pub mod elf;
pub mod stack;
