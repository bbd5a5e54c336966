// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! PASID leases (GRANT, RETURN; docs/protocol.md 5.x.6.12) against the real
//! daemon over its real socket: negotiation, what `pasidctl` shows, quota,
//! isolation between VMs, reclaim, `lease=0`, and durable state with the
//! replay window.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::collections::BTreeSet;
use std::time::Duration;

use frontend::{driver, held_by, vm_json, Daemon, TestVm, VmOptions};
use pasid_protocol::{Response, Status};
use vhost_user_pasid::config::DEFAULT_LEASE;

/// (held, cached, in_use, lease) as `pasidctl vms --json` shows them.
fn lease_view(d: &Daemon, name: &str) -> (u64, u64, u64, u64) {
    let v = vm_json(d, name);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (n("held"), n("cached"), n("in_use"), n("lease"))
}

fn status(r: &Response) -> Option<Status> {
    Status::from_wire(r.status)
}

/// The default lease cap (`DEFAULT_LEASE`) is offered and negotiated; GRANT 32 gets the 32
/// lowest PASIDs with used length 16 + 128; pasidctl shows them held and
/// cached, and in use once handed out; RETURN gives some back.
#[test]
fn grant_32_and_pasidctl_shows_held_cached_and_in_use() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=100"]);
    let mut a = driver(&d, "a", VmOptions::lease());
    assert!(a.lease_negotiated(), "F_LEASE offered by default");
    assert_eq!(a.config().lease_max, DEFAULT_LEASE);

    let reply = a.grant(32, 0, 1, 0xfffff);
    assert_eq!(reply.response, Response::ok(reply.response.tag, 32));
    assert_eq!(reply.used_len, 16 + 4 * 32);
    assert_eq!(reply.pasids, (1..=32).collect::<Vec<u32>>());
    assert_eq!(held_by(&d, "a"), reply.pasids);
    assert_eq!(lease_view(&d, "a"), (32, 32, 0, u64::from(DEFAULT_LEASE)));

    // The driver hands out 5 (no request), reports it in the next RETURN.
    let r = a.give_back(&[30, 31, 32], 27);
    assert_eq!(r, Response::ok(r.tag, 3));
    assert_eq!(lease_view(&d, "a"), (29, 24, 5, u64::from(DEFAULT_LEASE)));
    let v = vm_json(&d, "a");
    assert_eq!(v["counters"]["requests"]["GRANT"], 1);
    assert_eq!(v["counters"]["requests"]["RETURN"], 1);
    assert_eq!(v["counters"]["statuses"]["OK"], 2);

    // The table has the new columns, with the same figures.
    let (ok, table, err) = d.ctl(&["vms"]);
    assert!(ok, "{err}");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (col("HELD"), col("IN-USE"), col("CACHED")),
        ("29", "5", "24")
    );
}

/// Leased PASIDs count against the quota: a GRANT is cut to it, and then
/// ALLOC and GRANT are both QUOTA_EXCEEDED; RETURN makes room again.
#[test]
fn the_quota_holds_with_leases() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=10,lease=64"]);
    let mut a = driver(&d, "a", VmOptions::lease());
    let reply = a.grant(64, 0, 1, 0xfffff);
    assert_eq!(reply.pasids, (1..=10).collect::<Vec<u32>>());
    assert_eq!(status(&a.alloc(1, 0xfffff)), Some(Status::QuotaExceeded));
    assert_eq!(
        status(&a.grant(1, 0, 1, 0xfffff).response),
        Some(Status::QuotaExceeded)
    );
    assert_eq!(status(&a.give_back(&[4], 10)), Some(Status::Ok));
    assert_eq!(a.alloc_ok(1, 0xfffff), 4);
    assert_eq!(held_by(&d, "a").len(), 10);
}

/// Two VMs that lease in turn get disjoint PASIDs, and neither's ALLOC
/// gets one the other has cached.
#[test]
fn two_vms_get_disjoint_pasids() {
    let d = Daemon::start(&[
        "--lease",
        "4096",
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock",
    ]);
    let mut a = driver(&d, "a", VmOptions::lease());
    let mut b = driver(&d, "b", VmOptions::lease());
    let (mut mine, mut theirs) = (BTreeSet::new(), BTreeSet::new());
    for round in 0..8u16 {
        let ra = a.grant(64, round * 64, 1, 2000);
        let rb = b.grant(64, round * 64, 1, 2000);
        assert_eq!((ra.pasids.len(), rb.pasids.len()), (64, 64));
        mine.extend(ra.pasids);
        theirs.extend(rb.pasids);
    }
    mine.insert(a.alloc_ok(1, 2000));
    theirs.insert(b.alloc_ok(1, 2000));
    assert_eq!((mine.len(), theirs.len()), (513, 513));
    assert!(mine.is_disjoint(&theirs));
    assert_eq!(held_by(&d, "a"), mine.into_iter().collect::<Vec<_>>());
    assert_eq!(held_by(&d, "b"), theirs.into_iter().collect::<Vec<_>>());
}

/// The end of the connection releases leased PASIDs as any others, and
/// clears `cached`.
#[test]
fn disconnect_reclaims_leased_pasids() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let mut a = driver(&d, "a", VmOptions::lease());
    a.grant(32, 0, 1, 0xfffff);
    a.alloc_ok(1, 0xfffff);
    drop(a);
    d.wait_log("vm=a event=reclaim reason=\"disconnect\" references=33 pasids_freed=33");
    assert_eq!(lease_view(&d, "a"), (0, 0, 0, u64::from(DEFAULT_LEASE)));
    assert!(held_by(&d, "a").is_empty());
}

/// A `lease=0` VM is not offered F_LEASE, reads lease_max 0, and its GRANT
/// and RETURN are INVALID (malformed) while ALLOC works as in version 1; a
/// driver that declines the offered feature gets the same.
#[test]
fn without_f_lease_grant_and_return_are_invalid() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,lease=0", "--vm", "b={dir}/b.sock"]);
    let mut a = driver(&d, "a", VmOptions::lease());
    assert!(!a.lease_negotiated());
    assert_eq!(a.config().lease_max, 0);
    let mut b = TestVm::connect(&d.path("b.sock"));
    assert!(!b.lease_negotiated());
    assert_eq!(b.config().lease_max, DEFAULT_LEASE, "offered, but declined");
    for (name, vm) in [("a", &mut a), ("b", &mut b)] {
        let g = vm.grant(8, 0, 1, 0xfffff);
        assert_eq!(g.response, Response::new(Status::Invalid, g.response.tag));
        assert_eq!(g.used_len, 16);
        let r = vm.give_back(&[1], 0);
        assert_eq!(r, Response::new(Status::Invalid, r.tag));
        assert_eq!(vm.alloc_ok(1, 0xfffff), if name == "a" { 1 } else { 2 });
        let v = vm_json(&d, name);
        assert_eq!(v["counters"]["malformed"], 2, "{name}");
        assert_eq!(v["lease"], if name == "a" { 0 } else { DEFAULT_LEASE });
    }
}

/// With --state-dir, leased PASIDs survive kill -9, and a GRANT and a
/// RETURN the frontend re-delivers after the restart (their answers were
/// durable but never used) get their first answers again, the GRANT with
/// the same PASIDs, without being carried out twice.
#[test]
fn kill9_restart_keeps_leases_and_replays_grant_and_return() {
    let mut d = Daemon::start(&["--vm", "a={dir}/a.sock", "--state-dir", "{dir}/state"]);
    let mut a = driver(&d, "a", VmOptions::lease());
    let first = a.grant(16, 0, 1, 0xfffff);
    let second = a.grant(16, 16, 1, 0xfffff);
    assert_eq!(second.pasids, (17..=32).collect::<Vec<u32>>());

    // The second GRANT's used element never reaches the guest.
    a.rewind_used(1);
    d.kill9();
    d.restart();
    assert_eq!(held_by(&d, "a"), (1..=32).collect::<Vec<u32>>());
    a.reconnect(&d.path("a.sock"));
    let again = a.wait_used(1, Duration::from_secs(10));
    assert_eq!(again[0], (0, 16 + 4 * 16), "the replayed GRANT's chain");
    let v = vm_json(&d, "a");
    assert_eq!(v["counters"]["replayed"], 1);
    assert_eq!(
        held_by(&d, "a").len(),
        32,
        "the GRANT was not carried out again"
    );
    // Same answer, same PASIDs, written again into the same buffers.
    let replayed = a.lease_reply_at(0, again[0].1);
    assert_eq!(replayed, second);
    assert_ne!(first.pasids, second.pasids);

    // RETURN: recognised by its readable bytes, list included.
    let r = a.give_back(&[1, 2, 3, 4], 32);
    assert_eq!(status(&r), Some(Status::Ok));
    a.rewind_used(1);
    d.kill9();
    d.restart();
    a.reconnect(&d.path("a.sock"));
    let again = a.wait_used(1, Duration::from_secs(10));
    assert_eq!(
        a.lease_reply_at(0, again[0].1).response,
        r,
        "OK again, not NOT_FOUND"
    );
    assert_eq!(held_by(&d, "a"), (5..=32).collect::<Vec<u32>>());
    assert_eq!(vm_json(&d, "a")["counters"]["replayed"], 1);

    // A new request at the next position is carried out.
    let more = a.grant(4, 28, 1, 0xfffff);
    assert_eq!(more.pasids, vec![1, 2, 3, 4]);
}
