//! The control socket serves only the VMM's own user (issue 15): loading code into the
//! hypervisor is a privilege. The socket file is mode 0600, and a connection from another
//! uid is sent an `e` frame saying why and closed, none of its commands run, while the VM
//! goes on running its guest and serving its own user.
//!
//! The other user is uid 65534 (nobody): a copy of this test binary run as that user
//! (`Command::uid`, so only root can run the test; it is skipped otherwise) executes
//! [`peer_child`] and prints what it got.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hv_kvm::control::{bind, read_frame, serve, write_frame, Fanout, FrameError, TAG_RESULT};
use hv_kvm::*;

/// Set (to the socket's path) only in the peer process.
const PEER_ENV: &str = "HV_KVM_PEER_SOCKET";
const NOBODY: u32 = 65534;
/// What the peer tries to run: it must not arrive.
const PEER_COMMAND: &str = r#"!ioin 510 script { printf("peer\n"); }"#;

/// A fresh directory any user may enter (the other user must reach the socket and the
/// copy of this binary), removed when dropped.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(tag: &str) -> OpenDir {
        let dir = std::env::temp_dir().join(format!("hv-kvm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        OpenDir(dir)
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_socket_file_is_owner_only() {
    let dir = OpenDir::new("mode");
    let path = dir.0.join("vm.sock");
    let listener = bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600, "a fresh socket");
    // The file a VM that is gone left behind is replaced, owner-only again.
    drop(listener);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let _listener = bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600, "a socket bound over a stale file");
}

/// Not a test of its own: the peer of [`another_users_connection_is_refused`], run as
/// another user with [`PEER_ENV`] set. It connects, sends a command, and prints one line
/// `PEER: ...` saying what came back.
#[test]
fn peer_child() {
    let Ok(path) = std::env::var(PEER_ENV) else {
        return;
    };
    let result = match UnixStream::connect(&path) {
        Err(e) => format!("connect failed: {:?}", e.kind()),
        Ok(mut c) => {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // The server may have closed already: a failed write is not the result.
            let _ = write_frame(&mut c, PEER_COMMAND.as_bytes());
            match read_frame(&mut c) {
                Ok(f) => {
                    // A reset, not an end of stream, when the server closed with the
                    // command unread (Linux's AF_UNIX): closed either way.
                    let after = match read_frame(&mut c) {
                        Err(FrameError::Closed) => "then closed".to_string(),
                        Err(FrameError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => {
                            "then closed".to_string()
                        }
                        other => format!("then {other:?}"),
                    };
                    format!(
                        "frame {} {} | {after}",
                        f[0] as char,
                        String::from_utf8_lossy(&f[1..])
                    )
                }
                Err(e) => format!("no frame: {e:?}"),
            }
        }
    };
    println!("PEER: {result}");
}

/// Runs [`peer_child`] as uid/gid 65534 against `socket`; returns its `PEER:` line.
fn run_peer(exe: &Path, socket: &Path) -> String {
    let out = Command::new(exe)
        .args(["--exact", "peer_child", "--nocapture", "--test-threads=1"])
        .env(PEER_ENV, socket)
        .current_dir(exe.parent().unwrap())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // libtest may have printed the test's name on the same line.
        .find_map(|l| l.split_once("PEER: ").map(|(_, r)| r))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "the peer printed no result ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn another_users_connection_is_refused() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: running a peer as uid {NOBODY} (nobody) needs root");
        return;
    }
    if !kvm_or_skip() {
        return;
    }
    let dir = OpenDir::new("peer");
    // A copy uid 65534 can execute, wherever the build directory is.
    let exe = dir.0.join("peer");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.0.join("vm.sock");

    let sink = Arc::new(RecordingSink::default());
    let fanout = Arc::new(Fanout::new(sink.clone()));
    // Runs until asked to stop.
    let vm = Vm::new(config(2, 0), fanout.clone()).unwrap();
    let listener = bind(&path).unwrap();
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let guest = s.spawn(|| vm.run());
        let server = s.spawn(|| serve(&vm, &fanout, listener, &stop));
        // A failed check must not leave the scope waiting on a guest that runs until
        // asked to stop and a server that serves until told to.
        let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Mode 0600: the other user cannot even connect.
            let got = run_peer(&exe, &path);
            assert_eq!(got, "connect failed: PermissionDenied");

            // The file's mode is not what decides (a connection made in the moment between
            // bind and chmod, or a mode changed by hand): the peer check refuses it.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
            let got = run_peer(&exe, &path);
            println!("a peer of uid {NOBODY} got: {got}");
            assert!(
                got.starts_with("frame e refused: ")
                    && got.contains(&format!("from uid {NOBODY}"))
                    && got.ends_with("| then closed"),
                "{got}"
            );
            assert!(vm.engine().list().is_empty(), "the peer's command ran");
            assert_eq!(fanout.clients(), 0, "a refused peer stays attached");

            // The VM goes on serving its own user.
            let mut c = UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write_frame(&mut c, b"events").unwrap();
            let reply = read_frame(&mut c).unwrap();
            assert_eq!(reply[0], TAG_RESULT, "{}", String::from_utf8_lossy(&reply));
            drop(c);
        }));
        vm.request_stop();
        if checks.is_err() {
            vm.kill();
        }
        let report = guest.join().unwrap().unwrap();
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap().unwrap();
        if let Err(panic) = checks {
            std::panic::resume_unwind(panic);
        }
        report
    });
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0), "{v:?}");
        assert!(v.guest.iterations > 0, "{v:?}");
    }
    assert!(!sink.text().contains("peer"), "{}", sink.text());
}
