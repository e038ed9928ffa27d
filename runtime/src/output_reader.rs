//! [`OutputReader`]: the consumer's half of deferred output. It takes a ring's published
//! records and formats them, outside the exit path, into one [`Batch`] of text per
//! execution: a printf record through its format ([`hvscript_stdlib::ParsedFormat::render`],
//! the bytes formatting at event time gave), text records as they are.

use alloc::vec::Vec;

use hvscript_abi::Stage;
use hvscript_stdlib::cut_warning;

use crate::output_record::{decode, Record};
use crate::output_recorder::warning_line;
use crate::output_ring::OutputRing;
use crate::printf_formats::{FormatTable, FormatsById};

/// The output of one execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The exit's stamp: batches of all rings go out in this order.
    pub stamp: u64,
    pub event_id: u64,
    pub stage: Stage,
    pub core: u32,
    /// The guest's process id at the exit (0: none) and its instruction pointer.
    pub pid: u64,
    pub rip: u64,
    pub text: Vec<u8>,
}

/// Formats rings' records (one reader per consumer).
#[derive(Default)]
pub struct OutputReader {
    formats: FormatsById,
}

impl OutputReader {
    pub fn new() -> OutputReader {
        OutputReader::default()
    }

    /// Formats everything `ring` has published, calling `each` with every execution's
    /// batch in order, and gives the ring its room back. `None` if another consumer is
    /// reading the ring.
    pub fn read(
        &mut self,
        ring: &OutputRing,
        table: &FormatTable,
        mut each: impl FnMut(Batch),
    ) -> Option<usize> {
        let mut current: Option<Batch> = None;
        let mut batches = 0;
        let formats = &mut self.formats;
        ring.consume(|words| match decode(words) {
            Some(Record::Execution {
                stamp,
                event_id,
                stage,
                core,
                pid,
                rip,
            }) => {
                let stage = if stage == Stage::Post as u8 {
                    Stage::Post
                } else {
                    Stage::Pre
                };
                if let Some(done) = current.replace(Batch {
                    stamp,
                    event_id,
                    stage,
                    core,
                    pid,
                    rip,
                    text: Vec::new(),
                }) {
                    batches += 1;
                    each(done);
                }
            }
            Some(Record::Printf {
                format,
                args,
                strings,
            }) => {
                let (Some(batch), Some(format)) = (current.as_mut(), formats.get(table, format))
                else {
                    return;
                };
                if format.render(args, strings, &mut batch.text) {
                    batch.text.extend_from_slice(&warning_line(&cut_warning()));
                }
            }
            Some(Record::Text(text)) => {
                if let Some(batch) = current.as_mut() {
                    batch.text.extend_from_slice(text);
                }
            }
            None => {}
        })?;
        if let Some(done) = current {
            batches += 1;
            each(done);
        }
        Some(batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output_recorder::Recorder;
    use alloc::vec;
    use core::sync::atomic::AtomicU64;
    use hvscript_stdlib::{AtomicRmw, Env, MemFault, NoCallerMemory, ScriptError};

    /// Guest memory with one string at 0x1000.
    struct Guest(Vec<u8>);

    impl Env for Guest {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
            let off = addr.checked_sub(0x1000).ok_or(MemFault::Invalid)? as usize;
            let src = self.0.get(off..off + buf.len()).ok_or(MemFault::Invalid)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write(&mut self, _: u64, _: &[u8]) -> Result<(), MemFault> {
            Err(MemFault::Invalid)
        }
        fn atomic_rmw_u64(&mut self, _: u64, _: AtomicRmw) -> Result<u64, MemFault> {
            Err(MemFault::Invalid)
        }
        fn cmpxchg_u32(&mut self, _: u64, _: u32, _: u32) -> Result<u32, MemFault> {
            Err(MemFault::Invalid)
        }
        fn output(&mut self, _: &[u8]) {}
        fn test_statement(&mut self, _: u64) {}
    }

    #[test]
    fn executions_come_back_as_batches_of_the_text_formatting_gives() {
        let ring = OutputRing::new(0);
        let table = FormatTable::new();
        let stamps = AtomicU64::new(5);
        let mut guest = Guest(b"disk\0".to_vec());
        let mut rec = Recorder::new(ring.claim(&stamps).unwrap(), &table);
        rec.begin(1, Stage::Pre, 2, 0, 0);
        rec.printf(&mut NoCallerMemory, &mut guest, b"a %d %s\n", &[7, 0x1000])
            .unwrap();
        rec.text(b"warning: x\n");
        rec.end();
        rec.begin(2, Stage::Post, 2, 0, 0);
        rec.end(); // prints nothing: no batch
        rec.begin(3, Stage::Post, 2, 0, 0);
        // An unreadable %s is the script's error, as when formatting now.
        assert!(matches!(
            rec.printf(&mut NoCallerMemory, &mut guest, b"%s", &[0x2000]),
            Err(ScriptError::InvalidAddress { addr: 0x2000, .. })
        ));
        rec.printf(&mut NoCallerMemory, &mut guest, b"%llx|", &[u64::MAX])
            .unwrap();
        drop(rec);
        // Memory changes before the consumer formats: it shows what it held at the event.
        guest.0[0] = b'D';
        let mut got = Vec::new();
        OutputReader::new().read(&ring, &table, |b| got.push(b));
        assert_eq!(
            got,
            vec![
                Batch {
                    stamp: 5,
                    event_id: 1,
                    stage: Stage::Pre,
                    core: 2,
                    pid: 0,
                    rip: 0,
                    text: b"a 7 disk\nwarning: x\n".to_vec()
                },
                Batch {
                    stamp: 5,
                    event_id: 3,
                    stage: Stage::Post,
                    core: 2,
                    pid: 0,
                    rip: 0,
                    text: b"ffffffffffffffff|".to_vec()
                },
            ]
        );
    }

    #[test]
    fn a_printf_records_the_same_words_whichever_path_writes_it() {
        let ring = OutputRing::new(0);
        let table = FormatTable::new();
        let stamps = AtomicU64::new(0);
        let fmt = b"rax=%d rbx=%x\n";
        let mut rec = Recorder::new(ring.claim(&stamps).unwrap(), &table);
        rec.begin(1, Stage::Pre, 0, 7, 8);
        assert!(
            !rec.printf_values(fmt, &[1, 2]),
            "a format not seen yet takes the general path"
        );
        rec.printf(&mut NoCallerMemory, &mut Guest(vec![]), fmt, &[1, 2])
            .unwrap();
        rec.end();
        rec.begin(1, Stage::Pre, 0, 7, 8);
        assert!(
            !rec.printf_values(fmt, &[1]),
            "nor does a call of another arity"
        );
        assert!(rec.printf_values(fmt, &[1, 2]));
        rec.end();
        drop(rec);
        let mut records = Vec::new();
        ring.consume(|r| records.push(r.to_vec())).unwrap();
        assert_eq!(records.len(), 4, "an execution header and a printf each");
        assert_eq!(records[..2], records[2..]);
    }

    #[test]
    fn a_recorder_with_a_flush_empties_its_ring_instead_of_dropping() {
        let ring = OutputRing::new(0);
        let table = FormatTable::new();
        let stamps = AtomicU64::new(0);
        let batches = core::cell::RefCell::new(Vec::new());
        let reader = core::cell::RefCell::new(OutputReader::new());
        let flush = |r: &OutputRing| {
            reader
                .borrow_mut()
                .read(r, &table, |b| batches.borrow_mut().push(b));
        };
        let mut rec = Recorder::with_flush(ring.claim(&stamps).unwrap(), &table, &flush);
        rec.begin(4, Stage::Post, 1, 0, 0);
        for i in 0..10_000u64 {
            rec.printf(&mut NoCallerMemory, &mut Guest(vec![]), b"%d\n", &[i])
                .unwrap();
        }
        rec.end();
        drop(rec);
        flush(&ring);
        assert_eq!(ring.dropped(), 0);
        let batches = batches.into_inner();
        assert!(
            batches.len() > 1,
            "the ring was emptied while the execution ran"
        );
        assert!(batches
            .iter()
            .all(|b| (b.event_id, b.stage, b.core) == (4, Stage::Post, 1)));
        let text: Vec<u8> = batches.into_iter().flat_map(|b| b.text).collect();
        let lines: Vec<&[u8]> = text
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 10_000);
        assert_eq!(lines[9_999], b"9999");
    }

    #[test]
    fn a_full_ring_drops_and_counts_whole_messages() {
        let ring = OutputRing::new(0);
        let table = FormatTable::new();
        let stamps = AtomicU64::new(0);
        let mut rec = Recorder::new(ring.claim(&stamps).unwrap(), &table);
        rec.begin(1, Stage::Pre, 0, 0, 0);
        let mut kept = 0;
        for i in 0..10_000u64 {
            rec.printf(
                &mut NoCallerMemory,
                &mut Guest(vec![]),
                b"%d %d %d\n",
                &[i, i, i],
            )
            .unwrap();
            kept = i + 1 - ring.dropped();
        }
        drop(rec);
        assert!(ring.dropped() > 0);
        let mut lines = 0;
        OutputReader::new().read(&ring, &table, |b| {
            lines += b.text.iter().filter(|&&c| c == b'\n').count() as u64;
            assert!(b.text.starts_with(b"0 0 0\n1 1 1\n"));
        });
        assert_eq!(lines, kept);
    }
}
