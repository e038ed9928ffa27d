//! [`Recorder`]: how an exit writes its executions' output into its vCPU's ring without
//! formatting it. A printf becomes its format's id and the raw argument values (plus the
//! `%s`/`%ws` strings, read now); other output (warnings, errors, `print`) is copied as
//! text. Each execution's records follow an execution header and are published when the
//! execution ends, so the consumer gets them whole. A record that finds no room is
//! dropped and counted on the ring: the vCPU never waits.

use alloc::vec::Vec;

use hvscript_abi::Stage;
use hvscript_stdlib::{cut_warning, CallerMemory, Env, ParsedFormat, ScriptError};

use crate::output_record::{
    printf_words, text_words, write_execution, write_printf, write_printf_values, write_text,
    ExecutionHeader, EXECUTION_WORDS,
};
use crate::output_ring::{Claim, OutputRing};
use crate::printf_formats::FormatTable;

/// The execution whose header is due before its first record.
#[derive(Clone, Copy)]
struct Execution {
    event_id: u64,
    stage: Stage,
    core: u32,
    pid: u64,
    rip: u64,
}

impl Execution {
    fn header(&self, stamp: u64) -> ExecutionHeader {
        ExecutionHeader {
            stamp,
            event_id: self.event_id,
            stage: self.stage as u8,
            core: self.core,
            pid: self.pid,
            rip: self.rip,
        }
    }
}

/// Delivers what a ring has published, on the producer's own thread: how an embedder
/// without a consumer thread empties a full ring instead of dropping.
pub type Flush<'a> = &'a dyn Fn(&OutputRing);

/// One exit's writer into its ring (see the module documentation).
pub struct Recorder<'a> {
    claim: Claim<'a>,
    formats: &'a FormatTable,
    /// The execution being recorded.
    execution: Option<Execution>,
    /// Its header is due before its next record.
    header_due: bool,
    flush: Option<Flush<'a>>,
}

impl<'a> Recorder<'a> {
    /// A recorder that drops what does not fit the ring (its consumer is elsewhere).
    pub fn new(claim: Claim<'a>, formats: &'a FormatTable) -> Recorder<'a> {
        Recorder {
            claim,
            formats,
            execution: None,
            header_due: false,
            flush: None,
        }
    }

    /// A recorder that, when the ring is full, publishes what the execution has so far and
    /// has `flush` deliver it (the execution's output then comes in several pieces), and
    /// drops only a record that does not fit an empty ring.
    pub fn with_flush(
        claim: Claim<'a>,
        formats: &'a FormatTable,
        flush: Flush<'a>,
    ) -> Recorder<'a> {
        let mut recorder = Recorder::new(claim, formats);
        recorder.flush = Some(flush);
        recorder
    }

    /// The exit's stamp (its place in the global order).
    pub fn stamp(&self) -> u64 {
        self.claim.stamp()
    }

    /// The ring this recorder writes.
    pub fn ring(&self) -> &'a OutputRing {
        self.claim.ring()
    }

    /// Starts an execution: its records, if any, go under this header.
    /// `pid` is the guest's process at the exit (0: none), `rip` its instruction pointer.
    pub fn begin(&mut self, event_id: u64, stage: Stage, core: u32, pid: u64, rip: u64) {
        self.execution = Some(Execution {
            event_id,
            stage,
            core,
            pid,
            rip,
        });
        self.header_due = true;
    }

    /// Ends the execution: its records become visible to the consumer.
    pub fn end(&mut self) {
        if self.execution.take().is_some() && !self.header_due {
            self.claim.publish();
        }
        self.header_due = false;
    }

    /// Writes a record of `words` words (after the execution header if it is due, in the
    /// same reservation), or drops and counts it.
    #[inline]
    fn message(&mut self, words: usize, fill: impl FnOnce(&mut [u64])) {
        // Only a recorder that can flush does anything about a full ring beforehand; the
        // others learn it from `write`, without asking twice.
        if self.flush.is_some() {
            let header = if self.header_due { EXECUTION_WORDS } else { 0 };
            if !self.claim.has_room(header + words) {
                self.make_room();
            }
        }
        let written = match (self.header_due, self.execution) {
            (true, Some(e)) => {
                let stamp = self.claim.stamp();
                self.claim.write(EXECUTION_WORDS + words, |slot| {
                    let (head, record) = slot.split_at_mut(EXECUTION_WORDS);
                    write_execution(head, &e.header(stamp));
                    fill(record);
                })
            }
            _ => self.claim.write(words, fill),
        };
        if written {
            self.header_due = false;
        } else {
            self.claim.ring().count_dropped(1);
        }
    }

    /// With a flush: delivers what the execution recorded so far, so the ring is empty for
    /// the rest of it (which starts under a new header).
    #[cold]
    fn make_room(&mut self) {
        if let Some(flush) = self.flush {
            self.claim.publish();
            flush(self.claim.ring());
            self.header_due = self.execution.is_some();
        }
    }

    /// Records output text as it is.
    pub fn text(&mut self, text: &[u8]) {
        if u32::try_from(text.len()).is_err() {
            self.claim.ring().count_dropped(1);
            return;
        }
        self.message(text_words(text.len()), |slot| write_text(slot, text));
    }

    /// Records `printf(fmt, args...)`: checks it as formatting would and reads its strings
    /// now (through `caller` for the caller's own memory, `env` for the rest), then writes
    /// the format's id and the values. The errors are formatting's.
    #[inline]
    pub fn printf(
        &mut self,
        caller: &mut dyn CallerMemory,
        env: &mut dyn Env,
        fmt: &[u8],
        args: &[u64],
    ) -> Result<(), ScriptError> {
        if self.printf_values(fmt, args) {
            Ok(())
        } else {
            self.printf_slow(caller, env, fmt, args)
        }
    }

    /// The common case of [`Recorder::printf`] (what
    /// [`Env::record_printf_values`] does), written without a single call: a cached format
    /// without strings, and room in the ring now. `false` when it wrote nothing;
    /// [`Recorder::printf`] decides then.
    #[inline]
    pub fn printf_values(&mut self, fmt: &[u8], args: &[u64]) -> bool {
        let Some(hit) = self.claim.state().formats.hit(fmt) else {
            return false;
        };
        if hit.has_strings || hit.arg_count != args.len() {
            return false;
        }
        let header_due = self.header_due && self.execution.is_some();
        let header_words = if header_due { EXECUTION_WORDS } else { 0 };
        let stamp = self.claim.stamp();
        let words = header_words + printf_words(args.len(), 0);
        let Some(slot) = self.claim.reserve(words) else {
            return false;
        };
        let (head, record) = slot.split_at_mut(header_words);
        // The header's fields are read only now, each as it is stored: fewer values live
        // across the reservation, fewer registers saved on the exit path.
        if let (true, Some(e)) = (header_due, &self.execution) {
            write_execution(head, &e.header(stamp));
        }
        write_printf_values(record, hit.id, args);
        self.header_due = false;
        true
    }

    /// [`Recorder::printf`] for a format not cached yet, a call of the wrong arity, one
    /// with strings to read, or a record that needs a pad, a fresh look at the consumer's
    /// `tail`, a flush or a drop.
    #[inline(never)]
    fn printf_slow(
        &mut self,
        caller: &mut dyn CallerMemory,
        env: &mut dyn Env,
        fmt: &[u8],
        args: &[u64],
    ) -> Result<(), ScriptError> {
        let hit = match self.claim.state().formats.hit(fmt) {
            Some(hit) => hit,
            None => match self.formats.intern(fmt)? {
                Some((id, f)) => self.claim.state().formats.insert(fmt, id, f),
                // No id to give it: formatted now, still off the script's error path.
                None => return self.printf_now(caller, env, fmt, args),
            },
        };
        let id = hit.id;
        if args.len() != hit.arg_count {
            return Err(ScriptError::PrintfArity {
                specifiers: hit.arg_count,
                args: args.len(),
            });
        }
        if !hit.has_strings {
            self.message(printf_words(args.len(), 0), |slot| {
                write_printf(slot, id, args, &[])
            });
            return Ok(());
        }
        // The scratch buffer leaves the ring's state while the capture borrows the format.
        let state = self.claim.state();
        let mut scratch = core::mem::take(&mut state.scratch);
        scratch.clear();
        let captured = match state.formats.get(fmt) {
            Some((_, format)) => format.capture(caller, env, args, &mut scratch),
            None => Ok(()),
        };
        if captured.is_ok() {
            let words = printf_words(args.len(), scratch.len());
            let strings = &scratch[..];
            self.message(words, |slot| write_printf(slot, id, args, strings));
        }
        self.claim.state().scratch = scratch;
        captured
    }

    /// A printf formatted at event time, for a format the table has no room for.
    fn printf_now(
        &mut self,
        caller: &mut dyn CallerMemory,
        env: &mut dyn Env,
        fmt: &[u8],
        args: &[u64],
    ) -> Result<(), ScriptError> {
        let format = ParsedFormat::parse(fmt)?;
        format.check_arity(args.len())?;
        let mut strings = Vec::new();
        format.capture(caller, env, args, &mut strings)?;
        let mut text = Vec::new();
        let cut = format.render(args, &strings, &mut text);
        self.text(&text);
        if cut {
            self.text(&warning_line(&cut_warning()));
        }
        Ok(())
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// A warning as a line of output, as [`Env::warn`] writes one by default.
pub fn warning_line(msg: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(msg.len() + 10);
    line.extend_from_slice(b"warning: ");
    line.extend_from_slice(msg.as_bytes());
    line.push(b'\n');
    line
}
