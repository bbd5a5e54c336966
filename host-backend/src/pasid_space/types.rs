// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The values the PASID space takes and returns, and its errors.

use std::fmt;
use std::ops::RangeInclusive;

#[cfg(doc)]
use super::PasidSpace;

/// A PCIe Process Address Space ID (at most 20 bits).
pub type Pasid = u32;

/// Widest PASID space the PCIe spec allows.
pub const MAX_PASID_BITS: u32 = 20;

/// Most owners one space holds at once; this bounds the per-owner memory.
/// It is far above the number of VM slots and host holders one host runs
/// (host holders holding nothing are forgotten).
pub const MAX_OWNERS: u32 = 1 << 16;

/// Owner index as stored in entries. [`MAX_OWNERS`] keeps it within 16 bits,
/// which is what lets [`Entry`](super::holders::Entry) fit in 12 bytes.
pub(super) type OwnerSlot = u16;

// Every issued owner index must fit an `OwnerSlot`.
const _: () = assert!(MAX_OWNERS - 1 <= OwnerSlot::MAX as u32);

/// Compact handle for an owner (a VM slot or a host holder), issued by the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub(super) u32);

impl OwnerId {
    /// The index the space issued, as durable state records it.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// Position in `PasidSpace::owners`.
    pub(super) fn index(self) -> usize {
        self.0 as usize
    }

    /// Compact form stored in entries; `None` for IDs no space issues.
    pub(super) fn slot(self) -> Option<OwnerSlot> {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// A batch lists the PASID more than once.
    #[error("PASID {0} is listed twice")]
    Repeated(Pasid),
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

/// What became of an owner's claim to hold a PASID
/// ([`PasidSpace::claim`]; a RECONCILE entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The owner held it and still does.
    Kept,
    /// It was free; the owner now holds one reference on it.
    Granted,
    /// Another owner holds it; the claimant does not.
    Conflict,
    /// Not one the owner may be given (0, beyond the space, reserved,
    /// outside its range), or free while it is at its quota.
    Refused,
}

/// What [`PasidSpace::reclaim`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimSummary {
    /// References dropped.
    pub references: u64,
    /// PASIDs that became free (no other holder was left).
    pub pasids_freed: u64,
}

/// One holder of a PASID, as reported by [`PasidSpace::info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Owner name.
    pub owner: String,
    /// Owner kind.
    pub kind: OwnerKind,
    /// References this owner holds on the PASID.
    pub refs: u32,
}

/// State of one allocated PASID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasidInfo {
    /// The PASID.
    pub pasid: Pasid,
    /// References summed over all holders.
    pub total_refs: u32,
    /// Holders, sorted by owner name.
    pub holders: Vec<Holder>,
}

/// Limits and usage of one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
