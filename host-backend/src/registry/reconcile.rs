// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! RECONCILE (docs/protocol.md 5.x.6.13) carried out on the space: the
//! PASIDs a resuming driver has named so far, and one request's effect.
//! Both the registry (live requests) and recovery (replaying the journal)
//! run a reconcile through here, so that they cannot disagree.

use std::collections::HashSet;

use pasid_protocol::{PasidList, ReconcileResult};

use crate::pasid_space::{Claim, OwnerId, Pasid, PasidSpace, RefError};

/// A reconcile in progress: every PASID its requests listed, and those
/// ALLOC or GRANT gave the VM meanwhile. They survive its end; the VM's
/// other references do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    named: HashSet<Pasid>,
    /// Results so far, by [`ReconcileResult`] wire value.
    totals: ResultTotals,
}

/// How many listed PASIDs came to each [`ReconcileResult`], indexed by its
/// wire value.
pub type ResultTotals = [u64; ReconcileResult::ALL.len()];

impl Reconciliation {
    /// Counts `pasid` as named: ALLOC or GRANT gave it during the reconcile.
    pub fn name(&mut self, pasid: Pasid) {
        self.named.insert(pasid);
    }
}

/// Why a RECONCILE could not be carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// A request without FIRST while no reconcile is in progress.
    #[error("RECONCILE without FIRST while no reconcile is in progress")]
    NotStarted,
    /// More PASIDs listed than one request carries.
    #[error("RECONCILE lists {0} PASIDs, more than {max}", max = pasid_protocol::LEASE_BATCH_MAX)]
    TooLong(usize),
    /// The owner is not in the space.
    #[error("{0}")]
    Space(#[from] RefError),
}

/// What one RECONCILE did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// One result per listed PASID, in list order (as wire values).
    pub results: PasidList,
    /// References dropped because the reconcile did not name them (LAST
    /// only).
    pub dropped: u64,
    /// Whether the request ended the reconcile (LAST).
    pub finished: bool,
    /// LAST: the results of every request of the reconcile, by result.
    pub totals: ResultTotals,
}

impl Settled {
    /// LAST: how many PASIDs of the whole reconcile came to `result`.
    pub fn total(&self, result: ReconcileResult) -> u64 {
        self.totals.get(result as usize).copied().unwrap_or(0)
    }
}

/// Carries out one RECONCILE of `owner` listing `list`: FIRST starts a
/// new reconcile in `progress` (dropping one left unfinished), each listed
/// PASID is claimed in list order, and LAST drops every reference the
/// reconcile did not name and ends it. Changes nothing on error.
pub fn settle(
    space: &mut PasidSpace,
    owner: OwnerId,
    progress: &mut Option<Reconciliation>,
    first: bool,
    last: bool,
    list: &[Pasid],
) -> Result<Settled, ReconcileError> {
    if space.usage(owner).is_none() {
        return Err(RefError::UnknownOwner.into());
    }
    if list.len() > usize::from(pasid_protocol::LEASE_BATCH_MAX) {
        return Err(ReconcileError::TooLong(list.len()));
    }
    if first {
        *progress = Some(Reconciliation::default());
    }
    let Some(named) = progress.as_mut() else {
        return Err(ReconcileError::NotStarted);
    };
    let mut settled = Settled::default();
    let Some(slots) = settled.results.slots(list.len()) else {
        return Err(ReconcileError::TooLong(list.len()));
    };
    for (slot, &pasid) in slots.iter_mut().zip(list) {
        let result = match space.claim(owner, pasid)? {
            Claim::Kept => ReconcileResult::Kept,
            Claim::Granted => ReconcileResult::Granted,
            Claim::Conflict => ReconcileResult::Conflict,
            Claim::Refused => ReconcileResult::Refused,
        };
        if matches!(result, ReconcileResult::Kept | ReconcileResult::Granted) {
            named.name(pasid);
        }
        if let Some(total) = named.totals.get_mut(result as usize) {
            *total += 1;
        }
        *slot = result as u32;
    }
    if last {
        if let Some(done) = progress.take() {
            settled.dropped = space.keep_only(owner, |p| done.named.contains(&p));
            settled.totals = done.totals;
        }
        settled.finished = true;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pasid_space::{OwnerKind, OwnerLimits, SpaceConfig};

    fn space() -> (PasidSpace, OwnerId, OwnerId) {
        let mut s = PasidSpace::new(SpaceConfig {
            pasid_bits: 8,
            reserved: vec![],
        })
        .unwrap();
        let limits = OwnerLimits {
            quota: 10,
            range: 1..=255,
        };
        let vm = s.add_owner("vm0", OwnerKind::Vm, limits.clone()).unwrap();
        let other = s.add_owner("vm1", OwnerKind::Vm, limits).unwrap();
        (s, vm, other)
    }

    /// One request with FIRST and LAST: each result, and the unnamed
    /// reference (a lost ALLOC's answer) dropped.
    #[test]
    fn single_request_reconciles_and_drops_the_unnamed() {
        let (mut s, vm, other) = space();
        let kept = s.alloc(vm, 1, 255).unwrap();
        let lost = s.alloc(vm, 1, 255).unwrap();
        let theirs = s.alloc(other, 1, 255).unwrap();
        let mut progress = None;
        let done = settle(&mut s, vm, &mut progress, true, true, &[kept, 9, theirs, 0]).unwrap();
        assert_eq!(
            done.results.as_slice(),
            [
                ReconcileResult::Kept as u32,
                ReconcileResult::Granted as u32,
                ReconcileResult::Conflict as u32,
                ReconcileResult::Refused as u32
            ]
        );
        assert_eq!((done.dropped, done.finished), (1, true));
        assert_eq!(done.totals, [1, 1, 1, 1]);
        assert_eq!(s.held_by(vm), vec![kept, 9]);
        assert!(s.is_free(lost));
        assert_eq!(s.held_by(other), vec![theirs]);
        assert_eq!(progress, None);
    }

    /// Over several requests, what each names and what ALLOC gave in
    /// between survive; a request without FIRST needs one in progress.
    #[test]
    fn multi_request_reconcile_keeps_everything_named() {
        let (mut s, vm, _) = space();
        let a = s.alloc(vm, 1, 255).unwrap();
        let b = s.alloc(vm, 1, 255).unwrap();
        let c = s.alloc(vm, 1, 255).unwrap();
        let mut progress = None;
        assert_eq!(
            settle(&mut s, vm, &mut progress, false, true, &[a]),
            Err(ReconcileError::NotStarted)
        );
        let part = settle(&mut s, vm, &mut progress, true, false, &[a]).unwrap();
        assert_eq!((part.dropped, part.finished), (0, false));
        let during = s.alloc(vm, 1, 255).unwrap();
        progress.as_mut().unwrap().name(during);
        let end = settle(&mut s, vm, &mut progress, false, true, &[b, b]).unwrap();
        // Listed twice: the second finds it held.
        assert_eq!(
            end.results.as_slice(),
            [ReconcileResult::Kept as u32, ReconcileResult::Kept as u32]
        );
        assert_eq!(end.dropped, 1);
        // Totals over both requests: a, then b twice.
        assert_eq!(end.total(ReconcileResult::Kept), 3);
        assert_eq!(s.held_by(vm), vec![a, b, during]);
        assert!(s.is_free(c));
    }
}
