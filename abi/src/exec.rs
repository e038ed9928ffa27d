//! [`ExecCtx`]: the execution context compiled script code runs against.
//!
//! One `#[repr(C)]` definition shared by the JIT (which emits loads and stores at the
//! field offsets below), the host runtime (`hvscript_lang::native`) and the hypervisor core.
//! A compiled function has the type [`EntryFn`]; it reaches everything through the context
//! pointer, so the code carries no relocations and runs at any address:
//! - guest registers, pseudo-registers, global slots and the local stack are loads and
//!   stores at fixed offsets from the pointers here;
//! - built-ins are called through [`ExecCtx::builtins`], a table of [`BuiltinFn`] indexed
//!   by [`crate::Builtin::id`];
//! - calls between the script's own functions go through [`ExecCtx::functions`], the
//!   table of entry points the loader fills;
//! - string literals are records in the code object's read-only data at
//!   [`ExecCtx::rodata`];
//! - typed loads and stores reach the part of the local stack handed out this run inline
//!   and everything else (global slots, the rest of the stack, guest memory) through
//!   [`ExecCtx::memory`], a [`MemoryFn`];
//! - guest memory (typed accesses and the `poi db dw dd dq eb ed eq` built-ins) is first
//!   looked up inline in the translation cache at [`ExecCtx::tlb`] ([`TlbEntry`]): a hit is
//!   a plain host load or store, and only a miss calls the runtime, which fills the cache.
//!
//! Errors do not unwind the native stack: the failing code stores an [`ExecError`] kind,
//! the error-site id (an index into the code object's table of source spans) and a value
//! in the context and returns; every caller checks [`ExecCtx::error_kind`] after a call
//! and returns too.

use core::ffi::c_void;

use crate::{GuestRegs, PseudoValues};

/// A compiled script function: `extern "C" fn(*mut ExecCtx) -> u64`. Its arguments are
/// already in its frame of the local stack (see [`ExecCtx::sp`]).
pub type EntryFn = unsafe extern "C" fn(ctx: *mut ExecCtx) -> u64;

/// One entry of the built-in table: `(ctx, call-site record, argument values)`.
/// (One entry, [`PRINTF_VALUES`], takes its words in another form.)
///
/// `call` is the rodata offset of the call site's [`call_record`] (which built-in, the
/// error-site id, and a tag per argument); `args` points to one `u64` per argument: the
/// value, or for a string literal the rodata offset of its [`string_record`]. A call site
/// costs compiled code one constant and one store per argument. On failure the function
/// records the error in the context ([`ExecError::Builtin`] + the site) and returns 0;
/// compiled code checks [`ExecCtx::error_kind`] after every call.
pub type BuiltinFn = unsafe extern "C" fn(ctx: *mut ExecCtx, call: u64, args: *const u64) -> u64;

/// The built-in table's entry after the built-ins': `printf` whose format is a narrow
/// string literal and whose other arguments are all values, the printf of nearly every
/// event script, called without anything to decode. Its `call` is the call-site record's
/// offset (for errors and the general path) with the number of values in bits 32..64;
/// `args[0]` is the format, [`packed_bytes`] of its bytes in the rodata; the values follow.
pub const PRINTF_VALUES: usize = crate::Builtin::ALL.len();

/// The entries of the built-in table: one per built-in, then [`PRINTF_VALUES`].
pub const BUILTIN_TABLE_LEN: usize = PRINTF_VALUES + 1;

/// The `call` word of a [`PRINTF_VALUES`] call.
pub const fn printf_values_call(record: u32, values: u32) -> u64 {
    record as u64 | (values as u64) << 32
}

/// Bytes of the rodata as one word: `offset | len << 32`.
pub const fn packed_bytes(offset: u32, len: u32) -> u64 {
    offset as u64 | (len as u64) << 32
}

/// The bytes a [`packed_bytes`] word names, or `None` when they are not all in `rodata`.
#[inline]
pub fn unpack_bytes(rodata: &[u8], packed: u64) -> Option<&[u8]> {
    let offset = packed as u32 as usize;
    let len = (packed >> 32) as usize;
    rodata.get(offset..offset.checked_add(len)?)
}

/// The runtime's side of a typed load or store that compiled code does not serve inline:
/// `(ctx, access, addr, value)`.
///
/// `access` describes the access (see [`memory_access`]): bits 0..8 the width in bytes
/// (1, 2, 4 or 8), bit 8 set for a write, bits 32..64 the error-site id. A read returns
/// the `width` bytes at `addr` as a little-endian number, zero-extended (compiled code
/// normalises it to the loaded type); a write stores the low `width` bytes of `value`,
/// little-endian, and returns 0. On failure the function records the error in the
/// context ([`ExecError::Memory`], the site, the address in [`ExecCtx::error_value`],
/// whatever else the runtime needs in its own state) and returns 0; compiled code checks
/// [`ExecCtx::error_kind`] after every call. A write that lands in the local stack must
/// raise [`ExecCtx::stack_high`] over it, or the next run would not find it zeroed.
pub type MemoryFn =
    unsafe extern "C" fn(ctx: *mut ExecCtx, access: u64, addr: u64, value: u64) -> u64;

/// Bit of a [`MemoryFn`] access word set for a write.
pub const MEMORY_WRITE: u64 = 1 << 8;

/// The access word of a [`MemoryFn`] call: `site << 32 | write << 8 | width`.
pub const fn memory_access(site: u32, width: u8, write: bool) -> u64 {
    (site as u64) << 32 | if write { MEMORY_WRITE } else { 0 } | width as u64
}

/// A decoded [`MemoryFn`] access word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAccess {
    /// The error-site id reported when the access fails.
    pub site: u32,
    /// Bytes accessed: 1, 2, 4 or 8 in words compiled code passes.
    pub width: u8,
    pub write: bool,
}

impl MemoryAccess {
    pub const fn decode(access: u64) -> MemoryAccess {
        MemoryAccess {
            site: (access >> 32) as u32,
            width: access as u8,
            write: access & MEMORY_WRITE != 0,
        }
    }
}

/// Entries of the translation cache at [`ExecCtx::tlb`] (a power of two: compiled code
/// indexes it with `page & (TLB_ENTRIES - 1)`).
pub const TLB_ENTRIES: usize = 16;
/// log2 of the page size the translation cache maps.
pub const TLB_PAGE_SHIFT: u32 = 12;
/// The page size the translation cache maps.
pub const TLB_PAGE_SIZE: u64 = 1 << TLB_PAGE_SHIFT;
/// A tag no page number equals (page numbers are `addr >> 12`, below 2^52).
pub const TLB_NO_PAGE: u64 = u64::MAX;
/// log2 of `size_of::<TlbEntry>()`, for compiled code's indexing.
pub const TLB_ENTRY_SHIFT: u32 = 5;

/// One entry of the guest-memory translation cache compiled code checks inline.
///
/// Entry `i` only ever holds a page whose number (`addr >> TLB_PAGE_SHIFT`) is `i` modulo
/// [`TLB_ENTRIES`]. An access of `w` bytes at `addr` that lies inside one page hits when the
/// entry's tag is the page's number ([`TlbEntry::read_page`] for a read,
/// [`TlbEntry::write_page`] for a write); it then touches the host bytes at
/// `addr + delta` (wrapping) directly. The runtime guarantees those bytes are exactly the
/// guest memory the access would reach through the [`MemoryFn`] or a built-in, valid (and,
/// for `write_page`, writable) until compiled code next calls into the runtime; compiled
/// code re-reads the entry at every access, so a runtime call may change or clear it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The page number reads may use `delta` for, or [`TLB_NO_PAGE`].
    pub read_page: u64,
    /// The page number writes may use `delta` for, or [`TLB_NO_PAGE`] (a page can be
    /// readable directly and still have its writes go through the runtime).
    pub write_page: u64,
    /// Host address minus guest address for this page (wrapping).
    pub delta: u64,
    pub reserved: u64,
}

impl TlbEntry {
    /// An entry no access hits.
    pub const EMPTY: TlbEntry = TlbEntry {
        read_page: TLB_NO_PAGE,
        write_page: TLB_NO_PAGE,
        delta: 0,
        reserved: 0,
    };
}

/// A translation cache no access hits: what [`ExecCtx::empty`] points to, for runtimes
/// that keep none.
pub static EMPTY_TLB: [TlbEntry; TLB_ENTRIES] = [TlbEntry::EMPTY; TLB_ENTRIES];

/// Argument tag in a [`call_record`]: a 64-bit value.
pub const ARG_VALUE: u8 = 0;
/// Argument tag: a narrow string literal; the value is a rodata offset.
pub const ARG_NARROW_STR: u8 = 1;
/// Argument tag: a wide string literal; the value is a rodata offset.
pub const ARG_WIDE_STR: u8 = 2;

/// A built-in call site as [`call_record`] reads it from the rodata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRecord<'a> {
    /// [`crate::Builtin::id`] of the callee.
    pub builtin: u16,
    /// The error-site id reported when the call fails.
    pub site: u32,
    /// One `ARG_*` tag per argument.
    pub tags: &'a [u8],
}

/// The 8-byte head of a call-site record: `u32 site, u16 builtin, u16 nargs`; the
/// `nargs` tag bytes follow it.
pub fn call_record_head(site: u32, builtin: u16, nargs: u16) -> [u8; 8] {
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&site.to_le_bytes());
    head[4..6].copy_from_slice(&builtin.to_le_bytes());
    head[6..8].copy_from_slice(&nargs.to_le_bytes());
    head
}

/// Reads the call-site record at `offset` of a code object's rodata, or `None` when it
/// does not fit.
#[inline]
pub fn call_record(rodata: &[u8], offset: u64) -> Option<CallRecord<'_>> {
    let off = usize::try_from(offset).ok()?;
    let head = rodata.get(off..off.checked_add(8)?)?;
    let site = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let builtin = u16::from_le_bytes([head[4], head[5]]);
    let nargs = u16::from_le_bytes([head[6], head[7]]) as usize;
    let tags = rodata.get(off + 8..(off + 8).checked_add(nargs)?)?;
    Some(CallRecord {
        builtin,
        site,
        tags,
    })
}

/// Why compiled code stopped (stored in [`ExecCtx::error_kind`]; 0 = no error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ExecError {
    None = 0,
    /// A built-in failed; the runtime keeps the built-in's own error.
    Builtin = 1,
    DivisionByZero = 2,
    /// `MIN / -1` or `MIN % -1` of a signed 64-bit type.
    DivisionOverflow = 3,
    /// A shift count outside 0..=63; [`ExecCtx::error_value`] holds the count.
    ShiftCount = 4,
    FuelExhausted = 5,
    CallDepth = 6,
    StackExhausted = 7,
    /// `MIN / -1` or `MIN % -1` of a signed 32-bit type.
    DivisionOverflow32 = 8,
    /// A shift count outside 0..=31 in a 32-bit type; the value holds the count.
    ShiftCount32 = 9,
    /// A float result that is not finite.
    FloatRange = 10,
    /// A float that does not fit the integer type it is converted to; the value holds
    /// the target type's code (the IR's `ScalarTy` code).
    FloatConversion = 11,
    /// A typed load or store at an address that cannot be accessed; the value holds the
    /// address (the runtime's [`MemoryFn`] keeps the rest, e.g. why).
    Memory = 12,
}

impl ExecError {
    pub fn from_u32(v: u32) -> Option<ExecError> {
        Some(match v {
            0 => ExecError::None,
            1 => ExecError::Builtin,
            2 => ExecError::DivisionByZero,
            3 => ExecError::DivisionOverflow,
            4 => ExecError::ShiftCount,
            5 => ExecError::FuelExhausted,
            6 => ExecError::CallDepth,
            7 => ExecError::StackExhausted,
            8 => ExecError::DivisionOverflow32,
            9 => ExecError::ShiftCount32,
            10 => ExecError::FloatRange,
            11 => ExecError::FloatConversion,
            12 => ExecError::Memory,
            _ => return None,
        })
    }
}

/// The context of one run of compiled code.
///
/// Stack discipline: the local stack is `stack[0..stack_slots]` (64-bit slots). A function
/// with `L` locals whose frame starts at slot `fp` uses `stack[fp..fp + L]`. When it is
/// entered, [`ExecCtx::sp`] holds its `fp`; before calling function `g` it checks fuel,
/// depth and room, zeroes `g`'s frame at `fp + L`, stores the arguments there, sets
/// `sp = fp + L` and raises `depth` for the call.
#[repr(C)]
#[derive(Debug)]
pub struct ExecCtx {
    pub regs: *mut GuestRegs,
    pub pseudo: *const PseudoValues,
    /// The global slots (64-bit; atomics on the host side).
    pub globals: *mut u64,
    pub global_count: u64,
    /// The local stack.
    pub stack: *mut u64,
    pub stack_slots: u64,
    /// The frame base (slot index) of the function being entered.
    pub sp: u64,
    /// One past the highest slot compiled code has handed out this run (so the runtime
    /// knows how much to zero before the next run).
    pub stack_high: u64,
    /// The code object's read-only data (string literal records).
    pub rodata: *const u8,
    pub rodata_len: u64,
    /// Built-in table, indexed by built-in id.
    pub builtins: *const BuiltinFn,
    /// Entry points of the code object's functions, indexed by function id.
    pub functions: *const EntryFn,
    /// The runtime's own state (host environment, pending built-in error ...).
    pub host: *mut c_void,
    /// Loop iterations and calls still allowed.
    pub fuel_left: u64,
    pub depth: u32,
    pub depth_limit: u32,
    /// An [`ExecError`] as `u32`.
    pub error_kind: u32,
    /// Index into the code object's error-site table.
    pub error_site: u32,
    pub error_value: u64,
    /// Typed loads and stores outside `stack[..stack_high]`. `None` (as in
    /// [`ExecCtx::empty`]) means there is no other memory: compiled code stops such an
    /// access with [`ExecError::Memory`] itself, the address as the value.
    pub memory: Option<MemoryFn>,
    /// The guest-memory translation cache: [`TLB_ENTRIES`] [`TlbEntry`]s, never null
    /// ([`EMPTY_TLB`] when the runtime keeps none). Compiled code only reads it.
    pub tlb: *const TlbEntry,
}

impl ExecCtx {
    /// A context with every pointer null and every count zero.
    pub const fn empty() -> ExecCtx {
        ExecCtx {
            regs: core::ptr::null_mut(),
            pseudo: core::ptr::null(),
            globals: core::ptr::null_mut(),
            global_count: 0,
            stack: core::ptr::null_mut(),
            stack_slots: 0,
            sp: 0,
            stack_high: 0,
            rodata: core::ptr::null(),
            rodata_len: 0,
            builtins: core::ptr::null(),
            functions: core::ptr::null(),
            host: core::ptr::null_mut(),
            fuel_left: 0,
            depth: 0,
            depth_limit: 0,
            error_kind: 0,
            error_site: 0,
            error_value: 0,
            memory: None,
            tlb: EMPTY_TLB.as_ptr(),
        }
    }
}

/// Reads one string record of a code object's rodata at `offset`: a little-endian `u32`
/// length (bytes for narrow strings, UTF-16 units for wide ones) followed by the data.
/// Returns the data bytes, or `None` when the record does not fit.
#[inline]
pub fn string_record(rodata: &[u8], offset: u64, wide: bool) -> Option<&[u8]> {
    let off = usize::try_from(offset).ok()?;
    let head = rodata.get(off..off.checked_add(4)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let bytes = if wide { len.checked_mul(2)? } else { len };
    let start = off + 4;
    rodata.get(start..start.checked_add(bytes)?)
}
