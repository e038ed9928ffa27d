//! Hot-load: the control socket of a running VM, and the fan-out of event output to its
//! clients.
//!
//! A unix stream socket; both directions carry frames: a 4-byte little-endian length,
//! then that many bytes.
//!
//! **Client frames.** Five kinds, told apart by the first byte (a command line never
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
//! 00 'k'          this client is an interactive console: a script's `pause()` stops the
//!                 guest while one is attached (the last one leaving continues it)
//! 00 'j'          send this client event output as JSON lines (`O` frames)
//! 00 'g'          a session request: the `r` reply lists what a front end compiles
//!                 against, one per line: `guest demo|program` (whose rules), then
//!                 `global NAME SLOT` and `symbol NAME ADDRESS-HEX`
//! ```
//!
//! [`encode_compiled`] and [`decode_client_frame`] write and read them. The VM validates
//! a code object (`hvscript_runtime::CodeObject::from_bytes`: magic, format version,
//! bounds) and refuses a malformed or wrong-version one with an `e` frame; the guest and
//! the connection go on.
//!
//! **Server frames** start with one tag byte: `r` a command's result, `e` an error, `o`
//! event output, `O` event output as a JSON line with its context (only to a client that
//! sent `00 'j'`). An error about a command is located: its text starts with a line
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

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hv_core::Prepared;

mod client_frames;
mod fanout;
mod frames;
mod session;

pub use client_frames::*;
pub use fanout::*;
pub use frames::*;
pub use session::*;

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
/// Event output as a JSON line ([`crate::output_json`]), for clients that asked for it.
pub const TAG_JSON: u8 = b'O';

/// Runs one command line with what was compiled for it against the VM; `Ok` is the text
/// of the result, `Err` the located error's `e` frame text ([`encode_error`]).
pub fn execute<S: ControlSession + ?Sized>(
    vm: &S,
    line: &str,
    prepared: &Prepared,
) -> Result<String, String> {
    vm.command(line, prepared).map_err(|e| encode_error(&e))
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
pub fn serve<S: ControlSession + ?Sized>(
    vm: &S,
    fanout: &Fanout,
    listener: UnixListener,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    serve_with(vm, fanout, listener, stop, ServeOptions::default())
}

/// [`serve`] with other bounds.
pub fn serve_with<S: ControlSession + ?Sized>(
    vm: &S,
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
fn serve_client<S: ControlSession + ?Sized>(
    vm: &S,
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
    let mut console = false;
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
                        Ok(ClientFrame::Console) if !console => {
                            console = true;
                            vm.debugger().console_attached();
                            Ok("console attached: pause() in a script stops the guest here"
                                .to_string())
                        }
                        Ok(ClientFrame::Console) => Ok("console attached".to_string()),
                        Ok(ClientFrame::Json) => {
                            client
                                .json
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            Ok("event output as JSON lines".to_string())
                        }
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
    if console {
        // The last console going away lets a paused guest continue.
        vm.debugger().console_detached();
    }
    Ok(())
}
