// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The real daemon over its real sockets: vhost-user handshake, memfd guest
//! memory, real vrings and eventfds, and pasidctl against it.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use frontend::{
    config_body, held_by, Daemon, RawDesc, RawMessage, TestVm, VmOptions, SCRATCH_GPA,
    VHOST_USER_REPLY, VHOST_USER_VERSION,
};
use pasid_protocol::{Request, Status, PASID_NONE, RESPONSE_SIZE, VERSION};
use vhost::vhost_user::message::{
    FrontendReq, VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

const LONG: Duration = Duration::from_secs(10);

fn status(r: pasid_protocol::Response) -> Status {
    Status::from_wire(r.status).unwrap()
}

#[test]
fn config_space_describes_the_vm() {
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,quota=7,range=100-200",
        "--pasid-bits",
        "16",
    ]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let cfg = vm.config();
    assert_eq!(cfg.version, VERSION);
    assert_eq!(cfg.pasid_bits, 16);
    assert_eq!((cfg.pasid_min, cfg.pasid_max), (100, 200));
    assert_eq!(cfg.quota, 7);
    let stats = d.ctl_json(&["stats"]);
    assert_eq!(stats["space_id"].as_u64(), Some(cfg.space_id));
}

#[test]
fn two_vms_allocating_concurrently_get_disjoint_pasids() {
    let d = Daemon::start(&["--socket-path", "{dir}/vm.sock", "--socket-count", "2"]);
    let paths = [d.path("vm.sock0"), d.path("vm.sock1")];
    let per_vm = 300;
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let mut vm = TestVm::connect(p);
                    let mut mine = Vec::new();
                    // Batches of 10 and singles interleave with the other VM.
                    while mine.len() < per_vm {
                        let reqs: Vec<_> = (0..10)
                            .map(|i| Request::Alloc {
                                tag: (mine.len() + i) as u64,
                                min: 1,
                                max: 0xfffff,
                            })
                            .collect();
                        for r in vm.batch(&reqs) {
                            assert_eq!(status(r), Status::Ok);
                            mine.push(r.pasid);
                        }
                    }
                    (vm, mine)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Check the host's view while both VMs are still connected.
        for (i, (_, mine)) in results.iter().enumerate() {
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(held_by(&d, &format!("vm{i}")), sorted);
        }
        results.into_iter().map(|(_, mine)| mine).collect()
    });
    let a: BTreeSet<_> = got[0].iter().collect();
    let b: BTreeSet<_> = got[1].iter().collect();
    assert_eq!(a.len(), per_vm, "VM 0 got a PASID twice");
    assert_eq!(b.len(), per_vm, "VM 1 got a PASID twice");
    assert!(a.is_disjoint(&b), "a PASID was given to both VMs");
    assert!(!a.contains(&0) && !b.contains(&0), "PASID 0 handed out");
}

#[test]
fn free_checks_ownership_and_existence() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--vm", "b={dir}/b.sock"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    let p = a.alloc_ok(1, 100);
    assert_eq!(p, 1, "lowest free PASID");
    assert_eq!(b.free(p), Status::NotOwner);
    assert_eq!(held_by(&d, "a"), vec![p], "NOT_OWNER must not free it");
    assert_eq!(b.free(50), Status::NotFound);
    assert_eq!(b.free(0), Status::Invalid);
    assert_eq!(b.free(1 << 20), Status::Invalid);
    assert_eq!(a.free(p), Status::Ok);
    assert_eq!(a.free(p), Status::NotFound);
    assert!(held_by(&d, "a").is_empty());
}

#[test]
fn ranges_reserved_ids_and_bad_ranges() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,range=10-20", "--reserve", "12-13"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    // Lowest free in [1, 100] ∩ [10, 20] minus reserved 12-13.
    let got: Vec<u32> = (0..9).map(|_| a.alloc_ok(1, 100)).collect();
    assert_eq!(got, vec![10, 11, 14, 15, 16, 17, 18, 19, 20]);
    assert_eq!(status(a.alloc(1, 100)), Status::NoSpace);
    let tag = a.tag();
    let r = a.request(Request::Alloc {
        tag,
        min: 30,
        max: 20,
    });
    assert_eq!((status(r), r.pasid), (Status::Invalid, PASID_NONE));
    assert_eq!(status(a.alloc(1 << 20, u32::MAX)), Status::Invalid);
}

#[test]
fn quota_is_a_clean_status() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=3", "--vm", "b={dir}/b.sock"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    for _ in 0..3 {
        a.alloc_ok(1, 1000);
    }
    assert_eq!(status(a.alloc(1, 1000)), Status::QuotaExceeded);
    b.alloc_ok(1, 1000); // the other VM is unaffected
    assert_eq!(a.free(1), Status::Ok);
    a.alloc_ok(1, 1000);
    // The operator raises the quota at run time.
    let (ok, out, _) = d.ctl(&["quota", "--vm", "a", "4"]);
    assert!(ok, "{out}");
    a.alloc_ok(1, 1000);
    assert_eq!(status(a.alloc(1, 1000)), Status::QuotaExceeded);
    let vms = d.ctl_json(&["vms"]);
    let va = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "a")
        .unwrap();
    assert_eq!(
        (va["held"].as_u64(), va["quota"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(
        va["counters"]["statuses"]["QUOTA_EXCEEDED"].as_u64(),
        Some(2)
    );
}

#[test]
fn reset_and_disconnect_reclaim_and_the_slot_reconnects() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let path = d.path("a.sock");
    let mut vm = TestVm::connect(&path);
    for _ in 0..5 {
        vm.alloc_ok(1, 100);
    }
    let r = vm.reset();
    assert_eq!(
        (status(r), r.pasid),
        (Status::Ok, 5),
        "RESET reports references released"
    );
    assert!(held_by(&d, "a").is_empty());
    for _ in 0..4 {
        vm.alloc_ok(1, 100);
    }
    drop(vm); // QEMU exits or crashes
    d.wait_log("vm=a event=reclaim reason=\"disconnect\" references=4 pasids_freed=4");
    assert!(held_by(&d, "a").is_empty());
    // The VM restarts and connects to the same slot.
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.alloc_ok(1, 100), 1, "reclaimed PASIDs are reusable");
    let vms = d.ctl_json(&["vms"]);
    assert_eq!(vms[0]["connected"], true);
    assert_eq!(vms[0]["counters"]["connects"].as_u64(), Some(2));
}

#[test]
fn host_references_pin_a_guest_pasid() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let p = vm.alloc_ok(1, 100);
    let got = d.ctl_json(&["get", &p.to_string(), "--holder", "iommu"]);
    assert_eq!(got["refs"].as_u64(), Some(2));
    assert_eq!(vm.free(p), Status::Ok);
    // Still pinned: not reusable, listed with the host holder only.
    assert_eq!(vm.alloc_ok(1, 100), p + 1);
    let list = d.ctl_json(&["pasids"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pasid"] == p)
        .unwrap();
    assert_eq!(entry["holders"][0]["owner"], "iommu");
    assert_eq!(entry["holders"][0]["kind"], "host");
    let put = d.ctl_json(&["put", &p.to_string(), "--holder", "iommu"]);
    assert_eq!(put["freed"], true);
    assert_eq!(vm.alloc_ok(1, 100), p, "freed at the last put");
    // Human output and errors.
    let (ok, out, _) = d.ctl(&["pasids"]);
    assert!(ok && out.contains("a (vm) x1"), "{out}");
    let (ok, _, err) = d.ctl(&["put", "77"]);
    assert!(!ok);
    assert_eq!(err.trim(), "pasidctl: PASID 77 is not allocated");
    let (ok, _, err) = d.ctl(&["get", &p.to_string(), "--holder", "a"]);
    assert!(!ok && err.contains("is a VM slot"), "{err}");
    let (ok, _, err) = d.ctl(&["release", "--vm", "nope"]);
    assert!(
        !ok && err.trim() == "pasidctl: no VM named \"nope\"",
        "{err}"
    );
}

#[test]
fn operator_release_drops_a_vm() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    vm.alloc_ok(1, 100);
    vm.alloc_ok(1, 100);
    let r = d.ctl_json(&["release", "--vm", "a", "--force"]);
    assert_eq!(r["released"].as_u64(), Some(2));
    assert_eq!(vm.free(1), Status::NotFound);
}

/// Malformed chains of every shape get INVALID or come back unused, and
/// another VM allocating meanwhile sees nothing of it.
#[test]
fn malformed_chains_do_not_harm_the_other_vm() {
    let d = Daemon::start(&["--vm", "bad={dir}/bad.sock", "--vm", "good={dir}/good.sock"]);
    let mut bad = TestVm::connect(&d.path("bad.sock"));
    let mut good = TestVm::connect(&d.path("good.sock"));
    let req = Request::Alloc {
        tag: 9,
        min: 1,
        max: 10,
    }
    .encode();
    let rd = |addr: u64, len: u32, next: Option<u16>| RawDesc {
        addr,
        len,
        flags: if next.is_some() {
            VRING_DESC_F_NEXT as u16
        } else {
            0
        },
        next: next.unwrap_or(0),
    };
    let wr = |addr: u64, len: u32| RawDesc {
        addr,
        len,
        flags: VRING_DESC_F_WRITE as u16,
        next: 0,
    };
    let r_at = SCRATCH_GPA;
    let w_at = SCRATCH_GPA + 0x100;
    bad.write_at(r_at, &req);
    // (name, chain, expected used length)
    let cases: Vec<(&str, Vec<RawDesc>, u32)> = vec![
        ("no response buffer", vec![rd(r_at, 24, None)], 0),
        (
            "response too short",
            vec![rd(r_at, 24, Some(1)), wr(w_at, 8)],
            0,
        ),
        (
            "request too short",
            vec![rd(r_at, 8, Some(1)), wr(w_at, 16)],
            16,
        ),
        (
            "request too long",
            vec![rd(r_at, 4096, Some(1)), wr(w_at, 16)],
            16,
        ),
        ("only writable", vec![wr(w_at, 16)], 16),
        (
            "readable after writable",
            vec![
                RawDesc {
                    flags: (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                    next: 1,
                    ..wr(w_at, 16)
                },
                rd(r_at, 24, None),
            ],
            0,
        ),
        (
            "request outside memory",
            vec![rd(1 << 40, 24, Some(1)), wr(w_at, 16)],
            0,
        ),
        (
            "response outside memory",
            vec![rd(r_at, 24, Some(1)), wr(u64::MAX - 8, 16)],
            0,
        ),
        (
            "zero-length everything",
            vec![rd(r_at, 0, Some(1)), wr(w_at, 0)],
            0,
        ),
    ];
    for (name, chain, expect_len) in &cases {
        for (i, desc) in chain.iter().enumerate() {
            let mut desc = *desc;
            if desc.flags & VRING_DESC_F_NEXT as u16 != 0 {
                desc.next = i as u16 + 1;
            }
            bad.write_desc(i as u16, desc);
        }
        bad.write_at(w_at, &[0xee; 16]);
        bad.push_avail(0);
        bad.publish();
        bad.kick();
        let used = bad.wait_used(1, LONG);
        assert_eq!(used, vec![(0, *expect_len)], "case {name:?}");
        if *expect_len == RESPONSE_SIZE as u32 {
            let resp = bad.read_response_at(w_at);
            assert_eq!(
                Status::from_wire(resp.status),
                Some(Status::Invalid),
                "case {name:?}"
            );
        }
        // The other VM keeps being served normally.
        good.alloc_ok(1, 0xfffff);
    }
    // Unknown opcode and non-zero flags: INVALID with the tag echoed.
    let mut raw = pasid_protocol::RawRequest::decode(&req);
    raw.opcode = 0x99;
    raw.tag = 0x1234;
    let r = bad.raw_request(&raw.encode(), LONG);
    assert_eq!((status(r), r.tag), (Status::Invalid, 0x1234));
    raw.opcode = 1;
    raw.flags = 1;
    assert_eq!(
        status(bad.raw_request(&raw.encode(), LONG)),
        Status::Invalid
    );
    // The bad VM itself still works after all that.
    bad.alloc_ok(1, 0xfffff);
    let vms = d.ctl_json(&["vms"]);
    let vb = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "bad")
        .unwrap();
    assert_eq!(
        vb["counters"]["malformed"].as_u64(),
        Some(cases.len() as u64 + 2)
    );
    let log = d.log();
    assert!(log.contains("vm=bad event=guest-error"), "{log}");
    assert!(!log.contains("vm=good event=guest-error"), "{log}");
}

#[test]
fn a_kick_with_nothing_queued_is_harmless() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    for _ in 0..100 {
        vm.kick();
    }
    assert!(vm.nothing_used_within(Duration::from_millis(100)));
    vm.alloc_ok(1, 10);
}

#[test]
fn without_event_idx_every_request_is_signalled() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let opts = VmOptions {
        event_idx: false,
        ..VmOptions::default()
    };
    let mut vm = TestVm::connect_with(&d.path("a.sock"), opts);
    for i in 1..=20 {
        assert_eq!(vm.alloc_ok(1, 100), i);
    }
}

/// Waits (bounded) until the log holds `needle` at least `count` times.
fn wait_log_count(d: &Daemon, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let log = d.log();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?} {count} times:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 5.x.2: queue sizes that are powers of two up to 1024 are served. Any
/// other size up to 32768 leaves the queue unserved for the session (one
/// log line names it) while the connection stays; above 32768
/// vhost-user-backend refuses SET_VRING_NUM and the connection ends.
#[test]
fn queue_sizes_are_powers_of_two_up_to_1024() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let path = d.path("a.sock");
    let with_size = |queue_size| VmOptions {
        queue_size,
        ..VmOptions::default()
    };
    for size in [2u16, 64, 1024] {
        let mut vm = TestVm::connect_with(&path, with_size(size));
        for i in 1..=3 {
            assert_eq!(vm.alloc_ok(1, 100), i, "queue of {size}");
        }
    }
    let refused = "event=misconfig the request queue size is not a power of two";
    for (round, size) in [100u16, 1000, 2048, 32768].into_iter().enumerate() {
        let mut vm = TestVm::connect_with(&path, with_size(size));
        let tag = vm.tag();
        vm.post(&[Request::Alloc {
            tag,
            min: 1,
            max: 100,
        }]);
        vm.kick();
        wait_log_count(&d, refused, round + 1);
        assert!(
            vm.nothing_used_within(Duration::from_millis(100)),
            "queue of {size}"
        );
        assert!(held_by(&d, "a").is_empty());
        assert_eq!(
            d.ctl_json(&["vms"])[0]["connected"],
            true,
            "queue of {size}"
        );
    }
    let connects = d.ctl_json(&["vms"])[0]["counters"]["connects"]
        .as_u64()
        .unwrap();
    // Above any split virtqueue: the frontend does not wait for replies, so
    // its set-up may or may not see the hang-up; the daemon's log does.
    let _ = std::panic::catch_unwind(|| TestVm::connect_with(&path, with_size(40000)));
    d.wait_log("requested queue size 40000 out of range");
    wait_log_count(&d, "vm=a event=disconnect", connects as usize);
}

/// 5.x.6.1: an avail index more than a queue ahead of the device stops the
/// queue (nothing is used, the kicks are consumed, the VM keeps its PASIDs
/// and the connection stays) until the index is back in range; then the
/// device serves on from where it stopped.
#[test]
fn an_avail_index_far_ahead_stops_the_queue_until_it_is_back_in_range() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    assert_eq!(vm.alloc_ok(1, 100), 1);
    let tag = vm.tag();
    vm.post(&[Request::Alloc {
        tag,
        min: 1,
        max: 100,
    }]);
    vm.publish_avail_idx(vm.next_avail().wrapping_add(1000));
    vm.kick();
    d.wait_log("event=guest-error request queue error");
    assert!(vm.nothing_used_within(Duration::from_millis(100)));
    assert_eq!(held_by(&d, "a"), vec![1], "the VM keeps its PASIDs");
    // The driver puts the index right: the pending request is served.
    vm.publish_avail_idx(vm.next_avail());
    vm.kick();
    let used = vm.wait_used(1, LONG);
    assert_eq!(used[0].1, RESPONSE_SIZE as u32);
    assert_eq!(vm.read_response(0), pasid_protocol::Response::ok(tag, 2));
    assert_eq!(vm.alloc_ok(1, 100), 3);
}

/// 5.x.6.7 and 5.x.6.8 with durable state. The replay window exists only
/// after a restart, for the last batch answered before it, and only on the
/// VM's first connection after the restart: there even a brand-new
/// frontend posting the old bytes at the old position gets the first
/// answer. Without a restart, or once that connection has ended, equal
/// bytes at an equal position are a new request. The PASIDs kept across
/// the restart are released when that first connection ends without RESET,
/// as at any end of a connection.
#[test]
fn the_replay_window_lasts_until_the_first_connection_after_a_restart_ends() {
    let mut d = Daemon::start(&[
        "--holdover",
        "0",
        "--vm",
        "a={dir}/a.sock",
        "--state-dir",
        "{dir}/state",
    ]);
    let path = d.path("a.sock");
    let old = Request::Alloc {
        tag: 0x1234_5678_0000_0001,
        min: 1,
        max: 100,
    };
    let answer = pasid_protocol::Response::ok(old.tag(), 1);
    let disconnect = "vm=a event=reclaim reason=\"disconnect\"";
    // No restart, no window: the same bytes at position 0 on a new
    // connection allocate again.
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.request(old), answer);
    drop(vm);
    wait_log_count(&d, disconnect, 1);
    assert!(held_by(&d, "a").is_empty());
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.request(old), answer);
    assert_eq!(held_by(&d, "a"), vec![1], "carried out again");

    // A restart: the VM keeps PASID 1, and the last batch is the window.
    // The daemon dies with the connection still up: closing it first would
    // race the kill with the disconnect's reclaim.
    d.kill9();
    drop(vm);
    d.restart();
    assert_eq!(held_by(&d, "a"), vec![1], "kept across the restart");
    // A brand-new frontend (ring from 0) posting the old bytes at the old
    // position gets the first answer; nothing is carried out (a new ALLOC
    // would have given 2).
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.request(old), answer);
    assert_eq!(held_by(&d, "a"), vec![1]);
    assert_eq!(
        d.ctl_json(&["vms"])[0]["counters"]["replayed"].as_u64(),
        Some(1)
    );
    // Past the window: new requests.
    assert_eq!(vm.alloc_ok(1, 100), 2);
    // The connection ends without RESET: the kept PASID goes too.
    drop(vm);
    let log = wait_log_count(&d, disconnect, 2);
    assert!(
        log.contains(&format!("{disconnect} references=2 pasids_freed=2")),
        "{log}"
    );
    assert!(held_by(&d, "a").is_empty());
    // The window ended with that connection.
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.request(old), answer);
    assert_eq!(held_by(&d, "a"), vec![1], "carried out: no window any more");
}

/// 5.x.6: the device carries out the chains of one notification in
/// available-ring order, and lowest-free allocation makes that order
/// visible: a FREE made available before an ALLOC frees the PASID that
/// ALLOC then gets; in the other order the ALLOC gets the next one.
#[test]
fn requests_are_carried_out_in_available_ring_order() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    assert_eq!((vm.alloc_ok(1, 100), vm.alloc_ok(1, 100)), (1, 2));
    let (t1, t2) = (vm.tag(), vm.tag());
    let r = vm.batch(&[
        Request::Free { tag: t1, pasid: 1 },
        Request::Alloc {
            tag: t2,
            min: 1,
            max: 100,
        },
    ]);
    assert_eq!((status(r[0]), r[1].pasid), (Status::Ok, 1));
    let (t3, t4) = (vm.tag(), vm.tag());
    let r = vm.batch(&[
        Request::Alloc {
            tag: t3,
            min: 1,
            max: 100,
        },
        Request::Free { tag: t4, pasid: 1 },
    ]);
    assert_eq!((r[0].pasid, status(r[1])), (3, Status::Ok));
    assert_eq!(held_by(&d, "a"), vec![2, 3]);
}

#[test]
fn a_second_frontend_on_a_busy_slot_is_turned_away() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut first = TestVm::connect(&d.path("a.sock"));
    first.alloc_ok(1, 10);
    let second = frontend::connect_frontend(&d.path("a.sock"));
    d.wait_log("vm=a event=rejected-frontend");
    // The rejected frontend sees its connection closed.
    assert!(second.get_features().is_err());
    first.alloc_ok(1, 10);
    assert_eq!(held_by(&d, "a"), vec![1, 2]);
}

/// A VM that connects again the moment it closed its connection (QEMU
/// restarted at once, a quick re-plug) is served, not turned away as a
/// second frontend: 20 times in a row, each session allocating PASIDs. The
/// slot loop reclaims each session's PASIDs before it serves the next, so
/// every session finds the same lowest PASIDs free and none leaks.
#[test]
fn an_immediate_reconnect_is_served_and_leaks_nothing() {
    const ROUNDS: usize = 20;
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let path = d.path("a.sock");
    let mut vm = TestVm::connect(&path);
    for round in 0..ROUNDS {
        let got: Vec<u32> = (0..3).map(|_| vm.alloc_ok(1, 100)).collect();
        assert_eq!(
            got,
            vec![1, 2, 3],
            "round {round}: the previous session leaked"
        );
        assert_eq!(held_by(&d, "a"), got, "round {round}");
        drop(vm);
        // No pause: the handshake fails (and the test with it) if the slot
        // turns this frontend away.
        vm = TestVm::connect(&path);
    }
    assert!(held_by(&d, "a").is_empty(), "each session started clean");
    let vms = d.ctl_json(&["vms"]);
    assert_eq!(vms[0]["connected"], true);
    assert_eq!(
        vms[0]["counters"]["connects"].as_u64(),
        Some(ROUNDS as u64 + 1)
    );
    drop(vm);
    let reclaim = "vm=a event=reclaim reason=\"disconnect\"";
    let deadline = Instant::now() + LONG;
    while d.log().matches(reclaim).count() < ROUNDS + 1 {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = d.log();
    assert_eq!(
        log.matches("vm=a event=reclaim reason=\"disconnect\" references=3 pasids_freed=3")
            .count(),
        ROUNDS,
        "{log}"
    );
    assert!(!log.contains("event=rejected-frontend"), "{log}");
    assert!(held_by(&d, "a").is_empty());
}

/// QEMU's frontend reads the config space with its own `config_size`; a
/// read inside the 32 bytes is served.
#[test]
fn partial_config_reads_are_served() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let buf = [0u8; 4];
    let (_, data) = vm
        .frontend
        .get_config(4, 4, VhostUserConfigFlags::empty(), &buf)
        .unwrap();
    assert_eq!(u32::from_le_bytes(data.try_into().unwrap()), 20);
    assert_eq!(vm.config().pasid_bits, 20);
}

/// Sends a raw GET_CONFIG of `size` bytes at `offset` on `vm`'s connection
/// and returns the reply, `None` if the daemon hung up instead.
fn raw_get_config(vm: &TestVm, offset: u32, size: u32) -> Option<RawMessage> {
    let payload = vec![0u8; size as usize];
    vm.send_raw_message(
        FrontendReq::GET_CONFIG as u32,
        VHOST_USER_VERSION,
        &config_body(offset, size, 0, &payload),
    );
    vm.recv_raw_message()
}

/// Appendix A: a read that reaches past byte 32, including one that
/// straddles it, gets the empty reply: a GET_CONFIG reply whose body is the
/// request's offset, size 0 and flags, with no payload (12 bytes). The
/// connection goes on, and the log names `config_size=32` (once per read).
#[test]
fn config_reads_past_the_config_space_get_the_empty_reply() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let p = vm.alloc_ok(1, 100);
    for (offset, size) in [(28, 8), (32, 4), (0, 256), (4000, 96)] {
        let reply = raw_get_config(&vm, offset, size).expect("the daemon hung up");
        assert_eq!(
            reply,
            RawMessage {
                request: FrontendReq::GET_CONFIG as u32,
                flags: VHOST_USER_VERSION | VHOST_USER_REPLY,
                body: config_body(offset, 0, 0, &[]),
            },
            "read of {size} bytes at {offset}"
        );
        d.wait_log(&format!("config bytes {offset}..{}", offset + size));
    }
    // The very last byte is served.
    let last = vm.config().encode()[31];
    let reply = raw_get_config(&vm, 31, 1).unwrap();
    assert_eq!(reply.body, config_body(31, 1, 0, &[last]));
    assert_eq!(vm.alloc_ok(1, 100), p + 1, "the session goes on");
    assert!(d.log().contains("config_size=32"));
}

/// Appendix A: GET_CONFIG messages that the vhost crate rejects before the
/// device sees them (size 0, reaching past 4 KiB, unknown flags) end the
/// connection, and the VM's PASIDs are reclaimed as on any disconnect.
#[test]
fn config_reads_the_vhost_crate_refuses_end_the_connection() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let path = d.path("a.sock");
    let cases: [(&str, Vec<u8>); 3] = [
        ("size 0", config_body(0, 0, 0, &[])),
        ("past 4 KiB", config_body(4090, 16, 0, &[0; 16])),
        ("unknown flags", config_body(0, 4, 0x100, &[0; 4])),
    ];
    for (round, (what, body)) in cases.iter().enumerate() {
        let mut vm = TestVm::connect(&path);
        let held = vec![vm.alloc_ok(1, 100), vm.alloc_ok(1, 100)];
        assert_eq!(held_by(&d, "a"), held);
        vm.send_raw_message(FrontendReq::GET_CONFIG as u32, VHOST_USER_VERSION, body);
        assert_eq!(vm.recv_raw_message(), None, "{what}: expected a hang-up");
        let reclaim = "vm=a event=reclaim reason=\"disconnect\" references=2 pasids_freed=2";
        let deadline = Instant::now() + LONG;
        while d.log().matches(reclaim).count() <= round {
            assert!(Instant::now() < deadline, "{what}: {}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(held_by(&d, "a").is_empty(), "{what}");
    }
}

/// 5.x.4: the config space is read-only. A SET_CONFIG changes nothing, is
/// acknowledged as done when the frontend asks for a REPLY_ACK, keeps the
/// connection, and is logged as a guest error.
#[test]
fn config_writes_change_nothing() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=7"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let before = vm.config();
    vm.frontend
        .set_config(16, VhostUserConfigFlags::WRITABLE, &99u32.to_le_bytes())
        .unwrap();
    d.wait_log("config write of 4 bytes at offset 16 ignored");
    assert_eq!(vm.config(), before);
    assert_eq!(vm.config().quota, 7);

    assert_eq!(vm.alloc_ok(1, 100), 1, "the session goes on");
}

/// 5.x.3: over vhost-user the device offers exactly the protocol features
/// CONFIG, MQ and REPLY_ACK (the vhost crate adds REPLY_ACK to every
/// backend's). With REPLY_ACK negotiated, messages are acknowledged: a
/// SET_CONFIG is answered "done" although it changes nothing.
#[test]
fn protocol_features_are_config_mq_and_reply_ack() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=7"]);
    let mut f = frontend::connect_frontend(&d.path("a.sock"));
    f.set_owner().unwrap();
    let offered = f.get_features().unwrap();
    assert_eq!(
        offered,
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << pasid_protocol::F_LEASE)
            | (1 << pasid_protocol::F_RECONCILE)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        "virtio features {offered:#x} (F_LEASE: the default --lease is not 0; F_RECONCILE always)"
    );
    f.set_features((1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
        .unwrap();
    let proto = f.get_protocol_features().unwrap();
    assert_eq!(
        proto,
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    );
    f.set_protocol_features(
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK,
    )
    .unwrap();
    // With REPLY_ACK acked, the crate's frontend asks for an ack and fails
    // unless it reads 0.
    f.set_config(16, VhostUserConfigFlags::WRITABLE, &[1, 2, 3, 4])
        .unwrap();
    d.wait_log("config write of 4 bytes at offset 16 ignored");
    let buf = [0u8; 4];
    let (_, quota) = f
        .get_config(16, 4, VhostUserConfigFlags::empty(), &buf)
        .unwrap();
    assert_eq!(quota, 7u32.to_le_bytes());
}

/// A frontend that never shares guest memory (QEMU without share=on) cannot
/// set up its ring, and the log names the fix once.
#[test]
fn unshared_memory_is_named() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let opts = VmOptions {
        share_memory: false,
        ..VmOptions::default()
    };
    // The frontend does not wait for replies, so set-up may or may not see
    // the daemon hang up; the log is what the operator reads.
    let _ = std::panic::catch_unwind(|| TestVm::connect_with(&d.path("a.sock"), opts));
    let log = d.wait_log("memory-backend-memfd,id=mem,size=...,share=on");
    assert_eq!(log.matches("share=on").count(), 1, "{log}");
    let log = d.wait_log("vm=a event=disconnect");
    assert!(!log.contains(EARLY_HANG_UP), "{log}");
}

/// What the daemon logs for a frontend that left before the guest started
/// the device.
const EARLY_HANG_UP: &str =
    "event=disconnect reason=\"the frontend left before the guest started the device\"";

/// QEMU connects when it creates the device and shares guest memory only
/// when the guest's driver starts it. A QEMU that goes away in between (a
/// failed start, `virsh destroy` before the driver loaded) is a disconnect
/// that says so, not a missing `share=on`; the next VM on the slot is
/// served.
#[test]
fn leaving_before_the_guest_started_the_device_is_no_misconfig() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    {
        // What QEMU does at device creation: the handshake and the config
        // space, no memory table and no ring.
        let mut f = frontend::connect_frontend(&d.path("a.sock"));
        f.set_owner().unwrap();
        let features = f.get_features().unwrap();
        f.set_features(
            features
                & ((1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()),
        )
        .unwrap();
        let proto = f.get_protocol_features().unwrap();
        f.set_protocol_features(proto & VhostUserProtocolFeatures::CONFIG)
            .unwrap();
        let buf = [0u8; 32];
        f.get_config(0, 32, VhostUserConfigFlags::empty(), &buf)
            .unwrap();
    }
    let log = d.wait_log(EARLY_HANG_UP);
    assert!(!log.contains("misconfig"), "{log}");
    assert!(!log.contains("share=on"), "{log}");
    // The same slot serves the next frontend, and its allocation works.
    let mut vm = TestVm::connect(&d.path("a.sock"));
    assert_eq!(vm.alloc_ok(1, 10), 1);
    drop(vm);
    let log = wait_log_count(&d, "vm=a event=disconnect", 2);
    assert_eq!(log.matches(EARLY_HANG_UP).count(), 1, "{log}");
    assert!(!log.contains("misconfig"), "{log}");
}

#[test]
fn sigterm_exits_promptly_with_vms_connected() {
    let d = Daemon::start(&["--socket-path", "{dir}/s", "--socket-count", "2"]);
    let mut vm = TestVm::connect(&d.path("s0"));
    vm.alloc_ok(1, 10);
    let sockets = [d.path("s0"), d.path("s1"), d.control.clone()];
    let start = Instant::now();
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(start.elapsed() < Duration::from_secs(2));
    for s in sockets {
        assert!(!s.exists(), "{} left behind", s.display());
    }
}

#[test]
fn start_up_errors_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
            .args(args)
            .output()
            .unwrap()
    };
    let regular = dir.path().join("file");
    std::fs::write(&regular, "x").unwrap();
    let long = format!("{}/{}", dir.path().display(), "s".repeat(110));
    let ctl = dir.path().join("ctl").display().to_string();
    for (args, needle) in [
        (vec![], "no VM socket given"),
        (
            vec![
                "--socket-path",
                regular.to_str().unwrap(),
                "--control-socket",
                &ctl,
            ],
            "is not a socket",
        ),
        (
            vec!["--socket-path", &long],
            "Unix sockets allow at most 107",
        ),
        (
            vec!["--vm", "a=/tmp/x", "--reserve", "5-1"],
            "invalid range \"5-1\"",
        ),
        (
            vec!["--fd", "77", "--control-socket", &ctl],
            "--fd 77: not a socket",
        ),
        (
            vec!["--vm", "a=/tmp/x,range=200-300", "--pasid-bits", "7"],
            "range 200-300 lies outside the PASID space 1-127",
        ),
        (
            vec!["--vm", "a=/tmp/x,range=10-20", "--reserve", "10-20"],
            "every PASID of its range 10-20 is reserved",
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let caps = run(&["--print-capabilities"]);
    assert!(caps.status.success());
    let v: serde_json::Value = serde_json::from_slice(&caps.stdout).unwrap();
    assert_eq!(v["type"], "pasid");
}

#[test]
fn an_inherited_listening_fd_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    // Clear CLOEXEC so the child inherits it under the same number.
    // SAFETY: fcntl on our own open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let ctl = dir.path().join("ctl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
        .args(["--fd", &fd.to_string(), "--control-socket"])
        .arg(&ctl)
        .spawn()
        .unwrap();
    let mut vm = TestVm::connect(&path);
    assert_eq!(vm.alloc_ok(1, 10), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
