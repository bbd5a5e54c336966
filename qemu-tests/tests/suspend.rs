// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest suspends to RAM (ACPI S3) with PASIDs held and keeps them.
//!
//! The driver's freeze quiesces and resets the device without the
//! protocol's RESET request, and restore sets the virtqueue up again. For
//! the vhost-user device that means QEMU stops the vring (GET_VRING_BASE)
//! at the guest's device reset and sets it up anew (SET_VRING_*) at
//! restore, which the test sees in QEMU's `vhost_user_write` trace; the
//! backend must go on serving on the same connection and must not reclaim
//! anything. The guest wakes up by itself: the RTC alarm
//! (rtc_cmos, built into both cloud kernels) wakes QEMU's `pc` machine
//! from S3. (Suspend-to-idle, `freeze`, calls the same driver callbacks but
//! its RTC wake-up does not fire under TCG here; hibernation needs swap.)
//!
//! Runs on both kernels, as `suspend_keeps_pasids::linux_6_1` and
//! `::linux_5_10`. The daemon binaries must have been built first
//! (`cargo build --release --bins`).

// As in scenarios.rs: a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{assert_guest_knows, load_v1_driver, sole_holdings, v1_daemon_config, CMD, MAX, MIN};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest};

/// Bound on the whole suspend and resume (the alarm fires after 3 s).
const SUSPEND: Duration = Duration::from_secs(90);
/// PASIDs held across the suspend, and allocated again after it.
const HELD: u32 = 8;

qemu_tests::per_kernel!(suspend_keeps_pasids);

/// How many vhost-user messages named `name` (e.g. `GET_VRING_BASE`) QEMU
/// has sent so far, from its `vhost_user_write` trace on stderr.
fn vhost_user_messages(guest: &Guest, name: &str) -> usize {
    guest.qemu_stderr().matches(&format!("({name})")).count()
}

/// Waits (QEMU's stderr is read by another thread) until QEMU has sent at
/// least `count` messages named `name`.
fn wait_vhost_user_messages(guest: &Guest, name: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while vhost_user_messages(guest, name) < count {
        assert!(
            Instant::now() < deadline,
            "QEMU sent {} {name}, expected at least {count}:\n{}",
            vhost_user_messages(guest, name),
            guest.qemu_stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The guest holds 8 PASIDs, suspends to RAM and wakes up: the host still
/// lists them for the VM and the guest's framework still knows them, no
/// RESET was sent, nothing was reclaimed and the connection stayed; 8 more
/// allocations then come from the host, and all 16 free cleanly.
fn suspend_keeps_pasids(kernel: Kernel) {
    let daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new().vm(VmSlot::new("vm0")),
    ))
    .unwrap();
    let mut config = GuestConfig::new("vm0", kernel).vhost_user(daemon.socket("vm0").unwrap());
    // QEMU traces each vhost-user message it sends to the backend.
    config.extra_qemu_args = vec!["-trace".into(), "vhost_user_write".into()];
    let mut guest = Guest::boot(config).unwrap();
    load_v1_driver(&mut guest, "").unwrap();
    guest
        .wait_for_dmesg(
            "IOASID allocator registered after 1 attempt(s): active",
            CMD,
        )
        .unwrap();
    guest.load_exerciser().unwrap();
    let device = guest.driver_status().unwrap().backend;

    assert_eq!(guest.alloc_n(HELD, MIN, MAX).unwrap().count, HELD);
    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), HELD as usize);
    let before = daemon.vm("vm0").unwrap();
    assert_eq!(before.counters.request("RESET"), 1, "{before:?}");

    let stops = vhost_user_messages(&guest, "GET_VRING_BASE");
    let starts = vhost_user_messages(&guest, "SET_VRING_ADDR");
    let mark = daemon.log_mark();
    let started = Instant::now();
    guest
        .run_ok(
            "echo +3 > /sys/class/rtc/rtc0/wakealarm && echo mem > /sys/power/state",
            SUSPEND,
        )
        .unwrap();
    eprintln!(
        "{kernel}: suspend to RAM and back in {:?}",
        started.elapsed()
    );
    // A real S3 cycle, through the driver's freeze and restore.
    guest
        .wait_for_dmesg("Waking up from system sleep state S3", CMD)
        .unwrap();
    guest
        .wait_for_dmesg(
            &format!("{device}: frozen with {HELD} PASID(s) outstanding"),
            CMD,
        )
        .unwrap();
    guest
        .wait_for_dmesg(
            &format!("{device}: restored with {HELD} PASID(s) outstanding"),
            CMD,
        )
        .unwrap();

    // QEMU stopped the vring at the guest's device reset and set it up
    // anew at restore, on the same connection.
    wait_vhost_user_messages(&guest, "GET_VRING_BASE", stops + 1);
    wait_vhost_user_messages(&guest, "SET_VRING_ADDR", starts + 1);

    // The guest's view: still active, still holding them.
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (status.state.as_str(), status.backend.as_str()),
        ("active", device.as_str()),
        "{status:?}"
    );
    assert_eq!(status.counter("outstanding"), u64::from(HELD), "{status:?}");
    assert_eq!(status.counter("unsent_frees"), 0, "{status:?}");
    assert_eq!(status.failures(), [], "{status:?}");
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());

    // The host's view: the same PASIDs, one reference each; no RESET, no
    // reclaim, no reconnection.
    assert_eq!(sole_holdings(&daemon, "vm0"), held);
    let after = daemon.vm("vm0").unwrap();
    assert!(after.connected, "{after:?}");
    assert_eq!(
        (
            after.counters.request("RESET"),
            after.counters.reclaimed,
            after.counters.connects
        ),
        (1, 0, before.counters.connects),
        "{after:?}"
    );
    let log = daemon.log();
    let since = log.get(mark..).unwrap_or_default();
    assert!(
        !since.contains("event=reclaim") && !since.contains("event=disconnect"),
        "daemon log since the suspend:\n{since}"
    );

    // The re-created virtqueue works: allocations come from the host again.
    assert_eq!(guest.alloc_n(HELD, MIN, MAX).unwrap().count, HELD);
    let all = sole_holdings(&daemon, "vm0");
    assert_eq!(all.len(), 2 * HELD as usize, "{all:?}");
    assert!(held.is_subset(&all), "{held:?} not in {all:?}");
    assert_guest_knows(&mut guest, &all, &BTreeSet::new());

    // And every one of them frees cleanly on both sides.
    assert_eq!(guest.free_all().unwrap(), u64::from(2 * HELD));
    assert!(daemon.pasids().unwrap().is_empty());
    let status = guest.driver_status().unwrap();
    assert_eq!(
        (
            status.counter("allocs"),
            status.counter("frees"),
            status.counter("outstanding")
        ),
        (u64::from(2 * HELD), u64::from(2 * HELD), 0),
        "{status:?}"
    );
    let host = daemon.vm("vm0").unwrap();
    assert_eq!(
        (host.held, host.counters.request("FREE")),
        (0, u64::from(2 * HELD)),
        "{host:?}"
    );

    guest.check_health().unwrap();
    guest.poweroff(CMD).unwrap();
}
