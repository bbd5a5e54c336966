// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Sessions kept in systemd's file descriptor store across a restart or a
//! crash of the daemon, against the real daemon with the test playing
//! systemd ([`frontend::manager`]) and QEMU ([`frontend::TestVm`]).
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod frontend;

use std::time::{Duration, Instant};

use frontend::manager::{roles, Manager};
use frontend::{held_by, Daemon, TestVm};

const WAIT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A started session stores its connection, image, guest memory, kick and
/// call; its end removes them all at once: the guest memory is not pinned
/// by the store. Under `--user` and the seccomp filter.
#[test]
fn sessions_are_stored_and_removed_under_the_sandbox() {
    let mut args = vec!["--vm", "a={dir}/a.sock", "--state-dir", "{dir}/state"];
    if is_root() {
        args.extend(["--user", "nobody"]);
    }
    let m = Manager::new();
    let d = m.start(&args);
    assert_eq!(
        m.ready(),
        1,
        "READY=1 through the notify socket opened before the filter"
    );
    let mut vm = TestVm::connect(&d.path("a.sock"));
    assert_eq!(vm.alloc_ok(1, 10), 1);
    m.wait_names("a started session", WAIT, |n| {
        roles(n, "a") == ["call0-", "conn", "image", "kick0-", "mem"]
    });
    d.wait_log("event=sandbox");
    drop(vm);
    m.wait_names("empty", WAIT, <[String]>::is_empty);
    // Every store has its removal.
    let msgs = m.messages();
    let stored = msgs.iter().filter(|t| t.starts_with("FDSTORE=1")).count();
    let removed = msgs
        .iter()
        .filter(|t| t.starts_with("FDSTOREREMOVE=1"))
        .count();
    assert_eq!(stored, 5, "{msgs:?}");
    assert_eq!(removed, 5, "{msgs:?}");
    let log = d.log();
    assert!(!log.contains("fdstore-failed"), "{log}");
}

/// SIGTERM, then a new daemon with the store: the VM's connection never
/// closes, it goes on allocating on the same ring, and its PASIDs stay.
#[test]
fn a_restart_is_invisible_to_the_vm() {
    let m = Manager::new();
    let mut d = m.start(&["--vm", "a={dir}/a.sock", "--state-dir", "{dir}/state"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let first = vm.alloc_ok(1, 100);
    m.wait_names("stored", WAIT, |n| n.len() == 5);
    d.term();
    m.respawn(&mut d, "takeover");
    d.wait_ready(WAIT);
    d.wait_log("vm=a event=resume started=true");
    let second = vm.alloc_ok(1, 100);
    assert_ne!(first, second);
    assert_eq!(held_by(&d, "a"), {
        let mut v = vec![first, second];
        v.sort_unstable();
        v
    });
    let vms = d.ctl_json(&["vms"]);
    assert!(vms[0]["resumed_at"].as_u64().is_some(), "{vms}");
    let (ok, text, _) = d.ctl(&["vms"]);
    assert!(ok);
    assert!(
        text.contains("resumed 0s ago") || text.contains("resumed 1s ago"),
        "{text}"
    );
    let (_, metrics, _) = d.ctl(&["metrics"]);
    assert!(
        metrics.contains("vpasid_session_takeovers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vpasid_fdstore_descriptors 5"),
        "{metrics}"
    );
    // The session still ends for real.
    drop(vm);
    m.wait_names("empty", WAIT, <[String]>::is_empty);
}

/// SIGKILL while requests are in flight: what the dead daemon carried out
/// but did not return is answered from durable state, what it never saw
/// is served; host and guest agree exactly.
#[test]
fn a_crash_mid_traffic_loses_nothing_and_repeats_nothing() {
    let m = Manager::new();
    let mut d = m.start(&["--vm", "a={dir}/a.sock", "--state-dir", "{dir}/state"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let mut held: Vec<u32> = (0..20).map(|_| vm.alloc_ok(1, 1000)).collect();
    m.wait_names("stored", WAIT, |n| n.len() == 5);
    // A batch posted, then the daemon dies under it.
    let batch: Vec<_> = (0..16)
        .map(|_| {
            let tag = vm.tag();
            pasid_protocol::Request::Alloc {
                tag,
                min: 1,
                max: 1000,
            }
        })
        .collect();
    let heads = vm.post(&batch);
    vm.kick();
    d.kill9();
    m.respawn(&mut d, "after SIGKILL");
    d.wait_ready(WAIT);
    let used = vm.wait_used(16, WAIT);
    assert_eq!(used.len(), heads.len());
    for i in 0..16u16 {
        let r = vm.read_response(i);
        assert_eq!(r.status, pasid_protocol::Status::Ok as u16, "{r:?}");
        held.push(r.pasid);
    }
    held.sort_unstable();
    let mut unique = held.clone();
    unique.dedup();
    assert_eq!(unique, held, "a PASID handed out twice");
    assert_eq!(held_by(&d, "a"), held, "host and guest disagree");
}

/// A session whose device no driver started is taken over without
/// durable state (it holds nothing; closing it would abort QEMU). A
/// started one is not: nothing vouches for its PASIDs.
#[test]
fn without_state_only_unstarted_sessions_are_taken_over() {
    let m = Manager::new();
    let mut d = m.start(&[
        "--vm",
        "idle={dir}/idle.sock",
        "--vm",
        "busy={dir}/busy.sock",
    ]);
    let idle = frontend::connect_frontend(&d.path("idle.sock"));
    vhost::VhostBackend::set_owner(&idle).unwrap();
    let _ = vhost::VhostBackend::get_features(&idle).unwrap();
    let mut busy = TestVm::connect(&d.path("busy.sock"));
    busy.alloc_ok(1, 10);
    m.wait_names("both stored", WAIT, |n| {
        roles(n, "idle") == ["conn", "image"] && roles(n, "busy").len() == 5
    });
    d.term();
    m.respawn(&mut d, "no state");
    d.wait_ready(WAIT);
    let log = d.wait_log("vm=idle event=resume started=false");
    assert!(
        log.contains("vm=busy event=takeover-dropped reason=\"its driver may hold PASIDs"),
        "{log}"
    );
    m.wait_names("busy gone", WAIT, |n| roles(n, "busy").is_empty());
    // The idle session is served by the new daemon.
    assert!(vhost::VhostBackend::get_features(&idle).is_ok());
}

/// A store holding a session the new durable state does not know (the
/// state directory was replaced): dropped, with its reason, and the VM's
/// connection closes; nothing stays in the store.
#[test]
fn a_session_the_state_does_not_know_is_dropped() {
    let m = Manager::new();
    let (mut d, mut vms) = vms_stored(&m, 1);
    let vm = vms.remove(0);
    d.kill9();
    std::fs::remove_dir_all(d.path("state")).unwrap();
    m.respawn(&mut d, "new state");
    d.wait_ready(WAIT);
    d.wait_log("vm=v0 event=takeover-dropped reason=\"durable state does not know it");
    m.wait_names("empty", WAIT, <[String]>::is_empty);
    assert!(vm.nothing_used_within(Duration::from_millis(100)));
}

/// The VM exits while the daemon is down: systemd drops the hung-up
/// connection (FDPOLL), and the new daemon closes what is left of the
/// session (guest memory, eventfds, image) and reclaims its PASIDs.
#[test]
fn a_vm_that_exits_while_the_daemon_is_down_leaves_the_store() {
    let m = Manager::new();
    let (mut d, mut vms) = vms_stored(&m, 1);
    let vm = vms.remove(0);
    d.kill9();
    drop(vm);
    m.wait_names("connection dropped by FDPOLL", WAIT, |n| {
        !roles(n, "v0").contains(&"conn".to_string())
    });
    m.respawn(&mut d, "vm gone");
    d.wait_ready(WAIT);
    d.wait_log("vm=v0 event=takeover-dropped");
    m.wait_names("empty", WAIT, <[String]>::is_empty);
    // The session ended while the daemon was down: released at start
    // (no hold-over configured), as if the daemon had seen it end.
    d.wait_log("vm=v0 event=session-ended-while-down");
    assert_eq!(held_by(&d, "v0"), Vec::<u32>::new());
}

/// A daemon with `n` VM slots, durable state and no hold-over under `m`,
/// each slot's VM connected, holding one PASID, and its session stored.
fn vms_stored(m: &std::sync::Arc<Manager>, n: usize) -> (Daemon, Vec<TestVm>) {
    // Hold-over 0: a session that ends releases its VM at once (the test
    // process, their QEMU, lives on).
    let mut args: Vec<String> = vec![
        "--state-dir".into(),
        "{dir}/state".into(),
        "--holdover".into(),
        "0".into(),
    ];
    for i in 0..n {
        args.push("--vm".into());
        args.push(format!("v{i}={{dir}}/v{i}.sock"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = m.start(&argv);
    let mut vms: Vec<TestVm> = (0..n)
        .map(|i| TestVm::connect(&d.path(&format!("v{i}.sock"))))
        .collect();
    for vm in &mut vms {
        vm.alloc_ok(1, 1 << 19);
    }
    m.wait_names("all stored", Duration::from_secs(60), |s| s.len() == 5 * n);
    (d, vms)
}

/// 100 VMs, one daemon restart: every VM answered again, timed.
#[test]
fn a_hundred_vms_are_taken_over_at_once() {
    const N: usize = 100;
    let m = Manager::new();
    let (mut d, mut vms) = vms_stored(&m, N);
    let stopping = Instant::now();
    d.term();
    let down = stopping.elapsed();
    let restarting = Instant::now();
    m.respawn(&mut d, "100 VMs");
    for vm in &mut vms {
        vm.alloc_ok(1, 1 << 19);
    }
    let back = restarting.elapsed();
    eprintln!(
        "figure: {N} VMs: SIGTERM to exit {} ms; respawn to every VM served again {} ms",
        down.as_millis(),
        back.as_millis()
    );
    let log = d.log();
    assert_eq!(log.matches("event=resume started=true").count(), N);
    assert!(back < Duration::from_secs(60));
}

/// Restarted without the store (`systemctl stop`, then `start`): today's
/// behaviour, the sessions are not taken over.
#[test]
fn without_the_store_a_restart_loses_the_sessions() {
    let m = Manager::new();
    let (mut d, mut vms) = vms_stored(&m, 1);
    let _vm = vms.remove(0);
    d.term();
    m.flush();
    m.respawn(&mut d, "store flushed");
    d.wait_ready(WAIT);
    assert!(!d.log().contains("event=resume"));
    let _ = Daemon::stop;
}

/// Figures (printed; run with `--nocapture`): time from the old daemon's
/// exit (reaped) to the first request the new one serves, and to every VM
/// served again, for SIGTERM and SIGKILL, with 1 and 100 VM slots. The
/// bound only catches a take-over that does not happen.
#[test]
fn figure_restart_gap() {
    for n in [1usize, 100] {
        for kill in [false, true] {
            let m = Manager::new();
            let (mut d, mut vms) = vms_stored(&m, n);
            if kill {
                d.kill9();
            } else {
                d.term();
            }
            let exited = Instant::now();
            m.respawn(&mut d, "figure");
            vms[0].alloc_ok(1, 1 << 19);
            let first = exited.elapsed();
            for vm in vms.iter_mut().skip(1) {
                vm.alloc_ok(1, 1 << 19);
            }
            let all = exited.elapsed();
            eprintln!(
                "figure: slots={n} signal={} exit_to_first_request_ms={:.1} exit_to_all_served_ms={:.1}",
                if kill { "KILL" } else { "TERM" },
                first.as_secs_f64() * 1e3,
                all.as_secs_f64() * 1e3
            );
            assert!(all < Duration::from_secs(60));
        }
    }
}
