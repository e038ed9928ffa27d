//! Where an event's messages go: HyperDbg's output sources (`output create NAME file PATH`,
//! `tcp HOST:PORT`, `namedpipe PATH` — a Unix stream socket here —, `output open NAME`,
//! `output close NAME`), the `output {NAME}` and `imm no` event options, and the console
//! for everything else.
//!
//! [`OutputRouter`] is the VM's [`OutputSink`]. The vCPUs never call it: their exits
//! record output into per-vCPU rings (hv-core's deferred output) and the VM's output thread
//! formats it and hands each execution's text here, off the exit path. An event with
//! `output {A, B}` sends its messages to those sources *instead of* the console, as
//! HyperDbg does (`ForwardingCheckAndPerformEventForwarding`). A source is written by its
//! own thread through a bounded queue, so a slow file or peer does not hold up the console
//! either; a message that finds the queue full, or its source not open, is dropped and
//! counted per source (shown by `output` and in `run`'s summary). An event with `imm no`
//! (HyperDbg's buffered messages, which the rings already are: nothing leaves an exit
//! immediately) has its messages held here and delivered in order once
//! [`BUFFERED_THRESHOLD`] bytes are pending, when the event is cleared, and at the end of
//! the run ([`OutputRouter::flush_all`]). HyperDbg refuses `imm no` together with
//! `output`, and so does hv-core's parser.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hv_core::{OutputKind, OutputSink, Stage};

/// Pending bytes of an `imm no` event that trigger a delivery.
pub const BUFFERED_THRESHOLD: usize = 4096;
/// Messages a source's queue holds before new ones are dropped.
const SOURCE_QUEUE: usize = 1024;
/// How long opening a TCP or socket source may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

enum SourceState {
    Created,
    Open {
        queue: SyncSender<Vec<u8>>,
        writer: JoinHandle<()>,
    },
    Closed,
}

/// One output source.
pub struct Source {
    pub name: String,
    pub kind: OutputKind,
    pub address: String,
    state: Mutex<SourceState>,
    sent: Arc<AtomicU64>,
    dropped: AtomicU64,
    /// Write errors seen by the writer thread (the peer went away, disk full ...).
    failed: Arc<AtomicU64>,
}

impl Source {
    fn send(&self, text: &[u8]) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match &*state {
            SourceState::Open { queue, .. } => match queue.try_send(text.to_vec()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            _ => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn state_name(&self) -> &'static str {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            SourceState::Created => "created",
            SourceState::Open { .. } => "open",
            SourceState::Closed => "closed",
        }
    }
}

/// Counters of one source, for listings and summaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceReport {
    pub name: String,
    pub kind: &'static str,
    pub address: String,
    pub state: &'static str,
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

struct Route {
    sources: Vec<Arc<Source>>,
    immediate: bool,
    pending: Mutex<Vec<u8>>,
}

/// The VM's output sink: routes each event's messages (see the module documentation).
pub struct OutputRouter {
    console: Arc<dyn OutputSink>,
    sources: Mutex<BTreeMap<String, Arc<Source>>>,
    routes: RwLock<HashMap<u64, Arc<Route>>>,
}

impl OutputRouter {
    pub fn new(console: Arc<dyn OutputSink>) -> OutputRouter {
        OutputRouter {
            console,
            sources: Mutex::new(BTreeMap::new()),
            routes: RwLock::new(HashMap::new()),
        }
    }

    /// `output create NAME KIND ADDRESS`: checks the address; nothing is opened yet.
    pub fn create(&self, name: &str, kind: OutputKind, address: &str) -> Result<(), String> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.contains_key(name) {
            return Err(format!("output source `{name}` already exists"));
        }
        if kind == OutputKind::Tcp {
            let port_ok = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!("`{address}` is not HOST:PORT"));
            }
        }
        sources.insert(
            name.to_string(),
            Arc::new(Source {
                name: name.to_string(),
                kind,
                address: address.to_string(),
                state: Mutex::new(SourceState::Created),
                sent: Arc::new(AtomicU64::new(0)),
                dropped: AtomicU64::new(0),
                failed: Arc::new(AtomicU64::new(0)),
            }),
        );
        Ok(())
    }

    fn source(&self, name: &str) -> Result<Arc<Source>, String> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| {
                format!("no output source named `{name}` (create it with `output create`)")
            })
    }

    /// `output open NAME`: opens the file (truncating it) or connects, and starts the
    /// source's writer thread.
    pub fn open(&self, name: &str) -> Result<(), String> {
        let source = self.source(name)?;
        let mut state = source.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            SourceState::Open { .. } => return Err(format!("output source `{name}` is already open")),
            SourceState::Closed => {
                return Err(format!(
                    "output source `{name}` was closed; HyperDbg does not reopen a source: create a new one"
                ))
            }
            SourceState::Created => {}
        }
        let writer: Box<dyn Write + Send> = match source.kind {
            OutputKind::File => Box::new(
                std::fs::File::create(&source.address)
                    .map_err(|e| format!("{}: {e}", source.address))?,
            ),
            OutputKind::Tcp => {
                use std::net::ToSocketAddrs;
                let addr = source
                    .address
                    .to_socket_addrs()
                    .map_err(|e| format!("{}: {e}", source.address))?
                    .next()
                    .ok_or_else(|| format!("{}: no address", source.address))?;
                Box::new(
                    std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                        .map_err(|e| format!("{}: {e}", source.address))?,
                )
            }
            OutputKind::NamedPipe => Box::new(
                std::os::unix::net::UnixStream::connect(&source.address)
                    .map_err(|e| format!("{}: {e}", source.address))?,
            ),
        };
        let (queue, rx) = sync_channel::<Vec<u8>>(SOURCE_QUEUE);
        let (sent, failed) = (source.sent.clone(), source.failed.clone());
        let writer = std::thread::Builder::new()
            .name(format!("output {name}"))
            .spawn(move || {
                let mut w = writer;
                for message in rx {
                    if w.write_all(&message).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = w.flush();
            })
            .map_err(|e| format!("starting the writer of `{name}`: {e}"))?;
        *state = SourceState::Open { queue, writer };
        Ok(())
    }

    /// `output close NAME`: delivers what is queued, then closes.
    pub fn close(&self, name: &str) -> Result<(), String> {
        let source = self.source(name)?;
        let old = {
            let mut state = source.state.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *state, SourceState::Closed)
        };
        match old {
            SourceState::Open { queue, writer } => {
                drop(queue);
                let _ = writer.join();
                Ok(())
            }
            SourceState::Created => Ok(()),
            SourceState::Closed => Err(format!("output source `{name}` is already closed")),
        }
    }

    /// Every source's counters, by name.
    pub fn list(&self) -> Vec<SourceReport> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| SourceReport {
                name: s.name.clone(),
                kind: s.kind.name(),
                address: s.address.clone(),
                state: s.state_name(),
                sent: s.sent.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                failed: s.failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Checks an event's `output {...}` names before the event is added.
    pub fn check_names(&self, names: &[String]) -> Result<(), String> {
        for n in names {
            self.source(n)?;
        }
        Ok(())
    }

    /// Routes event `id` (called once it has its id; `names` were checked).
    pub fn route(&self, id: u64, names: &[String], immediate: bool) {
        if names.is_empty() && immediate {
            return;
        }
        let sources = names.iter().filter_map(|n| self.source(n).ok()).collect();
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Arc::new(Route {
                    sources,
                    immediate,
                    pending: Mutex::new(Vec::new()),
                }),
            );
    }

    /// Delivers what event `id` has buffered and forgets its route (the event was cleared).
    pub fn unroute(&self, id: u64) {
        let route = self
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(r) = route {
            self.deliver_pending(id, &r);
        }
    }

    /// Delivers every buffered message (end of the run).
    pub fn flush_all(&self) {
        let routes: Vec<(u64, Arc<Route>)> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        for (id, r) in routes {
            self.deliver_pending(id, &r);
        }
    }

    /// Closes every open source, delivering what is queued.
    pub fn close_all(&self) {
        let names: Vec<String> = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for n in names {
            let _ = self.close(&n);
        }
    }

    fn deliver_pending(&self, id: u64, route: &Route) {
        let text = std::mem::take(&mut *route.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !text.is_empty() {
            self.deliver(id, route, Stage::Pre, 0, &text);
        }
    }

    fn deliver(&self, id: u64, route: &Route, stage: Stage, core: u32, text: &[u8]) {
        if route.sources.is_empty() {
            self.console.output(id, stage, core, text);
        } else {
            for s in &route.sources {
                s.send(text);
            }
        }
    }
}

impl OutputSink for OutputRouter {
    fn output(&self, event_id: u64, stage: Stage, core: u32, text: &[u8]) {
        let route = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if routes.is_empty() {
                None
            } else {
                routes.get(&event_id).cloned()
            }
        };
        let Some(route) = route else {
            return self.console.output(event_id, stage, core, text);
        };
        if route.immediate {
            return self.deliver(event_id, &route, stage, core, text);
        }
        let ready = {
            let mut pending = route.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.extend_from_slice(text);
            (pending.len() >= BUFFERED_THRESHOLD).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = ready {
            self.deliver(event_id, &route, stage, core, &batch);
        }
    }

    fn triggered(&self, event_id: u64, stage: Stage, core: u32) {
        self.console.triggered(event_id, stage, core);
    }

    /// Output bound for the console keeps its context (JSON lines need it); output routed
    /// to sources goes as [`output`](OutputSink::output) does.
    fn output_at(&self, at: &hv_core::OutputContext, text: &[u8]) {
        let routed = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            !routes.is_empty() && routes.contains_key(&at.event_id)
        };
        if routed {
            self.output(at.event_id, at.stage, at.core, text);
        } else {
            self.console.output_at(at, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<u8>>);
    impl OutputSink for Collect {
        fn output(&self, _: u64, _: Stage, _: u32, text: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(text);
        }
    }

    #[test]
    fn a_file_source_gets_its_events_messages_instead_of_the_console() {
        let console = Arc::new(Collect::default());
        let r = OutputRouter::new(console.clone());
        let path = std::env::temp_dir().join(format!("hvscript-output-{}", std::process::id()));
        r.create("log", OutputKind::File, path.to_str().unwrap())
            .unwrap();
        assert!(r.create("log", OutputKind::File, "x").is_err());
        r.route(1, &["log".into()], true);
        r.output(1, Stage::Pre, 0, b"before open\n");
        r.open("log").unwrap();
        r.output(1, Stage::Pre, 0, b"one\n");
        r.output(2, Stage::Pre, 0, b"console\n");
        r.output(1, Stage::Post, 0, b"two\n");
        r.close("log").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(&*console.0.lock().unwrap(), b"console\n");
        let l = &r.list()[0];
        assert_eq!((l.sent, l.dropped, l.state), (2, 1, "closed"));
        assert!(r.open("log").unwrap_err().contains("create a new one"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn imm_no_buffers_in_order_until_the_threshold_or_the_end() {
        let console = Arc::new(Collect::default());
        let r = OutputRouter::new(console.clone());
        r.route(7, &[], false);
        r.output(7, Stage::Pre, 0, b"a");
        r.output(7, Stage::Pre, 0, b"b");
        assert!(console.0.lock().unwrap().is_empty());
        r.output(7, Stage::Pre, 0, &[b'c'; BUFFERED_THRESHOLD]);
        assert_eq!(console.0.lock().unwrap().len(), BUFFERED_THRESHOLD + 2);
        r.output(7, Stage::Pre, 0, b"z");
        r.flush_all();
        let out = console.0.lock().unwrap();
        assert!(out.starts_with(b"abc") && out.ends_with(b"cz"));
    }

    #[test]
    fn bad_addresses_and_unknown_names_are_refused() {
        let r = OutputRouter::new(Arc::new(Collect::default()));
        assert!(r.create("t", OutputKind::Tcp, "nohost").is_err());
        assert!(r
            .check_names(&["nope".into()])
            .unwrap_err()
            .contains("no output source"));
        r.create("p", OutputKind::NamedPipe, "/nonexistent/sock")
            .unwrap();
        assert!(r.open("p").unwrap_err().contains("/nonexistent/sock"));
    }
}
