// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `pasidctl reattach`: re-plugging a running guest's vpasid device through
//! QEMU's QMP socket, with real guests (Linux 6.1 and 5.10 under QEMU TCG)
//! on the `pc` machine, whose root bus supports PCI hotplug.
//!
//! `reattach_revives_the_device_after_a_daemon_restart`:
//!
//! 1. Guest A boots with a QMP socket; its driver is active and allocates
//!    and frees one PASID through the daemon.
//! 2. Live re-plug, the daemon up: `pasidctl reattach` unplugs the device
//!    (the guest releases it: `DEVICE_DELETED`), replaces its chardev and
//!    plugs a new one with the same properties. The guest binds the new
//!    device (a new virtio index), its probe RESET finds nothing, the host
//!    counts a second connect, and allocation works again.
//! 3. The daemon is killed and started again. QEMU 11 cannot reconnect the
//!    device, so the guest's next allocation times out. `pasidctl
//!    reattach` plugs a new device to the new daemon; the guest binds it and
//!    allocates again, and host and guest agree on what it holds.
//!
//! The driver runs the v1 request path (one side's leases off, see
//! `common::v1_host_leases_off`) so that the host holds exactly what the
//! guest allocated. Resuming with PASIDs held (RECONCILE) is
//! `tests/resume.rs`.
//!
//! Each kernel runs as `<scenario>::linux_<kernel>`. Logs:
//! `target/qemu-tests-logs/<scenario>.linux_<kernel>-{vmA,daemon}.log`.

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s: in them, as in any test, a failed step is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{
    assert_guest_knows, finish, load_v1_driver, qmp_guest_config, reattach, sole_holdings,
    v1_daemon_config, CMD, MAX, MIN, POWEROFF,
};
use qemu_tests::vpasid::DRIVER_DIR;
use qemu_tests::{Daemon, DaemonConfig, Guest, Kernel, Machine, VmSlot, VpasidGuest};

/// The driver's request timeout: the dead device's requests end quickly.
const TIMEOUT_MS: u32 = 500;

qemu_tests::per_kernel!(reattach_revives_the_device_after_a_daemon_restart);
qemu_tests::per_kernel!(reattach_on_q35_replugs_on_the_root_port);

/// Waits until the driver has probed `probes` devices since boot (its
/// probe line in dmesg; a new device may reuse the old one's virtio index)
/// and is active again.
fn wait_probed(guest: &mut Guest, probes: usize) {
    common::wait_dmesg_lines(guest, "'virtio_pasid .*: protocol v'", probes, |g| {
        g.driver_status().unwrap().state == "active"
    });
}

/// One PASID allocated through the host and freed again; checks that the
/// host listed it for `vm` while the guest held it.
fn alloc_and_free(guest: &mut Guest, daemon: &Daemon, vm: &str) -> u32 {
    let id = guest
        .alloc(MIN, MAX, 0)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: alloc failed", guest.name()));
    let held: BTreeSet<u32> = [id].into();
    assert_eq!(sole_holdings(daemon, vm), held);
    assert_guest_knows(guest, &held, &BTreeSet::new());
    guest.free(id).unwrap();
    assert!(daemon.vm_pasids(vm).unwrap().is_empty());
    id
}

fn reattach_revives_the_device_after_a_daemon_restart(kernel: Kernel) {
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .state_dir("state"),
    ))
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config).unwrap();
    load_v1_driver(&mut guest, &format!("timeout_ms={TIMEOUT_MS}")).unwrap();
    guest.load_exerciser().unwrap();

    // 1. The device works.
    wait_probed(&mut guest, 1);
    alloc_and_free(&mut guest, &daemon, "vmA");
    assert_eq!(daemon.vm("vmA").unwrap().counters.connects, 1);

    // 2. Live re-plug with the daemon up.
    let live = reattach(&daemon, "vmA", &qmp);
    assert_eq!(live["vm"], "vmA", "{live}");
    assert_eq!(
        (live["held_before"].as_u64(), live["held_after"].as_u64()),
        (Some(0), Some(0)),
        "{live}"
    );
    wait_probed(&mut guest, 2);
    let host = daemon.vm("vmA").unwrap();
    assert!(host.connected, "{host:?}");
    assert_eq!(host.counters.connects, 2, "{host:?}");
    alloc_and_free(&mut guest, &daemon, "vmA");

    // 3. Crash and restart: the device is dead until it is re-plugged.
    daemon.kill().unwrap();
    daemon.restart().unwrap();
    assert!(!daemon.vm("vmA").unwrap().connected);
    let at = Instant::now();
    assert_eq!(
        guest.alloc(MIN, MAX, 0).unwrap(),
        None,
        "the device is dead"
    );
    let dead_took = at.elapsed();
    let restarted = reattach(&daemon, "vmA", &qmp);
    wait_probed(&mut guest, 3);
    let host = daemon.vm("vmA").unwrap();
    assert!(host.connected, "{host:?}");
    assert_eq!(host.counters.connects, 1, "{host:?}");
    let id = alloc_and_free(&mut guest, &daemon, "vmA");
    assert_eq!(id, MIN, "lowest free after the restart");

    guest.check_health().unwrap();
    guest.poweroff(POWEROFF).unwrap();
    eprintln!(
        "{kernel}: live re-plug: {live}; after the restart the dead device failed in \
         {dead_took:?}, re-plug: {restarted}"
    );
}

/// The PCI functions from the root bus down to the driver's device, e.g.
/// `["0000:00:01.0", "0000:01:00.0"]` for a device behind a root port.
fn pci_path(guest: &mut Guest) -> Vec<String> {
    let out = guest
        .run_ok(&format!("readlink -f {DRIVER_DIR}/virtio*"), CMD)
        .unwrap();
    let path = out.trim();
    assert_eq!(path.lines().count(), 1, "{}: {out}", guest.name());
    path.split('/')
        .filter(|c| c.starts_with("0000:") && c.contains('.'))
        .map(str::to_string)
        .collect()
}

/// `pasidctl reattach` on `q35`, the device on a `pcie-root-port` as
/// docs/operations.md plugs it. The new device must go on the old one's
/// bus, the root port: q35's root bus `pcie.0` refuses hot-plug, so
/// without that (fixed by hand in e39229b) `device_add` fails and the
/// re-plug with it. The guest binds the new device behind the same root
/// port, the host counts a second connect, and allocation works again.
fn reattach_on_q35_replugs_on_the_root_port(kernel: Kernel) {
    let daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new().vm(VmSlot::new("vmA")),
    ))
    .unwrap();
    let (config, qmp) = qmp_guest_config(kernel, &daemon, "vmA");
    let mut guest = Guest::boot(config.machine(Machine::Q35)).unwrap();
    load_v1_driver(&mut guest, &format!("timeout_ms={TIMEOUT_MS}")).unwrap();
    guest.load_exerciser().unwrap();
    wait_probed(&mut guest, 1);
    let before = pci_path(&mut guest);
    assert_eq!(
        before.len(),
        2,
        "the device sits behind a root port: {before:?}"
    );
    alloc_and_free(&mut guest, &daemon, "vmA");

    let report = reattach(&daemon, "vmA", &qmp);
    assert_eq!(report["vm"], "vmA", "{report}");
    wait_probed(&mut guest, 2);
    let after = pci_path(&mut guest);
    assert_eq!(after.len(), 2, "re-plugged behind a root port: {after:?}");
    assert_eq!(after[0], before[0], "on the same root port");
    let host = daemon.vm("vmA").unwrap();
    assert!(host.connected, "{host:?}");
    assert_eq!(host.counters.connects, 2, "{host:?}");
    alloc_and_free(&mut guest, &daemon, "vmA");
    finish(guest);
    eprintln!("{kernel}: q35 re-plug: {report}; PCI path {before:?} -> {after:?}");
}
