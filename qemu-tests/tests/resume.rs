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
use std::path::Path;
use std::time::Duration;

use common::{assert_guest_knows, load_v1_driver, sole_holdings, v1_daemon_config};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest};

/// Bound on one guest command or wait.
const CMD: Duration = Duration::from_secs(60);
/// The driver's request timeout: the dead device's requests end quickly.
const TIMEOUT_MS: u32 = 500;
/// The range every allocation asks for.
const MIN: u32 = 100;
/// See [`MIN`].
const MAX: u32 = 10_000;
/// PASIDs the guest holds across the restart.
const HELD: u32 = 3;

qemu_tests::per_kernel!(
    crash_restart_reattach_keeps_every_pasid,
    upgrade_reattach_keeps_every_pasid
);

/// How the daemon goes away before it is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// SIGKILL: a crash.
    Crash,
    /// SIGTERM, then the same binary again: an upgrade.
    Upgrade,
}

/// Runs `pasidctl --json reattach` for `vm` and returns its report.
fn reattach(daemon: &Daemon, vm: &str, qmp: &Path) -> serde_json::Value {
    let qmp = qmp.to_string_lossy();
    daemon
        .pasidctl_json(&["reattach", "--vm", vm, "--qmp", &qmp, "--timeout", "60"])
        .unwrap()
}

/// The `[seconds]` timestamp of a dmesg line.
fn dmesg_time(line: &str) -> f64 {
    let inner = line
        .trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map(|(time, _)| time.trim())
        .unwrap_or_else(|| panic!("no timestamp in dmesg line {line:?}"));
    inner
        .parse()
        .unwrap_or_else(|_| panic!("bad timestamp in dmesg line {line:?}"))
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
    let qmp = daemon.dir().join("vmA.qmp");
    let mut config = GuestConfig::new("vmA", kernel).vhost_user(daemon.socket("vmA").unwrap());
    config.extra_qemu_args.extend([
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    let mut guest = Guest::boot(config).unwrap();
    load_v1_driver(&mut guest, &format!("timeout_ms={TIMEOUT_MS}")).unwrap();
    guest.load_exerciser().unwrap();
    guest.wait_driver_state("active", CMD).unwrap();

    // The guest holds some PASIDs, and the host agrees.
    let mut held = BTreeSet::new();
    for _ in 0..HELD {
        let id = guest.alloc(MIN, MAX, 0).unwrap().expect("alloc");
        held.insert(id);
    }
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
    let resumed = last_dmesg_line(&mut guest, "resumed with");
    assert!(
        resumed.contains(&format!("resumed with {HELD} PASID(s) outstanding")),
        "{resumed}"
    );
    guest.wait_driver_state("active", CMD).unwrap();
    let reconciled = last_dmesg_line(&mut guest, "RECONCILE:");
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {HELD} kept, 0 re-granted, 0 conflict(s), 0 refused; \
             the host dropped 0 unlisted reference(s)"
        )),
        "{reconciled}"
    );
    // The guest's clock: the hotplugged device's first PCI line (the
    // ACPI hotplug of device_add) to the driver active again.
    let plugged = last_dmesg_line(&mut guest, "[1af4:1065]");
    let to_active = dmesg_time(&resumed) - dmesg_time(&plugged);

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
        "{kernel} {how:?}: device_add to driver active {:.0} ms (guest clock), \
         PASIDs kept {HELD}, lost 0; reattach {report}",
        to_active * 1000.0
    );
}

fn crash_restart_reattach_keeps_every_pasid(kernel: Kernel) {
    restart_and_resume(kernel, Restart::Crash);
}

fn upgrade_reattach_keeps_every_pasid(kernel: Kernel) {
    restart_and_resume(kernel, Restart::Upgrade);
}
