// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vpasid-demo`: the project's main job, end to end, for a person to watch.
//!
//! Starts the real `vhost-user-pasid` with two VM slots, boots a Linux 6.1
//! guest (QEMU TCG) with the vpasid device, loads `virtio_pasid`, shows the
//! driver's state and the config space the guest sees, allocates 8 PASIDs
//! through the guest kernel's IOASID framework (the test-only exerciser
//! plays the in-kernel user), shows the host's view with `pasidctl` while
//! they are held: the demo slot leases, so the host holds the 8 in use plus
//! the driver's cache, and `pasidctl vms` shows both (IN-USE, CACHED). It
//! frees them (into the cache: no host request), shows the host's view
//! again, unloads the driver (the cache goes back to the host), powers the
//! guest off and stops the daemon. Every step is also checked: any mismatch ends
//! the demo with one line and a non-zero exit.
//!
//! Needs root and the binaries built first (`cargo build --release --bins`,
//! or `bash qemu-tests/run demo`).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use qemu_tests::vpasid::{wait_lease_settled, Found};
use qemu_tests::{
    ensure_setup, Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest,
};

/// The demo VM's slot name, quota and lease cap (`lease=16`: the driver
/// may cache up to 16 PASIDs).
const VM: &str = "demo";
const QUOTA: u32 = 64;
const LEASE: u32 = 16;
/// A second, idle slot, to show that slots are per VM.
const SPARE: &str = "spare";
/// PASIDs the demo allocates, and the range it asks for.
const COUNT: u32 = 8;
const RANGE: (u32, u32) = (1, (1 << 20) - 1);
/// Private data stored with PASID number i is `PRIVATE_BASE + i`.
const PRIVATE_BASE: u64 = 0xd000;
const CMD: Duration = Duration::from_secs(60);
const SHOWS_UP: Duration = Duration::from_secs(20);
/// Name of the logs under `target/qemu-tests-logs/`.
const LOG_NAME: &str = "vpasid-demo";

type BoxError = Box<dyn std::error::Error>;

fn section(title: &str) {
    println!("\n==== {title} ====");
}

/// Prints `text` indented, for command output.
fn show(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn run() -> Result<(), BoxError> {
    section("1. Set-up: QEMU, guest kernels, guest modules (cached after the first run)");
    let started = Instant::now();
    ensure_setup()?;
    println!("ready in {:.1} s", started.elapsed().as_secs_f64());

    section("2. Host: start vhost-user-pasid with two VM slots");
    let mut daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new(VM).quota(QUOTA).lease(LEASE))
            .vm(VmSlot::new(SPARE))
            .test_name(LOG_NAME),
    )?;
    println!("$ {}", daemon.command_line());
    println!("daemon log: {}", daemon.log_path().display());
    println!("$ pasidctl vms");
    show(&daemon.pasidctl(&["vms"])?);

    section("3. Guest: boot Linux 6.1 with the vpasid device on the demo slot");
    let mut config = GuestConfig::new(VM, Kernel::V6_1).vhost_user(daemon.socket(VM)?);
    config.test_name = Some(LOG_NAME.into());
    let started = Instant::now();
    let mut guest = Guest::boot(config)?;
    println!(
        "guest shell up in {:.1} s; console log: {}",
        started.elapsed().as_secs_f64(),
        guest.log_path().display()
    );
    println!("guest$ uname -r");
    show(&guest.run_ok("uname -r", CMD)?);
    println!(
        "host log: {}",
        daemon.wait_log(&format!("vm={VM} event=connect"), SHOWS_UP)?
    );

    section("4. Guest: load the driver; its state and the config the guest sees");
    println!("guest$ modprobe virtio_pasid");
    guest.load_driver("")?;
    guest.wait_driver_state("active", CMD)?;
    println!("guest$ dmesg | grep 'virtio_pasid virtio'");
    show(&guest.run_ok("dmesg | grep 'virtio_pasid virtio'", CMD)?);
    let status = guest.driver_status()?;
    println!(
        "driver state: {} (backed by {})",
        status.state, status.backend
    );
    let device = guest.device_config()?;
    println!(
        "config space of {}: protocol v{}, PASIDs [{}, {}] of {} bits, quota {}, space {}",
        device.device,
        device.version,
        device.pasid_min,
        device.pasid_max,
        device.pasid_bits,
        device.quota,
        device.space_id
    );
    ensure(status.state == "active", || {
        format!("driver state is {:?}", status.state)
    })?;
    println!(
        "leases: the driver caches up to {} PASIDs (the host's cap for {VM})",
        status.counter("lease_cap")
    );
    ensure(status.counter("lease_cap") == u64::from(LEASE), || {
        format!(
            "the driver caches {}, the host's cap is {LEASE}",
            status.counter("lease_cap")
        )
    })?;
    ensure(device.quota == QUOTA, || {
        format!(
            "the guest sees quota {}, the host set {QUOTA}",
            device.quota
        )
    })?;

    section("5. Guest: allocate 8 PASIDs through the kernel's IOASID framework");
    guest.load_exerciser()?;
    let mut ids = Vec::new();
    for i in 0..u64::from(COUNT) {
        let private = PRIVATE_BASE + i;
        let id = guest
            .alloc(RANGE.0, RANGE.1, private)?
            .ok_or_else(|| format!("ioasid_alloc #{i} returned INVALID_IOASID"))?;
        println!(
            "ioasid_alloc(set, {}, {:#x}, private={private:#x}) = {id}",
            RANGE.0, RANGE.1
        );
        ids.push((id, private));
    }
    for &(id, private) in &ids {
        let found = guest.find(id)?;
        ensure(found == Found::Private(private), || {
            format!("ioasid_find({id}) gave {found}, expected private {private:#x}")
        })?;
    }
    println!("ioasid_find() returns each caller's private data");
    let (status, _) = wait_lease_settled(&mut guest, &daemon, VM, SHOWS_UP)?;
    println!(
        "driver: {} allocations ({} from its cache, {} round trips), {} outstanding, \
         {} cached, {} refills; last round trip {} us",
        status.counter("allocs"),
        status.counter("lease_hits"),
        status.counter("lease_misses"),
        status.counter("outstanding"),
        status.counter("cached"),
        status.counter("refills"),
        status.counter("last_rtt_ns") / 1000
    );

    section("6. Host: the PASIDs while the guest holds them (in use + cached)");
    println!("$ pasidctl pasids");
    show(&daemon.pasidctl(&["pasids"])?);
    println!("$ pasidctl vms");
    show(&daemon.pasidctl(&["vms"])?);
    let guest_ids: BTreeSet<u32> = ids.iter().map(|&(id, _)| id).collect();
    let host_ids = daemon.vm_pasids(VM)?;
    let cached = status.counter("cached");
    ensure(
        guest_ids.is_subset(&host_ids) && host_ids.len() as u64 == u64::from(COUNT) + cached,
        || {
            format!(
                "the host lists {host_ids:?} for {VM}; the guest holds {guest_ids:?} \
                 and caches {cached}"
            )
        },
    )?;
    println!(
        "host and guest agree: {VM} holds {} PASIDs = {COUNT} in use {guest_ids:?} + {cached} \
         in the driver's cache",
        host_ids.len()
    );

    section("7. Guest: free them");
    let freed = guest.free_all()?;
    println!("freed {freed} PASIDs");
    ensure(freed == u64::from(COUNT), || {
        format!("free_all freed {freed}")
    })?;

    let (status, host) = wait_lease_settled(&mut guest, &daemon, VM, SHOWS_UP)?;
    println!(
        "driver: {} outstanding, {} cached; the host answered {} requests in all",
        status.counter("outstanding"),
        status.counter("cached"),
        host.counters.total_requests()
    );

    section("8. Host: after the frees, the driver's cache is all the VM holds");
    println!("$ pasidctl vms");
    show(&daemon.pasidctl(&["vms"])?);
    println!(
        "HELD is exact; the IN-USE/CACHED split is what the driver last reported in a \
         GRANT or RETURN (cache hits and frees into the cache send nothing)"
    );
    ensure(
        status.counter("outstanding") == 0 && u64::from(host.held) == status.counter("cached"),
        || format!("after the frees: guest {status:?}, host {host:?}"),
    )?;

    section("9. Guest: unload the driver; its cache goes back to the host");
    println!("guest$ rmmod virtio_pasid");
    guest.run_ok("rmmod virtio_pasid", CMD)?;
    println!("$ pasidctl vms");
    show(&daemon.pasidctl(&["vms"])?);
    let left = daemon.pasids()?;
    ensure(left.is_empty(), || format!("the host still lists {left:?}"))?;
    println!("the host holds nothing for {VM}");

    section("10. Power off the guest, stop the daemon");
    guest.check_health()?;
    guest.poweroff(CMD)?;
    println!("guest powered off cleanly; its kernel log is healthy");
    println!(
        "host log: {}",
        daemon.wait_log(&format!("vm={VM} event=reclaim"), SHOWS_UP)?
    );
    daemon.stop()?;
    println!("daemon stopped (SIGTERM, exit 0)");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nvpasid demo: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpasid-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
