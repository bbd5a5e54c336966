// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fast, seeded hasher for the space's PASID-keyed tables.
//!
//! SipHash would be most of the cost of an alloc/free pair, so the tables use
//! the 64-bit finaliser of MurmurHash3 instead, which spreads dense,
//! sequential keys over both the low bits (bucket index) and the top bits
//! (control byte) that `std`'s hash table uses. A guest can steer which keys
//! are inserted (`alloc` with `min == max` picks an exact PASID), so each
//! table mixes in its own random seed: without it a guest could precompute
//! colliding PASIDs and make every lookup walk a long probe sequence. Quota
//! and the owner's range bound how many keys it controls in any case.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// `BuildHasher` for maps and sets keyed by PASIDs; each instance draws a
/// random seed.
#[derive(Clone, Debug)]
pub(super) struct IdBuildHasher {
    seed: u64,
}

impl Default for IdBuildHasher {
    fn default() -> Self {
        // RandomState is seeded from the OS once per thread, then varied per
        // instance; hashing a constant with it yields a fresh random u64.
        IdBuildHasher {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.seed }
    }
}

/// Hasher for small integer keys; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IdHasher {
    state: u64,
}

/// MurmurHash3 `fmix64`.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        fmix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Generic fallback (integer keys use the methods below): fold bytes in.
        for byte in bytes {
            self.state = self.state.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.state = self.state.rotate_left(32) ^ u64::from(i);
    }

    fn write_u64(&mut self, i: u64) {
        self.state = self.state.rotate_left(32) ^ i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn dense_keys_spread_over_low_and_high_bits() {
        let build = IdBuildHasher::default();
        let low: HashSet<u64> = (0u32..4096).map(|k| build.hash_one(k) & 0xfff).collect();
        // A good mixer fills about 63 % of 4096 buckets with 4096 keys.
        assert!(low.len() > 2400, "low bits: {}", low.len());
        let high: HashSet<u64> = (0u32..4096).map(|k| build.hash_one(k) >> 57).collect();
        assert_eq!(high.len(), 128);
    }

    #[test]
    fn equal_keys_hash_equal_within_one_table() {
        let build = IdBuildHasher::default();
        assert_eq!(build.hash_one(77u32), build.hash_one(77u32));
        assert_ne!(build.hash_one(77u32), build.hash_one(78u32));
        let copy = build.clone();
        assert_eq!(copy.hash_one(77u32), build.hash_one(77u32));
    }

    #[test]
    fn tables_get_different_seeds() {
        let (a, b) = (IdBuildHasher::default(), IdBuildHasher::default());
        assert_ne!(a.seed, b.seed);
        assert_ne!(a.hash_one(1u32), b.hash_one(1u32));
    }
}
