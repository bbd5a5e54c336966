// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Hierarchical free bitmap: finds the lowest free ID at or above a bound in
//! O(log64 n).
//!
//! Level 0 holds one bit per ID (set = free). Every level above holds one bit
//! per word of the level below, set while that word has any bit set. Levels
//! are added until one has a single word, so a 20-bit space has 16384, 256, 4
//! and 1 words (128 KiB + 2 KiB + 40 bytes). Invariant kept by every mutator:
//! a summary bit is set exactly when its child word is non-zero.

use std::fmt;
use std::ops::RangeInclusive;

/// Bits per bitmap word.
const WORD_BITS: usize = 64;

/// Free/used bitmap over the IDs `0..len`, with summary levels for fast
/// lowest-free searches.
#[derive(Clone)]
pub(super) struct FreeMap {
    /// `levels[0]` is the leaf level; the last level has exactly one word.
    levels: Vec<Vec<u64>>,
    /// Number of IDs covered (`0..len`).
    len: usize,
    /// Number of free IDs.
    free: usize,
}

impl fmt::Debug for FreeMap {
    // The leaf level is up to 16384 words; print only the shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeMap")
            .field("len", &self.len)
            .field("free", &self.free)
            .field("levels", &self.levels.len())
            .finish()
    }
}

/// Number of words needed for `bits` bits.
fn words_for(bits: usize) -> usize {
    bits.div_ceil(WORD_BITS)
}

/// Mask of bits `lo..=hi` inside one word (`lo <= hi < 64`).
fn span_mask(lo: usize, hi: usize) -> u64 {
    let upper = u64::MAX >> (WORD_BITS - 1 - hi);
    let lower = u64::MAX << lo;
    upper & lower
}

impl FreeMap {
    /// Creates a map over `0..len` with every ID in `used` marked used and
    /// all others free.
    pub(super) fn with_used_ranges(len: usize, used: &[RangeInclusive<u32>]) -> Self {
        let mut map = Self::new_all_free(len);
        for range in used {
            map.clear_leaf_range(*range.start() as usize, *range.end() as usize);
        }
        map.rebuild_summaries();
        map
    }

    /// Creates a map over `0..len` with every ID free.
    pub(super) fn new_all_free(len: usize) -> Self {
        let mut leaves = vec![u64::MAX; words_for(len)];
        let tail = len % WORD_BITS;
        if tail != 0 {
            if let Some(last) = leaves.last_mut() {
                // Bits at or past `len` must never look free.
                *last = (1u64 << tail) - 1;
            }
        }
        let mut map = FreeMap {
            levels: vec![leaves],
            len,
            free: len,
        };
        map.rebuild_summaries();
        map
    }

    /// Recomputes every summary level from the leaves.
    fn rebuild_summaries(&mut self) {
        self.levels.truncate(1);
        loop {
            let Some(below) = self.levels.last() else {
                return;
            };
            if below.len() <= 1 {
                return;
            }
            let mut above = vec![0u64; words_for(below.len())];
            for (i, word) in below.iter().enumerate() {
                if *word != 0 {
                    if let Some(slot) = above.get_mut(i / WORD_BITS) {
                        *slot |= 1u64 << (i % WORD_BITS);
                    }
                }
            }
            self.levels.push(above);
        }
    }

    /// Clears the leaf bits of `lo..=hi` (IDs past `len` are ignored). The
    /// caller must rebuild the summaries afterwards.
    fn clear_leaf_range(&mut self, lo: usize, hi: usize) {
        let hi = hi.min(self.len.saturating_sub(1));
        if lo > hi || self.len == 0 {
            return;
        }
        let Some(leaves) = self.levels.first_mut() else {
            return;
        };
        let mut id = lo;
        while id <= hi {
            let word_idx = id / WORD_BITS;
            let word_hi = hi.min(word_idx * WORD_BITS + (WORD_BITS - 1));
            let mask = span_mask(id % WORD_BITS, word_hi % WORD_BITS);
            if let Some(word) = leaves.get_mut(word_idx) {
                self.free -= (*word & mask).count_ones() as usize;
                *word &= !mask;
            }
            id = word_hi + 1;
        }
    }

    /// Number of IDs the map covers.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of free IDs.
    #[cfg(test)]
    pub(super) fn free_count(&self) -> usize {
        self.free
    }

    /// Whether `id` is free. IDs outside `0..len` are never free.
    pub(super) fn is_free(&self, id: u32) -> bool {
        self.is_free_at(id as usize)
    }

    /// [`Self::is_free`] on a `usize` index.
    fn is_free_at(&self, id: usize) -> bool {
        self.levels
            .first()
            .and_then(|leaves| leaves.get(id / WORD_BITS))
            .is_some_and(|word| word & (1u64 << (id % WORD_BITS)) != 0)
    }

    /// Marks `id` used. Returns false (and changes nothing) if it was not free.
    pub(super) fn set_used(&mut self, id: u32) -> bool {
        if !self.is_free(id) {
            return false;
        }
        self.free -= 1;
        let mut idx = id as usize;
        for level in &mut self.levels {
            let Some(word) = level.get_mut(idx / WORD_BITS) else {
                break;
            };
            *word &= !(1u64 << (idx % WORD_BITS));
            if *word != 0 {
                // The word still has free bits: its summary bit stays set.
                break;
            }
            idx /= WORD_BITS;
        }
        true
    }

    /// Marks `id` free. Returns false (and changes nothing) if it was already
    /// free or lies outside `0..len`.
    pub(super) fn set_free(&mut self, id: u32) -> bool {
        if id as usize >= self.len || self.is_free(id) {
            return false;
        }
        self.free += 1;
        let mut idx = id as usize;
        for level in &mut self.levels {
            let Some(word) = level.get_mut(idx / WORD_BITS) else {
                break;
            };
            let was_empty = *word == 0;
            *word |= 1u64 << (idx % WORD_BITS);
            if !was_empty {
                // The summary bit above is already set.
                break;
            }
            idx /= WORD_BITS;
        }
        true
    }

    /// Lowest free ID in `lo..=hi`, if any. One walk up the summaries and one
    /// walk down: at most `2 * levels` word reads.
    pub(super) fn first_free_in(&self, lo: u32, hi: u32) -> Option<u32> {
        if lo > hi {
            return None;
        }
        self.next_free_from(lo as usize)
            .and_then(|id| u32::try_from(id).ok())
            .filter(|id| *id <= hi)
    }

    /// The lowest free IDs in `lo..=hi`, at most `want` of them, in
    /// ascending order, passed to `take` (which may stop the walk by
    /// returning false). One summary search finds the first; the rest are
    /// read off the same leaf word, and a new search starts only when a
    /// word runs out: a batch costs about one search per 64 IDs scanned, not
    /// one per ID. Nothing is marked used here.
    pub(super) fn free_in(&self, lo: u32, hi: u32, want: usize, mut take: impl FnMut(u32) -> bool) {
        let (lo, hi) = (lo as usize, hi as usize);
        let mut found = 0usize;
        let mut from = lo;
        while found < want && from <= hi {
            let Some(first) = self.next_free_from(from) else {
                return;
            };
            let Some(leaves) = self.levels.first() else {
                return;
            };
            let word_index = first / WORD_BITS;
            let Some(&word) = leaves.get(word_index) else {
                return;
            };
            let base = word_index * WORD_BITS;
            // Free bits of this word at or after `first`.
            let mut bits = word & (u64::MAX << (first % WORD_BITS));
            while bits != 0 && found < want {
                let id = base + bits.trailing_zeros() as usize;
                if id > hi || id >= self.len {
                    return;
                }
                let Ok(id32) = u32::try_from(id) else {
                    return;
                };
                if !take(id32) {
                    return;
                }
                found += 1;
                bits &= bits - 1;
            }
            from = base + WORD_BITS;
        }
    }

    /// Lowest free ID `>= from`, if any.
    fn next_free_from(&self, from: usize) -> Option<usize> {
        let mut level = 0;
        // Bit index within `level` at which to resume the search.
        let mut idx = from;
        loop {
            let words = self.levels.get(level)?;
            // Past the end of this level: nothing at or after `idx`.
            let word = words.get(idx / WORD_BITS)?;
            let masked = word & (u64::MAX << (idx % WORD_BITS));
            if masked != 0 {
                idx = (idx / WORD_BITS) * WORD_BITS + masked.trailing_zeros() as usize;
                break;
            }
            // Nothing left in this word: continue with the next word, which is
            // the next bit one level up.
            idx = idx / WORD_BITS + 1;
            level += 1;
        }
        // Descend: each set summary bit names a non-zero child word.
        while level > 0 {
            level -= 1;
            let word = self.levels.get(level)?.get(idx)?;
            if *word == 0 {
                // Unreachable while the summary invariant holds.
                return None;
            }
            idx = idx * WORD_BITS + word.trailing_zeros() as usize;
        }
        (idx < self.len).then_some(idx)
    }

    /// Heap bytes owned by the map, computed from capacities.
    pub(super) fn heap_bytes(&self) -> usize {
        let words: usize = self.levels.iter().map(Vec::capacity).sum();
        words * std::mem::size_of::<u64>()
            + self.levels.capacity() * std::mem::size_of::<Vec<u64>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force lowest free for cross-checking.
    fn slow_first_free(map: &FreeMap, lo: u32, hi: u32) -> Option<u32> {
        (lo..=hi).find(|id| map.is_free(*id))
    }

    /// Checks the summary invariant on every level and the free count.
    fn check_summaries(map: &FreeMap) {
        for pair in map.levels.windows(2) {
            let (below, above) = (&pair[0], &pair[1]);
            for (i, word) in below.iter().enumerate() {
                let bit = above[i / WORD_BITS] & (1u64 << (i % WORD_BITS)) != 0;
                assert_eq!(bit, *word != 0, "summary bit for word {i}");
            }
        }
        assert_eq!(map.levels.last().map(Vec::len), Some(1));
        let counted: usize = map.levels[0].iter().map(|w| w.count_ones() as usize).sum();
        assert_eq!(counted, map.free_count());
    }

    #[test]
    fn shape_for_20_bits() {
        let map = FreeMap::new_all_free(1 << 20);
        let lens: Vec<usize> = map.levels.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![16384, 256, 4, 1]);
        assert!(map.heap_bytes() < 132 * 1024);
        check_summaries(&map);
    }

    #[test]
    fn tiny_spaces_have_no_phantom_ids() {
        for len in [1u32, 2, 3, 63, 64, 65, 128, 4097] {
            let mut map = FreeMap::new_all_free(len as usize);
            assert_eq!(map.len(), len as usize);
            assert_eq!(map.free_count(), len as usize);
            assert!(!map.is_free(len));
            assert!(!map.set_used(len));
            assert!(!map.set_free(len));
            for id in 0..len {
                assert_eq!(map.first_free_in(0, u32::MAX), Some(id));
                assert!(map.set_used(id));
            }
            assert_eq!(map.first_free_in(0, u32::MAX), None);
            check_summaries(&map);
        }
    }

    #[test]
    fn set_used_and_free_are_idempotent() {
        let mut map = FreeMap::new_all_free(4096);
        assert!(map.set_used(100));
        assert!(!map.set_used(100));
        assert!(map.set_free(100));
        assert!(!map.set_free(100));
        assert_eq!(map.free_count(), 4096);
        check_summaries(&map);
    }

    #[test]
    fn search_crosses_levels() {
        let len: u32 = 1 << 20;
        let mut map = FreeMap::with_used_ranges(len as usize, &[0..=len - 2]);
        check_summaries(&map);
        assert_eq!(map.free_count(), 1);
        assert_eq!(map.first_free_in(0, len - 1), Some(len - 1));
        assert_eq!(map.first_free_in(0, len - 2), None);
        assert!(map.set_free(4097));
        assert_eq!(map.first_free_in(0, u32::MAX), Some(4097));
        assert_eq!(map.first_free_in(4098, u32::MAX), Some(len - 1));
        assert_eq!(map.first_free_in(10, 5), None);
        assert!(map.set_used(len - 1));
        assert_eq!(map.first_free_in(4098, u32::MAX), None);
        check_summaries(&map);
    }

    #[test]
    fn used_ranges_with_partial_words() {
        let map = FreeMap::with_used_ranges(300, &[3..=130, 250..=10_000, 7..=9]);
        check_summaries(&map);
        for id in 0..300 {
            let used = (3..=130).contains(&id) || id >= 250;
            assert_eq!(map.is_free(id), !used, "id {id}");
        }
        assert_eq!(map.free_count(), 3 + 119);
        assert_eq!(map.first_free_in(3, 299), Some(131));
        assert_eq!(map.first_free_in(250, 299), None);
    }

    /// A batch search returns exactly the lowest free IDs of the range, in
    /// order, across word and summary boundaries.
    #[test]
    fn batch_search_matches_repeated_single_searches() {
        let mut map = FreeMap::new_all_free(1 << 14);
        for id in (0..(1u32 << 14)).filter(|i| i % 3 == 0 || (130..700).contains(i)) {
            map.set_used(id);
        }
        for (lo, hi, want) in [
            (1, 100, 10),
            (60, 2000, 64),
            (128, 701, 5),
            (0, 16383, 64),
            (16380, 16383, 64),
        ] {
            let mut batch = Vec::new();
            map.free_in(lo, hi, want, |id| {
                batch.push(id);
                true
            });
            let mut expected = Vec::new();
            let mut from = lo;
            while expected.len() < want {
                match slow_first_free(&map, from, hi) {
                    Some(id) => {
                        expected.push(id);
                        from = id + 1;
                    }
                    None => break,
                }
            }
            assert_eq!(batch, expected, "{lo}-{hi} want {want}");
        }
    }

    #[test]
    fn matches_brute_force_on_a_pattern() {
        let len: u32 = 70_000;
        let mut map = FreeMap::new_all_free(len as usize);
        // Deterministic pseudo-random pattern (xorshift).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = u32::try_from(x % u64::from(len)).unwrap();
            if x & 1 == 0 {
                map.set_used(id);
            } else {
                map.set_free(id);
            }
        }
        check_summaries(&map);
        for lo in (0..len).step_by(997) {
            for span in [0u32, 1, 63, 64, 5000, len] {
                let hi = lo.saturating_add(span).min(len - 1);
                assert_eq!(map.first_free_in(lo, hi), slow_first_free(&map, lo, hi));
            }
        }
    }
}
