//! A program's file descriptors: its standard input, output and error (the user's), and
//! files it may only read — the program itself and the paths given with `--allow-read`.
//! Every other open fails with the errno Linux would give: `ENOENT` for a path that does
//! not exist, `EACCES` for one that exists but is not allowed, or is allowed and opened
//! for writing.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const EBADF: i64 = 9;
pub const ENOENT: i64 = 2;
pub const EACCES: i64 = 13;
pub const EINVAL: i64 = 22;
pub const ESPIPE: i64 = 29;
pub const EMFILE: i64 = 24;
pub const ENOTTY: i64 = 25;

/// Open files a program may hold at once (Linux's default soft `RLIMIT_NOFILE`).
pub const MAX_FILES: usize = 1024;

/// One open file description.
pub enum OpenFile {
    /// Descriptor 0..=2: the host's own standard streams.
    Stdio(i32),
    /// A read-only file and its offset.
    Read { file: File, path: PathBuf, pos: u64 },
}

/// Where the program's output goes (the user's stdout/stderr, or a test's buffer).
pub type Output = Box<dyn Write + Send>;

/// The descriptor table and what may be opened.
pub struct Files {
    table: Vec<Option<OpenFile>>,
    allowed: BTreeSet<PathBuf>,
    pub stdout: Output,
    pub stderr: Output,
}

impl Files {
    /// `allowed`: the paths the program may open (read-only); relative paths are taken
    /// from the current directory.
    pub fn new(allowed: &[PathBuf], stdout: Output, stderr: Output) -> Files {
        Files {
            table: vec![
                Some(OpenFile::Stdio(0)),
                Some(OpenFile::Stdio(1)),
                Some(OpenFile::Stdio(2)),
            ],
            allowed: allowed.iter().filter_map(|p| canonical(p)).collect(),
            stdout,
            stderr,
        }
    }

    pub fn get(&mut self, fd: u64) -> Result<&mut OpenFile, i64> {
        self.table
            .get_mut(usize::try_from(fd).map_err(|_| EBADF)?)
            .and_then(Option::as_mut)
            .ok_or(EBADF)
    }

    /// `openat` of `path` (relative to the current directory: `AT_FDCWD` only).
    pub fn open(&mut self, path: &Path, flags: u64) -> Result<u64, i64> {
        const O_ACCMODE: u64 = 3;
        const O_CREAT: u64 = 0o100;
        // Writing or creating is never allowed: that is a permission, not a missing file.
        if flags & (O_ACCMODE | O_CREAT) != 0 {
            return Err(EACCES);
        }
        let Some(real) = canonical(path) else {
            return Err(ENOENT);
        };
        if !self.allowed.contains(&real) || flags & O_ACCMODE != 0 {
            return Err(EACCES);
        }
        let file = File::open(&real).map_err(|e| e.raw_os_error().map_or(EACCES, i64::from))?;
        let slot = match self.table.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.table.len() < MAX_FILES => {
                self.table.push(None);
                self.table.len() - 1
            }
            None => return Err(EMFILE),
        };
        self.table[slot] = Some(OpenFile::Read {
            file,
            path: real,
            pos: 0,
        });
        Ok(slot as u64)
    }

    pub fn close(&mut self, fd: u64) -> Result<(), i64> {
        self.get(fd)?;
        self.table[fd as usize] = None;
        Ok(())
    }

    /// Reads at most `len` bytes from `fd` (host stdin for 0).
    pub fn read(&mut self, fd: u64, len: usize) -> Result<Vec<u8>, i64> {
        let mut buf = vec![0u8; len];
        let n = match self.get(fd)? {
            OpenFile::Stdio(0) => {
                use std::io::Read;
                std::io::stdin()
                    .lock()
                    .read(&mut buf)
                    .map_err(|e| e.raw_os_error().map_or(EINVAL, i64::from))?
            }
            OpenFile::Stdio(_) => return Err(EBADF),
            OpenFile::Read { file, pos, .. } => {
                let n = file
                    .read_at(&mut buf, *pos)
                    .map_err(|e| e.raw_os_error().map_or(EINVAL, i64::from))?;
                *pos += n as u64;
                n
            }
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// Whether a write to `fd` goes to the user's standard output or error.
    pub fn is_output(&self, fd: u64) -> bool {
        let open = usize::try_from(fd)
            .ok()
            .and_then(|fd| self.table.get(fd))
            .and_then(Option::as_ref);
        matches!(open, Some(OpenFile::Stdio(1 | 2)))
    }

    /// Writes to standard output or error; files are read-only.
    pub fn write(&mut self, fd: u64, data: &[u8]) -> Result<u64, i64> {
        let stream = match self.get(fd)? {
            OpenFile::Stdio(1) => &mut self.stdout,
            OpenFile::Stdio(2) => &mut self.stderr,
            _ => return Err(EBADF),
        };
        // A closed pipe is the program's EPIPE, as on Linux (without the SIGPIPE).
        stream
            .write_all(data)
            .and_then(|()| stream.flush())
            .map_err(|e| e.raw_os_error().map_or(32, i64::from))?;
        Ok(data.len() as u64)
    }

    pub fn seek(&mut self, fd: u64, offset: i64, whence: u64) -> Result<u64, i64> {
        let OpenFile::Read { file, pos, .. } = self.get(fd)? else {
            return Err(ESPIPE);
        };
        let base = match whence {
            0 => 0,
            1 => *pos as i64,
            2 => file.metadata().map_err(|_| EINVAL)?.len() as i64,
            _ => return Err(EINVAL),
        };
        let new = base.checked_add(offset).filter(|&p| p >= 0).ok_or(EINVAL)?;
        *pos = new as u64;
        Ok(*pos)
    }

    /// Linux's `struct stat` (x86-64, 144 bytes) of an open file.
    pub fn stat(&mut self, fd: u64) -> Result<[u8; 144], i64> {
        match self.get(fd)? {
            OpenFile::Stdio(_) => Ok(stat_bytes(&StatInfo {
                mode: 0o020620, // a character device, as a terminal or /dev/null is
                size: 0,
                ino: fd + 1,
                blksize: 1024,
                uid: 0,
                gid: 0,
            })),
            OpenFile::Read { file, .. } => Ok(stat_bytes(&StatInfo::of(
                &file.metadata().map_err(|_| EBADF)?,
            ))),
        }
    }

    /// `newfstatat` of a path: what may be opened may be looked at.
    pub fn stat_path(&self, path: &Path) -> Result<[u8; 144], i64> {
        let real = canonical(path).ok_or(ENOENT)?;
        if !self.allowed.contains(&real) {
            return Err(EACCES);
        }
        let m = std::fs::metadata(&real).map_err(|_| ENOENT)?;
        Ok(stat_bytes(&StatInfo::of(&m)))
    }

    /// The host descriptor behind a standard stream, for `ioctl(TCGETS/TIOCGWINSZ)`.
    pub fn host_tty(&mut self, fd: u64) -> Result<i32, i64> {
        match self.get(fd)? {
            OpenFile::Stdio(n) => Ok(*n),
            OpenFile::Read { .. } => Err(ENOTTY),
        }
    }
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

struct StatInfo {
    mode: u32,
    size: u64,
    ino: u64,
    blksize: u64,
    uid: u32,
    gid: u32,
}

impl StatInfo {
    fn of(m: &std::fs::Metadata) -> StatInfo {
        StatInfo {
            mode: m.mode(),
            size: m.len(),
            ino: m.ino(),
            blksize: m.blksize(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

/// `struct stat` for x86-64 (`arch/x86/include/uapi/asm/stat.h`).
fn stat_bytes(s: &StatInfo) -> [u8; 144] {
    let mut b = [0u8; 144];
    let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
    put(0, &1u64.to_le_bytes()); // st_dev
    put(8, &s.ino.to_le_bytes());
    put(16, &1u64.to_le_bytes()); // st_nlink
    put(24, &s.mode.to_le_bytes());
    put(28, &s.uid.to_le_bytes());
    put(32, &s.gid.to_le_bytes());
    put(48, &s.size.to_le_bytes());
    put(56, &s.blksize.to_le_bytes());
    put(64, &s.size.div_ceil(512).to_le_bytes()); // st_blocks
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_paths_open_and_only_for_reading() {
        let dir = std::env::temp_dir().join(format!("hv-kvm-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ok, other) = (dir.join("ok.txt"), dir.join("other.txt"));
        std::fs::write(&ok, b"hello world").unwrap();
        std::fs::write(&other, b"secret").unwrap();
        let mut f = Files::new(
            std::slice::from_ref(&ok),
            Box::new(std::io::sink()),
            Box::new(std::io::sink()),
        );
        assert_eq!(f.open(&other, 0), Err(EACCES));
        assert_eq!(f.open(&dir.join("missing"), 0), Err(ENOENT));
        assert_eq!(f.open(&ok, 1), Err(EACCES), "O_WRONLY");
        let fd = f.open(&ok, 0).unwrap();
        assert_eq!(fd, 3);
        assert_eq!(f.read(fd, 5).unwrap(), b"hello");
        assert_eq!(f.seek(fd, -5, 2), Ok(6));
        assert_eq!(f.read(fd, 100).unwrap(), b"world");
        assert_eq!(
            u64::from_le_bytes(f.stat(fd).unwrap()[48..56].try_into().unwrap()),
            11
        );
        assert_eq!(f.write(fd, b"x"), Err(EBADF));
        assert_eq!(f.seek(1, 0, 0), Err(ESPIPE));
        f.close(fd).unwrap();
        assert_eq!(f.close(fd), Err(EBADF));
        assert!(f.stat_path(&other).is_err() && f.stat_path(&ok).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
