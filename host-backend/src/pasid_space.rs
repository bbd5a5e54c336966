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

mod free_map;
mod id_hash;

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;
use std::ops::RangeInclusive;

use free_map::FreeMap;
use id_hash::IdBuildHasher;
use log::debug;

/// A PCIe Process Address Space ID (at most 20 bits).
pub type Pasid = u32;

/// Widest PASID space the PCIe spec allows.
pub const MAX_PASID_BITS: u32 = 20;

/// Most owners one space holds at once; this bounds the per-owner memory.
/// It is far above the number of VM slots and host holders one host runs
/// (host holders holding nothing are forgotten).
pub const MAX_OWNERS: u32 = 1 << 16;

/// Compact handle for an owner (a VM slot or a host holder), issued by the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The index the space issued, as durable state records it.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// Position in `PasidSpace::owners`.
    fn index(self) -> usize {
        self.0 as usize
    }

    /// Compact form stored in entries; `None` for IDs no space issues.
    fn slot(self) -> Option<OwnerSlot> {
        OwnerSlot::try_from(self.0).ok()
    }
}

impl From<OwnerSlot> for OwnerId {
    fn from(slot: OwnerSlot) -> Self {
        OwnerId(u32::from(slot))
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "owner#{}", self.0)
    }
}

/// What kind of party an owner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    /// A VM slot (a vhost-user frontend).
    Vm,
    /// A host-side holder, e.g. a device driver pinning a PASID.
    Host,
}

/// As the control socket spells it: `vm` or `host`.
impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnerKind::Vm => "vm",
            OwnerKind::Host => "host",
        })
    }
}

/// Construction parameters of a [`PasidSpace`].
#[derive(Clone, Debug)]
pub struct SpaceConfig {
    /// Width of the space in bits, 1..=20 (default 20).
    pub pasid_bits: u32,
    /// Host-reserved ranges, never handed out. PASID 0 is always reserved in
    /// addition. Ranges may overlap.
    pub reserved: Vec<RangeInclusive<Pasid>>,
}

impl Default for SpaceConfig {
    fn default() -> Self {
        SpaceConfig {
            pasid_bits: MAX_PASID_BITS,
            reserved: Vec::new(),
        }
    }
}

/// Per-owner limits. `Clone` but not `Copy`: `RangeInclusive` is not `Copy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLimits {
    /// Most PASIDs the owner may hold references on at once.
    pub quota: u32,
    /// PASIDs this owner may be given by `alloc` (clamped to the space).
    pub range: RangeInclusive<Pasid>,
}

/// As log fields: `quota=N range=LO-HI`.
impl fmt::Display for OwnerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quota={} range={}-{}",
            self.quota,
            self.range.start(),
            self.range.end()
        )
    }
}

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

/// Errors from construction and owner management.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpaceError {
    /// `pasid_bits` is not in 1..=20.
    #[error("pasid-bits must be between 1 and 20, got {0}")]
    InvalidBits(u32),
    /// A reserved range ends past the space.
    #[error("reserved range {start}-{end} is outside the {bits}-bit PASID space")]
    ReservedOutOfSpace {
        /// First PASID of the range.
        start: Pasid,
        /// Last PASID of the range.
        end: Pasid,
        /// Width of the space.
        bits: u32,
    },
    /// A reserved range has `start > end`.
    #[error("reserved range {start}-{end} is empty")]
    EmptyReservedRange {
        /// First PASID of the range.
        start: Pasid,
        /// Last PASID of the range.
        end: Pasid,
    },
    /// An owner of that name exists already.
    #[error("owner name {0:?} is already registered")]
    DuplicateOwner(String),
    /// An owner range is empty once clamped to `1..=max_pasid`.
    #[error("owner range {start}-{end} is empty or outside the PASID space")]
    InvalidOwnerRange {
        /// First PASID of the range as given.
        start: Pasid,
        /// Last PASID of the range as given.
        end: Pasid,
    },
    /// The handle was not issued by this space.
    #[error("unknown owner {0}")]
    UnknownOwner(OwnerId),
    /// [`MAX_OWNERS`] owners are registered already.
    #[error("cannot register more than {max} owners")]
    TooManyOwners {
        /// The limit, [`MAX_OWNERS`].
        max: u32,
    },
    /// Only an owner that holds nothing can be forgotten.
    #[error("owner {name:?} still holds {held} PASIDs")]
    OwnerHolds {
        /// Its name.
        name: String,
        /// PASIDs it holds.
        held: u32,
    },
}

/// Errors from [`PasidSpace::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// `min > max`, or `min` is past the end of the space.
    #[error("min {min} > max {max} or range outside the space")]
    InvalidRange {
        /// Requested lower bound.
        min: Pasid,
        /// Requested upper bound.
        max: Pasid,
    },
    /// No free PASID in the requested range intersected with the owner's.
    #[error("no free PASID in range")]
    NoSpace,
    /// The owner holds its whole quota already.
    #[error("quota of {quota} PASIDs reached")]
    QuotaExceeded {
        /// The owner's quota.
        quota: u32,
    },
    /// The handle was not issued by this space.
    #[error("unknown owner")]
    UnknownOwner,
}

/// Errors from [`PasidSpace::get`] and [`PasidSpace::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The PASID is valid but not allocated.
    #[error("PASID {0} is not allocated")]
    NotFound(Pasid),
    /// The PASID is allocated but this owner holds no reference on it.
    #[error("PASID {0} is not held by this owner")]
    NotOwner(Pasid),
    /// The PASID is past the end of the space, 0, or reserved.
    #[error("PASID {0} is outside the PASID space or reserved")]
    Invalid(Pasid),
    /// A first reference would take the owner past its quota.
    #[error("quota of {quota} PASIDs reached")]
    QuotaExceeded {
        /// The owner's quota.
        quota: u32,
    },
    /// The PASID's total reference count is `u32::MAX` already.
    #[error("reference count overflow on PASID {0}")]
    Overflow(Pasid),
    /// The handle was not issued by this space.
    #[error("unknown owner")]
    UnknownOwner,
}

impl From<SpaceError> for std::io::Error {
    fn from(e: SpaceError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl From<AllocError> for std::io::Error {
    fn from(e: AllocError) -> Self {
        std::io::Error::other(e)
    }
}

impl From<RefError> for std::io::Error {
    fn from(e: RefError) -> Self {
        std::io::Error::other(e)
    }
}

/// Errors from [`PasidSpace::restore`]: recorded state that cannot be true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The handle was not issued by this space.
    #[error("unknown owner")]
    UnknownOwner,
    /// PASID 0, reserved, or past the end of the space.
    #[error("PASID {0} is reserved or outside the PASID space")]
    Unavailable(Pasid),
    /// A holding of zero references.
    #[error("PASID {0} is recorded with no references")]
    NoReferences(Pasid),
    /// The owner is recorded twice as a holder of the PASID.
    #[error("PASID {0} is recorded twice for the same owner")]
    AlreadyHeld(Pasid),
    /// The total reference count would pass `u32::MAX`.
    #[error("reference count overflow on PASID {0}")]
    Overflow(Pasid),
}

/// Result of a successful [`PasidSpace::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// The last reference is gone and the PASID is free again.
    pub freed: bool,
    /// References left on the PASID, summed over all holders.
    pub remaining_refs: u32,
}

/// What [`PasidSpace::reclaim`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReclaimSummary {
    /// References dropped.
    pub references: u64,
    /// PASIDs that became free (no other holder was left).
    pub pasids_freed: u64,
}

/// One holder of a PASID, as reported by [`PasidSpace::info`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// Owner name.
    pub owner: String,
    /// Owner kind.
    pub kind: OwnerKind,
    /// References this owner holds on the PASID.
    pub refs: u32,
}

/// State of one allocated PASID.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PasidInfo {
    /// The PASID.
    pub pasid: Pasid,
    /// References summed over all holders.
    pub total_refs: u32,
    /// Holders, sorted by owner name.
    pub holders: Vec<Holder>,
}

/// Limits and usage of one owner.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OwnerUsage {
    /// Owner name.
    pub name: String,
    /// Owner kind.
    pub kind: OwnerKind,
    /// Distinct PASIDs the owner holds references on.
    pub held: u32,
    /// The owner's quota.
    pub quota: u32,
    /// First PASID `alloc` may give this owner (after clamping).
    pub range_start: Pasid,
    /// Last PASID `alloc` may give this owner (after clamping).
    pub range_end: Pasid,
}

/// Space-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpaceStats {
    /// Width of the space in bits.
    pub pasid_bits: u32,
    /// Usable IDs: 2^bits minus the reserved ones.
    pub capacity: u64,
    /// Reserved IDs, PASID 0 included.
    pub reserved: u64,
    /// Allocated PASIDs.
    pub allocated: u64,
    /// References summed over all PASIDs.
    pub total_refs: u64,
    /// Registered owners.
    pub owners: u64,
}

/// Index of a PASID in its holder's `Owner::held` list.
type HeldPos = u32;

/// Owner index as stored in entries. [`MAX_OWNERS`] keeps it within 16 bits,
/// which is what lets [`Entry`] fit in 12 bytes.
type OwnerSlot = u16;

// Every issued owner index must fit an `OwnerSlot`.
const _: () = assert!(MAX_OWNERS - 1 <= OwnerSlot::MAX as u32);

/// Reference state of one allocated PASID; 12 bytes, so a map bucket with its
/// key is 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// Exactly one owner holds references (the common case).
    Single {
        /// The holder.
        owner: OwnerSlot,
        /// Its references, at least 1.
        refs: u32,
        /// Where this PASID sits in the holder's `held` list.
        pos: HeldPos,
    },
    /// Two or more owners hold references; they are listed in
    /// `PasidSpace::shared`.
    Shared {
        /// Sum of the holders' references.
        total: u32,
    },
}

/// One holder of a shared PASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holding {
    owner: OwnerSlot,
    /// At least 1.
    refs: u32,
    /// Where the PASID sits in this holder's `held` list.
    pos: HeldPos,
}

/// Holders of a shared PASID: two or more, owners distinct.
type HolderList = Vec<Holding>;

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

/// Tables are shrunk when they are this sparse (len * SPARSE < capacity) ...
const SPARSE: usize = 8;
/// ... and at least this large, so small tables never churn.
const SHRINK_MIN_CAPACITY: usize = 4096;

/// The global PASID space shared by all owners. See the module docs.
#[derive(Clone)]
pub struct PasidSpace {
    bits: u32,
    max: Pasid,
    /// Sorted, merged, disjoint; contains `0..=0`.
    reserved: Vec<RangeInclusive<Pasid>>,
    reserved_count: u64,
    /// Set bit = free. Reserved and allocated IDs are used.
    free: FreeMap,
    /// Allocated PASIDs. Invariant: a key is present iff its bit is used and it
    /// is not reserved.
    entries: HashMap<Pasid, Entry, IdBuildHasher>,
    /// Holder lists of the PASIDs whose entry is `Entry::Shared`.
    shared: HashMap<Pasid, HolderList, IdBuildHasher>,
    /// Indexed by [`OwnerId`]; `None` where an owner was forgotten.
    owners: Vec<Option<Owner>>,
    /// Indexes of forgotten owners, reused lowest first.
    vacant: BTreeSet<u32>,
    by_name: BTreeMap<String, OwnerId>,
    total_refs: u64,
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

/// Shrinks a map that has become very sparse; amortised O(1) per removal.
fn shrink_sparse_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > SHRINK_MIN_CAPACITY && map.len().saturating_mul(SPARSE) < map.capacity() {
        map.shrink_to(map.len().saturating_mul(2));
    }
}

/// Removes `held[pos]` with `swap_remove` and re-points the PASID that moved
/// into `pos`, if any, at its new index. O(1) plus one table lookup.
fn detach(
    held: &mut Vec<Pasid>,
    me: OwnerSlot,
    pos: HeldPos,
    entries: &mut HashMap<Pasid, Entry, IdBuildHasher>,
    shared: &mut HashMap<Pasid, HolderList, IdBuildHasher>,
) {
    let index = pos as usize;
    // Always true while the pos invariant holds; checked so a broken
    // invariant cannot panic.
    if index < held.len() {
        held.swap_remove(index);
    }
    if let Some(moved) = held.get(index) {
        match entries.get_mut(moved) {
            Some(Entry::Single { pos: moved_pos, .. }) => *moved_pos = pos,
            Some(Entry::Shared { .. }) => {
                if let Some(holding) = shared
                    .get_mut(moved)
                    .and_then(|list| list.iter_mut().find(|h| h.owner == me))
                {
                    holding.pos = pos;
                }
            }
            None => {}
        }
    }
    // Vectors double when they grow; halve them when 3/4 empty.
    if held.capacity() > 64 && held.len().saturating_mul(4) < held.capacity() {
        held.shrink_to(held.len().saturating_mul(2));
    }
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
            free,
            entries: HashMap::default(),
            shared: HashMap::default(),
            owners: Vec::new(),
            vacant: BTreeSet::new(),
            by_name: BTreeMap::new(),
            total_refs: 0,
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
        if self.entries.contains_key(&pasid) {
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
        let (Some(me), Some(rec)) = (
            owner.slot(),
            self.owners.get_mut(owner.index()).and_then(Option::as_mut),
        ) else {
            return Err(AllocError::UnknownOwner);
        };
        if min > max || min > self.max {
            return Err(AllocError::InvalidRange { min, max });
        }
        let quota = rec.limits.quota;
        // held < quota <= u32::MAX, so `pos` is exact.
        let pos = held_count(rec);
        if pos >= quota {
            return Err(AllocError::QuotaExceeded { quota });
        }
        let lo = min.max(*rec.limits.range.start());
        let hi = max.min(self.max).min(*rec.limits.range.end());
        let pasid = self.free.first_free_in(lo, hi).ok_or(AllocError::NoSpace)?;
        self.free.set_used(pasid);
        self.entries.insert(
            pasid,
            Entry::Single {
                owner: me,
                refs: 1,
                pos,
            },
        );
        rec.held.push(pasid);
        self.total_refs += 1;
        Ok(pasid)
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
        let (Some(me), Some(rec)) = (
            owner.slot(),
            self.owners.get_mut(owner.index()).and_then(Option::as_mut),
        ) else {
            return Err(RefError::UnknownOwner);
        };
        let Some(entry) = self.entries.get_mut(&pasid) else {
            return Err(missing(&self.reserved, self.max, pasid));
        };
        // Position for a first reference; held < quota <= u32::MAX when used.
        let new_pos = || {
            let quota = rec.limits.quota;
            let pos = held_count(rec);
            if pos >= quota {
                Err(RefError::QuotaExceeded { quota })
            } else {
                Ok(pos)
            }
        };
        let new_total = match *entry {
            Entry::Single {
                owner: holder,
                refs,
                pos,
            } if holder == me => {
                let total = refs.checked_add(1).ok_or(RefError::Overflow(pasid))?;
                *entry = Entry::Single {
                    owner: me,
                    refs: total,
                    pos,
                };
                total
            }
            Entry::Single {
                owner: holder,
                refs,
                pos,
            } => {
                let my_pos = new_pos()?;
                let total = refs.checked_add(1).ok_or(RefError::Overflow(pasid))?;
                let list = vec![
                    Holding {
                        owner: holder,
                        refs,
                        pos,
                    },
                    Holding {
                        owner: me,
                        refs: 1,
                        pos: my_pos,
                    },
                ];
                self.shared.insert(pasid, list);
                *entry = Entry::Shared { total };
                rec.held.push(pasid);
                total
            }
            Entry::Shared { total } => {
                // Present whenever the entry is Shared.
                let list = self
                    .shared
                    .get_mut(&pasid)
                    .ok_or(RefError::NotFound(pasid))?;
                let mine = list.iter_mut().find(|h| h.owner == me);
                let my_pos = match mine {
                    Some(_) => None,
                    None => Some(new_pos()?),
                };
                let total = total.checked_add(1).ok_or(RefError::Overflow(pasid))?;
                match (mine, my_pos) {
                    // refs <= total - 1 < u32::MAX, so this cannot saturate.
                    (Some(holding), _) => holding.refs = holding.refs.saturating_add(1),
                    (None, Some(pos)) => {
                        list.push(Holding {
                            owner: me,
                            refs: 1,
                            pos,
                        });
                        rec.held.push(pasid);
                    }
                    (None, None) => {}
                }
                *entry = Entry::Shared { total };
                total
            }
        };
        self.total_refs += 1;
        Ok(new_total)
    }

    /// Drops one of `owner`'s references on `pasid` (the `ioasid_put`
    /// analogue). The PASID is freed only when its total count reaches zero.
    ///
    /// Checks, in order: `UnknownOwner`, `Invalid` (past the space, 0 or
    /// reserved), `NotFound` (not allocated), `NotOwner` (allocated but
    /// `owner` holds no reference).
    pub fn put(&mut self, owner: OwnerId, pasid: Pasid) -> Result<PutOutcome, RefError> {
        let (Some(me), Some(rec)) = (
            owner.slot(),
            self.owners.get_mut(owner.index()).and_then(Option::as_mut),
        ) else {
            return Err(RefError::UnknownOwner);
        };
        let MapEntry::Occupied(mut slot) = self.entries.entry(pasid) else {
            return Err(missing(&self.reserved, self.max, pasid));
        };
        let current = *slot.get();
        // The position to drop from `rec.held` once the entry is updated, if
        // this was the owner's last reference.
        let (outcome, detached) = match current {
            Entry::Single { owner: holder, .. } if holder != me => {
                return Err(RefError::NotOwner(pasid))
            }
            Entry::Single { refs, pos, .. } if refs > 1 => {
                let remaining = refs - 1;
                slot.insert(Entry::Single {
                    owner: me,
                    refs: remaining,
                    pos,
                });
                let outcome = PutOutcome {
                    freed: false,
                    remaining_refs: remaining,
                };
                (outcome, None)
            }
            Entry::Single { pos, .. } => {
                slot.remove();
                self.free.set_free(pasid);
                let outcome = PutOutcome {
                    freed: true,
                    remaining_refs: 0,
                };
                (outcome, Some(pos))
            }
            Entry::Shared { total } => {
                let list = self
                    .shared
                    .get_mut(&pasid)
                    .ok_or(RefError::NotFound(pasid))?;
                let index = list
                    .iter()
                    .position(|h| h.owner == me)
                    .ok_or(RefError::NotOwner(pasid))?;
                let mut detached = None;
                if let Some(holding) = list.get_mut(index) {
                    holding.refs = holding.refs.saturating_sub(1);
                    if holding.refs == 0 {
                        detached = Some(holding.pos);
                        list.swap_remove(index);
                    }
                }
                // A shared PASID has >= 2 holders with >= 1 reference each, so
                // one put never frees it.
                let remaining = total.saturating_sub(1);
                match *list.as_slice() {
                    [last] => {
                        slot.insert(Entry::Single {
                            owner: last.owner,
                            refs: last.refs,
                            pos: last.pos,
                        });
                        self.shared.remove(&pasid);
                    }
                    _ => {
                        slot.insert(Entry::Shared { total: remaining });
                    }
                }
                let outcome = PutOutcome {
                    freed: false,
                    remaining_refs: remaining,
                };
                (outcome, detached)
            }
        };
        if let Some(pos) = detached {
            detach(&mut rec.held, me, pos, &mut self.entries, &mut self.shared);
        }
        if outcome.freed {
            shrink_sparse_map(&mut self.entries);
        }
        self.total_refs = self.total_refs.saturating_sub(1);
        Ok(outcome)
    }

    /// Puts back a holding read from durable state: `owner` holds `refs`
    /// references on `pasid`, allocating it if nobody holds it yet. Quotas
    /// and ranges are not checked: the holding was granted under the limits
    /// of its day, and `set_limits` keeps holdings the same way.
    pub fn restore(&mut self, owner: OwnerId, pasid: Pasid, refs: u32) -> Result<(), RestoreError> {
        let (Some(me), Some(rec)) = (
            owner.slot(),
            self.owners.get_mut(owner.index()).and_then(Option::as_mut),
        ) else {
            return Err(RestoreError::UnknownOwner);
        };
        if refs == 0 {
            return Err(RestoreError::NoReferences(pasid));
        }
        if pasid == 0 || pasid > self.max || ranges_contain(&self.reserved, pasid) {
            return Err(RestoreError::Unavailable(pasid));
        }
        // held is bounded by the space (2^20), so this always fits.
        let pos = HeldPos::try_from(rec.held.len()).map_err(|_| RestoreError::Overflow(pasid))?;
        let mine = Holding {
            owner: me,
            refs,
            pos,
        };
        match self.entries.get_mut(&pasid) {
            None => {
                self.free.set_used(pasid);
                self.entries.insert(
                    pasid,
                    Entry::Single {
                        owner: me,
                        refs,
                        pos,
                    },
                );
            }
            Some(entry) => match *entry {
                Entry::Single { owner: holder, .. } if holder == me => {
                    return Err(RestoreError::AlreadyHeld(pasid))
                }
                Entry::Single {
                    owner: holder,
                    refs: theirs,
                    pos: their_pos,
                } => {
                    let total = theirs
                        .checked_add(refs)
                        .ok_or(RestoreError::Overflow(pasid))?;
                    let first = Holding {
                        owner: holder,
                        refs: theirs,
                        pos: their_pos,
                    };
                    self.shared.insert(pasid, vec![first, mine]);
                    *entry = Entry::Shared { total };
                }
                Entry::Shared { total } => {
                    let total = total
                        .checked_add(refs)
                        .ok_or(RestoreError::Overflow(pasid))?;
                    let list = self
                        .shared
                        .get_mut(&pasid)
                        .ok_or(RestoreError::Unavailable(pasid))?;
                    if list.iter().any(|h| h.owner == me) {
                        return Err(RestoreError::AlreadyHeld(pasid));
                    }
                    list.push(mine);
                    *entry = Entry::Shared { total };
                }
            },
        }
        rec.held.push(pasid);
        self.total_refs += u64::from(refs);
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
            .filter_map(|&pasid| match *self.entries.get(&pasid)? {
                Entry::Single { refs, .. } => Some((pasid, refs)),
                Entry::Shared { .. } => self
                    .shared
                    .get(&pasid)?
                    .iter()
                    .find(|h| h.owner == me)
                    .map(|h| (pasid, h.refs)),
            })
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
        let (Some(me), Some(rec)) = (
            owner.slot(),
            self.owners.get_mut(owner.index()).and_then(Option::as_mut),
        ) else {
            return summary;
        };
        // Taking the list also releases its memory; no positions need fixing
        // since the whole list goes.
        let held = std::mem::take(&mut rec.held);
        for pasid in held {
            let MapEntry::Occupied(mut slot) = self.entries.entry(pasid) else {
                continue;
            };
            match *slot.get() {
                Entry::Single { refs, .. } => {
                    slot.remove();
                    self.free.set_free(pasid);
                    summary.references += u64::from(refs);
                    summary.pasids_freed += 1;
                }
                Entry::Shared { total } => {
                    let Some(list) = self.shared.get_mut(&pasid) else {
                        continue;
                    };
                    let Some(index) = list.iter().position(|h| h.owner == me) else {
                        continue;
                    };
                    let mine = list.swap_remove(index);
                    summary.references += u64::from(mine.refs);
                    match *list.as_slice() {
                        [last] => {
                            slot.insert(Entry::Single {
                                owner: last.owner,
                                refs: last.refs,
                                pos: last.pos,
                            });
                            self.shared.remove(&pasid);
                        }
                        _ => {
                            slot.insert(Entry::Shared {
                                total: total.saturating_sub(mine.refs),
                            });
                        }
                    }
                }
            }
        }
        self.total_refs = self.total_refs.saturating_sub(summary.references);
        shrink_sparse_map(&mut self.entries);
        shrink_sparse_map(&mut self.shared);
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
        let (total_refs, mut holders) = match *self.entries.get(&pasid)? {
            Entry::Single { owner, refs, .. } => (refs, vec![self.holder(owner.into(), refs)]),
            Entry::Shared { total } => (
                total,
                self.shared
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
        let mut pasids: Vec<Pasid> = self.entries.keys().copied().collect();
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
            allocated: self.entries.len() as u64,
            total_refs: self.total_refs,
            owners: self.by_name.len() as u64,
        }
    }

    /// Whether `pasid` can be allocated now: in the space, not reserved and
    /// not allocated.
    pub fn is_free(&self, pasid: Pasid) -> bool {
        self.free.is_free(pasid)
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
        self.free.heap_bytes()
            + self.reserved.capacity() * size_of::<RangeInclusive<Pasid>>()
            + table_bytes(self.entries.capacity(), entry_slot)
            + table_bytes(self.shared.capacity(), shared_slot)
            + holder_bytes
            + self.owners.capacity() * size_of::<Option<Owner>>()
            + self.vacant.len() * size_of::<u32>() * 2
            + owner_bytes
            + by_name_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    // ---- helpers -------------------------------------------------------

    fn space(bits: u32, reserved: Vec<RangeInclusive<Pasid>>) -> PasidSpace {
        PasidSpace::new(SpaceConfig {
            pasid_bits: bits,
            reserved,
        })
        .unwrap()
    }

    fn limits(quota: u32, range: RangeInclusive<Pasid>) -> OwnerLimits {
        OwnerLimits { quota, range }
    }

    fn unlimited() -> OwnerLimits {
        limits(u32::MAX, 0..=Pasid::MAX)
    }

    /// A space with a VM and a host holder, both unlimited.
    fn vm_and_host(bits: u32) -> (PasidSpace, OwnerId, OwnerId) {
        let mut s = space(bits, vec![]);
        let vm = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        let host = s.add_owner("host", OwnerKind::Host, unlimited()).unwrap();
        (s, vm, host)
    }

    /// Checks the internal invariants tying the bitmap, the entry map, the
    /// shared holder lists, the owners' held lists and the counters together.
    fn check_internal(s: &PasidSpace) {
        // Bitmap view == map view, over the whole space and a bit past it.
        for p in 0..=s.max.saturating_add(2) {
            let used = p > s.max || ranges_contain(&s.reserved, p) || s.entries.contains_key(&p);
            assert_eq!(s.free.is_free(p), !used, "bitmap vs map at PASID {p}");
        }
        assert_eq!(
            s.free.free_count() as u64,
            s.stats().capacity - s.entries.len() as u64
        );
        let mut holdings: BTreeMap<OwnerId, BTreeSet<Pasid>> = BTreeMap::new();
        let mut total = 0u64;
        let mut shared_seen = 0;
        // The held-list position recorded for (owner, PASID) must point back.
        let check_pos = |owner: OwnerSlot, pos: HeldPos, p: Pasid| {
            let held = &s.owners[usize::from(owner)]
                .as_ref()
                .expect("live owner")
                .held;
            assert_eq!(held.get(pos as usize), Some(&p), "pos of {p} for {owner}");
        };
        for (p, entry) in &s.entries {
            assert!(*p != 0 && *p <= s.max && !s.is_reserved(*p), "bad key {p}");
            match entry {
                Entry::Single { owner, refs, pos } => {
                    assert!(*refs >= 1);
                    assert!(!s.shared.contains_key(p));
                    check_pos(*owner, *pos, *p);
                    holdings
                        .entry(OwnerId::from(*owner))
                        .or_default()
                        .insert(*p);
                    total += u64::from(*refs);
                }
                Entry::Shared { total: t } => {
                    shared_seen += 1;
                    let holders = &s.shared[p];
                    assert!(holders.len() >= 2, "shared {p} with one holder");
                    let owners: BTreeSet<OwnerSlot> = holders.iter().map(|h| h.owner).collect();
                    assert_eq!(owners.len(), holders.len(), "duplicate holder on {p}");
                    let sum: u64 = holders.iter().map(|h| u64::from(h.refs)).sum();
                    assert!(holders.iter().all(|h| h.refs >= 1));
                    assert_eq!(sum, u64::from(*t));
                    for h in holders {
                        check_pos(h.owner, h.pos, *p);
                        holdings
                            .entry(OwnerId::from(h.owner))
                            .or_default()
                            .insert(*p);
                    }
                    total += sum;
                }
            }
        }
        assert_eq!(shared_seen, s.shared.len());
        assert_eq!(total, s.total_refs);
        for (i, owner) in s.owners.iter().enumerate() {
            let id = OwnerId(u32::try_from(i).unwrap());
            let Some(owner) = owner else {
                assert!(s.vacant.contains(&id.0), "{id} is neither live nor vacant");
                continue;
            };
            assert!(!s.vacant.contains(&id.0), "{id} is live and vacant");
            let held: BTreeSet<Pasid> = owner.held.iter().copied().collect();
            assert_eq!(held.len(), owner.held.len(), "duplicates in {}", owner.name);
            assert_eq!(
                held,
                holdings.remove(&id).unwrap_or_default(),
                "{}",
                owner.name
            );
            assert_eq!(s.by_name.get(&owner.name), Some(&id));
        }
        assert!(
            holdings.is_empty(),
            "holders that are not owners: {holdings:?}"
        );
        assert_eq!(s.by_name.len() + s.vacant.len(), s.owners.len());
        assert!(
            s.owners.last().is_none_or(Option::is_some),
            "a trailing vacancy is kept"
        );
    }

    // ---- construction -----------------------------------------------------

    #[test]
    fn new_rejects_bad_bits() {
        for bits in [0, 21, 32, u32::MAX] {
            let config = SpaceConfig {
                pasid_bits: bits,
                reserved: vec![],
            };
            assert_eq!(
                PasidSpace::new(config).unwrap_err(),
                SpaceError::InvalidBits(bits)
            );
        }
        for bits in [1, 20] {
            let s = space(bits, vec![]);
            assert_eq!(s.pasid_bits(), bits);
            assert_eq!(s.max_pasid(), (1 << bits) - 1);
        }
        let s = PasidSpace::new(SpaceConfig::default()).unwrap();
        assert_eq!(s.max_pasid(), 0xf_ffff);
    }

    #[test]
    fn new_rejects_reserved_outside_space() {
        let config = SpaceConfig {
            pasid_bits: 6,
            reserved: vec![1..=2, 60..=64],
        };
        assert_eq!(
            PasidSpace::new(config).unwrap_err(),
            SpaceError::ReservedOutOfSpace {
                start: 60,
                end: 64,
                bits: 6
            }
        );
    }

    #[test]
    fn new_rejects_empty_reserved_range() {
        #[allow(clippy::reversed_empty_ranges)]
        let config = SpaceConfig {
            pasid_bits: 6,
            reserved: vec![10..=5],
        };
        assert_eq!(
            PasidSpace::new(config).unwrap_err(),
            SpaceError::EmptyReservedRange { start: 10, end: 5 }
        );
    }

    #[test]
    fn reserved_ranges_are_merged_and_counted() {
        let s = space(8, vec![10..=20, 15..=30, 31..=31, 200..=255, 1..=1]);
        assert_eq!(s.reserved, vec![0..=1, 10..=31, 200..=255]);
        let stats = s.stats();
        assert_eq!(stats.reserved, 2 + 22 + 56);
        assert_eq!(stats.capacity, 256 - 80);
        assert!(s.is_reserved(0) && s.is_reserved(31) && s.is_reserved(255));
        assert!(!s.is_reserved(2) && !s.is_reserved(32) && !s.is_reserved(256));
        assert!(!s.is_free(0) && !s.is_free(10) && s.is_free(2) && !s.is_free(256));
        check_internal(&s);
    }

    #[test]
    fn whole_space_reserved_has_no_capacity() {
        let mut s = space(3, vec![1..=7]);
        let o = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        assert_eq!(s.stats().capacity, 0);
        assert_eq!(s.alloc(o, 0, 7), Err(AllocError::NoSpace));
    }

    // ---- owners -------------------------------------------------------------

    #[test]
    fn duplicate_owner_is_rejected() {
        let mut s = space(6, vec![]);
        s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        assert_eq!(
            s.add_owner("vm0", OwnerKind::Host, unlimited()),
            Err(SpaceError::DuplicateOwner("vm0".into()))
        );
        assert_eq!(s.stats().owners, 1);
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)]
    fn owner_range_is_clamped_or_rejected() {
        let mut s = space(6, vec![]);
        for (start, end) in [(0, 0), (100, 50), (64, 80), (5, 4)] {
            assert_eq!(
                s.add_owner("vm0", OwnerKind::Vm, limits(1, start..=end)),
                Err(SpaceError::InvalidOwnerRange { start, end })
            );
            assert_eq!(s.owner("vm0"), None);
        }
        let o = s
            .add_owner("vm0", OwnerKind::Vm, limits(3, 0..=1000))
            .unwrap();
        assert_eq!(s.limits(o), Some(limits(3, 1..=63)));
        assert_eq!(
            s.set_limits(o, limits(3, 70..=80)),
            Err(SpaceError::InvalidOwnerRange { start: 70, end: 80 })
        );
        assert_eq!(s.limits(o), Some(limits(3, 1..=63)));
        s.set_limits(o, limits(9, 0..=10)).unwrap();
        assert_eq!(s.limits(o), Some(limits(9, 1..=10)));
    }

    #[test]
    fn unknown_owner_in_owner_management() {
        let mut s = space(6, vec![]);
        let ghost = OwnerId(5);
        assert_eq!(
            s.set_limits(ghost, unlimited()),
            Err(SpaceError::UnknownOwner(ghost))
        );
        assert_eq!(s.limits(ghost), None);
        assert_eq!(s.owner_name(ghost), None);
        assert_eq!(s.usage(ghost), None);
        assert_eq!(s.held_by(ghost), Vec::<Pasid>::new());
        assert_eq!(s.reclaim(ghost), ReclaimSummary::default());
        assert_eq!(
            SpaceError::UnknownOwner(ghost).to_string(),
            "unknown owner owner#5"
        );
    }

    #[test]
    fn too_many_owners() {
        let mut s = space(4, vec![]);
        for i in 0..MAX_OWNERS {
            s.add_owner(&format!("o{i}"), OwnerKind::Vm, unlimited())
                .unwrap();
        }
        assert_eq!(
            s.add_owner("one-more", OwnerKind::Vm, unlimited()),
            Err(SpaceError::TooManyOwners { max: MAX_OWNERS })
        );
        assert_eq!(s.owner("one-more"), None);
        assert_eq!(s.owner("o65535"), Some(OwnerId(65535)));
    }

    /// Owners that come and go leave no trace: a forgotten owner's index
    /// is reused lowest first, the owner count and the table stay bounded,
    /// and an owner that still holds a PASID cannot be forgotten.
    #[test]
    fn forgotten_owners_do_not_pile_up() {
        let (mut s, vm, host) = vm_and_host(8);
        let p = s.alloc(vm, 1, 255).unwrap();
        s.get(host, p).unwrap();
        assert_eq!(
            s.forget_owner(host),
            Err(SpaceError::OwnerHolds {
                name: "host".into(),
                held: 1
            })
        );
        let base_bytes = s.memory_bytes();
        for round in 0..1000 {
            let a = s
                .add_owner(&format!("a{round}"), OwnerKind::Host, unlimited())
                .unwrap();
            let b = s
                .add_owner(&format!("b{round}"), OwnerKind::Host, unlimited())
                .unwrap();
            assert_eq!((a, b), (OwnerId(2), OwnerId(3)), "round {round}");
            s.get(a, p).unwrap();
            s.put(a, p).unwrap();
            // Forgetting a hole below the last owner keeps the table ...
            s.forget_owner(a).unwrap();
            assert_eq!(s.owner_at(2), None);
            assert_eq!(s.owner_index_end(), 4);
            check_internal(&s);
            // ... forgetting the last one shrinks it past every hole.
            s.forget_owner(b).unwrap();
            assert_eq!(s.owner_index_end(), 2);
            assert_eq!(s.owner(&format!("a{round}")), None);
        }
        assert_eq!(s.stats().owners, 2);
        assert_eq!(s.owner_ids().collect::<Vec<_>>(), vec![vm, host]);
        assert!(s.memory_bytes() <= base_bytes + 256, "owner memory grew");
        // A hole below a live owner goes to the next add.
        s.put(host, p).unwrap();
        s.forget_owner(host).unwrap();
        assert_eq!(s.forget_owner(host), Err(SpaceError::UnknownOwner(host)));
        let last = s.add_owner("z", OwnerKind::Host, unlimited()).unwrap();
        assert_eq!(last, host, "the vacant index is reused");
        check_internal(&s);
    }

    #[test]
    fn range_capacity_counts_what_an_owner_could_hold() {
        let s = space(20, vec![0..=15]);
        assert_eq!(s.range_capacity(&(0..=Pasid::MAX)), 1_048_560);
        assert_eq!(s.range_capacity(&(10..=20)), 5);
        assert_eq!(s.range_capacity(&(16..=16)), 1);
        assert_eq!(s.range_capacity(&(3..=15)), 0);
        let s = space(8, vec![10..=20, 200..=255]);
        assert_eq!(s.range_capacity(&(1..=255)), 255 - 11 - 56);
        assert_eq!(s.range_capacity(&(300..=400)), 0);
    }

    #[test]
    fn owner_lookup_and_listing() {
        let mut s = space(6, vec![]);
        let b = s
            .add_owner("vm-b", OwnerKind::Vm, limits(4, 10..=20))
            .unwrap();
        let a = s
            .add_owner("host-a", OwnerKind::Host, limits(2, 1..=63))
            .unwrap();
        assert_eq!(s.owner("vm-b"), Some(b));
        assert_eq!(s.owner("nope"), None);
        assert_eq!(s.owner_name(a), Some("host-a"));
        s.alloc(b, 0, 63).unwrap();
        let usage_b = OwnerUsage {
            name: "vm-b".into(),
            kind: OwnerKind::Vm,
            held: 1,
            quota: 4,
            range_start: 10,
            range_end: 20,
        };
        assert_eq!(s.usage(b), Some(usage_b.clone()));
        let owners = s.owners();
        assert_eq!(owners.len(), 2);
        assert_eq!(owners[0].name, "host-a");
        assert_eq!(owners[1], usage_b);
    }

    // ---- alloc --------------------------------------------------------------

    #[test]
    fn alloc_is_lowest_first_and_skips_reserved() {
        let mut s = space(6, vec![2..=3, 5..=5]);
        let o = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        let got: Vec<Pasid> = (0..5).map(|_| s.alloc(o, 0, 63).unwrap()).collect();
        assert_eq!(got, vec![1, 4, 6, 7, 8]);
        s.put(o, 4).unwrap();
        assert_eq!(s.alloc(o, 0, 63), Ok(4));
        assert_eq!(s.alloc(o, 30, 40), Ok(30));
        // max is clamped to max_pasid.
        assert_eq!(s.alloc(o, 63, u32::MAX), Ok(63));
        check_internal(&s);
    }

    #[test]
    fn alloc_rejects_unknown_owner() {
        let mut s = space(6, vec![]);
        assert_eq!(s.alloc(OwnerId(0), 1, 63), Err(AllocError::UnknownOwner));
    }

    #[test]
    fn alloc_rejects_invalid_range() {
        let (mut s, vm, _) = vm_and_host(6);
        assert_eq!(
            s.alloc(vm, 10, 9),
            Err(AllocError::InvalidRange { min: 10, max: 9 })
        );
        assert_eq!(
            s.alloc(vm, 64, 100),
            Err(AllocError::InvalidRange { min: 64, max: 100 })
        );
        assert_eq!(s.stats().allocated, 0);
    }

    #[test]
    fn alloc_outside_owner_range_is_no_space() {
        let mut s = space(6, vec![]);
        let o = s
            .add_owner("vm0", OwnerKind::Vm, limits(10, 32..=47))
            .unwrap();
        // Valid request, empty intersection with the owner's range.
        assert_eq!(s.alloc(o, 1, 31), Err(AllocError::NoSpace));
        assert_eq!(s.alloc(o, 48, 63), Err(AllocError::NoSpace));
        // [0, 0] is valid, and PASID 0 is reserved.
        assert_eq!(s.alloc(o, 0, 0), Err(AllocError::NoSpace));
        assert_eq!(s.alloc(o, 1, 40), Ok(32));
    }

    #[test]
    fn alloc_no_space_when_full() {
        let mut s = space(3, vec![6..=7]);
        let o = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        for expected in 1..=5 {
            assert_eq!(s.alloc(o, 0, 7), Ok(expected));
        }
        assert_eq!(s.alloc(o, 0, 7), Err(AllocError::NoSpace));
        s.put(o, 3).unwrap();
        assert_eq!(s.alloc(o, 0, 7), Ok(3));
    }

    #[test]
    fn alloc_quota_exceeded_and_lowered_quota() {
        let mut s = space(6, vec![]);
        let o = s
            .add_owner("vm0", OwnerKind::Vm, limits(2, 1..=63))
            .unwrap();
        s.alloc(o, 1, 63).unwrap();
        s.alloc(o, 1, 63).unwrap();
        assert_eq!(
            s.alloc(o, 1, 63),
            Err(AllocError::QuotaExceeded { quota: 2 })
        );
        // Lowering below `held` keeps what is held and blocks new allocs.
        s.set_limits(o, limits(1, 1..=63)).unwrap();
        assert_eq!(s.usage(o).unwrap().held, 2);
        assert_eq!(
            s.alloc(o, 1, 63),
            Err(AllocError::QuotaExceeded { quota: 1 })
        );
        s.put(o, 1).unwrap();
        assert_eq!(
            s.alloc(o, 1, 63),
            Err(AllocError::QuotaExceeded { quota: 1 })
        );
        s.put(o, 2).unwrap();
        assert_eq!(s.alloc(o, 1, 63), Ok(1));
        // Quota 0 forbids everything.
        s.set_limits(o, limits(0, 1..=63)).unwrap();
        assert_eq!(
            s.alloc(o, 1, 63),
            Err(AllocError::QuotaExceeded { quota: 0 })
        );
    }

    // ---- get / put ----------------------------------------------------------

    #[test]
    fn get_and_put_reject_unknown_owner() {
        let (mut s, vm, _) = vm_and_host(6);
        let p = s.alloc(vm, 1, 63).unwrap();
        assert_eq!(s.get(OwnerId(9), p), Err(RefError::UnknownOwner));
        assert_eq!(s.put(OwnerId(9), p), Err(RefError::UnknownOwner));
    }

    #[test]
    fn get_and_put_reject_invalid_pasids() {
        let mut s = space(6, vec![10..=12]);
        let o = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        for p in [0, 10, 11, 12, 64, u32::MAX] {
            assert_eq!(s.get(o, p), Err(RefError::Invalid(p)));
            assert_eq!(s.put(o, p), Err(RefError::Invalid(p)));
        }
    }

    #[test]
    fn get_and_put_on_unallocated_is_not_found() {
        let (mut s, vm, _) = vm_and_host(6);
        assert_eq!(s.get(vm, 5), Err(RefError::NotFound(5)));
        assert_eq!(s.put(vm, 5), Err(RefError::NotFound(5)));
        let p = s.alloc(vm, 1, 63).unwrap();
        s.put(vm, p).unwrap();
        assert_eq!(s.put(vm, p), Err(RefError::NotFound(p)));
    }

    #[test]
    fn put_by_non_holder_is_not_owner() {
        let (mut s, vm, host) = vm_and_host(6);
        let p = s.alloc(vm, 1, 63).unwrap();
        assert_eq!(s.put(host, p), Err(RefError::NotOwner(p)));
        // Also on a shared PASID.
        let third = s.add_owner("vm1", OwnerKind::Vm, unlimited()).unwrap();
        s.get(host, p).unwrap();
        assert_eq!(s.put(third, p), Err(RefError::NotOwner(p)));
        assert_eq!(s.info(p).unwrap().total_refs, 2);
        check_internal(&s);
    }

    #[test]
    fn get_counts_quota_only_for_first_reference() {
        let mut s = space(6, vec![]);
        let vm = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        let host = s
            .add_owner("host", OwnerKind::Host, limits(1, 1..=63))
            .unwrap();
        let a = s.alloc(vm, 1, 63).unwrap();
        let b = s.alloc(vm, 1, 63).unwrap();
        assert_eq!(s.get(host, a), Ok(2));
        assert_eq!(s.get(host, a), Ok(3));
        assert_eq!(s.get(vm, a), Ok(4));
        assert_eq!(s.get(host, b), Err(RefError::QuotaExceeded { quota: 1 }));
        assert_eq!(s.usage(host).unwrap().held, 1);
        // get is not limited by the owner's alloc range.
        s.set_limits(host, limits(5, 40..=41)).unwrap();
        assert_eq!(s.get(host, b), Ok(2));
        check_internal(&s);
    }

    #[test]
    fn get_overflow_single_and_shared() {
        let (mut s, vm, host) = vm_and_host(6);
        let p = s.alloc(vm, 1, 63).unwrap();
        if let Some(Entry::Single { refs, .. }) = s.entries.get_mut(&p) {
            *refs = u32::MAX;
        }
        assert_eq!(s.get(vm, p), Err(RefError::Overflow(p)));
        assert_eq!(s.get(host, p), Err(RefError::Overflow(p)));
        assert!(s.held_by(host).is_empty());

        let q = s.alloc(vm, 1, 63).unwrap();
        s.get(host, q).unwrap();
        s.entries.insert(q, Entry::Shared { total: u32::MAX });
        for h in s.shared.get_mut(&q).unwrap() {
            if OwnerId::from(h.owner) == vm {
                h.refs = u32::MAX - 1;
            }
        }
        assert_eq!(s.get(vm, q), Err(RefError::Overflow(q)));
        assert_eq!(s.get(host, q), Err(RefError::Overflow(q)));
        let third = s.add_owner("vm1", OwnerKind::Vm, unlimited()).unwrap();
        assert_eq!(s.get(third, q), Err(RefError::Overflow(q)));
        assert!(s.held_by(third).is_empty());
    }

    #[test]
    fn host_pin_keeps_pasid_out_of_reuse_until_last_put() {
        let (mut s, vm, host) = vm_and_host(6);
        let p = s.alloc(vm, 1, 63).unwrap();
        assert_eq!(s.get(host, p), Ok(2));
        assert_eq!(
            s.put(vm, p),
            Ok(PutOutcome {
                freed: false,
                remaining_refs: 1
            })
        );
        assert!(!s.is_free(p));
        assert_eq!(s.held_by(vm), Vec::<Pasid>::new());
        // The VM gets a different PASID while the host still pins `p`.
        let q = s.alloc(vm, 1, 63).unwrap();
        assert_ne!(q, p);
        assert_eq!(s.put(vm, p), Err(RefError::NotOwner(p)));
        assert_eq!(
            s.put(host, p),
            Ok(PutOutcome {
                freed: true,
                remaining_refs: 0
            })
        );
        assert!(s.is_free(p));
        assert_eq!(s.alloc(vm, 1, 63), Ok(p));
        check_internal(&s);
    }

    #[test]
    fn put_counts_down_all_references() {
        let (mut s, vm, host) = vm_and_host(6);
        let p = s.alloc(vm, 1, 63).unwrap();
        s.get(vm, p).unwrap();
        s.get(host, p).unwrap();
        s.get(host, p).unwrap();
        assert_eq!(s.stats().total_refs, 4);
        let outcomes: Vec<_> = [host, vm, host, vm]
            .into_iter()
            .map(|o| s.put(o, p).unwrap())
            .collect();
        let remaining: Vec<u32> = outcomes.iter().map(|o| o.remaining_refs).collect();
        assert_eq!(remaining, vec![3, 2, 1, 0]);
        assert_eq!(outcomes.iter().filter(|o| o.freed).count(), 1);
        assert!(outcomes[3].freed);
        assert_eq!(s.stats().total_refs, 0);
        check_internal(&s);
    }

    // ---- reclaim --------------------------------------------------------

    #[test]
    fn reclaim_drops_every_reference_of_one_owner() {
        let (mut s, vm, host) = vm_and_host(6);
        let ps: Vec<Pasid> = (0..5).map(|_| s.alloc(vm, 1, 63).unwrap()).collect();
        s.get(vm, ps[0]).unwrap(); // two refs on ps[0]
        s.get(host, ps[1]).unwrap(); // ps[1] pinned by the host
        let h = s.alloc(host, 1, 63).unwrap();
        s.get(vm, h).unwrap(); // VM references a host PASID
        let summary = s.reclaim(vm);
        assert_eq!(
            summary,
            ReclaimSummary {
                references: 7,
                pasids_freed: 4
            }
        );
        assert!(s.held_by(vm).is_empty());
        assert_eq!(s.held_by(host), vec![ps[1], h]);
        for p in [ps[0], ps[2], ps[3], ps[4]] {
            assert!(s.is_free(p));
        }
        assert_eq!(s.info(ps[1]).unwrap().total_refs, 1);
        assert_eq!(s.stats().total_refs, 2);
        check_internal(&s);
        // Freed PASIDs are reusable; reclaiming again is a no-op.
        assert_eq!(s.alloc(vm, 1, 63), Ok(ps[0]));
        assert_eq!(s.reclaim(host).pasids_freed, 2);
        assert_eq!(
            s.reclaim(host),
            ReclaimSummary {
                references: 0,
                pasids_freed: 0
            }
        );
        check_internal(&s);
    }

    #[test]
    fn reclaim_keeps_shared_pasid_shared_among_others() {
        let (mut s, vm, host) = vm_and_host(6);
        let third = s.add_owner("vm1", OwnerKind::Vm, unlimited()).unwrap();
        let p = s.alloc(vm, 1, 63).unwrap();
        s.get(host, p).unwrap();
        s.get(third, p).unwrap();
        s.get(third, p).unwrap();
        assert_eq!(
            s.reclaim(vm),
            ReclaimSummary {
                references: 1,
                pasids_freed: 0
            }
        );
        let info = s.info(p).unwrap();
        assert_eq!(info.total_refs, 3);
        assert_eq!(info.holders.len(), 2);
        check_internal(&s);
    }

    // ---- reporting ------------------------------------------------------

    #[test]
    fn info_list_and_stats() {
        let (mut s, vm, host) = vm_and_host(6);
        let a = s.alloc(vm, 1, 63).unwrap();
        let b = s.alloc(host, 1, 63).unwrap();
        s.get(host, a).unwrap();
        let info_a = PasidInfo {
            pasid: a,
            total_refs: 2,
            holders: vec![
                Holder {
                    owner: "host".into(),
                    kind: OwnerKind::Host,
                    refs: 1,
                },
                Holder {
                    owner: "vm0".into(),
                    kind: OwnerKind::Vm,
                    refs: 1,
                },
            ],
        };
        assert_eq!(s.info(a), Some(info_a.clone()));
        assert_eq!(s.info(0), None);
        assert_eq!(s.info(40), None);
        let list = s.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], info_a);
        assert_eq!(list[1].pasid, b);
        assert_eq!(
            s.stats(),
            SpaceStats {
                pasid_bits: 6,
                capacity: 63,
                reserved: 1,
                allocated: 2,
                total_refs: 3,
                owners: 2
            }
        );
        assert_eq!(s.held_by(host), vec![a, b]);
        assert!(format!("{s:?}").contains("allocated: 2"));
    }

    #[test]
    fn serialised_shapes() {
        assert_eq!(serde_json::to_string(&OwnerKind::Vm).unwrap(), "\"vm\"");
        assert_eq!(serde_json::to_string(&OwnerKind::Host).unwrap(), "\"host\"");
        let summary = ReclaimSummary {
            references: 3,
            pasids_freed: 1,
        };
        assert_eq!(
            serde_json::to_value(summary).unwrap(),
            serde_json::json!({"references": 3, "pasids_freed": 1})
        );
    }

    #[test]
    fn error_messages_carry_values() {
        assert_eq!(
            AllocError::InvalidRange { min: 5, max: 2 }.to_string(),
            "min 5 > max 2 or range outside the space"
        );
        assert_eq!(
            RefError::Overflow(7).to_string(),
            "reference count overflow on PASID 7"
        );
        assert_eq!(
            SpaceError::ReservedOutOfSpace {
                start: 1,
                end: 99,
                bits: 6
            }
            .to_string(),
            "reserved range 1-99 is outside the 6-bit PASID space"
        );
    }

    #[test]
    fn errors_convert_to_io_errors() {
        let e: std::io::Error = SpaceError::InvalidBits(0).into();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "pasid-bits must be between 1 and 20, got 0");
        let e: std::io::Error = AllocError::NoSpace.into();
        assert_eq!(e.kind(), std::io::ErrorKind::Other);
        let inner = e.into_inner().unwrap().downcast::<AllocError>().unwrap();
        assert_eq!(*inner, AllocError::NoSpace);
        let e: std::io::Error = RefError::NotFound(3).into();
        assert_eq!(e.to_string(), "PASID 3 is not allocated");
    }

    // ---- memory ---------------------------------------------------------

    const FIXED_LIMIT: usize = 256 * 1024;
    const PER_PASID_LIMIT: usize = 64;

    #[test]
    fn entry_is_inline_and_small() {
        assert_eq!(size_of::<Entry>(), 12);
        assert_eq!(size_of::<(Pasid, Entry)>(), 16);
    }

    /// A fresh 20-bit space and one with a handful of PASIDs stay within the
    /// fixed part.
    #[test]
    fn memory_fixed_part_at_small_occupancy() {
        let mut s = space(20, vec![0x8_0000..=0x8_ffff]);
        assert!(s.memory_bytes() <= FIXED_LIMIT, "{}", s.memory_bytes());
        let owners: Vec<OwnerId> = (0..4)
            .map(|i| {
                s.add_owner(&format!("vm{i}"), OwnerKind::Vm, unlimited())
                    .unwrap()
            })
            .collect();
        for o in &owners {
            for _ in 0..8 {
                s.alloc(*o, 1, 0xf_ffff).unwrap();
            }
        }
        let n = usize::try_from(s.stats().allocated).unwrap();
        assert_eq!(n, 32);
        let bytes = s.memory_bytes();
        assert!(bytes <= FIXED_LIMIT, "{bytes} bytes for {n} PASIDs");
        assert!(bytes - s.free.heap_bytes() <= PER_PASID_LIMIT * n + 2048);
    }

    /// The whole 20-bit space allocated: <= 64 bytes per PASID + fixed part.
    /// Then freeing everything shrinks the tables back to the fixed part.
    #[test]
    fn memory_bound_with_full_20_bit_space() {
        let mut s = space(20, vec![]);
        let vm = s.add_owner("vm0", OwnerKind::Vm, unlimited()).unwrap();
        let host = s.add_owner("host", OwnerKind::Host, unlimited()).unwrap();
        let max = s.max_pasid();
        let mut table_capacity = 0;
        for expected in 1..=max {
            let owner = if expected % 2 == 0 { vm } else { host };
            assert_eq!(s.alloc(owner, 1, max), Ok(expected));
            // Right after the entry table grows is the worst point.
            if s.entries.capacity() != table_capacity {
                table_capacity = s.entries.capacity();
                let n = expected as usize;
                let bytes = s.memory_bytes();
                assert!(
                    bytes <= PER_PASID_LIMIT * n + FIXED_LIMIT,
                    "{bytes} for {n}"
                );
                if n > 4096 {
                    assert!((bytes - s.free.heap_bytes()) / n <= 48, "{bytes} for {n}");
                }
            }
        }
        assert_eq!(s.alloc(vm, 1, max), Err(AllocError::NoSpace));
        let n = usize::try_from(s.stats().allocated).unwrap();
        assert_eq!(n, (1 << 20) - 1);
        let bytes = s.memory_bytes();
        assert!(
            bytes <= PER_PASID_LIMIT * n + FIXED_LIMIT,
            "{bytes} bytes for {n} PASIDs ({} per PASID)",
            bytes / n
        );
        // Free every PASID one by one, then the tables are small again.
        for p in 1..=max {
            let owner = if p % 2 == 0 { vm } else { host };
            assert!(s.put(owner, p).unwrap().freed);
        }
        assert!(s.memory_bytes() <= FIXED_LIMIT, "{}", s.memory_bytes());
        // Same after a bulk reclaim.
        for _ in 0..100_000 {
            s.alloc(vm, 1, max).unwrap();
        }
        s.reclaim(vm);
        assert!(s.memory_bytes() <= FIXED_LIMIT, "{}", s.memory_bytes());
        check_internal(&s);
    }

    // ---- model-based property test --------------------------------------

    /// Where an owner's reference on a PASID came from.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Origin {
        Alloc,
        Get,
    }

    #[derive(Clone, Debug)]
    struct ModelOwner {
        name: String,
        kind: OwnerKind,
        quota: u32,
        lo: Pasid,
        hi: Pasid,
    }

    /// Straightforward reference model: linear scans over BTreeMaps.
    #[derive(Clone, Debug)]
    struct Model {
        max: Pasid,
        reserved: BTreeSet<Pasid>,
        owners: Vec<ModelOwner>,
        /// PASID -> owner index -> (refs, origin).
        refs: BTreeMap<Pasid, BTreeMap<usize, (u32, Origin)>>,
    }

    impl Model {
        fn new(bits: u32, reserved: &[RangeInclusive<Pasid>]) -> Self {
            let mut set: BTreeSet<Pasid> = reserved.iter().flat_map(|r| r.clone()).collect();
            set.insert(0);
            Model {
                max: (1 << bits) - 1,
                reserved: set,
                owners: vec![],
                refs: BTreeMap::new(),
            }
        }

        fn held(&self, o: usize) -> u32 {
            let n = self.refs.values().filter(|h| h.contains_key(&o)).count();
            u32::try_from(n).unwrap()
        }

        fn clamp(&self, lo: Pasid, hi: Pasid) -> Option<(Pasid, Pasid)> {
            let (l, h) = (lo.max(1), hi.min(self.max));
            (l <= h).then_some((l, h))
        }

        fn add_owner(
            &mut self,
            name: &str,
            kind: OwnerKind,
            quota: u32,
            lo: Pasid,
            hi: Pasid,
        ) -> Result<OwnerId, SpaceError> {
            if self.owners.iter().any(|o| o.name == name) {
                return Err(SpaceError::DuplicateOwner(name.into()));
            }
            let (lo_c, hi_c) = self
                .clamp(lo, hi)
                .ok_or(SpaceError::InvalidOwnerRange { start: lo, end: hi })?;
            self.owners.push(ModelOwner {
                name: name.into(),
                kind,
                quota,
                lo: lo_c,
                hi: hi_c,
            });
            Ok(OwnerId(u32::try_from(self.owners.len() - 1).unwrap()))
        }

        fn set_limits(
            &mut self,
            o: usize,
            quota: u32,
            lo: Pasid,
            hi: Pasid,
        ) -> Result<(), SpaceError> {
            if o >= self.owners.len() {
                return Err(SpaceError::UnknownOwner(OwnerId(u32::try_from(o).unwrap())));
            }
            let (lo_c, hi_c) = self
                .clamp(lo, hi)
                .ok_or(SpaceError::InvalidOwnerRange { start: lo, end: hi })?;
            let owner = &mut self.owners[o];
            owner.quota = quota;
            owner.lo = lo_c;
            owner.hi = hi_c;
            Ok(())
        }

        fn alloc(&mut self, o: usize, min: Pasid, max: Pasid) -> Result<Pasid, AllocError> {
            let owner = self.owners.get(o).ok_or(AllocError::UnknownOwner)?.clone();
            if min > max || min > self.max {
                return Err(AllocError::InvalidRange { min, max });
            }
            if self.held(o) >= owner.quota {
                return Err(AllocError::QuotaExceeded { quota: owner.quota });
            }
            let lo = min.max(owner.lo);
            let hi = max.min(self.max).min(owner.hi);
            let p = (lo..=hi)
                .find(|p| !self.reserved.contains(p) && !self.refs.contains_key(p))
                .ok_or(AllocError::NoSpace)?;
            self.refs
                .insert(p, BTreeMap::from([(o, (1, Origin::Alloc))]));
            Ok(p)
        }

        fn check_ref(&self, o: usize, p: Pasid) -> Result<(), RefError> {
            if o >= self.owners.len() {
                return Err(RefError::UnknownOwner);
            }
            if p > self.max || self.reserved.contains(&p) {
                return Err(RefError::Invalid(p));
            }
            if !self.refs.contains_key(&p) {
                return Err(RefError::NotFound(p));
            }
            Ok(())
        }

        fn get(&mut self, o: usize, p: Pasid) -> Result<u32, RefError> {
            self.check_ref(o, p)?;
            let held = self.held(o);
            let quota = self.owners[o].quota;
            let holders = self.refs.get_mut(&p).unwrap();
            if !holders.contains_key(&o) && held >= quota {
                return Err(RefError::QuotaExceeded { quota });
            }
            let total: u64 = holders.values().map(|h| u64::from(h.0)).sum();
            if total >= u64::from(u32::MAX) {
                return Err(RefError::Overflow(p));
            }
            holders.entry(o).or_insert((0, Origin::Get)).0 += 1;
            Ok(u32::try_from(total + 1).unwrap())
        }

        fn put(&mut self, o: usize, p: Pasid) -> Result<PutOutcome, RefError> {
            self.check_ref(o, p)?;
            let holders = self.refs.get_mut(&p).unwrap();
            let mine = holders.get_mut(&o).ok_or(RefError::NotOwner(p))?;
            mine.0 -= 1;
            if mine.0 == 0 {
                holders.remove(&o);
            }
            let remaining: u32 = holders.values().map(|h| h.0).sum();
            if holders.is_empty() {
                self.refs.remove(&p);
            }
            Ok(PutOutcome {
                freed: remaining == 0,
                remaining_refs: remaining,
            })
        }

        fn reclaim(&mut self, o: usize) -> ReclaimSummary {
            let mut summary = ReclaimSummary::default();
            self.refs.retain(|_, holders| {
                if let Some((refs, _)) = holders.remove(&o) {
                    summary.references += u64::from(refs);
                    if holders.is_empty() {
                        summary.pasids_freed += 1;
                    }
                }
                !holders.is_empty()
            });
            summary
        }

        fn usage(&self, o: usize) -> OwnerUsage {
            let owner = &self.owners[o];
            OwnerUsage {
                name: owner.name.clone(),
                kind: owner.kind,
                held: self.held(o),
                quota: owner.quota,
                range_start: owner.lo,
                range_end: owner.hi,
            }
        }

        fn info(&self, p: Pasid) -> Option<PasidInfo> {
            let holders = self.refs.get(&p)?;
            let mut list: Vec<Holder> = holders
                .iter()
                .map(|(o, (refs, _))| Holder {
                    owner: self.owners[*o].name.clone(),
                    kind: self.owners[*o].kind,
                    refs: *refs,
                })
                .collect();
            list.sort_by(|a, b| a.owner.cmp(&b.owner));
            Some(PasidInfo {
                pasid: p,
                total_refs: list.iter().map(|h| h.refs).sum(),
                holders: list,
            })
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        AddOwner {
            name: usize,
            host: bool,
            quota: u32,
            lo: Pasid,
            hi: Pasid,
        },
        Alloc {
            owner: usize,
            min: Pasid,
            max: Pasid,
        },
        Get {
            owner: usize,
            pasid: Pasid,
        },
        Put {
            owner: usize,
            pasid: Pasid,
        },
        Reclaim {
            owner: usize,
        },
        SetLimits {
            owner: usize,
            quota: u32,
            lo: Pasid,
            hi: Pasid,
        },
    }

    const NAMES: [&str; 6] = ["vm0", "vm1", "host", "vm2", "host2", "vm3"];

    fn op_strategy(max: Pasid) -> impl Strategy<Value = Op> {
        let beyond = max + 4;
        // Low PASIDs are where lowest-first allocation puts things.
        let pasid = prop_oneof![3 => 0..=max.min(20), 1 => 0..=beyond];
        // Owner 5 is never registered at the start, so it is often unknown.
        let owner = 0usize..6;
        prop_oneof![
            1 => (0..NAMES.len(), any::<bool>(), 0u32..12, 0..=beyond, 0..=beyond)
                .prop_map(|(name, host, quota, lo, hi)| Op::AddOwner { name, host, quota, lo, hi }),
            6 => (owner.clone(), 0..=8u32, 0..=beyond)
                .prop_map(|(owner, min, max)| Op::Alloc { owner, min, max }),
            1 => (owner.clone(), 0..=beyond, 0..=beyond)
                .prop_map(|(owner, min, max)| Op::Alloc { owner, min, max }),
            4 => (owner.clone(), pasid.clone()).prop_map(|(owner, pasid)| Op::Get { owner, pasid }),
            5 => (owner.clone(), pasid).prop_map(|(owner, pasid)| Op::Put { owner, pasid }),
            1 => owner.clone().prop_map(|owner| Op::Reclaim { owner }),
            1 => (owner, 0u32..12, 0..=beyond, 0..=beyond)
                .prop_map(|(owner, quota, lo, hi)| Op::SetLimits { owner, quota, lo, hi }),
        ]
    }

    /// Space config (bits, reserved ranges) and an op sequence.
    fn scenario() -> impl Strategy<Value = (u32, Vec<RangeInclusive<Pasid>>, Vec<Op>)> {
        (3u32..=6).prop_flat_map(|bits| {
            let max: Pasid = (1 << bits) - 1;
            let reserved = proptest::collection::vec((0..=max, 0u32..6), 0..3).prop_map(move |v| {
                v.into_iter()
                    .map(|(start, len)| start..=(start + len).min(max))
                    .collect::<Vec<_>>()
            });
            (
                Just(bits),
                reserved,
                proptest::collection::vec(op_strategy(max), 1..150),
            )
        })
    }

    fn oid(o: usize) -> OwnerId {
        OwnerId(u32::try_from(o).unwrap())
    }

    /// Everything observable must equal the model.
    fn check_against_model(s: &PasidSpace, m: &Model) {
        check_internal(s);
        for p in 0..=m.max + 3 {
            let model_free = p <= m.max && !m.reserved.contains(&p) && !m.refs.contains_key(&p);
            assert_eq!(s.is_free(p), model_free, "is_free({p})");
            assert_eq!(s.info(p), m.info(p), "info({p})");
            assert_eq!(s.is_reserved(p), m.reserved.contains(&p));
        }
        let expected: Vec<PasidInfo> = m.refs.keys().filter_map(|p| m.info(*p)).collect();
        assert_eq!(s.list(), expected);
        for (p, holders) in &m.refs {
            assert!(!m.reserved.contains(p), "reserved PASID {p} allocated");
            let from_alloc = holders.values().filter(|h| h.1 == Origin::Alloc).count();
            assert!(from_alloc <= 1, "PASID {p} handed out twice by alloc");
        }
        let mut owners: Vec<OwnerUsage> = (0..m.owners.len()).map(|o| m.usage(o)).collect();
        for (o, usage) in owners.iter().enumerate() {
            assert_eq!(s.usage(oid(o)).as_ref(), Some(usage));
            let held: Vec<Pasid> = m
                .refs
                .iter()
                .filter(|(_, h)| h.contains_key(&o))
                .map(|(p, _)| *p)
                .collect();
            assert_eq!(s.held_by(oid(o)), held);
            assert_eq!(s.owner(&usage.name), Some(oid(o)));
        }
        owners.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(s.owners(), owners);
        let total_refs: u64 = m
            .refs
            .values()
            .flat_map(|h| h.values())
            .map(|h| u64::from(h.0))
            .sum();
        let size = u64::from(m.max) + 1;
        let reserved = m.reserved.len() as u64;
        assert_eq!(
            s.stats(),
            SpaceStats {
                pasid_bits: s.pasid_bits(),
                capacity: size - reserved,
                reserved,
                allocated: m.refs.len() as u64,
                total_refs,
                owners: m.owners.len() as u64,
            }
        );
    }

    /// Freed PASIDs can be allocated again (checked on a copy).
    fn check_reusable(s: &PasidSpace, freed: &[Pasid]) {
        for p in freed {
            let mut probe = s.clone();
            let o = probe
                .add_owner("~probe", OwnerKind::Host, unlimited())
                .unwrap();
            assert_eq!(
                probe.alloc(o, *p, *p),
                Ok(*p),
                "freed PASID {p} not reusable"
            );
        }
    }

    fn run_scenario(bits: u32, reserved: Vec<RangeInclusive<Pasid>>, ops: Vec<Op>) {
        let mut s = space(bits, reserved.clone());
        let mut m = Model::new(bits, &reserved);
        let max = m.max;
        let initial = [
            ("vm0", OwnerKind::Vm, 8, 1, max),
            ("vm1", OwnerKind::Vm, 4, max / 2, max),
            ("host", OwnerKind::Host, 64, 0, u32::MAX),
        ];
        for (name, kind, quota, lo, hi) in initial {
            let got = s.add_owner(name, kind, limits(quota, lo..=hi));
            assert_eq!(got, m.add_owner(name, kind, quota, lo, hi));
        }
        check_against_model(&s, &m);
        for op in ops {
            let before: BTreeSet<Pasid> = m.refs.keys().copied().collect();
            match op {
                Op::AddOwner {
                    name,
                    host,
                    quota,
                    lo,
                    hi,
                } => {
                    let kind = if host { OwnerKind::Host } else { OwnerKind::Vm };
                    let name = NAMES[name];
                    assert_eq!(
                        s.add_owner(name, kind, limits(quota, lo..=hi)),
                        m.add_owner(name, kind, quota, lo, hi)
                    );
                }
                Op::Alloc { owner, min, max } => {
                    let got = s.alloc(oid(owner), min, max);
                    assert_eq!(
                        got,
                        m.alloc(owner, min, max),
                        "alloc({owner}, {min}, {max})"
                    );
                    if let Ok(p) = got {
                        assert!(!before.contains(&p), "alloc gave out allocated PASID {p}");
                    }
                }
                Op::Get { owner, pasid } => {
                    assert_eq!(
                        s.get(oid(owner), pasid),
                        m.get(owner, pasid),
                        "get({owner}, {pasid})"
                    );
                }
                Op::Put { owner, pasid } => {
                    assert_eq!(
                        s.put(oid(owner), pasid),
                        m.put(owner, pasid),
                        "put({owner}, {pasid})"
                    );
                }
                Op::Reclaim { owner } => {
                    assert_eq!(s.reclaim(oid(owner)), m.reclaim(owner), "reclaim({owner})");
                }
                Op::SetLimits {
                    owner,
                    quota,
                    lo,
                    hi,
                } => {
                    assert_eq!(
                        s.set_limits(oid(owner), limits(quota, lo..=hi)),
                        m.set_limits(owner, quota, lo, hi)
                    );
                }
            }
            check_against_model(&s, &m);
            let after: BTreeSet<Pasid> = m.refs.keys().copied().collect();
            let freed: Vec<Pasid> = before.difference(&after).copied().collect();
            check_reusable(&s, &freed);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn behaves_like_the_model((bits, reserved, ops) in scenario()) {
            run_scenario(bits, reserved, ops);
        }
    }
}
