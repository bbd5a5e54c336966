// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end scenarios of PASID leases (issue 13; `docs/protocol.md`
//! 5.x.6.12): the host offers VIRTIO_PASID_F_LEASE with a cap, the guest
//! driver keeps a cache of leased PASIDs and hands them out without a round
//! trip. Each scenario asserts on the guest's view (the IOASID framework
//! through the exerciser, the driver's debugfs counters, dmesg) and the
//! host's (`pasidctl --json`: `held`, `cached`, `in_use`, `lease`, the
//! GRANT/RETURN request counters), and ends with the same health check and
//! clean power-off as `tests/scenarios.rs`.
//!
//! While a driver caches, the host holds more than the guest has handed
//! out: the invariant checked throughout is host `held` = guest
//! `outstanding` + guest `cached`, once the driver's refill/return work is
//! idle ([`settled`]). The host's `cached` is the figure the driver last
//! reported in a GRANT or RETURN: allocations and frees served by the cache
//! send nothing, so the host's `cached`/`in_use` split lags until the next
//! lease request, and only `in_use + cached = held` is exact there.
//!
//! Each scenario runs on both kernels, as `<scenario>::linux_6_1` and
//! `<scenario>::linux_5_10`.

// As in scenarios.rs: a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::{boot_in_parallel, finish, guest_config, sole_holdings, CMD, MAX, MIN};
use qemu_tests::daemon::VmEntry;
use qemu_tests::vpasid::{
    parse_alloc_timed, wait_lease_settled, DriverStatus, Found, TimedAlloc, EXERCISER_CTL,
};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest};

/// Bound on a reboot until the shell is back.
const REBOOT: Duration = Duration::from_secs(120);
/// Bound on a daemon log line showing up, and on the driver's refill and
/// return work going idle ([`settled`]).
const SHOWS_UP: Duration = Duration::from_secs(30);
/// The host's lease cap in these scenarios (the daemon's default, given
/// explicitly so that the scenarios do not depend on it).
const LEASE: u32 = 32;
/// The figure: 10,000 alloc+free pairs ...
const PAIRS: u32 = 10_000;
/// ... may cost the host at most this many requests.
const MAX_REQUESTS_PER_PAIRS: u64 = 100;

qemu_tests::per_kernel!(
    pairs_stay_in_the_guest,
    smp_stress,
    two_vms_hold_disjoint_leases,
    quota_holds_with_leases,
    unload_returns_the_cache,
    reboot_releases_everything,
    backend_killed_mid_run,
);

// ---------------------------------------------------------------------------
// Helpers

/// A daemon leasing up to [`LEASE`] PASIDs per VM, with these slots.
fn lease_daemon(slots: Vec<VmSlot>) -> Daemon {
    let config = slots
        .into_iter()
        .fold(DaemonConfig::new().lease(LEASE), |config, slot| {
            config.vm(slot)
        });
    Daemon::start(config).unwrap()
}

/// Loads the driver with `params` (its default `lease`), waits until it is
/// active with the host's cap as its cache size, and loads the exerciser.
fn load_leased(guest: &mut Guest, params: &str) -> Result<DriverStatus, qemu_tests::Error> {
    guest.load_driver(params)?;
    guest.wait_driver_state("active", CMD)?;
    let status = guest.driver_status()?;
    assert_eq!(
        status.counter("lease_cap"),
        u64::from(LEASE),
        "{}: {status:?}",
        guest.name()
    );
    guest.load_exerciser()?;
    Ok(status)
}

/// Boots VM `vm` and loads the leasing driver and the exerciser.
fn boot_leased(config: GuestConfig) -> Guest {
    let mut guest = Guest::boot(config).unwrap();
    load_leased(&mut guest, "").unwrap();
    guest
}

/// Waits (bounded by [`SHOWS_UP`]) until the driver's work is idle and both
/// sides agree: the host holds exactly what the guest has handed out plus
/// what it caches, the cache is within the cap, and the host's `in_use` is
/// `held - cached`. Returns both views.
fn settled(guest: &mut Guest, daemon: &Daemon, vm: &str) -> (DriverStatus, VmEntry) {
    let (status, host) = wait_lease_settled(guest, daemon, vm, SHOWS_UP).unwrap();
    assert!(status.counter("cached") <= u64::from(LEASE), "{status:?}");
    assert_eq!(host.in_use + host.cached, host.held, "{host:?}");
    (status, host)
}

/// Polls `read` every 200 ms (bounded by [`SHOWS_UP`]) until its value
/// passes `ok`, and returns that value.
fn poll_until<T: std::fmt::Debug>(
    what: &str,
    mut read: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let value = read();
        if ok(&value) {
            return value;
        }
        assert!(
            started.elapsed() < SHOWS_UP,
            "no {what} after {SHOWS_UP:?}: {value:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Counter `name` of `after` minus that of `before`.
fn delta(before: &DriverStatus, after: &DriverStatus, name: &str) -> u64 {
    after.counter(name) - before.counter(name)
}

/// `n` `alloc_timed MIN MAX` calls in one guest command, in order.
fn alloc_timed_loop(guest: &mut Guest, n: u32, min: u32, max: u32) -> Vec<TimedAlloc> {
    let out = guest
        .run_ok(
            &format!(
                "for i in $(seq {n}); do echo 'alloc_timed {min} {max}' > {EXERCISER_CTL} && \
                 cat {EXERCISER_CTL} || exit 1; done"
            ),
            CMD,
        )
        .unwrap();
    let results: Vec<TimedAlloc> = out.lines().map(|l| parse_alloc_timed(l).unwrap()).collect();
    assert_eq!(results.len(), n as usize, "{out}");
    results
}

// ---------------------------------------------------------------------------
// Scenarios

/// 1. 10,000 alloc+free pairs in the guest cost the host at most 100
///    requests: the cache serves them. Every pair still counts as one
///    alloc and one free in the driver, and nearly all are cache hits.
fn pairs_stay_in_the_guest(kernel: Kernel) {
    let daemon = lease_daemon(vec![VmSlot::new("vm0")]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0"));
    let host = daemon.vm("vm0").unwrap();
    assert_eq!(host.lease, LEASE, "{host:?}");
    let before_host = host.counters.total_requests();
    let before = guest.driver_status().unwrap();

    let out = guest
        .exerciser(&format!("bench {PAIRS} {MIN} {MAX}"))
        .unwrap();
    let ns = qemu_tests::vpasid::parse_bench(&out).unwrap();

    let (after, host) = settled(&mut guest, &daemon, "vm0");
    let requests = host.counters.total_requests() - before_host;
    eprintln!(
        "{kernel}: {PAIRS} pairs at {ns} ns each cost the host {requests} request(s) \
         ({:?}); hits {} misses {} refills {} returns {}",
        host.counters.requests,
        delta(&before, &after, "lease_hits"),
        delta(&before, &after, "lease_misses"),
        delta(&before, &after, "refills"),
        delta(&before, &after, "returns"),
    );
    assert!(
        requests <= MAX_REQUESTS_PER_PAIRS,
        "{requests} host requests for {PAIRS} pairs: {host:?}"
    );
    assert!(host.counters.request("GRANT") >= 1, "{host:?}");
    assert_eq!(delta(&before, &after, "allocs"), u64::from(PAIRS));
    assert_eq!(delta(&before, &after, "frees"), u64::from(PAIRS));
    assert_eq!(
        delta(&before, &after, "lease_hits") + delta(&before, &after, "lease_misses"),
        u64::from(PAIRS),
        "{after:?}"
    );
    assert!(
        delta(&before, &after, "lease_misses") <= MAX_REQUESTS_PER_PAIRS,
        "{after:?}"
    );
    assert_eq!(after.counter("outstanding"), 0, "{after:?}");
    assert_eq!(after.failures(), [], "{after:?}");
    assert!(host.held >= 1, "nothing leased: {host:?}");
    finish(guest);
}

/// 2. SMP: 4 kernel threads on 2 vCPUs allocate and free at once (each
///    keeping 16 IDs, so the cache both serves and runs dry): no ID is
///    handed out twice, none lies outside the range, `ioasid_find` maps
///    every one to its thread's private data, and afterwards both sides
///    agree on what is held.
fn smp_stress(kernel: Kernel) {
    const THREADS: u32 = 4;
    const PAIRS_PER_THREAD: u32 = 2500;
    let daemon = lease_daemon(vec![VmSlot::new("vm0")]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0").vcpus(2));
    let cpus = guest
        .run_ok("grep -c ^processor /proc/cpuinfo", CMD)
        .unwrap();
    assert_eq!(cpus.trim(), "2", "vCPUs");
    let before = guest.driver_status().unwrap();

    let started = Instant::now();
    let stress = guest
        .stress(
            THREADS,
            PAIRS_PER_THREAD,
            (MIN, MAX),
            Duration::from_secs(300),
        )
        .unwrap();
    eprintln!(
        "{kernel}: {THREADS} threads x {PAIRS_PER_THREAD} pairs on 2 vCPUs in {:?}: {stress:?}",
        started.elapsed()
    );
    let total = u64::from(THREADS * PAIRS_PER_THREAD);
    assert_eq!(
        (
            stress.done,
            stress.failed,
            stress.duplicate,
            stress.out_of_range,
            stress.lookup
        ),
        (total, 0, 0, 0, 0),
        "{stress:?}"
    );

    let (after, host) = settled(&mut guest, &daemon, "vm0");
    eprintln!(
        "{kernel}: hits {} misses {} refills {} returns {}; host {:?}",
        delta(&before, &after, "lease_hits"),
        delta(&before, &after, "lease_misses"),
        delta(&before, &after, "refills"),
        delta(&before, &after, "returns"),
        host.counters.requests
    );
    assert_eq!(delta(&before, &after, "allocs"), total, "{after:?}");
    assert_eq!(delta(&before, &after, "frees"), total, "{after:?}");
    assert_eq!(after.counter("outstanding"), 0, "{after:?}");
    // A FREE that found every slot busy waited for one: none was dropped.
    assert_eq!(after.counter("unsent_frees"), 0, "{after:?}");
    assert_eq!(after.failures(), [], "{after:?}");
    assert_eq!(host.counters.malformed, 0, "{host:?}");
    finish(guest);
}

/// 3. Two leasing VMs on one daemon allocate at the same moment, then each
///    keeps 20 in use and the rest cached. The host's holdings of the two
///    (caches included) are disjoint; each guest's framework knows exactly
///    its 20 in-use PASIDs among its own holdings (the cached ones are
///    unknown to it until handed out) and none of the other VM's.
fn two_vms_hold_disjoint_leases(kernel: Kernel) {
    const FIRST: u32 = 40;
    const KEPT: u32 = 20;
    let daemon = lease_daemon(vec![VmSlot::new("vm1"), VmSlot::new("vm2")]);
    let vms = ["vm1", "vm2"];
    let configs = vms.map(|vm| guest_config(kernel, &daemon, vm)).to_vec();
    let mut guests = boot_in_parallel(configs, |guest| load_leased(guest, "").map(drop));

    // Both allocate at once, free everything (into their caches), and take
    // KEPT again.
    let barrier = std::sync::Barrier::new(guests.len());
    thread::scope(|s| {
        for guest in &mut guests {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                assert_eq!(guest.alloc_n(FIRST, MIN, MAX).unwrap().count, FIRST);
                assert_eq!(guest.free_all().unwrap(), u64::from(FIRST));
                assert_eq!(guest.alloc_n(KEPT, MIN, MAX).unwrap().count, KEPT);
            });
        }
    });

    let mut held = Vec::new();
    for (guest, vm) in guests.iter_mut().zip(vms) {
        let (status, host) = settled(guest, &daemon, vm);
        assert_eq!(status.counter("outstanding"), u64::from(KEPT), "{status:?}");
        let set = sole_holdings(&daemon, vm);
        assert_eq!(set.len(), host.held as usize, "{set:?} {host:?}");
        eprintln!(
            "{kernel}: {vm} holds {} on the host: {KEPT} in use, {} cached in the guest",
            set.len(),
            status.counter("cached")
        );
        held.push(set);
    }
    assert!(held[0].is_disjoint(&held[1]), "{held:?}");

    for (i, guest) in guests.iter_mut().enumerate() {
        let own = &held[i];
        let other = &held[1 - i];
        let ids: Vec<u32> = own.iter().chain(other).copied().collect();
        let mut in_use = BTreeSet::new();
        for (id, found) in guest.find_many(&ids).unwrap() {
            match found {
                Found::Private(0) if own.contains(&id) => {
                    in_use.insert(id);
                }
                Found::NotFound => {}
                other => panic!("{}: find {id}: {other}", guest.name()),
            }
        }
        assert_eq!(in_use.len(), KEPT as usize, "{}: {in_use:?}", guest.name());
        assert!(in_use.iter().all(|p| (MIN..=MAX).contains(p)), "{in_use:?}");
    }

    for guest in &mut guests {
        assert_eq!(guest.free_all().unwrap(), u64::from(KEPT));
    }
    for (guest, vm) in guests.iter_mut().zip(vms) {
        let (status, _) = settled(guest, &daemon, vm);
        assert_eq!(status.counter("outstanding"), 0, "{status:?}");
    }
    for guest in guests {
        finish(guest);
    }
}

/// 4. A VM with quota 8 and a lease cap of 32: the cache never takes it
///    past its quota (8 allocations succeed, the 9th fails, the host never
///    holds more than 8), and a range the cache cannot serve still
///    succeeds at quota: the driver returns cached PASIDs, then allocates.
fn quota_holds_with_leases(kernel: Kernel) {
    const QUOTA: u32 = 8;
    /// A range no PASID cached from [MIN, MAX] lies in.
    const FAR: (u32, u32) = (50_000, 50_100);
    let daemon = lease_daemon(vec![VmSlot::new("vm0").quota(QUOTA)]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0"));
    assert_eq!(guest.device_config().unwrap().quota, QUOTA);

    let got = guest.alloc_n(2 * QUOTA, MIN, MAX).unwrap();
    assert_eq!(got.count, QUOTA, "{got:?}");
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(
        (host.held, status.counter("outstanding")),
        (QUOTA, u64::from(QUOTA)),
        "{status:?} {host:?}"
    );
    assert!(status.counter("failures/quota_exceeded") >= 1, "{status:?}");

    // All 8 go back to the cache (or to the host): the VM still holds at
    // most its quota.
    assert_eq!(guest.free_all().unwrap(), u64::from(QUOTA));
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert!(host.held <= QUOTA, "{host:?}");
    let cached_before = status.counter("cached");
    let misses_before = status.counter("lease_misses");
    let returns_before = host.counters.request("RETURN");

    // The cache holds nothing in FAR: the first allocation must reach the
    // host, and at quota the cached PASIDs must be given back first (the
    // driver may then lease in FAR for the rest).
    let got = guest.alloc_n(QUOTA, FAR.0, FAR.1).unwrap();
    assert_eq!(got.count, QUOTA, "{got:?}");
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    let far: BTreeSet<u32> = (FAR.0..=FAR.1).collect();
    let held = sole_holdings(&daemon, "vm0");
    assert_eq!(held.len(), QUOTA as usize, "{held:?}");
    assert!(held.is_subset(&far), "{held:?}");
    assert_eq!(host.held, QUOTA, "{host:?}");
    assert_eq!(
        status.counter("outstanding"),
        u64::from(QUOTA),
        "{status:?}"
    );
    if cached_before > 0 {
        assert!(
            host.counters.request("RETURN") > returns_before,
            "{cached_before} cached PASIDs were never returned: {host:?}"
        );
    }
    assert!(
        status.counter("lease_misses") > misses_before,
        "the cache served a range it does not hold: {status:?}"
    );
    eprintln!(
        "{kernel}: at quota with {cached_before} cached: {:?}",
        host.counters.requests
    );

    assert_eq!(guest.free_all().unwrap(), u64::from(QUOTA));
    let (_, host) = settled(&mut guest, &daemon, "vm0");
    assert!(host.held <= QUOTA, "{host:?}");
    finish(guest);
}

/// 5. Unloading the driver gives the whole cache back: with nothing in use,
///    the host's `held` (and `cached`) drop to 0 while the VM stays
///    connected.
fn unload_returns_the_cache(kernel: Kernel) {
    let daemon = lease_daemon(vec![VmSlot::new("vm0")]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0"));
    assert_eq!(guest.alloc_n(20, MIN, MAX).unwrap().count, 20);
    assert_eq!(guest.free_all().unwrap(), 20);
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert!(status.counter("cached") > 0, "nothing cached: {status:?}");
    assert_eq!(u64::from(host.held), status.counter("cached"), "{host:?}");

    guest.run_ok("rmmod virtio_pasid", CMD).unwrap();
    assert!(!guest.module_loaded("virtio_pasid").unwrap());
    let host = poll_until("host held 0", || daemon.vm("vm0").unwrap(), |h| h.held == 0);
    assert_eq!((host.held, host.cached, host.in_use), (0, 0, 0), "{host:?}");
    assert!(host.connected, "{host:?}");
    assert!(daemon.pasids().unwrap().is_empty());
    eprintln!(
        "{kernel}: unload gave back {} cached PASID(s): {:?}",
        status.counter("cached"),
        host.counters.requests
    );
    finish(guest);
}

/// 6. A reboot with PASIDs in use and cached: the host keeps them all until
///    the new driver's probe RESET releases every one (in use and cached
///    alike); then both sides agree again.
fn reboot_releases_everything(kernel: Kernel) {
    let daemon = lease_daemon(vec![VmSlot::new("vm0")]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0").allow_reboot());
    assert_eq!(guest.alloc_n(10, MIN, MAX).unwrap().count, 10);
    let (status, host) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(status.counter("outstanding"), 10, "{status:?}");
    let before = sole_holdings(&daemon, "vm0");
    assert_eq!(before.len(), host.held as usize);
    assert!(host.held >= 10, "{host:?}");
    guest.check_health().unwrap();

    guest.reboot_and_wait(REBOOT).unwrap();
    assert!(!guest.module_loaded("virtio_pasid").unwrap());
    assert_eq!(
        sole_holdings(&daemon, "vm0"),
        before,
        "nothing told the host"
    );

    let mark = daemon.log_mark();
    load_leased(&mut guest, "").unwrap();
    guest
        .wait_for_dmesg(&format!("RESET released {} reference(s)", host.held), CMD)
        .unwrap();
    let line = daemon
        .wait_log_since(
            mark,
            "vm=vm0 event=reclaim reason=\"driver reset\"",
            SHOWS_UP,
        )
        .unwrap();
    assert!(
        line.contains(&format!("references={}", host.held)),
        "reclaim line: {line}"
    );
    let (status, after) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(status.counter("outstanding"), 0, "{status:?}");
    assert_eq!(after.counters.reclaimed, u64::from(host.held), "{after:?}");

    assert_eq!(guest.alloc_n(3, MIN, MAX).unwrap().count, 3);
    let (status, _) = settled(&mut guest, &daemon, "vm0");
    assert_eq!(status.counter("outstanding"), 3, "{status:?}");
    assert_eq!(guest.free_all().unwrap(), 3);
    finish(guest);
}

/// 7. The backend is killed (SIGKILL) mid-run with PASIDs cached:
///    allocations go on from the cache, then fail, the first within
///    `timeout_ms` plus [`FIRST_FAILURE_SLACK`], and every later one at
///    once (under [`FAST_FAIL`]) because the device is marked unresponsive.
///    Freed leased PASIDs go back to the cache and are handed out again,
///    none twice. No soft lockup, RCU stall or WARN.
fn backend_killed_mid_run(kernel: Kernel) {
    const TIMEOUT_MS: u64 = 500;
    /// How much longer than `timeout_ms` the first failing call may take.
    const FIRST_FAILURE_SLACK: Duration = Duration::from_millis(1500);
    /// Bound on a failing call once the device is marked unresponsive
    /// (guest time inside `ioasid_alloc()`; TCG under load is slow, a
    /// fast fail is a few microseconds).
    const FAST_FAIL: Duration = Duration::from_millis(50);
    /// Failing calls made after the first.
    const FAILING: u32 = 20;
    let mut daemon = lease_daemon(vec![VmSlot::new("vm0")]);
    let mut guest = boot_leased(guest_config(kernel, &daemon, "vm0"));
    // The VM's whole range, which the driver's refills draw from: the
    // cache can serve every allocation in it.
    let config = guest.device_config().unwrap();
    let (lo, hi) = (config.pasid_min, config.pasid_max);
    guest
        .run_ok(
            &format!("echo {TIMEOUT_MS} > /sys/module/virtio_pasid/parameters/timeout_ms"),
            CMD,
        )
        .unwrap();

    // One allocation makes the driver lease; wait for its cache to fill.
    let kept = guest.alloc(lo, hi, 0).unwrap().unwrap();
    poll_until(
        "refill to 8 cached",
        || guest.driver_status().unwrap(),
        |s| s.counter("cached") >= 8,
    );
    let (status, _) = settled(&mut guest, &daemon, "vm0");
    let cached = status.counter("cached");
    daemon.kill().unwrap();

    // The cache serves; then allocations fail.
    let tries = u32::try_from(cached).unwrap() + 1 + FAILING;
    let started = Instant::now();
    let results = alloc_timed_loop(&mut guest, tries, lo, hi);
    let wall = started.elapsed();
    let served: Vec<u32> = results.iter().map_while(|r| r.id).collect();
    let failed = &results[served.len()..];
    eprintln!(
        "{kernel}: backend dead with {cached} cached: {} served, then failures took {:?} \
         (whole loop {wall:?})",
        served.len(),
        failed.iter().map(|r| r.took).collect::<Vec<_>>()
    );
    assert!(served.len() as u64 >= cached, "{results:?}");
    assert!(served.iter().all(|p| (lo..=hi).contains(p)), "{served:?}");
    let mut unique: BTreeSet<u32> = served.iter().copied().collect();
    assert_eq!(unique.len(), served.len(), "handed out twice: {served:?}");
    assert!(
        !unique.contains(&kept),
        "{kept} handed out twice: {served:?}"
    );
    assert!(failed.len() >= FAILING as usize, "{results:?}");
    assert!(failed.iter().all(|r| r.id.is_none()), "{results:?}");
    let first = failed[0].took;
    assert!(
        first <= Duration::from_millis(TIMEOUT_MS) + FIRST_FAILURE_SLACK,
        "first failure took {first:?}"
    );
    for r in &failed[1..] {
        assert!(
            r.took < FAST_FAIL,
            "a failure took {:?}: {results:?}",
            r.took
        );
    }

    let status = guest.driver_status().unwrap();
    assert_eq!(status.state, "active", "{status:?}");
    assert_eq!(status.counter("unresponsive"), 1, "{status:?}");
    assert!(status.counter("timeouts") >= 1, "{status:?}");
    assert!(
        status.counter("fast_fails") >= failed.len() as u64 - 1,
        "{status:?}"
    );
    assert_eq!(status.counter("cached"), 0, "{status:?}");

    // Frees of leased PASIDs go back to the cache, and allocations go on
    // from it: the same PASIDs, none twice.
    unique.insert(kept);
    let freed = guest.free_all().unwrap();
    assert_eq!(freed, unique.len() as u64);
    let status = guest.driver_status().unwrap();
    assert_eq!(status.counter("outstanding"), 0, "{status:?}");
    assert_eq!(status.counter("cached"), freed, "nothing lost: {status:?}");
    let again = alloc_timed_loop(&mut guest, u32::try_from(freed).unwrap(), lo, hi);
    let again: BTreeSet<u32> = again
        .iter()
        .map(|r| {
            r.id.unwrap_or_else(|| panic!("the cache did not serve: {again:?}"))
        })
        .collect();
    assert_eq!(again.len() as u64, freed, "handed out twice");
    assert!(again.is_subset(&unique), "{again:?} vs {unique:?}");
    assert_eq!(guest.free_all().unwrap(), again.len() as u64);

    finish(guest);
}
