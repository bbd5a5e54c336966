// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end scenarios of vpasid: real guests (Linux 6.1 and 5.10 under
//! QEMU TCG) running `virtio_pasid.ko` against the real `vhost-user-pasid`
//! daemon, which listens on sockets in a temporary directory. Each scenario
//! asserts on the guest's view (the IOASID framework through the test-only
//! exerciser, the driver's sysfs counters, dmesg) and on the host's view
//! (`pasidctl --json`, the daemon's log), and every guest ends with a health
//! check (no WARN, BUG, Oops, lockup, RCU stall or unexpected taint) and a
//! clean power-off.
//!
//! Each scenario runs once per kernel, as `<scenario>::linux_6_1` and
//! `<scenario>::linux_5_10`. Logs: `target/qemu-tests-logs/<scenario>.
//! linux_<kernel>-{<vm>,daemon}.log`. The daemon binaries must have been
//! built first (`cargo build --release --bins`).

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s, so clippy does not see them as test code: in them, as in any
// test, a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_guest_knows, assert_v1_path, boot_in_parallel, finish, guest_config, load_v1_driver,
    sole_holdings, v1_daemon_config, v1_driver_params, CMD, MAX, MIN,
};
use qemu_tests::daemon::VmEntry;
use qemu_tests::vpasid::{DriverStatus, Found, EXERCISER_CTL};
use qemu_tests::{Daemon, DaemonConfig, Guest, Kernel, VmSlot, VpasidGuest};

/// Bound on a reboot until the shell is back.
const REBOOT: Duration = Duration::from_secs(120);
/// Bound on a daemon log line or a dmesg line showing up.
const SHOWS_UP: Duration = Duration::from_secs(20);

qemu_tests::per_kernel!(
    allocations_come_from_the_host,
    two_vms_get_disjoint_pasids,
    find_returns_private_data,
    small_range_is_exhausted,
    rmmod_refused_while_outstanding,
    driver_waits_for_default_ids,
    unbind_while_waiting,
    poweroff_reclaims,
    reboot_resets,
    daemon_killed_mid_run,
    quota_is_enforced,
);

// ---------------------------------------------------------------------------
// Helpers

/// A daemon with one slot per spec, leasing or not as `kernel`'s v1
/// variant says (`common::v1_host_leases_off`).
fn start_daemon(kernel: Kernel, slots: Vec<VmSlot>) -> Daemon {
    let config = slots
        .into_iter()
        .fold(DaemonConfig::new(), |config, slot| config.vm(slot));
    Daemon::start(v1_daemon_config(kernel, config)).unwrap()
}

/// Loads the driver with `params` on the v1 request path
/// (`common::v1_host_leases_off`), checks it registered (dmesg and `state`)
/// without a lease cache, and loads the exerciser.
fn load_active(guest: &mut Guest, params: &str) -> DriverStatus {
    load_v1_driver(guest, params).unwrap();
    guest
        .wait_for_dmesg(
            "IOASID allocator registered after 1 attempt(s): active",
            CMD,
        )
        .unwrap();
    let status = guest.driver_status().unwrap();
    assert_eq!(status.state, "active", "{status:?}");
    assert!(status.backend.starts_with("virtio"), "{status:?}");
    assert_eq!(status.counter("lease_cap"), 0, "{status:?}");
    guest.load_exerciser().unwrap();
    status
}

/// Up to `n` IDs in `[lo, hi]` outside `ids`.
fn ids_outside(ids: &BTreeSet<u32>, lo: u32, hi: u32, n: usize) -> BTreeSet<u32> {
    (lo..=hi).filter(|id| !ids.contains(id)).take(n).collect()
}

/// Every failure counter of the driver is zero.
fn assert_no_failures(status: &DriverStatus) {
    assert_eq!(status.failures(), [], "{status:?}");
}

fn host_vm(daemon: &Daemon, vm: &str) -> VmEntry {
    daemon.vm(vm).unwrap()
}

// ---------------------------------------------------------------------------
// Scenarios

/// 1. The driver registers; 32 allocations in [100, 10000] succeed, lie in
///    range and are exactly what the host lists for this VM; free_all
///    empties the host's list.
fn allocations_come_from_the_host(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();

    let status = load_active(&mut guest, "");
    let probe = guest
        .wait_for_dmesg("RESET released 0 reference(s)", CMD)
        .unwrap();
    assert!(probe.contains("protocol v1"), "{probe}");
    assert_no_failures(&status);

    // The config space the guest read is the host's view of this slot.
    let config = guest.device_config().unwrap();
    let host = host_vm(&daemon, "vm0");
    assert_eq!(config.device, status.backend);
    assert_eq!(config.version, pasid_protocol::VERSION);
    assert_eq!(config.pasid_bits, pasid_protocol::MAX_PASID_BITS);
    assert_eq!(
        (config.pasid_min, config.pasid_max, config.quota),
        (host.range_start, host.range_end, host.quota),
        "{config:?} vs {host:?}"
    );
    let space_id = daemon.stats().unwrap()["space_id"].as_u64().unwrap();
    assert_eq!(config.space_id, format!("{space_id:#x}"));
    assert!(host.connected, "{host:?}");
    assert_eq!(host.counters.request("RESET"), 1, "{host:?}");
    assert!(daemon.pasids().unwrap().is_empty());
    assert_v1_path(&mut guest, &daemon, "vm0");

    let got = guest.alloc_n(32, MIN, MAX).unwrap();
    assert_eq!(got.count, 32, "{got:?}");
    let (first, last) = (got.first.unwrap(), got.last.unwrap());
    for id in [first, last] {
        assert!((MIN..=MAX).contains(&id), "{got:?}");
    }

    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), 32, "{held:?}");
    assert!(held.iter().all(|p| (MIN..=MAX).contains(p)), "{held:?}");
    assert!(held.contains(&first) && held.contains(&last), "{held:?}");
    assert_eq!(daemon.pasids().unwrap().len(), 32, "only vm0 holds PASIDs");
    assert_guest_knows(&mut guest, &held, &ids_outside(&held, MIN, MAX, 4));

    let status = guest.driver_status().unwrap();
    assert_eq!(
        (status.counter("allocs"), status.counter("outstanding")),
        (32, 32)
    );
    assert_no_failures(&status);
    let host = host_vm(&daemon, "vm0");
    assert_eq!(host.held, 32, "{host:?}");
    assert_eq!(host.counters.request("ALLOC"), 32, "{host:?}");

    assert_eq!(guest.free_all().unwrap(), 32);
    assert!(daemon.pasids().unwrap().is_empty());
    let host = host_vm(&daemon, "vm0");
    assert_eq!(
        (host.held, host.counters.request("FREE")),
        (0, 32),
        "{host:?}"
    );
    assert_eq!(host.counters.status("OK"), 1 + 32 + 32, "{host:?}");
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (status.counter("frees"), status.counter("outstanding")),
        (32, 0)
    );

    finish(guest);
    daemon
        .wait_log("vm=vm0 event=disconnect", SHOWS_UP)
        .unwrap();
    assert!(!host_vm(&daemon, "vm0").connected);
}

/// 2. Two VMs on one daemon allocate 64 PASIDs each at the same moment and
///    get globally disjoint sets; the host lists each VM's set exactly, and
///    each guest knows its own set and none of the other's.
fn two_vms_get_disjoint_pasids(kernel: Kernel) {
    const N: u32 = 64;
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm1"), VmSlot::new("vm2")]);
    let configs = ["vm1", "vm2"]
        .map(|vm| guest_config(kernel, &daemon, vm))
        .to_vec();
    let mut guests = boot_in_parallel(configs, |guest| {
        guest.load_driver(&v1_driver_params(kernel, ""))?;
        guest.wait_driver_state("active", CMD)?;
        guest.load_exerciser()
    });

    // Both allocate at once.
    let barrier = std::sync::Barrier::new(guests.len());
    let results: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = guests
            .iter_mut()
            .map(|guest| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    let got = guest.alloc_n(N, MIN, MAX);
                    (got, started, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (got, _, _) in &results {
        let got = got.as_ref().unwrap();
        assert_eq!(got.count, N, "{got:?}");
    }

    let sets: Vec<BTreeSet<u32>> = ["vm1", "vm2"]
        .iter()
        .map(|vm| sole_holdings(&daemon, vm))
        .collect();
    for set in &sets {
        assert_eq!(set.len(), N as usize, "{set:?}");
        assert!(set.iter().all(|p| (MIN..=MAX).contains(p)), "{set:?}");
    }
    assert!(sets[0].is_disjoint(&sets[1]), "{sets:?}");
    assert_eq!(daemon.pasids().unwrap().len(), 2 * N as usize);
    let (a, b) = (&sets[0], &sets[1]);
    let interleaved =
        a.iter().any(|p| p > b.first().unwrap()) && b.iter().any(|p| p > a.first().unwrap());
    let overlap = results[0].1 < results[1].2 && results[1].1 < results[0].2;
    eprintln!(
        "{kernel}: vm1 {:?}..{:?}, vm2 {:?}..{:?}; commands overlapped in time: {overlap}; \
         sets interleaved: {interleaved}",
        a.first(),
        a.last(),
        b.first(),
        b.last()
    );

    for (i, guest) in guests.iter_mut().enumerate() {
        assert_guest_knows(guest, &sets[i], &sets[1 - i]);
        assert_eq!(
            guest.driver_status().unwrap().counter("allocs"),
            u64::from(N)
        );
    }
    for guest in &mut guests {
        assert_eq!(guest.free_all().unwrap(), u64::from(N));
    }
    assert!(daemon.pasids().unwrap().is_empty());
    for vm in ["vm1", "vm2"] {
        let host = host_vm(&daemon, vm);
        assert_eq!(
            (
                host.held,
                host.counters.request("ALLOC"),
                host.counters.request("FREE")
            ),
            (0, u64::from(N), u64::from(N)),
            "{host:?}"
        );
    }
    for guest in guests {
        finish(guest);
    }
}

/// 3. `ioasid_find` returns the private data the caller stored, for IDs the
///    host allocated, also after `ioasid_set_data` changed it; an ID of
///    another set gives EACCES, a freed or unknown one ENOENT.
fn find_returns_private_data(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, "");

    let privates: [u64; 3] = [0x1234, 0xdead_beef, 0x7fff_0000_1234_5678];
    let ids: Vec<u32> = privates
        .iter()
        .map(|&p| guest.alloc(MIN, MAX, p).unwrap().unwrap())
        .collect();
    let other = guest
        .exerciser(&format!("alloc_other {MIN} {MAX} 0x99"))
        .unwrap();
    let other = qemu_tests::vpasid::parse_alloc(&other).unwrap().unwrap();

    // All four came from the host.
    let mut expected: BTreeSet<u32> = ids.iter().copied().collect();
    expected.insert(other);
    assert_eq!(expected.len(), 4);
    assert_eq!(sole_holdings(&daemon, "vm0"), expected);

    for (&id, &private) in ids.iter().zip(&privates) {
        assert_eq!(
            guest.find(id).unwrap(),
            Found::Private(private),
            "find {id}"
        );
    }
    assert_eq!(guest.find(other).unwrap(), Found::OtherSet);
    let unknown = *ids_outside(&expected, MIN, MAX, 1).first().unwrap();
    assert_eq!(guest.find(unknown).unwrap(), Found::NotFound);

    assert_eq!(
        guest
            .exerciser(&format!("set_data {} 0x5678", ids[0]))
            .unwrap(),
        "ok"
    );
    assert_eq!(guest.find(ids[0]).unwrap(), Found::Private(0x5678));
    assert_eq!(guest.find(ids[1]).unwrap(), Found::Private(privates[1]));

    guest.free(ids[1]).unwrap();
    assert_eq!(guest.find(ids[1]).unwrap(), Found::NotFound);
    expected.remove(&ids[1]);
    assert_eq!(sole_holdings(&daemon, "vm0"), expected);
    assert_eq!(guest.find(ids[2]).unwrap(), Found::Private(privates[2]));

    assert_eq!(guest.free_all().unwrap(), 3);
    assert!(daemon.pasids().unwrap().is_empty());
    assert_no_failures(&guest.driver_status().unwrap());
    finish(guest);
}

/// 4. The host gives this VM [64, 4095]; the guest sees that range. A
///    small range, [64, 71], is exhausted: `alloc_n` gets exactly 8, the
///    next `alloc` is INVALID_IOASID, the driver counts NO_SPACE, and no
///    warning is logged. A request wholly below the VM's range is refused
///    by the driver without asking the host.
fn small_range_is_exhausted(kernel: Kernel) {
    const LO: u32 = 64;
    const HI: u32 = 4095;
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0").range(LO, HI)]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, "");

    let config = guest.device_config().unwrap();
    assert_eq!((config.pasid_min, config.pasid_max), (LO, HI), "{config:?}");
    let min = config.pasid_min;
    let max = min + 7;

    let got = guest.alloc_n(16, min, max).unwrap();
    assert_eq!(got.count, 8, "{got:?}");
    let want: BTreeSet<u32> = (min..=max).collect();
    assert_eq!(sole_holdings(&daemon, "vm0"), want);
    // alloc_n stopped at its 9th attempt, which the host refused.
    assert_eq!(
        guest.driver_status().unwrap().counter("failures/no_space"),
        1
    );

    assert_eq!(guest.alloc(min, max, 0).unwrap(), None, "range is full");
    let status = guest.driver_status().unwrap();
    assert_eq!(status.counter("failures/no_space"), 2, "{status:?}");
    assert_eq!(
        (status.counter("allocs"), status.counter("outstanding")),
        (8, 8)
    );
    let host = host_vm(&daemon, "vm0");
    assert_eq!(host.counters.status("NO_SPACE"), 2, "{host:?}");
    assert_eq!(host.counters.request("ALLOC"), 10, "{host:?}");

    // Below the VM's range: refused in the guest, the host never asked.
    assert_eq!(guest.alloc(1, LO - 1, 0).unwrap(), None);
    assert_eq!(guest.driver_status().unwrap().counter("rejected"), 1);
    assert_eq!(host_vm(&daemon, "vm0").counters.request("ALLOC"), 10);

    // A range overlapping the VM's is narrowed to it.
    let id = guest.alloc(1, 100, 0).unwrap().unwrap();
    assert!((max + 1..=100).contains(&id), "{id}");
    assert!(sole_holdings(&daemon, "vm0").contains(&id));

    // Exhaustion is not an error worth a kernel message.
    let out = guest
        .run_ok("dmesg | grep -c 'request failed' || true", CMD)
        .unwrap();
    assert_eq!(out.trim(), "0", "driver warned about a full range");

    assert_eq!(guest.free_all().unwrap(), 9);
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 5. `rmmod virtio_pasid` is refused while PASIDs are outstanding; after
///    free_all it unloads, and a new allocation then comes from the guest's
///    default allocator (the host sees nothing). Loading the driver again
///    makes the host the allocator again.
fn rmmod_refused_while_outstanding(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, "");
    let device = guest.device_config().unwrap().device;

    assert_eq!(guest.alloc_n(4, MIN, MAX).unwrap().count, 4);
    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), 4);

    let out = guest.run("rmmod virtio_pasid", CMD).unwrap();
    assert_ne!(
        out.exit_code, 0,
        "rmmod succeeded with 4 PASIDs out: {out:?}"
    );
    assert!(guest.module_loaded("virtio_pasid").unwrap());
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (status.state.as_str(), status.counter("outstanding")),
        ("active", 4)
    );
    assert_eq!(sole_holdings(&daemon, "vm0"), held);

    assert_eq!(guest.free_all().unwrap(), 4);
    assert!(daemon.pasids().unwrap().is_empty());
    guest.run_ok("rmmod virtio_pasid", CMD).unwrap();
    assert!(!guest.module_loaded("virtio_pasid").unwrap());
    guest
        .wait_for_dmesg(&format!("{device}: IOASID allocator unregistered"), CMD)
        .unwrap();
    guest
        .wait_for_dmesg(&format!("{device}: RESET released 0 reference(s)"), CMD)
        .unwrap();
    guest
        .wait_for_dmesg(&format!("{device}: removed"), CMD)
        .unwrap();
    let host = host_vm(&daemon, "vm0");
    assert_eq!(
        host.counters.request("RESET"),
        2,
        "probe and remove: {host:?}"
    );
    let host_allocs = host.counters.request("ALLOC");

    // Now the default allocator serves the framework.
    let id = guest.alloc(MIN, MAX, 0x42).unwrap().unwrap();
    assert!((MIN..=MAX).contains(&id));
    assert_eq!(guest.find(id).unwrap(), Found::Private(0x42));
    assert!(daemon.vm_pasids("vm0").unwrap().is_empty());
    assert_eq!(
        host_vm(&daemon, "vm0").counters.request("ALLOC"),
        host_allocs
    );
    assert_eq!(guest.free_all().unwrap(), 1);

    // And the driver can come back.
    load_v1_driver(&mut guest, "").unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    let id = guest.alloc(MIN, MAX, 0).unwrap().unwrap();
    assert_eq!(sole_holdings(&daemon, "vm0"), BTreeSet::from([id]));
    assert_eq!(guest.free_all().unwrap(), 1);
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 6. The driver is loaded while the default allocator holds IOASIDs:
///    registration gets -EAGAIN and the driver waits
///    (`waiting-for-default-ids`); once they are freed it becomes `active`
///    within a bounded time and allocations go to the host.
fn driver_waits_for_default_ids(kernel: Kernel) {
    /// The driver's back-off tops out at 10 s; allow for a slow guest.
    const ACTIVE_WITHIN: Duration = Duration::from_secs(15);
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();

    guest.load_exerciser().unwrap();
    assert_eq!(guest.alloc_n(3, MIN, MAX).unwrap().count, 3);
    assert!(daemon.pasids().unwrap().is_empty());

    load_v1_driver(&mut guest, "").unwrap();
    guest
        .wait_for_dmesg("still holds IDs (-EAGAIN): waiting", CMD)
        .unwrap();
    let status = guest.driver_status().unwrap();
    assert_eq!(status.state, "waiting-for-default-ids", "{status:?}");
    assert!(status.backend.starts_with("virtio"), "{status:?}");
    assert!(status.counter("register_attempts") >= 1, "{status:?}");
    // The probe's RESET reached the host; no allocation did.
    let host = host_vm(&daemon, "vm0");
    assert_eq!(
        (
            host.counters.request("RESET"),
            host.counters.request("ALLOC")
        ),
        (1, 0),
        "{host:?}"
    );

    // Meanwhile the default allocator keeps serving.
    assert!(guest.alloc(MIN, MAX, 0).unwrap().is_some());
    assert!(daemon.pasids().unwrap().is_empty());

    assert_eq!(guest.free_all().unwrap(), 4);
    let took = guest.wait_driver_state("active", ACTIVE_WITHIN).unwrap();
    eprintln!("{kernel}: active {took:?} after the default IDs were freed");
    let line = guest
        .wait_for_dmesg("IOASID allocator registered after", CMD)
        .unwrap();
    let attempts: u32 = line
        .split("after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in {line:?}"));
    assert!(attempts >= 2, "{line}");

    let got = guest.alloc_n(5, MIN, MAX).unwrap();
    assert_eq!(got.count, 5);
    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), 5);
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());
    assert_eq!(guest.free_all().unwrap(), 5);
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 6a. The device is unbound while the driver waits for the default IDs:
///     remove cancels the pending registration retry and sends RESET, and
///     the allocator is `unregistered` with no backend and no debugfs file.
///     Bound again once the default IDs are freed, the device registers at
///     its first attempt, with counters from zero, and the host allocates.
fn unbind_while_waiting(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    guest.load_exerciser().unwrap();
    assert_eq!(guest.alloc_n(3, MIN, MAX).unwrap().count, 3);
    load_v1_driver(&mut guest, "").unwrap();
    guest
        .wait_for_dmesg("still holds IDs (-EAGAIN): waiting", CMD)
        .unwrap();
    let device = guest.driver_status().unwrap().backend;
    assert!(device.starts_with("virtio"), "{device}");

    let drv = "/sys/bus/virtio/drivers/virtio_pasid";
    guest
        .run_ok(&format!("echo {device} > {drv}/unbind"), CMD)
        .unwrap();
    guest
        .wait_for_dmesg(&format!("{device}: removed"), CMD)
        .unwrap();
    let out = guest
        .run_ok(
            &format!(
                "cat {drv}/state {drv}/backend; \
                 test -e /sys/kernel/debug/virtio_pasid/{device} && echo stats-left; true"
            ),
            CMD,
        )
        .unwrap();
    assert_eq!(out, "unregistered\nnone\n");
    assert_eq!(
        host_vm(&daemon, "vm0").counters.request("RESET"),
        2,
        "probe and remove"
    );

    assert_eq!(guest.free_all().unwrap(), 3);
    guest
        .run_ok(&format!("echo {device} > {drv}/bind"), CMD)
        .unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    let out = guest
        .run_ok("dmesg | grep -c 'IOASID allocator registered after'", CMD)
        .unwrap();
    assert_eq!(out.trim(), "1", "one registration, by the new binding");
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("register_attempts"),
            status.counter("allocs")
        ),
        (1, 0),
        "{status:?}"
    );
    let id = guest.alloc(MIN, MAX, 0).unwrap().unwrap();
    assert_eq!(sole_holdings(&daemon, "vm0"), BTreeSet::from([id]));
    assert_eq!(guest.free_all().unwrap(), 1);
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 7a. A VM powered off with PASIDs held: the host logs the reclaim for
///     that VM and lists none for it.
fn poweroff_reclaims(kernel: Kernel) {
    // Hold-over 0: the power-off is released as a disconnect (with a
    // hold-over, the QEMU's exit releases it, `reason="qemu exited"`).
    let daemon = start_daemon(
        kernel,
        vec![VmSlot::new("vm0").holdover(0), VmSlot::new("bystander")],
    );
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, "");
    assert_eq!(guest.alloc_n(6, MIN, MAX).unwrap().count, 6);
    assert_eq!(sole_holdings(&daemon, "vm0").len(), 6);
    // A host holder pins one of them: it must outlive the VM's reclaim.
    let pinned = *sole_holdings(&daemon, "vm0").first().unwrap();
    daemon
        .pasidctl(&["get", &pinned.to_string(), "--holder", "test"])
        .unwrap();

    let mark = daemon.log_mark();
    finish(guest);
    let line = daemon
        .wait_log_since(mark, "vm=vm0 event=reclaim reason=\"disconnect\"", SHOWS_UP)
        .unwrap();
    assert!(
        line.contains("references=6 pasids_freed=5"),
        "reclaim line: {line}"
    );
    daemon
        .wait_log_since(mark, "vm=vm0 event=disconnect", SHOWS_UP)
        .unwrap();

    assert!(daemon.vm_pasids("vm0").unwrap().is_empty());
    let left = daemon.pasids().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (
            left[0].pasid,
            left[0].holders[0].owner.as_str(),
            left[0].holders[0].kind.as_str()
        ),
        (pinned, "test", "host")
    );
    let host = host_vm(&daemon, "vm0");
    assert!(!host.connected, "{host:?}");
    assert_eq!((host.held, host.counters.reclaimed), (0, 6), "{host:?}");
    assert_eq!(host_vm(&daemon, "bystander").counters.reclaimed, 0);
    daemon
        .pasidctl(&["put", &pinned.to_string(), "--holder", "test"])
        .unwrap();
    assert!(daemon.pasids().unwrap().is_empty());
}

/// 7b. A VM rebooted with PASIDs held: the connection stays, the host keeps
///     the PASIDs until the new driver's probe sends RESET, then reclaims
///     them all; new allocations work.
fn reboot_resets(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0").allow_reboot()).unwrap();
    load_active(&mut guest, "");
    assert_eq!(guest.alloc_n(6, MIN, MAX).unwrap().count, 6);
    let before = sole_holdings(&daemon, "vm0");
    assert_eq!(before.len(), 6);
    guest.check_health().unwrap();
    let boot_id = guest
        .run_ok("cat /proc/sys/kernel/random/boot_id", CMD)
        .unwrap();

    guest.reboot_and_wait(REBOOT).unwrap();
    let new_boot_id = guest
        .run_ok("cat /proc/sys/kernel/random/boot_id", CMD)
        .unwrap();
    assert_ne!(boot_id, new_boot_id, "the guest did not reboot");
    assert!(!guest.module_loaded("virtio_pasid").unwrap());
    // Nothing told the host yet: the guest reset is invisible to it.
    assert_eq!(sole_holdings(&daemon, "vm0"), before);

    let mark = daemon.log_mark();
    load_active(&mut guest, "");
    guest
        .wait_for_dmesg("RESET released 6 reference(s)", CMD)
        .unwrap();
    let line = daemon
        .wait_log_since(
            mark,
            "vm=vm0 event=reclaim reason=\"driver reset\"",
            SHOWS_UP,
        )
        .unwrap();
    assert!(
        line.contains("references=6 pasids_freed=6"),
        "reclaim line: {line}"
    );
    assert!(daemon.pasids().unwrap().is_empty());
    let host = host_vm(&daemon, "vm0");
    assert!(host.connected, "{host:?}");
    assert_eq!(
        (host.held, host.counters.reclaimed, host.counters.connects),
        (0, 6, 1),
        "{host:?}"
    );

    let got = guest.alloc_n(3, MIN, MAX).unwrap();
    assert_eq!(got.count, 3);
    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), 3);
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());
    assert_eq!(guest.free_all().unwrap(), 3);
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 8. The daemon is killed (SIGKILL) mid-run: the first guest allocation
///    fails with INVALID_IOASID within the driver's timeout, which marks
///    the device unresponsive; a free still completes in the guest (its
///    FREE is posted, never waited for); every later allocation fails at
///    once (`fast_fails`) instead of spinning `timeout_ms` with the
///    framework's spinlock held; the guest stays healthy.
fn daemon_killed_mid_run(kernel: Kernel) {
    const TIMEOUT_MS: u64 = 500;
    const LOOP: u32 = 20;
    /// Bound on one failing allocation once the device is marked
    /// unresponsive (guest time inside `ioasid_alloc()`): a fast failure
    /// takes microseconds, TCG on a busy host is slow.
    const FAST_FAIL: Duration = Duration::from_millis(50);
    let mut daemon = start_daemon(kernel, vec![VmSlot::new("vm0")]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, &format!("timeout_ms={TIMEOUT_MS}"));
    let kept = guest.alloc(MIN, MAX, 0).unwrap().unwrap();
    assert_eq!(daemon.vm_pasids("vm0").unwrap(), BTreeSet::from([kept]));

    daemon.kill().unwrap();

    let started = Instant::now();
    assert_eq!(guest.alloc(MIN, MAX, 0).unwrap(), None);
    let took = started.elapsed();
    eprintln!("{kernel}: alloc with the daemon dead failed after {took:?}");
    assert!(took < Duration::from_secs(5), "alloc took {took:?}");
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS * 4 / 5),
        "no wait for the device: {took:?}"
    );
    let status = guest.driver_status().unwrap();
    assert_eq!(status.state, "active", "{status:?}");
    assert_eq!(
        (
            status.counter("timeouts"),
            status.counter("outstanding"),
            status.counter("unresponsive")
        ),
        (1, 1, 1),
        "{status:?}"
    );
    assert_no_failures(&status);
    guest
        .wait_for_dmesg("ALLOC request failed: -110", CMD)
        .unwrap();
    guest
        .wait_for_dmesg("device marked unresponsive", CMD)
        .unwrap();

    // A free cannot reach the host either, but the guest forgets the ID
    // without waiting.
    guest.free(kept).unwrap();
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("timeouts"),
            status.counter("outstanding"),
            status.counter("frees")
        ),
        (1, 0, 1),
        "{status:?}"
    );
    let fast_fails = status.counter("fast_fails");

    // Marked unresponsive, the driver fails every allocation at once.
    let started = Instant::now();
    let out = guest
        .run_ok(
            &format!(
                "for i in $(seq {LOOP}); do echo 'alloc_timed {MIN} {MAX}' > {EXERCISER_CTL}; \
                 cat {EXERCISER_CTL}; done"
            ),
            CMD,
        )
        .unwrap();
    let wall = started.elapsed();
    let results: Vec<_> = out
        .lines()
        .map(|l| qemu_tests::vpasid::parse_alloc_timed(l).unwrap())
        .collect();
    eprintln!(
        "{kernel}: {LOOP} allocations on the unresponsive device in {wall:?}: {:?}",
        results.iter().map(|r| r.took).collect::<Vec<_>>()
    );
    assert_eq!(results.len(), LOOP as usize, "{out}");
    for r in &results {
        assert!(r.id.is_none() && r.took < FAST_FAIL, "{results:?}");
    }
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("timeouts"),
            status.counter("fast_fails"),
            status.counter("no_slot")
        ),
        (1, fast_fails + u64::from(LOOP), 0),
        "{status:?}"
    );

    finish(guest);
}

/// 9. A VM with quota 3: three allocations succeed, the fourth fails; the
///    driver counts QUOTA_EXCEEDED once, and the host shows held = 3 and one
///    QUOTA_EXCEEDED answer. The quota bounds PASIDs held at once.
fn quota_is_enforced(kernel: Kernel) {
    let daemon = start_daemon(kernel, vec![VmSlot::new("vm0").quota(3)]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load_active(&mut guest, "");
    assert_eq!(guest.device_config().unwrap().quota, 3);

    let ids: BTreeSet<u32> = (0..3)
        .map(|_| guest.alloc(MIN, MAX, 0).unwrap().unwrap())
        .collect();
    assert_eq!(guest.alloc(MIN, MAX, 0).unwrap(), None, "4th allocation");

    let status = guest.driver_status().unwrap();
    assert_eq!(status.counter("failures/quota_exceeded"), 1, "{status:?}");
    assert_eq!(
        (status.counter("allocs"), status.counter("outstanding")),
        (3, 3)
    );
    let host = host_vm(&daemon, "vm0");
    assert_eq!((host.held, host.quota), (3, 3), "{host:?}");
    assert_eq!(host.counters.status("QUOTA_EXCEEDED"), 1, "{host:?}");
    assert_eq!(sole_holdings(&daemon, "vm0"), ids);

    // Freeing one makes room for one.
    guest.free(*ids.first().unwrap()).unwrap();
    assert!(guest.alloc(MIN, MAX, 0).unwrap().is_some());
    assert_eq!(host_vm(&daemon, "vm0").held, 3);
    assert_eq!(guest.free_all().unwrap(), 3);
    assert_eq!(host_vm(&daemon, "vm0").held, 0);
    assert_v1_path(&mut guest, &daemon, "vm0");
    finish(guest);
}
