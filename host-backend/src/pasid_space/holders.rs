// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Who holds each allocated PASID, and the one path that adds and drops
//! references: [`RefTable::add_ref`] and [`RefTable::drop_ref`]. `alloc`,
//! `get` and `restore` add through the first, `put` and `reclaim` drop
//! through the second, so the single-holder/shared-holder bookkeeping and
//! each owner's `held` list positions are kept in one place.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use super::free_map::FreeMap;
use super::id_hash::IdBuildHasher;
use super::types::{OwnerSlot, Pasid};

/// Index of a PASID in its holder's `held` list.
pub(super) type HeldPos = u32;

/// Reference state of one allocated PASID; 12 bytes, so a map bucket with its
/// key is 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
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
    /// [`RefTable::shared`].
    Shared {
        /// Sum of the holders' references.
        total: u32,
    },
}

/// One holder of a shared PASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Holding {
    pub(super) owner: OwnerSlot,
    /// At least 1.
    pub(super) refs: u32,
    /// Where the PASID sits in this holder's `held` list.
    pub(super) pos: HeldPos,
}

/// Holders of a shared PASID: two or more, owners distinct.
pub(super) type HolderList = Vec<Holding>;

/// Tables are shrunk when they are this sparse (len * SPARSE < capacity) ...
const SPARSE: usize = 8;
/// ... and at least this large, so small tables never churn.
const SHRINK_MIN_CAPACITY: usize = 4096;

/// The rules [`RefTable::add_ref`] adds under, beyond adding to a PASID the
/// owner holds already (always allowed up to the `u32` total).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AddRules {
    /// A PASID nobody holds is taken (`alloc`, `restore`) instead of refused
    /// as not allocated (`get`).
    pub(super) take_free: bool,
    /// Most distinct PASIDs the owner may hold, checked for a first
    /// reference only (`get`); `None` checks nothing.
    pub(super) quota: Option<u32>,
}

/// Why [`RefTable::add_ref`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AddRefError {
    /// Nobody holds the PASID, and the rules do not take free ones (or it is
    /// reserved or outside the space).
    NotAllocated,
    /// A first reference would take the owner past its quota.
    QuotaExceeded {
        /// The quota.
        quota: u32,
    },
    /// The PASID's total would pass `u32::MAX`.
    Overflow,
}

/// How many of its references [`RefTable::drop_ref`] drops for the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DropCount {
    /// One (`put`).
    One,
    /// All it holds on the PASID (`reclaim`).
    All,
}

/// What [`RefTable::drop_ref`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dropped {
    /// References dropped.
    pub(super) refs: u32,
    /// References left on the PASID, all holders; 0 means it is free again.
    pub(super) remaining: u32,
}

/// Why [`RefTable::drop_ref`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DropRefError {
    /// Nobody holds the PASID.
    NotAllocated,
    /// Others hold it, this owner does not.
    NotHolder,
}

/// The allocated PASIDs with their holders and reference counts, and the
/// bitmap of free ones. Invariant: a PASID has an entry iff its bit is used
/// and it is not reserved.
#[derive(Clone)]
pub(super) struct RefTable {
    /// Set bit = free. Reserved and allocated IDs are used.
    pub(super) free: FreeMap,
    /// Allocated PASIDs.
    pub(super) entries: HashMap<Pasid, Entry, IdBuildHasher>,
    /// Holder lists of the PASIDs whose entry is `Entry::Shared`.
    pub(super) shared: HashMap<Pasid, HolderList, IdBuildHasher>,
    /// References summed over all PASIDs.
    pub(super) total_refs: u64,
}

impl RefTable {
    /// A table with nothing allocated over the bitmap `free`.
    pub(super) fn new(free: FreeMap) -> Self {
        RefTable {
            free,
            entries: HashMap::default(),
            shared: HashMap::default(),
            total_refs: 0,
        }
    }

    /// Adds `refs` references for owner `me`, whose `held` list is given,
    /// on `pasid`, and returns the PASID's new total. A first reference puts
    /// the PASID on `held` and, on a PASID others hold, turns its entry into
    /// a shared one. Checks, in order: the PASID is allocated or may be
    /// taken (`NotAllocated`), the quota for a first reference
    /// (`QuotaExceeded`), the total (`Overflow`). Changes nothing on error.
    pub(super) fn add_ref(
        &mut self,
        me: OwnerSlot,
        held: &mut Vec<Pasid>,
        pasid: Pasid,
        refs: u32,
        rules: AddRules,
    ) -> Result<u32, AddRefError> {
        // Position for a first reference, within the quota.
        let new_pos = |held: &Vec<Pasid>| {
            let count = held.len();
            if let Some(quota) = rules.quota {
                if count >= quota as usize {
                    return Err(AddRefError::QuotaExceeded { quota });
                }
            }
            // held is bounded by the space (2^20), so this always fits.
            HeldPos::try_from(count).map_err(|_| AddRefError::Overflow)
        };
        // A free bit means no entry (the table invariant): the bitmap read
        // spares the hash lookup on the alloc path.
        if self.free.is_free(pasid) {
            if !rules.take_free {
                return Err(AddRefError::NotAllocated);
            }
            let pos = new_pos(held)?;
            self.free.set_used(pasid);
            self.entries.insert(
                pasid,
                Entry::Single {
                    owner: me,
                    refs,
                    pos,
                },
            );
            held.push(pasid);
            self.total_refs += u64::from(refs);
            return Ok(refs);
        }
        let entry = self
            .entries
            .get_mut(&pasid)
            .ok_or(AddRefError::NotAllocated)?;
        let total = match *entry {
            Entry::Single {
                owner,
                refs: theirs,
                pos,
            } if owner == me => {
                let total = theirs.checked_add(refs).ok_or(AddRefError::Overflow)?;
                *entry = Entry::Single {
                    owner,
                    refs: total,
                    pos,
                };
                total
            }
            Entry::Single {
                owner,
                refs: theirs,
                pos,
            } => {
                let my_pos = new_pos(held)?;
                let total = theirs.checked_add(refs).ok_or(AddRefError::Overflow)?;
                let first = Holding {
                    owner,
                    refs: theirs,
                    pos,
                };
                let mine = Holding {
                    owner: me,
                    refs,
                    pos: my_pos,
                };
                self.shared.insert(pasid, vec![first, mine]);
                *entry = Entry::Shared { total };
                held.push(pasid);
                total
            }
            Entry::Shared { total } => {
                // Present whenever the entry is Shared.
                let list = self
                    .shared
                    .get_mut(&pasid)
                    .ok_or(AddRefError::NotAllocated)?;
                let total = match list.iter_mut().find(|h| h.owner == me) {
                    Some(mine) => {
                        let total = total.checked_add(refs).ok_or(AddRefError::Overflow)?;
                        // mine.refs <= the old total, so this cannot saturate.
                        mine.refs = mine.refs.saturating_add(refs);
                        total
                    }
                    None => {
                        let pos = new_pos(held)?;
                        let total = total.checked_add(refs).ok_or(AddRefError::Overflow)?;
                        list.push(Holding {
                            owner: me,
                            refs,
                            pos,
                        });
                        held.push(pasid);
                        total
                    }
                };
                *entry = Entry::Shared { total };
                total
            }
        };
        self.total_refs += u64::from(refs);
        Ok(total)
    }

    /// Drops `count` of owner `me`'s references on `pasid`, `held` being its
    /// list. Its last reference takes the PASID off `held`; the last one of
    /// all frees the PASID. A shared PASID left with one holder goes back
    /// to a single entry. Changes nothing on error. Tables are not shrunk
    /// here: the caller does, once per operation.
    pub(super) fn drop_ref(
        &mut self,
        me: OwnerSlot,
        held: &mut Vec<Pasid>,
        pasid: Pasid,
        count: DropCount,
    ) -> Result<Dropped, DropRefError> {
        let MapEntry::Occupied(mut slot) = self.entries.entry(pasid) else {
            return Err(DropRefError::NotAllocated);
        };
        // The position to drop from `held` once the entry is updated, if
        // this was the owner's last reference.
        let (dropped, detached) = match *slot.get() {
            Entry::Single { owner, .. } if owner != me => return Err(DropRefError::NotHolder),
            Entry::Single { refs, pos, owner } if count == DropCount::One && refs > 1 => {
                let remaining = refs - 1;
                slot.insert(Entry::Single {
                    owner,
                    refs: remaining,
                    pos,
                });
                (Dropped { refs: 1, remaining }, None)
            }
            Entry::Single { refs, pos, .. } => {
                slot.remove();
                self.free.set_free(pasid);
                (Dropped { refs, remaining: 0 }, Some(pos))
            }
            Entry::Shared { total } => {
                let list = self
                    .shared
                    .get_mut(&pasid)
                    .ok_or(DropRefError::NotAllocated)?;
                let index = list
                    .iter()
                    .position(|h| h.owner == me)
                    .ok_or(DropRefError::NotHolder)?;
                let mut refs = 0;
                let mut detached = None;
                if let Some(mine) = list.get_mut(index) {
                    refs = match count {
                        DropCount::One => 1,
                        DropCount::All => mine.refs,
                    };
                    mine.refs = mine.refs.saturating_sub(refs);
                    if mine.refs == 0 {
                        detached = Some(mine.pos);
                        list.swap_remove(index);
                    }
                }
                // A shared PASID has >= 2 holders with >= 1 reference each,
                // so dropping one holder's references never frees it.
                let remaining = total.saturating_sub(refs);
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
                (Dropped { refs, remaining }, detached)
            }
        };
        if let Some(pos) = detached {
            self.detach(held, me, pos);
        }
        self.total_refs = self.total_refs.saturating_sub(u64::from(dropped.refs));
        Ok(dropped)
    }

    /// Removes `held[pos]` with `swap_remove` and re-points the PASID that
    /// moved into `pos`, if any, at its new index. O(1) plus one table
    /// lookup; removing the last element moves nothing.
    fn detach(&mut self, held: &mut Vec<Pasid>, me: OwnerSlot, pos: HeldPos) {
        let index = pos as usize;
        // Always true while the pos invariant holds; checked so a broken
        // invariant cannot panic.
        if index < held.len() {
            held.swap_remove(index);
        }
        if let Some(moved) = held.get(index) {
            match self.entries.get_mut(moved) {
                Some(Entry::Single { pos: moved_pos, .. }) => *moved_pos = pos,
                Some(Entry::Shared { .. }) => {
                    if let Some(holding) = self
                        .shared
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

    /// The references owner `me` holds on `pasid`, if any.
    pub(super) fn refs_of(&self, me: OwnerSlot, pasid: Pasid) -> Option<u32> {
        // A free bit means no entry (the table invariant, as in `add_ref`):
        // restoring a snapshot asks this of every PASID, nearly all free.
        if self.free.is_free(pasid) {
            return None;
        }
        match *self.entries.get(&pasid)? {
            Entry::Single { owner, refs, .. } => (owner == me).then_some(refs),
            Entry::Shared { .. } => self
                .shared
                .get(&pasid)?
                .iter()
                .find(|h| h.owner == me)
                .map(|h| h.refs),
        }
    }

    /// Shrinks the entry table if it has become very sparse.
    pub(super) fn shrink_entries(&mut self) {
        shrink_sparse_map(&mut self.entries);
    }

    /// Shrinks the shared-holder table if it has become very sparse.
    pub(super) fn shrink_shared(&mut self) {
        shrink_sparse_map(&mut self.shared);
    }
}

/// Shrinks a map that has become very sparse; amortised O(1) per removal.
fn shrink_sparse_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > SHRINK_MIN_CAPACITY && map.len().saturating_mul(SPARSE) < map.capacity() {
        map.shrink_to(map.len().saturating_mul(2));
    }
}
