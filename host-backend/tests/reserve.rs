// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Migration pre-flight (issue 22) against real daemons over their real
//! sockets: `pasidctl export` on one daemon read by `pasidctl reserve` on
//! another; a reservation is all or nothing (each conflict named with its
//! holder, exit status 1, nothing reserved), counts against the quota,
//! shows in `vms`, `pasids`, the metrics and the log, is kept across a
//! SIGKILL (journal and snapshot), runs out at its deadline, and ends
//! when the VM connects: its driver's RECONCILE then finds every PASID
//! KEPT. `detach`'s hold keeps a VM's PASIDs after its disconnect even
//! with a hold-over of 0.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use frontend::{driver, held_by, vm_json, Daemon, TestVm, VmOptions};
use pasid_protocol::{ReconcileResult, Status};
use serde_json::{json, Value};

/// `pasidctl --socket CONTROL ARGS` with `stdin` on its standard input.
fn ctl_with_stdin(d: &Daemon, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pasidctl"))
        .arg("--socket")
        .arg(&d.control)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `pasidctl reserve --vm VM --from - EXTRA` fed `export`; returns (exit
/// code, stdout, stderr).
fn reserve(d: &Daemon, vm: &str, export: &Value, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["reserve", "--vm", vm, "--from", "-"];
    args.extend_from_slice(extra);
    let out = ctl_with_stdin(d, &args, &export.to_string());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pasidctl export --vm VM`, parsed (printed as JSON without --json).
fn export(d: &Daemon, vm: &str) -> Value {
    let (ok, out, err) = d.ctl(&["export", "--vm", vm]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The value of the metric line that starts with `series`.
fn metric(d: &Daemon, series: &str) -> Option<f64> {
    let text = d.ctl(&["metrics"]).1;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A reservation is all or nothing: PASIDs another VM or a host holder
/// holds, one beyond the space and one outside the VM's range are each
/// named on stderr, the exit status is 1, and nothing is reserved. The
/// free PASIDs alone are then reserved: `vms`, `pasids`, the metrics and
/// the log show it. A missing slot, a bad file and a connected VM are
/// other errors (exit status 2).
#[test]
fn reserve_is_all_or_nothing() {
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,range=1-500",
        "--vm",
        "b={dir}/b.sock",
    ]);
    let mut b = TestVm::connect(&d.path("b.sock"));
    let theirs = [b.alloc_ok(1, 100), b.alloc_ok(1, 100)];
    let pinned = b.alloc_ok(1, 100);
    d.ctl_json(&["get", &pinned.to_string(), "--holder", "drv"]);
    assert_eq!(b.free(pinned), Status::Ok, "drv alone holds it now");
    let free = [40, 41, 77];

    let mut wanted: Vec<u32> = free.to_vec();
    wanted.extend(theirs);
    wanted.extend([pinned, 600, 1 << 21]);
    let (code, out, err) = reserve(&d, "a", &json!({ "vm": "a", "pasids": wanted }), &[]);
    assert_eq!(code, 1, "{out}{err}");
    let mut lines: Vec<&str> = err.lines().collect();
    let summary = lines.pop().unwrap();
    assert_eq!(
        summary,
        "pasidctl: reservation for VM a refused, nothing reserved: 5 conflict(s)"
    );
    assert_eq!(
        lines,
        [
            format!("PASID {} is held by b", theirs[0]),
            format!("PASID {} is held by b", theirs[1]),
            format!("PASID {pinned} is held by drv"),
            "PASID 600 is outside the VM's range 1-500 on this host".to_string(),
            format!(
                "PASID {} cannot be given on this host (0, beyond --pasid-bits, or \
                 --reserve'd)",
                1 << 21
            ),
        ]
    );
    assert!(held_by(&d, "a").is_empty(), "nothing reserved");
    assert_eq!(vm_json(&d, "a")["state"], "idle");
    d.wait_log("vm=a event=reserve-refused pasids=8 conflicts=5");

    // --json: the conflicts for a machine too.
    let (code, out, _) = reserve(
        &d,
        "a",
        &json!({ "pasids": [free[0], theirs[0]] }),
        &["--json"],
    );
    assert_eq!(code, 1);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["reserved"], 0);
    assert_eq!(doc["conflicts"][0]["pasid"], theirs[0]);
    assert_eq!(doc["conflicts"][0]["holders"], json!(["b"]));
    assert!(held_by(&d, "a").is_empty());

    let (code, out, err) = reserve(&d, "a", &json!({ "pasids": free }), &["--hold", "120"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("VM a: reserved 3 PASID(s) (3 new) until ")
            && out.ends_with(" UTC (120 s), unless the VM connects first\n"),
        "{out}"
    );
    assert_eq!(held_by(&d, "a"), free);
    let a = vm_json(&d, "a");
    assert_eq!(a["state"], "reserved", "{a}");
    let left = a["reserved_secs"].as_u64().unwrap();
    assert!((110..=120).contains(&left), "{a}");
    assert_eq!(a["counters"]["reservations"], 1, "{a}");
    let table = d.ctl(&["vms"]).1;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains(" reserved ")),
        "{table}"
    );
    let pasids = d.ctl(&["pasids", "--vm", "a"]).1;
    assert!(pasids.contains("a (vm, reserved) x1"), "{pasids}");
    let listed = d.ctl_json(&["pasids", "--vm", "a"]);
    assert_eq!(listed[0]["holders"][0]["reserved"], true, "{listed}");
    assert_eq!(
        metric(&d, "vpasid_vm_reservations_total{vm=\"a\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&d, "vpasid_vm_reserved_pasids{vm=\"a\"}"), Some(3.0));
    assert_eq!(metric(&d, "vpasid_vm_reserved_pasids{vm=\"b\"}"), Some(0.0));
    d.wait_log("vm=a event=reserved pasids=3 new=3 seconds=120");

    // The same reservation again: nothing new, a fresh deadline.
    let (code, out, err) = reserve(&d, "a", &json!({ "pasids": free }), &["--json"]);
    assert_eq!(code, 0, "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (again["reserved"].as_u64(), again["new"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(again["hold_secs"], 300, "no hold-over of its own: 300 s");

    // Other errors exit 2 and change nothing.
    let (code, _, err) = reserve(&d, "nope", &json!({ "pasids": [9] }), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no VM slot named \"nope\"") && err.contains("--vm nope=SOCKET"),
        "{err}"
    );
    let out = ctl_with_stdin(&d, &["reserve", "--vm", "a", "--from", "-"], "not json");
    assert_eq!(out.status.code(), Some(2));
    let (code, _, err) = reserve(&d, "b", &json!({ "pasids": [300] }), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("VM \"b\" is connected"), "{err}");
    let (ok, _, err) = d.ctl(&["reserve", "--vm", "a", "--from", "/nonexistent"]);
    assert!(!ok && err.contains("cannot read /nonexistent"), "{err}");
    assert_eq!(held_by(&d, "a"), free);
    assert_eq!(held_by(&d, "b"), theirs);
}

/// Reservations count against the VM's quota: one larger than the quota
/// is refused naming it, one that fits is made, and the VM that then
/// arrives cannot allocate past its quota.
#[test]
fn reservations_count_against_the_quota() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,quota=3"]);
    let (code, _, err) = reserve(&d, "a", &json!({ "pasids": [1, 2, 3, 4] }), &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("the VM's quota on this host is 3 PASIDs; the reservation needs 4\n"),
        "{err}"
    );
    assert!(held_by(&d, "a").is_empty());
    let (code, _, err) = reserve(&d, "a", &json!({ "pasids": [1, 2, 3] }), &[]);
    assert_eq!(code, 0, "{err}");
    let mut a = TestVm::connect(&d.path("a.sock"));
    assert_eq!(a.alloc(1, 100).status, Status::QuotaExceeded as u16);
    assert_eq!(a.free(2), Status::Ok, "the arrived guest owns them");
    assert_eq!(a.alloc_ok(1, 100), 2);
}

/// A reservation ends when the VM connects: its driver's RECONCILE finds
/// every reserved PASID KEPT, `last_probe` says so, and the log records
/// the end. A PASID the reservation did not name is re-granted if free.
#[test]
fn reconcile_after_a_reservation_keeps_every_pasid() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let reserved = [3u32, 4, 9, 200];
    let (code, _, err) = reserve(&d, "a", &json!({ "pasids": reserved }), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(vm_json(&d, "a")["last_probe"], Value::Null);

    let mut a = driver(&d, "a", VmOptions::reconcile());
    let reply = a.reconcile(&reserved, true, true);
    assert_eq!(
        reply.pasids,
        vec![ReconcileResult::Kept as u32; reserved.len()]
    );
    assert_eq!(held_by(&d, "a"), reserved);
    let vm = vm_json(&d, "a");
    assert_eq!(vm["state"], "connected", "{vm}");
    assert_eq!(vm["reserved_secs"], Value::Null, "{vm}");
    let probe = &vm["last_probe"];
    assert_eq!(probe["kind"], "reconcile", "{vm}");
    assert_eq!(
        (
            probe["kept"].as_u64(),
            probe["regranted"].as_u64(),
            probe["conflicts"].as_u64()
        ),
        (Some(4), Some(0), Some(0)),
        "{vm}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = probe["at"].as_f64().unwrap();
    assert!(now - 10.0 < at && at <= now + 1.0, "{at} vs {now}");
    d.wait_log("vm=a event=reservation-ended reason=\"connected\" pasids=4");
    assert_eq!(metric(&d, "vpasid_vm_reserved_pasids{vm=\"a\"}"), Some(0.0));
    // RESET is a probe too.
    let r = a.reset();
    assert_eq!(r.status, Status::Ok as u16);
    assert_eq!(vm_json(&d, "a")["last_probe"]["kind"], "reset");
}

/// A reservation runs out at its deadline when the VM never comes: its
/// PASIDs are released, logged and counted with their own reason.
#[test]
fn reservations_expire() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let started = Instant::now();
    let (code, _, err) = reserve(&d, "a", &json!({ "pasids": [5, 6] }), &["--hold", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(held_by(&d, "a"), [5, 6]);
    let log = d.wait_log("vm=a event=reclaim reason=\"reservation expired\"");
    let took = started.elapsed();
    assert!(
        log.contains(
            "vm=a event=reclaim reason=\"reservation expired\" references=2 pasids_freed=2"
        ),
        "{log}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(held_by(&d, "a").is_empty());
    assert_eq!(vm_json(&d, "a")["state"], "idle");
    assert_eq!(
        metric(
            &d,
            "vpasid_reclaims_total{vm=\"a\",reason=\"reservation_expired\"}"
        ),
        Some(1.0)
    );
}

/// Reservations are durable: after a SIGKILL and a restart the PASIDs are
/// still reserved, with the deadline they had (a wall-clock deadline, not
/// a fresh hold), from the journal and, after a compaction, from the
/// snapshot; the device they carried comes back in `export`. After the
/// VM connected and the daemon restarted, nothing is reserved any more.
#[test]
fn reservations_survive_a_sigkill() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let mut d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock",
        "--state-dir",
        &state_arg,
        "--journal-limit",
        "65536",
    ]);
    let device = json!({
        "chardev": "vu0",
        "driver": "vhost-user-test-device-pci",
        "id": "vp0",
        "properties": { "virtio-id": 37, "num_vqs": 1, "bus": "vpasid-port", "addr": 0 }
    });
    let (code, _, err) = reserve(
        &d,
        "a",
        &json!({ "pasids": [7, 8, 9], "device": device }),
        &["--hold", "600"],
    );
    assert_eq!(code, 0, "{err}");
    let before = vm_json(&d, "a")["reserved_secs"].as_u64().unwrap();

    d.kill9();
    d.restart();
    assert_eq!(held_by(&d, "a"), [7, 8, 9], "from the journal");
    let a = vm_json(&d, "a");
    assert_eq!(a["state"], "reserved", "{a}");
    let after = a["reserved_secs"].as_u64().unwrap();
    assert!(
        after <= before && after + 30 > before,
        "{before} -> {after}"
    );
    assert_eq!(export(&d, "a")["device"], device);

    // Enough traffic to compact the journal into a snapshot.
    let mut b = TestVm::connect(&d.path("b.sock"));
    let compacted = |d: &Daemon| metric(d, "vpasid_state_compactions_total") >= Some(1.0);
    for round in 0.. {
        for _ in 0..100 {
            let p = b.alloc_ok(1, 1000);
            assert_eq!(b.free(p), Status::Ok);
        }
        if compacted(&d) {
            break;
        }
        assert!(
            round < 100,
            "no compaction after {round}00 ALLOC/FREE pairs"
        );
    }
    drop(b);
    d.kill9();
    d.restart();
    assert_eq!(held_by(&d, "a"), [7, 8, 9], "from the snapshot");
    assert_eq!(vm_json(&d, "a")["state"], "reserved");
    assert_eq!(export(&d, "a")["device"], device);

    // The VM arrives: the reservation is over, also after a restart.
    let mut a = driver(&d, "a", VmOptions::reconcile());
    let reply = a.reconcile(&[7, 8, 9], true, true);
    assert_eq!(reply.pasids, vec![ReconcileResult::Kept as u32; 3]);
    d.kill9();
    drop(a);
    d.restart();
    assert_eq!(held_by(&d, "a"), [7, 8, 9]);
    let a = vm_json(&d, "a");
    assert_ne!(a["state"], "reserved", "{a}");
    assert_eq!(a["reserved_secs"], Value::Null, "{a}");
}

/// `export` on one daemon is what `reserve` reads on another: the PASIDs,
/// quota, range, lease cap and space id are printed, and reserving from
/// them on a second daemon (another space) gives the VM the same PASIDs
/// there.
#[test]
fn export_round_trips_into_reserve() {
    let source = Daemon::start(&["--vm", "web={dir}/web.sock,quota=50,lease=16"]);
    let dest = Daemon::start(&["--vm", "web={dir}/web.sock,quota=50"]);
    let mut web = driver(&source, "web", VmOptions::lease());
    let held: Vec<u32> = (0..5).map(|_| web.alloc_ok(1, 1000)).collect();
    let grant = web.grant(4, 0, 1, 1000);
    let mut all = held.clone();
    all.extend(&grant.pasids);
    all.sort_unstable();

    let exported = export(&source, "web");
    assert_eq!(exported["vm"], "web");
    assert_eq!(exported["pasids"], json!(all));
    assert_eq!(exported["quota"], 50);
    assert_eq!(exported["range"], json!([1, 1_048_575]));
    assert_eq!(exported["lease_max"], 16);
    assert_eq!(exported["device"], Value::Null);
    let space = exported["space"].as_str().unwrap();
    assert!(space.starts_with("0x"), "{space}");
    assert_ne!(export(&dest, "web")["space"], exported["space"]);

    let file = dest.path("web.export.json");
    std::fs::write(&file, exported.to_string()).unwrap();
    let (ok, _, err) = dest.ctl(&["reserve", "--vm", "web", "--from", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(held_by(&dest, "web"), all);
    assert_eq!(export(&dest, "web")["pasids"], exported["pasids"]);
    // Unchanged on the source.
    assert_eq!(held_by(&source, "web"), all);
}

/// `detach` tells the daemon before the unplug: the disconnect that
/// follows is held over for the hold it asked for, although the VM's own
/// hold-over is 0, and the remembered device is what `export` shows. The
/// QMP part fails here (no QEMU): the daemon's part stands.
#[test]
fn detach_holds_over_a_vm_without_a_holdover() {
    // Its own hold-over 0: the default is 300 s since issue 22 (i22-exit).
    let d = Daemon::start(&["--vm", "a={dir}/a.sock,holdover=0"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mine = vec![a.alloc_ok(1, 100), a.alloc_ok(1, 100)];
    let missing = d.path("missing.qmp");
    let (ok, _, err) = d.ctl(&[
        "detach",
        "--vm",
        "a",
        "--qmp",
        missing.to_str().unwrap(),
        "--hold",
        "60",
    ]);
    assert!(!ok && err.contains("QMP"), "{err}");
    // Without QEMU, the daemon was not told: a disconnect now releases.
    assert!(!d.log().contains("event=detach"));
    drop(a);
    d.wait_log("vm=a event=reclaim reason=\"disconnect\" references=2");

    // Told through the control socket as detach does, then disconnected.
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mine2 = vec![a.alloc_ok(1, 100), a.alloc_ok(1, 100)];
    assert_eq!(mine2, mine);
    let told = control(
        &d.control,
        &json!({"cmd": "detach", "vm": "a", "hold_secs": 60, "keep": false,
                "device": {"driver": "vhost-user-test-device-pci", "id": "vp0",
                           "properties": {"bus": "pci.0", "addr": 4}}}),
    );
    assert_eq!(
        told,
        json!({"ok": true, "result": {"held": 2, "hold_secs": 60, "vm": "a"}})
    );
    d.wait_log("vm=a event=detach pasids=2 hold_seconds=60 keep=false");
    drop(a);
    d.wait_log("vm=a event=held-over pasids=2 seconds=60");
    assert_eq!(held_by(&d, "a"), mine);
    let vm = vm_json(&d, "a");
    assert_eq!(vm["state"], "held-over", "{vm}");
    assert_eq!(
        export(&d, "a")["device"]["properties"],
        json!({"bus": "pci.0", "addr": 4})
    );
    // The hold applies to one disconnect only.
    let mut a = TestVm::connect(&d.path("a.sock"));
    a.alloc_ok(1, 100);
    drop(a);
    d.wait_log("vm=a event=reclaim reason=\"disconnect\" references=3");
}

/// One request on the control socket at `path`, answered.
fn control(path: &Path, request: &Value) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}
