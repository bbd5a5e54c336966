// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Checks shared by the scenario files (`mod common;`); test code, so a
//! failed check is a panic with its message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use qemu_tests::vpasid::Found;
use qemu_tests::{Daemon, Guest, VpasidGuest};

/// The PASIDs VM `vm` holds, after checking that each has exactly one
/// holder (that VM, one reference).
pub fn sole_holdings(daemon: &Daemon, vm: &str) -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    for entry in daemon.pasids().unwrap() {
        if entry.holders.iter().any(|h| h.owner == vm) {
            assert_eq!(entry.total_refs, 1, "{entry:?}");
            assert_eq!(entry.holders.len(), 1, "{entry:?}");
            assert_eq!(entry.holders[0].kind, "vm", "{entry:?}");
            held.insert(entry.pasid);
        }
    }
    held
}

/// Asserts that the guest's IOASID framework knows each of `own` (with
/// NULL private data, as the exerciser allocates them) and none of
/// `others`.
pub fn assert_guest_knows(guest: &mut Guest, own: &BTreeSet<u32>, others: &BTreeSet<u32>) {
    let ids: Vec<u32> = own.iter().chain(others).copied().collect();
    for (id, found) in guest.find_many(&ids).unwrap() {
        let want = if own.contains(&id) {
            Found::Private(0)
        } else {
            Found::NotFound
        };
        assert_eq!(found, want, "{}: find {id}", guest.name());
    }
}
