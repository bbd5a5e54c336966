// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Live migration of a VM with a vpasid device (issue 22), with real
//! guests (Linux 6.1 and 5.10 under QEMU TCG, `pc` machine), real QEMU
//! migrations (`migrate` to a second QEMU started with the same arguments
//! minus the vhost-user chardev and device, plus `-incoming unix:PATH`),
//! and `pasidctl detach/attach/export/reserve`. Two daemons with their own
//! state directories and sockets stand for two hosts: **A** (the source)
//! and **B** (the destination).
//!
//! `migrations_keep_every_pasid` boots two guests once and runs the
//! issue's QEMU tests 1 to 6 in a row (a boot costs more than all the
//! migrations, and the suite's wall time counts):
//!
//! - X (slot `vmA` on A and on B) holds [`HELD`] PASIDs in use and a
//!   lease cache; Y (slot `vmY` on B only) holds PASIDs on B: the same
//!   numbers, every slot has the same range.
//! 2. **Conflict**: X is detached on A and exported; `reserve` on B names
//!    each PASID Y holds there, exits 1 and reserves nothing. X is attached
//!    again on A and keeps every PASID. Y then unloads its driver (giving
//!    back everything) and loads it again after step 1.
//! 3. **Failed migration**: detach, export, `reserve --hold` on B, then
//!    the destination QEMU is killed during `migrate` (bandwidth capped so
//!    that it is still running). The source runs on; `attach` on A: every
//!    PASID KEPT. B's reservation expires by itself.
//! 1. and 5. **Migration**, the guest allocating and freeing throughout
//!    (a shell loop of exerciser `alloc`/`find`/`free`): detach, export,
//!    reserve on B, `migrate`, `attach` on B: every PASID KEPT, nothing
//!    re-granted, each still resolves in the guest (`ioasid_find`), and
//!    allocation goes on. The loop saw no duplicate, no out-of-range ID, no
//!    lookup error; its failures are counted and timed. The source QEMU
//!    then quits and A holds nothing for the VM, with no operator command.
//! 4. **Same-host migration** on B, one daemon: detach, migrate, attach:
//!    all KEPT, nothing re-granted, and the source's exit changes nothing.
//!    Then the libvirt order (`detach --keep`, the source QEMU exits before
//!    the destination attaches): still all KEPT.
//! 6. **Start-up release**: B is SIGKILLed, Y's QEMU killed while B is
//!    down, B started again: Y's PASIDs are released at start-up, X's kept;
//!    X resumes by `detach` + `attach`, every PASID KEPT.
//!
//! Figures, printed per step (the command measuring each in brackets): time
//! to detach (`pasidctl detach`'s `unplug_ms`, and its wall time), migration
//! total time and downtime (`query-migrate`), `device_add` to the driver
//! active (`pasidctl attach`'s `after_ms`, and the guest's dmesg from the
//! new device's PCI line to "resumed with"), kept / re-granted / conflicts
//! (`attach`'s JSON), the loop's failed allocations and for how long (guest
//! `/proc/uptime`), and the source QEMU's exit to its PASIDs released on A
//! (polling `pasidctl --json vms`).
//!
//! Each kernel runs as `<scenario>::linux_<kernel>`. Logs:
//! `target/qemu-tests-logs/<scenario>.linux_<kernel>-{vmA,vmY,vmA-b*,daemon*}.log`.

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s: in them, as in any test, a failed step is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_guest_knows, detach, dmesg_time, qmp_guest_config, vm_json, CMD};
use qemu_tests::qmp::Migration;
use qemu_tests::vpasid::{wait_lease_settled, EXERCISER_CTL};
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, Qmp, VmSlot, VpasidGuest};
use serde_json::{json, Value};

/// PASIDs X keeps in use throughout.
const HELD: u32 = 3;

/// The range of every slot (X's on A and B, Y's on B) and of every
/// allocation: Y's PASIDs on B are then the same numbers as X's on A, the
/// conflict of step 2.
const LO: u32 = 50_000;
/// See [`LO`].
const HI: u32 = 60_000;

/// Guest memory: what a migration copies.
const MEMORY_MIB: u32 = 256;

/// The driver's request timeout.
const TIMEOUT_MS: u32 = 500;

/// Bound on one migration.
const MIGRATE: Duration = Duration::from_secs(120);

/// The failed migration's bandwidth cap (bytes/s): slow enough that the
/// destination is killed while it runs.
const SLOW_BANDWIDTH: u64 = 1 << 20;
/// The other migrations' cap (bytes/s).
const FAST_BANDWIDTH: u64 = 1 << 30;

/// The failed migration's reservation on B, in seconds: waited out.
const SHORT_HOLD_S: u32 = 8;

/// The guest's allocation loop's files.
const CHURN: &str = "/tmp/churn";

qemu_tests::per_kernel!(migrations_keep_every_pasid);

/// Loads the driver (leases on, the default) and the exerciser and waits
/// for the driver to be active.
fn prepare(guest: &mut Guest) -> qemu_tests::Result<()> {
    guest.load_driver(&format!("timeout_ms={TIMEOUT_MS}"))?;
    guest.load_exerciser()?;
    guest.wait_driver_state("active", CMD)?;
    Ok(())
}

/// Whether `pasidctl vms` shows `vm` as reserved (contract: state
/// `reserved`).
fn is_reserved(vm: &Value) -> bool {
    vm["state"] == "reserved"
}

/// `pasidctl --json attach` (the device the daemon remembers); checks
/// that the guest reconciled with every one of `kept` KEPT, nothing
/// re-granted and no conflict, and returns the report. `freed` PASIDs of
/// `kept` may be missing: a guest that frees while its device is gone
/// lists what it still holds, fewer than the host kept for it.
fn attach_kept(daemon: &Daemon, vm: &str, qmp: &Path, kept: usize, freed: usize) -> Value {
    let qmp = qmp.to_string_lossy();
    let report = daemon
        .pasidctl_json(&["attach", "--vm", vm, "--qmp", &qmp, "--timeout", "60"])
        .unwrap();
    assert_eq!(report["vm"], vm, "{report}");
    assert_eq!(report["probe"], "reconcile", "{report}");
    assert_eq!(
        (report["regranted"].as_u64(), report["conflicts"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    let listed = report["kept"].as_u64().unwrap_or(0);
    assert!(
        (kept.saturating_sub(freed) as u64..=kept as u64).contains(&listed),
        "{report}: expected {kept} kept (at most {freed} fewer)"
    );
    let host = vm_json(daemon, vm);
    assert_eq!(host["connected"], true, "{host}");
    assert_eq!(host["last_probe"]["kind"], "reconcile", "{host}");
    report
}

/// `pasidctl --json export`; checks it against what the daemon holds for
/// `vm` and returns it with those PASIDs.
fn export(daemon: &Daemon, vm: &str) -> (Value, BTreeSet<u32>) {
    let export = daemon.pasidctl_json(&["export", "--vm", vm]).unwrap();
    assert_eq!(export["vm"], vm, "{export}");
    let pasids: BTreeSet<u32> = export["pasids"]
        .as_array()
        .unwrap_or_else(|| panic!("no pasids in {export}"))
        .iter()
        .map(|p| u32::try_from(p.as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(pasids, daemon.vm_pasids(vm).unwrap(), "{export}");
    for key in ["space", "quota", "range", "lease_max", "device"] {
        assert!(export.get(key).is_some(), "no {key} in {export}");
    }
    (export, pasids)
}

/// `pasidctl reserve --vm VM --from FILE [--hold S]` on `daemon` with
/// `export`; returns its exit code, stdout and stderr.
fn reserve(
    daemon: &Daemon,
    vm: &str,
    export: &Value,
    hold: Option<u32>,
) -> (Option<i32>, String, String) {
    let file = daemon.dir().join(format!("{vm}.export.json"));
    fs::write(&file, export.to_string()).unwrap();
    let file = file.to_string_lossy();
    let hold = hold.map(|h| h.to_string());
    let mut args = vec!["reserve", "--vm", vm, "--from", &file];
    if let Some(hold) = &hold {
        args.extend(["--hold", hold]);
    }
    daemon.pasidctl_status(&args).unwrap()
}

/// Reserves `export` on `daemon`, which must succeed: `pasidctl vms`
/// shows the VM reserved with exactly those PASIDs.
fn reserve_ok(
    daemon: &Daemon,
    vm: &str,
    export: &Value,
    pasids: &BTreeSet<u32>,
    hold: Option<u32>,
) {
    let (code, out, err) = reserve(daemon, vm, export, hold);
    assert_eq!(code, Some(0), "reserve: {out} {err}");
    assert_eq!(&daemon.vm_pasids(vm).unwrap(), pasids);
    let host = vm_json(daemon, vm);
    assert!(is_reserved(&host), "{host}");
}

/// A QEMU's QMP socket, and the migration socket beside it (which the
/// QEMU sees: its directory is bound into its mount namespace).
#[derive(Debug, Clone)]
struct Qemu {
    qmp: PathBuf,
}

impl Qemu {
    fn qmp(&self) -> Qmp {
        Qmp::connect(&self.qmp, CMD).unwrap()
    }

    fn migration_uri(&self) -> (PathBuf, String) {
        let path = self.qmp.with_extension("migrate");
        let uri = format!("unix:{}", path.display());
        (path, uri)
    }
}

/// The destination QEMU `name` of `guest` (its config `source`): the same
/// machine, a QMP socket in `daemon`'s directory, and the directories of
/// `daemon`'s sockets and of `from`'s migration socket bound.
fn incoming_config(
    source: &GuestConfig,
    name: &str,
    daemon: &Daemon,
    from: &Qemu,
) -> (GuestConfig, Qemu) {
    let qmp = daemon.dir().join(format!("{name}.qmp"));
    let mut config = source.clone();
    config.name = name.to_string();
    config.extra_qemu_args = vec![
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    config.bind_dirs.push(daemon.dir().to_path_buf());
    if let Some(dir) = from.qmp.parent() {
        config.bind_dirs.push(dir.to_path_buf());
    }
    (config, Qemu { qmp })
}

/// Sets the source's migration bandwidth cap.
fn set_bandwidth(from: &Qemu, bytes_per_s: u64) {
    from.qmp()
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": bytes_per_s})),
        )
        .unwrap();
}

/// Starts the destination QEMU and `migrate`s `from` to it.
fn start_migration(config: GuestConfig, from: &Qemu) -> Guest {
    let (path, uri) = from.migration_uri();
    let _ = fs::remove_file(&path);
    let incoming = Guest::start_incoming(config, &uri).unwrap();
    // QEMU listens there once it has set the machine up; a probe must not
    // connect (the first connection is the migration).
    qemu_tests::wait_for_unix_listener(&path, CMD).unwrap();
    from.qmp()
        .execute("migrate", Some(json!({"uri": uri})))
        .unwrap();
    incoming
}

/// Migrates `guest` from `from` to a new QEMU (`config`, `to`): `guest`
/// then runs there (the source QEMU, paused, is returned). Checks that the
/// migration completed and the destination runs.
fn migrate(guest: &mut Guest, from: &Qemu, config: GuestConfig, to: &Qemu) -> (Migration, Guest) {
    set_bandwidth(from, FAST_BANDWIDTH);
    let incoming = start_migration(config, from);
    let done = from.qmp().wait_migration(MIGRATE, |_| {}).unwrap();
    assert_eq!(done.status, "completed", "{done:?}");
    let mut qmp = to.qmp();
    let started = Instant::now();
    loop {
        let status = qmp.execute("query-status", None).unwrap();
        if status["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < CMD, "destination {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let source = guest.adopt(incoming);
    (done, source)
}

/// `quit`s the paused source QEMU and returns when it has exited.
fn quit_source(mut source: Guest, from: &Qemu) -> Instant {
    // QEMU may close the monitor before it answers `quit`.
    let _ = from.qmp().execute("quit", None);
    let status = source.wait_exit(CMD).unwrap();
    let exited = Instant::now();
    assert!(status.success(), "source QEMU: {status}");
    exited
}

/// Waits until `daemon` holds nothing for `vm`; returns when it saw that.
fn wait_released(daemon: &Daemon, vm: &str, timeout: Duration) -> Instant {
    let started = Instant::now();
    loop {
        let host = vm_json(daemon, vm);
        if host["held"] == 0 {
            return Instant::now();
        }
        assert!(started.elapsed() < timeout, "{vm} still holds: {host}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the driver has resumed `n` times since boot ("resumed
/// with" lines) and is active; returns the time from the last hot-plugged
/// device's PCI line to its "resumed with" line (guest clock) and the last
/// RECONCILE summary.
fn wait_resumes(guest: &mut Guest, n: usize) -> (Duration, String) {
    let reconciled = common::wait_resumes(guest, n);
    let resumed = guest.wait_for_dmesg("resumed with", CMD).unwrap();
    let plugged = guest.wait_for_dmesg("[1af4:1065]", CMD).unwrap();
    let secs = dmesg_time(&resumed) - dmesg_time(&plugged);
    assert!(secs >= 0.0, "{plugged} after {resumed}");
    (Duration::from_secs_f64(secs), reconciled)
}

/// What the guest's allocation loop saw.
#[derive(Debug)]
struct Churn {
    /// Allocations that succeeded (each then found and freed).
    allocated: u64,
    /// Allocations that failed.
    failed: u64,
    /// Guest uptime of the first and last failure.
    failing: Option<(f64, f64)>,
    /// Guest uptime of the loop's first and last line.
    span: (f64, f64),
    /// Every ID it was given.
    ids: BTreeSet<u32>,
}

/// Starts the guest's allocation loop in the background: exerciser
/// `alloc LO HI 0`, then `find` (must be `ok 0`) and `free` (must be
/// `ok`) of the ID, one line per round with the guest's uptime, until
/// `CHURN.stop` exists. It owns the exerciser until [`stop_churn`].
fn start_churn(guest: &mut Guest) {
    // Shell built-ins only (read, echo, test): no fork per round.
    let script = format!(
        "rm -f {CHURN}.*; ( while [ ! -e {CHURN}.stop ]; do \
         echo 'alloc {LO} {HI} 0' > {EXERCISER_CTL}; read -r r < {EXERCISER_CTL}; \
         read -r t _ < /proc/uptime; \
         case \"$r\" in 'ok '*) id=${{r#ok }}; \
         echo \"find $id\" > {EXERCISER_CTL}; read -r f < {EXERCISER_CTL}; \
         echo \"free $id\" > {EXERCISER_CTL}; read -r x < {EXERCISER_CTL}; \
         if [ \"$f\" = 'ok 0' ] && [ \"$x\" = ok ]; then s=good; else s=bad; fi; \
         echo \"$t A $id $s\";; *) echo \"$t F $r\";; esac; done; touch {CHURN}.done ) \
         </dev/null >{CHURN}.log 2>&1 &"
    );
    guest.run_ok(&script, CMD).unwrap();
}

/// Stops the loop and reads what it saw; fails on a lookup or free error
/// or a line that is not the loop's.
fn stop_churn(guest: &mut Guest) -> Churn {
    guest
        .run_ok(
            &format!(
                "touch {CHURN}.stop; i=0; while [ ! -e {CHURN}.done ] && [ $i -lt 600 ]; \
                 do sleep 0.1; i=$((i + 1)); done; test -e {CHURN}.done"
            ),
            CMD,
        )
        .unwrap();
    let summary = guest
        .run_ok(
            &format!(
                "awk 'NR == 1 {{ first = $1 }} {{ last = $1 }} \
                 $2 == \"A\" {{ a++; if ($4 != \"good\") bad++; next }} \
                 $2 == \"F\" {{ f++; if (ff == \"\") ff = $1; lf = $1; next }} \
                 {{ other++ }} \
                 END {{ printf \"%d %d %d %d %s %s %s %s\\n\", a, f, bad, other, \
                 first, last, (ff == \"\" ? \"-\" : ff), (lf == \"\" ? \"-\" : lf) }}' {CHURN}.log"
            ),
            CMD,
        )
        .unwrap();
    let fields: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(fields.len(), 8, "{summary}");
    let num = |i: usize| fields[i].parse::<u64>().unwrap();
    let time = |i: usize| fields[i].parse::<f64>().ok();
    assert_eq!(
        (num(2), num(3)),
        (0, 0),
        "bad rounds, other lines: {summary}"
    );
    let ids = guest
        .run_ok(
            &format!("awk '$2 == \"A\" {{ print $3 }}' {CHURN}.log | sort -un"),
            CMD,
        )
        .unwrap()
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect();
    Churn {
        allocated: num(0),
        failed: num(1),
        failing: time(6).zip(time(7)),
        span: (time(4).unwrap(), time(5).unwrap()),
        ids,
    }
}

/// X's PASIDs on `daemon` once its driver's lease work is idle, after
/// checking that host and guest agree and the guest still resolves each
/// of `in_use`.
fn settled_holdings(guest: &mut Guest, daemon: &Daemon, in_use: &BTreeSet<u32>) -> BTreeSet<u32> {
    wait_lease_settled(guest, daemon, "vmA", CMD).unwrap();
    let held = daemon.vm_pasids("vmA").unwrap();
    assert!(
        held.is_superset(in_use),
        "{held:?} lacks some of {in_use:?}"
    );
    assert_guest_knows(guest, in_use, &BTreeSet::new());
    held
}

fn migrations_keep_every_pasid(kernel: Kernel) {
    let a = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new("vmA").range(LO, HI))
            .state_dir("state")
            .test_name(format!("{}-A", thread_name())),
    )
    .unwrap();
    let mut b = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new("vmA").range(LO, HI))
            .vm(VmSlot::new("vmY").range(LO, HI))
            .state_dir("state")
            .test_name(format!("{}-B", thread_name())),
    )
    .unwrap();
    let (config_x, qmp_x) = qmp_guest_config(kernel, &a, "vmA");
    let config_x = config_x.memory_mib(MEMORY_MIB);
    let config_y = common::guest_config(kernel, &b, "vmY").memory_mib(MEMORY_MIB);
    let mut guests = common::boot_in_parallel(vec![config_x.clone(), config_y], prepare);
    let mut y = guests.pop().unwrap();
    let mut x = guests.pop().unwrap();
    let mut figures = Vec::new();

    // X holds PASIDs in use and a lease cache on A; Y holds some on B.
    let in_use: BTreeSet<u32> = (0..HELD)
        .map(|_| x.alloc(LO, HI, 0).unwrap().expect("X alloc"))
        .collect();
    let y_first: BTreeSet<u32> = (0..HELD)
        .map(|_| y.alloc(LO, HI, 0).unwrap().expect("Y alloc"))
        .collect();
    let held = settled_holdings(&mut x, &a, &in_use);
    assert!(held.len() > in_use.len(), "no lease cache: {held:?}");
    let source = Qemu { qmp: qmp_x };
    let mut resumes = 0;

    // 2. A conflicting holder on B: reserve names it, reserves nothing;
    // X goes back to A and keeps everything.
    let (report, took) = detach(&a, "vmA", &source.qmp, &[]);
    let (exported, pasids) = export(&a, "vmA");
    assert_eq!(pasids, held);
    // Y holds, on B, the lowest PASIDs of the range, as X does on A.
    let blocked: BTreeSet<u32> = b
        .vm_pasids("vmY")
        .unwrap()
        .intersection(&pasids)
        .copied()
        .collect();
    assert!(!blocked.is_empty(), "Y {y_first:?}, X {pasids:?}");
    let (code, out, err) = reserve(&b, "vmA", &exported, None);
    assert_eq!(code, Some(1), "reserve with conflicts: {out} {err}");
    for id in &blocked {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("PASID {id} is held by")) && l.contains("vmY")),
            "conflict {id} not named: {err}"
        );
    }
    assert!(b.vm_pasids("vmA").unwrap().is_empty(), "reserved something");
    assert!(!is_reserved(&vm_json(&b, "vmA")));
    let back = attach_kept(&a, "vmA", &source.qmp, held.len(), 0);
    resumes += 1;
    let (to_active, _) = wait_resumes(&mut x, resumes);
    // Y lets go of everything on B (unloading the driver gives back its
    // cache too), and takes PASIDs again after X has moved there.
    y.free_all().unwrap();
    y.run_ok("rmmod virtio_pasid", CMD).unwrap();
    assert!(b.vm_pasids("vmY").unwrap().is_empty());
    figures.push(format!(
        "2 conflict: detach {}ms ({took:?} wall), reserve exit 1 naming {} PASIDs of vmY \
         ({blocked:?}): {}; re-attach on A {back}, device_add to active {to_active:?} (guest \
         clock)",
        report["unplug_ms"],
        blocked.len(),
        err.trim().replace('\n', " | ")
    ));

    // 3. The destination dies during the migration: the source re-attaches
    // and keeps everything; B's reservation expires.
    let held = settled_holdings(&mut x, &a, &in_use);
    let (report, took) = detach(&a, "vmA", &source.qmp, &[]);
    let (exported, pasids) = export(&a, "vmA");
    assert_eq!(pasids, held);
    let reserved_at = Instant::now();
    reserve_ok(&b, "vmA", &exported, &pasids, Some(SHORT_HOLD_S));
    let (config, _) = incoming_config(&config_x, "vmA-b-failed", &b, &source);
    set_bandwidth(&source, SLOW_BANDWIDTH);
    let mut incoming = start_migration(config, &source);
    let mut killed = false;
    let mut sent = 0;
    let failed = source
        .qmp()
        .wait_migration(MIGRATE, |status| {
            sent = sent.max(status["ram"]["transferred"].as_u64().unwrap_or(0));
            if !killed && status["status"] == "active" && sent > 0 {
                incoming.kill().unwrap();
                killed = true;
            }
        })
        .unwrap();
    assert!(killed, "the migration ended before the kill: {failed:?}");
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert!(x.is_running());
    let back = attach_kept(&a, "vmA", &source.qmp, held.len(), 0);
    resumes += 1;
    let (to_active, _) = wait_resumes(&mut x, resumes);
    let expired = wait_released(&b, "vmA", Duration::from_secs(u64::from(SHORT_HOLD_S) + 30));
    let lasted = expired - reserved_at;
    assert!(
        lasted >= Duration::from_secs(u64::from(SHORT_HOLD_S) - 1),
        "expired after {lasted:?}"
    );
    assert!(!is_reserved(&vm_json(&b, "vmA")));
    figures.push(format!(
        "3 failed migration: detach {}ms ({took:?} wall), migrate failed ({:?}) after {} bytes sent; \
         re-attach on A {back}, device_add to active {to_active:?}; B's {SHORT_HOLD_S} s \
         reservation gone after {lasted:?}",
        report["unplug_ms"], failed.error, sent
    ));

    // 1 and 5. The migration, the guest allocating throughout.
    settled_holdings(&mut x, &a, &in_use);
    start_churn(&mut x);
    let (report, took) = detach(&a, "vmA", &source.qmp, &[]);
    let (exported, pasids) = export(&a, "vmA");
    reserve_ok(&b, "vmA", &exported, &pasids, None);
    let (config, dest) = incoming_config(&config_x, "vmA-b", &b, &source);
    let (done, old) = migrate(&mut x, &source, config, &dest);
    // The loop holds at most one PASID at a time: one it frees while the
    // device is gone may be missing from the RECONCILE.
    let attached = attach_kept(&b, "vmA", &dest.qmp, pasids.len(), 1);
    resumes += 1;
    let (to_active, reconciled) = wait_resumes(&mut x, resumes);
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {} kept, 0 re-granted, 0 conflict(s)",
            attached["kept"]
        )),
        "{reconciled}"
    );
    let churn = stop_churn(&mut x);
    assert!(churn.allocated > 0, "{churn:?}");
    // With a lease cache no allocation fails: draining, the driver serves
    // from the cache it kept; resuming, from what the RECONCILE names.
    assert_eq!(
        churn.failed, 0,
        "allocations failed in the window: {churn:?}"
    );
    assert!(
        churn.ids.iter().all(|id| (LO..=HI).contains(id)),
        "{churn:?}"
    );
    assert!(
        churn.ids.is_disjoint(&in_use),
        "handed out twice: {churn:?}"
    );
    // The source daemon still holds X's PASIDs for the paused source QEMU;
    // its exit releases them, with no operator command.
    assert_eq!(a.vm_pasids("vmA").unwrap(), pasids);
    let exited = quit_source(old, &source);
    let released = wait_released(&a, "vmA", CMD);
    let release_took = released.saturating_duration_since(exited);
    assert!(a.pasids().unwrap().is_empty());
    let held = settled_holdings(&mut x, &b, &in_use);
    let new = x
        .alloc(LO, HI, 0)
        .unwrap()
        .expect("alloc after the migration");
    assert!(!in_use.contains(&new), "{new}");
    x.free(new).unwrap();
    // Y's driver again: its PASIDs on B are none of X's.
    prepare(&mut y).unwrap();
    let y_held: BTreeSet<u32> = (0..HELD)
        .map(|_| y.alloc(LO, HI, 0).unwrap().expect("Y alloc"))
        .collect();
    let x_on_b = b.vm_pasids("vmA").unwrap();
    assert!(b.vm_pasids("vmY").unwrap().is_disjoint(&x_on_b));
    let failing = churn.failing.map_or("none".to_string(), |(from, to)| {
        format!("from {from} to {to} ({:.3} s, guest clock)", to - from)
    });
    figures.push(format!(
        "1+5 migration: detach {}ms ({took:?} wall), migrate total {:?} ms downtime {:?} ms \
         ({} bytes), attach {attached}, device_add to active {to_active:?} (guest clock); \
         loop {} allocations, {} failed, failures {failing}, over {:.1} s; source exit to \
         released on A {release_took:?}",
        report["unplug_ms"],
        done.total_ms,
        done.downtime_ms,
        done.transferred,
        churn.allocated,
        churn.failed,
        churn.span.1 - churn.span.0
    ));

    // 4. Same-host migration on B: the hold-over keeps the PASIDs while
    // the destination attaches to the same slot; the source's exit after
    // that changes nothing.
    let mut current = dest;
    let mut held = held;
    for (step, keep) in [("4 same host", false), ("4 same host, --keep", true)] {
        let extra: &[&str] = if keep { &["--keep"] } else { &[] };
        let (report, took) = detach(&b, "vmA", &current.qmp, extra);
        let name = format!("vmA-b{}", if keep { 3 } else { 2 });
        let (config, dest) = incoming_config(&config_x, &name, &b, &current);
        let (done, old) = migrate(&mut x, &current, config, &dest);
        let mut old = Some(old);
        if let Some(old) = old.take_if(|_| keep) {
            // libvirt's order: the source QEMU exits before the
            // destination attaches; --keep unbound the hold-over from it.
            quit_source(old, &current);
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(b.vm_pasids("vmA").unwrap(), held, "{step}");
        }
        let attached = attach_kept(&b, "vmA", &dest.qmp, held.len(), 0);
        resumes += 1;
        let (to_active, _) = wait_resumes(&mut x, resumes);
        if let Some(old) = old {
            quit_source(old, &current);
        }
        held = settled_holdings(&mut x, &b, &in_use);
        assert_eq!(vm_json(&b, "vmA")["connected"], true);
        figures.push(format!(
            "{step}: detach {}ms ({took:?} wall), migrate total {:?} ms downtime {:?} ms, \
             attach {attached}, device_add to active {to_active:?}",
            report["unplug_ms"], done.total_ms, done.downtime_ms
        ));
        current = dest;
    }

    // 6. B crashes; Y's QEMU dies while B is down: Y's PASIDs are released
    // at start-up, X's kept, and X resumes by detach + attach.
    y.check_health().unwrap();
    assert!(b.vm_pasids("vmY").unwrap().is_superset(&y_held));
    b.kill().unwrap();
    y.kill().unwrap();
    let mark = b.log_mark();
    b.restart().unwrap();
    wait_released(&b, "vmY", CMD);
    let log = b.log();
    assert!(
        log[mark..]
            .lines()
            .any(|l| l.contains("vm=vmY event=qemu-exited") && l.contains("at_start=true")),
        "no start-up release of vmY logged: {}",
        &log[mark..]
    );
    assert_eq!(b.vm_pasids("vmA").unwrap(), held);
    let (_, took) = detach(&b, "vmA", &current.qmp, &[]);
    let attached = attach_kept(&b, "vmA", &current.qmp, held.len(), 0);
    resumes += 1;
    let (to_active, _) = wait_resumes(&mut x, resumes);
    settled_holdings(&mut x, &b, &in_use);
    let new = x
        .alloc(LO, HI, 0)
        .unwrap()
        .expect("alloc after the restart");
    assert!(!in_use.contains(&new), "{new}");
    x.free(new).unwrap();
    figures.push(format!(
        "6 start-up release: vmY released, vmA kept {}; detach {took:?}, attach {attached}, \
         device_add to active {to_active:?}",
        held.len()
    ));

    common::finish(x);
    for line in figures {
        eprintln!("{kernel}: {line}");
    }
}

/// The current test's name (for the two daemons' log names).
fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("migration")
        .to_string()
}
