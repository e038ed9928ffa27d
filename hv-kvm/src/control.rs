//! Hot-load: the control socket of a running VM, and the fan-out of event output to its
//! clients.
//!
//! A unix stream socket; both directions carry frames: a 4-byte little-endian length,
//! then that many bytes.
//!
//! **Client frames.** Three kinds, told apart by the first byte (a command line never
//! starts with NUL, so text cannot be taken for the others):
//!
//! ```text
//! text            a HyperDbg command line in UTF-8 without a script (`events`, `events d 1`,
//!                 `!ioin 510`, `output ...`); a line with a script block is refused: the
//!                 VM does not compile
//! 00 'c' ...      a compiled command (the front end compiled it, `hvscript attach`):
//!                 u32 text length, the line (UTF-8), u32 code length, the code object's
//!                 bytes (length 0: none), u32 binding count, then per global binding
//!                 u32 name length, the name, u32 slot   (every u32 little-endian)
//! 00 'g'          a session request: the `r` reply lists what a front end compiles
//!                 against, one per line: `global NAME SLOT` and `symbol NAME ADDRESS-HEX`
//! ```
//!
//! [`encode_compiled`] and [`decode_client_frame`] write and read them. The VM validates
//! a code object (`hvscript_runtime::CodeObject::from_bytes`: magic, format version,
//! bounds) and refuses a malformed or wrong-version one with an `e` frame; the guest and
//! the connection go on.
//!
//! **Server frames** start with one tag byte: `r` a command's result, `e` an error, `o`
//! event output. An error about a command is located: its text starts with a line
//! `@START:END` (the byte range in the command line), then the message, then optionally
//! a line `help: ...` ([`encode_error`], [`decode_error`]), so the client renders it with a
//! caret under its own copy of the line. Errors about a frame itself (malformed, too long,
//! too slow) are plain text. A malformed frame (not UTF-8, empty, a bad encoding) is
//! answered with an `e` frame and the connection goes on; a frame longer than [`MAX_FRAME`] is answered with an `e` frame
//! and the connection is closed (its stream cannot be resynchronised).
//!
//! **Deadlines.** A frame that has started must be complete within [`FRAME_DEADLINE`]
//! ([`ServeOptions::frame_deadline`]); otherwise the connection gets an `e` frame and is
//! closed. When the VM is done (`stop`), [`serve`] returns within about
//! [`FLUSH_GRACE`] plus [`POLL`], whatever its clients are doing: mid-frame, not
//! reading, or gone. At most [`MAX_CLIENTS`] clients are served at once; another is sent
//! an `e` frame and closed.
//!
//! **Output never waits for a client.** [`Fanout`] is the VM's output sink: it gives
//! each event output to the local sink and puts one `o` frame in each client's bounded
//! queue ([`QUEUE_FRAMES`] frames, [`QUEUE_BYTES`] bytes), which the client's own writer
//! thread sends. A vCPU only takes a lock that no one holds across I/O. When a client's
//! queue is full its message is dropped and counted (per client, and in
//! [`Fanout::dropped`]); once there is room again, the client gets one `o` frame in the
//! place of what it lost:
//!
//! ```text
//! [N messages dropped: this client did not keep up]
//! ```
//!
//! A command's reply is never dropped: the client's reader waits for room (it is the
//! client's own thread, not a vCPU) and closes the connection if the client has not
//! read for [`FRAME_DEADLINE`]. Socket writes use `MSG_NOSIGNAL`: a client that went
//! away is an error on its connection, never a SIGPIPE, whatever the embedding program
//! does with that signal. The VMM never stops because of a client.
//!
//! **Only the VMM's own user.** Loading code into the hypervisor is a privilege: [`bind`]
//! makes the socket file owner-only (mode 0600; connecting needs write permission on
//! it), and every accepted connection whose peer (`SO_PEERCRED`) is another user gets an
//! `e` frame saying why and is closed, before any frame of it is read. Root is another
//! user too unless the VMM itself runs as root. Refused peers never attach to the output.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use hv_core::{CommandError, OutputSink, Prepared, Stage};

use crate::vmm::Vm;

/// The longest frame accepted (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// How long a frame may take from its first byte to its last (and how long a client may
/// leave its replies unread) before its connection is closed.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// A client's output queue: at most this many frames ...
pub const QUEUE_FRAMES: usize = 1024;
/// ... and this many bytes.
pub const QUEUE_BYTES: usize = 1 << 20;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// How often blocked socket calls wake up to look at the stop flag and deadlines.
pub const POLL: Duration = Duration::from_millis(50);
/// Once the VM is done, how long a client's writer may still send what it has queued.
pub const FLUSH_GRACE: Duration = Duration::from_millis(500);

pub const TAG_RESULT: u8 = b'r';
pub const TAG_ERROR: u8 = b'e';
pub const TAG_OUTPUT: u8 = b'o';

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode_frame(payload)?)
}

/// A frame's bytes: the length, then the payload.
fn encode_frame(payload: &[u8]) -> std::io::Result<Vec<u8>> {
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

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The text a client gets in place of `n` output messages it lost.
pub fn dropped_notice(n: u64) -> String {
    format!("[{n} messages dropped: this client did not keep up]\n")
}

/// One attached client's bounded output queue (frames already encoded).
struct Queue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Messages dropped since the last notice.
    lost: u64,
    /// No more frames will come: send what is queued (until `closing` + the grace).
    closing: Option<Instant>,
    /// The writer failed: the client is gone.
    dead: bool,
}

impl Queue {
    fn full(&self, extra: usize) -> bool {
        self.frames.len() >= QUEUE_FRAMES || self.bytes + extra > QUEUE_BYTES
    }

    fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Puts the notice of lost messages where they would have been.
    fn push_notice(&mut self) {
        if self.lost > 0 {
            let mut text = vec![TAG_OUTPUT];
            text.extend_from_slice(dropped_notice(self.lost).as_bytes());
            if let Ok(f) = encode_frame(&text) {
                self.push(f);
            }
            self.lost = 0;
        }
    }
}

struct Client {
    id: u64,
    queue: Mutex<Queue>,
    /// Signalled when a frame is queued or the client closes (its writer waits).
    ready: Condvar,
    /// Signalled when the writer took a frame (a reply waits for room).
    room: Condvar,
    dropped: AtomicU64,
}

impl Client {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues event output, or drops it when the queue is full; `true` if dropped.
    fn offer(&self, frame: &[u8]) -> bool {
        let mut q = self.lock();
        if q.dead || q.closing.is_some() {
            return false;
        }
        if q.full(frame.len()) {
            q.lost += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        q.push_notice();
        q.push(frame.to_vec());
        drop(q);
        self.ready.notify_one();
        false
    }

    /// Queues a reply, waiting (on this client's reader thread) for room while the
    /// client reads; `false` if it did not read for [`FRAME_DEADLINE`], is gone, or the
    /// VM is done.
    fn reply(&self, tag: u8, text: &str, stop: &AtomicBool) -> bool {
        let mut payload = vec![tag];
        payload.extend_from_slice(text.as_bytes());
        let Ok(frame) = encode_frame(&payload) else {
            return false;
        };
        let deadline = Instant::now() + FRAME_DEADLINE;
        let mut q = self.lock();
        while q.full(frame.len()) && !q.frames.is_empty() {
            if q.dead || stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                return false;
            }
            q = self
                .room
                .wait_timeout(q, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if q.dead {
            return false;
        }
        q.push_notice();
        q.push(frame);
        drop(q);
        self.ready.notify_one();
        true
    }

    /// No more frames: the writer sends what is queued, for at most [`FLUSH_GRACE`].
    fn close(&self) {
        self.lock().closing.get_or_insert_with(Instant::now);
        self.ready.notify_one();
    }

    /// The writer thread: sends queued frames until the client closes (and the queue
    /// is empty or the grace is over) or the peer is gone.
    fn write_loop(&self, stream: &UnixStream) {
        loop {
            let mut q = self.lock();
            let frame = loop {
                if q.dead || q.closing.is_some_and(|t| t.elapsed() > FLUSH_GRACE) {
                    return;
                }
                if q.frames.is_empty() {
                    // Caught up: tell the client what it lost meanwhile.
                    q.push_notice();
                }
                if let Some(f) = q.frames.pop_front() {
                    q.bytes -= f.len();
                    break f;
                }
                if q.closing.is_some() || q.dead {
                    return;
                }
                q = self
                    .ready
                    .wait_timeout(q, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            };
            drop(q);
            self.room.notify_all();
            if let Err(()) = self.send_all(stream, &frame) {
                let mut q = self.lock();
                q.dead = true;
                q.frames.clear();
                q.bytes = 0;
                drop(q);
                self.room.notify_all();
                return;
            }
        }
    }

    /// Sends one frame; gives up when the peer is gone or the client closed and the
    /// grace is over.
    fn send_all(&self, stream: &UnixStream, buf: &[u8]) -> Result<(), ()> {
        send_all(stream, buf, &|| {
            self.lock()
                .closing
                .is_some_and(|t| t.elapsed() > FLUSH_GRACE)
        })
    }
}

/// Sends `buf` whole; `Err` when the peer is gone or `give_up` says so at a write
/// timeout.
fn send_all(stream: &UnixStream, mut buf: &[u8], give_up: &dyn Fn() -> bool) -> Result<(), ()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live byte slice and the descriptor belongs to `stream`,
        // borrowed for the call; MSG_NOSIGNAL turns a gone peer into EPIPE instead of a
        // SIGPIPE to the whole VMM.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            buf = &buf[n as usize..];
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == ErrorKind::Interrupted {
            continue;
        }
        if !is_timeout(&e) || give_up() {
            return Err(());
        }
    }
    Ok(())
}

/// The VM's output sink: the console (or any sink) plus every attached client, each
/// through its bounded queue (module documentation).
pub struct Fanout {
    pub local: Arc<dyn OutputSink>,
    clients: RwLock<Vec<Arc<Client>>>,
    next_id: AtomicU64,
    /// Output messages dropped for clients that did not keep up, over all clients.
    dropped: AtomicU64,
}

impl Fanout {
    pub fn new(local: Arc<dyn OutputSink>) -> Fanout {
        Fanout {
            local,
            clients: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Output messages dropped so far because a client's queue was full (all clients,
    /// including those gone since).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Clients attached now.
    pub fn clients(&self) -> usize {
        self.clients.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn attach(&self) -> Option<Arc<Client>> {
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            return None;
        }
        let client = Arc::new(Client {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                lost: 0,
                closing: None,
                dead: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        clients.push(client.clone());
        Some(client)
    }

    fn detach(&self, id: u64) {
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.id != id);
    }
}

impl OutputSink for Fanout {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        self.local.output(event_id, stage, core, text);
        let clients = self.clients.read().unwrap_or_else(|e| e.into_inner());
        if clients.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(1 + text.len());
        payload.push(TAG_OUTPUT);
        payload.extend_from_slice(text);
        let Ok(frame) = encode_frame(&payload) else {
            return;
        };
        for c in clients.iter() {
            if c.offer(&frame) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs one command line with what was compiled for it against the VM; `Ok` is the text
/// of the result, `Err` the located error's `e` frame text ([`encode_error`]).
pub fn execute(vm: &Vm, line: &str, prepared: &Prepared) -> Result<String, String> {
    vm.command(line, prepared).map_err(|e| encode_error(&e))
}

/// The first byte of a client frame that is not a command line.
pub const FRAME_BINARY: u8 = 0;
/// `00 'c'`: a compiled command.
pub const KIND_COMPILED: u8 = b'c';
/// `00 'g'`: the session request.
pub const KIND_SESSION: u8 = b'g';

/// A decoded client frame.
#[derive(Debug)]
pub enum ClientFrame {
    /// A command line and what came compiled with it (nothing, for a text frame).
    Command(String, Prepared),
    /// What a front end compiles against, please.
    Session,
}

/// The `00 'c'` frame payload for `line` with its code object and global bindings.
pub fn encode_compiled(line: &str, code: Option<&[u8]>, globals: &[(String, u32)]) -> Vec<u8> {
    let mut out = vec![FRAME_BINARY, KIND_COMPILED];
    let chunk = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    chunk(&mut out, line.as_bytes());
    chunk(&mut out, code.unwrap_or_default());
    out.extend_from_slice(&(globals.len() as u32).to_le_bytes());
    for (name, slot) in globals {
        chunk(&mut out, name.as_bytes());
        out.extend_from_slice(&slot.to_le_bytes());
    }
    out
}

/// The `00 'g'` frame payload.
pub fn encode_session_request() -> Vec<u8> {
    vec![FRAME_BINARY, KIND_SESSION]
}

/// Reads a client frame; `Err` says why it is malformed.
pub fn decode_client_frame(payload: &[u8]) -> Result<ClientFrame, String> {
    match payload {
        [FRAME_BINARY, KIND_SESSION] => Ok(ClientFrame::Session),
        [FRAME_BINARY, KIND_COMPILED, rest @ ..] => decode_compiled(rest),
        [FRAME_BINARY, kind, ..] => Err(format!(
            "malformed frame: unknown binary frame kind {kind:#04x}"
        )),
        [FRAME_BINARY] => Err("malformed frame: a lone NUL byte".into()),
        _ => match std::str::from_utf8(payload) {
            Err(e) => Err(format!("malformed frame: not UTF-8 ({e})")),
            Ok(line) if line.trim().is_empty() => Err("malformed frame: empty command".into()),
            Ok(line) => Ok(ClientFrame::Command(line.to_string(), Prepared::default())),
        },
    }
}

fn decode_compiled(mut rest: &[u8]) -> Result<ClientFrame, String> {
    fn u32_at(rest: &mut &[u8], what: &str) -> Result<u32, String> {
        let Some((head, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("malformed compiled frame: it ends inside {what}"));
        };
        *rest = tail;
        Ok(u32::from_le_bytes(*head))
    }
    fn chunk<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
        let len = u32_at(rest, what)? as usize;
        if rest.len() < len {
            return Err(format!(
                "malformed compiled frame: {what} says {len} bytes, {} remain",
                rest.len()
            ));
        }
        let (head, tail) = rest.split_at(len);
        *rest = tail;
        Ok(head)
    }
    let line = std::str::from_utf8(chunk(&mut rest, "the command's text")?)
        .map_err(|e| format!("malformed compiled frame: the command is not UTF-8 ({e})"))?;
    if line.trim().is_empty() {
        return Err("malformed compiled frame: empty command".into());
    }
    let code = chunk(&mut rest, "the code object")?;
    let count = u32_at(&mut rest, "the binding count")?;
    let mut globals = Vec::new();
    for _ in 0..count {
        let name = std::str::from_utf8(chunk(&mut rest, "a global's name")?)
            .map_err(|e| format!("malformed compiled frame: a global's name is not UTF-8 ({e})"))?;
        let slot = u32_at(&mut rest, "a global's slot")?;
        globals.push((name.to_string(), slot));
    }
    if !rest.is_empty() {
        return Err(format!(
            "malformed compiled frame: {} bytes after its last field",
            rest.len()
        ));
    }
    let prepared = Prepared {
        code: (!code.is_empty()).then(|| code.to_vec()),
        script: None,
        globals,
    };
    Ok(ClientFrame::Command(line.to_string(), prepared))
}

/// The reply to a session request (see the module documentation).
pub fn session_text(vm: &Vm) -> String {
    let mut out = String::new();
    for (name, slot) in vm.global_names() {
        out.push_str(&format!("global {name} {slot}\n"));
    }
    for (name, addr) in vm.symbols().0 {
        out.push_str(&format!("symbol {name} {addr:x}\n"));
    }
    out
}

/// Reads a session reply: the global bindings and the symbols.
pub fn parse_session(text: &str) -> (Vec<(String, u32)>, hv_core::SymbolMap) {
    let mut globals = Vec::new();
    let mut symbols = hv_core::SymbolMap::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("global"), Some(name), Some(slot)) => {
                if let Ok(slot) = slot.parse() {
                    globals.push((name.to_string(), slot));
                }
            }
            (Some("symbol"), Some(name), Some(addr)) => {
                if let Ok(addr) = u64::from_str_radix(addr, 16) {
                    symbols.0.insert(name.to_string(), addr);
                }
            }
            _ => {}
        }
    }
    (globals, symbols)
}

/// A located command error as `e` frame text: `@START:END`, the message, `help: ...`.
pub fn encode_error(e: &CommandError) -> String {
    let mut out = format!("@{}:{}\n{}", e.start, e.end, e.message);
    if let Some(help) = &e.help {
        out.push_str("\nhelp: ");
        out.push_str(help);
    }
    out
}

/// Reads `e` frame text back: `Some` for a located command error, `None` for a plain
/// frame-level error.
pub fn decode_error(text: &str) -> Option<CommandError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (start, end) = first.strip_prefix('@')?.split_once(':')?;
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    let (message, help) = match rest.split_once("\nhelp: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (rest.to_string(), None),
    };
    Some(CommandError {
        message,
        start,
        end,
        help,
    })
}

/// How [`serve_with`] bounds its clients.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A started frame must be complete within this long ([`FRAME_DEADLINE`]).
    pub frame_deadline: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            frame_deadline: FRAME_DEADLINE,
        }
    }
}

/// Serves the control socket until `stop` is set, then returns promptly (module
/// documentation) whatever the clients do.
pub fn serve(
    vm: &Vm,
    fanout: &Fanout,
    listener: UnixListener,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    serve_with(vm, fanout, listener, stop, ServeOptions::default())
}

/// [`serve`] with other bounds.
pub fn serve_with(
    vm: &Vm,
    fanout: &Fanout,
    listener: UnixListener,
    stop: &AtomicBool,
    options: ServeOptions,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::scope(|s| {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    s.spawn(move || {
                        let _ = serve_client(vm, fanout, stream, stop, options);
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

/// Binds the socket, owner-only (mode 0600), removing a stale socket file first.
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
    let listener = UnixListener::bind(path)?;
    // chmod after bind rather than a umask around it: the umask is per process, and other
    // threads of this one create files meanwhile (output sources, the embedding
    // program's own) that would get its mode; fchmod on the descriptor does not reach
    // the file (on Linux it changes the socket's own inode). The race: std's bind also
    // listens, so until this chmod the file has the umask's mode, and a user it lets in
    // may connect and wait in the backlog (the mode is checked at connect only). Nothing
    // is accepted before this returns, and `serve_client` refuses every peer of another
    // uid (`peer_refusal`), so such a connection gets nothing: the mode keeps others from
    // connecting, the peer check is what decides.
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Why the peer of `stream` may not use the control socket, if it may not: it must be
/// the user the VMM runs as (its effective uid; a root peer is refused unless the VMM is
/// root too). The credentials are the peer's at `connect`, as the kernel recorded them.
fn peer_refusal(stream: &UnixStream) -> Option<String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals and `len` is `cred`'s size, so the kernel
    // writes inside `cred`; the descriptor belongs to `stream`, borrowed for the call.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 || len as usize != std::mem::size_of::<libc::ucred>() {
        return Some(format!(
            "refused: the peer's credentials cannot be read (SO_PEERCRED: {}); closing",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    (cred.uid != ours).then(|| {
        format!(
            "refused: this VM's control socket serves only uid {ours}, and this connection \
             comes from uid {} (pid {}): loading code into the hypervisor is a privilege; \
             closing",
            cred.uid, cred.pid
        )
    })
}

/// Sends a client one `e` frame before its connection is closed, waiting one write
/// timeout at most: the caller must not wait on the client.
fn refuse(stream: &UnixStream, text: &str) {
    let mut f = vec![TAG_ERROR];
    f.extend_from_slice(text.as_bytes());
    if let Ok(frame) = encode_frame(&f) {
        let _ = send_all(stream, &frame, &|| true);
    }
}

/// One client: this thread reads and executes its commands; a scoped writer thread
/// sends its queue (replies and event output, in order).
fn serve_client(
    vm: &Vm,
    fanout: &Fanout,
    stream: UnixStream,
    stop: &AtomicBool,
    options: ServeOptions,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))?;
    if let Some(why) = peer_refusal(&stream) {
        refuse(&stream, &why);
        return Ok(());
    }
    let Some(client) = fanout.attach() else {
        refuse(
            &stream,
            &format!("the VM serves at most {MAX_CLIENTS} clients at once; closing"),
        );
        return Ok(());
    };
    let client = &client;
    std::thread::scope(|s| {
        s.spawn(|| client.write_loop(&stream));
        let mut reader = &stream;
        let stopped = || stop.load(Ordering::SeqCst);
        while !stopped() {
            let ok = match read_frame_within(&mut reader, Some(options.frame_deadline), &stopped) {
                Ok(payload) => {
                    let result = match decode_client_frame(&payload) {
                        Err(why) => Err(why),
                        Ok(ClientFrame::Session) => Ok(session_text(vm)),
                        Ok(ClientFrame::Command(line, prepared)) => execute(vm, &line, &prepared),
                    };
                    match result {
                        Ok(text) => client.reply(TAG_RESULT, &text, stop),
                        Err(text) => client.reply(TAG_ERROR, &text, stop),
                    }
                }
                Err(FrameError::Io(e)) if is_timeout(&e) => true,
                Err(FrameError::TooLong(n)) => {
                    client.reply(
                        TAG_ERROR,
                        &format!(
                            "malformed frame: {n} bytes is over the {MAX_FRAME}-byte limit; closing"
                        ),
                        stop,
                    );
                    false
                }
                Err(FrameError::Incomplete { got, want }) => {
                    client.reply(
                        TAG_ERROR,
                        &format!(
                            "malformed frame: {got} of its {want} bytes came within {:?}; closing",
                            options.frame_deadline
                        ),
                        stop,
                    );
                    false
                }
                Err(FrameError::Cancelled | FrameError::Closed | FrameError::Io(_)) => false,
            };
            if !ok {
                break;
            }
        }
        fanout.detach(client.id);
        client.close();
    });
    Ok(())
}
