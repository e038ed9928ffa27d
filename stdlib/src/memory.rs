//! Guest memory built-ins: the readers (`poi db dw dd dq hi low` and their `_pa` forms), the
//! writers (`eb ed eq`, `_pa`), `check_address`, `memcpy`/`memcpy_pa` and address translation.
//!
//! Readers stop the script on an invalid address (HyperDbg's kernel evaluator does); writers
//! return 0 instead, so a script can test the result.

use hvscript_abi::Builtin;

use crate::env::{Env, MemFault};
use crate::error::{Access, ScriptError, Space};

/// The largest `memcpy` HyperDbg accepts (its count is a `UINT32`).
pub const MAX_MEMCPY: u64 = 0xffff_ffff;

/// Bytes copied per step of `memcpy`: bounded stack use, few `Env` calls.
const COPY_CHUNK: usize = 256;

/// The page size used to walk ranges page by page.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// Reads from `space`, refusing ranges that wrap around the top of the address space (no
/// environment should have to think about that).
pub(crate) fn raw_read(
    env: &mut dyn Env,
    space: Space,
    addr: u64,
    buf: &mut [u8],
) -> Result<(), MemFault> {
    if buf.is_empty() {
        return Ok(());
    }
    if addr.checked_add(buf.len() as u64 - 1).is_none() {
        return Err(MemFault::Invalid);
    }
    match space {
        Space::Virtual => env.read(addr, buf),
        Space::Physical => env.read_phys(addr, buf),
    }
}

/// Writes to `space`; see [`raw_read`].
pub(crate) fn raw_write(
    env: &mut dyn Env,
    space: Space,
    addr: u64,
    data: &[u8],
) -> Result<(), MemFault> {
    if data.is_empty() {
        return Ok(());
    }
    if addr.checked_add(data.len() as u64 - 1).is_none() {
        return Err(MemFault::Invalid);
    }
    match space {
        Space::Virtual => env.write(addr, data),
        Space::Physical => env.write_phys(addr, data),
    }
}

/// Turns a memory fault into the script error of built-in `b`.
pub(crate) fn fault(
    b: Builtin,
    space: Space,
    access: Access,
    addr: u64,
    len: u64,
    f: MemFault,
) -> ScriptError {
    match f {
        MemFault::Invalid => ScriptError::InvalidAddress {
            builtin: b,
            space,
            access,
            addr,
            len,
        },
        MemFault::Unavailable(u) => ScriptError::Unavailable {
            builtin: b,
            reason: u.0,
        },
    }
}

/// Reads `size` (1, 2, 4 or 8) little-endian bytes, zero-extended.
pub(crate) fn read_uint(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    addr: u64,
    size: usize,
) -> Result<u64, ScriptError> {
    let mut buf = [0u8; 8];
    let size = size.min(8);
    raw_read(env, space, addr, &mut buf[..size])
        .map_err(|f| fault(b, space, Access::Read, addr, size as u64, f))?;
    Ok(u64::from_le_bytes(buf))
}

/// `hi`: bits 16..31 of the qword (HyperDbg's `HIWORD` of the 8 bytes read).
pub(crate) fn hi(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    addr: u64,
) -> Result<u64, ScriptError> {
    Ok((read_uint(env, b, space, addr, 8)? >> 16) & 0xffff)
}

/// `low`: bits 0..15 of the qword.
pub(crate) fn low(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    addr: u64,
) -> Result<u64, ScriptError> {
    Ok(read_uint(env, b, space, addr, 8)? & 0xffff)
}

/// `eb ed eq` and `_pa`: 1 on success, 0 on an invalid address (no error, as HyperDbg).
/// A context without that memory at all also yields 0, with a warning so it is not silent.
pub(crate) fn write_uint(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    addr: u64,
    size: usize,
    value: u64,
) -> u64 {
    let bytes = value.to_le_bytes();
    match raw_write(env, space, addr, &bytes[..size.min(8)]) {
        Ok(()) => 1,
        Err(MemFault::Invalid) => 0,
        Err(MemFault::Unavailable(u)) => {
            crate::warn_unavailable(env, b, u.0);
            0
        }
    }
}

/// `check_address`: 1 if one byte at `addr` is readable.
pub(crate) fn check_address(env: &mut dyn Env, addr: u64) -> Result<u64, ScriptError> {
    let mut byte = [0u8; 1];
    match raw_read(env, Space::Virtual, addr, &mut byte) {
        Ok(()) => Ok(1),
        Err(MemFault::Invalid) => Ok(0),
        Err(MemFault::Unavailable(u)) => Err(ScriptError::Unavailable {
            builtin: Builtin::CheckAddress,
            reason: u.0,
        }),
    }
}

/// Checks that every page of `[addr, addr + len)` has a readable byte, so that `memcpy`
/// fails before it has written anything in the common case (HyperDbg validates both ranges
/// first, too). One read per page: at most 2^20 + 1 for the largest count.
fn probe_range(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    access: Access,
    addr: u64,
    len: u64,
) -> Result<(), ScriptError> {
    let err = |f| fault(b, space, access, addr, len, f);
    let last = addr
        .checked_add(len - 1)
        .ok_or_else(|| err(MemFault::Invalid))?;
    let mut byte = [0u8; 1];
    let mut at = addr;
    loop {
        raw_read(env, space, at, &mut byte).map_err(err)?;
        let next_page = (at / PAGE_SIZE + 1).checked_mul(PAGE_SIZE);
        match next_page {
            Some(p) if p <= last => at = p,
            _ => break,
        }
    }
    if last != at {
        raw_read(env, space, last, &mut byte).map_err(err)?;
    }
    Ok(())
}

/// `memcpy(dst, src, n)` / `memcpy_pa`: copies in bounded chunks, with `memmove` semantics
/// for overlapping ranges (HyperDbg only gets that right inside the script stack).
pub(crate) fn memcpy(
    env: &mut dyn Env,
    b: Builtin,
    space: Space,
    dst: u64,
    src: u64,
    n: u64,
) -> Result<(), ScriptError> {
    if n == 0 {
        return Err(ScriptError::InvalidArgument {
            builtin: b,
            value: n,
            reason: "the count is 0",
        });
    }
    if n > MAX_MEMCPY {
        return Err(ScriptError::InvalidArgument {
            builtin: b,
            value: n,
            reason: "the count is larger than 0xffffffff",
        });
    }
    probe_range(env, b, space, Access::Read, src, n)?;
    // Only readability can be probed without side effects; a read-only destination is
    // still caught by the first failing write below.
    probe_range(env, b, space, Access::Write, dst, n)?;

    let backwards = dst > src && dst - src < n;
    let mut buf = [0u8; COPY_CHUNK];
    let mut done: u64 = 0;
    while done < n {
        let step = (n - done).min(COPY_CHUNK as u64);
        let off = if backwards { n - done - step } else { done };
        let chunk = &mut buf[..step as usize];
        raw_read(env, space, src + off, chunk)
            .map_err(|f| fault(b, space, Access::Read, src + off, step, f))?;
        raw_write(env, space, dst + off, chunk)
            .map_err(|f| fault(b, space, Access::Write, dst + off, step, f))?;
        done += step;
    }
    Ok(())
}

/// `virtual_to_physical` / `physical_to_virtual`: 0 when not mapped.
pub(crate) fn translate(env: &mut dyn Env, b: Builtin, addr: u64) -> Result<u64, ScriptError> {
    let r = if b == Builtin::VirtualToPhysical {
        env.virt_to_phys(addr)
    } else {
        env.phys_to_virt(addr)
    };
    match r {
        Ok(v) => Ok(v.unwrap_or(0)),
        Err(u) => Err(ScriptError::Unavailable {
            builtin: b,
            reason: u.0,
        }),
    }
}
