// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Sentences of docs/protocol.md and docs/operations.md that an
//! implementation written from the text alone once read differently from
//! the daemon, each pinned against the real daemon over its real socket:
//! the GET_CONFIG bounds and flags (Appendix A), a queue set up again with
//! a size that is not a power of two (5.x.2.2), the `pasid` of non-OK
//! RECONCILE answers (5.x.6.10), RETURN's INVALID precedence and the
//! `cached` figure (5.x.6.12), the rate-limit token of a RECONCILE answered
//! INVALID, a superseded reconcile, and what ends one (5.x.6.13), the
//! RECONCILE chain's readable size (5.x.6, 5.x.6.9), what counts as
//! malformed and the fields of `pasidctl vms --json` (operations.md).
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::time::{Duration, Instant};

use frontend::{
    config_body, driver, held_by, vm_json, Daemon, RawMessage, TestVm, VmOptions, VHOST_USER_REPLY,
    VHOST_USER_VERSION,
};
use pasid_protocol::{ReconcileResult, Request, Response, Status, PASID_NONE};
use vhost::vhost_user::message::FrontendReq;
use vhost::VhostBackend;

/// A driver that accepts both VIRTIO_PASID_F_LEASE and _F_RECONCILE.
fn full_driver(d: &Daemon, vm: &str) -> TestVm {
    driver(
        d,
        vm,
        VmOptions {
            lease: true,
            reconcile: true,
            ..VmOptions::default()
        },
    )
}

fn cached(d: &Daemon, name: &str) -> u64 {
    vm_json(d, name)["cached"].as_u64().unwrap()
}

fn status(r: &Response) -> Status {
    Status::from_wire(r.status).unwrap()
}

/// Sends a raw GET_CONFIG and returns the reply, `None` on a hang-up.
fn raw_get_config(vm: &TestVm, offset: u32, size: u32, flags: u32) -> Option<RawMessage> {
    vm.send_raw_message(
        FrontendReq::GET_CONFIG as u32,
        VHOST_USER_VERSION,
        &config_body(offset, size, flags, &vec![0u8; size as usize]),
    );
    vm.recv_raw_message()
}

/// Waits (bounded) until `vm`'s PASIDs are released after a hang-up.
fn wait_released(d: &Daemon, vm: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !held_by(d, vm).is_empty() {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Appendix A: a GET_CONFIG carries `size` payload bytes after its 12-byte
/// header and a message body is at most 4096 bytes, so 4084 is the largest
/// `size`: such reads past byte 32 get the empty reply and the session
/// goes on, while 4085 at 0, 4096 at 0 and 4095 at 1 end the connection.
#[test]
fn get_config_size_is_bounded_by_the_message() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let p = vm.alloc_ok(1, 100);
    for (offset, size) in [(0, 4084), (12, 4084)] {
        let reply = raw_get_config(&vm, offset, size, 0).expect("the daemon hung up");
        assert_eq!(
            reply.body,
            config_body(offset, 0, 0, &[]),
            "{size} at {offset}"
        );
        assert_eq!(reply.flags, VHOST_USER_VERSION | VHOST_USER_REPLY);
    }
    assert_eq!(vm.alloc_ok(1, 100), p + 1, "the session goes on");
    drop(vm);
    wait_released(&d, "a");

    for (offset, size) in [(0, 4085), (0, 4096), (1, 4095)] {
        let mut vm = TestVm::connect(&d.path("a.sock"));
        vm.alloc_ok(1, 100);
        assert_eq!(
            raw_get_config(&vm, offset, size, 0),
            None,
            "{size} at {offset}: expected a hang-up"
        );
        wait_released(&d, "a");
    }
}

/// Appendix A: the known GET_CONFIG flags are WRITABLE (bit 0) and
/// LIVE_MIGRATION (bit 1): with either or both a read is served; any other
/// bit ends the connection.
#[test]
fn get_config_flags_known_are_writable_and_live_migration() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let config = vm.config().encode();
    for flags in [1, 2, 3] {
        let reply = raw_get_config(&vm, 0, 32, flags).expect("the daemon hung up");
        assert_eq!(
            reply.body,
            config_body(0, 32, flags, &config),
            "flags {flags}"
        );
    }
    assert_eq!(vm.alloc_ok(1, 100), 1);
    assert_eq!(raw_get_config(&vm, 0, 32, 4), None, "bit 2 is unknown");
    wait_released(&d, "a");
}

/// 5.x.2.2: a requestq set up with 64 entries and then again, on the same
/// connection, with 100 or 3 (not powers of two) is served at 64: the
/// vhost-user library keeps the size it had, and the session goes on.
#[test]
fn queue_set_up_again_with_a_bad_size_keeps_the_old_size() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    assert_eq!(vm.alloc_ok(1, 100), 1);
    for bad in [100, 3] {
        vm.frontend.set_vring_num(0, bad).unwrap();
        // Requests are still served, at the 64-entry layout the test VM
        // keeps using.
        let p = vm.alloc_ok(1, 100);
        assert_eq!(vm.free(p), Status::Ok, "size {bad}");
    }
    assert_eq!(held_by(&d, "a"), vec![1]);
    assert!(!d.log().contains("event=misconfig"), "{}", d.log());
}

/// 5.x.6.10: every answer that is not OK carries PASID_NONE, RECONCILE's
/// included; an OK RECONCILE carries 0 without F_LAST and the number of
/// references dropped with it.
#[test]
fn reconcile_pasid_field_follows_the_general_rule() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = full_driver(&d, "a");
    let p = a.alloc_ok(1, 100);
    let lost = a.alloc_ok(1, 100);

    let invalid = a.reconcile(&[p], false, true);
    assert_eq!(status(&invalid.response), Status::Invalid);
    assert_eq!(invalid.response.pasid, PASID_NONE);
    assert_eq!(invalid.used_len, 16);

    let first = a.reconcile(&[p], true, false);
    assert_eq!(status(&first.response), Status::Ok);
    assert_eq!(first.response.pasid, 0, "no F_LAST: 0");
    let last = a.reconcile(&[], false, true);
    assert_eq!(status(&last.response), Status::Ok);
    assert_eq!(last.response.pasid, 1, "F_LAST: one reference dropped");
    assert_eq!(held_by(&d, "a"), vec![p]);
    assert!(!held_by(&d, "a").contains(&lost));
}

/// 5.x.6.12: INVALID takes precedence over NOT_FOUND and NOT_OWNER
/// wherever the invalid entry stands in a RETURN's list, and nothing is
/// released.
#[test]
fn return_invalid_wins_over_not_found_wherever_it_stands() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--vm", "b={dir}/b.sock"]);
    let mut a = full_driver(&d, "a");
    let mut b = full_driver(&d, "b");
    let mine = a.grant(2, 0, 1, 100).pasids;
    assert_eq!(mine, vec![1, 2]);
    let theirs = b.alloc_ok(1, 100);
    // 500 is not allocated, `theirs` is b's: NOT_FOUND / NOT_OWNER alone.
    assert_eq!(status(&a.give_back(&[500, mine[0]], 2)), Status::NotFound);
    assert_eq!(
        status(&a.give_back(&[theirs, mine[0]], 2)),
        Status::NotOwner
    );
    // With an invalid entry after them (0, or a repeat), INVALID wins.
    assert_eq!(status(&a.give_back(&[500, 0], 2)), Status::Invalid);
    assert_eq!(status(&a.give_back(&[theirs, 0], 2)), Status::Invalid);
    assert_eq!(
        status(&a.give_back(&[500, mine[0], mine[0]], 2)),
        Status::Invalid
    );
    assert_eq!(held_by(&d, "a"), mine, "nothing released");
}

/// 5.x.6.12 `cached`: a failed GRANT or RETURN still records the driver's
/// report, unmoved; a RETURN reporting fewer cached than it lists leaves 0;
/// a RATE_LIMITED request leaves the figure alone.
#[test]
fn cached_is_the_report_of_every_carried_out_grant_and_return() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=4"]);
    let mut a = full_driver(&d, "a");
    let got = a.grant(4, 0, 1, 100).pasids;
    assert_eq!(got.len(), 4);
    assert_eq!(cached(&d, "a"), 4);
    // At the quota: QUOTA_EXCEEDED, and the report (3) is recorded.
    let over = a.grant(1, 3, 1, 100);
    assert_eq!(status(&over.response), Status::QuotaExceeded);
    assert_eq!(cached(&d, "a"), 3);
    // A bad range: INVALID, the report (2) recorded.
    let bad = a.grant(1, 2, 50, 10);
    assert_eq!(status(&bad.response), Status::Invalid);
    assert_eq!(cached(&d, "a"), 2);
    // A failed RETURN (NOT_FOUND) records its report, unmoved.
    assert_eq!(status(&a.give_back(&[500], 4)), Status::NotFound);
    assert_eq!(cached(&d, "a"), 4);
    // A RETURN of 2 reporting 1 cached: the figure stops at 0.
    assert_eq!(status(&a.give_back(&got[..2], 1)), Status::Ok);
    assert_eq!(cached(&d, "a"), 0);
    assert_eq!(held_by(&d, "a"), got[2..].to_vec());
}

/// 5.x.6.13: an OK RECONCILE records its `cached` (clamped to what the VM
/// holds); one answered INVALID does not.
#[test]
fn reconcile_cached_becomes_the_figure_only_when_ok() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = full_driver(&d, "a");
    let got = a.grant(3, 0, 1, 100).pasids;
    assert_eq!(cached(&d, "a"), 3);
    let req = |first, last, cached| Request::Reconcile {
        tag: 7,
        first,
        last,
        count: 3,
        cached,
    };
    let r = a
        .lease_batch(&[(req(false, true, 1), got.clone())])
        .remove(0);
    assert_eq!(status(&r.response), Status::Invalid);
    assert_eq!(cached(&d, "a"), 3, "INVALID records nothing");
    let r = a
        .lease_batch(&[(req(true, true, 2), got.clone())])
        .remove(0);
    assert_eq!(status(&r.response), Status::Ok);
    assert_eq!(cached(&d, "a"), 2);
    let r = a
        .lease_batch(&[(req(true, true, 9), got.clone())])
        .remove(0);
    assert_eq!(status(&r.response), Status::Ok);
    assert_eq!(cached(&d, "a"), 3, "clamped to the 3 held");
}

/// 5.x.6.13 with 5.x.6.11: a well-formed RECONCILE answered INVALID (no
/// F_FIRST outside a reconcile) takes a token; a malformed chain does not.
#[test]
fn reconcile_answered_invalid_takes_a_token() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--rate-limit", "1/s,burst=2"]);
    let mut a = full_driver(&d, "a");
    let orphan = Request::Reconcile {
        tag: 1,
        first: false,
        last: true,
        count: 0,
        cached: 0,
    };
    let alloc = |tag| Request::Alloc {
        tag,
        min: 1,
        max: 100,
    };
    // One kick: the three are carried out back to back, well within the
    // second it takes the bucket to earn a token.
    let replies = a.lease_batch(&[
        (orphan, Vec::new()),
        (alloc(2), Vec::new()),
        (alloc(3), Vec::new()),
    ]);
    let by_tag = |tag| {
        replies
            .iter()
            .find(|r| r.response.tag == tag)
            .map(|r| status(&r.response))
            .unwrap()
    };
    assert_eq!(by_tag(1), Status::Invalid);
    assert_eq!(by_tag(2), Status::Ok);
    assert_eq!(by_tag(3), Status::RateLimited, "the INVALID took a token");
}

/// 5.x.6.13: a new F_FIRST supersedes the reconcile in progress: PASIDs
/// ALLOC gave the VM during the old one are no longer protected, and the
/// new F_LAST drops them unless it names them.
#[test]
fn superseded_reconcile_protects_nothing_of_its_own() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = full_driver(&d, "a");
    let p = a.alloc_ok(1, 100);
    assert_eq!(status(&a.reconcile(&[p], true, false).response), Status::Ok);
    let during = a.alloc_ok(1, 100);
    let again = a.reconcile(&[p], true, true);
    assert_eq!(status(&again.response), Status::Ok);
    assert_eq!(again.pasids, vec![ReconcileResult::Kept as u32]);
    assert_eq!(again.response.pasid, 1, "the ALLOC of the old one dropped");
    assert_eq!(held_by(&d, "a"), vec![p]);
    assert_ne!(p, during);
}

/// 5.x.6.13: the operator's release ends a reconcile in progress (the
/// next RECONCILE without F_FIRST is INVALID), and so does a restart of a
/// daemon with durable state, which keeps every reference.
#[test]
fn release_and_restart_end_a_reconcile() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let mut d = Daemon::start(&["--vm", "a={dir}/a.sock", "--state-dir", &state_arg]);
    let mut a = full_driver(&d, "a");
    let p = a.alloc_ok(1, 100);
    assert_eq!(status(&a.reconcile(&[p], true, false).response), Status::Ok);
    let (ok, _, err) = d.ctl(&["release", "--vm", "a", "--force"]);
    assert!(ok, "{err}");
    let orphan = a.reconcile(&[], false, true);
    assert_eq!(status(&orphan.response), Status::Invalid);

    let q = a.alloc_ok(1, 100);
    assert_eq!(status(&a.reconcile(&[q], true, false).response), Status::Ok);
    d.kill9();
    d.restart();
    let mut a = full_driver(&d, "a");
    assert_eq!(held_by(&d, "a"), vec![q], "the restart kept the reference");
    let orphan = a.reconcile(&[], false, true);
    assert_eq!(status(&orphan.response), Status::Invalid);
    assert_eq!(held_by(&d, "a"), vec![q], "and the INVALID dropped nothing");
}

/// operations.md: a well-formed request answered INVALID counts under
/// `requests` and `statuses.INVALID`, not `malformed`; a malformed chain
/// counts only as malformed.
#[test]
fn invalid_answers_are_not_malformed_chains() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let r = a.alloc(50, 10);
    assert_eq!(status(&r), Status::Invalid);
    let c = &vm_json(&d, "a")["counters"];
    assert_eq!(c["requests"]["ALLOC"], 1);
    assert_eq!(c["statuses"]["INVALID"], 1);
    assert_eq!(c["malformed"], 0);

    // flags != 0: malformed (5.x.6.1 condition 4), answered INVALID.
    let alloc = Request::Alloc {
        tag: 9,
        min: 1,
        max: 10,
    };
    let mut bytes = alloc.encode();
    bytes[2] = 1;
    let r = a.raw_request(&bytes, Duration::from_secs(10));
    assert_eq!(status(&r), Status::Invalid);
    assert_eq!(r.tag, 9);
    let c = &vm_json(&d, "a")["counters"];
    assert_eq!(c["malformed"], 1);
    assert_eq!(c["requests"]["ALLOC"], 1, "not counted as a request");
    assert_eq!(c["statuses"]["INVALID"], 1, "nor as a status");
}

/// 5.x.6 and 5.x.6.9: a RECONCILE's readable part is exactly
/// `24 + 4 * count` bytes; one PASID more or less than `count` says is a
/// malformed chain, answered INVALID with its tag echoed, and changes
/// nothing.
#[test]
fn reconcile_readable_part_is_24_plus_4_count() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = full_driver(&d, "a");
    let p = a.alloc_ok(1, 100);
    for listed in [vec![p, p + 1], Vec::new()] {
        let req = Request::Reconcile {
            tag: 0x77,
            first: true,
            last: true,
            count: 1,
            cached: 0,
        };
        let r = a.lease_batch(&[(req, listed.clone())]).remove(0);
        assert_eq!(status(&r.response), Status::Invalid, "{listed:?}");
        assert_eq!(r.response.tag, 0x77);
        assert_eq!(r.used_len, 16);
    }
    assert_eq!(vm_json(&d, "a")["counters"]["malformed"], 2);
    assert_eq!(held_by(&d, "a"), vec![p], "nothing dropped");
}

/// operations.md documents every field of `pasidctl vms --json` and of its
/// counters, as a daemon with a VM that used every opcode shows them.
#[test]
fn vms_json_fields_are_documented() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,holdover=5",
        "--vm",
        "b={dir}/b.sock",
    ]);
    let mut a = full_driver(&d, "a");
    let granted = a.grant(2, 0, 1, 100).pasids;
    assert_eq!(status(&a.give_back(&granted[..1], 1)), Status::Ok);
    let p = a.alloc_ok(1, 100);
    assert_eq!(a.free(p), Status::Ok);
    assert_eq!(
        status(&a.reconcile(&granted[1..], true, true).response),
        Status::Ok
    );
    drop(a);
    d.wait_log("vm=a event=held-over");
    let entry = vm_json(&d, "a");
    // `counters` is an object: its members are what is checked.
    let mut fields: Vec<String> = entry
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "counters")
        .cloned()
        .collect();
    fields.extend(
        entry["counters"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("counters.{k}")),
    );
    assert!(fields.iter().any(|f| f == "held_over_secs"), "{entry}");
    for op in ["ALLOC", "FREE", "GRANT", "RETURN", "RECONCILE"] {
        assert!(
            entry["counters"]["requests"][op].as_u64() > Some(0),
            "{entry}"
        );
        assert!(
            docs.contains(&format!("`{op}`")),
            "operations.md names {op}"
        );
    }
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !docs.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented vms --json fields: {missing:?}"
    );
}
