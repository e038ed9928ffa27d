//! What hv-core needs from the hypervisor about the guest: its memory (virtual and,
//! where the platform can, physical), interruption injection, and stopping in the
//! debugger (`pause()`). The exit handlers pass
//! an implementation to [`crate::Engine::handle_exit`].

use hvscript_abi::GuestRegs;
use hvscript_stdlib::{AtomicRmw, DirectPage, LocalTime, MemFault, Unavailable};

pub trait GuestAccess {
    /// Reads guest-virtual memory.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Writes guest-virtual memory.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault>;

    /// Direct access to the guest-virtual page holding `addr`, for compiled code's
    /// translation cache; see [`hvscript_stdlib::Env::direct_page`] for how long it must
    /// stay valid. `None` (the default) keeps every access on `read`/`write`.
    fn direct_page(&mut self, _addr: u64, _write: bool) -> Option<DirectPage> {
        None
    }

    /// See [`hvscript_stdlib::Env::mapping_id`]; 0 (the default): direct pages are valid
    /// for the current execution only.
    fn mapping_id(&self) -> u64 {
        0
    }

    /// An 8-byte atomic operation on guest memory. The default reads then writes, which is
    /// atomic only while no other vCPU runs; hypervisors that map guest memory implement it
    /// with real atomics.
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        let old = u64::from_le_bytes(b);
        self.write(addr, &op.apply(old).to_le_bytes())?;
        Ok(old)
    }

    /// A 4-byte compare-exchange (spinlocks); same caveat as `atomic_rmw_u64`.
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        let old = u32::from_le_bytes(b);
        if old == expected {
            self.write(addr, &new.to_le_bytes())?;
        }
        Ok(old)
    }

    fn read_phys(&mut self, _addr: u64, _buf: &mut [u8]) -> Result<(), MemFault> {
        Err(MemFault::Unavailable(Unavailable(
            "this hypervisor does not expose guest-physical memory to scripts",
        )))
    }

    fn write_phys(&mut self, _addr: u64, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Unavailable(Unavailable(
            "this hypervisor does not expose guest-physical memory to scripts",
        )))
    }

    fn virt_to_phys(&mut self, _addr: u64) -> Result<Option<u64>, Unavailable> {
        Err(Unavailable(
            "this hypervisor does not translate guest addresses for scripts",
        ))
    }

    fn phys_to_virt(&mut self, _addr: u64) -> Result<Option<u64>, Unavailable> {
        Err(Unavailable(
            "this hypervisor does not translate guest addresses for scripts",
        ))
    }

    /// Busy-waits or sleeps `us` microseconds (`microsleep`); the hypervisor bounds it.
    fn microsleep(&mut self, _us: u64) -> Result<(), Unavailable> {
        Err(Unavailable("this hypervisor does not let scripts sleep"))
    }

    /// The wall-clock time `$date` and `$time` show, if the hypervisor has a clock.
    fn local_time(&mut self) -> Option<LocalTime> {
        None
    }

    fn inject(
        &mut self,
        _kind: u8,
        _vector: u8,
        _error_code: Option<u32>,
    ) -> Result<(), Unavailable> {
        Err(Unavailable("this hypervisor cannot inject interruptions"))
    }

    /// Whether `pause()` would stop the guest now: a debugger console is attached.
    fn can_pause(&self) -> bool {
        false
    }

    /// Stops the guest in this event until the debugger continues it (`pause()`, after the
    /// script that called it returns). The debugger may change `regs`, which the exit then
    /// goes on with.
    fn pause(&mut self, _at: &PauseInfo, _regs: &mut GuestRegs) {}
}

/// Where `pause()` stopped the guest: the event, its stage and the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseInfo {
    pub event_id: u64,
    pub stage: crate::event::Stage,
    pub core: u32,
    pub context: u64,
}

/// A guest with no memory: every access faults. For exits whose scripts need none.
pub struct NoGuestMemory;

impl GuestAccess for NoGuestMemory {
    fn read(&mut self, _addr: u64, _buf: &mut [u8]) -> Result<(), MemFault> {
        Err(MemFault::Invalid)
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Invalid)
    }
}
