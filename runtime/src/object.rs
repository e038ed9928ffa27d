//! [`CodeObject`]: a compiled script as position-independent data, and its byte format.
//!
//! A code object is everything needed to run a script anywhere: the machine code of every
//! function (concatenated, each 16-byte aligned, no relocations), the read-only data (string
//! literal records, see [`hvscript_abi::exec::string_record`]), the slot counts, the
//! built-ins it calls, the table mapping error-site ids to source byte ranges, and its
//! [`Usage`] (what a hypervisor vets a script by without its source).
//! [`CodeObject::to_bytes`] / [`CodeObject::from_bytes`] serialize it for shipping (hot-load
//! into the hypervisor); `from_bytes` validates everything and never panics.
//!
//! Format (all integers little-endian):
//! ```text
//! magic "HVSCOBJ\0", u32 version (4), u32 arch,
//! u32 global_slots,
//! u32 nfunc,    nfunc x (u32 offset, u32 size, u32 params, u32 locals),
//! u32 ncode,    ncode bytes,
//! u32 nrodata,  nrodata bytes,
//! u32 nstrings, nstrings x (u32 rodata offset, u8 wide),
//! u32 nbuiltin, nbuiltin x u16 id,
//! u32 nsites,   nsites x (u32 start, u32 end),          source byte offsets
//! u32 flags (bit 0: calls event_sc), u128 registers read, u128 registers written,
//! u32 pseudo-registers read,
//! u64 FNV-1a hash of everything before it.
//! ```
//! Version 1 had no usage sets; version 2's code did not read `ExecCtx::tlb` (the
//! translation cache), which a runtime of that version does not have; version 3's code
//! called every printf through the built-in's own entry, and version 4's calls a printf of
//! values alone through the table's `PRINTF_VALUES` entry, which that runtime lacks.
//! Objects of any version but this one are refused (the producer and the runtime must
//! agree on the format and on the context the code runs against; there is no migration).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hvscript_abi::exec::string_record;
use hvscript_abi::Builtin;

use crate::source_range::SourceRange;
use crate::usage::Usage;

const MAGIC: &[u8; 8] = b"HVSCOBJ\0";
/// The format version this runtime reads and writes.
pub const VERSION: u32 = 4;
/// Bit of the flags word: the code calls `event_sc`.
const FLAG_EVENT_SC: u32 = 1;
/// Upper bounds that keep a malformed header from asking for absurd allocations.
const MAX_SECTION: usize = 64 << 20;
const MAX_GLOBAL_SLOTS: u32 = 1 << 20;

/// The instruction set a code object was compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture of this process.
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    fn code(self) -> u32 {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 2,
        }
    }

    fn from_code(c: u32) -> Option<Arch> {
        match c {
            1 => Some(Arch::X86_64),
            2 => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

/// One compiled function inside [`CodeObject::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Byte offset of the entry point in the code.
    pub offset: u32,
    pub size: u32,
    pub params: u32,
    /// Local slots of the function's frame, parameters included.
    pub locals: u32,
}

/// A string literal in the rodata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringInfo {
    /// Offset of the record (u32 length, then the data) in the rodata.
    pub offset: u32,
    pub wide: bool,
}

/// A compiled script: position-independent machine code plus its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeObject {
    pub arch: Arch,
    /// Machine code of every function; function 0 is the script's body.
    pub code: Vec<u8>,
    pub functions: Vec<FunctionInfo>,
    pub rodata: Vec<u8>,
    pub strings: Vec<StringInfo>,
    /// One past the highest global slot the code touches.
    pub global_slots: u32,
    /// The built-ins the code calls (sorted ids).
    pub builtins: Vec<u16>,
    /// Error-site id -> source byte range; site 0 is the script body's.
    pub sites: Vec<SourceRange>,
    /// What the code reads, writes and calls, for vetting without the source.
    pub usage: Usage,
}

/// Why bytes are not a valid code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed code object: {}", self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(msg.into()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = match self.pos.checked_add(n) {
            Some(e) if e <= self.bytes.len() => e,
            _ => return bad(format!("truncated in {what}")),
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u128(&mut self, what: &str) -> Result<u128, FormatError> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16, what)?);
        Ok(u128::from_le_bytes(b))
    }
    /// A count of items of `item_size` bytes each, checked against what is left.
    fn count(&mut self, item_size: usize, what: &str) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        let left = self.bytes.len() - self.pos;
        if n > MAX_SECTION || n.saturating_mul(item_size) > left {
            return bad(format!("{what}: count {n} exceeds the data"));
        }
        Ok(n)
    }
}

impl CodeObject {
    /// The code object's bytes (see the module documentation for the format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.code.len() + self.rodata.len());
        let u32s = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(MAGIC);
        u32s(&mut out, VERSION);
        u32s(&mut out, self.arch.code());
        u32s(&mut out, self.global_slots);
        u32s(&mut out, self.functions.len() as u32);
        for f in &self.functions {
            for v in [f.offset, f.size, f.params, f.locals] {
                u32s(&mut out, v);
            }
        }
        u32s(&mut out, self.code.len() as u32);
        out.extend_from_slice(&self.code);
        u32s(&mut out, self.rodata.len() as u32);
        out.extend_from_slice(&self.rodata);
        u32s(&mut out, self.strings.len() as u32);
        for s in &self.strings {
            u32s(&mut out, s.offset);
            out.push(s.wide as u8);
        }
        u32s(&mut out, self.builtins.len() as u32);
        for b in &self.builtins {
            out.extend_from_slice(&b.to_le_bytes());
        }
        u32s(&mut out, self.sites.len() as u32);
        for s in &self.sites {
            u32s(&mut out, s.start);
            u32s(&mut out, s.end);
        }
        let flags = if self.usage.calls_event_sc {
            FLAG_EVENT_SC
        } else {
            0
        };
        u32s(&mut out, flags);
        out.extend_from_slice(&self.usage.regs_read.to_le_bytes());
        out.extend_from_slice(&self.usage.regs_written.to_le_bytes());
        u32s(&mut out, self.usage.pseudo_read);
        let h = fnv1a(&out);
        out.extend_from_slice(&h.to_le_bytes());
        out
    }

    /// Parses and validates bytes made by [`CodeObject::to_bytes`]. Malformed input is an
    /// error, never a panic. (Validation covers the container; the machine code itself is
    /// trusted as far as its producer is.)
    pub fn from_bytes(bytes: &[u8]) -> Result<CodeObject, FormatError> {
        if bytes.len() < MAGIC.len() + 8 + 8 {
            return bad("too short");
        }
        if &bytes[..8] != MAGIC {
            return bad("not a code object (bad magic)");
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let mut t = [0u8; 8];
        t.copy_from_slice(tail);
        let mut r = Reader {
            bytes: body,
            pos: 8,
        };
        // The version is checked before the hash: an object of another version may hash
        // differently, and "wrong version" is the error that says what to do.
        let version = r.u32("version")?;
        if version != VERSION {
            return bad(format!(
                "format version {version}, this runtime reads version {VERSION} only \
                 (recompile the script with a matching compiler)"
            ));
        }
        if fnv1a(body) != u64::from_le_bytes(t) {
            return bad("checksum mismatch");
        }
        let arch = match Arch::from_code(r.u32("arch")?) {
            Some(a) => a,
            None => return bad("unknown architecture"),
        };
        let global_slots = r.u32("global slots")?;
        let nfunc = r.count(16, "functions")?;
        let mut functions = Vec::with_capacity(nfunc);
        for _ in 0..nfunc {
            functions.push(FunctionInfo {
                offset: r.u32("function")?,
                size: r.u32("function")?,
                params: r.u32("function")?,
                locals: r.u32("function")?,
            });
        }
        let ncode = r.count(1, "code")?;
        let code = r.take(ncode, "code")?.to_vec();
        let nrodata = r.count(1, "rodata")?;
        let rodata = r.take(nrodata, "rodata")?.to_vec();
        let nstrings = r.count(5, "strings")?;
        let mut strings = Vec::with_capacity(nstrings);
        for _ in 0..nstrings {
            let offset = r.u32("string")?;
            let wide = match r.u8("string")? {
                0 => false,
                1 => true,
                _ => return bad("string kind is neither narrow nor wide"),
            };
            strings.push(StringInfo { offset, wide });
        }
        let nbuiltin = r.count(2, "builtins")?;
        let mut builtins = Vec::with_capacity(nbuiltin);
        for _ in 0..nbuiltin {
            builtins.push(r.u16("builtin")?);
        }
        let nsites = r.count(8, "sites")?;
        let mut sites = Vec::with_capacity(nsites);
        for _ in 0..nsites {
            let start = r.u32("site")?;
            let end = r.u32("site")?;
            sites.push(SourceRange { start, end });
        }
        let flags = r.u32("flags")?;
        if flags & !FLAG_EVENT_SC != 0 {
            return bad(format!("unknown flags {flags:#x}"));
        }
        let usage = Usage {
            calls_event_sc: flags & FLAG_EVENT_SC != 0,
            regs_read: r.u128("registers read")?,
            regs_written: r.u128("registers written")?,
            pseudo_read: r.u32("pseudo-registers read")?,
        };
        if r.pos != body.len() {
            return bad("trailing bytes");
        }
        let object = CodeObject {
            arch,
            code,
            functions,
            rodata,
            strings,
            global_slots,
            builtins,
            sites,
            usage,
        };
        object.validate()?;
        Ok(object)
    }

    /// Checks the object's internal consistency.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.functions.is_empty() {
            return bad("no functions");
        }
        if self.sites.is_empty() {
            return bad("no error sites (site 0 is the body's span)");
        }
        if self.global_slots > MAX_GLOBAL_SLOTS {
            return bad("too many global slots");
        }
        for (i, f) in self.functions.iter().enumerate() {
            let end = f.offset as u64 + f.size as u64;
            if f.size == 0 || end > self.code.len() as u64 {
                return bad(format!("function {i} lies outside the code"));
            }
            if f.params > f.locals {
                return bad(format!("function {i} has more parameters than locals"));
            }
        }
        for (i, s) in self.strings.iter().enumerate() {
            if string_record(&self.rodata, s.offset as u64, s.wide).is_none() {
                return bad(format!("string {i} lies outside the rodata"));
            }
        }
        for &b in &self.builtins {
            if Builtin::from_id(b).is_none() {
                return bad(format!("unknown built-in id {b}"));
            }
        }
        for s in &self.sites {
            if s.start > s.end {
                return bad("a site's source range ends before it starts");
            }
        }
        if !self.usage.is_valid() {
            return bad("the usage sets name registers that do not exist");
        }
        let calls_sc = self.builtins.contains(&Builtin::EventSc.id());
        if self.usage.calls_event_sc != calls_sc {
            return bad("the event_sc flag disagrees with the built-ins the code calls");
        }
        Ok(())
    }

    /// What the code reads, writes and calls (see [`Usage`]).
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Whether the script can short-circuit its event (calls `event_sc`).
    pub fn calls_event_sc(&self) -> bool {
        self.usage.calls_event_sc
    }

    /// Local slots of the script body's frame.
    pub fn main_locals(&self) -> u32 {
        self.functions.first().map_or(0, |f| f.locals)
    }
}
