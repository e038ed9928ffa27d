//! The initial stack of a program, laid out exactly as Linux's `execve` leaves it
//! (`fs/binfmt_elf.c`, `create_elf_tables`), because a static C or Rust start-up reads it
//! before anything else: at the stack pointer `argc`, then `argv[0..argc]` and a NULL, then
//! `envp[..]` and a NULL, then the auxiliary vector (`AT_*` pairs ending with `AT_NULL`);
//! above them the 16 random bytes of `AT_RANDOM`, the `AT_PLATFORM` string, and the
//! argument, environment and file-name strings. The stack pointer is 16-byte aligned, as
//! the x86-64 ABI requires at process entry.

/// Auxiliary-vector keys (`include/uapi/linux/auxvec.h`).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const MINSIGSTKSZ: u64 = 51;
}

/// What the auxiliary vector says about the program and its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    pub entry: u64,
    pub uid: u32,
    pub gid: u32,
    /// CPUID leaf 1 EDX, as Linux reports it in `AT_HWCAP` on x86.
    pub hwcap: u64,
    /// The path the program was started as (`AT_EXECFN`).
    pub execfn: Vec<u8>,
    pub random: [u8; 16],
}

/// The bytes from the stack pointer up to the top of the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialStack {
    /// The initial RSP; `bytes` go at `rsp .. rsp + bytes.len()`.
    pub rsp: u64,
    pub bytes: Vec<u8>,
}

/// Linux's `MINSIGSTKSZ` for x86-64 with AVX-512 state: what glibc's `sysconf` reports.
const MIN_SIGNAL_STACK: u64 = 0xd30;

/// Lays out the stack below `top` (exclusive). `top` must be 16-byte aligned.
pub fn build(top: u64, args: &[Vec<u8>], env: &[Vec<u8>], info: &ProcessInfo) -> InitialStack {
    assert_eq!(top % 16, 0, "the stack top is 16-byte aligned");
    // Strings first, from the top down: the file name, the environment, the arguments.
    let mut area: Vec<u8> = Vec::new(); // grows downward: area[0] is the lowest byte so far
    let mut cursor = top;
    let push = |area: &mut Vec<u8>, cursor: &mut u64, bytes: &[u8], nul: bool| -> u64 {
        let len = bytes.len() + usize::from(nul);
        *cursor -= len as u64;
        let mut piece = bytes.to_vec();
        if nul {
            piece.push(0);
        }
        piece.extend_from_slice(area);
        *area = piece;
        *cursor
    };
    let execfn = push(&mut area, &mut cursor, &info.execfn, true);
    let env_at: Vec<u64> = env
        .iter()
        .rev()
        .map(|e| push(&mut area, &mut cursor, e, true))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let arg_at: Vec<u64> = args
        .iter()
        .rev()
        .map(|a| push(&mut area, &mut cursor, a, true))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let platform = push(&mut area, &mut cursor, b"x86_64", true);
    // 16-byte alignment for the random bytes, as Linux's `STACK_ROUND` before them.
    let pad = (cursor % 16) as usize;
    push(&mut area, &mut cursor, &vec![0u8; pad], false);
    let random = push(&mut area, &mut cursor, &info.random, false);

    let auxv: [(u64, u64); 20] = [
        (at::MINSIGSTKSZ, MIN_SIGNAL_STACK),
        (at::HWCAP, info.hwcap),
        (at::PAGESZ, 0x1000),
        (at::CLKTCK, 100),
        (at::PHDR, info.phdr),
        (at::PHENT, info.phent),
        (at::PHNUM, info.phnum),
        (at::BASE, 0),
        (at::FLAGS, 0),
        (at::ENTRY, info.entry),
        (at::UID, u64::from(info.uid)),
        (at::EUID, u64::from(info.uid)),
        (at::GID, u64::from(info.gid)),
        (at::EGID, u64::from(info.gid)),
        (at::SECURE, 0),
        (at::RANDOM, random),
        (at::HWCAP2, 0),
        (at::EXECFN, execfn),
        (at::PLATFORM, platform),
        (at::NULL, 0),
    ];
    let words = 1 + args.len() + 1 + env.len() + 1 + 2 * auxv.len();
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(args.len() as u64);
    table.extend(&arg_at);
    table.push(0);
    table.extend(&env_at);
    table.push(0);
    for (k, v) in auxv {
        table.push(k);
        table.push(v);
    }
    // RSP = the table's start, rounded down to 16 (Linux's STACK_ROUND).
    let rsp = (cursor - 8 * words as u64) & !15;
    let gap = (cursor - rsp) as usize - 8 * words;
    let mut bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend(std::iter::repeat_n(0u8, gap));
    bytes.extend_from_slice(&area);
    debug_assert_eq!(rsp + bytes.len() as u64, top);
    InitialStack { rsp, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ProcessInfo {
        ProcessInfo {
            phdr: 0x400040,
            phent: 56,
            phnum: 10,
            entry: 0x4014f0,
            uid: 1000,
            gid: 100,
            hwcap: 0x178bfbff,
            execfn: b"/tmp/hello".to_vec(),
            random: *b"0123456789abcdef",
        }
    }

    /// Reads the stack back as a C start-up does.
    struct Reader<'a>(&'a InitialStack);
    impl Reader<'_> {
        fn word(&self, addr: u64) -> u64 {
            let o = (addr - self.0.rsp) as usize;
            u64::from_le_bytes(self.0.bytes[o..o + 8].try_into().unwrap())
        }
        fn string(&self, addr: u64) -> Vec<u8> {
            let o = (addr - self.0.rsp) as usize;
            let end = self.0.bytes[o..].iter().position(|&b| b == 0).unwrap();
            self.0.bytes[o..o + end].to_vec()
        }
    }

    #[test]
    fn argc_argv_envp_and_auxv_as_linux_lays_them_out() {
        let args = vec![b"/tmp/hello".to_vec(), b"one".to_vec(), b"".to_vec()];
        let env = vec![b"HOME=/root".to_vec(), b"LANG=C".to_vec()];
        let top = 0x7fff_ffff_f000;
        let s = build(top, &args, &env, &info());
        assert_eq!(s.rsp % 16, 0);
        assert_eq!(s.rsp + s.bytes.len() as u64, top);
        let r = Reader(&s);
        let mut p = s.rsp;
        assert_eq!(r.word(p), 3);
        p += 8;
        for a in &args {
            assert_eq!(&r.string(r.word(p)), a);
            p += 8;
        }
        assert_eq!(r.word(p), 0);
        p += 8;
        for e in &env {
            assert_eq!(&r.string(r.word(p)), e);
            p += 8;
        }
        assert_eq!(r.word(p), 0);
        p += 8;
        let mut aux = std::collections::BTreeMap::new();
        loop {
            let (k, v) = (r.word(p), r.word(p + 8));
            p += 16;
            if k == at::NULL {
                break;
            }
            aux.insert(k, v);
        }
        assert_eq!(aux[&at::PHDR], 0x400040);
        assert_eq!(aux[&at::PHNUM], 10);
        assert_eq!(aux[&at::ENTRY], 0x4014f0);
        assert_eq!(aux[&at::PAGESZ], 0x1000);
        assert_eq!((aux[&at::UID], aux[&at::EGID]), (1000, 100));
        assert_eq!(r.string(aux[&at::EXECFN]), b"/tmp/hello");
        assert_eq!(r.string(aux[&at::PLATFORM]), b"x86_64");
        let random = aux[&at::RANDOM];
        assert_eq!(random % 16, 0);
        let o = (random - s.rsp) as usize;
        assert_eq!(&s.bytes[o..o + 16], b"0123456789abcdef");
    }

    #[test]
    fn the_stack_pointer_is_aligned_whatever_the_strings() {
        for n in 0..40 {
            let args: Vec<Vec<u8>> = (0..n % 5).map(|i| vec![b'a'; i * 3 + n]).collect();
            let env: Vec<Vec<u8>> = (0..n % 3).map(|i| vec![b'e'; i + 1]).collect();
            let s = build(0x7ff0_0000_0000, &args, &env, &info());
            assert_eq!(s.rsp % 16, 0, "{n}");
            assert_eq!(s.rsp + s.bytes.len() as u64, 0x7ff0_0000_0000);
        }
    }
}
