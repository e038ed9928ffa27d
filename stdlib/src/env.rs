//! The [`Env`] trait: everything a built-in needs from the runtime that executes a script.
//!
//! The interpreter, the JIT's host runtime and the hypervisor core each implement it once.
//! A capability a context lacks (physical memory on the host, event control in a plain `?`
//! evaluation, ...) reports [`Unavailable`] with a reason instead of inventing a value, and
//! [`crate::call`] decides whether that stops the script or becomes a warning.

/// A capability that this context cannot provide, with a human-readable reason
/// (e.g. `"physical memory is not reachable from the host interpreter"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

/// Why a memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// Some byte of the range is not mapped, not present, or not accessible that way.
    Invalid,
    /// This kind of memory cannot be reached at all in this context.
    Unavailable(Unavailable),
}

impl From<Unavailable> for MemFault {
    fn from(u: Unavailable) -> Self {
        MemFault::Unavailable(u)
    }
}

/// An 8-byte atomic read-modify-write. Every variant yields the value before the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicRmw {
    /// Store the value.
    Exchange(u64),
    /// Add the value (wrapping).
    Add(u64),
    /// Store `new` if the current value equals `expected`.
    CompareExchange { expected: u64, new: u64 },
}

impl AtomicRmw {
    /// The value this operation leaves in memory, given the value it found. Environments
    /// that emulate atomics (the host interpreter, tests) use it so that every
    /// implementation agrees on the arithmetic.
    pub fn apply(self, old: u64) -> u64 {
        match self {
            AtomicRmw::Exchange(v) => v,
            AtomicRmw::Add(v) => old.wrapping_add(v),
            AtomicRmw::CompareExchange { expected, new } => {
                if old == expected {
                    new
                } else {
                    old
                }
            }
        }
    }
}

/// Event-table operations, addressed by the event's id as the user sees it in `events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOp {
    Enable,
    Disable,
    Clear,
}

/// The `event_trace_*` debugger actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceKind {
    /// `event_trace_step` and `event_trace_step_in` (HyperDbg treats them alike).
    StepIn,
    /// `event_trace_step_out`.
    StepOut,
    /// `event_trace_instrumentation_step` and `event_trace_instrumentation_step_in`.
    InstrumentationStepIn,
}

/// Last-branch-record operations. Each yields 1 on success and 0 on failure, as HyperDbg's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbrOp {
    Save,
    /// `lbr_print` and `lbr_dump`.
    Print,
    Restore,
    Check,
    RestoreByFilter(u64),
}

/// Wall-clock time, for the `Time :` line of `formats` and the strings `$date` and `$time`
/// point to. hvscript has no time-zone database: hosts give UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalTime {
    pub year: u16,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
    /// 0..=999
    pub millisecond: u16,
}

impl LocalTime {
    /// The UTC calendar time `secs` seconds and `millis` ms after 1970-01-01.
    pub fn from_unix(secs: u64, millis: u16) -> LocalTime {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        LocalTime {
            year: year as u16,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            millisecond: millis.min(999),
        }
    }

    /// `$date`'s string, HyperDbg's layout: `YYYY-MM-DD` and a NUL.
    pub fn date_string(&self) -> [u8; 11] {
        let mut b = [0u8; 11];
        digits(&mut b[0..4], u32::from(self.year));
        b[4] = b'-';
        digits(&mut b[5..7], u32::from(self.month));
        b[7] = b'-';
        digits(&mut b[8..10], u32::from(self.day));
        b
    }

    /// `$time`'s string, HyperDbg's layout: `HH:MM:SS.mmm` and a NUL.
    pub fn time_string(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        digits(&mut b[0..2], u32::from(self.hour));
        b[2] = b':';
        digits(&mut b[3..5], u32::from(self.minute));
        b[5] = b':';
        digits(&mut b[6..8], u32::from(self.second));
        b[8] = b'.';
        digits(&mut b[9..12], u32::from(self.millisecond));
        b
    }
}

/// Writes `value` as zero-padded decimal filling `out`.
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Memory that only the caller of [`Env::defer_printf`] can read: the script's own stack
/// and global slots (their addresses are real, so `%s` may point into them).
pub trait CallerMemory {
    /// Reads `buf.len()` bytes at `addr` if they are the caller's; `None` when the address
    /// is not the caller's (the environment reads it as guest memory).
    fn read_caller(&mut self, addr: u64, buf: &mut [u8]) -> Option<Result<(), MemFault>>;
}

/// A caller with no memory of its own.
pub struct NoCallerMemory;

impl CallerMemory for NoCallerMemory {
    fn read_caller(&mut self, _addr: u64, _buf: &mut [u8]) -> Option<Result<(), MemFault>> {
        None
    }
}

/// Default bound on the total number of `spin_loop` pauses one `spinlock_lock` may spend
/// before it gives up with [`crate::ScriptError::SpinlockNotAcquired`]: 2^24, a fraction of
/// a second to a few seconds depending on the CPU's `pause` latency. HyperDbg spins forever;
/// a script must never hang a core.
pub const DEFAULT_SPIN_BUDGET: u64 = 1 << 24;

/// What the built-ins need from the runtime. Object-safe: built-ins take `&mut dyn Env`.
///
/// Only virtual memory, the atomics, output and `test_statement` are required; every other
/// method has a default that reports the capability as unavailable.
pub trait Env {
    /// Reads `buf.len()` bytes of (guest) virtual memory at `addr`. All or nothing.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault>;

    /// Writes `data` to (guest) virtual memory at `addr`. On error nothing may have been
    /// written, or a prefix; the built-ins report the failure either way.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault>;

    /// Direct access to the guest-virtual page holding `addr` (for writes too when `write`),
    /// so compiled code can reach it without calling back; `None` keeps every access to it
    /// on [`Env::read`]/[`Env::write`] (the default).
    ///
    /// The page stays valid until the first of: the end of the current execution when
    /// [`Env::mapping_id`] is 0; `mapping_id` returning another value than when the page
    /// was handed out; a call to this environment that writes memory (`write`,
    /// `write_phys`, the atomics, `store_u32`), after which the caller drops every page
    /// it holds, since such a write may change the page tables.
    fn direct_page(&mut self, _addr: u64, _write: bool) -> Option<crate::DirectPage> {
        None
    }

    /// Which translations the pages of [`Env::direct_page`] reflect, so a runtime may keep
    /// them from one execution to the next: 0 (the default) means only for the current
    /// execution; any other value comes from [`crate::fresh_mapping_id`], and the
    /// environment replaces it with a fresh one whenever a page it handed out could stop
    /// being valid (memory freed, mappings changed outside a script).
    fn mapping_id(&self) -> u64 {
        0
    }

    /// Reads guest physical memory.
    fn read_phys(&mut self, _addr: u64, _buf: &mut [u8]) -> Result<(), MemFault> {
        Err(MemFault::Unavailable(Unavailable(
            "physical memory is not reachable in this context",
        )))
    }

    /// Writes guest physical memory.
    fn write_phys(&mut self, _addr: u64, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Unavailable(Unavailable(
            "physical memory is not reachable in this context",
        )))
    }

    /// Translates a virtual address; `Ok(None)` when it is not mapped.
    fn virt_to_phys(&mut self, _addr: u64) -> Result<Option<u64>, Unavailable> {
        Err(Unavailable(
            "address translation is not possible in this context",
        ))
    }

    /// Translates a physical address; `Ok(None)` when it is not mapped.
    fn phys_to_virt(&mut self, _addr: u64) -> Result<Option<u64>, Unavailable> {
        Err(Unavailable(
            "address translation is not possible in this context",
        ))
    }

    /// An atomic read-modify-write of the 8 bytes at `addr`; returns the old value.
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault>;

    /// An atomic compare-exchange of the 4 bytes at `addr`; returns the old value.
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault>;

    /// Stores 4 bytes at `addr` (a spinlock release). The default is a plain [`Env::write`];
    /// an environment over real shared memory should make it one aligned store.
    fn store_u32(&mut self, addr: u64, value: u32) -> Result<(), MemFault> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Total `spin_loop` pauses a spinlock acquisition may spend before failing.
    fn spin_budget(&self) -> u64 {
        DEFAULT_SPIN_BUDGET
    }

    /// Appends script output (`print`, `printf`, `formats`).
    fn output(&mut self, bytes: &[u8]);

    /// Reports a run-time warning; the script continues. The default writes
    /// `warning: <msg>` as a line of output.
    fn warn(&mut self, msg: &str) {
        self.output(b"warning: ");
        self.output(msg.as_bytes());
        self.output(b"\n");
    }

    /// Takes `printf(fmt, args...)` to format later, outside the script (a hypervisor's
    /// exit path records the format and the raw values into a ring, as bpftrace does, and
    /// a consumer thread formats them). `None` (the default) means "format it now": the
    /// caller then appends the text through [`Env::output`].
    ///
    /// An environment that defers must still check the call and read its `%s`/`%ws`
    /// strings now, with [`crate::ParsedFormat::capture`] (so the output shows what memory
    /// held at event time, and an unreadable string stops the script with the same error as
    /// when formatting now), reading addresses that `caller` claims through `caller` (the
    /// script's own stack and globals, which only the caller can reach) and the rest
    /// through itself. Formatting the record later with [`crate::ParsedFormat::render`]
    /// gives the bytes [`crate::format_printf`] gives.
    fn defer_printf(
        &mut self,
        _fmt: &[u8],
        _args: &[u64],
        _caller: &mut dyn CallerMemory,
    ) -> Option<Result<(), crate::ScriptError>> {
        None
    }

    /// [`Env::defer_printf`]'s shortcut, for the exit path: records `printf(fmt, args...)`
    /// when that takes nothing but the values (a format this environment has recorded
    /// before, with no `%s`/`%ws` to read, and room for the record now), and says whether
    /// it did. `false` (the default) sends the call the general way, so an environment
    /// only answers `true` where `defer_printf` would have recorded the same. It takes no
    /// caller memory and returns no error, so it costs the exit path a call and a test.
    fn record_printf_values(&mut self, _fmt: &[u8], _args: &[u64]) -> bool {
        false
    }

    /// The conformance hook `test_statement(x)`.
    fn test_statement(&mut self, value: u64);

    /// The time-stamp counter.
    fn rdtsc(&mut self) -> Result<u64, Unavailable> {
        Err(Unavailable(
            "the time-stamp counter is not available in this context",
        ))
    }

    /// The time-stamp counter, serialising (TSC_AUX discarded).
    fn rdtscp(&mut self) -> Result<u64, Unavailable> {
        Err(Unavailable(
            "the time-stamp counter is not available in this context",
        ))
    }

    /// Busy-waits `us` microseconds. The environment bounds the wait as it sees fit.
    fn microsleep(&mut self, _us: u64) -> Result<(), Unavailable> {
        Err(Unavailable("sleeping is not possible in this context"))
    }

    /// Enables, disables or clears an event; `Ok(false)` when there is no such event.
    fn event_control(&mut self, _op: EventOp, _id: u64) -> Result<bool, Unavailable> {
        Err(Unavailable(
            "event control is only possible inside the hypervisor",
        ))
    }

    /// Sets the short-circuit state of the current event execution. The post stage refuses
    /// with `Unavailable` (the caller turns that into a warning).
    fn event_sc(&mut self, _on: bool) -> Result<(), Unavailable> {
        Err(Unavailable(
            "short-circuiting is only possible inside an event",
        ))
    }

    /// Injects an interruption (type < 8, vector < 256 already checked).
    fn event_inject(
        &mut self,
        _kind: u8,
        _vector: u8,
        _error_code: Option<u32>,
    ) -> Result<(), Unavailable> {
        Err(Unavailable(
            "injecting events is only possible inside the hypervisor",
        ))
    }

    /// Breaks into the debugger.
    fn pause(&mut self) -> Result<(), Unavailable> {
        Err(Unavailable(
            "pausing is only possible with a debugger attached",
        ))
    }

    /// Discards pending output of every event.
    fn flush(&mut self) -> Result<(), Unavailable> {
        Err(Unavailable(
            "flushing buffers is only possible inside the hypervisor",
        ))
    }

    /// Single-steps the guest.
    fn event_trace(&mut self, _kind: TraceKind) -> Result<(), Unavailable> {
        Err(Unavailable(
            "tracing is only possible inside the hypervisor",
        ))
    }

    /// A last-branch-record operation; 1 on success, 0 on failure.
    fn lbr(&mut self, _op: LbrOp) -> Result<u64, Unavailable> {
        Err(Unavailable(
            "last-branch records are only available inside the hypervisor",
        ))
    }

    /// The local time, if the context has a clock.
    fn local_time(&mut self) -> Option<LocalTime> {
        None
    }
}
