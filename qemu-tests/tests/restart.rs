// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The durable PASID space (`vhost-user-pasid --state-dir DIR`) across a
//! daemon crash, with real guests (Linux 6.1 and 5.10 under QEMU TCG):
//!
//! 1. The daemon serves slots `vmA` and `vmB` with a state directory; guest
//!    A allocates 8 PASIDs and the host lists exactly those for `vmA`.
//! 2. The daemon is killed (`SIGKILL`) and started again on the same
//!    sockets and state: it still lists A's PASIDs as held by `vmA`, which
//!    is not connected (QEMU 11 cannot reconnect the device).
//! 3. Guest B boots on `vmB` while A still runs and allocates more PASIDs
//!    than A holds, from the same range: lowest-free allocation would hand
//!    it A's numbers had the restart forgotten them; B's PASIDs, as its
//!    guest reports them and as the host lists them, are disjoint from A's.
//! 4. `pasidctl release --vm vmA` frees A's PASIDs; B's next allocations
//!    get some of A's old numbers (lowest free), proving they were freed.
//! 5. Guest A's device is dead: a request fails cleanly within the driver's
//!    timeout and never reaches the new daemon; both guests stay healthy.
//!
//! Each kernel runs as `durable_state_survives_sigkill::linux_<kernel>`.
//! Logs: `target/qemu-tests-logs/durable_state_survives_sigkill.
//! linux_<kernel>-{vmA,vmB,daemon}.log` (the daemon's log holds both runs,
//! separated by a `>>> restart 1` line). The daemon binaries must have been
//! built first (`cargo build --release --bins`).

// The scenario body is an ordinary function called from the generated
// `#[test]`s, so clippy does not see it as test code: in it, as in any
// test, a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use qemu_tests::vpasid::{parse_alloc, EXERCISER_CTL};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest};

/// Bound on one guest command.
const CMD: Duration = Duration::from_secs(60);
/// Bound on a clean power-off.
const POWEROFF: Duration = Duration::from_secs(60);
/// The range every allocation asks for: [MIN, MAX].
const MIN: u32 = 100;
/// See [`MIN`].
const MAX: u32 = 10_000;
/// PASIDs guest A allocates before the crash.
const A_COUNT: u32 = 8;
/// PASIDs guest B allocates after the restart: more than A holds.
const B_COUNT: u32 = 12;
/// PASIDs guest B allocates after A's were released.
const B_MORE: u32 = 4;
/// The driver's request timeout in guest A, whose device dies.
const A_TIMEOUT_MS: u32 = 500;

/// One test per kernel for each scenario function `name(Kernel)`.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use qemu_tests::Kernel;

            #[test]
            fn linux_6_1() {
                super::$name(Kernel::V6_1);
            }

            #[test]
            fn linux_5_10() {
                super::$name(Kernel::V5_10);
            }
        }
    )*};
}

scenarios!(durable_state_survives_sigkill);

// ---------------------------------------------------------------------------
// Helpers

/// Boots guest `vm` on `daemon`'s socket for it, loads the driver with
/// `params` and the exerciser, and waits for the driver's probe RESET.
fn boot_active(kernel: Kernel, daemon: &Daemon, vm: &str, params: &str) -> Guest {
    let config = GuestConfig::new(vm, kernel).vhost_user(daemon.socket(vm).unwrap());
    let mut guest = Guest::boot(config).unwrap();
    guest.load_driver(params).unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    guest
        .wait_for_dmesg("RESET released 0 reference(s)", CMD)
        .unwrap();
    guest.load_exerciser().unwrap();
    guest
}

/// `n` single `alloc MIN MAX 0` calls in one guest command: the IDs the
/// guest's IOASID framework returned, in order. Every call must succeed.
fn alloc_each(guest: &mut Guest, n: u32) -> Vec<u32> {
    let out = guest
        .run_ok(
            &format!(
                "for i in $(seq {n}); do echo 'alloc {MIN} {MAX} 0' > {EXERCISER_CTL} && \
                 cat {EXERCISER_CTL} || exit 1; done"
            ),
            CMD,
        )
        .unwrap();
    let ids: Vec<u32> = out
        .lines()
        .map(|line| {
            parse_alloc(line)
                .unwrap()
                .unwrap_or_else(|| panic!("{}: alloc failed: {out}", guest.name()))
        })
        .collect();
    assert_eq!(ids.len(), n as usize, "{}: {out}", guest.name());
    ids
}

/// The PASIDs VM `vm` holds, after checking that each has exactly one
/// holder (that VM, one reference).
fn sole_holdings(daemon: &Daemon, vm: &str) -> BTreeSet<u32> {
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

/// Every PASID the host lists, whoever holds it.
fn all_listed(daemon: &Daemon) -> BTreeSet<u32> {
    daemon.pasids().unwrap().iter().map(|p| p.pasid).collect()
}

/// Asserts that guest `guest`'s IOASID framework knows each of `own` (with
/// NULL private data) and none of `others`.
fn assert_guest_knows(guest: &mut Guest, own: &BTreeSet<u32>, others: &BTreeSet<u32>) {
    use qemu_tests::vpasid::Found;
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

/// The daemon log's lines that mention the state directory or a restore,
/// for the test's output.
fn state_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("state") || l.contains("restor") || l.contains("journal")
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The scenario

fn durable_state_survives_sigkill(kernel: Kernel) {
    let started = Instant::now();
    let mut daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .vm(VmSlot::new("vmB"))
            .state_dir("state"),
    )
    .unwrap();
    let state_dir = daemon.state_dir().unwrap().to_path_buf();

    // 1. Guest A allocates; the host lists exactly its PASIDs for vmA.
    let mut a = boot_active(
        kernel,
        &daemon,
        "vmA",
        &format!("timeout_ms={A_TIMEOUT_MS}"),
    );
    let a_ids = alloc_each(&mut a, A_COUNT);
    let a_set: BTreeSet<u32> = a_ids.iter().copied().collect();
    assert_eq!(a_set.len(), A_COUNT as usize, "{a_ids:?}");
    // Lowest free: A has the bottom of the range, where B would start.
    assert_eq!(a_set, (MIN..MIN + A_COUNT).collect(), "{a_ids:?}");
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set);
    assert_eq!(all_listed(&daemon), a_set);
    let host_a = daemon.vm("vmA").unwrap();
    assert!(host_a.connected, "{host_a:?}");
    assert_eq!(host_a.held, A_COUNT, "{host_a:?}");
    let files: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.is_empty(), "{} is empty", state_dir.display());
    let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}: mode {mode:o}", state_dir.display());

    // 2. Crash and restart on the same sockets and state.
    let status = daemon.kill().unwrap();
    assert!(!status.success(), "{status}");
    let restart_at = Instant::now();
    daemon.restart().unwrap();
    let restart_took = restart_at.elapsed();
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set, "after the restart");
    assert_eq!(all_listed(&daemon), a_set, "after the restart");
    let host_a = daemon.vm("vmA").unwrap();
    assert!(!host_a.connected, "{host_a:?}");
    assert_eq!(host_a.held, A_COUNT, "{host_a:?}");
    let host_b = daemon.vm("vmB").unwrap();
    assert!(!host_b.connected, "{host_b:?}");
    assert_eq!(host_b.held, 0, "{host_b:?}");

    // 3. Guest B boots while A runs; its probe RESET leaves vmA alone.
    let mut b = boot_active(kernel, &daemon, "vmB", "");
    assert!(daemon.vm("vmB").unwrap().connected);
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set, "after B's probe");
    let b_ids = alloc_each(&mut b, B_COUNT);
    let b_set: BTreeSet<u32> = b_ids.iter().copied().collect();
    assert_eq!(b_set.len(), B_COUNT as usize, "{b_ids:?}");
    assert!(b_set.is_disjoint(&a_set), "B got A's PASIDs: {b_ids:?}");
    assert!(b_set.iter().all(|p| (MIN..=MAX).contains(p)), "{b_ids:?}");
    // Lowest free above A's: B's range reached A's numbers.
    assert_eq!(
        b_set,
        (MIN + A_COUNT..MIN + A_COUNT + B_COUNT).collect(),
        "{b_ids:?}"
    );
    assert_eq!(sole_holdings(&daemon, "vmB"), b_set);
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set);
    assert_eq!(all_listed(&daemon), a_set.union(&b_set).copied().collect());
    assert_guest_knows(&mut b, &b_set, &a_set);

    // 4. The operator releases A's PASIDs; B can now get them.
    let released = daemon.pasidctl_json(&["release", "--vm", "vmA"]).unwrap();
    assert_eq!(
        released["released"].as_u64(),
        Some(u64::from(A_COUNT)),
        "{released}"
    );
    assert!(daemon.vm_pasids("vmA").unwrap().is_empty());
    let host_a = daemon.vm("vmA").unwrap();
    assert_eq!((host_a.held, host_a.connected), (0, false), "{host_a:?}");
    assert_eq!(all_listed(&daemon), b_set);
    let more: BTreeSet<u32> = alloc_each(&mut b, B_MORE).into_iter().collect();
    let reused: BTreeSet<u32> = more.intersection(&a_set).copied().collect();
    assert!(
        !reused.is_empty(),
        "none of A's released PASIDs {a_set:?} went to B: {more:?}"
    );
    assert!(more.is_disjoint(&b_set), "{more:?} vs {b_set:?}");
    let b_all: BTreeSet<u32> = b_set.union(&more).copied().collect();
    assert_eq!(sole_holdings(&daemon, "vmB"), b_all);
    assert_eq!(all_listed(&daemon), b_all);
    let old_a: BTreeSet<u32> = a_set.difference(&more).copied().collect();
    assert_guest_knows(&mut b, &b_all, &old_a);

    // 5. A's device died with the first daemon: requests fail within the
    //    driver's timeout and never reach the new daemon.
    let a_requests = daemon.vm("vmA").unwrap().counters.requests;
    let at = Instant::now();
    assert_eq!(a.alloc(MIN, MAX, 0).unwrap(), None, "A's device is dead");
    let alloc_took = at.elapsed();
    assert!(alloc_took < Duration::from_secs(5), "{alloc_took:?}");
    assert!(
        alloc_took >= Duration::from_millis(u64::from(A_TIMEOUT_MS) * 4 / 5),
        "no wait for the device: {alloc_took:?}"
    );
    let status = a.driver_status().unwrap();
    assert_eq!(status.state, "active", "{status:?}");
    assert_eq!(
        (status.counter("timeouts"), status.counter("outstanding")),
        (1, u64::from(A_COUNT)),
        "{status:?}"
    );
    assert_eq!(status.failures(), [], "{status:?}");
    a.wait_for_dmesg("ALLOC request failed: -110", CMD).unwrap();
    // A free cannot reach the host either; the guest forgets the ID.
    a.free(a_ids[0]).unwrap();
    let status = a.driver_status().unwrap();
    assert_eq!(
        (status.counter("timeouts"), status.counter("outstanding")),
        (2, u64::from(A_COUNT) - 1),
        "{status:?}"
    );
    let host_a = daemon.vm("vmA").unwrap();
    assert_eq!(host_a.counters.requests, a_requests, "{host_a:?}");
    assert_eq!((host_a.held, host_a.connected), (0, false), "{host_a:?}");
    assert_eq!(all_listed(&daemon), b_all, "A's requests changed the host");

    // B frees everything; both guests are healthy and power off cleanly.
    assert_eq!(b.free_all().unwrap(), u64::from(B_COUNT + B_MORE));
    assert!(daemon.pasids().unwrap().is_empty());
    for mut guest in [b, a] {
        guest.check_health().unwrap();
        guest.poweroff(POWEROFF).unwrap();
    }
    assert!(daemon.is_running(), "the restarted daemon died");

    let log = daemon.log();
    eprintln!(
        "{kernel}: restart listened after {restart_took:?}; A's dead-device alloc failed \
         after {alloc_took:?}; B reused {reused:?}; whole run {:?}; state dir {files:?}; \
         daemon state lines:\n  {}",
        started.elapsed(),
        state_lines(&log).join("\n  ")
    );
}
