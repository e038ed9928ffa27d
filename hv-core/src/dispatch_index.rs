//! Finding the events an exit can match without looking at the others: per event kind,
//! the enabled events keyed by their exact filter value (MSR, port, address, syscall
//! number, vector) in a hash table, `!monitor` ranges in an interval index, and the rest
//! (no filter, `!mode`, `!crwrite`) in a short list. An exit costs the same whether 1 or
//! 10 000 events that do not match it are installed. Built once per published table
//! (tables are immutable), so exits only read it.

use alloc::vec;
use alloc::vec::Vec;

use crate::event::{Event, Filter};

/// Indices into the table's entries of the enabled events of one kind.
#[derive(Clone, Default)]
pub(crate) struct KindIndex {
    /// Events every exit of the kind must look at (no key to index them by).
    other: Vec<usize>,
    exact: ExactMap,
    ranges: IntervalIndex,
}

impl KindIndex {
    /// `events`: (entry index, event) of the kind's enabled events.
    pub(crate) fn build<'a>(events: impl Iterator<Item = (usize, &'a Event)>) -> KindIndex {
        let mut other = Vec::new();
        let mut exact = Vec::new();
        let mut ranges = Vec::new();
        for (i, e) in events {
            match e.spec.filter {
                Filter::Value(v) | Filter::Address(v) => exact.push((v, i)),
                Filter::Range { from, to, .. } => ranges.push((from, to, i)),
                _ => other.push(i),
            }
        }
        KindIndex {
            other,
            exact: ExactMap::build(exact),
            ranges: IntervalIndex::build(ranges),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.other.is_empty() && self.exact.is_empty() && self.ranges.is_empty()
    }

    /// Every entry index that can match `context`, in no particular order.
    pub(crate) fn lookup(&self, context: u64, out: &mut Indices) {
        for &i in &self.other {
            out.push(i);
        }
        self.exact.get(context, out);
        self.ranges.stab(context, out);
    }
}

/// A few entry indices, inline up to 8 (an exit rarely matches more).
pub(crate) struct Indices {
    inline: [usize; 8],
    len: usize,
    spill: Vec<usize>,
}

impl Indices {
    pub(crate) fn new() -> Indices {
        Indices {
            inline: [0; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, i: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = i;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(i);
        }
    }

    /// The indices, newest event first (entries are in id order).
    pub(crate) fn newest_first(&mut self) -> &[usize] {
        let s: &mut [usize] = if self.spill.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        };
        s.sort_unstable_by(|a, b| b.cmp(a));
        s
    }
}

/// An immutable open-addressing hash table from a key to its entry indices.
#[derive(Clone, Default)]
struct ExactMap {
    /// `slots[h]`: a key and the range of `values` holding its indices; `u32::MAX` = empty.
    slots: Vec<(u64, u32, u32)>,
    values: Vec<usize>,
    mask: usize,
}

fn hash(key: u64) -> usize {
    // Fibonacci hashing: keys are often consecutive (ports, MSRs, addresses).
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

impl ExactMap {
    fn build(mut pairs: Vec<(u64, usize)>) -> ExactMap {
        if pairs.is_empty() {
            return ExactMap::default();
        }
        pairs.sort_unstable();
        let size = (pairs.len() * 2).next_power_of_two();
        let mask = size - 1;
        let mut slots = vec![(0u64, u32::MAX, 0u32); size];
        let values: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        let mut start = 0;
        while start < pairs.len() {
            let key = pairs[start].0;
            let mut end = start;
            while end < pairs.len() && pairs[end].0 == key {
                end += 1;
            }
            let mut h = hash(key) & mask;
            while slots[h].1 != u32::MAX {
                h = (h + 1) & mask;
            }
            slots[h] = (key, start as u32, end as u32);
            start = end;
        }
        ExactMap {
            slots,
            values,
            mask,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn get(&self, key: u64, out: &mut Indices) {
        if self.slots.is_empty() {
            return;
        }
        let mut h = hash(key) & self.mask;
        loop {
            let (k, start, end) = self.slots[h];
            if start == u32::MAX {
                return;
            }
            if k == key {
                for &i in &self.values[start as usize..end as usize] {
                    out.push(i);
                }
                return;
            }
            h = (h + 1) & self.mask;
        }
    }
}

/// Inclusive ranges sorted by start, with a segment tree of the largest end over them: a
/// point query visits only subtrees that can hold a range containing the point.
#[derive(Clone, Default)]
struct IntervalIndex {
    /// (from, to, entry index), sorted by `from`.
    ranges: Vec<(u64, u64, usize)>,
    /// The `from`s alone, for a binary search that touches few cache lines.
    starts: Vec<u64>,
    /// `max_to[node]` over the ranges of the node (node 1 is the root, children 2n, 2n+1).
    max_to: Vec<u64>,
    /// No two ranges overlap (the usual case): a point is in at most the last range that
    /// starts at or before it, found by one binary search.
    disjoint: bool,
}

impl IntervalIndex {
    fn build(mut ranges: Vec<(u64, u64, usize)>) -> IntervalIndex {
        ranges.sort_unstable();
        let disjoint = ranges.windows(2).all(|w| w[0].1 < w[1].0);
        let mut max_to = Vec::new();
        if !disjoint {
            max_to = vec![0u64; 4 * ranges.len()];
            Self::fill(&ranges, &mut max_to, 1, 0, ranges.len());
        }
        IntervalIndex {
            starts: ranges.iter().map(|r| r.0).collect(),
            ranges,
            max_to,
            disjoint,
        }
    }

    fn fill(r: &[(u64, u64, usize)], t: &mut [u64], node: usize, lo: usize, hi: usize) -> u64 {
        let m = if hi - lo == 1 {
            r[lo].1
        } else {
            let mid = (lo + hi) / 2;
            Self::fill(r, t, 2 * node, lo, mid).max(Self::fill(r, t, 2 * node + 1, mid, hi))
        };
        t[node] = m;
        m
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn stab(&self, x: u64, out: &mut Indices) {
        // Only ranges starting at or before x can contain it: a prefix of the sorted list.
        let n = self.starts.partition_point(|&from| from <= x);
        if n == 0 {
            return;
        }
        if self.disjoint {
            let (_, to, i) = self.ranges[n - 1];
            if x <= to {
                out.push(i);
            }
            return;
        }
        self.visit(x, 1, 0, self.ranges.len(), n, out);
    }

    fn visit(&self, x: u64, node: usize, lo: usize, hi: usize, n: usize, out: &mut Indices) {
        if lo >= n || self.max_to[node] < x {
            return;
        }
        if hi - lo == 1 {
            out.push(self.ranges[lo].2);
            return;
        }
        let mid = (lo + hi) / 2;
        self.visit(x, 2 * node, lo, mid, n, out);
        self.visit(x, 2 * node + 1, mid, hi, n, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(f: impl Fn(&mut Indices)) -> Vec<usize> {
        let mut out = Indices::new();
        f(&mut out);
        let mut v = out.newest_first().to_vec();
        v.reverse();
        v
    }

    #[test]
    fn exact_keys_with_duplicates_and_misses() {
        let m = ExactMap::build(
            (0..1000)
                .map(|i| (0x4000_1000 + (i % 500), i as usize))
                .collect(),
        );
        assert_eq!(found(|o| m.get(0x4000_1000 + 7, o)), [7, 507]);
        assert!(found(|o| m.get(0x4000_1000 + 500, o)).is_empty());
        assert!(found(|o| ExactMap::default().get(1, o)).is_empty());
    }

    #[test]
    fn ranges_containing_a_point_and_nothing_else() {
        let ranges: Vec<(u64, u64, usize)> = vec![
            (0x1000, 0x1fff, 0),
            (0x1800, 0x1807, 1),
            (0x3000, 0x3fff, 2),
            (0x0, 0xffff_ffff, 3),
            (0x1fff, 0x1fff, 4),
        ];
        let idx = IntervalIndex::build(ranges.clone());
        assert!(!idx.disjoint);
        let apart = IntervalIndex::build(vec![(0x3000, 0x3fff, 2), (0x1000, 0x1fff, 0)]);
        assert!(apart.disjoint);
        assert_eq!(found(|o| apart.stab(0x1fff, o)), [0]);
        assert!(found(|o| apart.stab(0x2000, o)).is_empty());
        assert!(found(|o| apart.stab(0xfff, o)).is_empty());
        for x in [
            0u64,
            0x1000,
            0x1804,
            0x1fff,
            0x2000,
            0x3000,
            0x4000,
            0x1_0000_0000,
        ] {
            let mut want: Vec<usize> = ranges
                .iter()
                .filter(|r| r.0 <= x && x <= r.1)
                .map(|r| r.2)
                .collect();
            want.sort();
            let mut got = found(|o| idx.stab(x, o));
            got.sort();
            assert_eq!(got, want, "{x:#x}");
        }
    }

    #[test]
    fn many_indices_spill_and_come_out_newest_first() {
        let mut out = Indices::new();
        for i in [3, 9, 1, 12, 5, 7, 2, 8, 11, 4] {
            out.push(i);
        }
        assert_eq!(out.newest_first(), [12, 11, 9, 8, 7, 5, 4, 3, 2, 1]);
    }
}
