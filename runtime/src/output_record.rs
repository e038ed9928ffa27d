//! The records an execution leaves in an [`OutputRing`](crate::OutputRing), word by word:
//!
//! - `EXECUTION`: value = core; then the exit's stamp, the event id, the stage. Written
//!   before the first message of each execution, so a consumer can hand the text of one
//!   execution to its sink in one piece, as when executions formatted their own output.
//! - `PRINTF`: value = format id ([`crate::FormatTable`]); then the argument count (low
//!   32 bits) and the captured strings' length in bytes (high 32 bits); the raw argument
//!   values; the captured `%s`/`%ws` strings ([`hvscript_stdlib::ParsedFormat::capture`]),
//!   padded to a word.
//! - `TEXT`: value = length in bytes; the bytes, padded (warnings, errors, `print`, and a
//!   printf formatted at event time when its format could not get an id).

use crate::output_ring::{header, split_header};

pub const EXECUTION: u8 = 1;
pub const PRINTF: u8 = 2;
pub const TEXT: u8 = 3;

/// One record, as the consumer reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Execution {
        stamp: u64,
        event_id: u64,
        stage: u8,
        core: u32,
        /// The guest's process id at the exit (0: none) and its instruction pointer.
        pid: u64,
        rip: u64,
    },
    Printf {
        format: u32,
        args: &'a [u64],
        strings: &'a [u8],
    },
    Text(&'a [u8]),
}

fn words_for(bytes: usize) -> usize {
    bytes.div_ceil(8)
}

/// The words of an `EXECUTION` record.
pub const EXECUTION_WORDS: usize = 6;

/// The exit an execution ran at, as its header records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionHeader {
    pub stamp: u64,
    pub event_id: u64,
    pub stage: u8,
    pub core: u32,
    pub pid: u64,
    pub rip: u64,
}

#[inline]
pub fn write_execution(slot: &mut [u64], h: &ExecutionHeader) {
    slot[0] = header(EXECUTION, EXECUTION_WORDS, h.core);
    slot[1] = h.stamp;
    slot[2] = h.event_id;
    slot[3] = u64::from(h.stage);
    slot[4] = h.pid;
    slot[5] = h.rip;
}

/// The words of a `PRINTF` record with these arguments and captured strings.
pub fn printf_words(args: usize, strings: usize) -> usize {
    2 + args + words_for(strings)
}

#[inline]
pub fn write_printf(slot: &mut [u64], format: u32, args: &[u64], strings: &[u8]) {
    slot[0] = header(PRINTF, slot.len(), format);
    slot[1] = args.len() as u64 | ((strings.len() as u64) << 32);
    slot[2..2 + args.len()].copy_from_slice(args);
    if !strings.is_empty() {
        write_bytes(&mut slot[2 + args.len()..], strings);
    }
}

/// [`write_printf`] without strings, and without a `memcpy` call: the exit path's printf
/// of values (see [`crate::Recorder`]) makes no call at all.
#[inline(always)]
pub fn write_printf_values(slot: &mut [u64], format: u32, args: &[u64]) {
    slot[0] = header(PRINTF, slot.len(), format);
    slot[1] = args.len() as u64;
    for (d, s) in slot[2..].iter_mut().zip(args) {
        // SAFETY: `s` is a reference, valid and aligned for a read. (Volatile keeps the
        // compiler from making the loop a `memcpy` call again.)
        *d = unsafe { core::ptr::read_volatile(s) };
    }
}

/// The words of a `TEXT` record of `len` bytes.
pub fn text_words(len: usize) -> usize {
    1 + words_for(len)
}

pub fn write_text(slot: &mut [u64], text: &[u8]) {
    slot[0] = header(TEXT, slot.len(), text.len() as u32);
    write_bytes(&mut slot[1..], text);
}

/// Stores `bytes` in `words` in memory order, so [`as_bytes`] gives them back as a slice.
fn write_bytes(words: &mut [u64], bytes: &[u8]) {
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_ne_bytes(b);
    }
}

/// The first `len` bytes of `words`, in memory order.
fn as_bytes(words: &[u64], len: usize) -> &[u8] {
    let len = len.min(words.len() * 8);
    // SAFETY: `words` is `words.len() * 8` initialised bytes with no padding and `u8` has
    // alignment 1; `len` is within them, and the borrow is `words`' own.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

/// Reads a record the ring handed out; `None` for a kind this module does not write.
pub fn decode(words: &[u64]) -> Option<Record<'_>> {
    let (kind, _, value) = split_header(*words.first()?);
    match kind {
        EXECUTION if words.len() >= EXECUTION_WORDS => Some(Record::Execution {
            stamp: words[1],
            event_id: words[2],
            stage: words[3] as u8,
            core: value,
            pid: words[4],
            rip: words[5],
        }),
        PRINTF if words.len() >= 2 => {
            let nargs = (words[1] as u32 as usize).min(words.len() - 2);
            let strings = (words[1] >> 32) as usize;
            Some(Record::Printf {
                format: value,
                args: &words[2..2 + nargs],
                strings: as_bytes(&words[2 + nargs..], strings),
            })
        }
        TEXT => Some(Record::Text(as_bytes(&words[1..], value as usize))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_reads_back_as_written() {
        let mut e = [0u64; EXECUTION_WORDS];
        write_execution(
            &mut e,
            &ExecutionHeader {
                stamp: 9,
                event_id: 0x10,
                stage: 1,
                core: 3,
                pid: 7,
                rip: 0x401000,
            },
        );
        assert_eq!(
            decode(&e),
            Some(Record::Execution {
                stamp: 9,
                event_id: 0x10,
                stage: 1,
                core: 3,
                pid: 7,
                rip: 0x401000,
            })
        );
        let strings = b"\x05\0\0\0hello";
        let mut p = alloc::vec![0u64; printf_words(3, strings.len())];
        write_printf(&mut p, 42, &[1, 2, 3], strings);
        assert_eq!(
            decode(&p),
            Some(Record::Printf {
                format: 42,
                args: &[1, 2, 3],
                strings
            })
        );
        for text in [&b""[..], b"x", b"exactly8", b"nine byte"] {
            let mut t = alloc::vec![0u64; text_words(text.len())];
            write_text(&mut t, text);
            assert_eq!(decode(&t), Some(Record::Text(text)));
        }
    }
}
