//! The Linux system calls a program guest can make, served by the VMM. Nothing else of the
//! host is reachable: the table below is the whole interface, and every pointer the
//! program passes is checked against its own mapped pages (`EFAULT` otherwise).
//!
//! | nr | name | what it does here | refuses |
//! |---:|---|---|---|
//! | 0, 19 | read, readv | standard input, or an allowed file at its offset | `EBADF` for stdout/stderr |
//! | 1, 20 | write, writev | standard output and error are the user's | `EBADF` for read-only files |
//! | 257 | openat | `AT_FDCWD` only; the program itself and `--allow-read` paths, read-only | `ENOENT` / `EACCES` as Linux would |
//! | 3, 8 | close, lseek | | `ESPIPE` on the standard streams |
//! | 5, 262 | fstat, newfstatat | Linux's `struct stat` | `EACCES` for paths not allowed |
//! | 12 | brk | the heap after the executable's image | the old break when it cannot grow |
//! | 9, 11, 10, 25 | mmap, munmap, mprotect, mremap | anonymous private memory, top-down | `ENODEV` for file mappings |
//! | 158 | arch_prctl | `ARCH_SET_FS`/`ARCH_GET_FS` (the thread pointer) | `EINVAL` otherwise |
//! | 218, 273 | set_tid_address, set_robust_list | remembered; one thread | |
//! | 334 | rseq | | `ENOSYS` (glibc then runs without it) |
//! | 302 | prlimit64 | this process: stack 8 MiB, files 1024, the rest unlimited | `EPERM` for another pid |
//! | 318 | getrandom | the host's random bytes | |
//! | 89, 267 | readlink, readlinkat | `/proc/self/exe` is the program's path | `ENOENT` otherwise |
//! | 63 | uname | `Linux`, `x86_64` | |
//! | 39, 186, 110 | getpid, gettid, getppid | the pid scripts see as `$pid` | |
//! | 102, 107, 104, 108 | getuid, geteuid, getgid, getegid | the user running hvscript | |
//! | 228, 96 | clock_gettime, gettimeofday | the host's clocks | |
//! | 35, 230 | nanosleep, clock_nanosleep | sleeps the vCPU (realtime, monotonic or boottime clock; relative or absolute) | `EINVAL` for other clocks |
//! | 13, 14, 131 | rt_sigaction, rt_sigprocmask, sigaltstack | remembered, never delivered (one thread, no signals but faults) | `EINVAL` for SIGKILL/SIGSTOP |
//! | 16 | ioctl | `TCGETS`, `TIOCGWINSZ` on the standard streams, from the host's | `ENOTTY` otherwise |
//! | 60, 231 | exit, exit_group | ends the program with its status | |
//! | 202 | futex | `WAKE` (0 woken); `WAIT` on a changed word (`EAGAIN`) | `EDEADLK` for a wait nothing could end |
//! | 204, 24 | sched_getaffinity, sched_yield | one CPU | |
//! | 7 | poll | the standard streams are always ready (reads block until input) | `POLLNVAL` for closed descriptors |
//! | 62, 234 | kill, tgkill | a signal to itself ends the program as Linux's default action would | `EPERM` for another process |
//! | 79 | getcwd | the host's current directory | |
//! | 56, 57, 58, 59, 435 | clone, fork, vfork, execve, clone3 | | `ENOSYS`, counted |
//! | 41, 42, 43, 49, 50 | socket, connect, accept, bind, listen | | `EACCES`, counted |
//! | any other | | | `ENOSYS`, one warning per number |

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::Files;
use super::memory_map::{AddressSpace, MemoryMap, Prot, EFAULT, EINVAL};

/// What the VMM does after a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the program with RAX = this (negative errno as two's complement).
    Return(u64),
    /// Set the FS base (`arch_prctl(ARCH_SET_FS)`), then return 0.
    SetFsBase(u64),
    /// The program ended (`exit`, `exit_group`) with this status.
    Exit(i32),
    /// The program sent itself this signal (`kill`, `tgkill`: `abort` does): it ends as
    /// Linux's default action for it would end it.
    Signal(i32),
}

/// Guest memory as the program sees it (virtual addresses), plus its page management.
pub trait Guest: AddressSpace {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
    fn write(&mut self, addr: u64, data: &[u8]) -> bool;
}

/// A running program's state that system calls read and change.
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: PathBuf,
    pub memory: MemoryMap,
    pub files: Files,
    pub fs_base: u64,
    pub tid_address: u64,
    signal_actions: Vec<[u8; 32]>,
    signal_mask: u64,
    alt_stack: [u8; 24],
    warned: BTreeSet<u64>,
    /// Notes for the user (a refused operation, an unknown system call), drained by the VMM.
    pub notes: Vec<String>,
    /// Refused process-creation and socket calls.
    pub refused: u64,
}

fn err(errno: i64) -> Outcome {
    Outcome::Return((-errno) as u64)
}

fn ok(v: u64) -> Outcome {
    Outcome::Return(v)
}

const ENOSYS: i64 = 38;
const EPERM: i64 = 1;
const EAGAIN: i64 = 11;
const EDEADLK: i64 = 35;
const ENODEV: i64 = 19;
const EACCES: i64 = 13;
const ENOENT: i64 = 2;
const ERANGE: i64 = 34;
/// Readable pages.
const R: Prot = Prot {
    read: true,
    write: false,
    execute: false,
};

impl Process {
    pub fn new(pid: u32, exe: PathBuf, memory: MemoryMap, files: Files) -> Process {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        // `/proc/self/exe` is absolute on Linux (glibc's start-up asserts it).
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        Process {
            pid,
            uid,
            gid,
            exe,
            memory,
            files,
            fs_base: 0,
            tid_address: 0,
            signal_actions: vec![[0u8; 32]; 65],
            signal_mask: 0,
            alt_stack: [0u8; 24],
            warned: BTreeSet::new(),
            notes: Vec::new(),
            refused: 0,
        }
    }

    fn read_mem(&self, g: &dyn Guest, addr: u64, len: usize) -> Result<Vec<u8>, i64> {
        if len > 0 && !self.memory.allows(addr, len as u64, R) {
            return Err(EFAULT);
        }
        let mut buf = vec![0u8; len];
        if !g.read(addr, &mut buf) {
            return Err(EFAULT);
        }
        Ok(buf)
    }

    fn write_mem(&self, g: &mut dyn Guest, addr: u64, data: &[u8]) -> Result<(), i64> {
        if !data.is_empty() && !self.memory.allows(addr, data.len() as u64, Prot::RW) {
            return Err(EFAULT);
        }
        g.write(addr, data).then_some(()).ok_or(EFAULT)
    }

    /// A NUL-terminated string of at most 4 KiB (Linux's PATH_MAX).
    fn read_cstr(&self, g: &dyn Guest, addr: u64) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        for i in 0..4096u64 {
            let b = self.read_mem(g, addr.checked_add(i).ok_or(EFAULT)?, 1)?[0];
            if b == 0 {
                return Ok(out);
            }
            out.push(b);
        }
        Err(36) // ENAMETOOLONG
    }

    /// `(base, len)` pairs of an iovec array.
    fn iovecs(&self, g: &dyn Guest, addr: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
        if count > 1024 {
            return Err(EINVAL);
        }
        let raw = self.read_mem(g, addr, count as usize * 16)?;
        Ok(raw
            .chunks(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect())
    }

    /// Serves system call `nr` with arguments `a` (RDI, RSI, RDX, R10, R8, R9).
    pub fn syscall(&mut self, g: &mut dyn Guest, nr: u64, a: [u64; 6]) -> Outcome {
        match self.dispatch(g, nr, a) {
            Ok(o) => o,
            Err(errno) => err(errno),
        }
    }

    fn dispatch(&mut self, g: &mut dyn Guest, nr: u64, a: [u64; 6]) -> Result<Outcome, i64> {
        Ok(match nr {
            0 => {
                let data = self.files.read(a[0], a[2].min(1 << 20) as usize)?;
                self.write_mem(g, a[1], &data)?;
                ok(data.len() as u64)
            }
            1 => {
                let data = self.read_mem(g, a[1], a[2].min(1 << 24) as usize)?;
                ok(self.files.write(a[0], &data)?)
            }
            19 => {
                let mut total = 0u64;
                for (base, len) in self.iovecs(g, a[1], a[2])? {
                    let data = self.files.read(a[0], len.min(1 << 20) as usize)?;
                    self.write_mem(g, base, &data)?;
                    total += data.len() as u64;
                    if (data.len() as u64) < len {
                        break;
                    }
                }
                ok(total)
            }
            20 => {
                let mut all = Vec::new();
                for (base, len) in self.iovecs(g, a[1], a[2])? {
                    all.extend(self.read_mem(g, base, len.min(1 << 24) as usize)?);
                }
                ok(self.files.write(a[0], &all)?)
            }
            257 => {
                if a[0] as i32 != -100 {
                    // `dirfd` is a C int: only AT_FDCWD, as no directory descriptors exist.
                    return Err(EACCES);
                }
                let path = self.read_cstr(g, a[1])?;
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(&path));
                ok(self.files.open(&path, a[2])?)
            }
            3 => self.files.close(a[0]).map(|()| ok(0))?,
            8 => ok(self.files.seek(a[0], a[1] as i64, a[2])?),
            5 => {
                let st = self.files.stat(a[0])?;
                self.write_mem(g, a[1], &st)?;
                ok(0)
            }
            262 => {
                const AT_EMPTY_PATH: u64 = 0x1000;
                let path = self.read_cstr(g, a[1])?;
                let st = if path.is_empty() && a[3] & AT_EMPTY_PATH != 0 {
                    self.files.stat(a[0])?
                } else {
                    let p = PathBuf::from(std::ffi::OsStr::from_bytes(&path));
                    self.files.stat_path(&p)?
                };
                self.write_mem(g, a[2], &st)?;
                ok(0)
            }
            12 => ok(self.memory.set_brk(g, a[0])),
            9 => {
                const MAP_FIXED: u64 = 0x10;
                const MAP_ANONYMOUS: u64 = 0x20;
                if a[3] & MAP_ANONYMOUS == 0 {
                    self.note(
                        9,
                        "mmap of a file is refused (ENODEV): only anonymous memory",
                    );
                    return Err(ENODEV);
                }
                let prot = Prot::from_linux(a[2]).ok_or(EINVAL)?;
                ok(self
                    .memory
                    .map(g, a[0], a[1], prot, a[3] & MAP_FIXED != 0)?)
            }
            11 => self.memory.unmap(g, a[0], a[1]).map(|()| ok(0))?,
            10 => {
                let prot = Prot::from_linux(a[2]).ok_or(EINVAL)?;
                self.memory.protect(g, a[0], a[1], prot).map(|()| ok(0))?
            }
            25 => {
                const MREMAP_MAYMOVE: u64 = 1;
                if a[3] & !MREMAP_MAYMOVE != 0 {
                    return Err(EINVAL);
                }
                ok(self
                    .memory
                    .remap(g, a[0], a[1], a[2], a[3] & MREMAP_MAYMOVE != 0)?)
            }
            158 => match a[0] {
                0x1002 => {
                    self.fs_base = a[1];
                    Outcome::SetFsBase(a[1])
                }
                0x1003 => {
                    self.write_mem(g, a[1], &self.fs_base.to_le_bytes())?;
                    ok(0)
                }
                _ => return Err(EINVAL),
            },
            218 => {
                self.tid_address = a[0];
                ok(u64::from(self.pid))
            }
            273 => ok(0),
            334 => return Err(ENOSYS),
            302 => {
                if a[0] != 0 && a[0] != u64::from(self.pid) {
                    return Err(EPERM);
                }
                if a[3] != 0 {
                    let (cur, max) = match a[1] {
                        3 => (8 << 20, u64::MAX), // RLIMIT_STACK
                        7 => (1024, 1024 * 1024), // RLIMIT_NOFILE
                        _ => (u64::MAX, u64::MAX),
                    };
                    let mut v = cur.to_le_bytes().to_vec();
                    v.extend(max.to_le_bytes());
                    self.write_mem(g, a[3], &v)?;
                }
                ok(0)
            }
            318 => {
                let len = a[1].min(1 << 20) as usize;
                let mut buf = vec![0u8; len];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
                    .map_err(|_| EAGAIN)?;
                self.write_mem(g, a[0], &buf)?;
                ok(len as u64)
            }
            89 | 267 => {
                let (path_at, buf, len) = if nr == 89 {
                    (a[0], a[1], a[2])
                } else {
                    (a[1], a[2], a[3])
                };
                let path = self.read_cstr(g, path_at)?;
                if path != b"/proc/self/exe" {
                    return Err(ENOENT);
                }
                let exe = self.exe.as_os_str().as_encoded_bytes().to_vec();
                let n = exe.len().min(len as usize);
                self.write_mem(g, buf, &exe[..n])?;
                ok(n as u64)
            }
            63 => {
                let mut u = vec![0u8; 65 * 6];
                let fields: [&[u8]; 6] = [
                    b"Linux",
                    b"hvscript",
                    b"6.1.0-hvscript",
                    b"#1 SMP hv-kvm",
                    b"x86_64",
                    b"(none)",
                ];
                for (i, f) in fields.iter().enumerate() {
                    u[i * 65..i * 65 + f.len()].copy_from_slice(f);
                }
                self.write_mem(g, a[0], &u)?;
                ok(0)
            }
            39 | 186 => ok(u64::from(self.pid)),
            110 => ok(1),
            102 | 107 => ok(u64::from(self.uid)),
            104 | 108 => ok(u64::from(self.gid)),
            228 => {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `ts` is a valid timespec; an invalid clock id is reported by errno.
                if unsafe { libc::clock_gettime(a[0] as libc::clockid_t, &mut ts) } != 0 {
                    return Err(EINVAL);
                }
                let mut v = (ts.tv_sec as u64).to_le_bytes().to_vec();
                v.extend((ts.tv_nsec as u64).to_le_bytes());
                self.write_mem(g, a[1], &v)?;
                ok(0)
            }
            96 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                if a[0] != 0 {
                    let mut v = now.as_secs().to_le_bytes().to_vec();
                    v.extend(u64::from(now.subsec_micros()).to_le_bytes());
                    self.write_mem(g, a[0], &v)?;
                }
                ok(0)
            }
            35 => {
                let t = self.read_mem(g, a[0], 16)?;
                let secs = u64::from_le_bytes(t[..8].try_into().unwrap());
                let nanos = u64::from_le_bytes(t[8..].try_into().unwrap());
                if nanos >= 1_000_000_000 || secs as i64 <= -1 {
                    return Err(EINVAL);
                }
                std::thread::sleep(std::time::Duration::new(secs, nanos as u32));
                ok(0)
            }
            230 => {
                // clock_nanosleep on CLOCK_REALTIME, CLOCK_MONOTONIC or CLOCK_BOOTTIME,
                // relative or TIMER_ABSTIME, slept by the host on the same clock.
                const TIMER_ABSTIME: u64 = 1;
                if ![0, 1, 7].contains(&a[0]) || a[1] & !TIMER_ABSTIME != 0 {
                    return Err(EINVAL);
                }
                let t = self.read_mem(g, a[2], 16)?;
                let secs = i64::from_le_bytes(t[..8].try_into().unwrap());
                let nanos = i64::from_le_bytes(t[8..].try_into().unwrap());
                if !(0..1_000_000_000).contains(&nanos) || secs < 0 {
                    return Err(EINVAL);
                }
                let clock = a[0] as libc::clockid_t;
                let mut deadline = libc::timespec {
                    tv_sec: secs,
                    tv_nsec: nanos,
                };
                if a[1] & TIMER_ABSTIME == 0 {
                    // Relative: made absolute, so a sleep interrupted by a kick (the
                    // session changing events) resumes for what is left, not anew.
                    let mut now = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: `now` is a valid, writable timespec; the clock id is checked.
                    unsafe { libc::clock_gettime(clock, &mut now) };
                    let total = now.tv_nsec + nanos;
                    deadline.tv_sec = now.tv_sec.saturating_add(secs) + total / 1_000_000_000;
                    deadline.tv_nsec = total % 1_000_000_000;
                }
                loop {
                    // SAFETY: `deadline` is a valid timespec; no remainder is asked for.
                    let r = unsafe {
                        libc::clock_nanosleep(
                            clock,
                            libc::TIMER_ABSTIME,
                            &deadline,
                            std::ptr::null_mut(),
                        )
                    };
                    if r != libc::EINTR {
                        return if r == 0 {
                            Ok(Outcome::Return(0))
                        } else {
                            Err(i64::from(r))
                        };
                    }
                }
            }
            13 => {
                let sig = a[0] as usize;
                if !(1..=64).contains(&sig) || (a[1] != 0 && (sig == 9 || sig == 19)) {
                    return Err(EINVAL);
                }
                if a[2] != 0 {
                    let old = self.signal_actions[sig];
                    self.write_mem(g, a[2], &old)?;
                }
                if a[1] != 0 {
                    let new = self.read_mem(g, a[1], 32)?;
                    self.signal_actions[sig].copy_from_slice(&new);
                }
                ok(0)
            }
            14 => {
                if a[2] != 0 {
                    self.write_mem(g, a[2], &self.signal_mask.to_le_bytes())?;
                }
                if a[1] != 0 {
                    let set = u64::from_le_bytes(self.read_mem(g, a[1], 8)?.try_into().unwrap());
                    self.signal_mask = match a[0] {
                        0 => self.signal_mask | set,
                        1 => self.signal_mask & !set,
                        2 => set,
                        _ => return Err(EINVAL),
                    };
                }
                ok(0)
            }
            131 => {
                if a[1] != 0 {
                    self.write_mem(g, a[1], &self.alt_stack)?;
                }
                if a[0] != 0 {
                    let new = self.read_mem(g, a[0], 24)?;
                    self.alt_stack.copy_from_slice(&new);
                }
                ok(0)
            }
            16 => {
                let host = self.files.host_tty(a[0])?;
                let size = match a[1] {
                    0x5401 => 36, // TCGETS: the kernel's struct termios
                    0x5413 => 8,  // TIOCGWINSZ
                    _ => return Err(25),
                };
                let mut buf = [0u8; 64];
                // SAFETY: `buf` is larger than what either request writes; `host` is one of
                // the host's own standard descriptors.
                let r = unsafe { libc::ioctl(host, a[1] as _, buf.as_mut_ptr()) };
                if r != 0 {
                    return Err(std::io::Error::last_os_error()
                        .raw_os_error()
                        .map_or(25, i64::from));
                }
                self.write_mem(g, a[2], &buf[..size])?;
                ok(0)
            }
            60 | 231 => Outcome::Exit(a[0] as i32),
            202 => {
                const FUTEX_CMD: u64 = 0x7f;
                match a[1] & FUTEX_CMD {
                    1 => ok(0), // FUTEX_WAKE: nobody else waits
                    0 | 9 => {
                        let word = self.read_mem(g, a[0], 4)?;
                        if u32::from_le_bytes(word.try_into().unwrap()) != a[2] as u32 {
                            return Err(EAGAIN);
                        }
                        self.note(202, "futex wait that no other thread could end: EDEADLK");
                        return Err(EDEADLK);
                    }
                    _ => return Err(ENOSYS),
                }
            }
            204 => {
                if a[1] < 8 {
                    return Err(EINVAL);
                }
                self.write_mem(g, a[2], &1u64.to_le_bytes())?;
                ok(8)
            }
            24 => ok(0),
            7 => {
                const POLLIN: u16 = 1;
                const POLLOUT: u16 = 4;
                const POLLNVAL: u16 = 0x20;
                if a[1] > 1024 {
                    return Err(EINVAL);
                }
                let mut fds = self.read_mem(g, a[0], a[1] as usize * 8)?;
                let mut ready = 0;
                for pfd in fds.chunks_mut(8) {
                    let fd = i32::from_le_bytes(pfd[..4].try_into().unwrap());
                    let events = u16::from_le_bytes([pfd[4], pfd[5]]);
                    let revents = if fd < 0 {
                        0
                    } else if self.files.get(fd as u64).is_err() {
                        POLLNVAL
                    } else {
                        events & (POLLIN | POLLOUT)
                    };
                    pfd[6..8].copy_from_slice(&revents.to_le_bytes());
                    ready += u64::from(revents != 0);
                }
                self.write_mem(g, a[0], &fds)?;
                ok(ready)
            }
            62 | 234 => {
                let (pid, sig) = if nr == 62 { (a[0], a[1]) } else { (a[1], a[2]) };
                if pid as i32 != self.pid as i32 && pid as i32 != 0 {
                    return Err(EPERM);
                }
                match sig {
                    0 => ok(0),
                    1..=64 => Outcome::Signal(sig as i32),
                    _ => return Err(EINVAL),
                }
            }
            79 => {
                let cwd = std::env::current_dir().map_err(|_| ENOENT)?;
                let mut bytes = cwd.as_os_str().as_encoded_bytes().to_vec();
                bytes.push(0);
                if bytes.len() as u64 > a[1] {
                    return Err(ERANGE);
                }
                self.write_mem(g, a[0], &bytes)?;
                ok(bytes.len() as u64)
            }
            56 | 57 | 58 | 59 | 435 => {
                self.refused += 1;
                self.note(nr, "process and thread creation are refused (ENOSYS)");
                return Err(ENOSYS);
            }
            41 | 42 | 43 | 49 | 50 => {
                self.refused += 1;
                self.note(nr, "sockets are refused (EACCES)");
                return Err(EACCES);
            }
            other => {
                self.note(other, "unknown system call: ENOSYS");
                return Err(ENOSYS);
            }
        })
    }

    /// One note per system-call number.
    fn note(&mut self, nr: u64, what: &str) {
        if self.warned.insert(nr) {
            self.notes.push(format!("system call {nr}: {what}"));
        }
    }

    /// The program's own path, as `/proc/self/exe` reads.
    pub fn exe(&self) -> &Path {
        &self.exe
    }
}
