// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A daemon restart that running VMs do not see: systemd's file descriptor
//! store, played by the test (`host-backend/tests/frontend/manager.rs`), with
//! real guests (Linux 6.1 and 5.10 under QEMU TCG).
//!
//! `a_restart_is_invisible_to_running_vms`:
//!
//! 1. The daemon serves `idle` (a guest without the driver loaded: no
//!    driver has started its device) and `busy` (the driver loaded,
//!    allocating) with a state directory, under the manager.
//! 2. While `busy` runs a burst of allocations and frees from two kernel
//!    threads, the daemon gets SIGTERM and a new daemon starts with the
//!    stored descriptors. Both QEMUs keep running; `busy`'s burst has no
//!    failed, duplicate, out-of-range or lookup error; the new daemon logs
//!    a resume for each VM.
//! 3. `busy`'s PASIDs, as the guest knows them and as the host lists them,
//!    are equal. `idle` then loads the driver (its device's first
//!    DRIVER_OK after a resume) and allocates.
//!
//! `a_vm_that_exits_while_the_daemon_is_down_is_released`: a VM's QEMU is
//! killed while no daemon runs; the new daemon drops its stored session
//! (every descriptor leaves the store) and releases its PASIDs, and takes
//! the other VM's session over with all of its PASIDs.
//!
//! `qemu_aborts_when_a_backend_leaves_an_unstarted_device` documents a
//! QEMU bug (docs/operations.md, "QEMU aborts when the backend of a device
//! no driver started goes away"): without the store, a daemon that exits
//! while a guest has no driver bound makes QEMU 11.1 abort. The test
//! expects the abort; a QEMU that no longer aborts fails it loudly, and the
//! docs can then change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../../host-backend/tests/frontend/manager.rs"]
#[allow(dead_code)]
mod manager;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load_v1_driver;
use manager::{roles, Manager};
use qemu_tests::daemon::binary;
use qemu_tests::vpasid::{parse_alloc_timed, EXERCISER_CTL};
use qemu_tests::{
    wait_for_unix_listener, ChildGuard, Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot,
    VpasidGuest,
};

const WAIT: Duration = Duration::from_secs(30);
const MIN: u32 = 1;
const MAX: u32 = 4000;
/// Allocations (one shell round each) of the guest's work that a restart
/// falls into, 500 ms in: long enough under TCG that the work outlasts the
/// restart by more than the 100 ms `restart_during` asks, also when leased
/// allocations need no round trip (150 fell short once on 5.10).
const WORK_ALLOCS: usize = 300;

/// The daemon under the manager: its sockets, log and command line.
struct Managed {
    dir: tempfile::TempDir,
    args: Vec<String>,
    log: PathBuf,
    child: Option<ChildGuard>,
}

impl Managed {
    fn socket(&self, vm: &str) -> PathBuf {
        self.dir.path().join(format!("{vm}.sock"))
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Starts the daemon with slots `vms`, with leases (`lease=None`: the
    /// default cap) or `lease=N`.
    fn start(m: &Manager, vms: &[&str], lease: Option<u32>, test: &str) -> Managed {
        let dir = tempfile::Builder::new()
            .prefix("vpasid-")
            .tempdir()
            .unwrap();
        let mut args = Vec::new();
        for vm in vms {
            args.push("--vm".to_string());
            let mut spec = format!("{vm}={}", dir.path().join(format!("{vm}.sock")).display());
            if let Some(cap) = lease {
                spec.push_str(&format!(",lease={cap}"));
            }
            args.push(spec);
        }
        args.push("--state-dir".into());
        args.push(dir.path().join("state").display().to_string());
        args.push("--control-socket".into());
        args.push(dir.path().join("control.sock").display().to_string());
        let logs = qemu_tests::setup::log_dir();
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{test}-daemon.log"));
        File::create(&log).unwrap();
        let mut d = Managed {
            dir,
            args,
            log,
            child: None,
        };
        d.spawn(m);
        for vm in vms {
            wait_for_unix_listener(&d.socket(vm), WAIT).unwrap();
        }
        d
    }

    fn spawn(&mut self, m: &Manager) {
        self.child = Some(spawn(m, &self.args, &self.log));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log_count(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {n}x {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn held(&self, vm: &str) -> BTreeSet<u32> {
        let out = Command::new(binary("pasidctl").unwrap())
            .arg("--socket")
            .arg(self.control())
            .args(["--json", "pasids"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["holders"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["owner"] == vm))
            })
            .map(|p| u32::try_from(p["pasid"].as_u64().unwrap()).unwrap())
            .collect()
    }
}

/// Starts the daemon as systemd would, with the manager's store.
fn spawn(m: &Manager, args: &[String], log: &Path) -> ChildGuard {
    spawn_build(m, &binary("vhost-user-pasid").unwrap(), args, log)
}

/// [`spawn`] of the daemon binary `bin`.
fn spawn_build(m: &Manager, bin: &Path, args: &[String], log: &Path) -> ChildGuard {
    let log = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let mut cmd = m.command(bin, args);
    cmd.stdin(Stdio::null()).stderr(log);
    ChildGuard::spawn("vhost-user-pasid", cmd).unwrap()
}

/// Restarts the daemon (`signal`, then a new daemon with the store, as
/// `systemctl restart` or `Restart=on-failure` do) from another thread,
/// 500 ms into `work` on `guest`. Returns what `work` returned and how long
/// before its end the old daemon was gone.
fn restart_during<R>(
    m: &Arc<Manager>,
    d: &mut Managed,
    signal: i32,
    guest: &mut Guest,
    work: impl FnOnce(&mut Guest) -> R,
) -> (R, Duration) {
    let restarter = {
        let mut child = d.child.take().unwrap();
        let (m, args, log) = (m.clone(), d.args.clone(), d.log.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            child.signal(signal).unwrap();
            child.wait_timeout(WAIT).unwrap();
            let exited = Instant::now();
            (spawn(&m, &args, &log), exited)
        })
    };
    let out = work(guest);
    let (next, exited) = restarter.join().unwrap();
    d.child = Some(next);
    let after = exited.elapsed();
    assert!(
        after > Duration::from_millis(100),
        "the guest's work ended before the restart: make it longer"
    );
    (out, after)
}

/// Boots the two guests of the restart scenarios on `d`'s slots: `idle`,
/// with no driver loaded (its device never started), and `busy`, with the
/// v1 driver and the exerciser.
fn boot_idle_and_busy(kernel: Kernel, d: &Managed) -> (Guest, Guest) {
    let configs = vec![
        GuestConfig::new("idle", kernel).vhost_user(d.socket("idle")),
        GuestConfig::new("busy", kernel).vhost_user(d.socket("busy")),
    ];
    let mut guests: Vec<Guest> = common::boot_in_parallel(configs, |g| {
        if g.name() == "busy" {
            load_v1_driver(g, "")?;
            g.load_exerciser()?;
        }
        Ok(())
    });
    let busy = guests.pop().unwrap();
    let idle = guests.pop().unwrap();
    (idle, busy)
}

/// The end of the restart scenarios: `idle` loads the driver (its device's
/// first DRIVER_OK, on the daemon now running) and allocates, both guests
/// exit cleanly, and nothing of them stays in the store.
fn idle_starts_then_both_exit(m: &Manager, d: &Managed, mut idle: Guest, busy: Guest) {
    load_v1_driver(&mut idle, "").unwrap();
    idle.load_exerciser().unwrap();
    let first = idle.alloc(MIN, MAX, 2).unwrap().unwrap();
    assert_eq!(d.held("idle"), BTreeSet::from([first]));
    for g in [idle, busy] {
        common::finish(g);
    }
    m.wait_names("empty after both VMs exit", WAIT, <[String]>::is_empty);
}

/// The longest `ioasid_alloc()` among `lines` of `alloc_timed` results
/// (`ok ID NS`); every one must have succeeded.
fn longest_alloc(lines: &str) -> (usize, Duration, Vec<u32>) {
    let mut longest = Duration::ZERO;
    let mut ids = Vec::new();
    for line in lines
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("err "))
    {
        let timed = parse_alloc_timed(line.trim()).unwrap();
        let id = timed
            .id
            .unwrap_or_else(|| panic!("an allocation failed: {line}"));
        ids.push(id);
        longest = longest.max(timed.took);
    }
    (ids.len(), longest, ids)
}

fn restart_scenario(kernel: Kernel, signal: i32, test: &str) {
    let m = Manager::new();
    // lease=0: every allocation is a request to the host, so the burst
    // crosses the restart and host and guest must agree exactly (no leased
    // cache in between).
    let mut d = Managed::start(
        &m,
        &["idle", "busy"],
        Some(0),
        &format!("{test}.linux_{kernel}"),
    );
    let (mut idle, mut busy) = boot_idle_and_busy(kernel, &d);
    let mut kept = BTreeSet::new();
    for _ in 0..8 {
        kept.insert(busy.alloc(MIN, MAX, 1).unwrap().unwrap());
    }
    m.wait_names("both sessions stored", WAIT, |n| {
        roles(n, "busy").len() >= 5 && roles(n, "idle").len() >= 2
    });
    let names = m.names();
    eprintln!(
        "figure: {kernel}: descriptors in the store: busy (driver bound) {} {:?}, idle (no driver) {} {:?}",
        roles(&names, "busy").len(),
        roles(&names, "busy"),
        roles(&names, "idle").len(),
        roles(&names, "idle")
    );
    let sig = if signal == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    };

    // 1. A burst of ALLOC/FREE from two kernel threads across the restart.
    let (burst, after) = restart_during(&m, &mut d, signal, &mut busy, |g| {
        g.stress(2, 3000, (MIN, MAX), Duration::from_secs(300))
    });
    let burst = burst.unwrap();
    eprintln!("{kernel}: {sig}: burst across the restart: {burst:?} (went on {after:?} after)");
    assert_eq!(
        (
            burst.failed,
            burst.duplicate,
            burst.out_of_range,
            burst.lookup
        ),
        (0, 0, 0, 0),
        "{burst:?}"
    );
    let log = d.wait_log_count("event=resume", 2);
    assert!(log.contains("vm=busy event=resume started=true"), "{log}");
    assert!(log.contains("vm=idle event=resume started=false"), "{log}");
    assert!(idle.is_running() && busy.is_running());
    assert_eq!(
        d.held("busy"),
        kept,
        "host and guest disagree after the burst"
    );

    // 2. Allocations one after another, each timed in the guest kernel,
    // across a second restart: the longest is the pause the guest saw.
    let loop_cmd = format!(
        "for i in $(seq {WORK_ALLOCS}); do echo 'alloc_timed {MIN} {MAX}' > {EXERCISER_CTL} && cat {EXERCISER_CTL}; done"
    );
    let (out, _) = restart_during(&m, &mut d, signal, &mut busy, |g| {
        g.run_ok(&loop_cmd, Duration::from_secs(300))
    });
    let (n, longest, ids) = longest_alloc(&out.unwrap());
    eprintln!(
        "figure: {kernel}: {sig}: longest single allocation across a restart (lease=0): {:.1} ms of {n}",
        longest.as_secs_f64() * 1e3
    );
    assert_eq!(n, WORK_ALLOCS);
    assert!(
        longest < Duration::from_secs(2),
        "longer than the driver's timeout_ms"
    );
    kept.extend(ids);
    assert_eq!(
        d.held("busy"),
        kept,
        "host and guest disagree after the timed loop"
    );

    // 3. The idle guest's driver starts its device on the new daemon.
    idle_starts_then_both_exit(&m, &d, idle, busy);
}

fn a_restart_is_invisible_to_running_vms(kernel: Kernel) {
    restart_scenario(
        kernel,
        libc::SIGTERM,
        "a_restart_is_invisible_to_running_vms",
    );
}

fn a_crash_mid_burst_loses_nothing(kernel: Kernel) {
    restart_scenario(kernel, libc::SIGKILL, "a_crash_mid_burst_loses_nothing");
}

/// With leases (the daemon's default cap, the driver's default `lease`):
/// [`WORK_ALLOCS`] allocations timed in the guest kernel across a SIGTERM restart all
/// succeed (printed: the longest), and the host holds every PASID the
/// guest was given (plus the driver's cache).
fn leased_allocations_across_a_restart(kernel: Kernel) {
    let test = format!("leased_allocations_across_a_restart.linux_{kernel}");
    let m = Manager::new();
    let mut d = Managed::start(&m, &["busy"], None, &test);
    let config = GuestConfig::new("busy", kernel).vhost_user(d.socket("busy"));
    let mut busy = Guest::boot(config).unwrap();
    busy.load_driver("").unwrap();
    busy.load_exerciser().unwrap();
    busy.alloc(MIN, MAX, 1).unwrap().unwrap();
    m.wait_names("stored", WAIT, |n| roles(n, "busy").len() >= 5);
    let loop_cmd = format!(
        "for i in $(seq {WORK_ALLOCS}); do echo 'alloc_timed {MIN} {MAX}' > {EXERCISER_CTL} && cat {EXERCISER_CTL}; done"
    );
    let (out, _) = restart_during(&m, &mut d, libc::SIGTERM, &mut busy, |g| {
        g.run_ok(&loop_cmd, Duration::from_secs(300))
    });
    let (n, longest, ids) = longest_alloc(&out.unwrap());
    eprintln!(
        "figure: {kernel}: SIGTERM: longest single allocation across a restart (leased): {:.1} ms of {n}",
        longest.as_secs_f64() * 1e3
    );
    assert_eq!(n, WORK_ALLOCS);
    assert!(
        longest < Duration::from_secs(2),
        "longer than the driver's timeout_ms"
    );
    d.wait_log_count("vm=busy event=resume started=true", 1);
    let held = d.held("busy");
    assert!(
        ids.iter().all(|id| held.contains(id)),
        "{ids:?} not all in {held:?}"
    );
    common::finish(busy);
    m.wait_names("empty after the VM exits", WAIT, <[String]>::is_empty);
}

/// The daemon of another build (`VPASID_BUILD_ID=upgrade-test`, built by
/// `qemu-tests/run setup` into `target/upgrade`) takes the sessions over
/// after a SIGTERM, as `systemctl restart` after an upgrade: the busy
/// guest goes on allocating, host and guest agree, and the guest without a
/// driver loads it afterwards.
fn an_upgrade_resumes(kernel: Kernel) {
    let upgrade = qemu_tests::setup::repo_root().join("target/upgrade/release/vhost-user-pasid");
    assert!(
        upgrade.is_file(),
        "{} is missing: run `qemu-tests/run setup` (it builds the upgrade daemon)",
        upgrade.display()
    );
    let test = format!("an_upgrade_resumes.linux_{kernel}");
    let m = Manager::new();
    let mut d = Managed::start(&m, &["idle", "busy"], Some(0), &test);
    let (idle, mut busy) = boot_idle_and_busy(kernel, &d);
    let mut kept: BTreeSet<u32> = (0..8)
        .map(|_| busy.alloc(MIN, MAX, 1).unwrap().unwrap())
        .collect();
    m.wait_names("both sessions stored", WAIT, |n| {
        roles(n, "busy").len() >= 5 && roles(n, "idle").len() >= 2
    });
    let mut old = d.child.take().unwrap();
    old.signal(libc::SIGTERM).unwrap();
    old.wait_timeout(WAIT).unwrap();
    d.child = Some(spawn_build(&m, &upgrade, &d.args, &d.log));
    let log = d.wait_log_count("event=resume", 2);
    assert!(
        log.contains("build=upgrade-test"),
        "not the upgrade build:\n{log}"
    );
    assert!(log.contains("vm=busy event=resume started=true"), "{log}");
    assert!(log.contains("vm=idle event=resume started=false"), "{log}");
    for _ in 0..8 {
        kept.insert(busy.alloc(MIN, MAX, 1).unwrap().unwrap());
    }
    assert_eq!(kept.len(), 16);
    assert_eq!(d.held("busy"), kept, "host and guest disagree");
    idle_starts_then_both_exit(&m, &d, idle, busy);
}

/// A VM whose QEMU exits while no daemon runs: once the new daemon starts,
/// every descriptor of its session has left the store and its PASIDs are
/// released (its QEMU is gone), while the other VM's session is taken over
/// with every PASID it holds.
fn a_vm_that_exits_while_the_daemon_is_down_is_released(kernel: Kernel) {
    let test = format!("a_vm_that_exits_while_the_daemon_is_down.linux_{kernel}");
    let m = Manager::new();
    let mut d = Managed::start(&m, &["gone", "stays"], Some(0), &test);
    let configs = vec![
        GuestConfig::new("gone", kernel).vhost_user(d.socket("gone")),
        GuestConfig::new("stays", kernel).vhost_user(d.socket("stays")),
    ];
    let mut guests: Vec<Guest> = common::boot_in_parallel(configs, |g| {
        load_v1_driver(g, "")?;
        g.load_exerciser()
    });
    let mut stays = guests.pop().unwrap();
    let mut gone = guests.pop().unwrap();
    let held_gone: BTreeSet<u32> = (0..3)
        .map(|_| gone.alloc(MIN, MAX, 1).unwrap().unwrap())
        .collect();
    let mut held_stays: BTreeSet<u32> = (0..3)
        .map(|_| stays.alloc(MIN, MAX, 1).unwrap().unwrap())
        .collect();
    assert_eq!(d.held("gone"), held_gone);
    m.wait_names("both sessions stored", WAIT, |n| {
        roles(n, "gone").len() >= 5 && roles(n, "stays").len() >= 5
    });

    let mut old = d.child.take().unwrap();
    old.signal(libc::SIGKILL).unwrap();
    old.wait_timeout(WAIT).unwrap();
    // The VM goes away while no daemon runs (its QEMU is killed).
    drop(gone);
    d.spawn(&m);
    d.wait_log_count("vm=gone event=session-ended-while-down", 1);
    let log = d.wait_log_count("vm=stays event=resume started=true", 1);
    m.wait_names("gone's descriptors left the store", WAIT, |n| {
        roles(n, "gone").is_empty() && roles(n, "stays").len() >= 5
    });
    assert_eq!(
        d.held("gone"),
        BTreeSet::new(),
        "released at start-up:\n{log}"
    );
    assert_eq!(
        d.held("stays"),
        held_stays,
        "kept by the session taken over"
    );
    held_stays.insert(stays.alloc(MIN, MAX, 1).unwrap().unwrap());
    assert_eq!(d.held("stays"), held_stays);
    common::finish(stays);
    m.wait_names("empty after the last VM exits", WAIT, <[String]>::is_empty);
}

/// Documents a QEMU bug: expects QEMU 11.1 to abort.
fn qemu_aborts_when_a_backend_leaves_an_unstarted_device(kernel: Kernel) {
    let mut daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new("idle"))
            .test_name(format!("qemu_aborts.{kernel}")),
    )
    .unwrap();
    let config = GuestConfig::new("idle", kernel)
        .vhost_user(daemon.socket("idle").unwrap())
        .allow_in_log("memory_region_del_eventfd")
        .allow_in_log("Failed to set msg fds");
    let mut guest = Guest::boot(config).unwrap();
    daemon.stop().unwrap();
    let deadline = Instant::now() + WAIT;
    while guest.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = guest.qemu_stderr();
    assert!(
        !guest.is_running() && stderr.contains("memory_region_del_eventfd"),
        "QEMU no longer aborts when the backend of a device no driver started goes away \
         (fixed upstream?): update docs/operations.md and this test. QEMU stderr:\n{stderr}"
    );
    let _ = Path::new("");
}

qemu_tests::per_kernel!(
    a_restart_is_invisible_to_running_vms,
    a_vm_that_exits_while_the_daemon_is_down_is_released,
    a_crash_mid_burst_loses_nothing,
    leased_allocations_across_a_restart,
    an_upgrade_resumes,
    qemu_aborts_when_a_backend_leaves_an_unstarted_device
);
