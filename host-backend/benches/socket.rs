// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Requests over the real vhost-user socket, beside the floor measured in the
//! same run; then the same workload with durable state (`--state-dir`)
//! beside the same workload in memory, also in the same run.
//!
//! The floor is an eventfd ping-pong between two threads: the least a
//! request can cost when the guest kicks and then waits for the device's
//! call. The daemon is the release binary, serving test VMs that play QEMU
//! and the guest driver (memfd memory, real vrings, eventfds).
//!
//! Durability: a second daemon, started with `--state-dir` on a real disk
//! (never tmpfs: the bench checks), journals and fdatasyncs every answer
//! before it is put on the used ring. Group commit shares one sync among
//! everything appended by all VMs since the last one, so it pays off only
//! with several VMs in flight: one VM in closed loop pays a whole sync per
//! kick. Each row runs the same workload on both daemons, alternating
//! between them [`ROUNDS`] times so that both see the same noise, with
//! 1 to 16 VMs in parallel, each on its own thread and slot, in closed loop;
//! the "64 per kick" target is read from the row of [`TARGET_VMS`] VMs.
//! After each row the bench reads the journal back and counts the frames
//! written (one fdatasync each) and the answers they carried.
//!
//! About half the VMs share each sync: the VMs a sync releases are still
//! turning around (reading answers, posting, kicking, the daemon answering)
//! when the next sync starts with what arrived during the previous one, so
//! the VMs fall into two cohorts that alternate.
//!
//! Run: `cargo bench -p vhost-user-pasid --bench socket`
//! (`VPASID_BENCH_QUICK=1` for a short smoke run).

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

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use frontend::{Daemon, TestVm, VmOptions};
use pasid_protocol::{Request, Status};
use vhost_user_pasid::registry::record::Record;
use vhost_user_pasid::state::codec::{
    decode_journal_header, get_records, read_commit, JOURNAL_HEADER_LEN,
};
use vmm_sys_util::eventfd::EventFd;

/// Durability rows: (requests per kick, VMs in parallel).
const ROWS: &[(usize, usize)] = &[(1, 1), (1, 8), (64, 1), (64, 2), (64, 4), (64, 8), (64, 16)];
/// Each row alternates between the two daemons this many times.
const ROUNDS: usize = 4;
/// Most VMs of any row: each daemon has this many slots.
const MAX_VMS: usize = 16;
/// The row the target is read from (64 per kick).
const TARGET_VMS: usize = 8;

/// Journal size past which the durable daemon compacts. Raised above what
/// a run writes so that every frame stays in the journal to be counted;
/// compacting this state (a few hundred PASIDs) costs three syncs per
/// 64 MiB (~1.5 M answers) at the default limit, which is noise here.
const JOURNAL_LIMIT: &str = "4294967296";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn summarise(mut samples: Vec<Duration>, requests_per_sample: usize) -> Figures {
    let total: Duration = samples.iter().sum();
    samples.sort_unstable();
    Figures {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        per_sec: (samples.len() * requests_per_sample) as f64 / total.as_secs_f64(),
    }
}

/// Waits for `fd` as both ends of the real path do: poll (the test VM) or
/// epoll (the daemon's vring worker) first, then read.
fn wait_readable(fd: &EventFd) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, -1) };
    fd.read().unwrap();
}

/// Round trips of an eventfd ping-pong between two threads, each side
/// waiting with the same system calls as the measured path.
fn eventfd_floor(iterations: usize) -> Figures {
    let ping = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let pong = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let (ping2, pong2) = (ping.try_clone().unwrap(), pong.try_clone().unwrap());
    let echo = thread::spawn(move || {
        for _ in 0..iterations {
            wait_readable(&ping2);
            pong2.write(1).unwrap();
        }
    });
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        ping.write(1).unwrap();
        wait_readable(&pong);
        samples.push(t.elapsed());
    }
    echo.join().unwrap();
    summarise(samples, 1)
}

/// The time of each of `per_kick` requests per kick, `kicks` times: ALLOCs,
/// then the matching FREEs in the next kick, so the space stays small.
fn kick_samples(vm: &mut TestVm, per_kick: usize, kicks: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(kicks);
    let mut held: Vec<u32> = Vec::new();
    let mut tag = 0u64;
    for _ in 0..kicks {
        let requests: Vec<Request> = if held.is_empty() {
            (0..per_kick)
                .map(|_| {
                    tag += 1;
                    Request::Alloc {
                        tag,
                        min: 1,
                        max: 0xfffff,
                    }
                })
                .collect()
        } else {
            held.drain(..)
                .map(|pasid| {
                    tag += 1;
                    Request::Free { tag, pasid }
                })
                .collect()
        };
        let t = Instant::now();
        let responses = vm.batch(&requests);
        samples.push(t.elapsed());
        for (req, resp) in requests.iter().zip(&responses) {
            assert_eq!(Status::from_wire(resp.status), Some(Status::Ok), "{resp:?}");
            if let Request::Alloc { .. } = req {
                held.push(resp.pasid);
            }
        }
    }
    samples
}

/// PASIDs per GRANT in the lease row.
const GRANT_SIZE: u16 = 32;

/// The lease path, as [`kick_samples`] runs the ALLOC path: `per_kick`
/// GRANTs of [`GRANT_SIZE`] PASIDs per kick, then in the next kick the
/// RETURNs of everything granted, `kicks` kicks in all. Returns the time
/// of each GRANT kick, of each RETURN kick, and the PASIDs granted.
fn lease_kick_samples(
    vm: &mut TestVm,
    per_kick: usize,
    kicks: usize,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let (mut grants, mut returns) = (Vec::new(), Vec::new());
    let mut held: Vec<Vec<u32>> = Vec::new();
    let mut granted = 0;
    let mut tag = 0u64;
    for _ in 0..kicks {
        let requests: Vec<(Request, Vec<u32>)> = if held.is_empty() {
            (0..per_kick)
                .map(|_| {
                    tag += 1;
                    let grant = Request::Grant {
                        tag,
                        count: GRANT_SIZE,
                        cached: 0,
                        min: 1,
                        max: 0xfffff,
                    };
                    (grant, Vec::new())
                })
                .collect()
        } else {
            held.drain(..)
                .map(|list| {
                    tag += 1;
                    let back = Request::Return {
                        tag,
                        count: list.len() as u16,
                        cached: list.len() as u16,
                    };
                    (back, list)
                })
                .collect()
        };
        let granting = held.is_empty();
        let t = Instant::now();
        let replies = vm.lease_batch(&requests);
        if granting {
            grants.push(t.elapsed());
        } else {
            returns.push(t.elapsed());
        }
        for ((req, _), reply) in requests.iter().zip(replies) {
            assert_eq!(
                Status::from_wire(reply.response.status),
                Some(Status::Ok),
                "{reply:?}"
            );
            if let Request::Grant { .. } = req {
                assert_eq!(reply.pasids.len(), usize::from(GRANT_SIZE));
                granted += reply.pasids.len();
                held.push(reply.pasids);
            }
        }
    }
    (grants, returns, granted)
}

/// One VM in closed loop.
fn daemon_round_trips(vm: &mut TestVm, per_kick: usize, kicks: usize) -> Figures {
    summarise(kick_samples(vm, per_kick, kicks), per_kick)
}

/// Kicks of one or more runs: their times and the requests and wall time
/// they took.
#[derive(Default)]
struct Runs {
    samples: Vec<Duration>,
    requests: usize,
    wall: Duration,
}

impl Runs {
    /// p50/p99 of all kicks; requests/s over the summed wall time.
    fn figures(mut self) -> Figures {
        self.samples.sort_unstable();
        Figures {
            p50: percentile(&self.samples, 0.5),
            p99: percentile(&self.samples, 0.99),
            per_sec: self.requests as f64 / self.wall.as_secs_f64(),
        }
    }
}

/// Every VM of `vms` in closed loop at once, each on its own thread, `kicks`
/// kicks each; adds them to `runs`. The wall time runs from the first VM's
/// start to the last VM's end.
fn parallel_round_trips(runs: &mut Runs, vms: &mut [TestVm], per_kick: usize, kicks: usize) {
    let barrier = Barrier::new(vms.len());
    let each: Vec<(Instant, Instant, Vec<Duration>)> = thread::scope(|s| {
        let handles: Vec<_> = vms
            .iter_mut()
            .map(|vm| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let samples = kick_samples(vm, per_kick, kicks);
                    (start, Instant::now(), samples)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = each.iter().map(|r| r.0).min().unwrap();
    let end = each.iter().map(|r| r.1).max().unwrap();
    runs.wall += end - start;
    for (_, _, samples) in each {
        runs.requests += samples.len() * per_kick;
        runs.samples.extend(samples);
    }
}

/// The daemon's summed request duration (seconds) and chain count so far,
/// from its `vpasid_request_duration_seconds` histogram.
fn chain_time(daemon: &Daemon) -> (f64, f64) {
    let (ok, text, err) = daemon.ctl(&["metrics"]);
    assert!(ok, "{err}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in the metrics"))
    };
    (
        value("vpasid_request_duration_seconds_sum"),
        value("vpasid_request_duration_seconds_count"),
    )
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The file system type of `path` (statfs), by name where known.
fn fs_type(path: &Path) -> (i64, &'static str) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}", path.display());
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    let name = match magic {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x794c_7630 => "overlayfs",
        _ => "other",
    };
    (magic, name)
}

/// A directory for the state on a real disk: the system temp dir unless it
/// is tmpfs/ramfs (whose fdatasync costs nothing), else one under the
/// target directory.
fn disk_tempdir() -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    let (_, name) = fs_type(&tmp);
    if name == "tmpfs" || name == "ramfs" {
        tempfile::tempdir_in(frontend::bin("")).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// p50 of an append of `len` bytes plus fdatasync in `dir`, as the journal
/// writes a frame.
fn fdatasync_floor(dir: &Path, len: usize, iterations: usize) -> Duration {
    let path = dir.join("fdatasync-probe");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let buf = vec![0x5a; len];
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        file.write_all_at(&buf, (i * len) as u64).unwrap();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
    samples.sort_unstable();
    percentile(&samples, 0.5)
}

/// The 1, 5 and 15 minute load averages: the durable figures follow the
/// sync latency, which on a busy machine waits for the journalling thread
/// to be scheduled.
fn load_average() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Reads the journal's frames as they are appended.
struct JournalCursor {
    path: PathBuf,
    generation: u64,
    offset: u64,
}

/// Frames (one fdatasync each) and the answers they carried.
#[derive(Clone, Copy, Default)]
struct Syncs {
    frames: u64,
    answers: u64,
}

impl JournalCursor {
    fn new(path: PathBuf) -> JournalCursor {
        let mut header = [0u8; JOURNAL_HEADER_LEN];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut header, 0)
            .unwrap();
        JournalCursor {
            path,
            generation: decode_journal_header(&header).unwrap(),
            offset: JOURNAL_HEADER_LEN as u64,
        }
    }

    /// The frames written since the last call.
    fn advance(&mut self) -> Syncs {
        let file = File::open(&self.path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut buf = vec![0u8; (len - self.offset) as usize];
        file.read_exact_at(&mut buf, self.offset).unwrap();
        let mut at = 0;
        let mut out = Syncs::default();
        // The daemon keeps zeros written ahead of its last frame.
        while buf[at..].iter().any(|&b| b != 0) {
            let commit = read_commit(&buf[at..], self.generation).unwrap_or_else(|| {
                panic!(
                    "{}: no valid frame at byte {} (was it compacted?)",
                    self.path.display(),
                    self.offset as usize + at
                )
            });
            out.frames += 1;
            for record in get_records(commit.payload).unwrap() {
                if let Record::Batch { answers, .. } = record {
                    out.answers += answers.len() as u64;
                }
            }
            at += commit.len;
        }
        self.offset += at as u64;
        out
    }
}

/// One daemon with `vms` slots `vm0..`, and a test VM on each.
struct Side {
    daemon: Daemon,
    vms: Vec<TestVm>,
}

impl Side {
    fn start(vms: usize, state_dir: Option<&Path>) -> Side {
        let count = vms.to_string();
        let mut args = vec![
            "--socket-path",
            "{dir}/vm",
            "--socket-count",
            &count,
            "--quota",
            "100000",
        ];
        let state = state_dir.map(|d| d.display().to_string());
        if let Some(dir) = &state {
            args.extend(["--state-dir", dir, "--journal-limit", JOURNAL_LIMIT]);
        }
        let daemon = Daemon::start(&args);
        // Drivers that take leases (the default --lease offers them); only
        // the lease row sends GRANT and RETURN.
        let vms = (0..vms)
            .map(|i| {
                TestVm::connect_with(
                    &daemon.path(&format!("vm{i}")),
                    VmOptions {
                        lease: true,
                        ..VmOptions::default()
                    },
                )
            })
            .collect();
        Side { daemon, vms }
    }

    fn stop(self) -> String {
        drop(self.vms);
        let (status, log) = self.daemon.stop();
        assert!(status.success(), "{log}");
        log
    }
}

/// A durability row: the same workload in memory and durable.
struct Pair {
    per_kick: usize,
    vms: usize,
    memory: Figures,
    durable: Figures,
    syncs: Syncs,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.durable.per_sec / self.memory.per_sec
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a test.
    let quick = std::env::var_os("VPASID_BENCH_QUICK").is_some()
        || std::env::args().all(|a| a != "--bench");
    let (singles, batches) = if quick { (500, 200) } else { (20_000, 20_000) };
    // Requests of each durability row: a durable kick costs a sync
    // (~0.1-0.3 ms here), so fewer than above.
    let (singles_total, batch_total) = if quick { (160, 128) } else { (8_000, 8_000) };

    let disk = disk_tempdir();
    let (magic, fs_name) = fs_type(disk.path());
    let state_dir = disk.path().join("state");

    let mut mem = Side::start(MAX_VMS, None);
    let mut dur = Side::start(MAX_VMS, Some(&state_dir));
    let mut cursor = JournalCursor::new(state_dir.join("journal"));

    // Warm up every path (a durable kick costs a sync: few of those).
    daemon_round_trips(&mut mem.vms[0], 1, 200);
    for side in [&mut mem, &mut dur] {
        for vm in &mut side.vms {
            daemon_round_trips(vm, 1, 10);
            daemon_round_trips(vm, 64, 4);
        }
    }
    eventfd_floor(1000);
    cursor.advance();

    let floor = eventfd_floor(singles);
    let one = daemon_round_trips(&mut mem.vms[0], 1, singles);
    let many = daemon_round_trips(&mut mem.vms[0], 64, batches);
    // The lease path right after, on the same VM: GRANT kicks and RETURN
    // kicks alternate as ALLOC and FREE kicks do above.
    let daemon_before = chain_time(&mem.daemon);
    let (grant_kicks, return_kicks, granted) = lease_kick_samples(&mut mem.vms[0], 64, batches);
    let daemon_after = chain_time(&mem.daemon);
    let grant_time: Duration = grant_kicks.iter().sum();
    let lease_time = grant_time + return_kicks.iter().sum::<Duration>();
    let lease = summarise([grant_kicks, return_kicks].concat(), 64);

    println!("vhost-user-pasid over its real socket (one VM, this machine, same run)");
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "", "p50 (us)", "p99 (us)", "requests/s"
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>14.0}",
        "floor: eventfd ping-pong",
        us(floor.p50),
        us(floor.p99),
        floor.per_sec
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>14.0}",
        "daemon: 1 request per kick",
        us(one.p50),
        us(one.p99),
        one.per_sec
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>14.0}",
        "daemon: 64 requests per kick",
        us(many.p50),
        us(many.p99),
        many.per_sec
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>14.0}",
        "daemon: 64 GRANT/RETURN per kick",
        us(lease.p50),
        us(lease.p99),
        lease.per_sec
    );
    // Granted per second of GRANT kicks (the target). Like for like with
    // the ALLOC row, whose ALLOC and FREE kicks alternate and move one
    // PASID per request: PASIDs moved (granted, then returned) per second
    // of all lease kicks.
    let granted_per_sec = granted as f64 / grant_time.as_secs_f64();
    let moved_per_sec = 2.0 * granted as f64 / lease_time.as_secs_f64();
    println!(
        "leases: {:.2} M PASIDs granted/s ({GRANT_SIZE} per GRANT, 64 GRANTs per kick, in \
         memory; target >= 10 M); GRANT+RETURN move {:.2} M PASIDs/s = {:.1}x the ALLOC+FREE \
         path's {:.2} M PASIDs/s",
        granted_per_sec / 1e6,
        moved_per_sec / 1e6,
        moved_per_sec / many.per_sec,
        many.per_sec / 1e6
    );
    // The daemon's own time for those chains (its request-duration
    // histogram: reading each request to writing its response), without
    // the rings, eventfds and the test VM.
    let in_daemon = daemon_after.0 - daemon_before.0;
    let chains = daemon_after.1 - daemon_before.1;
    println!(
        "leases inside the daemon: {:.2} us per GRANT or RETURN chain ({chains} chains), \
         {:.1} M PASIDs granted+returned/s of daemon time",
        in_daemon / chains * 1e6,
        2.0 * granted as f64 / in_daemon / 1e6
    );
    let ratio = one.p50.as_secs_f64() / floor.p50.as_secs_f64();
    println!(
        "single-request p50 / floor p50 = {ratio:.2}x (target <= 2x); \
         64/kick = {:.2} M requests/s (target >= 1 M)",
        many.per_sec / 1e6
    );

    // Durable versus in-memory: each row alternates between the two daemons.
    let probes = if quick { 50 } else { 500 };
    let sync_before = fdatasync_floor(disk.path(), 4096, probes);
    let mut pairs = Vec::new();
    for &(per_kick, vms) in ROWS {
        // The same number of requests on each row, split among its VMs.
        let requests = if per_kick == 1 {
            singles_total
        } else {
            batch_total * 64
        };
        let kicks = requests / per_kick / vms / ROUNDS;
        // Alternate the two daemons so that both see the same noise.
        let (mut memory, mut durable) = (Runs::default(), Runs::default());
        for _ in 0..ROUNDS {
            parallel_round_trips(&mut memory, &mut mem.vms[..vms], per_kick, kicks);
            parallel_round_trips(&mut durable, &mut dur.vms[..vms], per_kick, kicks);
        }
        let (memory, durable) = (memory.figures(), durable.figures());
        pairs.push(Pair {
            per_kick,
            vms,
            memory,
            durable,
            syncs: cursor.advance(),
        });
    }
    let sync_after = fdatasync_floor(disk.path(), 4096, probes);

    println!();
    println!(
        "durable (--state-dir on {fs_name}, f_type {magic:#x}, {}) versus in-memory, same run",
        disk.path().display()
    );
    println!(
        "each VM on its own thread and slot in closed loop; requests/s over the wall time; \
         fdatasync of a 4 KiB append there: p50 {:.0} us before these rows, {:.0} us after; \
         load average {}",
        us(sync_before),
        us(sync_after),
        load_average()
    );
    println!(
        "{:<22} {:>11} {:>13} {:>11} {:>13} {:>8} {:>7} {:>9}",
        "", "memory p50", "memory", "durable p50", "durable", "durable", "syncs", "requests"
    );
    println!(
        "{:<22} {:>11} {:>13} {:>11} {:>13} {:>8} {:>7} {:>9}",
        "", "(us/kick)", "requests/s", "(us/kick)", "requests/s", "/memory", "", "/sync"
    );
    for p in &pairs {
        println!(
            "{:<22} {:>11.2} {:>13.0} {:>11.2} {:>13.0} {:>8.2} {:>7} {:>9.1}",
            format!(
                "{:>2}/kick, {} VM{}",
                p.per_kick,
                p.vms,
                if p.vms == 1 { "" } else { "s" }
            ),
            us(p.memory.p50),
            p.memory.per_sec,
            us(p.durable.p50),
            p.durable.per_sec,
            p.ratio(),
            p.syncs.frames,
            p.syncs.answers as f64 / p.syncs.frames.max(1) as f64
        );
    }
    let row = |per_kick, vms| {
        pairs
            .iter()
            .find(|p| p.per_kick == per_kick && p.vms == vms)
            .unwrap()
    };
    println!(
        "64/kick, {TARGET_VMS} VMs in parallel: durable / in-memory = {:.2} (target >= 0.5); \
         1 VM in closed loop: {:.2} (one sync per kick);",
        row(64, TARGET_VMS).ratio(),
        row(64, 1).ratio()
    );
    println!(
        "1/kick: durable / in-memory = {:.2} (1 VM), {:.2} ({TARGET_VMS} VMs); syncs = journal \
         frames written, counted in the journal",
        row(1, 1).ratio(),
        row(1, TARGET_VMS).ratio()
    );

    mem.stop();
    let log = dur.stop();
    assert!(
        !log.contains("event=compact"),
        "the durable daemon compacted: raise JOURNAL_LIMIT\n{log}"
    );
}
