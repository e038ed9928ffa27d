//! The system-call layer of program guests on a model address space: what a static glibc
//! start-up and ordinary programs call, with Linux's results and errnos, and the refusals
//! (no host reachable beyond the table).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use hv_kvm::program::files::Files;
use hv_kvm::program::memory_map::{AddressSpace, MemoryMap, Prot, PAGE};
use hv_kvm::program::syscalls::{Guest, Outcome, Process};

/// Guest memory as a map of pages.
#[derive(Default)]
struct Model {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl AddressSpace for Model {
    fn map(&mut self, addr: u64, len: u64, _: Prot) -> Result<(), i64> {
        for p in (addr..addr + len).step_by(PAGE as usize) {
            self.pages.insert(p, vec![0; PAGE as usize]);
        }
        Ok(())
    }
    fn unmap(&mut self, addr: u64, len: u64) {
        for p in (addr..addr + len).step_by(PAGE as usize) {
            self.pages.remove(&p);
        }
    }
    fn protect(&mut self, _: u64, _: u64, _: Prot) {}
    fn copy(&mut self, from: u64, to: u64, len: u64) {
        for off in (0..len).step_by(PAGE as usize) {
            let page = self.pages[&(from + off)].clone();
            self.pages.insert(to + off, page);
        }
    }
}

impl Guest for Model {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            match self.pages.get(&(a & !(PAGE - 1))) {
                Some(p) => *b = p[(a & (PAGE - 1)) as usize],
                None => return false,
            }
        }
        true
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        for (i, b) in data.iter().enumerate() {
            let a = addr + i as u64;
            match self.pages.get_mut(&(a & !(PAGE - 1))) {
                Some(p) => p[(a & (PAGE - 1)) as usize] = *b,
                None => return false,
            }
        }
        true
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SCRATCH: u64 = 0x10_0000;

fn setup(allowed: &[std::path::PathBuf]) -> (Process, Model, Captured) {
    let out = Captured::default();
    let files = Files::new(allowed, Box::new(out.clone()), Box::new(std::io::sink()));
    let mut memory = MemoryMap::new(0x60_0000, 0x1000_0000, 0x7f00_0000_0000);
    let mut model = Model::default();
    model.map(SCRATCH, 0x4000, Prot::RW).unwrap();
    memory.insert(SCRATCH, 0x4000, Prot::RW);
    (
        Process::new(4242, "/tmp/hello".into(), memory, files),
        model,
        out,
    )
}

fn ret(o: Outcome) -> i64 {
    match o {
        Outcome::Return(v) => v as i64,
        other => panic!("{other:?}"),
    }
}

#[test]
fn write_writev_and_what_faults() {
    let (mut p, mut m, out) = setup(&[]);
    m.write(SCRATCH, b"hello, world\n");
    assert_eq!(ret(p.syscall(&mut m, 1, [1, SCRATCH, 13, 0, 0, 0])), 13);
    // writev: two pieces from an iovec array.
    let iov: Vec<u8> = [(SCRATCH, 7u64), (SCRATCH + 7, 6)]
        .iter()
        .flat_map(|(b, l)| b.to_le_bytes().into_iter().chain(l.to_le_bytes()))
        .collect();
    m.write(SCRATCH + 0x100, &iov);
    assert_eq!(
        ret(p.syscall(&mut m, 20, [1, SCRATCH + 0x100, 2, 0, 0, 0])),
        13
    );
    assert_eq!(&*out.0.lock().unwrap(), b"hello, world\nhello, world\n");
    assert_eq!(
        ret(p.syscall(&mut m, 1, [1, 0xdead_0000, 4, 0, 0, 0])),
        -14,
        "EFAULT"
    );
    assert_eq!(
        ret(p.syscall(&mut m, 1, [7, SCRATCH, 4, 0, 0, 0])),
        -9,
        "EBADF"
    );
}

#[test]
fn files_only_those_allowed_and_only_read() {
    let dir = std::env::temp_dir().join(format!("hv-kvm-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = dir.join("data.txt");
    std::fs::write(&ok, b"0123456789").unwrap();
    std::fs::write(dir.join("secret"), b"x").unwrap();
    let (mut p, mut m, _) = setup(std::slice::from_ref(&ok));
    let open = |p: &mut Process, m: &mut Model, path: &std::path::Path, flags: u64| {
        let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        m.write(SCRATCH + 0x800, &bytes);
        ret(p.syscall(m, 257, [(-100i64) as u64, SCRATCH + 0x800, flags, 0, 0, 0]))
    };
    assert_eq!(open(&mut p, &mut m, &dir.join("secret"), 0), -13, "EACCES");
    assert_eq!(open(&mut p, &mut m, &dir.join("nope"), 0), -2, "ENOENT");
    assert_eq!(open(&mut p, &mut m, &ok, 0o101), -13, "O_WRONLY|O_CREAT");
    // glibc passes AT_FDCWD as a C int: the upper half of RDI is zero.
    let mut bytes = ok.as_os_str().as_encoded_bytes().to_vec();
    bytes.push(0);
    m.write(SCRATCH + 0x800, &bytes);
    let fd = ret(p.syscall(&mut m, 257, [0xffff_ff9c, SCRATCH + 0x800, 0, 0, 0, 0]));
    assert_eq!(fd, 3);
    assert_eq!(ret(p.syscall(&mut m, 3, [3, 0, 0, 0, 0, 0])), 0);
    let fd = open(&mut p, &mut m, &ok, 0) as u64;
    assert_eq!(ret(p.syscall(&mut m, 0, [fd, SCRATCH, 4, 0, 0, 0])), 4);
    let mut got = [0u8; 4];
    m.read(SCRATCH, &mut got);
    assert_eq!(&got, b"0123");
    assert_eq!(
        ret(p.syscall(&mut m, 5, [fd, SCRATCH + 0x200, 0, 0, 0, 0])),
        0
    );
    let mut size = [0u8; 8];
    m.read(SCRATCH + 0x200 + 48, &mut size);
    assert_eq!(u64::from_le_bytes(size), 10);
    assert_eq!(ret(p.syscall(&mut m, 3, [fd, 0, 0, 0, 0, 0])), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn memory_brk_mmap_and_the_thread_pointer() {
    let (mut p, mut m, _) = setup(&[]);
    assert_eq!(ret(p.syscall(&mut m, 12, [0; 6])), 0x60_0000);
    assert_eq!(
        ret(p.syscall(&mut m, 12, [0x60_3000, 0, 0, 0, 0, 0])),
        0x60_3000
    );
    assert!(m.write(0x60_2ff0, b"heap"));
    let a = ret(p.syscall(&mut m, 9, [0, 0x3000, 3, 0x22, u64::MAX, 0])) as u64;
    assert_eq!(a % PAGE, 0);
    assert!(m.write(a + 0x2fff, b"x"));
    assert_eq!(
        ret(p.syscall(&mut m, 9, [0, 0x1000, 3, 0x02, 3, 0])),
        -19,
        "file mapping: ENODEV"
    );
    assert_eq!(ret(p.syscall(&mut m, 10, [a, 0x1000, 1, 0, 0, 0])), 0);
    assert_eq!(ret(p.syscall(&mut m, 11, [a, 0x3000, 0, 0, 0, 0])), 0);
    assert_eq!(
        ret(p.syscall(&mut m, 1, [1, a, 1, 0, 0, 0])),
        -14,
        "unmapped: EFAULT"
    );
    assert_eq!(
        p.syscall(&mut m, 158, [0x1002, 0x7000_1000, 0, 0, 0, 0]),
        Outcome::SetFsBase(0x7000_1000)
    );
    assert_eq!(
        ret(p.syscall(&mut m, 158, [0x1003, SCRATCH, 0, 0, 0, 0])),
        0
    );
    let mut fs = [0u8; 8];
    m.read(SCRATCH, &mut fs);
    assert_eq!(u64::from_le_bytes(fs), 0x7000_1000);
}

#[test]
fn identity_time_and_what_is_refused() {
    let (mut p, mut m, _) = setup(&[]);
    assert_eq!(ret(p.syscall(&mut m, 39, [0; 6])), 4242);
    assert_eq!(ret(p.syscall(&mut m, 186, [0; 6])), 4242);
    assert_eq!(ret(p.syscall(&mut m, 218, [SCRATCH, 0, 0, 0, 0, 0])), 4242);
    assert_eq!(ret(p.syscall(&mut m, 63, [SCRATCH, 0, 0, 0, 0, 0])), 0);
    let mut machine = [0u8; 6];
    m.read(SCRATCH + 4 * 65, &mut machine);
    assert_eq!(&machine, b"x86_64");
    assert_eq!(ret(p.syscall(&mut m, 228, [1, SCRATCH, 0, 0, 0, 0])), 0);
    m.write(SCRATCH + 0x100, b"/proc/self/exe\0");
    assert_eq!(
        ret(p.syscall(&mut m, 89, [SCRATCH + 0x100, SCRATCH + 0x200, 64, 0, 0, 0])),
        10
    );
    assert_eq!(ret(p.syscall(&mut m, 318, [SCRATCH, 16, 0, 0, 0, 0])), 16);
    assert_eq!(ret(p.syscall(&mut m, 57, [0; 6])), -38, "fork: ENOSYS");
    assert_eq!(ret(p.syscall(&mut m, 56, [0; 6])), -38, "clone: ENOSYS");
    assert_eq!(
        ret(p.syscall(&mut m, 41, [2, 1, 0, 0, 0, 0])),
        -13,
        "socket: EACCES"
    );
    assert_eq!(ret(p.syscall(&mut m, 999, [0; 6])), -38);
    assert_eq!(ret(p.syscall(&mut m, 999, [0; 6])), -38);
    assert_eq!(p.refused, 3);
    assert_eq!(
        p.notes.iter().filter(|n| n.contains("999")).count(),
        1,
        "{:?}",
        p.notes
    );
    assert_eq!(p.syscall(&mut m, 231, [7, 0, 0, 0, 0, 0]), Outcome::Exit(7));
    m.write(SCRATCH, &5u32.to_le_bytes());
    assert_eq!(
        ret(p.syscall(&mut m, 202, [SCRATCH, 0, 4, 0, 0, 0])),
        -11,
        "changed word: EAGAIN"
    );
    assert_eq!(
        ret(p.syscall(&mut m, 202, [SCRATCH, 0, 5, 0, 0, 0])),
        -35,
        "EDEADLK"
    );
}
