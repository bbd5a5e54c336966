// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Start-up of the real daemon on a large durable state, beside the same
//! start-up on an empty state directory, both in the same run.
//!
//! The state is built with the library, as the daemon would have written
//! it: 1,000 VMs (`vm0..vm999`, the names `--socket-path DIR/vm
//! --socket-count 1000` gives them) configured with the daemon's limits,
//! then 2^20 - 1 PASIDs (the whole space) allocated round-robin across
//! them, then `Journal::start` writes the snapshot. A second variant adds
//! what a crash can leave on top of it: a journal filled up to its default
//! compaction limit (64 MiB of 64-request batches, 32 FREE + 32 ALLOC each,
//! so the space stays full), every record of which start-up replays.
//!
//! Each start runs on a fresh copy of the directory (start-up rewrites the
//! state), with its files in the page cache: a daemon restart, not a host
//! boot. It is timed from spawning the daemon until its control socket
//! answers `pasidctl --json stats` with the full count; the daemon's own
//! `event=state-loaded ... ms=` figure is printed beside it. Then the
//! library's start-up steps are timed one by one on the same state, in this
//! process, to show where the time goes.
//!
//! Run: `cargo bench -p vhost-user-pasid --bench state`
//! (`VPASID_BENCH_QUICK=1`, or no `--bench`, for a smaller state: 2^16 - 1
//! PASIDs, a 1 MiB journal, one start each).

// Benchmark tooling, like a test: failing loudly is the right behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

#[path = "../tests/frontend/mod.rs"]
mod frontend;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontend::Daemon;
use pasid_protocol::PasidList;
use pasid_protocol::{Request, Status};
use vhost_user_pasid::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
use vhost_user_pasid::registry::{Registry, VmId};
use vhost_user_pasid::state::{Journal, Recovery, StateFiles, DEFAULT_JOURNAL_LIMIT};

/// VM slots, as `--socket-count` names them.
const VMS: usize = 1000;
/// `--quota` of every VM: above 2^20 / 1000, so the whole space fits.
const QUOTA: u32 = 2048;
/// Start-up target on the large state.
const TARGET: Duration = Duration::from_secs(2);

/// The limits `--quota QUOTA` (and the default range) give each VM, so
/// that start-up finds the command line unchanged.
fn limits() -> OwnerLimits {
    OwnerLimits {
        quota: QUOTA,
        range: 1..=u32::MAX,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A state directory on a real disk: the system temp dir unless it is
/// tmpfs/ramfs, else one under the target directory.
fn disk_tempdir() -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    let c = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    if magic == 0x0102_1994 || magic == 0x8584_58f6 {
        tempfile::tempdir_in(frontend::bin("")).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// What went into a built state.
struct Built {
    pasids: u64,
    snapshot_bytes: u64,
    journal_bytes: u64,
    frames: u64,
    answers: u64,
    build: Duration,
}

/// Writes a state of `pasids` PASIDs across [`VMS`] VMs into `dir`, plus
/// journal frames until the journal holds `journal_bytes`.
fn build_state(dir: &Path, pasids: u32, journal_bytes: u64) -> Built {
    let started = Instant::now();
    let space = PasidSpace::new(SpaceConfig::default()).unwrap();
    let mut reg = Registry::new(space, 1);
    let vms: Vec<VmId> = (0..VMS)
        .map(|i| {
            reg.configure_vm(&format!("vm{i}"), "bench", limits())
                .unwrap()
        })
        .collect();
    let mut held: Vec<VecDeque<u32>> = vec![VecDeque::new(); VMS];
    for k in 0..pasids {
        let i = k as usize % VMS;
        let tag = u64::from(k);
        let r = reg.handle(
            vms[i],
            Request::Alloc {
                tag,
                min: 1,
                max: 0xfffff,
            },
        );
        assert_eq!(Status::from_wire(r.status), Some(Status::Ok), "{r:?}");
        held[i].push_back(r.pasid);
    }
    let files = StateFiles::open(dir).unwrap();
    let journal =
        Arc::new(Journal::start(files, &reg.image(), 1, 0, DEFAULT_JOURNAL_LIMIT).unwrap());
    reg.attach_change_log(journal);
    let journal_path = dir.join("journal");
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    let snapshot_bytes = len(&dir.join("snapshot.0"));

    // A crash's worth of journal: every VM in turn frees 32 of its PASIDs
    // and allocates 32 (the lowest free: the same ones), 4 VMs per frame.
    let mut positions = vec![0u16; VMS];
    let (mut frames, mut answers, mut tag) = (0u64, 0u64, u64::from(pasids));
    let mut i = 0;
    while len(&journal_path) < journal_bytes {
        let mut point = None;
        for _ in 0..4 {
            let vm = vms[i];
            let freed: Vec<u32> = (0..32).map(|_| held[i].pop_front().unwrap()).collect();
            let mut requests: Vec<Request> = Vec::with_capacity(64);
            for &pasid in &freed {
                tag += 1;
                requests.push(Request::Free { tag, pasid });
            }
            for _ in 0..32 {
                tag += 1;
                requests.push(Request::Alloc {
                    tag,
                    min: 1,
                    max: 0xfffff,
                });
            }
            for request in requests {
                let r = reg
                    .answer(vm, positions[i], request, &PasidList::default())
                    .response;
                positions[i] = positions[i].wrapping_add(1);
                assert_eq!(Status::from_wire(r.status), Some(Status::Ok), "{r:?}");
                if let Request::Alloc { .. } = request {
                    held[i].push_back(r.pasid);
                }
                answers += 1;
            }
            point = reg.end_batch(vm);
            i = (i + 1) % VMS;
        }
        point.unwrap().wait();
        frames += 1;
    }
    assert_eq!(reg.stats().space.allocated, u64::from(pasids));
    Built {
        pasids: u64::from(pasids),
        snapshot_bytes,
        journal_bytes: len(&journal_path),
        frames,
        answers,
        build: started.elapsed(),
    }
}

/// A fresh copy of the state in `master` (the daemon rewrites what it
/// starts on).
fn copy_state(master: &Path, into: &Path) -> PathBuf {
    let dir = into.join("state");
    std::fs::create_dir(&dir).unwrap();
    for name in ["snapshot.0", "snapshot.1", "journal"] {
        let from = master.join(name);
        if from.exists() {
            std::fs::copy(&from, dir.join(name)).unwrap();
        }
    }
    dir
}

/// One timed daemon start.
struct Start {
    /// Spawn until `pasidctl --json stats` answered with the full count.
    wall: Duration,
    /// The daemon's `event=state-loaded ... ms=` figure.
    logged_ms: u64,
    allocated: u64,
    vms: u64,
    owners: u64,
}

/// Starts the daemon on `state` with [`VMS`] slots and waits until its
/// control socket reports `expect` PASIDs allocated.
fn timed_start(state: &Path, expect: u64) -> Start {
    let count = VMS.to_string();
    let quota = QUOTA.to_string();
    let state_arg = state.display().to_string();
    let t = Instant::now();
    let daemon = Daemon::start(&[
        "--socket-path",
        "{dir}/vm",
        "--socket-count",
        &count,
        "--quota",
        &quota,
        "--state-dir",
        &state_arg,
    ]);
    let deadline = t + Duration::from_secs(60);
    let stats = loop {
        let (ok, out, _) = daemon.ctl(&["--json", "stats"]);
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if v["space"]["allocated"].as_u64() == Some(expect) {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "daemon not ready within 60 s\n{}",
            daemon.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall = t.elapsed();
    let log = daemon.wait_log("event=state-loaded");
    let line = log
        .lines()
        .find(|l| l.contains("event=state-loaded"))
        .unwrap();
    let logged_ms = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ms="))
        .unwrap()
        .parse()
        .unwrap();
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    Start {
        wall,
        logged_ms,
        allocated: stats["space"]["allocated"].as_u64().unwrap(),
        vms: stats["vms"].as_u64().unwrap(),
        owners: stats["space"]["owners"].as_u64().unwrap(),
    }
}

/// `runs` starts on fresh copies of `master`; the median by wall time.
fn median_start(master: &Path, expect: u64, runs: usize) -> (Start, Duration, Duration) {
    let mut starts: Vec<Start> = (0..runs)
        .map(|_| {
            let scratch = disk_tempdir();
            let state = copy_state(master, scratch.path());
            timed_start(&state, expect)
        })
        .collect();
    starts.sort_by_key(|s| s.wall);
    let (lo, hi) = (starts[0].wall, starts[runs - 1].wall);
    (starts.swap_remove(runs / 2), lo, hi)
}

/// The daemon's start-up steps, one by one, on a copy of `master`.
struct Steps {
    open: Duration,
    load: Duration,
    restore: Duration,
    replay: Duration,
    configure: Duration,
    image: Duration,
    journal_start: Duration,
    records: usize,
}

fn library_steps(master: &Path) -> Steps {
    let scratch = disk_tempdir();
    let dir = copy_state(master, scratch.path());
    let t = Instant::now();
    let files = StateFiles::open(&dir).unwrap();
    let open = t.elapsed();
    let t = Instant::now();
    let loaded = files.load().unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let space = PasidSpace::new(SpaceConfig::default()).unwrap();
    let mut recovery = Recovery::from_image(space, 1, &loaded.image).unwrap();
    let restore = t.elapsed();
    let t = Instant::now();
    let mut records = 0;
    for commit in &loaded.commits {
        for record in &commit.records {
            recovery.apply(record).unwrap();
            records += 1;
        }
    }
    let replay = t.elapsed();
    let t = Instant::now();
    let (space, space_id, vms) = recovery.into_parts();
    let mut reg = Registry::restored(space, space_id, vms);
    for i in 0..VMS {
        reg.configure_vm(&format!("vm{i}"), "bench", limits())
            .unwrap();
    }
    let configure = t.elapsed();
    let t = Instant::now();
    let image = reg.image();
    let image_time = t.elapsed();
    let t = Instant::now();
    let slot = loaded.slot ^ usize::from(loaded.generation > 0);
    let journal = Journal::start(
        files,
        &image,
        loaded.generation + 1,
        slot,
        DEFAULT_JOURNAL_LIMIT,
    )
    .unwrap();
    let journal_start = t.elapsed();
    drop(journal);
    Steps {
        open,
        load,
        restore,
        replay,
        configure,
        image: image_time,
        journal_start,
        records,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a test.
    let quick = std::env::var_os("VPASID_BENCH_QUICK").is_some()
        || std::env::args().all(|a| a != "--bench");
    let (pasids, journal_bytes, runs) = if quick {
        ((1u32 << 16) - 1, 1u64 << 20, 1)
    } else {
        ((1u32 << 20) - 1, DEFAULT_JOURNAL_LIMIT, 3)
    };

    let empty = disk_tempdir();
    let large = disk_tempdir();
    let crashed = disk_tempdir();
    let snap = build_state(large.path(), pasids, 0);
    let full = build_state(crashed.path(), pasids, journal_bytes);

    let (base, base_lo, base_hi) = median_start(empty.path(), 0, runs);
    let (big, big_lo, big_hi) = median_start(large.path(), snap.pasids, runs);
    let (jour, jour_lo, jour_hi) = median_start(crashed.path(), full.pasids, runs);
    for (name, s, expect) in [
        ("empty", &base, 0),
        ("large", &big, snap.pasids),
        ("large + journal", &jour, full.pasids),
    ] {
        assert_eq!(s.allocated, expect, "{name}: PASIDs restored");
        assert_eq!(s.vms, VMS as u64, "{name}: VMs");
        assert_eq!(s.owners, VMS as u64, "{name}: owners");
    }

    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!(
        "vhost-user-pasid start-up with --state-dir, {VMS} VMs (--socket-count {VMS}), \
         this machine, same run"
    );
    println!(
        "wall = spawn until `pasidctl --json stats` answers with every PASID; \
         median of {runs} start{} (min-max); log = the daemon's event=state-loaded ms",
        if runs == 1 { "" } else { "s" }
    );
    println!(
        "{:<52} {:>9} {:>17} {:>8}",
        "", "wall (ms)", "min-max (ms)", "log (ms)"
    );
    let row = |label: &str, s: &Start, lo: Duration, hi: Duration| {
        println!(
            "{:<52} {:>9.0} {:>17} {:>8}",
            label,
            ms(s.wall),
            format!("{:.0}-{:.0}", ms(lo), ms(hi)),
            s.logged_ms
        );
    };
    row("baseline: empty state dir", &base, base_lo, base_hi);
    row(
        &format!(
            "{} PASIDs, snapshot {:.1} MiB",
            big.allocated,
            mib(snap.snapshot_bytes)
        ),
        &big,
        big_lo,
        big_hi,
    );
    row(
        &format!(
            "  + journal {:.1} MiB ({} frames, {} answers)",
            mib(full.journal_bytes),
            full.frames,
            full.answers
        ),
        &jour,
        jour_lo,
        jour_hi,
    );
    println!(
        "large / empty = {:.2}x, large + journal / empty = {:.2}x; \
         start-up on {} PASIDs = {:.0} ms, with a full journal {:.0} ms (target < {} ms)",
        big.wall.as_secs_f64() / base.wall.as_secs_f64(),
        jour.wall.as_secs_f64() / base.wall.as_secs_f64(),
        big.allocated,
        ms(big.wall),
        ms(jour.wall),
        TARGET.as_millis()
    );
    println!(
        "restored: {} PASIDs allocated, {} VMs, {} owners (built in {:.1} s and {:.1} s)",
        big.allocated,
        big.vms,
        big.owners,
        snap.build.as_secs_f64(),
        full.build.as_secs_f64()
    );

    println!();
    println!("the same start-up steps in this process (ms)");
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>8} {:>7}",
        "", "open", "load", "restore", "replay", "configure", "image", "Journal", "total"
    );
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>8} {:>7}",
        "", "", "", "", "", "", "", "::start", ""
    );
    let mut gaps = Vec::new();
    for (label, master, daemon) in [
        ("empty state dir", empty.path(), &base),
        ("large, snapshot", large.path(), &big),
        ("large + journal", crashed.path(), &jour),
    ] {
        let s = library_steps(master);
        let parts = [
            s.open,
            s.load,
            s.restore,
            s.replay,
            s.configure,
            s.image,
            s.journal_start,
        ];
        let total: Duration = parts.iter().sum();
        println!(
            "{:<34} {:>7.1} {:>7.1} {:>8.1} {:>7.1} {:>9.1} {:>7.1} {:>8.1} {:>7.1}",
            format!("{label} ({} records)", s.records),
            ms(s.open),
            ms(s.load),
            ms(s.restore),
            ms(s.replay),
            ms(s.configure),
            ms(s.image),
            ms(s.journal_start),
            ms(total)
        );
        gaps.push((
            label,
            daemon.logged_ms as f64 - ms(total),
            ms(daemon.wall) - daemon.logged_ms as f64,
        ));
    }
    println!(
        "open = StateFiles::open; load = StateFiles::load (read, decode); restore = \
         Recovery::from_image; replay = Recovery::apply of every journal record; configure = \
         Registry::restored, then Registry::configure_vm x {VMS}; image = Registry::image; Journal::start = encode, \
         write and sync the new snapshot, empty the journal"
    );
    for (label, inside, outside) in gaps {
        println!(
            "{label}: the daemon's state-loaded ms differs from these steps by {inside:.0} ms; \
             wall exceeds it by {outside:.0} ms (exec, binding {VMS} sockets, threads, \
             seccomp, pasidctl)"
        );
    }
}
