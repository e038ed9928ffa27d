//! Hot-load: the control socket of a running VM.
//!
//! A unix stream socket; both directions carry frames: a 4-byte little-endian length,
//! then that many bytes. Client frames are HyperDbg command lines in UTF-8 (`!ioin 510
//! script {...}`, `events`, `events d 1`, ...). Server frames start with one tag byte:
//! `r` a command's result, `e` a command's error (rendered with location), `o` event
//! output. A malformed frame (not UTF-8, empty) is answered with an `e` frame and the
//! connection goes on; a frame longer than [`MAX_FRAME`] is answered with an `e` frame
//! and the connection is closed (its stream cannot be resynchronised). The VMM never
//! stops because of a client.
//!
//! Event output reaches every attached client through [`Fanout`], the VM's output sink.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv_core::{OutputSink, Stage};

use crate::vmm::Vm;

/// The longest frame accepted (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

pub const TAG_RESULT: u8 = b'r';
pub const TAG_ERROR: u8 = b'e';
pub const TAG_OUTPUT: u8 = b'o';

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "frame too long"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// A frame read, or why not.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection.
    Closed,
    /// Longer than [`MAX_FRAME`]: the stream is unusable after it.
    TooLong(usize),
    Io(std::io::Error),
}

/// Reads one frame (blocking, or until the stream's read timeout with `Io(WouldBlock)`
/// / `Io(TimedOut)` before any byte of the frame arrived).
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => got += n,
            Err(e) if got > 0 && is_timeout(&e) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLong(n));
    }
    let mut payload = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut payload[got..]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(k) => got += k,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(payload)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The VM's output sink: the console (or any sink) plus every attached client.
pub struct Fanout {
    pub local: Arc<dyn OutputSink>,
    clients: Mutex<Vec<Arc<Mutex<UnixStream>>>>,
}

impl Fanout {
    pub fn new(local: Arc<dyn OutputSink>) -> Fanout {
        Fanout {
            local,
            clients: Mutex::new(Vec::new()),
        }
    }

    fn attach(&self, stream: Arc<Mutex<UnixStream>>) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream);
    }
}

impl OutputSink for Fanout {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        self.local.output(event_id, stage, core, text);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(1 + text.len());
        frame.push(TAG_OUTPUT);
        frame.extend_from_slice(text);
        // A client that cannot take output any more is dropped, never waited for long.
        clients.retain(|c| {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            write_frame(&mut *c, &frame).is_ok()
        });
    }
}

/// Runs one command line against the VM; `Ok` is the text of the result, `Err` the
/// rendered error.
pub fn execute(vm: &Vm, line: &str) -> Result<String, String> {
    vm.command(line).map_err(|e| e.render("attach", line))
}

/// Serves the control socket at `path` until `stop` is set. Replaces a stale socket
/// file. Returns when the listener is closed.
pub fn serve(
    vm: &Vm,
    fanout: &Fanout,
    listener: UnixListener,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::scope(|s| {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    s.spawn(move || {
                        let _ = serve_client(vm, fanout, stream, stop);
                    });
                }
                Err(e) if is_timeout(&e) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// Binds the socket, removing a stale socket file first.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                ErrorKind::AddrInUse,
                format!("{} is in use by a running VM", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

fn serve_client(
    vm: &Vm,
    fanout: &Fanout,
    stream: UnixStream,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // One lock per client orders its output frames and replies: frames never interleave.
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    fanout.attach(writer.clone());
    let mut reader = stream;
    let reply = |w: &Arc<Mutex<UnixStream>>, tag: u8, text: &str| {
        let mut f = vec![tag];
        f.extend_from_slice(text.as_bytes());
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut *w, &f)
    };
    while !stop.load(Ordering::SeqCst) {
        match read_frame(&mut reader) {
            Ok(payload) => {
                let result = match std::str::from_utf8(&payload) {
                    Err(e) => Err(format!("malformed frame: not UTF-8 ({e})")),
                    Ok(line) if line.trim().is_empty() => {
                        Err("malformed frame: empty command".to_string())
                    }
                    Ok(line) => execute(vm, line),
                };
                match result {
                    Ok(text) => reply(&writer, TAG_RESULT, &text)?,
                    Err(text) => reply(&writer, TAG_ERROR, &text)?,
                }
            }
            Err(FrameError::Io(e)) if is_timeout(&e) => {}
            Err(FrameError::TooLong(n)) => {
                let _ = reply(
                    &writer,
                    TAG_ERROR,
                    &format!(
                        "malformed frame: {n} bytes is over the {MAX_FRAME}-byte limit; closing"
                    ),
                );
                return Ok(());
            }
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Io(e)) => return Err(e),
        }
    }
    Ok(())
}
