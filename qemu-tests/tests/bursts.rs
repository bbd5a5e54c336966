// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end scenarios of held bursts (issue 20): a guest that allocates
//! many PASIDs in a row and keeps them, as SVA users do (one per process
//! that binds a device), is served by batches (a miss fetches a GRANT of up
//! to 64, the cache grows up to the host's cap) and not by one ALLOC each.
//! The host's lease cap is its default here (the scenarios are about what
//! a VM gets out of the box). Each scenario asserts on the guest's view
//! (the exerciser's `held` and `alloc_n`, the driver's debugfs counters)
//! and the host's (`pasidctl --json`), waits until both agree (host `held`
//! = guest `outstanding` + `cached`, [`wait_lease_settled`]), and ends with
//! the health check and a clean power-off.
//!
//! Each scenario runs on both kernels, as `<scenario>::linux_6_1` and
//! `<scenario>::linux_5_10`.

// As in scenarios.rs: a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{boot_in_parallel, finish, guest_config, sole_holdings, CMD};
use qemu_tests::daemon::VmEntry;
use qemu_tests::vpasid::{parse_held, wait_lease_settled, DriverStatus, Held, EXERCISER_CTL};
use qemu_tests::{Daemon, DaemonConfig, Guest, Kernel, VmSlot, VpasidGuest};

/// Bound on a burst of [`BURST`] (TCG, lease=0 would take about 2 s).
const BURST_CMD: Duration = Duration::from_secs(300);
/// Bound on the driver's lease work going idle, and on the cache shrinking
/// back (it halves once a second without a refill or miss).
const SHOWS_UP: Duration = Duration::from_secs(30);
/// The range the bursts allocate in.
const MIN: u32 = 1;
/// See [`MIN`].
const MAX: u32 = (1 << 20) - 1;
/// The burst.
const BURST: u32 = 20_000;
/// A quota above the burst plus any cache.
const BIG_QUOTA: u32 = 32_768;
/// The driver's resting cache (its `lease` default) under the host's
/// default cap.
const RESTING: u64 = 32;
/// Host requests per 1000 held allocations (frees included) the scenarios
/// accept: the bench's target is 40 (`vpasid-guest-bench --mode held`);
/// how many misses a burst meets depends on timing, so the bound here
/// leaves room for a loaded machine while still failing on one request
/// per PASID (2000 per 1000).
const MAX_REQUESTS_PER_1000: u64 = 80;

qemu_tests::per_kernel!(
    held_burst_is_served_in_batches,
    quota_holds_mid_burst,
    two_vms_burst_at_once,
    unload_after_a_burst_returns_everything,
    bursts_a_second_apart_keep_the_cache,
    a_burst_after_idle_grows_the_cache,
);

// ---------------------------------------------------------------------------
// Helpers

/// A daemon with the default lease cap, these slots.
fn daemon(slots: Vec<VmSlot>) -> Daemon {
    let config = slots
        .into_iter()
        .fold(DaemonConfig::new(), |config, slot| config.vm(slot));
    Daemon::start(config).unwrap()
}

/// A daemon serving one VM, vm0, with quota `quota`, and its guest booted
/// with the driver loaded (module parameters `params`, as [`load`]).
fn one_vm(kernel: Kernel, quota: u32, params: &str) -> (Daemon, Guest) {
    let daemon = daemon(vec![VmSlot::new("vm0").quota(quota)]);
    let mut guest = Guest::boot(guest_config(kernel, &daemon, "vm0")).unwrap();
    load(&mut guest, params).unwrap();
    (daemon, guest)
}

/// Loads the driver (with module parameters `params`, "" for its
/// defaults) and the exerciser.
fn load(guest: &mut Guest, params: &str) -> qemu_tests::Result<()> {
    guest.load_driver(params)?;
    guest.wait_driver_state("active", CMD)?;
    guest.load_exerciser()
}

/// Waits until host and guest agree (bounded by [`SHOWS_UP`]) and checks
/// the cache against the host's cap: host `held` = guest `outstanding` +
/// `cached`, `in_use + cached = held`, the cache within `lease_max`.
fn settled(guest: &mut Guest, daemon: &Daemon, vm: &str) -> (DriverStatus, VmEntry) {
    let (status, host) = wait_lease_settled(guest, daemon, vm, SHOWS_UP).unwrap();
    assert!(
        status.counter("cached") <= u64::from(host.lease),
        "{status:?} {host:?}"
    );
    assert!(
        status.counter("lease_size") <= u64::from(host.lease),
        "{status:?} {host:?}"
    );
    assert_eq!(host.in_use + host.cached, host.held, "{host:?}");
    (status, host)
}

/// Waits (bounded by [`SHOWS_UP`], host and guest agreeing as in
/// [`settled`]) until the idle cache's size is back at `size`.
fn shrunk_to(guest: &mut Guest, daemon: &Daemon, vm: &str, size: u64) -> (DriverStatus, VmEntry) {
    let started = Instant::now();
    loop {
        let (status, host) = settled(guest, daemon, vm);
        if status.counter("lease_size") == size {
            return (status, host);
        }
        assert!(
            started.elapsed() < SHOWS_UP,
            "the cache did not shrink back to {size}: {status:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// A held run that allocated `done` (all it asked for, or up to a
/// quota) with no duplicate, out-of-range or unmapped ID.
fn assert_clean(held: &Held, done: u32) {
    assert_eq!(
        (held.done, held.duplicate, held.out_of_range, held.lookup),
        (u64::from(done), 0, 0, 0),
        "{held:?}"
    );
}

fn delta(before: &DriverStatus, after: &DriverStatus, name: &str) -> u64 {
    after.counter(name) - before.counter(name)
}

// ---------------------------------------------------------------------------
// Scenarios

/// 1. A held burst of 20,000 (allocated in a row, kept, then all freed):
///    no duplicate, no ID outside the range, every ID found with its
///    private data; the host saw batches, not one request per PASID; the
///    cache grew under the burst and both sides agree afterwards. Then
///    20,000 kept for good: host and guest agree on what is held and what
///    is cached, and the host's holdings are exactly the VM's. Once idle,
///    the cache shrinks back to its resting size and returns the rest.
fn held_burst_is_served_in_batches(kernel: Kernel) {
    let (daemon, mut guest) = one_vm(kernel, BIG_QUOTA, "");
    let cap = daemon.vm("vm0").unwrap().lease;
    assert!(u64::from(cap) > RESTING, "default cap {cap}");
    let before = guest.driver_status().unwrap();
    assert_eq!(before.counter("lease_cap"), RESTING, "{before:?}");
    let host_before = daemon.vm("vm0").unwrap().counters.total_requests();

    let held = guest.held(BURST, (MIN, MAX), BURST_CMD).unwrap();
    let (after, host) = settled(&mut guest, &daemon, "vm0");
    let requests = host.counters.total_requests() - host_before;
    eprintln!(
        "{kernel}: held burst of {BURST}: {held:?}; {requests} host requests {:?}; \
         lease_size {} hits {} misses {} refills {} returns {}",
        host.counters.requests,
        after.counter("lease_size"),
        delta(&before, &after, "lease_hits"),
        delta(&before, &after, "lease_misses"),
        delta(&before, &after, "refills"),
        delta(&before, &after, "returns"),
    );
    assert_clean(&held, BURST);
    assert!(
        requests <= MAX_REQUESTS_PER_1000 * u64::from(BURST) / 1000,
        "{requests} host requests for a held burst of {BURST}: {host:?}"
    );
    assert!(host.counters.request("GRANT") >= 1, "{host:?}");
    assert_eq!(delta(&before, &after, "allocs"), u64::from(BURST));
    assert_eq!(delta(&before, &after, "frees"), u64::from(BURST));
    assert_eq!(after.counter("outstanding"), 0, "{after:?}");
    assert_eq!(after.counter("unsent_frees"), 0, "{after:?}");
    assert_eq!(after.failures(), [], "{after:?}");
    assert_eq!(host.counters.malformed, 0, "{host:?}");

    // Kept for good: both sides agree on held and cached, and the host's
    // holdings are the VM's alone.
    let got = guest.alloc_n(BURST, MIN, MAX).unwrap();
    assert_eq!(got.count, BURST, "{got:?}");
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(
        status.counter("outstanding"),
        u64::from(BURST),
        "{status:?}"
    );
    assert_eq!(
        u64::from(host.held),
        u64::from(BURST) + status.counter("cached"),
        "{status:?} {host:?}"
    );
    let holdings = sole_holdings(&daemon, "vm0");
    assert_eq!(holdings.len(), host.held as usize, "{host:?}");
    assert!(holdings.iter().all(|p| (MIN..=MAX).contains(p)));
    assert_eq!(guest.free_all().unwrap(), u64::from(BURST));

    // Idle: the cache shrinks back to its resting size, and the host
    // holds no more than that.
    let (status, host) = shrunk_to(&mut guest, &daemon, "vm0", RESTING);
    assert!(status.counter("cached") <= RESTING, "{status:?}");
    assert_eq!(u64::from(host.held), status.counter("cached"), "{host:?}");
    // Every free reached the host or the cache: none was dropped.
    assert_eq!(status.counter("unsent_frees"), 0, "{status:?}");
    assert_eq!(status.failures(), [], "{status:?}");
    assert_eq!(status.counter("outstanding"), 0, "{status:?}");
    finish(guest);
}

/// 2. The quota holds mid-burst: a VM with quota 3000 asks for a held
///    burst of 5000. The burst fails cleanly at the quota (exactly 3000
///    allocated: the cache, which counts against the quota, is spent
///    before the host refuses), with no duplicate or lookup error; the
///    host never holds more than the quota; everything is given back.
fn quota_holds_mid_burst(kernel: Kernel) {
    const QUOTA: u32 = 3000;
    const ASKED: u32 = 5000;
    let (daemon, mut guest) = one_vm(kernel, QUOTA, "");

    let held = guest.held(ASKED, (MIN, MAX), BURST_CMD).unwrap();
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    eprintln!("{kernel}: held burst of {ASKED} at quota {QUOTA}: {held:?}; {host:?}");
    assert_clean(&held, QUOTA);
    assert!(status.counter("failures/quota_exceeded") >= 1, "{status:?}");
    assert_eq!(status.counter("outstanding"), 0, "{status:?}");
    assert!(host.held <= QUOTA, "{host:?}");
    assert_eq!(u64::from(host.held), status.counter("cached"), "{host:?}");

    // Everything came back: the whole quota is usable again.
    let got = guest.alloc_n(QUOTA, MIN, MAX).unwrap();
    assert_eq!(got.count, QUOTA, "{got:?}");
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(host.held, QUOTA, "{host:?}");
    assert_eq!(status.counter("outstanding"), u64::from(QUOTA));
    assert_eq!(guest.free_all().unwrap(), u64::from(QUOTA));
    let (_, host) = settled(&mut guest, &daemon, "vm0");
    assert!(host.held <= QUOTA, "{host:?}");
    finish(guest);
}

/// 3. Two VMs burst at once (5000 each, kept): each holds exactly what its
///    guest has out plus its cache, and their holdings are disjoint.
fn two_vms_burst_at_once(kernel: Kernel) {
    const EACH: u32 = 5000;
    let vms = ["vm1", "vm2"];
    let daemon = daemon(vms.map(|vm| VmSlot::new(vm).quota(BIG_QUOTA)).to_vec());
    let configs = vms.map(|vm| guest_config(kernel, &daemon, vm)).to_vec();
    let mut guests = boot_in_parallel(configs, |guest| load(guest, ""));

    let barrier = std::sync::Barrier::new(guests.len());
    thread::scope(|s| {
        for guest in &mut guests {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                assert_eq!(guest.alloc_n(EACH, MIN, MAX).unwrap().count, EACH);
            });
        }
    });

    let mut held = Vec::new();
    for (guest, vm) in guests.iter_mut().zip(vms) {
        let (status, host) = settled(guest, &daemon, vm);
        assert_eq!(status.counter("outstanding"), u64::from(EACH), "{status:?}");
        let set = sole_holdings(&daemon, vm);
        assert_eq!(set.len(), host.held as usize, "{set:?} {host:?}");
        assert_eq!(
            u64::from(host.held),
            u64::from(EACH) + status.counter("cached"),
            "{status:?} {host:?}"
        );
        eprintln!(
            "{kernel}: {vm} holds {} after a burst of {EACH} ({} cached, {:?})",
            set.len(),
            status.counter("cached"),
            host.counters.requests
        );
        held.push(set);
    }
    assert!(held[0].is_disjoint(&held[1]));

    for guest in &mut guests {
        assert_eq!(guest.free_all().unwrap(), u64::from(EACH));
    }
    for (guest, vm) in guests.iter_mut().zip(vms) {
        let (status, _) = settled(guest, &daemon, vm);
        assert_eq!(status.failures(), [], "{status:?}");
    }
    for guest in guests {
        finish(guest);
    }
}

/// 4. Unloading right after a burst (the cache grown to the host's cap)
///    gives everything back: the host holds nothing, the VM stays
///    connected.
fn unload_after_a_burst_returns_everything(kernel: Kernel) {
    let (daemon, mut guest) = one_vm(kernel, BIG_QUOTA, "");
    assert_eq!(guest.alloc_n(BURST, MIN, MAX).unwrap().count, BURST);
    assert_eq!(guest.free_all().unwrap(), u64::from(BURST));
    let status = guest.driver_status().unwrap();
    assert!(status.counter("lease_size") > RESTING, "{status:?}");

    guest.run_ok("rmmod virtio_pasid", CMD).unwrap();
    assert!(!guest.module_loaded("virtio_pasid").unwrap());
    let started = Instant::now();
    let host = loop {
        let host = daemon.vm("vm0").unwrap();
        if host.held == 0 {
            break host;
        }
        assert!(started.elapsed() < SHOWS_UP, "host still holds: {host:?}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((host.held, host.cached, host.in_use), (0, 0, 0), "{host:?}");
    assert!(host.connected, "{host:?}");
    assert!(daemon.pasids().unwrap().is_empty());
    finish(guest);
}

/// 5. Bursts a second or less apart keep the cache's size: once a burst
///    grew the cache beyond its resting size (at most 5 bursts), eight
///    bursts of 2000, 0.3 s apart (one guest command, about 2.5 s: two
///    shrink periods and more), each take the cache below its low mark,
///    which counts as demand: its size, read after each burst, never
///    drops (a period counted quiet would halve it; it may still grow).
///    Once idle, it shrinks back to its resting size all the same.
fn bursts_a_second_apart_keep_the_cache(kernel: Kernel) {
    const EACH: u32 = 2000;
    const BURSTS: usize = 8;
    let (daemon, mut guest) = one_vm(kernel, BIG_QUOTA, "");
    // How far a burst grows a cold cache depends on how fast the host
    // answers; a size that keeps up does not grow further.
    let mut grown = RESTING;
    for tries in 1.. {
        let first = guest.held(EACH, (MIN, MAX), BURST_CMD).unwrap();
        assert_eq!(first.done, u64::from(EACH), "{first:?}");
        let status = guest.driver_status().unwrap();
        grown = status.counter("lease_size");
        if grown > RESTING {
            break;
        }
        assert!(
            tries < 5,
            "{tries} bursts did not grow the cache: {status:?}"
        );
    }

    let burst = format!(
        "echo 'held {EACH} {MIN} {MAX}' > {EXERCISER_CTL} && cat {EXERCISER_CTL} && \
         grep '^lease_size ' /sys/kernel/debug/virtio_pasid/*"
    );
    let out = guest
        .run_ok(
            &format!("for i in $(seq {BURSTS}); do sleep 0.3; {burst}; done"),
            BURST_CMD,
        )
        .unwrap();
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines.len(), 2 * BURSTS, "{out}");
    let mut size = grown;
    for pair in lines.chunks(2) {
        let held = parse_held(pair[0]).unwrap();
        assert_clean(&held, EACH);
        let now: u64 = pair[1]
            .strip_prefix("lease_size ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a lease_size line: {out}"));
        assert!(
            now >= size,
            "the cache shrank between bursts, {size} to {now}: {out}"
        );
        size = now;
    }

    let (status, _) = shrunk_to(&mut guest, &daemon, "vm0", RESTING);
    assert_eq!(status.failures(), [], "{status:?}");
    finish(guest);
}

/// 6. A burst after idle grows the cache again: with a resting size of 64
///    (`lease=64`), a first burst fills (and may grow) the cache, the idle
///    guest shrinks it back to 64, and a burst of 2000 then grows it. At
///    64 the refills (a GRANT per 32 allocations) keep up only by looking
///    at the virtqueue while the cache is short, which does not miss;
///    the short cache itself is the sign of a burst that outruns C/2 per
///    round trip, so it grows the size fourfold.
fn a_burst_after_idle_grows_the_cache(kernel: Kernel) {
    const RESTING_64: u64 = 64;
    const EACH: u32 = 2000;
    let (daemon, mut guest) = one_vm(kernel, BIG_QUOTA, "lease=64");
    let cap = u64::from(daemon.vm("vm0").unwrap().lease);
    assert!(cap > 4 * RESTING_64, "default cap {cap}");
    assert_eq!(
        guest.held(EACH, (MIN, MAX), BURST_CMD).unwrap().done,
        u64::from(EACH)
    );

    let (before, _) = shrunk_to(&mut guest, &daemon, "vm0", RESTING_64);
    let held = guest.held(EACH, (MIN, MAX), BURST_CMD).unwrap();
    assert_clean(&held, EACH);
    let (after, _) = settled(&mut guest, &daemon, "vm0");
    eprintln!(
        "{kernel}: a burst of {EACH} from a cache of {RESTING_64}: lease_size {} misses {} \
         refills {}",
        after.counter("lease_size"),
        delta(&before, &after, "lease_misses"),
        delta(&before, &after, "refills"),
    );
    assert!(
        after.counter("lease_size") > RESTING_64,
        "the cache did not grow: {after:?}"
    );
    assert_eq!(after.failures(), [], "{after:?}");
    finish(guest);
}
