//! Frames on the control socket: a 4-byte little-endian length, then that many bytes;
//! reading one with a deadline for its completion.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::MAX_FRAME;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode_frame(payload)?)
}

/// A frame's bytes: the length, then the payload.
pub(super) fn encode_frame(payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "frame too long"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(buf)
}

/// A frame read, or why not.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection.
    Closed,
    /// Longer than [`MAX_FRAME`]: the stream is unusable after it.
    TooLong(usize),
    /// The frame had started but was not complete by the deadline (`got` of the `want`
    /// bytes, length prefix included).
    Incomplete {
        got: usize,
        want: usize,
    },
    /// The caller's cancel condition became true in the middle of a frame.
    Cancelled,
    Io(std::io::Error),
}

/// Reads one frame (blocking, or until the stream's read timeout with `Io(WouldBlock)`
/// / `Io(TimedOut)` before any byte of the frame arrived). Inside a frame it waits for
/// the rest however long it takes: a server uses [`read_frame_within`].
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    read_frame_within(r, None, &|| false)
}

/// [`read_frame`] with a bound: once the frame's first byte has arrived, the rest must
/// arrive within `deadline` ([`FrameError::Incomplete`] otherwise), and `cancel` is
/// asked at every read timeout inside the frame ([`FrameError::Cancelled`]). The stream
/// needs a read timeout for either to be looked at while no byte comes.
pub fn read_frame_within(
    r: &mut impl Read,
    deadline: Option<Duration>,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    let mut started: Option<Instant> = None;
    // Called after every read inside the frame (a timeout or a trickle of bytes).
    let check = |started: Option<Instant>, got: usize, want: usize| match (started, deadline) {
        _ if cancel() => Err(FrameError::Cancelled),
        (Some(t), Some(d)) if t.elapsed() > d => Err(FrameError::Incomplete { got, want }),
        _ => Ok(()),
    };
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => {
                got += n;
                started.get_or_insert_with(Instant::now);
                if got < 4 {
                    check(started, got, 4)?;
                }
            }
            Err(e) if got > 0 && is_timeout(&e) => check(started, got, 4)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLong(n));
    }
    // Grown as bytes arrive: a length prefix alone reserves no memory.
    let mut payload = Vec::with_capacity(n.min(1 << 16));
    let mut chunk = [0u8; 1 << 14];
    while payload.len() < n {
        let want = (n - payload.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(k) => {
                payload.extend_from_slice(&chunk[..k]);
                if payload.len() < n {
                    check(started, 4 + payload.len(), 4 + n)?;
                }
            }
            Err(e) if is_timeout(&e) => check(started, 4 + payload.len(), 4 + n)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(payload)
}

pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
