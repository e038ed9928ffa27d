//! String built-ins (`strlen wcslen strcmp strncmp wcscmp wcsncmp memcmp`) and the bounded
//! string reader that `printf`'s `%s`/`%ws` share with them.
//!
//! Each string argument is either a literal (already in hand) or an address whose units are
//! read through the [`Env`]. Every read stops after [`MAX_STRING_UNITS`] units so that a
//! missing NUL cannot keep a core busy; reaching the bound is reported as a warning.
//! Comparisons return MSVC's -1/0/1, sign-extended to 64 bits.

use core::cmp::Ordering;

use hvscript_abi::Builtin;

use crate::env::{Env, MemFault};
use crate::error::{Access, ScriptError, Space};
use crate::memory::{fault, raw_read, MAX_MEMCPY, PAGE_SIZE};
use crate::Arg;

/// The most units (bytes, or UTF-16 units) read from one string in memory.
pub const MAX_STRING_UNITS: usize = 0x10000;

/// Bytes fetched per `Env` read while walking a string.
const STR_CHUNK: usize = 64;

/// Reads a string from memory one unit at a time through a small buffer, never crossing a
/// page boundary in one `Env` read (so a string that ends just before an unmapped page is
/// read correctly).
pub(crate) struct MemStr {
    space: Space,
    /// Address of the next byte to fetch into `buf`.
    next: u64,
    wide: bool,
    buf: [u8; STR_CHUNK],
    pos: usize,
    len: usize,
}

impl MemStr {
    pub(crate) fn new(space: Space, addr: u64, wide: bool) -> Self {
        MemStr {
            space,
            next: addr,
            wide,
            buf: [0; STR_CHUNK],
            pos: 0,
            len: 0,
        }
    }

    fn unit_size(&self) -> usize {
        if self.wide {
            2
        } else {
            1
        }
    }

    /// The next unit, or the address that could not be read.
    pub(crate) fn next_unit(&mut self, env: &mut dyn Env) -> Result<u16, (u64, MemFault)> {
        let unit = self.unit_size();
        if self.pos + unit > self.len {
            self.refill(env)?;
        }
        let v = if self.wide {
            u16::from_le_bytes([self.buf[self.pos], self.buf[self.pos + 1]])
        } else {
            u16::from(self.buf[self.pos])
        };
        self.pos += unit;
        Ok(v)
    }

    fn refill(&mut self, env: &mut dyn Env) -> Result<(), (u64, MemFault)> {
        let unit = self.unit_size();
        let to_page_end = PAGE_SIZE - self.next % PAGE_SIZE;
        let mut want = (to_page_end.min(STR_CHUNK as u64) as usize) / unit * unit;
        if want == 0 {
            // A wide unit straddling a page boundary.
            want = unit;
        }
        let at = self.next;
        let first = raw_read(env, self.space, at, &mut self.buf[..want]);
        if let Err(f) = first {
            // The chunk may reach past the end of the readable memory while the string
            // ends before it: fall back to one unit.
            if want == unit || matches!(f, MemFault::Unavailable(_)) {
                return Err((at, f));
            }
            want = unit;
            raw_read(env, self.space, at, &mut self.buf[..want]).map_err(|f| (at, f))?;
        }
        self.pos = 0;
        self.len = want;
        self.next = at.wrapping_add(want as u64);
        Ok(())
    }
}

/// A string argument: a literal, or an address to read from.
pub(crate) enum StrSrc<'a> {
    Narrow(&'a [u8], usize),
    Wide(&'a [u16], usize),
    Mem(MemStr),
}

impl<'a> StrSrc<'a> {
    /// The source for argument `arg` of a built-in taking narrow (`wide == false`) or wide
    /// strings; the caller has already checked the argument's kind.
    pub(crate) fn from_arg(arg: &Arg<'a>, wide: bool) -> Self {
        match *arg {
            Arg::Str(s) => StrSrc::Narrow(s, 0),
            Arg::WStr(w) => StrSrc::Wide(w, 0),
            Arg::Val(addr) => StrSrc::Mem(MemStr::new(Space::Virtual, addr, wide)),
        }
    }

    /// The next unit; a literal yields 0 (its implicit NUL) once exhausted.
    fn next_unit(&mut self, env: &mut dyn Env) -> Result<u16, (u64, MemFault)> {
        match self {
            StrSrc::Narrow(s, i) => {
                let v = s.get(*i).copied().map_or(0, u16::from);
                *i = i.saturating_add(1);
                Ok(v)
            }
            StrSrc::Wide(w, i) => {
                let v = w.get(*i).copied().unwrap_or(0);
                *i = i.saturating_add(1);
                Ok(v)
            }
            StrSrc::Mem(m) => m.next_unit(env),
        }
    }

    /// The bytes a literal owns including its terminating NUL, or `None` for memory.
    fn literal_len(&self) -> Option<u64> {
        match self {
            StrSrc::Narrow(s, _) => Some(s.len() as u64 + 1),
            StrSrc::Wide(w, _) => Some(w.len() as u64 + 1),
            StrSrc::Mem(_) => None,
        }
    }

    fn is_wide(&self) -> bool {
        match self {
            StrSrc::Narrow(..) => false,
            StrSrc::Wide(..) => true,
            StrSrc::Mem(m) => m.wide,
        }
    }
}

fn unit_fault(b: Builtin, wide: bool, (addr, f): (u64, MemFault)) -> ScriptError {
    fault(
        b,
        Space::Virtual,
        Access::Read,
        addr,
        if wide { 2 } else { 1 },
        f,
    )
}

fn sign(o: Ordering) -> u64 {
    match o {
        Ordering::Less => u64::MAX,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

fn warn_bound(env: &mut dyn Env, b: Builtin) {
    let msg = alloc::format!(
        "{}: no NUL within {MAX_STRING_UNITS:#x} units; the string was cut there",
        b.name()
    );
    env.warn(&msg);
}

/// `strlen` / `wcslen`. An address that cannot be read (at the start or before the NUL)
/// gives 0, as HyperDbg's VMX-root `strlen` and its documentation say.
pub(crate) fn strlen(
    env: &mut dyn Env,
    b: Builtin,
    arg: &Arg<'_>,
    wide: bool,
) -> Result<u64, ScriptError> {
    let mut src = StrSrc::from_arg(arg, wide);
    for n in 0..MAX_STRING_UNITS {
        match src.next_unit(env) {
            Ok(0) => return Ok(n as u64),
            Ok(_) => {}
            Err((_, MemFault::Invalid)) => return Ok(0),
            Err((_, MemFault::Unavailable(u))) => {
                return Err(ScriptError::Unavailable {
                    builtin: b,
                    reason: u.0,
                })
            }
        }
    }
    warn_bound(env, b);
    Ok(MAX_STRING_UNITS as u64)
}

/// `strcmp`, `strncmp` (`limit = Some(n)`), `wcscmp`, `wcsncmp`. Units compare unsigned, as
/// MSVC's CRT does. An unreadable address is an error.
pub(crate) fn strcmp(
    env: &mut dyn Env,
    b: Builtin,
    a: &Arg<'_>,
    c: &Arg<'_>,
    wide: bool,
    limit: Option<u64>,
) -> Result<u64, ScriptError> {
    let mut x = StrSrc::from_arg(a, wide);
    let mut y = StrSrc::from_arg(c, wide);
    let n = limit.unwrap_or(u64::MAX);
    let steps = n.min(MAX_STRING_UNITS as u64);
    for _ in 0..steps {
        let u = x.next_unit(env).map_err(|e| unit_fault(b, wide, e))?;
        let v = y.next_unit(env).map_err(|e| unit_fault(b, wide, e))?;
        if u != v {
            return Ok(sign(u.cmp(&v)));
        }
        if u == 0 {
            return Ok(0);
        }
    }
    if n > steps {
        warn_bound(env, b);
    }
    Ok(0)
}

/// `memcmp(p1, p2, n)`: bytewise, unsigned. A literal may be compared up to and including
/// its NUL; a count running further is an error (C would read past the literal).
pub(crate) fn memcmp(
    env: &mut dyn Env,
    a: &Arg<'_>,
    c: &Arg<'_>,
    n: u64,
) -> Result<u64, ScriptError> {
    let b = Builtin::Memcmp;
    if n > MAX_MEMCPY {
        return Err(ScriptError::InvalidArgument {
            builtin: b,
            value: n,
            reason: "the count is larger than 0xffffffff",
        });
    }
    let mut x = StrSrc::from_arg(a, false);
    let mut y = StrSrc::from_arg(c, false);
    for s in [&x, &y] {
        if s.is_wide() {
            return Err(ScriptError::InvalidArgument {
                builtin: b,
                value: n,
                reason: "memcmp compares bytes; a wide string literal is not accepted",
            });
        }
        if matches!(s.literal_len(), Some(len) if n > len) {
            return Err(ScriptError::InvalidArgument {
                builtin: b,
                value: n,
                reason: "the count runs past the end of a string literal",
            });
        }
    }
    for _ in 0..n {
        let u = x.next_unit(env).map_err(|e| unit_fault(b, false, e))?;
        let v = y.next_unit(env).map_err(|e| unit_fault(b, false, e))?;
        if u != v {
            return Ok(sign(u.cmp(&v)));
        }
    }
    Ok(0)
}

/// Appends the string at `addr` to `out` for `printf`: narrow bytes as they are, UTF-16
/// units below 0x80 as ASCII and any other character (a surrogate pair counting as one) as
/// `?`. Reads at most `MAX_STRING_UNITS` units and stops once `out` reaches `cap` bytes;
/// returns whether the string was cut.
pub(crate) fn append_mem_string(
    env: &mut dyn Env,
    addr: u64,
    wide: bool,
    out: &mut alloc::vec::Vec<u8>,
    cap: usize,
) -> Result<bool, ScriptError> {
    let mut src = MemStr::new(Space::Virtual, addr, wide);
    let mut pending_lead = false;
    for _ in 0..MAX_STRING_UNITS {
        let u = src
            .next_unit(env)
            .map_err(|e| unit_fault(Builtin::Printf, wide, e))?;
        if u == 0 {
            return Ok(false);
        }
        if out.len() >= cap {
            return Ok(true);
        }
        if !wide {
            out.push(u as u8);
        } else if pending_lead && (0xdc00..=0xdfff).contains(&u) {
            // The trail of a surrogate pair already shown as one `?`.
            pending_lead = false;
        } else {
            pending_lead = (0xd800..=0xdbff).contains(&u);
            out.push(if u < 0x80 { u as u8 } else { b'?' });
        }
    }
    Ok(true)
}
