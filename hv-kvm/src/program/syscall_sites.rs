//! System-call sites rewritten to exit directly: the first time a `SYSCALL` instruction
//! of the program runs, it arrives the slow way (on this KVM a CPL3 `SYSCALL` traps into
//! the hypervisor, which continues at `LSTAR` at CPL3, where the VMM's page exits with an
//! `OUT`: two trips through KVM), and the VMM then overwrites its two bytes (`0f 05`) with
//! `out 0xf1, al` (`e6 f1`, also two bytes). From then on that site exits to the VMM in
//! one trip, and the VMM completes the `SYSCALL` semantics itself (RCX = the return
//! address, R11 = RFLAGS) so the program cannot tell the difference, except by reading
//! its own code (gVisor's systrap platform patches system-call sites the same way).
//! Scripts and the debugger are shown `0f 05` there, from the exit that patched the site
//! on (`ProgramSession::show_original`).
//!
//! Only sites in the program's executable memory are patched, and only after a `SYSCALL`
//! really ran there (so no data that happens to hold `0f 05` is touched). A site under an
//! `!epthook` is put back first so the hook relocates the original instruction.

use std::collections::HashSet;

use super::memory_map::MemoryMap;
use super::syscalls::Guest;
use super::vm::SYSCALL_PORT;

const SYSCALL: [u8; 2] = [0x0f, 0x05];
const EXIT: [u8; 2] = [0xe6, SYSCALL_PORT as u8];

/// The sites patched so far.
#[derive(Default)]
pub struct SyscallSites {
    patched: HashSet<u64>,
    /// Patching is off: every call takes the `LSTAR` path.
    pub disabled: bool,
}

impl SyscallSites {
    /// A `SYSCALL` ran at `site`: patch it if it is the program's code.
    /// Returns whether it did.
    pub fn ran<G: Guest>(&mut self, space: &mut G, memory: &MemoryMap, site: u64) -> bool {
        if self.disabled || self.patched.contains(&site) {
            return false;
        }
        if !memory.prot(site).is_some_and(|p| p.execute)
            || !memory.prot(site + 1).is_some_and(|p| p.execute)
        {
            return false;
        }
        let mut bytes = [0u8; 2];
        if space.read(site, &mut bytes) && bytes == SYSCALL && space.write(site, &EXIT) {
            self.patched.insert(site);
            return true;
        }
        false
    }

    /// Each rewritten site's original bytes, by address.
    pub fn originals(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.patched
            .iter()
            .flat_map(|&s| [(s, SYSCALL[0]), (s + 1, SYSCALL[1])])
    }

    /// Whether the `OUT` just before `rip` is a patched site.
    pub fn is_patched(&self, site: u64) -> bool {
        self.patched.contains(&site)
    }

    /// Puts the original `SYSCALL` back at `site` if it was patched.
    pub fn restore<G: Guest>(&mut self, space: &mut G, site: u64) {
        if self.patched.remove(&site) {
            space.write(site, &SYSCALL);
        }
    }
}
