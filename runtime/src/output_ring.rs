//! [`OutputRing`]: one vCPU's ring of output records, lock-free between its one producer
//! (the vCPU, inside an exit) and its one consumer (whoever formats the output, outside the
//! exit path), and the [`Claim`] an exit takes on it.
//!
//! The ring is an array of 64-bit words. A record is a run of words that never wraps: its
//! first word says its kind (low 8 bits), its length in words (the next 24) and one 32-bit
//! value of its own ([`header`]); where a record does not fit before the end of the array,
//! the producer writes a pad word and starts it at the beginning. The producer writes past
//! the published `head` and publishes whole executions at once ([`Claim::publish`], one
//! release store); the consumer reads up to `head` and gives the words back by moving
//! `tail` (one release store). A producer that finds no room drops the record and counts it
//! ([`OutputRing::dropped`]): a full ring never blocks the vCPU.
//!
//! Claiming the ring makes an exit its only producer and stamps the exit for the global
//! order of output across rings. The claim state is `IDLE`, `STARTING` (claimed, stamp not
//! yet taken) or the stamp; the stamp is a shared counter's next value, taken *after*
//! `STARTING` is visible. A consumer that reads the counter, then every ring's state, then
//! the records, therefore knows that no ring can still publish a record stamped below
//! both the counter it read and every stamp in progress (see `hv_core`'s merge); the cost
//! on the exit path is one compare-exchange and one fetch-add per exit that has events.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::printf_formats::FormatCache;

/// The kind of the word that fills the rest of the array before a record that did not fit.
pub const PAD: u8 = 0;

/// The smallest ring, in words (a record is at most half a ring).
pub const MIN_RING_WORDS: usize = 1024;

const IDLE: u64 = u64::MAX;
const STARTING: u64 = u64::MAX - 1;

/// A record's first word.
pub fn header(kind: u8, words: usize, value: u32) -> u64 {
    u64::from(kind) | ((words as u64 & 0xff_ffff) << 8) | (u64::from(value) << 32)
}

/// The kind, length in words and value of a record's first word.
pub fn split_header(word: u64) -> (u8, usize, u32) {
    (
        word as u8,
        ((word >> 8) & 0xff_ffff) as usize,
        (word >> 32) as u32,
    )
}

/// Where a ring's claim stands, as a consumer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// No exit holds the ring: everything it will publish is stamped later than now.
    Idle,
    /// An exit holds it and is taking its stamp, which may be any value not yet read.
    Starting,
    /// An exit stamped this holds it and may still publish records with this stamp.
    Stamped(u64),
}

/// Keeps a hot atomic on its own cache line, so the producer's and the consumer's stores
/// do not bounce one line between their cores.
#[repr(align(64))]
struct Line<T>(T);

/// What only the producer touches: its write position and what it keeps between exits.
pub(crate) struct ProducerState {
    /// Words written, published or not (monotonic).
    pos: u64,
    /// The consumer's `tail` when last read: re-read only when the ring looks full.
    cached_tail: u64,
    /// Format ids by format address, so a printf finds its id without a lock.
    pub(crate) formats: FormatCache,
    /// Captured `%s`/`%ws` strings of the printf being recorded.
    pub(crate) scratch: Vec<u8>,
}

/// One vCPU's output ring (see the module documentation).
pub struct OutputRing {
    words: Box<[UnsafeCell<u64>]>,
    mask: u64,
    /// Words published (monotonic).
    head: Line<AtomicU64>,
    /// Words the consumer has given back (monotonic).
    tail: Line<AtomicU64>,
    /// `IDLE`, `STARTING` or the stamp of the exit holding the ring.
    state: Line<AtomicU64>,
    dropped: AtomicU64,
    /// Held while a consumer reads, so two consumers never share the read side.
    consuming: AtomicBool,
    producer: UnsafeCell<ProducerState>,
}

// SAFETY: the words between `tail` and `head` are only read (by the one consumer holding
// `consuming`), the words past `head` only written (by the one producer holding the claim);
// `head` and `tail` move with release stores and are read with acquire loads, so each side
// sees the other's words complete. `producer` is touched only through a `Claim`, of which
// the `state` compare-exchange admits one at a time.
unsafe impl Sync for OutputRing {}

impl OutputRing {
    /// A ring of at least `bytes` bytes (rounded up to a power of two words, at least
    /// [`MIN_RING_WORDS`]).
    pub fn new(bytes: usize) -> OutputRing {
        let words = (bytes / 8).max(MIN_RING_WORDS).next_power_of_two();
        OutputRing {
            words: (0..words).map(|_| UnsafeCell::new(0)).collect(),
            mask: words as u64 - 1,
            head: Line(AtomicU64::new(0)),
            tail: Line(AtomicU64::new(0)),
            state: Line(AtomicU64::new(IDLE)),
            dropped: AtomicU64::new(0),
            consuming: AtomicBool::new(false),
            producer: UnsafeCell::new(ProducerState {
                pos: 0,
                cached_tail: 0,
                formats: FormatCache::default(),
                scratch: Vec::new(),
            }),
        }
    }

    /// The ring's size in words.
    pub fn capacity_words(&self) -> usize {
        self.words.len()
    }

    /// Claims the ring for one exit and stamps it with `stamps`' next value; `None` when
    /// another exit holds it (two threads reporting the same core at once).
    pub fn claim<'a>(&'a self, stamps: &AtomicU64) -> Option<Claim<'a>> {
        self.state
            .0
            .compare_exchange(IDLE, STARTING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // AcqRel: `STARTING` (stored above) is visible to whoever reads a later counter
        // value, which is what lets a consumer trust an `Idle` it reads after the counter.
        let stamp = stamps.fetch_add(1, Ordering::AcqRel);
        self.state.0.store(stamp, Ordering::Relaxed);
        Some(Claim { ring: self, stamp })
    }

    /// Where the claim stands (acquire: an `Idle` read here follows every record the
    /// last claim published).
    pub fn claim_state(&self) -> ClaimState {
        match self.state.0.load(Ordering::Acquire) {
            IDLE => ClaimState::Idle,
            STARTING => ClaimState::Starting,
            stamp => ClaimState::Stamped(stamp),
        }
    }

    /// Records dropped because the ring was full, or could not hold them at all.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts `n` records dropped for this ring.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Calls `each` with every published record (pad words skipped), oldest first, and
    /// gives their words back. `None` if another consumer is reading the ring now.
    pub fn consume(&self, mut each: impl FnMut(&[u64])) -> Option<usize> {
        if self.consuming.swap(true, Ordering::Acquire) {
            return None;
        }
        let head = self.head.0.load(Ordering::Acquire);
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        let cap = self.mask + 1;
        let mut records = 0;
        while tail < head {
            let at = tail & self.mask;
            let (kind, len, _) = split_header(self.word(at));
            if kind == PAD {
                tail += cap - at;
                continue;
            }
            // A record never wraps and never passes `head` (the producer made it so); a
            // zero length cannot come from it either, but must not stall the loop.
            let len = (len as u64).clamp(1, (cap - at).min(head - tail));
            // SAFETY: words `at..at + len` lie inside the array (`len <= cap - at`) and
            // below `head`, published by the producer's release store that the acquire
            // load above saw; the producer writes none of them until `tail` passes them.
            let record =
                unsafe { core::slice::from_raw_parts(self.base().add(at as usize), len as usize) };
            each(record);
            records += 1;
            tail += len;
        }
        self.tail.0.store(tail, Ordering::Release);
        self.consuming.store(false, Ordering::Release);
        Some(records)
    }

    /// Whether published records wait for the consumer.
    pub fn has_pending(&self) -> bool {
        self.head.0.load(Ordering::Acquire) != self.tail.0.load(Ordering::Relaxed)
    }

    /// The first word; `UnsafeCell<u64>` has `u64`'s layout, and a pointer from the whole
    /// array may reach any of its words.
    fn base(&self) -> *mut u64 {
        self.words.as_ptr().cast::<u64>().cast_mut()
    }

    fn word(&self, at: u64) -> u64 {
        // SAFETY: `at` is masked into the array; the consumer calls this only on published
        // words (see `consume`).
        unsafe { *self.base().add(at as usize) }
    }
}

/// An exit's hold on a ring: the only producer while it lives, and the exit's stamp. What
/// it wrote and did not publish is published when it is dropped, and the ring goes back to
/// idle.
pub struct Claim<'a> {
    ring: &'a OutputRing,
    stamp: u64,
}

impl<'a> Claim<'a> {
    /// The exit's place in the global order.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The ring this claim holds.
    pub fn ring(&self) -> &'a OutputRing {
        self.ring
    }

    /// The producer's private state.
    pub(crate) fn state(&mut self) -> &mut ProducerState {
        // SAFETY: the claim is the ring's only producer (the `state` compare-exchange
        // admits one claim at a time), and `&mut self` makes this the only reference
        // through it.
        unsafe { &mut *self.ring.producer.get() }
    }

    /// The pad a record of `len` words needs before it (0 when it fits before the end of
    /// the array), if the ring has room for both now; `None` if not, or if a record that
    /// long could never fit (more than half the ring).
    #[inline]
    fn room(&mut self, len: u64) -> Option<u64> {
        let ring = self.ring;
        let cap = ring.mask + 1;
        if len == 0 || len > cap / 2 {
            return None;
        }
        let state = self.state();
        let at = state.pos & ring.mask;
        let pad = if len > cap - at { cap - at } else { 0 };
        let need = pad + len;
        if state.pos + need - state.cached_tail > cap {
            state.cached_tail = ring.tail.0.load(Ordering::Acquire);
            if state.pos + need - state.cached_tail > cap {
                return None;
            }
        }
        Some(pad)
    }

    /// Whether a record of `words` words fits now.
    #[inline]
    pub fn has_room(&mut self, words: usize) -> bool {
        self.room(words as u64).is_some()
    }

    /// Writes a record of `words` words with `fill`, not visible to the consumer until
    /// [`Claim::publish`]; `false` (nothing written) when the ring has no room for it now,
    /// or a record that long could never fit (more than half the ring).
    #[inline]
    pub fn write(&mut self, words: usize, fill: impl FnOnce(&mut [u64])) -> bool {
        let Some(pad) = self.room(words as u64) else {
            return false;
        };
        let ring = self.ring;
        let state = self.state();
        if pad > 0 {
            let at = state.pos & ring.mask;
            // SAFETY: word `at` is free (`room` checked) and unpublished; only this claim
            // writes there.
            unsafe { *ring.base().add(at as usize) = header(PAD, pad as usize, 0) };
            state.pos += pad;
        }
        let start = (state.pos & ring.mask) as usize;
        state.pos += words as u64;
        // SAFETY: words `start..start + words` are inside the array (a record that does
        // not fit before its end was moved to the start), free (`room` checked that
        // `tail + cap` is past them) and unpublished, so the consumer reads none of them;
        // this claim is the only producer and the slice does not outlive this call.
        fill(unsafe { core::slice::from_raw_parts_mut(ring.base().add(start), words) });
        true
    }

    /// The next `words` words, unwritten and unpublished, when they fit before the end of
    /// the array and the consumer's `tail` as last read leaves room for them: the common
    /// case of [`Claim::write`], with no pad to write and no `tail` to read. `None` says
    /// nothing about the ring; `write` then decides. The words are the caller's to fill
    /// with one record (or several whole ones) before the next publish.
    #[inline]
    pub fn reserve(&mut self, words: usize) -> Option<&mut [u64]> {
        let ring = self.ring;
        let cap = ring.mask + 1;
        let state = self.state();
        let (pos, len) = (state.pos, words as u64);
        let at = pos & ring.mask;
        if len > cap / 2 || at + len > cap || pos + len - state.cached_tail > cap {
            return None;
        }
        state.pos = pos + len;
        // SAFETY: words `at..at + len` are inside the array (checked above), free (`tail`
        // only grows, so `tail + cap` is still past them) and unpublished, so the consumer
        // reads none of them; this claim is the only producer, and the slice borrows it.
        Some(unsafe { core::slice::from_raw_parts_mut(ring.base().add(at as usize), words) })
    }

    /// Makes everything written so far visible to the consumer.
    pub fn publish(&mut self) {
        let pos = self.state().pos;
        self.ring.head.0.store(pos, Ordering::Release);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.publish();
        // Release: a consumer that reads `Idle` sees every record published above.
        self.ring.state.0.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(ring: &OutputRing) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        ring.consume(|r| out.push(r.to_vec())).unwrap();
        out
    }

    #[test]
    fn records_wrap_with_a_pad_and_come_back_in_order() {
        let ring = OutputRing::new(0);
        let stamps = AtomicU64::new(0);
        let cap = ring.capacity_words();
        let mut seen = Vec::new();
        for round in 0..50u64 {
            let mut c = ring.claim(&stamps).unwrap();
            assert_eq!(c.stamp(), round);
            // Sizes that do not divide the ring: records land across its end.
            let len = 3 + (round as usize * 37) % (cap / 4);
            assert!(c.write(len, |slot| {
                slot[0] = header(7, len, round as u32);
                slot[len - 1] = round;
            }));
            drop(c);
            for r in records(&ring) {
                let (kind, n, value) = split_header(r[0]);
                assert_eq!((kind, n, r.len()), (7, len, len));
                assert_eq!(r[n - 1], u64::from(value));
                seen.push(value);
            }
        }
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn a_full_ring_refuses_records_until_the_consumer_gives_room_back() {
        let ring = OutputRing::new(0);
        let stamps = AtomicU64::new(0);
        let mut c = ring.claim(&stamps).unwrap();
        let half = ring.capacity_words() / 2;
        let fill = |n, v| move |slot: &mut [u64]| slot[0] = header(1, n, v);
        assert!(
            !c.write(half + 1, fill(half + 1, 9)),
            "more than half a ring never fits"
        );
        assert!(c.write(half, fill(half, 0)));
        assert!(c.write(half, fill(half, 1)));
        assert!(!c.write(1, fill(1, 9)), "full");
        c.publish();
        assert_eq!(ring.consume(|_| {}), Some(2));
        assert!(c.write(1, fill(1, 2)));
        drop(c);
        assert_eq!(records(&ring).len(), 1);
    }

    #[test]
    fn reserve_takes_only_what_fits_before_the_end_and_write_does_the_rest() {
        let ring = OutputRing::new(0);
        let stamps = AtomicU64::new(0);
        let cap = ring.capacity_words();
        let mut c = ring.claim(&stamps).unwrap();
        assert!(c.reserve(cap / 2 + 1).is_none(), "more than half a ring");
        let slot = c.reserve(cap / 2 - 3).unwrap();
        slot[0] = header(1, cap / 2 - 3, 0);
        let slot = c.reserve(cap / 2 - 3).unwrap();
        slot[0] = header(1, cap / 2 - 3, 1);
        // 6 words left before the end: 8 do not fit there, and `reserve` leaves the pad to
        // `write`, which finds the ring full.
        assert!(c.reserve(8).is_none());
        assert!(!c.write(8, |slot| slot[0] = header(1, 8, 9)));
        c.publish();
        assert_eq!(ring.consume(|_| {}), Some(2));
        // The consumer gave the words back, but `reserve` goes by the tail it last read:
        // it declines, and `write` reads the tail again, pads and writes at the start.
        assert!(c.reserve(8).is_none());
        assert!(c.write(8, |slot| slot[0] = header(1, 8, 2)));
        let slot = c.reserve(4).unwrap();
        slot[0] = header(1, 4, 3);
        drop(c);
        let got: Vec<u32> = records(&ring)
            .iter()
            .map(|r| split_header(r[0]).2)
            .collect();
        assert_eq!(got, [2, 3]);
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn one_claim_at_a_time_and_records_wait_for_publication() {
        let ring = OutputRing::new(0);
        let stamps = AtomicU64::new(10);
        let mut c = ring.claim(&stamps).unwrap();
        assert!(ring.claim(&stamps).is_none());
        assert_eq!(ring.claim_state(), ClaimState::Stamped(10));
        assert!(c.write(2, |slot| slot[0] = header(1, 2, 0)));
        assert!(records(&ring).is_empty(), "not published yet");
        c.publish();
        assert!(c.write(4, |slot| slot[0] = header(1, 4, 1)));
        assert_eq!(records(&ring).len(), 1);
        drop(c);
        assert_eq!(ring.claim_state(), ClaimState::Idle);
        let got = records(&ring);
        assert_eq!(got.len(), 1, "dropping the claim published the rest");
        assert_eq!(split_header(got[0][0]).1, 4);
    }

    #[test]
    fn a_producer_and_a_consumer_on_two_threads_lose_and_reorder_nothing() {
        extern crate std;
        let ring = OutputRing::new(0);
        let stamps = AtomicU64::new(0);
        const N: u64 = 200_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0;
                while i < N {
                    let mut c = ring.claim(&stamps).unwrap();
                    let len = 2 + (i % 5) as usize;
                    if c.write(len, |slot| {
                        slot[0] = header(1, len, 0);
                        slot[1] = i;
                    }) {
                        i += 1;
                    } else {
                        core::hint::spin_loop();
                    }
                }
            });
            let mut next = 0;
            while next < N {
                ring.consume(|r| {
                    assert_eq!(r[1], next);
                    assert_eq!(r.len(), 2 + (next % 5) as usize);
                    next += 1;
                });
            }
        });
    }
}
