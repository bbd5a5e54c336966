// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Unit tests and the model-based property test of the PASID space.

use super::holders::HeldPos;
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
        let used = p > s.max || ranges_contain(&s.reserved, p) || s.refs.entries.contains_key(&p);
        assert_eq!(s.refs.free.is_free(p), !used, "bitmap vs map at PASID {p}");
    }
    assert_eq!(
        s.refs.free.free_count() as u64,
        s.stats().capacity - s.refs.entries.len() as u64
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
    for (p, entry) in &s.refs.entries {
        assert!(*p != 0 && *p <= s.max && !s.is_reserved(*p), "bad key {p}");
        match entry {
            Entry::Single { owner, refs, pos } => {
                assert!(*refs >= 1);
                assert!(!s.refs.shared.contains_key(p));
                check_pos(*owner, *pos, *p);
                holdings
                    .entry(OwnerId::from(*owner))
                    .or_default()
                    .insert(*p);
                total += u64::from(*refs);
            }
            Entry::Shared { total: t } => {
                shared_seen += 1;
                let holders = &s.refs.shared[p];
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
    assert_eq!(shared_seen, s.refs.shared.len());
    assert_eq!(total, s.refs.total_refs);
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
    if let Some(Entry::Single { refs, .. }) = s.refs.entries.get_mut(&p) {
        *refs = u32::MAX;
    }
    assert_eq!(s.get(vm, p), Err(RefError::Overflow(p)));
    assert_eq!(s.get(host, p), Err(RefError::Overflow(p)));
    assert!(s.held_by(host).is_empty());

    let q = s.alloc(vm, 1, 63).unwrap();
    s.get(host, q).unwrap();
    s.refs.entries.insert(q, Entry::Shared { total: u32::MAX });
    for h in s.refs.shared.get_mut(&q).unwrap() {
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
    assert!(bytes - s.refs.free.heap_bytes() <= PER_PASID_LIMIT * n + 2048);
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
        if s.refs.entries.capacity() != table_capacity {
            table_capacity = s.refs.entries.capacity();
            let n = expected as usize;
            let bytes = s.memory_bytes();
            assert!(
                bytes <= PER_PASID_LIMIT * n + FIXED_LIMIT,
                "{bytes} for {n}"
            );
            if n > 4096 {
                assert!(
                    (bytes - s.refs.free.heap_bytes()) / n <= 48,
                    "{bytes} for {n}"
                );
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

    fn set_limits(&mut self, o: usize, quota: u32, lo: Pasid, hi: Pasid) -> Result<(), SpaceError> {
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

// ---- batches (leases) ------------------------------------------------

/// `alloc_batch` takes the lowest free PASIDs of the owner's range, skipping
/// reserved and allocated ones, as repeated `alloc` would, bounded by the
/// quota; the invariants hold.
#[test]
fn alloc_batch_takes_what_repeated_allocs_would() {
    let mut a = space(10, vec![5..=9]);
    let mut b = space(10, vec![5..=9]);
    let va = a
        .add_owner("vm", OwnerKind::Vm, limits(20, 2..=1000))
        .unwrap();
    let vb = b
        .add_owner("vm", OwnerKind::Vm, limits(20, 2..=1000))
        .unwrap();
    for s in [&mut a, &mut b] {
        let other = s.add_owner("other", OwnerKind::Vm, unlimited()).unwrap();
        for p in [3, 12, 13] {
            s.restore(other, p, 1).unwrap();
        }
    }
    let mut out = [0; 64];
    assert_eq!(a.alloc_batch(va, 0, 30, &mut out), Ok(20));
    let singles: Vec<Pasid> = (0..20).map(|_| b.alloc(vb, 0, 30).unwrap()).collect();
    assert_eq!(&out[..20], &singles[..]);
    assert_eq!(&out[..5], &[2, 4, 10, 11, 14]);
    assert_eq!(
        a.alloc_batch(va, 0, 30, &mut out),
        Err(AllocError::QuotaExceeded { quota: 20 })
    );
    check_internal(&a);
}

/// Fewer free than asked is a partial batch; none is NO_SPACE; a bad range
/// is INVALID; an empty request is QUOTA_EXCEEDED (nothing may be granted).
#[test]
fn alloc_batch_is_partial_then_no_space() {
    let (mut s, vm, _) = vm_and_host(6);
    let mut out = [0; 8];
    assert_eq!(s.alloc_batch(vm, 60, 100, &mut out), Ok(4));
    assert_eq!(&out[..4], &[60, 61, 62, 63]);
    assert_eq!(
        s.alloc_batch(vm, 60, 63, &mut out),
        Err(AllocError::NoSpace)
    );
    assert_eq!(
        s.alloc_batch(vm, 9, 8, &mut out),
        Err(AllocError::InvalidRange { min: 9, max: 8 })
    );
    assert_eq!(
        s.alloc_batch(vm, 1, 8, &mut []),
        Err(AllocError::QuotaExceeded { quota: u32::MAX })
    );
    check_internal(&s);
}

/// `put_batch` is all or nothing: INVALID for an impossible or repeated
/// PASID anywhere in the list, else the first PASID that is free
/// (NOT_FOUND) or not the owner's (NOT_OWNER) decides; on success every
/// reference is dropped, a shared PASID staying allocated.
#[test]
fn put_batch_is_all_or_nothing() {
    let (mut s, vm, host) = vm_and_host(8);
    let mut out = [0; 6];
    assert_eq!(s.alloc_batch(vm, 1, 255, &mut out), Ok(6));
    s.get(host, 3).unwrap();
    let theirs = s.alloc(host, 100, 100).unwrap();
    let before = s.holdings(vm);
    for (list, err) in [
        (vec![1, 2, 0], RefError::Invalid(0)),
        (vec![1, 300, 2], RefError::Invalid(300)),
        (vec![1, 2, 1], RefError::Repeated(1)),
        (vec![1, 50, theirs], RefError::NotFound(50)),
        (vec![1, theirs, 50], RefError::NotOwner(theirs)),
    ] {
        assert_eq!(s.put_batch(vm, &list), Err(err), "{list:?}");
        assert_eq!(s.holdings(vm), before, "{list:?} released something");
    }
    assert_eq!(
        s.put_batch(vm, &[3, 1, 6]),
        Ok(2),
        "3 stays: the host holds it"
    );
    assert_eq!(s.held_by(vm).len(), 3);
    assert!(s.info(3).is_some() && s.is_free(1) && s.is_free(6));
    check_internal(&s);
}

// ---- claim and keep_only (RECONCILE) -------------------------------

/// Each claim outcome, in the order `claim` decides them.
#[test]
fn claim_keeps_grants_conflicts_and_refuses() {
    let mut s = space(8, vec![200..=209]);
    let vm = s
        .add_owner("vm0", OwnerKind::Vm, limits(3, 1..=100))
        .unwrap();
    let other = s.add_owner("vm1", OwnerKind::Vm, unlimited()).unwrap();
    let mine = s.alloc(vm, 1, 100).unwrap();
    let theirs = s.alloc(other, 1, 100).unwrap();
    assert_eq!(s.claim(vm, mine), Ok(Claim::Kept));
    assert_eq!(s.claim(vm, theirs), Ok(Claim::Conflict));
    assert_eq!(s.info(theirs).unwrap().holders.len(), 1);
    for refused in [0, 101, 205, 256, u32::MAX] {
        assert_eq!(s.claim(vm, refused), Ok(Claim::Refused), "PASID {refused}");
    }
    assert_eq!(s.claim(vm, 50), Ok(Claim::Granted));
    assert_eq!(s.held_by(vm), vec![mine, 50]);
    assert!(!s.is_free(50));
    // At its quota of 3 after one more: a free PASID is refused.
    assert_eq!(s.claim(vm, 51), Ok(Claim::Granted));
    assert_eq!(s.claim(vm, 52), Ok(Claim::Refused));
    assert!(s.is_free(52));
    // A PASID held already is kept even at the quota.
    assert_eq!(s.claim(vm, 51), Ok(Claim::Kept));
    assert_eq!(s.claim(OwnerId(99), 1), Err(RefError::UnknownOwner));
}

/// `keep_only` drops the unnamed references and nothing of other owners.
#[test]
fn keep_only_drops_what_is_not_named() {
    let (mut s, vm, host) = vm_and_host(8);
    let a = s.alloc(vm, 1, 255).unwrap();
    let b = s.alloc(vm, 1, 255).unwrap();
    let c = s.alloc(vm, 1, 255).unwrap();
    s.get(host, c).unwrap();
    assert_eq!(s.keep_only(vm, |p| p == a), 2);
    assert_eq!(s.held_by(vm), vec![a]);
    assert!(s.is_free(b));
    // The host still holds c.
    assert!(!s.is_free(c));
    assert_eq!(s.held_by(host), vec![c]);
    assert_eq!(s.keep_only(vm, |_| true), 0);
    assert_eq!(s.keep_only(OwnerId(99), |_| false), 0);
}
