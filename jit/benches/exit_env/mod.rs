//! The environment a hypervisor's exit gives a script, as the benches model it: the host
//! environment with printf recorded into an output ring (format id and raw values, one
//! execution header per run), and the consumer's formatting done between timed chunks,
//! off the clock, as it happens on another thread in hv-kvm. Shared by `jit_vs_interp`
//! (`exit_path`) and `jit_pairs` (`printf3_exit`).
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use hvscript_lang::HostEnv;
use hvscript_runtime::{FormatTable, OutputReader, OutputRing, Recorder};
use hvscript_stdlib::{AtomicRmw, CallerMemory, Env, MemFault, ScriptError};

/// Runs per timed chunk: what a 256 KiB ring holds of the benches' printf with room to
/// spare, so the ring never drops.
pub const CHUNK: u64 = 1000;

/// The host environment with printf deferred into an output ring, as an exit's is.
pub struct Deferring<'r> {
    pub host: HostEnv,
    pub recorder: Recorder<'r>,
}

impl Env for Deferring<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.host.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        self.host.write(addr, data)
    }
    fn atomic_rmw_u64(&mut self, addr: u64, op: AtomicRmw) -> Result<u64, MemFault> {
        self.host.atomic_rmw_u64(addr, op)
    }
    fn cmpxchg_u32(&mut self, addr: u64, expected: u32, new: u32) -> Result<u32, MemFault> {
        self.host.cmpxchg_u32(addr, expected, new)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.recorder.text(bytes);
    }
    fn test_statement(&mut self, value: u64) {
        self.host.test_statement(value);
    }
    fn record_printf_values(&mut self, fmt: &[u8], args: &[u64]) -> bool {
        self.recorder.printf_values(fmt, args)
    }
    fn defer_printf(
        &mut self,
        fmt: &[u8],
        args: &[u64],
        caller: &mut dyn CallerMemory,
    ) -> Option<Result<(), ScriptError>> {
        Some(self.recorder.printf(caller, &mut self.host, fmt, args))
    }
}

/// Runs `one` `iters` times in timed chunks of [`CHUNK`], formatting what the ring holds
/// between chunks with the clock stopped (the consumer's work, not the exit's); the time
/// of the runs alone.
pub fn timed_chunks(
    iters: u64,
    ring: &OutputRing,
    formats: &FormatTable,
    mut one: impl FnMut(),
) -> Duration {
    let mut reader = OutputReader::new();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = (iters - done).min(CHUNK);
        let t = Instant::now();
        for _ in 0..chunk {
            one();
        }
        total += t.elapsed();
        done += chunk;
        reader.read(ring, formats, |b| {
            black_box(b);
        });
    }
    assert_eq!(
        ring.dropped(),
        0,
        "the ring must never be full in this bench"
    );
    total
}
