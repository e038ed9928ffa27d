//! Printf formats by id: the [`FormatTable`] a recorder and its consumer share (a recorded
//! printf carries its format's id, not its text), the producer's lock-free
//! [`FormatCache`] from a format's address to its id, and the consumer's [`FormatsById`].
//!
//! Ids come from the format's bytes, not from where they are: the same text in two scripts,
//! or in a script loaded again, has one id, so the table grows with the distinct formats
//! ever printed (at most [`MAX_FORMATS`]; past that a recorder formats at event time
//! instead) and never has to forget one while records may still name it. The producer
//! finds an id by the address of the format it is handed (a code object's read-only data
//! or the interpreter's string table) and checks the bytes, since a new script may be
//! loaded where an old one was.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use hvscript_stdlib::{FormatError, ParsedFormat};

/// The most distinct formats a table holds.
pub const MAX_FORMATS: usize = 1 << 16;

#[derive(Default)]
struct Formats {
    by_id: Vec<Arc<ParsedFormat>>,
    ids: BTreeMap<Vec<u8>, u32>,
}

/// Every format recorded so far, by id (see the module documentation).
#[derive(Default)]
pub struct FormatTable {
    formats: spin::RwLock<Formats>,
}

impl FormatTable {
    pub fn new() -> FormatTable {
        FormatTable::default()
    }

    /// The id and parsed form of `fmt`, parsing and adding it the first time; `Ok(None)`
    /// when it is new and the table is full. A malformed format is not added.
    pub fn intern(&self, fmt: &[u8]) -> Result<Option<(u32, Arc<ParsedFormat>)>, FormatError> {
        if let Some(found) = self.find(fmt) {
            return Ok(Some(found));
        }
        let parsed = Arc::new(ParsedFormat::parse(fmt)?);
        let mut formats = self.formats.write();
        // Another producer may have added it between the two locks.
        if let Some(&id) = formats.ids.get(fmt) {
            return Ok(Some((id, formats.by_id[id as usize].clone())));
        }
        if formats.by_id.len() >= MAX_FORMATS {
            return Ok(None);
        }
        let id = formats.by_id.len() as u32;
        formats.by_id.push(parsed.clone());
        formats.ids.insert(fmt.to_vec(), id);
        Ok(Some((id, parsed)))
    }

    fn find(&self, fmt: &[u8]) -> Option<(u32, Arc<ParsedFormat>)> {
        let formats = self.formats.read();
        let &id = formats.ids.get(fmt)?;
        Some((id, formats.by_id[id as usize].clone()))
    }

    /// The format with this id.
    pub fn get(&self, id: u32) -> Option<Arc<ParsedFormat>> {
        self.formats.read().by_id.get(id as usize).cloned()
    }

    /// Distinct formats so far.
    pub fn len(&self) -> usize {
        self.formats.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const CACHE_SLOTS: usize = 64;

/// Formats up to this long are kept in their cache slot, so checking a hit reads no other
/// memory.
const INLINE_BYTES: usize = 64;

struct Slot {
    addr: usize,
    /// What the fast path needs, without reaching into `format`.
    hit: FormatHit,
    /// The format's bytes when they fit, zero-padded (`format.bytes()` otherwise).
    inline: [u8; INLINE_BYTES],
    format: Arc<ParsedFormat>,
}

/// What a recorder needs of a cached format to record a printf of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatHit {
    pub id: u32,
    /// Its conversions, which take one argument each.
    pub arg_count: usize,
    /// It has `%s`/`%ws`, whose strings are read at event time.
    pub has_strings: bool,
}

/// A producer's ids by format address: direct-mapped, checked against the bytes.
pub struct FormatCache {
    slots: [Option<Slot>; CACHE_SLOTS],
}

impl Default for FormatCache {
    fn default() -> Self {
        FormatCache {
            slots: [const { None }; CACHE_SLOTS],
        }
    }
}

impl FormatCache {
    fn index(fmt: &[u8]) -> usize {
        let addr = fmt.as_ptr() as usize;
        (addr ^ (addr >> 6) ^ (addr >> 12) ^ fmt.len()) % CACHE_SLOTS
    }

    #[inline]
    fn slot(&self, fmt: &[u8]) -> Option<&Slot> {
        let slot = self.slots[Self::index(fmt)].as_ref()?;
        let n = fmt.len();
        let cached = if n <= INLINE_BYTES {
            &slot.inline[..n]
        } else {
            slot.format.bytes()
        };
        (slot.addr == fmt.as_ptr() as usize && same_bytes(cached, fmt)).then_some(slot)
    }

    /// The id and facts of the format at `fmt`'s address, if cached with these bytes: a
    /// recorder's check on every printf.
    #[inline]
    pub fn hit(&self, fmt: &[u8]) -> Option<FormatHit> {
        self.slot(fmt).map(|s| s.hit)
    }

    /// The id and parsed form of the format at `fmt`'s address, if cached with these
    /// bytes.
    pub fn get(&self, fmt: &[u8]) -> Option<(u32, &ParsedFormat)> {
        self.slot(fmt).map(|s| (s.hit.id, &*s.format))
    }

    /// Remembers `fmt`'s id (replacing what its slot held), and returns what a hit on it
    /// gives.
    pub fn insert(&mut self, fmt: &[u8], id: u32, format: Arc<ParsedFormat>) -> FormatHit {
        let mut inline = [0; INLINE_BYTES];
        if fmt.len() <= INLINE_BYTES {
            inline[..fmt.len()].copy_from_slice(fmt);
        }
        let hit = FormatHit {
            id,
            arg_count: format.arg_count(),
            has_strings: format.has_strings(),
        };
        self.slots[Self::index(fmt)] = Some(Slot {
            addr: fmt.as_ptr() as usize,
            hit,
            inline,
            format,
        });
        hit
    }
}

/// `a == b`, by words: formats are short, and this is on every recorded printf.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        // By hand: `a == b` would call the library's `bcmp`.
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    // Whole words, then the last 8 bytes (overlapping the last word) for the tail.
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map_or(0, u64::from_ne_bytes);
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    wa.zip(wb).all(|(x, y)| word(x) == word(y)) && word(&a[n - 8..]) == word(&b[n - 8..])
}

/// A consumer's copy of the table's formats, refreshed when a record names one it has not
/// seen, so formatting a record takes no lock.
#[derive(Default)]
pub struct FormatsById {
    known: Vec<Arc<ParsedFormat>>,
}

impl FormatsById {
    /// The format with id `id`, from `table` if it is new to this consumer.
    pub fn get(&mut self, table: &FormatTable, id: u32) -> Option<&ParsedFormat> {
        let i = id as usize;
        if i >= self.known.len() {
            let formats = table.formats.read();
            let from = self.known.len();
            self.known.extend(formats.by_id[from..].iter().cloned());
        }
        self.known.get(i).map(|f| &**f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_distinct_text_wherever_it_lives() {
        let table = FormatTable::new();
        let a = b"x=%d\n".to_vec();
        let b = b"x=%d\n".to_vec();
        let (ia, _) = table.intern(&a).unwrap().unwrap();
        let (ib, _) = table.intern(&b).unwrap().unwrap();
        let (ic, c) = table.intern(b"%s").unwrap().unwrap();
        assert_eq!(ia, ib);
        assert_ne!(ia, ic);
        assert!(c.has_strings());
        assert!(table.intern(b"%q").is_err());
        assert_eq!(table.len(), 2);
        let mut by_id = FormatsById::default();
        assert_eq!(by_id.get(&table, ic).unwrap().bytes(), b"%s");
        assert!(by_id.get(&table, 7).is_none());
    }

    #[test]
    fn the_cache_checks_the_bytes_at_the_address() {
        let table = FormatTable::new();
        let mut cache = FormatCache::default();
        let mut text = b"v=%x\n".to_vec();
        assert!(cache.get(&text).is_none());
        let (id, f) = table.intern(&text).unwrap().unwrap();
        cache.insert(&text, id, f);
        assert_eq!(cache.get(&text).map(|(i, _)| i), Some(id));
        // Another script's format at the same address.
        text.copy_from_slice(b"w=%d\n");
        assert!(cache.get(&text).is_none());
        // The same bytes at another address are not what was cached.
        let elsewhere = b"w=%d\n".to_vec();
        assert!(cache.get(&elsewhere).is_none());
        // A format too long for its slot is checked against its parsed form.
        let long = [b"%d ".repeat(30), b"\n".to_vec()].concat();
        let (id, f) = table.intern(&long).unwrap().unwrap();
        cache.insert(&long, id, f);
        let hit = cache.hit(&long).unwrap();
        assert_eq!((hit.id, hit.arg_count, hit.has_strings), (id, 30, false));
        let mut changed = long.clone();
        cache.insert(&changed, id, table.intern(&long).unwrap().unwrap().1);
        changed[80] = b'x';
        assert!(cache.hit(&changed).is_none());
    }
}
