// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! RECONCILE (docs/protocol.md 5.x.6.13) against the real daemon over its
//! real socket: negotiation, resuming after a SIGKILL with durable state
//! (kept, and a lost ALLOC's PASID dropped), resuming after state was lost
//! while another VM took some PASIDs (conflicts on both sides' views), a
//! reconcile over several requests, and what `pasidctl` and the metrics
//! count.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use frontend::{driver, held_by, vm_json, Daemon, TestVm, VmOptions};
use pasid_protocol::{ReconcileResult, Response, Status};

fn results(values: &[ReconcileResult]) -> Vec<u32> {
    values.iter().map(|r| *r as u32).collect()
}

fn counters(d: &Daemon, name: &str) -> serde_json::Value {
    vm_json(d, name)["counters"].clone()
}

/// F_RECONCILE is offered; a driver that did not accept it is answered
/// INVALID, and nothing of its holdings changes.
#[test]
fn reconcile_needs_the_feature() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let a = driver(&d, "a", VmOptions::reconcile());
    assert!(a.reconcile_negotiated(), "F_RECONCILE offered");
    drop(a);
    let mut v1 = TestVm::connect(&d.path("a.sock"));
    let p = v1.alloc_ok(1, 100);
    let reply = v1.reconcile(&[], true, true);
    assert_eq!(
        reply.response,
        Response::new(Status::Invalid, reply.response.tag)
    );
    assert_eq!(reply.used_len, 16);
    assert_eq!(held_by(&d, "a"), vec![p]);
}

/// After a SIGKILL and a restart with `--state-dir`, a re-plugged driver
/// reconciles the PASIDs it knows: every one is kept, and the PASID of an
/// ALLOC whose answer it never saw is dropped. It then allocates and frees
/// as usual, and pasidctl and the metrics count the resume.
#[test]
fn resume_after_restart_keeps_named_and_drops_the_lost_alloc() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let mut d = Daemon::start(&["--vm", "a={dir}/a.sock", "--state-dir", &state_arg]);
    let mut a = driver(&d, "a", VmOptions::reconcile());
    let known: Vec<u32> = (0..3).map(|_| a.alloc_ok(1, 100)).collect();
    // Carried out and journaled, but the guest never learns of it.
    let lost = a.alloc_ok(1, 100);
    d.kill9();
    d.restart();
    assert_eq!(held_by(&d, "a"), vec![1, 2, 3, 4]);

    let mut a = driver(&d, "a", VmOptions::reconcile());
    let reply = a.reconcile(&known, true, true);
    assert_eq!(reply.response, Response::ok(reply.response.tag, 1));
    assert_eq!(reply.used_len, 16 + 12);
    assert_eq!(reply.pasids, results(&[ReconcileResult::Kept; 3]));
    assert_eq!(held_by(&d, "a"), known);

    // Allocation goes on: the dropped PASID is the lowest free one.
    assert_eq!(a.alloc_ok(1, 100), lost);
    assert_eq!(a.free(known[0]), Status::Ok);
    assert_eq!(held_by(&d, "a"), vec![2, 3, lost]);

    let c = counters(&d, "a");
    assert_eq!(c["resumes"], 1, "{c}");
    assert_eq!(c["conflicts"], 0, "{c}");
    assert_eq!(c["requests"]["RECONCILE"], 1, "{c}");
    let log = d.wait_log("event=resumed");
    assert!(
        log.contains("vm=a event=resumed kept=3 granted=0 conflicts=0 refused=0 dropped=1"),
        "{log}"
    );
    let metrics = d.ctl(&["metrics"]).1;
    assert!(
        metrics.contains("vpasid_vm_resumes_total{vm=\"a\"} 1"),
        "{metrics}"
    );

    // The journal holds the reconcile: recovery carries it out again (and
    // checks its results), so a second restart finds the same holdings.
    drop(a);
    let before = held_by(&d, "a");
    d.kill9();
    d.restart();
    assert_eq!(held_by(&d, "a"), before);
}

/// A reconcile re-delivered after a restart (its chain was journaled but
/// never used) gets its first answer again and changes nothing.
#[test]
fn redelivered_reconcile_gets_its_first_answer() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let mut d = Daemon::start(&["--vm", "a={dir}/a.sock", "--state-dir", &state_arg]);
    let mut a = driver(&d, "a", VmOptions::reconcile());
    let p = a.alloc_ok(1, 100);
    let first = a.reconcile(&[p, 50], true, true);
    assert_eq!(
        first.pasids,
        results(&[ReconcileResult::Kept, ReconcileResult::Granted])
    );
    d.kill9();
    a.rewind_used(1);
    d.restart();
    a.reconnect(&d.path("a.sock"));
    let used = a.wait_used(1, std::time::Duration::from_secs(10));
    let (head, used_len) = used[0];
    let again = a.lease_reply_at((head / 2) as u16, used_len);
    assert_eq!(again.response, first.response);
    assert_eq!(again.pasids, first.pasids);
    assert_eq!(counters(&d, "a")["replayed"], 1);
    assert_eq!(held_by(&d, "a"), vec![p, 50]);
}

/// State lost (a restart without `--state-dir`) while VM b took PASIDs 1
/// and 2: a's reconcile of 1, 2, 3 reports 1 and 2 as conflicts and
/// re-grants 3; b keeps its PASIDs, and the conflicts are logged with
/// their holder and counted.
#[test]
fn state_lost_conflicts_are_reported_and_free_ones_regranted() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--vm", "b={dir}/b.sock"]);
    let mut b = TestVm::connect(&d.path("b.sock"));
    assert_eq!(b.alloc_ok(1, 100), 1);
    assert_eq!(b.alloc_ok(1, 100), 2);

    let mut a = driver(&d, "a", VmOptions::reconcile());
    let reply = a.reconcile(&[1, 2, 3, 0], true, true);
    assert_eq!(reply.response, Response::ok(reply.response.tag, 0));
    assert_eq!(
        reply.pasids,
        results(&[
            ReconcileResult::Conflict,
            ReconcileResult::Conflict,
            ReconcileResult::Granted,
            ReconcileResult::Refused,
        ])
    );
    assert_eq!(held_by(&d, "a"), vec![3]);
    assert_eq!(held_by(&d, "b"), vec![1, 2]);
    // b goes on unaffected; a's next ALLOC gets neither of b's.
    assert_eq!(b.alloc_ok(1, 100), 4);
    assert_eq!(a.alloc_ok(1, 100), 5);

    let c = counters(&d, "a");
    assert_eq!(
        (c["conflicts"].as_u64(), c["resumes"].as_u64()),
        (Some(2), Some(1))
    );
    let log = d.wait_log("event=reconcile-conflict pasid=2");
    assert!(
        log.contains("vm=a event=reconcile-conflict pasid=1 held_by=b"),
        "{log}"
    );
    let metrics = d.ctl(&["metrics"]).1;
    assert!(
        metrics.contains("vpasid_reconcile_conflicts_total{vm=\"a\"} 2"),
        "{metrics}"
    );
}

/// A reconcile over several requests: what each names, and what ALLOC
/// gives in between, survive LAST; the rest is dropped. A request without
/// FIRST outside a reconcile is INVALID; RESET ends one in progress.
#[test]
fn reconcile_over_several_requests() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut a = driver(&d, "a", VmOptions::reconcile());
    let held: Vec<u32> = (0..4).map(|_| a.alloc_ok(1, 100)).collect();

    let stray = a.reconcile(&[held[0]], false, true);
    assert_eq!(
        stray.response,
        Response::new(Status::Invalid, stray.response.tag)
    );
    let first = a.reconcile(&[held[0]], true, false);
    assert_eq!(first.response, Response::ok(first.response.tag, 0));
    let during = a.alloc_ok(1, 100);
    let last = a.reconcile(&[held[1], held[1]], false, true);
    assert_eq!(last.response, Response::ok(last.response.tag, 2));
    assert_eq!(last.pasids, results(&[ReconcileResult::Kept; 2]));
    assert_eq!(held_by(&d, "a"), vec![held[0], held[1], during]);

    // RESET ends a reconcile: LAST after it is INVALID.
    a.reconcile(&[], true, false);
    assert_eq!(a.reset().status, Status::Ok as u16);
    let after = a.reconcile(&[], false, true);
    assert_eq!(
        after.response,
        Response::new(Status::Invalid, after.response.tag)
    );
}

/// A live re-plug within the hold-over: the disconnected VM's PASIDs stay
/// reserved (pasidctl shows `held-over`), another VM allocating meanwhile
/// never gets them, and the new device's reconcile keeps every one.
#[test]
fn live_replug_within_the_holdover_keeps_everything() {
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,holdover=300",
        "--vm",
        "b={dir}/b.sock",
    ]);
    let mut a = driver(&d, "a", VmOptions::reconcile());
    let held: Vec<u32> = (0..3).map(|_| a.alloc_ok(1, 100)).collect();
    drop(a);
    d.wait_log("vm=a event=held-over pasids=3 seconds=300");
    let v = vm_json(&d, "a");
    let left = v["held_over_secs"].as_u64().unwrap();
    assert!((1..=300).contains(&left), "{v}");
    let (_, table, _) = d.ctl(&["vms"]);
    assert!(table.contains("held-over "), "{table}");
    assert_eq!(held_by(&d, "a"), held);

    let mut b = TestVm::connect(&d.path("b.sock"));
    let theirs: Vec<u32> = (0..3).map(|_| b.alloc_ok(1, 100)).collect();
    assert!(theirs.iter().all(|p| !held.contains(p)), "{theirs:?}");

    let mut a = driver(&d, "a", VmOptions::reconcile());
    assert_eq!(vm_json(&d, "a")["held_over_secs"], serde_json::Value::Null);
    let reply = a.reconcile(&held, true, true);
    assert_eq!(reply.response, Response::ok(reply.response.tag, 0));
    assert_eq!(reply.pasids, results(&[ReconcileResult::Kept; 3]));
    assert_eq!(held_by(&d, "a"), held);
    let c = counters(&d, "a");
    assert_eq!(
        (c["holdovers"].as_u64(), c["reclaimed"].as_u64()),
        (Some(1), Some(0))
    );
    let metrics = d.ctl(&["metrics"]).1;
    assert!(
        metrics.contains("vpasid_vm_holdovers_total{vm=\"a\"} 1"),
        "{metrics}"
    );
}

/// A fresh boot's RESET after a hold-over releases the held-over PASIDs at
/// once.
#[test]
fn reset_after_a_holdover_releases_at_once() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,holdover=300"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    a.alloc_ok(1, 100);
    a.alloc_ok(1, 100);
    drop(a);
    d.wait_log("vm=a event=held-over pasids=2");
    let mut a = TestVm::connect(&d.path("a.sock"));
    let r = a.reset();
    assert_eq!(r, Response::ok(r.tag, 2));
    assert_eq!(held_by(&d, "a"), Vec::<u32>::new());
}

/// Past the hold-over the PASIDs are reclaimed, and the reclaim is logged
/// with its reason; with the global default of 0 a disconnect reclaims at
/// once, as before hold-over existed.
#[test]
fn holdover_expiry_reclaims_and_logs() {
    let d = Daemon::start(&[
        "--holdover",
        "1",
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock,holdover=0",
    ]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    a.alloc_ok(1, 100);
    a.alloc_ok(1, 100);
    drop(a);
    d.wait_log("vm=a event=held-over pasids=2 seconds=1");
    let log = d.wait_log("vm=a event=reclaim reason=\"hold-over expired\"");
    assert!(
        log.contains("vm=a event=reclaim reason=\"hold-over expired\" references=2 pasids_freed=2"),
        "{log}"
    );
    assert_eq!(held_by(&d, "a"), Vec::<u32>::new());
    assert_eq!(vm_json(&d, "a")["held_over_secs"], serde_json::Value::Null);

    let mut b = TestVm::connect(&d.path("b.sock"));
    b.alloc_ok(1, 100);
    drop(b);
    d.wait_log("vm=b event=reclaim reason=\"disconnect\" references=1");
    assert_eq!(counters(&d, "b")["holdovers"], 0);
}

/// 5.x.6.8: after a SIGKILL and a restart with `--state-dir` (no descriptor
/// store), a VM that held PASIDs starts its hold-over afresh at the
/// restart, and it runs out as any other: released, logged. A VM with a
/// hold-over of 0 keeps its PASIDs across the restart, as before.
#[test]
fn a_restart_starts_the_holdover_again() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let mut d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,holdover=1",
        "--vm",
        "b={dir}/b.sock,holdover=0",
        "--state-dir",
        &state_arg,
    ]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    let held_a = vec![a.alloc_ok(1, 100), a.alloc_ok(1, 100)];
    let held_b = vec![b.alloc_ok(1, 100)];
    d.kill9();
    drop((a, b));
    d.restart();
    d.wait_log("vm=a event=held-over pasids=2 seconds=1 reason=\"restart\"");
    assert_eq!(held_by(&d, "a"), held_a, "held over, not yet released");
    let log = d.wait_log("vm=a event=reclaim reason=\"hold-over expired\"");
    assert!(
        log.contains("vm=a event=reclaim reason=\"hold-over expired\" references=2 pasids_freed=2"),
        "{log}"
    );
    assert!(held_by(&d, "a").is_empty());
    assert_eq!(
        held_by(&d, "b"),
        held_b,
        "hold-over 0: kept across the restart"
    );
    assert!(!log.contains("vm=b event=held-over"), "{log}");
}
