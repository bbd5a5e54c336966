// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Checks shared by the scenario files (`mod common;`); test code, so a
//! failed check is a panic with its message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qemu_tests::vpasid::Found;
use qemu_tests::{Daemon, DaemonConfig, Guest, Kernel, VpasidGuest};
use serde_json::Value;

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

/// The existing scenarios assert that the host holds exactly what the
/// guest allocated, which is the v1 request path: with leases the host also
/// holds the driver's cache. So they run with one side's leases off, and
/// each kernel takes one side, which covers both interop cases without
/// running anything twice:
///
/// - Linux 6.1: the host runs `--lease 0` (never offers
///   VIRTIO_PASID_F_LEASE) and the driver loads with its default `lease`:
///   a lease-capable driver against a device without the feature.
/// - Linux 5.10: the host leases (its default cap) and the driver loads
///   with `lease=0`, so it does not accept the feature: a v1 driver against
///   a lease-offering device.
///
/// Which side turns leases off is decided by feature negotiation in code
/// that is the same on both kernels (the driver's compat layer covers the
/// ioasid and virtio APIs, which every scenario exercises on both kernels
/// either way), and the lease scenarios (`tests/leases.rs`) run on both.
pub fn v1_host_leases_off(kernel: Kernel) -> bool {
    kernel == Kernel::V6_1
}

/// The daemon `config` with leases off when this kernel's variant turns
/// them off on the host (see [`v1_host_leases_off`]).
pub fn v1_daemon_config(kernel: Kernel, config: DaemonConfig) -> DaemonConfig {
    if v1_host_leases_off(kernel) {
        config.lease(0)
    } else {
        config
    }
}

/// The driver's module parameters `params`, plus `lease=0` when this
/// kernel's variant turns leases off in the driver (see
/// [`v1_host_leases_off`]).
pub fn v1_driver_params(kernel: Kernel, params: &str) -> String {
    if v1_host_leases_off(kernel) {
        params.to_string()
    } else {
        format!("lease=0 {params}").trim().to_string()
    }
}

/// `modprobe virtio_pasid` with `params` for the v1 request path of this
/// guest's kernel (see [`v1_host_leases_off`]).
pub fn load_v1_driver(guest: &mut Guest, params: &str) -> qemu_tests::Result<()> {
    let params = v1_driver_params(guest.config().kernel, params);
    guest.load_driver(&params)
}

/// Checks that the driver runs the v1 request path: no lease cap in the
/// driver (`lease_cap` 0) and no GRANT or RETURN on the host for `vm`; the
/// host's cap is 0 exactly when this kernel's variant turns it off.
pub fn assert_v1_path(guest: &mut Guest, daemon: &Daemon, vm: &str) {
    let kernel = guest.config().kernel;
    let status = guest.driver_status().unwrap();
    assert_eq!(status.counter("lease_cap"), 0, "{kernel}: {status:?}");
    let host = daemon.vm(vm).unwrap();
    assert_eq!(
        host.lease == 0,
        v1_host_leases_off(kernel),
        "{kernel}: {host:?}"
    );
    assert_eq!(
        (
            host.counters.request("GRANT"),
            host.counters.request("RETURN")
        ),
        (0, 0),
        "{kernel}: {host:?}"
    );
}

/// Boots one guest per config at once (TCG boots are slow, and scenarios
/// with two VMs want them up together), runs `prepare` on each (e.g. load
/// the driver), and returns them in the order given.
pub fn boot_in_parallel(
    configs: Vec<qemu_tests::GuestConfig>,
    prepare: impl Fn(&mut Guest) -> qemu_tests::Result<()> + Sync,
) -> Vec<Guest> {
    let test = std::thread::current()
        .name()
        .unwrap_or("parallel")
        .to_string();
    std::thread::scope(|s| {
        let handles: Vec<_> = configs
            .into_iter()
            .map(|mut config| {
                config.test_name.get_or_insert_with(|| test.clone());
                let prepare = &prepare;
                s.spawn(move || {
                    let mut guest = Guest::boot(config)?;
                    prepare(&mut guest)?;
                    Ok::<_, qemu_tests::Error>(guest)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    })
}

/// Bound on one guest command or wait.
pub const CMD: Duration = Duration::from_secs(60);

/// Bound on a clean power-off.
pub const POWEROFF: Duration = Duration::from_secs(60);

/// The range the scenarios allocate in: [MIN, MAX].
pub const MIN: u32 = 100;
/// See [`MIN`].
pub const MAX: u32 = 10_000;

/// The guest config of VM `vm` on `daemon`'s socket for it.
pub fn guest_config(kernel: Kernel, daemon: &Daemon, vm: &str) -> qemu_tests::GuestConfig {
    qemu_tests::GuestConfig::new(vm, kernel).vhost_user(daemon.socket(vm).unwrap())
}

/// The guest config of `vm` on `daemon`, with a QMP socket for
/// `pasidctl reattach`; returns it and the QMP socket's path.
pub fn qmp_guest_config(
    kernel: Kernel,
    daemon: &Daemon,
    vm: &str,
) -> (qemu_tests::GuestConfig, PathBuf) {
    let qmp = daemon.dir().join(format!("{vm}.qmp"));
    let mut config = guest_config(kernel, daemon, vm);
    config.extra_qemu_args.extend([
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    (config, qmp)
}

/// Runs `pasidctl --json reattach` for `vm` and returns its report.
pub fn reattach(daemon: &Daemon, vm: &str, qmp: &Path) -> serde_json::Value {
    let qmp = qmp.to_string_lossy();
    daemon
        .pasidctl_json(&["reattach", "--vm", vm, "--qmp", &qmp, "--timeout", "60"])
        .unwrap()
}

/// The guest's health check, then a clean power-off.
pub fn finish(mut guest: Guest) {
    guest.check_health().unwrap();
    guest.poweroff(POWEROFF).unwrap();
}

/// Waits (bounded by [`CMD`]) until exactly `n` dmesg lines match `grep`
/// (a `grep -c` pattern, quoted, with its options) and `ready(guest)`
/// holds; more than `n` is a failure.
pub fn wait_dmesg_lines(
    guest: &mut Guest,
    grep: &str,
    n: usize,
    mut ready: impl FnMut(&mut Guest) -> bool,
) {
    let started = Instant::now();
    loop {
        let out = guest
            .run_ok(&format!("dmesg | grep -c {grep} || true"), CMD)
            .unwrap();
        let seen: usize = out.trim().parse().unwrap();
        assert!(
            seen <= n,
            "{}: {seen} lines match {grep}, expected {n}",
            guest.name()
        );
        if seen == n && ready(guest) {
            return;
        }
        assert!(
            started.elapsed() < CMD,
            "{}: {seen} of {n} lines match {grep} after {:?}",
            guest.name(),
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded by [`CMD`]) until the driver has resumed `n` times since
/// boot (its "resumed with" lines; more is a failure) and is active;
/// returns the last RECONCILE summary.
pub fn wait_resumes(guest: &mut Guest, n: usize) -> String {
    wait_dmesg_lines(guest, "-F 'resumed with'", n, |g| {
        g.driver_state().unwrap() == "active"
    });
    guest.wait_for_dmesg("RECONCILE:", CMD).unwrap()
}

/// The `[seconds]` timestamp of a dmesg line.
pub fn dmesg_time(line: &str) -> f64 {
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

/// The `pasidctl --json vms` entry of `vm` (the whole JSON: fields the
/// typed view does not know, `last_probe` and the state, are read here).
pub fn vm_json(daemon: &Daemon, vm: &str) -> Value {
    let vms = daemon.pasidctl_json(&["vms"]).unwrap();
    vms.as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == vm))
        .cloned()
        .unwrap_or_else(|| panic!("no {vm} in {vms}"))
}

/// `pasidctl --json detach`; checks the report and returns it with the
/// command's wall time.
pub fn detach(daemon: &Daemon, vm: &str, qmp: &Path, extra: &[&str]) -> (Value, Duration) {
    let qmp = qmp.to_string_lossy();
    let mut args = vec!["detach", "--vm", vm, "--qmp", &qmp, "--timeout", "60"];
    args.extend_from_slice(extra);
    let at = Instant::now();
    let report = daemon.pasidctl_json(&args).unwrap();
    let took = at.elapsed();
    assert_eq!(report["vm"], vm, "{report}");
    assert_eq!(
        report["device"]["driver"], "vhost-user-test-device-pci",
        "{report}"
    );
    assert!(report["unplug_ms"].as_u64().is_some(), "{report}");
    let host = vm_json(daemon, vm);
    assert_eq!(host["connected"], false, "{host}");
    (report, took)
}
