//! `read_frame` / `read_frame_within` on arbitrary byte streams, delivered in arbitrary
//! pieces with read timeouts in between: every well-formed frame comes back whole and in
//! order, anything else ends in an error (never a panic, never an unbounded wait), and a
//! frame that stops half-way ends at its deadline or when the caller cancels.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use hv_kvm::control::{read_frame, read_frame_within, write_frame, FrameError, MAX_FRAME};
use proptest::prelude::*;

/// Gives `data` in the given piece sizes, with a read timeout after each piece when
/// `stalls` says so, then end of stream (or timeouts forever when `hang`).
struct Pieces {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    stalls: Vec<bool>,
    step: usize,
    stalled: bool,
    hang: bool,
}

impl Pieces {
    fn new(data: Vec<u8>, sizes: Vec<usize>, stalls: Vec<bool>) -> Pieces {
        Pieces {
            data,
            at: 0,
            sizes,
            stalls,
            step: 0,
            stalled: false,
            hang: false,
        }
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.data.len() {
            return if self.hang {
                Err(ErrorKind::WouldBlock.into())
            } else {
                Ok(0)
            };
        }
        let i = self.step % self.sizes.len().max(1);
        if !self.stalled && self.stalls.get(i).copied().unwrap_or(false) {
            self.stalled = true;
            return Err(ErrorKind::WouldBlock.into());
        }
        self.stalled = false;
        self.step += 1;
        let n = self
            .sizes
            .get(i)
            .copied()
            .unwrap_or(1)
            .clamp(1, buf.len())
            .min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        write_frame(&mut out, f).unwrap();
    }
    out
}

/// Reads frames until an error other than a timeout between frames (at most `limit`
/// calls, so a bug cannot loop forever).
fn read_all(r: &mut Pieces, limit: usize) -> (Vec<Vec<u8>>, FrameError) {
    let mut frames = Vec::new();
    for _ in 0..limit {
        match read_frame_within(r, Some(Duration::from_secs(60)), &|| false) {
            Ok(f) => frames.push(f),
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return (frames, e),
        }
    }
    panic!("no end after {limit} reads");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn well_formed_frames_come_back_whole_in_order(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..12),
        sizes in prop::collection::vec(1usize..64, 1..16),
        stalls in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let bytes = encode(&frames);
        let n = bytes.len();
        let mut r = Pieces::new(bytes, sizes, stalls);
        let (got, end) = read_all(&mut r, 4 * n + 64);
        prop_assert_eq!(&got, &frames);
        prop_assert!(matches!(end, FrameError::Closed), "{:?}", end);
    }

    #[test]
    fn a_truncated_stream_gives_the_whole_frames_then_closed(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
        cut in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..32, 1..8),
    ) {
        let bytes = encode(&frames);
        let cut = cut.index(bytes.len());
        let whole = {
            let mut at = 0;
            frames.iter().take_while(|f| { at += 4 + f.len(); at <= cut }).count()
        };
        let mut r = Pieces::new(bytes[..cut].to_vec(), sizes, vec![false]);
        let (got, end) = read_all(&mut r, 4 * cut + 64);
        prop_assert_eq!(&got[..], &frames[..whole]);
        prop_assert!(matches!(end, FrameError::Closed), "{:?}", end);
    }

    #[test]
    fn arbitrary_bytes_end_in_an_error_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..128, 1..8),
        stalls in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let n = bytes.len();
        let mut r = Pieces::new(bytes, sizes, stalls);
        let (got, end) = read_all(&mut r, 4 * n + 64);
        prop_assert!(got.iter().map(|f| 4 + f.len()).sum::<usize>() <= n);
        match end {
            FrameError::Closed => {}
            FrameError::TooLong(len) => prop_assert!(len > MAX_FRAME),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn a_frame_that_stops_half_way_ends_at_its_deadline(
        frame in prop::collection::vec(any::<u8>(), 1..200),
        keep in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&[frame]);
        let keep = 1 + keep.index(bytes.len() - 1); // at least one byte, never all
        let mut r = Pieces::new(bytes[..keep].to_vec(), vec![7], vec![false]);
        r.hang = true;
        let start = Instant::now();
        let end = read_frame_within(&mut r, Some(Duration::from_millis(2)), &|| false);
        prop_assert!(start.elapsed() < Duration::from_secs(5));
        match end {
            Err(FrameError::Incomplete { got, want }) => {
                prop_assert_eq!(got, keep);
                // Until the length prefix is whole, only the prefix is wanted.
                prop_assert_eq!(want, if keep < 4 { 4 } else { bytes.len() });
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn a_half_frame_is_cancelled_when_the_caller_says_so() {
    let mut r = Pieces::new(vec![10, 0, 0, 0, b'a'], vec![5], vec![false]);
    r.hang = true;
    let cancel = std::cell::Cell::new(0);
    let end = read_frame_within(&mut r, None, &|| {
        cancel.set(cancel.get() + 1);
        cancel.get() > 3
    });
    assert!(matches!(end, Err(FrameError::Cancelled)), "{end:?}");
    assert_eq!(cancel.get(), 4);
}

#[test]
fn a_length_prefix_alone_reserves_no_memory_and_oversize_is_refused() {
    // A 1 MiB frame announced, 3 bytes sent: an incomplete frame, not a 1 MiB buffer.
    let mut r = Pieces::new(vec![0, 0, 16, 0, 1, 2, 3], vec![64], vec![false]);
    r.hang = true;
    let end = read_frame_within(&mut r, Some(Duration::from_millis(1)), &|| false);
    assert!(
        matches!(
            end,
            Err(FrameError::Incomplete {
                got: 7,
                want: 0x10_0004
            })
        ),
        "{end:?}"
    );
    let mut r = Pieces::new(u32::MAX.to_le_bytes().to_vec(), vec![4], vec![false]);
    assert!(matches!(
        read_frame(&mut r),
        Err(FrameError::TooLong(n)) if n == u32::MAX as usize
    ));
}
