//! Deferred printf against the formatter it replaced: `format_printf` (now capture, then
//! render) must give the bytes, warnings and errors of the single-pass loop it was before,
//! kept here as the oracle, on random formats, values and memory, including strings that
//! run into the output bound or into unmapped memory.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::env::{AtomicRmw, Env, MemFault, NoCallerMemory};
use crate::error::ScriptError;
use crate::printf::{pieces, Conversion, Piece, MAX_PRINTF_OUTPUT};
use crate::printf_render::render_value;
use crate::strings::append_mem_string;
use crate::{format_printf, ParsedFormat};

/// Guest memory of whole readable 4 KiB pages; output and warnings are recorded.
#[derive(Default)]
struct Mem {
    pages: BTreeMap<u64, Vec<u8>>,
    out: Vec<u8>,
    reads: usize,
}

impl Mem {
    fn load(&mut self, mut addr: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let off = (addr & 0xfff) as usize;
            let n = (4096 - off).min(data.len());
            let page = self
                .pages
                .entry(addr & !0xfff)
                .or_insert_with(|| vec![0; 4096]);
            page[off..off + n].copy_from_slice(&data[..n]);
            addr += n as u64;
            data = &data[n..];
        }
    }
}

impl Env for Mem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.reads += 1;
        let (mut addr, mut done) = (addr, 0);
        while done < buf.len() {
            let page = self.pages.get(&(addr & !0xfff)).ok_or(MemFault::Invalid)?;
            let off = (addr & 0xfff) as usize;
            let n = (4096 - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
            addr = addr.checked_add(n as u64).ok_or(MemFault::Invalid)?;
        }
        Ok(())
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::Invalid)
    }
    fn atomic_rmw_u64(&mut self, _: u64, _: AtomicRmw) -> Result<u64, MemFault> {
        Err(MemFault::Invalid)
    }
    fn cmpxchg_u32(&mut self, _: u64, _: u32, _: u32) -> Result<u32, MemFault> {
        Err(MemFault::Invalid)
    }
    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn test_statement(&mut self, _: u64) {}
}

/// The single-pass formatter `format_printf` was before it was cut in two.
fn oracle(env: &mut dyn Env, fmt: &[u8], args: &[u64]) -> Result<Vec<u8>, ScriptError> {
    let pieces = pieces(fmt)?;
    let specifiers = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Spec(_)))
        .count();
    if specifiers != args.len() {
        return Err(ScriptError::PrintfArity {
            specifiers,
            args: args.len(),
        });
    }
    let mut out = Vec::new();
    let mut cut = false;
    let mut next_arg = args.iter().copied();
    for p in pieces {
        match p {
            Piece::Text(a, b) => out.extend_from_slice(&fmt[a..b]),
            Piece::Percent => out.push(b'%'),
            Piece::Spec(s) => {
                let v = next_arg.next().unwrap_or(0);
                match s.conv {
                    Conversion::Str | Conversion::WStr => {
                        let wide = s.conv == Conversion::WStr;
                        cut |= append_mem_string(env, v, wide, &mut out, MAX_PRINTF_OUTPUT)?;
                    }
                    _ => render_value(&mut out, &s, v),
                }
            }
        }
        if out.len() > MAX_PRINTF_OUTPUT {
            cut = true;
            break;
        }
    }
    if cut {
        out.truncate(MAX_PRINTF_OUTPUT);
        env.warn(&crate::cut_warning());
    }
    Ok(out)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CONVERSIONS: &[&str] = &[
    "%d", "%i", "%u", "%o", "%x", "%X", "%hd", "%lx", "%llx", "%lld", "%llo", "%c", "%p", "%f",
    "%.2e", "%g", "%s", "%s", "%s", "%ws", "%ls", "%%",
];

/// Strings live in pages 0x10000.. (narrow) and 0x40000.. (wide); page 0x20000 and
/// 0x50000 are unmapped, so a string running to the end of 0x1f000 faults.
fn memory(rng: &mut Rng) -> Mem {
    let mut m = Mem::default();
    let mut narrow = Vec::new();
    for _ in 0..0xf000 {
        // Mostly printable, some NULs so strings have all lengths.
        let b = match rng.below(40) {
            0 => 0,
            _ => b' ' + rng.below(95) as u8,
        };
        narrow.push(b);
    }
    m.load(0x10000, &narrow);
    // A long run without NUL up to the unmapped page.
    m.load(0x1e000, &vec![b'z'; 0x2000]);
    let mut wide = Vec::new();
    for _ in 0..0x4000 {
        let u: u16 = match rng.below(30) {
            0 => 0,
            1 => 0xd83d,
            2 => 0xde00,
            3 => 0x00e9,
            _ => 0x20 + rng.below(95) as u16,
        };
        wide.extend_from_slice(&u.to_le_bytes());
    }
    m.load(0x40000, &wide);
    m
}

fn string_addr(rng: &mut Rng, wide: bool) -> u64 {
    match rng.below(10) {
        0 => 0x1234,                      // unmapped
        1 => 0x1f000 - rng.below(0x40),   // runs into the unmapped page
        2 => 0x1e000 + rng.below(0x1000), // no NUL for thousands of bytes
        _ if wide => 0x40000 + rng.below(0x4000) * 2,
        _ => 0x10000 + rng.below(0xe000),
    }
}

#[test]
fn deferred_printf_gives_the_bytes_warnings_and_errors_of_the_single_pass_formatter() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Read-only: one memory serves every case.
    let mut mem = memory(&mut rng);
    let mut outcomes = [0usize; 3];
    for case in 0..4_000 {
        let mut fmt = String::new();
        let mut args = Vec::new();
        for _ in 0..rng.below(8) {
            if rng.below(3) == 0 {
                // Long text makes the output bound reachable.
                let n = [1, 5, 300, 1500, 4000][rng.below(5) as usize];
                fmt.extend((0..n).map(|i| (b'a' + (i % 26) as u8) as char));
            }
            let c = CONVERSIONS[rng.below(CONVERSIONS.len() as u64) as usize];
            fmt.push_str(c);
            match c {
                "%%" => {}
                "%s" => args.push(string_addr(&mut rng, false)),
                "%ws" | "%ls" => args.push(string_addr(&mut rng, true)),
                "%f" | "%.2e" | "%g" => args.push(f64::from_bits(rng.next()).to_bits()),
                _ => args.push(rng.next() >> rng.below(64)),
            }
        }
        if rng.below(50) == 0 {
            args.push(1); // an arity error
        }
        mem.out.clear();
        let want = oracle(&mut mem, fmt.as_bytes(), &args);
        let warned = core::mem::take(&mut mem.out);
        let got = format_printf(&mut mem, fmt.as_bytes(), &args);
        assert_eq!(got, want, "case {case}: {fmt:?} {args:x?}");
        assert_eq!(mem.out, warned, "warnings of case {case}: {fmt:?}");
        outcomes[match (&want, warned.is_empty()) {
            (Err(_), _) => 0,
            (Ok(_), false) => 1,
            (Ok(_), true) => 2,
        }] += 1;
    }
    // The cases cover errors, cut outputs and plain ones.
    assert!(outcomes.iter().all(|&n| n > 200), "{outcomes:?}");
}

#[test]
fn a_recorded_call_renders_later_from_its_values_and_captured_strings() {
    let mut mem = Mem::default();
    mem.load(0x1000, b"first\0");
    let f = ParsedFormat::parse(b"%d:%s:%x\n").unwrap();
    assert_eq!((f.arg_count(), f.has_strings()), (3, true));
    let args = [5, 0x1000, 255];
    let mut strings = Vec::new();
    f.capture(&mut NoCallerMemory, &mut mem, &args, &mut strings)
        .unwrap();
    // Memory changes after the event: the output still shows what it held then.
    mem.load(0x1000, b"later\0");
    let mut out = b"before ".to_vec();
    assert!(!f.render(&args, &strings, &mut out));
    assert_eq!(out, b"before 5:first:ff\n");
}

#[test]
fn a_format_without_strings_reads_no_memory_at_event_time() {
    let mut mem = Mem::default();
    let f = ParsedFormat::parse(b"%d %llx %c %f\n").unwrap();
    let mut strings = Vec::new();
    f.capture(&mut NoCallerMemory, &mut mem, &[1, 2, 3, 4], &mut strings)
        .unwrap();
    assert!(strings.is_empty());
    assert_eq!(mem.reads, 0);
    assert!(f.check_arity(3).is_err() && f.check_arity(4).is_ok());
}
