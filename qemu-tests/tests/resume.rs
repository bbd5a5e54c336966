// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Resuming a running guest on a re-plugged vpasid device with its PASIDs
//! intact (RECONCILE, docs/protocol.md 5.x.6.13), with real guests (Linux
//! 6.1 and 5.10 under QEMU TCG) on the `pc` machine, whose root bus
//! supports PCI hotplug, and `pasidctl reattach` doing the re-plug.
//!
//! `crash_restart_reattach_keeps_every_pasid`: the guest holds PASIDs, the
//! daemon is SIGKILLed and started again with the same `--state-dir`, and
//! `pasidctl reattach` plugs a new device. The driver, draining, accepts
//! it, sends RECONCILE instead of RESET and is active again: the guest
//! still has every PASID, the host holds exactly those for it, and it
//! allocates and frees as before.
//!
//! `upgrade_reattach_keeps_every_pasid`: the same with a clean stop
//! (SIGTERM) and the same binary started again, as an upgrade does.
//!
//! `cached_pasids_survive_the_resume`: with leases on both sides, the guest
//! allocates from its cache while the device is dead; the removal keeps
//! the cache, from which the draining driver allocates and into which it
//! frees with no device at all; the RECONCILE lists it with the PASIDs
//! handed out: the host keeps every one, and host and guest agree.
//!
//! `live_replug_within_holdover_loses_nothing`: the daemon stays up; the
//! re-plug's `chardev-remove` disconnects the VM, whose PASIDs the daemon
//! holds over (`holdover=`). A second VM allocates throughout and never
//! receives one of them; the first VM resumes with all of them.
//!
//! `state_lost_conflicts_are_reported`: the daemon restarts without a state
//! directory, and a second VM takes some of the first VM's PASIDs before
//! the first one is re-plugged. Its RECONCILE reports them as conflicts
//! (the guest logs each once, counts and lists them in debugfs, and never
//! frees them to the host); the second VM keeps them, and the first VM's
//! other PASIDs are re-granted. Once the second VM frees them, the host
//! grants them to the first again: a lost PASID still in use there is kept
//! as the VM's own (no longer lost) and the allocation that met it asks
//! again and succeeds.
//!
//! `unanswered_free_leaves_no_leak`: a FREE sits unanswered in a stopped
//! daemon, which is then killed: the restarted daemon still holds that
//! PASID for the VM, the guest no longer does, and the RECONCILE's LAST
//! drops it.
//!
//! `holdover_expiry_reclaims`: a VM whose device goes away for good (QMP
//! `device_del` and `chardev-remove`, QEMU running on) keeps its PASIDs for
//! the hold-over period only. (A VM whose QEMU exits is released at once,
//! whatever its hold-over: host-backend/tests/qemu_exit.rs.)
//!
//! The driver runs the v1 request path (one side's leases off, see
//! `common::v1_host_leases_off`) so that host and guest must agree exactly.
//!
//! Figures, printed per test: the time from `device_add` to the driver
//! active again, in the guest's own clock (from the hotplugged device's
//! first PCI line to the driver's "resumed" line in dmesg), and the
//! PASIDs kept versus lost.
//!
//! Each kernel runs as `<scenario>::linux_<kernel>`. Logs:
//! `target/qemu-tests-logs/<scenario>.linux_<kernel>-{vmA,daemon}.log`.

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s: in them, as in any test, a failed step is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_guest_knows, dmesg_time, load_v1_driver, qmp_guest_config, reattach, sole_holdings,
    v1_daemon_config, CMD, MAX, MIN,
};
use qemu_tests::{Daemon, DaemonConfig, Guest, Kernel, VmSlot, VpasidGuest};

/// The driver's request timeout: the dead device's requests end quickly.
const TIMEOUT_MS: u32 = 500;
/// PASIDs the guest holds across the restart.
const HELD: u32 = 3;

/// Hold-over of the tests that re-plug with the daemon up: far longer
/// than a re-plug takes.
const HOLDOVER_S: u32 = 60;
/// Hold-over of the expiry test: short, as the test waits it out.
const SHORT_HOLDOVER_S: u32 = 5;

qemu_tests::per_kernel!(
    crash_restart_reattach_keeps_every_pasid,
    upgrade_reattach_keeps_every_pasid,
    cached_pasids_survive_the_resume,
    live_replug_within_holdover_loses_nothing,
    state_lost_conflicts_are_reported,
    unanswered_free_leaves_no_leak,
    holdover_expiry_reclaims,
);

/// How the daemon goes away before it is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// SIGKILL: a crash.
    Crash,
    /// SIGTERM, then the same binary again: an upgrade.
    Upgrade,
}

/// Loads the driver (v1 request path) and the exerciser and waits for the
/// driver to be active.
fn prepare(guest: &mut Guest) -> qemu_tests::Result<()> {
    load_v1_driver(guest, &format!("timeout_ms={TIMEOUT_MS}"))?;
    guest.load_exerciser()?;
    guest.wait_driver_state("active", CMD)?;
    Ok(())
}

/// `n` PASIDs allocated one by one in [[`MIN`], [`MAX`]].
fn alloc_some(guest: &mut Guest, n: u32) -> BTreeSet<u32> {
    (0..n)
        .map(|_| {
            guest
                .alloc(MIN, MAX, 0)
                .unwrap()
                .unwrap_or_else(|| panic!("{}: alloc failed", guest.name()))
        })
        .collect()
}

/// Waits for the driver's resume (its "resumed" line after the re-plug)
/// and returns the time from the hotplugged device's first PCI line to
/// it, in the guest's clock, and the RECONCILE summary line.
fn wait_resumed(guest: &mut Guest) -> (Duration, String) {
    let resumed = last_dmesg_line(guest, "resumed with");
    guest.wait_driver_state("active", CMD).unwrap();
    let reconciled = last_dmesg_line(guest, "RECONCILE:");
    // The ACPI hotplug of device_add: the new device's first PCI line.
    let plugged = last_dmesg_line(guest, "[1af4:1065]");
    let secs = dmesg_time(&resumed) - dmesg_time(&plugged);
    assert!(secs >= 0.0, "{plugged} after {resumed}");
    (Duration::from_secs_f64(secs), reconciled)
}

/// The last dmesg line that contains `pattern` (a fixed string).
fn last_dmesg_line(guest: &mut Guest, pattern: &str) -> String {
    guest.wait_for_dmesg(pattern, CMD).unwrap()
}

/// The PASIDs the driver lists in debugfs as lost (in use here, not held
/// for this VM on the host).
fn lost_pasids(guest: &mut Guest) -> BTreeSet<u32> {
    let out = guest
        .run_ok(
            "cat /sys/kernel/debug/virtio_pasid/$(cat /sys/bus/virtio/drivers/virtio_pasid/backend) \
             | grep '^lost_pasids'",
            CMD,
        )
        .unwrap();
    out.trim()
        .strip_prefix("lost_pasids")
        .unwrap_or_else(|| panic!("{}: no lost_pasids line: {out:?}", guest.name()))
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

/// The guest holds [`HELD`] PASIDs; the daemon goes away as `how` says and
/// comes back with the same state; `pasidctl reattach` re-plugs the device;
/// the guest resumes with every PASID and host and guest agree.
fn restart_and_resume(kernel: Kernel, how: Restart) {
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .state_dir("state"),
    ))
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config).unwrap();
    prepare(&mut guest).unwrap();

    // The guest holds some PASIDs, and the host agrees.
    let mut held = alloc_some(&mut guest, HELD);
    assert_eq!(sole_holdings(&daemon, "vmA"), held);

    match how {
        Restart::Crash => {
            daemon.kill().unwrap();
        }
        Restart::Upgrade => daemon.stop().unwrap(),
    }
    daemon.restart().unwrap();
    // Durable state: the new daemon holds them for the VM, disconnected.
    assert_eq!(sole_holdings(&daemon, "vmA"), held);
    let before = daemon.vm("vmA").unwrap();
    assert!(!before.connected, "{before:?}");

    let report = reattach(&daemon, "vmA", &qmp);
    assert_eq!(report["vm"], "vmA", "{report}");
    let (to_active, reconciled) = wait_resumed(&mut guest);
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {HELD} kept, 0 re-granted, 0 conflict(s), 0 refused; \
             the host dropped 0 unlisted reference(s)"
        )),
        "{reconciled}"
    );

    // The state kept the space: same space_id, nothing to say about it.
    let replaced = guest
        .run_ok("dmesg | grep -c 'replaces space' || true", CMD)
        .unwrap();
    assert_eq!(replaced.trim(), "0", "space_id changed");

    // Nothing lost: host and guest agree, and the driver knows no conflict.
    assert_eq!(sole_holdings(&daemon, "vmA"), held);
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());
    assert!(lost_pasids(&mut guest).is_empty());
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("reconcile_kept"),
            status.counter("reconcile_conflicts"),
            status.counter("reconcile_refused"),
        ),
        (u64::from(HELD), 0, 0),
        "{status:?}"
    );
    let host = daemon.vm("vmA").unwrap();
    assert!(host.connected, "{host:?}");
    // Resumed, never RESET: the counter did not move.
    assert_eq!(
        host.counters.request("RESET"),
        before.counters.request("RESET"),
        "{host:?}"
    );

    // It allocates and frees as before, and the two sides still agree.
    let new = guest
        .alloc(MIN, MAX, 0)
        .unwrap()
        .expect("alloc after resume");
    assert!(!held.contains(&new), "{new} handed out twice");
    let first = *held.iter().next().unwrap();
    guest.free(first).unwrap();
    held.remove(&first);
    held.insert(new);
    assert_eq!(sole_holdings(&daemon, "vmA"), held);
    assert_guest_knows(&mut guest, &held, &[first].into());
    for id in std::mem::take(&mut held) {
        guest.free(id).unwrap();
    }
    assert!(daemon.vm_pasids("vmA").unwrap().is_empty());

    common::finish(guest);
    eprintln!(
        "{kernel} {how:?}: device_add to driver active {to_active:?} (guest clock), \
         PASIDs kept {HELD}, lost 0; reattach {report}"
    );
}

fn crash_restart_reattach_keeps_every_pasid(kernel: Kernel) {
    restart_and_resume(kernel, Restart::Crash);
}

fn upgrade_reattach_keeps_every_pasid(kernel: Kernel) {
    restart_and_resume(kernel, Restart::Upgrade);
}

/// Waits until the driver's `cached` counter is at least `n`.
fn wait_cached(guest: &mut Guest, n: u64) -> u64 {
    let started = Instant::now();
    loop {
        let cached = guest.driver_status().unwrap().counter("cached");
        if cached >= n {
            return cached;
        }
        assert!(
            started.elapsed() < CMD,
            "{}: cached {cached}, waiting for {n}",
            guest.name()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cached_pasids_survive_the_resume(kernel: Kernel) {
    // Leases on in both (the daemon's and the driver's defaults).
    let mut daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .state_dir("state"),
    )
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config).unwrap();
    guest
        .load_driver(&format!("timeout_ms={TIMEOUT_MS}"))
        .unwrap();
    guest.load_exerciser().unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    let mut held = alloc_some(&mut guest, HELD);
    // The lease work item fills the cache after the first miss.
    let cached = wait_cached(&mut guest, 3);

    // The daemon dies: the cache still serves allocations, no host needed.
    daemon.kill().unwrap();
    daemon.restart().unwrap();
    let from_cache = alloc_some(&mut guest, 2);
    assert!(from_cache.is_disjoint(&held), "{from_cache:?} {held:?}");
    held.extend(&from_cache);
    let status = guest.driver_status().unwrap();
    let cached_now = status.counter("cached");
    assert_eq!(cached_now, cached - 2, "{status:?}");
    // The host holds the handed-out and the cached ones for the VM.
    let host_before = sole_holdings(&daemon, "vmA");
    assert!(host_before.is_superset(&held), "{host_before:?} {held:?}");

    // The driver lets go of the dead device (as device_del makes it do):
    // draining, it keeps the cache and serves from it with no device at
    // all, and a free goes back into it.
    guest
        .run_ok(
            "echo $(cat /sys/bus/virtio/drivers/virtio_pasid/backend)              > /sys/bus/virtio/drivers/virtio_pasid/unbind",
            CMD,
        )
        .unwrap();
    assert_eq!(guest.driver_state().unwrap(), "draining");
    let absent = alloc_some(&mut guest, 2);
    assert!(absent.is_disjoint(&held), "{absent:?} {held:?}");
    assert!(host_before.is_superset(&absent), "{absent:?}");
    held.extend(&absent);
    let freed = *absent.iter().next().unwrap();
    guest.free(freed).unwrap();
    held.remove(&freed);
    let cached_now = cached_now - 2 + 1;

    let report = reattach(&daemon, "vmA", &qmp);
    let (to_active, reconciled) = wait_resumed(&mut guest);
    let listed = held.len() as u64 + cached_now;
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {listed} kept, 0 re-granted, 0 conflict(s), 0 refused"
        )),
        "{reconciled}"
    );
    // The kept cache is the new device's: nothing was lost on either side.
    let status = guest.driver_status().unwrap();
    assert_eq!(status.counter("cached"), cached_now, "{status:?}");
    assert_eq!(sole_holdings(&daemon, "vmA"), host_before);
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());
    let new = guest
        .alloc(MIN, MAX, 0)
        .unwrap()
        .expect("alloc after resume");
    assert!(host_before.contains(&new) && !held.contains(&new), "{new}");

    common::finish(guest);
    eprintln!(
        "{kernel} leases: device_add to driver active {to_active:?} (guest clock), \
         PASIDs kept {listed} ({} handed out, {cached_now} cached), lost 0; \
         2 allocated from the cache while the device was dead, 2 and 1 freed \
         with no device; reattach {report}",
        held.len()
    );
}

fn live_replug_within_holdover_loses_nothing(kernel: Kernel) {
    let daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA").holdover(HOLDOVER_S))
            .vm(VmSlot::new("vmB")),
    ))
    .unwrap();
    let (config_a, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let config_b = common::guest_config(kernel, &daemon, "vmB");
    let mut guests = common::boot_in_parallel(vec![config_a, config_b], prepare);
    let mut guest_b = guests.pop().unwrap();
    let mut guest_a = guests.pop().unwrap();

    let held = alloc_some(&mut guest_a, HELD);
    assert_eq!(sole_holdings(&daemon, "vmA"), held);

    // vmB allocates one PASID after another while vmA is re-plugged.
    let (report, taken_by_b) = std::thread::scope(|s| {
        let replug = s.spawn(|| reattach(&daemon, "vmA", &qmp));
        let mut taken = BTreeSet::new();
        while !replug.is_finished() {
            let id = guest_b
                .alloc(MIN, MAX, 0)
                .unwrap()
                .expect("vmB alloc during the re-plug");
            assert!(!held.contains(&id), "vmB got vmA's PASID {id}");
            taken.insert(id);
        }
        (replug.join().unwrap(), taken)
    });
    assert!(!taken_by_b.is_empty(), "vmB allocated nothing meanwhile");
    let (to_active, reconciled) = wait_resumed(&mut guest_a);
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {HELD} kept, 0 re-granted, 0 conflict(s)"
        )),
        "{reconciled}"
    );
    assert_eq!(sole_holdings(&daemon, "vmA"), held);
    assert_eq!(sole_holdings(&daemon, "vmB"), taken_by_b);
    assert_guest_knows(&mut guest_a, &held, &taken_by_b);
    assert!(lost_pasids(&mut guest_a).is_empty());

    // vmA goes on: a new PASID is neither its own nor vmB's.
    let new = guest_a.alloc(MIN, MAX, 0).unwrap().expect("vmA alloc");
    assert!(!held.contains(&new) && !taken_by_b.contains(&new), "{new}");
    common::finish(guest_a);
    common::finish(guest_b);
    eprintln!(
        "{kernel} live re-plug: device_add to driver active {to_active:?} (guest clock), \
         PASIDs kept {HELD}, lost 0; vmB allocated {} meanwhile; reattach {report}",
        taken_by_b.len()
    );
}

fn state_lost_conflicts_are_reported(kernel: Kernel) {
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .vm(VmSlot::new("vmB")),
    ))
    .unwrap();
    let (config_a, qmp_a) = qmp_guest_config(kernel, &daemon, "vmA");
    let (config_b, qmp_b) = qmp_guest_config(kernel, &daemon, "vmB");
    let mut guests = common::boot_in_parallel(vec![config_a, config_b], prepare);
    let mut guest_b = guests.pop().unwrap();
    let mut guest_a = guests.pop().unwrap();

    // vmA holds the lowest three; vmB nothing.
    let held = alloc_some(&mut guest_a, HELD);
    assert_eq!(held, (MIN..MIN + HELD).collect());

    // No state directory: the new daemon knows nothing of them.
    daemon.kill().unwrap();
    daemon.restart().unwrap();
    assert!(daemon.vm_pasids("vmA").unwrap().is_empty());

    // vmB, holding nothing, comes back first (a fresh probe, RESET) and
    // takes the two lowest: two of vmA's.
    reattach(&daemon, "vmB", &qmp_b);
    common::wait_dmesg_lines(&mut guest_b, "-F 'RESET released'", 2, |_| true);
    guest_b.wait_driver_state("active", CMD).unwrap();
    let taken_by_b = alloc_some(&mut guest_b, 2);
    let conflicts: BTreeSet<u32> = held.iter().copied().take(2).collect();
    assert_eq!(taken_by_b, conflicts);

    let report = reattach(&daemon, "vmA", &qmp_a);
    let (to_active, reconciled) = wait_resumed(&mut guest_a);
    assert!(
        reconciled.contains("RECONCILE: 0 kept, 1 re-granted, 2 conflict(s), 0 refused"),
        "{reconciled}"
    );
    // A new space (the state was lost): logged, reconciled all the same.
    guest_a.wait_for_dmesg("replaces space", CMD).unwrap();
    // The guest: each conflict logged once, counted and listed in debugfs.
    for id in &conflicts {
        let line = guest_a
            .run_ok(
                &format!("dmesg | grep -c 'PASID {id} is in use here but another VM holds it'"),
                CMD,
            )
            .unwrap();
        assert_eq!(line.trim(), "1", "PASID {id}: {line}");
    }
    assert_eq!(lost_pasids(&mut guest_a), conflicts);
    let status = guest_a.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("reconcile_kept"),
            status.counter("reconcile_granted"),
            status.counter("reconcile_conflicts"),
        ),
        (0, 1, 2),
        "{status:?}"
    );
    // The host: vmB keeps its two, vmA holds the one re-granted, and the
    // daemon reported the conflicts.
    let regranted: BTreeSet<u32> = held.difference(&conflicts).copied().collect();
    assert_eq!(sole_holdings(&daemon, "vmB"), conflicts);
    assert_eq!(sole_holdings(&daemon, "vmA"), regranted);
    assert!(
        daemon.log().to_lowercase().contains("conflict"),
        "the daemon's log reports no conflict"
    );

    // Freeing a lost PASID tells nobody: vmB still holds it; new
    // allocations go on and never return a PASID vmB holds.
    let lost = *conflicts.iter().next().unwrap();
    guest_a.free(lost).unwrap();
    assert_eq!(sole_holdings(&daemon, "vmB"), conflicts);
    assert_eq!(guest_a.driver_status().unwrap().counter("lost_frees"), 1);
    let new = guest_a.alloc(MIN, MAX, 0).unwrap().expect("vmA alloc");
    assert!(
        !conflicts.contains(&new) && !regranted.contains(&new),
        "{new}"
    );

    // vmB frees its two: the host gives them to vmA again, lowest first.
    // The one vmA freed is simply its own again. The one still in use in
    // vmA is the VM's on the host again: the driver keeps it as its own
    // (no longer lost) and asks again for the caller, whose allocation
    // succeeds with the next free PASID.
    let still_used = *conflicts.iter().nth(1).unwrap();
    for id in &conflicts {
        guest_b.free(*id).unwrap();
    }
    assert!(sole_holdings(&daemon, "vmB").is_empty());
    let again = guest_a.alloc(MIN, MAX, 0).unwrap().expect("vmA alloc");
    assert_eq!(again, lost, "the PASID vmA freed is free again");
    let next = guest_a
        .alloc(MIN, MAX, 0)
        .unwrap()
        .expect("vmA alloc after its lost PASID was granted back");
    let used: BTreeSet<u32> = regranted
        .iter()
        .copied()
        .chain([new, again, still_used])
        .collect();
    assert!(!used.contains(&next), "{next} is in use here: {used:?}");
    guest_a
        .wait_for_dmesg(
            &format!("PASID {still_used}, lost to a conflict, is the VM's on the host again"),
            CMD,
        )
        .unwrap();
    assert!(lost_pasids(&mut guest_a).is_empty());
    let mut holds = used.clone();
    holds.insert(next);
    assert_eq!(sole_holdings(&daemon, "vmA"), holds);
    // Its free is a FREE again, which the host applies.
    guest_a.free(still_used).unwrap();
    holds.remove(&still_used);
    assert_eq!(sole_holdings(&daemon, "vmA"), holds);
    assert_eq!(guest_a.driver_status().unwrap().counter("lost_frees"), 1);

    common::finish(guest_a);
    common::finish(guest_b);
    eprintln!(
        "{kernel} state lost: device_add to driver active {to_active:?} (guest clock), \
         PASIDs kept 1 (re-granted), lost {} (conflicts); reattach {report}",
        conflicts.len()
    );
}

fn unanswered_free_leaves_no_leak(kernel: Kernel) {
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .state_dir("state"),
    ))
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config).unwrap();
    prepare(&mut guest).unwrap();
    let mut held = alloc_some(&mut guest, HELD);

    // The daemon stops answering; the guest frees one PASID: its FREE
    // times out unanswered, and the daemon dies before it reads it.
    let freed = *held.iter().next().unwrap();
    let pid = i32::try_from(daemon.pid()).unwrap();
    // SAFETY: kill(2) on the daemon's pid, a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    guest.free(freed).unwrap();
    held.remove(&freed);
    daemon.kill().unwrap();
    daemon.restart().unwrap();
    // The leak: the host still holds it for the VM.
    assert!(daemon.vm_pasids("vmA").unwrap().contains(&freed));

    let report = reattach(&daemon, "vmA", &qmp);
    let (to_active, reconciled) = wait_resumed(&mut guest);
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {} kept, 0 re-granted, 0 conflict(s), 0 refused; \
             the host dropped 1 unlisted reference(s)",
            held.len()
        )),
        "{reconciled}"
    );
    assert_eq!(sole_holdings(&daemon, "vmA"), held);
    assert_guest_knows(&mut guest, &held, &[freed].into());
    common::finish(guest);
    eprintln!(
        "{kernel} unanswered FREE: device_add to driver active {to_active:?} (guest clock), \
         PASIDs kept {}, lost 0, leaked reference dropped 1; reattach {report}",
        held.len()
    );
}

/// A QMP connection: commands out, answers and events in.
type QmpLines = std::io::Lines<BufReader<UnixStream>>;

/// The next message QMP sends.
fn qmp_next(lines: &mut QmpLines) -> serde_json::Value {
    serde_json::from_str(&lines.next().expect("QMP closed").unwrap()).unwrap()
}

/// Runs one QMP command; returns the messages up to its answer (events
/// that came first included), the answer last.
fn qmp_ask(
    stream: &UnixStream,
    lines: &mut QmpLines,
    command: &str,
    arguments: serde_json::Value,
) -> Vec<serde_json::Value> {
    let mut out = stream;
    writeln!(
        out,
        "{}",
        serde_json::json!({"execute": command, "arguments": arguments})
    )
    .unwrap();
    let mut seen = Vec::new();
    loop {
        let v = qmp_next(lines);
        assert!(v.get("error").is_none(), "{command}: {v}");
        let answer = v.get("return").is_some();
        seen.push(v);
        if answer {
            return seen;
        }
    }
}

/// Unplugs the VM's vpasid device over QMP and removes its chardev (the
/// disconnect the daemon sees), QEMU running on: `device_del` of the
/// one `vhost-user-test-device-pci` (bounded wait for its DEVICE_DELETED),
/// then `chardev-remove vu0`.
fn unplug_device(qmp: &Path) {
    let stream = UnixStream::connect(qmp).unwrap();
    stream.set_read_timeout(Some(CMD)).unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let _greeting = qmp_next(&mut lines);
    qmp_ask(
        &stream,
        &mut lines,
        "qmp_capabilities",
        serde_json::json!({}),
    );
    let listed = qmp_ask(
        &stream,
        &mut lines,
        "qom-list",
        serde_json::json!({"path": "/machine/peripheral-anon"}),
    );
    let name = listed
        .last()
        .and_then(|v| v["return"].as_array())
        .and_then(|children| {
            children
                .iter()
                .find(|c| c["type"] == "child<vhost-user-test-device-pci>")
        })
        .and_then(|c| c["name"].as_str())
        .expect("no vhost-user-test-device-pci")
        .to_string();
    let path = format!("/machine/peripheral-anon/{name}");
    let mut events = qmp_ask(
        &stream,
        &mut lines,
        "device_del",
        serde_json::json!({"id": path}),
    );
    let deadline = Instant::now() + CMD;
    while !events
        .iter()
        .any(|e| e["event"] == "DEVICE_DELETED" && e["data"]["path"] == path.as_str())
    {
        assert!(Instant::now() < deadline, "no DEVICE_DELETED for {path}");
        events.push(qmp_next(&mut lines));
    }
    qmp_ask(
        &stream,
        &mut lines,
        "chardev-remove",
        serde_json::json!({"id": "vu0"}),
    );
}

fn holdover_expiry_reclaims(kernel: Kernel) {
    let daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new().vm(VmSlot::new("vmA").holdover(SHORT_HOLDOVER_S)),
    ))
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config).unwrap();
    prepare(&mut guest).unwrap();
    let held = alloc_some(&mut guest, HELD);

    // The VM's device goes away for good, QEMU running on; the host holds
    // its PASIDs over, then reclaims them once the period has passed.
    let mark = daemon.log_mark();
    unplug_device(&qmp);
    let gone = Instant::now();
    let mut disconnected = daemon.vm("vmA").unwrap();
    while disconnected.connected {
        assert!(gone.elapsed() < CMD, "vmA still connected");
        std::thread::sleep(Duration::from_millis(50));
        disconnected = daemon.vm("vmA").unwrap();
    }
    let held_over = daemon.vm_pasids("vmA").unwrap();
    assert!(
        gone.elapsed() < Duration::from_secs(u64::from(SHORT_HOLDOVER_S)),
        "the disconnect took {:?}: the hold-over cannot be seen",
        gone.elapsed()
    );
    assert_eq!(held_over, held, "held over");
    while !daemon.vm_pasids("vmA").unwrap().is_empty() {
        assert!(gone.elapsed() < CMD, "never reclaimed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reclaimed = gone.elapsed();
    assert!(
        reclaimed >= Duration::from_secs(u64::from(SHORT_HOLDOVER_S)),
        "reclaimed after {reclaimed:?}, before the hold-over period"
    );
    // Both logged: the hold-over at the disconnect, the reclaim at expiry.
    daemon
        .wait_log_since(mark, "vm=vmA event=held-over pasids=3", CMD)
        .unwrap();
    daemon
        .wait_log_since(mark, "reason=\"hold-over expired\" references=3", CMD)
        .unwrap();
    eprintln!(
        "{kernel} hold-over expiry: {HELD} PASIDs reclaimed {reclaimed:?} after the VM's \
         device went away (hold-over {SHORT_HOLDOVER_S} s), kept 0, lost {HELD}"
    );
    // QEMU lived throughout: the expiry, not its exit, released them.
    assert!(guest.is_running(), "QEMU exited");
    drop(guest);
}
