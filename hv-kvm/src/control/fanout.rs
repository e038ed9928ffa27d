//! [`Fanout`], the VM's output sink: the console plus every attached client, each with a
//! bounded queue emptied by its own writer thread, so a vCPU never waits on a client.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use hv_core::{OutputContext, OutputSink, Stage};

use super::frames::{encode_frame, is_timeout};
use super::{
    FLUSH_GRACE, FRAME_DEADLINE, MAX_CLIENTS, POLL, QUEUE_BYTES, QUEUE_FRAMES, TAG_JSON, TAG_OUTPUT,
};

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

pub(super) struct Client {
    pub(super) id: u64,
    queue: Mutex<Queue>,
    /// Signalled when a frame is queued or the client closes (its writer waits).
    ready: Condvar,
    /// Signalled when the writer took a frame (a reply waits for room).
    room: Condvar,
    dropped: AtomicU64,
    /// The client asked for event output as JSON lines (`O` frames).
    pub(super) json: AtomicBool,
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
    pub(super) fn reply(&self, tag: u8, text: &str, stop: &AtomicBool) -> bool {
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
    pub(super) fn close(&self) {
        self.lock().closing.get_or_insert_with(Instant::now);
        self.ready.notify_one();
    }

    /// The writer thread: sends queued frames until the client closes (and the queue
    /// is empty or the grace is over) or the peer is gone.
    pub(super) fn write_loop(&self, stream: &UnixStream) {
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
pub(super) fn send_all(
    stream: &UnixStream,
    mut buf: &[u8],
    give_up: &dyn Fn() -> bool,
) -> Result<(), ()> {
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

    pub(super) fn attach(&self) -> Option<Arc<Client>> {
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
            json: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        clients.push(client.clone());
        Some(client)
    }

    pub(super) fn detach(&self, id: u64) {
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.id != id);
    }
}

impl Fanout {
    /// One `o` frame (the text) to each client, or an `O` frame (a JSON line with the
    /// context, [`crate::output_json`]) to those that asked for JSON.
    fn broadcast(&self, at: Option<&OutputContext>, text: &[u8]) {
        let clients = self.clients.read().unwrap_or_else(|e| e.into_inner());
        if clients.is_empty() {
            return;
        }
        let frame = |tag: u8, body: &[u8]| {
            let mut payload = Vec::with_capacity(1 + body.len());
            payload.push(tag);
            payload.extend_from_slice(body);
            encode_frame(&payload).ok()
        };
        let plain = frame(TAG_OUTPUT, text);
        let json = at.and_then(|at| {
            clients
                .iter()
                .any(|c| c.json.load(Ordering::Relaxed))
                .then(|| {
                    frame(
                        TAG_JSON,
                        crate::output_json::event_line(at, text).as_bytes(),
                    )
                })
                .flatten()
        });
        for c in clients.iter() {
            let f = match (&json, c.json.load(Ordering::Relaxed)) {
                (Some(j), true) => j,
                _ => match &plain {
                    Some(p) => p,
                    None => continue,
                },
            };
            if c.offer(f) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl OutputSink for Fanout {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        self.local.output(event_id, stage, core, text);
        self.broadcast(None, text);
    }

    fn output_at(&self, at: &OutputContext, text: &[u8]) {
        self.local.output_at(at, text);
        self.broadcast(Some(at), text);
    }
}
