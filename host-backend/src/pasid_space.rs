// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The global PCIe PASID space that vpasid serves to every VM.
//!
//! [`PasidSpace`] is a reference-counted ID allocator in the spirit of the
//! kernel's `ioasid_alloc`/`ioasid_get`/`ioasid_put`. Many *owners* (VM slots
//! and host holders) share one 20-bit space:
//!
//! * [`PasidSpace::alloc`] hands out the lowest free PASID in a range and gives
//!   the caller one reference.
//! * [`PasidSpace::get`] adds a reference for any owner on an allocated PASID;
//!   [`PasidSpace::put`] drops one, and the PASID becomes free only when its
//!   last reference, from whichever owner, is gone. A PASID a VM freed while a
//!   host holder still pins it is therefore not reused until the host's put.
//! * [`PasidSpace::reclaim`] drops every reference of one owner (VM reset).
//!
//! Quota accounting: an owner's `held` count is the number of distinct PASIDs
//! on which it holds at least one reference. A VM slot is long-lived: re-use
//! it across VM restarts with [`PasidSpace::reclaim`] and
//! [`PasidSpace::set_limits`]. An owner that holds nothing can be forgotten
//! ([`PasidSpace::forget_owner`]; the registry does so for host holders), and
//! its index is given to the next owner added.
//!
//! PASID 0 and the configured reserved ranges are never handed out, and
//! `get`/`put` on them fail with [`RefError::Invalid`].
//!
//! # Data structures and costs
//!
//! * A hierarchical 64-ary bitmap (`free_map`) of free IDs: lowest-free search,
//!   set and clear in O(log64 n): at most two word reads per level, 4 levels
//!   for 2^20 IDs, 16384 + 256 + 4 + 1 words (about 130 KiB): the fixed part.
//! * A hash map PASID -> 12-byte entry (16 bytes per bucket with the key). The
//!   common case, one owner holding the PASID, is stored inline; PASIDs with
//!   several holders keep their holder list in a side map.
//! * Per owner, an unordered list of the PASIDs it holds. Each entry records
//!   its index in that list, so dropping a PASID is a `swap_remove` plus one
//!   lookup to re-point the moved PASID, and `reclaim` is O(held).
//!
//! With the table's load between 7/16 and 7/8 that is 23 to 47 bytes per
//! outstanding PASID (38 with all 2^20 - 1 allocated) on top of the fixed
//! part; see [`PasidSpace::memory_bytes`]. Each extra holder of a shared
//! PASID costs another ~12 bytes. The tables use a seeded fast hasher
//! (`id_hash`). alloc, get and put are O(1) expected apart from the O(log64 n)
//! bitmap search; a shared PASID's holder list is scanned linearly.
//!
//! # Files
//!
//! This file is the API. `types` holds the values it takes and returns and
//! its errors; `holders` the reference bookkeeping, with the one path that
//! adds (`alloc`, `get`, `restore`) and drops (`put`, `reclaim`)
//! references; `free_map` and `id_hash` the bitmap and the hasher; `tests`
//! the unit tests and the model-based property test.

mod free_map;
mod holders;
mod id_hash;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::mem::size_of;
use std::ops::RangeInclusive;

use free_map::FreeMap;
use holders::{
    AddRefError, AddRules, DropCount, DropRefError, Entry, HolderList, Holding, RefTable,
};
use log::debug;
use types::OwnerSlot;

pub use types::{
    AllocError, Claim, Holder, OwnerId, OwnerKind, OwnerLimits, OwnerUsage, Pasid, PasidInfo,
    PutOutcome, ReclaimSummary, RefError, RestoreError, SpaceConfig, SpaceError, SpaceStats,
    MAX_OWNERS, MAX_PASID_BITS,
};

/// Ranges as one log value: `0-0,12-13`.
struct RangeList<'a>(&'a [RangeInclusive<Pasid>]);

impl fmt::Display for RangeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}-{}", r.start(), r.end())?;
        }
        Ok(())
    }
}

/// A registered owner.
#[derive(Clone, Debug)]
struct Owner {
    name: String,
    kind: OwnerKind,
    /// Limits with the range clamped to `1..=max_pasid`.
    limits: OwnerLimits,
    /// PASIDs this owner holds at least one reference on, unordered. Each
    /// PASID's entry records its index here, so removal is a `swap_remove`.
    held: Vec<Pasid>,
}

/// The global PASID space shared by all owners. See the module docs.
#[derive(Clone)]
pub struct PasidSpace {
    bits: u32,
    max: Pasid,
    /// Sorted, merged, disjoint; contains `0..=0`.
    reserved: Vec<RangeInclusive<Pasid>>,
    reserved_count: u64,
    /// The free bitmap and who holds each allocated PASID.
    refs: RefTable,
    /// Indexed by [`OwnerId`]; `None` where an owner was forgotten.
    owners: Vec<Option<Owner>>,
    /// Indexes of forgotten owners, reused lowest first.
    vacant: BTreeSet<u32>,
    by_name: BTreeMap<String, OwnerId>,
}

impl fmt::Debug for PasidSpace {
    // Deriving would print up to a million entries; show the counters instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasidSpace")
            .field("stats", &self.stats())
            .field("reserved", &self.reserved)
            .finish()
    }
}

/// Whether `pasid` lies in one of the sorted, disjoint `ranges`.
fn ranges_contain(ranges: &[RangeInclusive<Pasid>], pasid: Pasid) -> bool {
    let after = ranges.partition_point(|r| *r.start() <= pasid);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|r| pasid <= *r.end())
}

/// Error for a `get`/`put` on a PASID with no entry.
fn missing(ranges: &[RangeInclusive<Pasid>], max: Pasid, pasid: Pasid) -> RefError {
    if pasid > max || ranges_contain(ranges, pasid) {
        RefError::Invalid(pasid)
    } else {
        RefError::NotFound(pasid)
    }
}

/// Approximate heap bytes of a std hash table with `capacity` (as reported by
/// `capacity()`) and `slot` bytes per element: the buckets, one control byte
/// per bucket and one trailing SIMD group.
fn table_bytes(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // std reports 7/8 of the buckets as capacity (buckets - 1 below 8).
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity / 7).saturating_mul(8).next_power_of_two()
    };
    buckets.saturating_mul(slot + 1).saturating_add(16)
}

/// The compact slot and the record of a live owner.
fn live_owner(owners: &mut [Option<Owner>], id: OwnerId) -> Option<(OwnerSlot, &mut Owner)> {
    let slot = id.slot()?;
    let owner = owners.get_mut(id.index()).and_then(Option::as_mut)?;
    Some((slot, owner))
}

/// `held.len()` as the `u32` quota unit; held is bounded by the 2^20 space.
fn held_count(owner: &Owner) -> u32 {
    u32::try_from(owner.held.len()).unwrap_or(u32::MAX)
}

impl PasidSpace {
    /// Creates a space with every non-reserved PASID free.
    pub fn new(config: SpaceConfig) -> Result<Self, SpaceError> {
        let bits = config.pasid_bits;
        if !(1..=MAX_PASID_BITS).contains(&bits) {
            return Err(SpaceError::InvalidBits(bits));
        }
        let max: Pasid = (1 << bits) - 1;
        let mut ranges = Vec::with_capacity(config.reserved.len() + 1);
        ranges.push(0..=0);
        for range in &config.reserved {
            let (start, end) = (*range.start(), *range.end());
            if start > end {
                return Err(SpaceError::EmptyReservedRange { start, end });
            }
            if end > max {
                return Err(SpaceError::ReservedOutOfSpace { start, end, bits });
            }
            ranges.push(start..=end);
        }
        ranges.sort_unstable_by_key(|r| *r.start());
        let mut reserved: Vec<RangeInclusive<Pasid>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match reserved.last_mut() {
                // Overlapping or adjacent: extend the previous range.
                Some(last) if *range.start() <= last.end().saturating_add(1) => {
                    if range.end() > last.end() {
                        *last = *last.start()..=*range.end();
                    }
                }
                _ => reserved.push(range),
            }
        }
        reserved.shrink_to_fit();
        let reserved_count = reserved
            .iter()
            .map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1)
            .sum();
        let free = FreeMap::with_used_ranges(1 << bits, &reserved);
        debug!(
            "pasid-space: {bits}-bit space, reserved={}",
            RangeList(&reserved)
        );
        Ok(PasidSpace {
            bits,
            max,
            reserved,
            reserved_count,
            refs: RefTable::new(free),
            owners: Vec::new(),
            vacant: BTreeSet::new(),
            by_name: BTreeMap::new(),
        })
    }

    /// Width of the space in bits.
    pub fn pasid_bits(&self) -> u32 {
        self.bits
    }

    /// Largest PASID of the space, 2^bits - 1.
    pub fn max_pasid(&self) -> Pasid {
        self.max
    }

    /// Whether `pasid` is PASID 0 or in a reserved range. PASIDs past the end
    /// of the space are not reserved (they do not exist).
    pub fn is_reserved(&self, pasid: Pasid) -> bool {
        ranges_contain(&self.reserved, pasid)
    }

    /// How many PASIDs of `range` (clamped to `1..=max`) are not reserved:
    /// the most an owner with that range could ever hold.
    pub fn range_capacity(&self, range: &RangeInclusive<Pasid>) -> u64 {
        let Some(range) = self.clamp_owner_range(range) else {
            return 0;
        };
        let (start, end) = (u64::from(*range.start()), u64::from(*range.end()));
        let reserved: u64 = self
            .reserved
            .iter()
            .map(|r| {
                let lo = u64::from(*r.start()).max(start);
                let hi = u64::from(*r.end()).min(end);
                (hi + 1).saturating_sub(lo)
            })
            .sum();
        (end - start + 1).saturating_sub(reserved)
    }

    /// The error a `put` on `pasid` by an owner that holds nothing gets,
    /// for a holder that does not exist (any more).
    pub fn not_held_error(&self, pasid: Pasid) -> RefError {
        if self.refs.entries.contains_key(&pasid) {
            RefError::NotOwner(pasid)
        } else {
            missing(&self.reserved, self.max, pasid)
        }
    }

    /// Clamps an owner range to `1..=max`; `None` if nothing is left.
    fn clamp_owner_range(&self, range: &RangeInclusive<Pasid>) -> Option<RangeInclusive<Pasid>> {
        let start = (*range.start()).max(1);
        let end = (*range.end()).min(self.max);
        (start <= end).then_some(start..=end)
    }

    /// Limits with the range clamped, or `InvalidOwnerRange`.
    fn clamp_limits(&self, limits: &OwnerLimits) -> Result<OwnerLimits, SpaceError> {
        let range = self
            .clamp_owner_range(&limits.range)
            .ok_or(SpaceError::InvalidOwnerRange {
                start: *limits.range.start(),
                end: *limits.range.end(),
            })?;
        Ok(OwnerLimits {
            quota: limits.quota,
            range,
        })
    }

    /// Registers an owner. Its range is clamped to `1..=max_pasid`; a range
    /// that is empty after clamping is `InvalidOwnerRange`. It gets the
    /// lowest index a forgotten owner left, else the next new one: the
    /// same sequence of adds and forgets always gives the same indexes,
    /// which durable state relies on.
    pub fn add_owner(
        &mut self,
        name: &str,
        kind: OwnerKind,
        limits: OwnerLimits,
    ) -> Result<OwnerId, SpaceError> {
        if self.by_name.contains_key(name) {
            return Err(SpaceError::DuplicateOwner(name.to_owned()));
        }
        let limits = self.clamp_limits(&limits)?;
        let id = match self.vacant.first() {
            Some(&index) => OwnerId(index),
            None => u32::try_from(self.owners.len())
                .ok()
                .filter(|n| *n < MAX_OWNERS)
                .map(OwnerId)
                .ok_or(SpaceError::TooManyOwners { max: MAX_OWNERS })?,
        };
        debug!(
            "pasid-space: owner {} kind={kind} registered as {id}, {limits}",
            crate::logfmt::Value(name)
        );
        let owner = Owner {
            name: name.to_owned(),
            kind,
            limits,
            held: Vec::new(),
        };
        match self.owners.get_mut(id.index()) {
            Some(place) => *place = Some(owner),
            None => self.owners.push(Some(owner)),
        }
        self.vacant.remove(&id.0);
        self.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Forgets an owner that holds nothing, so that owners which come and
    /// go (host holders) do not pile up; its index goes to the next
    /// [`PasidSpace::add_owner`]. `OwnerHolds` if it still holds a PASID.
    pub fn forget_owner(&mut self, id: OwnerId) -> Result<(), SpaceError> {
        let place = self
            .owners
            .get_mut(id.index())
            .filter(|o| o.is_some())
            .ok_or(SpaceError::UnknownOwner(id))?;
        if let Some(owner) = place.as_ref().filter(|o| !o.held.is_empty()) {
            return Err(SpaceError::OwnerHolds {
                name: owner.name.clone(),
                held: held_count(owner),
            });
        }
        if let Some(owner) = place.take() {
            debug!(
                "pasid-space: owner {} ({id}) forgotten",
                crate::logfmt::Value(&owner.name)
            );
            self.by_name.remove(&owner.name);
        }
        self.vacant.insert(id.0);
        // Trailing vacancies are dropped, so the table follows the owners
        // down again.
        while let Some(&last) = self.vacant.last() {
            if last as usize + 1 != self.owners.len() {
                break;
            }
            self.vacant.pop_last();
            self.owners.pop();
        }
        Ok(())
    }

    /// Number of owner indexes in use or vacant: one past the highest
    /// index issued that is still in use.
    pub fn owner_index_end(&self) -> u32 {
        u32::try_from(self.owners.len()).unwrap_or(u32::MAX)
    }

    /// Looks an owner up by name.
    pub fn owner(&self, name: &str) -> Option<OwnerId> {
        self.by_name.get(name).copied()
    }

    /// Name of an owner.
    pub fn owner_name(&self, id: OwnerId) -> Option<&str> {
        self.owners
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|o| o.name.as_str())
    }

    /// Replaces an owner's limits (range clamped as in `add_owner`). Lowering
    /// the quota below the owner's `held` count is allowed: it keeps what it
    /// holds but cannot take new PASIDs until it is under the quota again.
    /// Likewise PASIDs held outside a new range are kept.
    pub fn set_limits(&mut self, id: OwnerId, limits: OwnerLimits) -> Result<(), SpaceError> {
        if self
            .owners
            .get(id.index())
            .and_then(Option::as_ref)
            .is_none()
        {
            return Err(SpaceError::UnknownOwner(id));
        }
        let limits = self.clamp_limits(&limits)?;
        let owner = self
            .owners
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(SpaceError::UnknownOwner(id))?;
        debug!(
            "pasid-space: owner {} limits now {limits}",
            crate::logfmt::Value(&owner.name)
        );
        owner.limits = limits;
        Ok(())
    }

    /// An owner's limits, with the range as clamped by the space.
    pub fn limits(&self, id: OwnerId) -> Option<OwnerLimits> {
        self.owners
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|o| o.limits.clone())
    }

    /// Allocates the lowest free PASID in `[min, max] ∩ owner's range` and
    /// gives `owner` one reference on it.
    ///
    /// Checks, in order: the owner exists (`UnknownOwner`); `min <= max` and
    /// `min <= max_pasid` (`InvalidRange`; `max` itself is clamped to
    /// `max_pasid`); the owner is under its quota (`QuotaExceeded`); a free
    /// PASID exists (`NoSpace`). A request range that is valid but does not
    /// meet the owner's range is `NoSpace`, not `InvalidRange`: the request is
    /// well-formed, this owner simply has nothing to get there, the same
    /// answer as for a full range.
    pub fn alloc(&mut self, owner: OwnerId, min: Pasid, max: Pasid) -> Result<Pasid, AllocError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(AllocError::UnknownOwner)?;
        if min > max || min > self.max {
            return Err(AllocError::InvalidRange { min, max });
        }
        let quota = rec.limits.quota;
        if held_count(rec) >= quota {
            return Err(AllocError::QuotaExceeded { quota });
        }
        let lo = min.max(*rec.limits.range.start());
        let hi = max.min(self.max).min(*rec.limits.range.end());
        let pasid = self
            .refs
            .free
            .first_free_in(lo, hi)
            .ok_or(AllocError::NoSpace)?;
        // The quota was checked above and the PASID is free: nothing is
        // left to refuse.
        let rules = AddRules {
            take_free: true,
            quota: None,
        };
        self.refs
            .add_ref(me, &mut rec.held, pasid, 1, rules)
            .map_err(|_| AllocError::NoSpace)?;
        Ok(pasid)
    }

    /// Allocates up to `out.len()` PASIDs at once (a lease GRANT): the
    /// lowest free ones of the range [`PasidSpace::alloc`] would search,
    /// fewer if the owner's quota or the free PASIDs run out, one reference
    /// of `owner` on each. Writes them to `out` in ascending order and
    /// returns how many. The free map is searched once for the whole batch
    /// ([`FreeMap::free_in`]), not once per PASID.
    ///
    /// Checks, in order, as `alloc`: `UnknownOwner`, `InvalidRange`,
    /// `QuotaExceeded` (the owner holds its quota already, or `out` is
    /// empty), `NoSpace` (not one free PASID). Changes nothing on error.
    pub fn alloc_batch(
        &mut self,
        owner: OwnerId,
        min: Pasid,
        max: Pasid,
        out: &mut [Pasid],
    ) -> Result<usize, AllocError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(AllocError::UnknownOwner)?;
        if min > max || min > self.max {
            return Err(AllocError::InvalidRange { min, max });
        }
        let quota = rec.limits.quota;
        let room = quota.saturating_sub(held_count(rec)) as usize;
        let want = out.len().min(room);
        if want == 0 {
            return Err(AllocError::QuotaExceeded { quota });
        }
        let lo = min.max(*rec.limits.range.start());
        let hi = max.min(self.max).min(*rec.limits.range.end());
        let mut found = 0usize;
        let mut slots = out.iter_mut();
        self.refs
            .free
            .free_in(lo, hi, want, |pasid| match slots.next() {
                Some(slot) => {
                    *slot = pasid;
                    found += 1;
                    true
                }
                None => false,
            });
        if found == 0 {
            return Err(AllocError::NoSpace);
        }
        // Within the quota (checked above) and free: nothing is left to
        // refuse.
        let rules = AddRules {
            take_free: true,
            quota: None,
        };
        for (taken, &pasid) in out.iter().take(found).enumerate() {
            if self
                .refs
                .add_ref(me, &mut rec.held, pasid, 1, rules)
                .is_err()
            {
                // Unreachable while the table invariant holds: report only
                // the PASIDs actually taken.
                return if taken == 0 {
                    Err(AllocError::NoSpace)
                } else {
                    Ok(taken)
                };
            }
        }
        Ok(found)
    }

    /// Drops one of `owner`'s references on each PASID of `pasids` (a lease
    /// RETURN), all or nothing. Every PASID is checked before anything is
    /// dropped: first that each is a PASID that can exist and none is
    /// listed twice (`Invalid`, `Repeated`), then, in list order, that each
    /// is allocated (`NotFound`) and held by `owner` (`NotOwner`); the first
    /// failure decides. Meant for the short lists of one request (the
    /// repeat check is quadratic). Returns how many PASIDs were freed.
    pub fn put_batch(&mut self, owner: OwnerId, pasids: &[Pasid]) -> Result<usize, RefError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(RefError::UnknownOwner)?;
        for (i, &pasid) in pasids.iter().enumerate() {
            if pasid == 0 || pasid > self.max || ranges_contain(&self.reserved, pasid) {
                return Err(RefError::Invalid(pasid));
            }
            if pasids.iter().take(i).any(|&p| p == pasid) {
                return Err(RefError::Repeated(pasid));
            }
        }
        for &pasid in pasids {
            if self.refs.free.is_free(pasid) {
                return Err(RefError::NotFound(pasid));
            }
            if self.refs.refs_of(me, pasid).is_none() {
                return Err(RefError::NotOwner(pasid));
            }
        }
        let mut freed = 0;
        for &pasid in pasids {
            // Checked above: every PASID is allocated and held by `me`.
            if let Ok(dropped) = self.refs.drop_ref(me, &mut rec.held, pasid, DropCount::One) {
                freed += usize::from(dropped.remaining == 0);
            }
        }
        if freed > 0 {
            self.refs.shrink_entries();
        }
        Ok(freed)
    }

    /// Adds one reference for `owner` on an allocated PASID (the `ioasid_get`
    /// analogue) and returns the PASID's new total reference count.
    ///
    /// The first reference an owner takes on a PASID counts against its
    /// quota; further ones do not. The owner's alloc range does not restrict
    /// `get`: a host holder may pin any allocated PASID. Checks, in order: `UnknownOwner`,
    /// `Invalid` / `NotFound`, `QuotaExceeded` (first reference only),
    /// `Overflow` (the total would pass `u32::MAX`).
    pub fn get(&mut self, owner: OwnerId, pasid: Pasid) -> Result<u32, RefError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(RefError::UnknownOwner)?;
        let rules = AddRules {
            take_free: false,
            quota: Some(rec.limits.quota),
        };
        self.refs
            .add_ref(me, &mut rec.held, pasid, 1, rules)
            .map_err(|e| match e {
                AddRefError::NotAllocated => missing(&self.reserved, self.max, pasid),
                AddRefError::QuotaExceeded { quota } => RefError::QuotaExceeded { quota },
                AddRefError::Overflow => RefError::Overflow(pasid),
            })
    }

    /// Drops one of `owner`'s references on `pasid` (the `ioasid_put`
    /// analogue). The PASID is freed only when its total count reaches zero.
    ///
    /// Checks, in order: `UnknownOwner`, `Invalid` (past the space, 0 or
    /// reserved), `NotFound` (not allocated), `NotOwner` (allocated but
    /// `owner` holds no reference).
    pub fn put(&mut self, owner: OwnerId, pasid: Pasid) -> Result<PutOutcome, RefError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(RefError::UnknownOwner)?;
        let dropped = self
            .refs
            .drop_ref(me, &mut rec.held, pasid, DropCount::One)
            .map_err(|e| match e {
                DropRefError::NotAllocated => missing(&self.reserved, self.max, pasid),
                DropRefError::NotHolder => RefError::NotOwner(pasid),
            })?;
        let freed = dropped.remaining == 0;
        if freed {
            self.refs.shrink_entries();
        }
        Ok(PutOutcome {
            freed,
            remaining_refs: dropped.remaining,
        })
    }

    /// Settles `owner`'s claim that it holds `pasid` (a resuming driver's
    /// RECONCILE entry): [`Claim::Kept`] if it holds a reference; else
    /// [`Claim::Refused`] for a PASID it could never be given (0, beyond
    /// the space, reserved, outside its range); else [`Claim::Conflict`]
    /// if someone holds it; else, if the owner is under its quota, one
    /// reference for it ([`Claim::Granted`]), and [`Claim::Refused`] if not.
    pub fn claim(&mut self, owner: OwnerId, pasid: Pasid) -> Result<Claim, RefError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(RefError::UnknownOwner)?;
        if self.refs.refs_of(me, pasid).is_some() {
            return Ok(Claim::Kept);
        }
        if pasid == 0
            || pasid > self.max
            || ranges_contain(&self.reserved, pasid)
            || !rec.limits.range.contains(&pasid)
        {
            return Ok(Claim::Refused);
        }
        if !self.refs.free.is_free(pasid) {
            return Ok(Claim::Conflict);
        }
        if held_count(rec) >= rec.limits.quota {
            return Ok(Claim::Refused);
        }
        let rules = AddRules {
            take_free: true,
            quota: None,
        };
        self.refs
            .add_ref(me, &mut rec.held, pasid, 1, rules)
            .map_err(|_| RefError::Overflow(pasid))?;
        Ok(Claim::Granted)
    }

    /// Drops every reference `owner` holds on a PASID `keep` refuses (the
    /// end of a reconcile: what the driver did not name). Returns the
    /// references dropped.
    pub fn keep_only(&mut self, owner: OwnerId, keep: impl Fn(Pasid) -> bool) -> u64 {
        let Some((me, rec)) = live_owner(&mut self.owners, owner) else {
            return 0;
        };
        let unnamed: Vec<Pasid> = rec.held.iter().copied().filter(|p| !keep(*p)).collect();
        let mut dropped = 0;
        for pasid in unnamed {
            if let Ok(d) = self.refs.drop_ref(me, &mut rec.held, pasid, DropCount::All) {
                dropped += u64::from(d.refs);
            }
        }
        if dropped > 0 {
            self.refs.shrink_entries();
            self.refs.shrink_shared();
        }
        dropped
    }

    /// Puts back a holding read from durable state: `owner` holds `refs`
    /// references on `pasid`, allocating it if nobody holds it yet. Quotas
    /// and ranges are not checked: the holding was granted under the limits
    /// of its day, and `set_limits` keeps holdings the same way.
    pub fn restore(&mut self, owner: OwnerId, pasid: Pasid, refs: u32) -> Result<(), RestoreError> {
        let (me, rec) = live_owner(&mut self.owners, owner).ok_or(RestoreError::UnknownOwner)?;
        if refs == 0 {
            return Err(RestoreError::NoReferences(pasid));
        }
        if pasid == 0 || pasid > self.max || ranges_contain(&self.reserved, pasid) {
            return Err(RestoreError::Unavailable(pasid));
        }
        // Durable state records each holding once.
        if self.refs.refs_of(me, pasid).is_some() {
            return Err(RestoreError::AlreadyHeld(pasid));
        }
        let rules = AddRules {
            take_free: true,
            quota: None,
        };
        self.refs
            .add_ref(me, &mut rec.held, pasid, refs, rules)
            .map_err(|e| match e {
                AddRefError::Overflow => RestoreError::Overflow(pasid),
                // Not reachable with these rules on an available PASID.
                AddRefError::NotAllocated | AddRefError::QuotaExceeded { .. } => {
                    RestoreError::Unavailable(pasid)
                }
            })?;
        Ok(())
    }

    /// The PASIDs `owner` holds with its reference count on each, in the
    /// owner's own (unsorted) order; empty for an unknown owner.
    pub fn holdings(&self, owner: OwnerId) -> Vec<(Pasid, u32)> {
        let Some((me, rec)) = owner
            .slot()
            .zip(self.owners.get(owner.index()).and_then(Option::as_ref))
        else {
            return Vec::new();
        };
        rec.held
            .iter()
            .filter_map(|&pasid| Some((pasid, self.refs.refs_of(me, pasid)?)))
            .collect()
    }

    /// Every owner in the order the space issued them (index order).
    pub fn owner_ids(&self) -> impl Iterator<Item = OwnerId> + '_ {
        (0..self.owner_index_end())
            .map(OwnerId)
            .filter(|id| self.owners.get(id.index()).is_some_and(Option::is_some))
    }

    /// The owner with that index, if the space issued it.
    pub fn owner_at(&self, index: u32) -> Option<OwnerId> {
        let id = OwnerId(index);
        self.owners
            .get(id.index())
            .is_some_and(Option::is_some)
            .then_some(id)
    }

    /// An owner's kind.
    pub fn owner_kind(&self, id: OwnerId) -> Option<OwnerKind> {
        self.owners
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|o| o.kind)
    }

    /// Drops every reference `owner` holds, in O(held). PASIDs other owners
    /// still reference stay allocated. An unknown owner holds nothing, so it
    /// gets an empty summary.
    pub fn reclaim(&mut self, owner: OwnerId) -> ReclaimSummary {
        let mut summary = ReclaimSummary::default();
        let Some((me, rec)) = live_owner(&mut self.owners, owner) else {
            return summary;
        };
        // Dropping from the end of the list moves no other PASID in it.
        while let Some(&pasid) = rec.held.last() {
            match self.refs.drop_ref(me, &mut rec.held, pasid, DropCount::All) {
                Ok(dropped) => {
                    summary.references += u64::from(dropped.refs);
                    if dropped.remaining == 0 {
                        summary.pasids_freed += 1;
                    }
                }
                // A held PASID the table does not know (a broken invariant):
                // take it off the list all the same, so the loop ends.
                Err(_) => {
                    rec.held.pop();
                }
            }
        }
        // Release the list's memory as well.
        rec.held = Vec::new();
        self.refs.shrink_entries();
        self.refs.shrink_shared();
        if summary.references > 0 {
            debug!(
                "pasid-space: reclaimed {} references from {}, {} PASIDs freed",
                summary.references,
                crate::logfmt::Value(self.owner_name(owner).unwrap_or("?")),
                summary.pasids_freed
            );
        }
        summary
    }

    /// `Holder` record for `(owner, refs)`.
    fn holder(&self, owner: OwnerId, refs: u32) -> Holder {
        let (name, kind) = self
            .owners
            .get(owner.index())
            .and_then(Option::as_ref)
            .map_or((String::new(), OwnerKind::Host), |o| {
                (o.name.clone(), o.kind)
            });
        Holder {
            owner: name,
            kind,
            refs,
        }
    }

    /// State of an allocated PASID; `None` if it is not allocated.
    pub fn info(&self, pasid: Pasid) -> Option<PasidInfo> {
        let (total_refs, mut holders) = match *self.refs.entries.get(&pasid)? {
            Entry::Single { owner, refs, .. } => (refs, vec![self.holder(owner.into(), refs)]),
            Entry::Shared { total } => (
                total,
                self.refs
                    .shared
                    .get(&pasid)?
                    .iter()
                    .map(|h| self.holder(h.owner.into(), h.refs))
                    .collect(),
            ),
        };
        holders.sort_unstable_by(|a, b| a.owner.cmp(&b.owner));
        Some(PasidInfo {
            pasid,
            total_refs,
            holders,
        })
    }

    /// Every allocated PASID, sorted by PASID.
    pub fn list(&self) -> Vec<PasidInfo> {
        let mut pasids: Vec<Pasid> = self.refs.entries.keys().copied().collect();
        pasids.sort_unstable();
        pasids.into_iter().filter_map(|p| self.info(p)).collect()
    }

    /// PASIDs `owner` holds references on, sorted; empty for an unknown owner.
    pub fn held_by(&self, owner: OwnerId) -> Vec<Pasid> {
        let mut pasids: Vec<Pasid> = self
            .owners
            .get(owner.index())
            .and_then(Option::as_ref)
            .map(|o| o.held.clone())
            .unwrap_or_default();
        pasids.sort_unstable();
        pasids
    }

    /// Usage record of one owner.
    fn usage_of(owner: &Owner) -> OwnerUsage {
        OwnerUsage {
            name: owner.name.clone(),
            kind: owner.kind,
            held: held_count(owner),
            quota: owner.limits.quota,
            range_start: *owner.limits.range.start(),
            range_end: *owner.limits.range.end(),
        }
    }

    /// Limits and usage of one owner.
    pub fn usage(&self, owner: OwnerId) -> Option<OwnerUsage> {
        self.owners
            .get(owner.index())
            .and_then(Option::as_ref)
            .map(Self::usage_of)
    }

    /// Limits and usage of every owner, sorted by name.
    pub fn owners(&self) -> Vec<OwnerUsage> {
        self.by_name
            .values()
            .filter_map(|id| self.usage(*id))
            .collect()
    }

    /// Space-wide counters.
    pub fn stats(&self) -> SpaceStats {
        let size = 1u64 << self.bits;
        SpaceStats {
            pasid_bits: self.bits,
            capacity: size - self.reserved_count,
            reserved: self.reserved_count,
            allocated: self.refs.entries.len() as u64,
            total_refs: self.refs.total_refs,
            owners: self.by_name.len() as u64,
        }
    }

    /// Whether `pasid` can be allocated now: in the space, not reserved and
    /// not allocated.
    pub fn is_free(&self, pasid: Pasid) -> bool {
        self.refs.free.is_free(pasid)
    }

    /// Approximate heap bytes in use, computed from the capacities of the
    /// containers (std hash tables: buckets, control bytes and one group).
    ///
    /// A fresh 20-bit space is about 130 KiB (the bitmap). Each outstanding
    /// single-holder PASID adds 17 bytes per entry-table bucket (16-byte slot
    /// plus a control byte) and 4 to 8 bytes in its owner's held list; with
    /// the table's load between 7/16 and 7/8 that is 23 to 47 bytes per PASID
    /// (38 when all 2^20 - 1 are allocated). Tables shrink when they fall
    /// below 1/8 load and lists below 1/4, so the figure follows the number
    /// of outstanding PASIDs down again. A table left full of tombstones by
    /// heavy churn can be under-counted until its next rehash.
    pub fn memory_bytes(&self) -> usize {
        let entry_slot = size_of::<(Pasid, Entry)>();
        let shared_slot = size_of::<(Pasid, HolderList)>();
        let holder_bytes: usize = self
            .refs
            .shared
            .values()
            .map(|h| h.capacity() * size_of::<Holding>())
            .sum();
        let owner_bytes: usize = self
            .owners
            .iter()
            .flatten()
            .map(|o| o.name.capacity() + o.held.capacity() * size_of::<Pasid>())
            .sum();
        // BTreeMap nodes hold up to 11 keys; assume they are about 2/3 full
        // and add one name copy per entry.
        let by_name_bytes: usize = self
            .by_name
            .keys()
            .map(|k| k.capacity() + (size_of::<(String, OwnerId)>() * 3) / 2)
            .sum();
        self.refs.free.heap_bytes()
            + self.reserved.capacity() * size_of::<RangeInclusive<Pasid>>()
            + table_bytes(self.refs.entries.capacity(), entry_slot)
            + table_bytes(self.refs.shared.capacity(), shared_slot)
            + holder_bytes
            + self.owners.capacity() * size_of::<Option<Owner>>()
            + self.vacant.len() * size_of::<u32>() * 2
            + owner_bytes
            + by_name_bytes
    }
}
