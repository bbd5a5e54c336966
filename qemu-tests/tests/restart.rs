// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The durable PASID space (`vhost-user-pasid --state-dir DIR`) across a
//! daemon crash, with real guests (Linux 6.1 and 5.10 under QEMU TCG).
//!
//! `durable_state_survives_sigkill`:
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
//! `restarted_vm_reclaims_at_probe`, the operator's usual path after a
//! backend crash (restart the VM instead of `pasidctl release`):
//!
//! 1. Guest A allocates 8 PASIDs on slot `vmA` of a daemon with a state
//!    directory; the daemon is killed (`SIGKILL`) and restarted on the same
//!    state, and still lists the 8 for `vmA`, not connected, bound to A's
//!    QEMU process (durable state keeps it).
//! 2. Guest A is powered off. Its QEMU never connected to the new daemon,
//!    but the new daemon watches that process: its exit releases the 8
//!    (`event=qemu-exited`, `reason="qemu exited" references=8`, the only
//!    reclaim of `vmA` since the restart), with no connect or disconnect.
//! 3. A fresh guest A' boots on the same slot; its driver's probe RESET
//!    releases nothing more, and the host lists none.
//! 4. A' allocates 8 in the same range and gets exactly A's old numbers, in
//!    order (lowest free), proving they were freed; it stays healthy and
//!    powers off cleanly, and that disconnect, which this daemon saw,
//!    reclaims its 8.
//!
//! Each kernel runs as `<scenario>::linux_<kernel>`. Logs:
//! `target/qemu-tests-logs/<scenario>.linux_<kernel>-{vmA,vmA-2,vmB,
//! daemon}.log` (the daemon's log holds both runs, separated by a
//! `>>> restart 1` line). The daemon binaries must have been built first
//! (`cargo build --release --bins`).

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s, so clippy does not see them as test code: in them, as in any
// test, a failed step is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_guest_knows, load_v1_driver, sole_holdings, v1_daemon_config, CMD, MAX, MIN, POWEROFF,
};
use qemu_tests::vpasid::{parse_alloc, EXERCISER_CTL};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest};

/// PASIDs guest A allocates before the crash.
const A_COUNT: u32 = 8;
/// PASIDs guest B allocates after the restart: more than A holds.
const B_COUNT: u32 = 12;
/// PASIDs guest B allocates after A's were released.
const B_MORE: u32 = 4;
/// The driver's request timeout in guest A, whose device dies.
const A_TIMEOUT_MS: u32 = 500;
/// Bound on a daemon log line showing up.
const SHOWS_UP: Duration = Duration::from_secs(20);
/// How long a QEMU's exit is given to reach the daemon, were it connected.
const SETTLE: Duration = Duration::from_secs(1);

qemu_tests::per_kernel!(
    durable_state_survives_sigkill,
    restarted_vm_reclaims_at_probe
);

// ---------------------------------------------------------------------------
// Helpers

/// Boots guest `vm` on `daemon`'s socket for it, loads the driver with
/// `params` and the exerciser, and waits for the driver's probe RESET,
/// which finds nothing held.
fn boot_active(kernel: Kernel, daemon: &Daemon, vm: &str, params: &str) -> Guest {
    boot_resetting(kernel, daemon, vm, params, 0)
}

/// [`boot_active`] for a slot the host still holds PASIDs for: the probe's
/// RESET must report that it released `released` references.
fn boot_resetting(kernel: Kernel, daemon: &Daemon, vm: &str, params: &str, released: u32) -> Guest {
    let config = GuestConfig::new(vm, kernel).vhost_user(daemon.socket(vm).unwrap());
    let mut guest = Guest::boot(config).unwrap();
    load_v1_driver(&mut guest, params).unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    guest
        .wait_for_dmesg(&format!("RESET released {released} reference(s)"), CMD)
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

/// Every PASID the host lists, whoever holds it.
fn all_listed(daemon: &Daemon) -> BTreeSet<u32> {
    daemon.pasids().unwrap().iter().map(|p| p.pasid).collect()
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

/// Boots guest A on `vmA`, allocates [`A_COUNT`] PASIDs one by one and
/// checks they are the bottom of the range and that the host lists exactly
/// those, held by `vmA` alone. Returns the guest and the PASIDs, in the
/// order given and as a set.
fn boot_a_with_pasids(kernel: Kernel, daemon: &Daemon) -> (Guest, Vec<u32>, BTreeSet<u32>) {
    let mut a = boot_active(kernel, daemon, "vmA", &format!("timeout_ms={A_TIMEOUT_MS}"));
    let a_ids = alloc_each(&mut a, A_COUNT);
    let a_set: BTreeSet<u32> = a_ids.iter().copied().collect();
    // Lowest free: A has the bottom of the range, where B would start.
    assert_eq!(a_set, (MIN..MIN + A_COUNT).collect(), "{a_ids:?}");
    assert_eq!(sole_holdings(daemon, "vmA"), a_set);
    assert_eq!(all_listed(daemon), a_set);
    (a, a_ids, a_set)
}

// ---------------------------------------------------------------------------
// The scenario

fn durable_state_survives_sigkill(kernel: Kernel) {
    let started = Instant::now();
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new("vmA"))
            .vm(VmSlot::new("vmB"))
            .state_dir("state"),
    ))
    .unwrap();
    let state_dir = daemon.state_dir().unwrap().to_path_buf();

    // 1. Guest A allocates; the host lists exactly its PASIDs for vmA.
    let (mut a, a_ids, a_set) = boot_a_with_pasids(kernel, &daemon);
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
    // A free cannot reach the host either; the guest forgets the ID. The
    // FREE is posted, not waited for: no second timeout.
    a.free(a_ids[0]).unwrap();
    let status = a.driver_status().unwrap();
    assert_eq!(
        (status.counter("timeouts"), status.counter("outstanding")),
        (1, u64::from(A_COUNT) - 1),
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

/// After a crash, the operator restarts the dead VM: its old QEMU's exit
/// reclaims nothing (the new daemon never saw it connect), the new guest's
/// probe RESET does, and the new guest gets the freed numbers.
fn restarted_vm_reclaims_at_probe(kernel: Kernel) {
    let started = Instant::now();
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            // Hold-over 0: the power-off of A' below is released as a
            // disconnect.
            .vm(VmSlot::new("vmA").holdover(0))
            .state_dir("state"),
    ))
    .unwrap();

    // 1. Guest A allocates; the daemon crashes and restarts on its state.
    let (mut a, a_ids, a_set) = boot_a_with_pasids(kernel, &daemon);
    let host_a = daemon.vm("vmA").unwrap();
    assert!(host_a.connected, "{host_a:?}");
    assert_eq!(host_a.held, A_COUNT, "{host_a:?}");

    let status = daemon.kill().unwrap();
    assert!(!status.success(), "{status}");
    let restart_mark = daemon.log_mark();
    daemon.restart().unwrap();
    let loaded = daemon
        .wait_log_since(restart_mark, "event=state-loaded", SHOWS_UP)
        .unwrap();
    assert!(
        loaded.contains(&format!("pasids={A_COUNT} references={A_COUNT}")),
        "{loaded}"
    );
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set, "after the restart");
    assert_eq!(all_listed(&daemon), a_set, "after the restart");
    let host_a = daemon.vm("vmA").unwrap();
    assert_eq!(
        (host_a.connected, host_a.held, host_a.counters.connects),
        (false, A_COUNT, 0),
        "{host_a:?}"
    );

    // 2. The operator powers A off. Its device died with the first daemon
    //    and never connected to this one, but this daemon knows A's QEMU
    //    from the state and watches it: its exit releases the 8.
    a.poweroff(POWEROFF).unwrap();
    assert!(!a.is_running());
    let reclaim = daemon
        .wait_log_since(restart_mark, "vm=vmA event=reclaim", SHOWS_UP)
        .unwrap();
    assert!(
        reclaim.contains(&format!(
            "vm=vmA event=reclaim reason=\"qemu exited\" references={A_COUNT} \
             pasids_freed={A_COUNT}"
        )),
        "reclaim line: {reclaim}"
    );
    thread::sleep(SETTLE);
    assert!(daemon.vm_pasids("vmA").unwrap().is_empty());
    assert!(all_listed(&daemon).is_empty());
    let host_a = daemon.vm("vmA").unwrap();
    assert_eq!(
        (
            host_a.connected,
            host_a.held,
            host_a.counters.connects,
            host_a.counters.reclaimed
        ),
        (false, 0, 0, u64::from(A_COUNT)),
        "{host_a:?}"
    );
    let log = daemon.log();
    let since_restart: Vec<&str> = log[restart_mark..]
        .lines()
        .filter(|l| l.contains("vm=vmA event="))
        .collect();
    assert!(
        since_restart
            .iter()
            .any(|l| l.contains("vm=vmA event=qemu-exited")
                && l.contains(&format!("held={A_COUNT}"))),
        "{since_restart:#?}"
    );
    for event in ["event=connect", "event=disconnect"] {
        assert!(
            !since_restart
                .iter()
                .any(|l| l.contains(&format!("vm=vmA {event}"))),
            "A's connection reached the new daemon: {since_restart:#?}"
        );
    }

    // 3. A fresh guest A' on the same slot: its probe RESET finds nothing.
    let reset_mark = daemon.log_mark();
    let boot_at = Instant::now();
    let mut a2 = boot_resetting(kernel, &daemon, "vmA", "", 0);
    let a2_boot = boot_at.elapsed();
    daemon
        .wait_log_since(reset_mark, "vm=vmA event=connect", SHOWS_UP)
        .unwrap();
    assert!(daemon.vm_pasids("vmA").unwrap().is_empty());
    assert!(all_listed(&daemon).is_empty());
    let host_a = daemon.vm("vmA").unwrap();
    assert_eq!(
        (
            host_a.connected,
            host_a.held,
            host_a.counters.connects,
            host_a.counters.reclaimed,
            host_a.counters.request("RESET")
        ),
        (true, 0, 1, u64::from(A_COUNT), 1),
        "{host_a:?}"
    );

    // 4. A' allocates in the same range: lowest free hands it A's old
    //    numbers, in order, so they were freed.
    let a2_ids = alloc_each(&mut a2, A_COUNT);
    assert_eq!(a2_ids[0], a_ids[0], "{a2_ids:?} vs A's {a_ids:?}");
    assert_eq!(a2_ids, a_ids, "A' did not get A's freed numbers");
    assert_eq!(sole_holdings(&daemon, "vmA"), a_set);
    assert_eq!(all_listed(&daemon), a_set);
    let above: BTreeSet<u32> = (MIN + A_COUNT..MIN + A_COUNT + 2).collect();
    assert_guest_knows(&mut a2, &a_set, &above);
    let status = a2.driver_status().unwrap();
    assert_eq!(status.state, "active", "{status:?}");
    assert_eq!(
        (
            status.counter("allocs"),
            status.counter("outstanding"),
            status.counter("timeouts")
        ),
        (u64::from(A_COUNT), u64::from(A_COUNT), 0),
        "{status:?}"
    );
    assert_eq!(status.failures(), [], "{status:?}");

    // A' is healthy and powers off cleanly; this disconnect the daemon
    // saw, so it reclaims what A' held.
    a2.check_health().unwrap();
    let off_mark = daemon.log_mark();
    a2.poweroff(POWEROFF).unwrap();
    let disconnect = daemon
        .wait_log_since(off_mark, "vm=vmA event=reclaim", SHOWS_UP)
        .unwrap();
    assert!(
        disconnect.contains(&format!(
            "reason=\"disconnect\" references={A_COUNT} pasids_freed={A_COUNT}"
        )),
        "reclaim line: {disconnect}"
    );
    assert!(daemon.pasids().unwrap().is_empty());
    assert!(daemon.is_running(), "the restarted daemon died");

    eprintln!(
        "{kernel}: A' booted and reset in {a2_boot:?}; whole run {:?}; daemon log since the \
         restart (state, vmA):\n  {}",
        started.elapsed(),
        daemon.log()[restart_mark..]
            .lines()
            .filter(|l| l.contains("vm=vmA") || l.contains("event=state-loaded"))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
