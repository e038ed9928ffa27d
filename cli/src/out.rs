//! Standard output and standard error for every command: writes that end the command
//! quietly when the reader goes away (`hvscript eval ... | head -1`) instead of panicking,
//! as `println!` does on a broken pipe.
//!
//! The process keeps SIGPIPE ignored (Rust's default) rather than restoring `SIG_DFL`: the
//! VMM writes to client sockets and must survive a dead peer. So a closed pipe reaches us
//! as a failed write. By default the process then exits at once with status [`EXIT_PIPE`]
//! (141 = 128 + SIGPIPE: what a shell reports for `cat` or `yes` killed by the signal, so
//! `set -o pipefail` treats hvscript like every other tool). `run` owns a VM that must be
//! stopped properly, so it calls [`record_when_gone`]: the write is dropped, [`gone`] turns
//! true, and `run` asks the guest to stop and exits 141 without printing more.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The exit status of a command whose standard output went away.
pub const EXIT_PIPE: u8 = 141;

static RECORD: AtomicBool = AtomicBool::new(false);
static GONE: AtomicBool = AtomicBool::new(false);

/// From now on a failed write is recorded ([`gone`]) instead of ending the process.
pub fn record_when_gone() {
    RECORD.store(true, Ordering::SeqCst);
}

/// Whether standard output has gone away.
pub fn gone() -> bool {
    GONE.load(Ordering::SeqCst)
}

/// Writes to standard output (see the module doc for what a failure does).
pub fn stdout(bytes: &[u8]) {
    if gone() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Any failure, not only EPIPE, means the output cannot be delivered: stop writing.
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        GONE.store(true, Ordering::SeqCst);
        if !RECORD.load(Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_PIPE));
        }
    }
}

/// Writes to standard error; a failure is ignored (there is nowhere left to report it).
pub fn stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// `print!` through [`stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(format!($($arg)*).as_bytes()) };
}

/// `println!` through [`stdout`].
macro_rules! outln {
    () => { $crate::out::stdout(b"\n") };
    ($($arg:tt)*) => { $crate::out::stdout(format!("{}\n", format_args!($($arg)*)).as_bytes()) };
}

/// `eprint!` through [`stderr`].
macro_rules! err {
    ($($arg:tt)*) => { $crate::out::stderr(format!($($arg)*).as_bytes()) };
}

/// `eprintln!` through [`stderr`].
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::stderr(format!("{}\n", format_args!($($arg)*)).as_bytes()) };
}

pub(crate) use {err, errln, out, outln};
