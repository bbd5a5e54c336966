// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Chaos: SIGKILL the daemon (`--state-dir`) at random moments while four
//! VMs allocate, free and reset continuously, restart it on the same state,
//! and let each VM reconnect the way QEMU does (same memory, SET_VRING_BASE
//! = the used index in guest memory, kick). The restarted daemon must
//! answer every request that was in flight, give a request it had already
//! answered the identical answer, and never lose or duplicate a PASID.
//!
//! Each VM tracks what it holds only from the answers it read. After every
//! restart the VMs are quiesced (in-flight batch completed) and the
//! daemon's `pasidctl pasids` must match their beliefs exactly; at the end
//! they free everything and the daemon must list nothing, also after one
//! more kill.
//!
//! After some kills the daemon is also killed during its own start-up, one
//! to three times in a row, a random few milliseconds after it was spawned
//! and without waiting for it to be ready: while it reads and replays the
//! state, or writes the next generation's snapshot and empties the journal
//! (`Journal::start`). Those kills must lose nothing either. The VMs do not
//! reconnect to such a daemon (`current_pid` stays 0 until the restart
//! that stays is ready), but one whose reconnect was already retrying its
//! connect may meet it and must cope with it dying mid-handshake.
//!
//! `VPASID_CHAOS_KILLS=N` sets the number of kills (default 50);
//! `VPASID_CHAOS_SEED=S` replays a schedule (the seed is printed).
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use frontend::{Daemon, TestVm};
use pasid_protocol::{Request, Response, Status, RESPONSE_SIZE};

/// VM slots, one frontend thread each.
const VMS: usize = 4;
/// Requests per kick: 1..=MAX_BATCH.
const MAX_BATCH: u64 = 16;
/// Per-VM quota: generous, the VMs keep their holdings far below it.
const QUOTA: usize = 4096;
/// Highest PASID of the (default, 20-bit) space.
const SPACE_MAX: u32 = (1 << 20) - 1;
/// `--journal-limit`: small, so that compaction also meets SIGKILL.
const JOURNAL_LIMIT: &str = "65536";
/// Default number of SIGKILLs.
const DEFAULT_KILLS: u64 = 50;
/// A frontend that makes no progress for this long fails the test.
const STALL: Duration = Duration::from_secs(30);
/// Bound on quiescing all frontends.
const QUIESCE: Duration = Duration::from_secs(30);
/// What [`TestVm::post`] fills response buffers with.
const UNWRITTEN: u16 = 0xeeee;
/// Percentage of kills after which the daemon is also killed during its
/// start-up, 1..=STARTUP_KILLS_MAX times in a row, before the restart that
/// is let become ready.
const STARTUP_KILL_PCT: u64 = 25;
const STARTUP_KILLS_MAX: u64 = 3;
/// Such a start is SIGKILLed after a delay drawn uniformly from 0 to
/// STARTUP_KILL_REACH percent of the median time from spawn (exec) to
/// `event=state-loaded` measured on this run's restarts so far: the
/// machine, the build profile and the disk set that time. Measured here (2
/// CPUs, ext4 on a virtio disk, release build, under this test's load,
/// 404 restarts): p10 2.9 ms, median 5.6 ms, p90 7.1 ms to
/// `event=state-loaded` (the log's `ms=`, the state work, says 1..2 ms:
/// mostly the syncs), the control socket answering about 2.5 ms later.
/// Kills within 1 ms of the spawn found nothing of the new generation
/// written, about a third of those after 1..5 ms landed inside
/// `Journal::start`, nearly all after 6 ms found the slots listening. With
/// 120%, well over half land before `event=state-loaded` and about one in
/// six inside `Journal::start`; each run prints its own figures and where
/// its kills landed.
const STARTUP_KILL_REACH: u64 = 120;
/// The median assumed before any restart was measured, in µs.
const STARTUP_GUESS_US: u64 = 6_000;

/// xorshift64*: small, seeded, good enough for schedules.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    requests: AtomicU64,
    /// Requests whose answer was read only after a reconnect (answered, or
    /// answered again, by a restarted daemon).
    after_reconnect: AtomicU64,
    /// Batches that a kill interrupted.
    interrupted: AtomicU64,
    reconnects: AtomicU64,
    /// Reconnect attempts that met a dead or dying daemon and were retried.
    reconnect_retries: AtomicU64,
    /// Responses the killed daemon had written into guest memory without
    /// publishing them on the used ring...
    unpublished: AtomicU64,
    /// ...and how many of them the restarted daemon answered identically.
    unpublished_same: AtomicU64,
    alloc_ok: AtomicU64,
    free_ok: AtomicU64,
    resets: AtomicU64,
    no_space: AtomicU64,
    rate_limited: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the orchestrator and the frontends share.
struct Shared {
    /// The live daemon's pid; 0 while it is being killed and restarted
    /// (set to 0 before the kill, to the new pid once it answers).
    current_pid: AtomicI32,
    /// Quiesce requests: a frontend that sees `pause_epoch` above what it
    /// acknowledged completes its batch, publishes its beliefs, stores the
    /// epoch in `acked` and waits until `resume_epoch` reaches it.
    pause_epoch: AtomicU64,
    resume_epoch: AtomicU64,
    acked: Vec<AtomicU64>,
    /// Free everything, RESET, and return.
    stop: AtomicBool,
    /// The orchestrator failed: give up at once.
    abort: AtomicBool,
    /// Each frontend's beliefs, as of its last quiescent point.
    beliefs: Vec<Mutex<BTreeSet<u32>>>,
    stats: Stats,
    /// A few unpublished answers that the restarted daemon answered
    /// differently (allowed: they were not yet durable), for the report.
    changed: Mutex<Vec<String>>,
    /// Every daemon a reconnect reached: (pid, whether the handshake
    /// completed).
    met: Mutex<Vec<(i32, bool)>>,
}

impl Shared {
    fn check_abort(&self) {
        assert!(
            !self.abort.load(Ordering::SeqCst),
            "aborted: the orchestrator failed"
        );
    }
}

/// Sets `abort` when the orchestrator leaves, normally or by panicking.
struct AbortOnDrop(Arc<Shared>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::SeqCst);
    }
}

fn vm_name(i: usize) -> String {
    format!("vm{i}")
}

/// One frontend: a VM that believes it holds `beliefs`.
struct Guest {
    idx: usize,
    path: PathBuf,
    vm: TestVm,
    /// The daemon this VM's socket is connected to.
    peer: i32,
    rng: Rng,
    beliefs: BTreeSet<u32>,
    shared: Arc<Shared>,
}

impl Guest {
    fn name(&self) -> String {
        vm_name(self.idx)
    }

    /// Whether the daemon this VM talks to is dead and a new one is up.
    fn stale(&self) -> bool {
        let cur = self.shared.current_pid.load(Ordering::SeqCst);
        cur != 0 && cur != self.peer
    }

    /// Reconnects until connected to the live daemon. Never closes a
    /// connection to a live daemon (that would be an observed disconnect
    /// and reclaim the VM): `try_reconnect` replaces the socket only on
    /// success, and only a daemon other than `current_pid` is dead.
    fn reconnect(&mut self) {
        let deadline = Instant::now() + STALL;
        loop {
            self.shared.check_abort();
            let cur = self.shared.current_pid.load(Ordering::SeqCst);
            if cur == self.peer {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not reconnected to daemon {cur} within {STALL:?}",
                self.name()
            );
            if cur == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            match self.vm.try_reconnect(&self.path, Duration::from_secs(5)) {
                Ok(pid) => {
                    Stats::add(&self.shared.stats.reconnects, 1);
                    self.shared.met.lock().unwrap().push((pid, true));
                    self.peer = pid;
                }
                Err(e) => {
                    if let Some(pid) = e.peer {
                        self.shared.met.lock().unwrap().push((pid, false));
                    }
                    // `current_pid` goes to 0 before a kill: if it still
                    // names the daemon that failed us, that daemon was
                    // alive and refused a well-formed reconnect.
                    let now = self.shared.current_pid.load(Ordering::SeqCst);
                    assert!(
                        e.peer.is_none() || e.peer != Some(now),
                        "{}: the live daemon refused the reconnect: {e}",
                        self.name()
                    );
                    Stats::add(&self.shared.stats.reconnect_retries, 1);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Posts `reqs` with one kick and waits for all their answers,
    /// reconnecting (and so having them re-processed) after kills.
    fn run_batch(&mut self, reqs: &[Request]) -> Vec<Response> {
        let n = reqs.len() as u16;
        let heads = self.vm.post(reqs);
        self.vm.kick();
        let end = self.vm.next_avail();
        let start = end.wrapping_sub(n);
        assert_eq!(
            self.vm.last_used(),
            start,
            "{}: stray used entries",
            self.name()
        );
        let mut first_base: Option<u16> = None;
        let mut unpublished: Vec<Option<Response>> = vec![None; reqs.len()];
        let mut progress = Instant::now();
        let used = loop {
            if let Some(used) = self.vm.try_wait_used(n, Duration::from_millis(5)) {
                break used;
            }
            self.shared.check_abort();
            if self.stale() {
                // The daemon we posted to is dead. Note what it wrote into
                // guest memory without publishing it, then reconnect.
                let base = self.vm.used_idx();
                for pos in base.wrapping_sub(start)..n {
                    let i = usize::from(pos);
                    let r = self.vm.read_response(pos);
                    if unpublished[i].is_none() && r.status != UNWRITTEN {
                        unpublished[i] = Some(r);
                    }
                }
                if first_base.is_none() {
                    first_base = Some(base);
                }
                self.reconnect();
                progress = Instant::now();
                continue;
            }
            assert!(
                progress.elapsed() < STALL,
                "{}: daemon {} used {} of {n} chains within {STALL:?} (avail {end}, used idx {})",
                self.name(),
                self.peer,
                self.vm.used_idx().wrapping_sub(start),
                self.vm.used_idx()
            );
        };
        let mut ids: Vec<u32> = used.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        let mut want: Vec<u32> = heads.iter().map(|h| u32::from(*h)).collect();
        want.sort_unstable();
        assert_eq!(ids, want, "{}: used ids of the batch", self.name());
        for (id, len) in &used {
            assert_eq!(
                *len,
                RESPONSE_SIZE as u32,
                "{}: used length of chain {id}",
                self.name()
            );
        }
        let answers: Vec<Response> = (0..n).map(|i| self.vm.read_response(i)).collect();
        let stats = &self.shared.stats;
        Stats::add(&stats.batches, 1);
        Stats::add(&stats.requests, u64::from(n));
        if let Some(base) = first_base {
            Stats::add(&stats.interrupted, 1);
            Stats::add(&stats.after_reconnect, u64::from(end.wrapping_sub(base)));
        }
        for ((seen, got), req) in unpublished.iter().zip(&answers).zip(reqs) {
            if let Some(seen) = seen {
                Stats::add(&stats.unpublished, 1);
                if seen == got {
                    Stats::add(&stats.unpublished_same, 1);
                } else {
                    let mut changed = self.shared.changed.lock().unwrap();
                    if changed.len() < 8 {
                        changed.push(format!(
                            "{}: {req:?}: {seen:?} before the kill, {got:?} after",
                            self.name()
                        ));
                    }
                }
            }
        }
        answers
    }

    /// Updates the beliefs from `answers`, in the order the daemon carried
    /// the requests out, checking each answer against them.
    fn apply(&mut self, reqs: &[Request], answers: &[Response]) {
        let name = self.name();
        let stats = &self.shared.stats;
        for (req, resp) in reqs.iter().zip(answers) {
            assert_eq!(resp.tag, req.tag(), "{name}: tag of {req:?}: {resp:?}");
            let status = Status::from_wire(resp.status);
            match (*req, status) {
                (_, Some(Status::RateLimited)) => Stats::add(&stats.rate_limited, 1),
                (Request::Alloc { min, max, .. }, Some(Status::Ok)) => {
                    assert!(
                        (min..=max).contains(&resp.pasid),
                        "{name}: {req:?} answered {resp:?}"
                    );
                    assert!(
                        self.beliefs.insert(resp.pasid),
                        "{name}: {req:?} gave PASID {} it already holds",
                        resp.pasid
                    );
                    Stats::add(&stats.alloc_ok, 1);
                }
                (Request::Alloc { .. }, Some(Status::NoSpace)) => Stats::add(&stats.no_space, 1),
                (Request::Alloc { .. }, Some(Status::QuotaExceeded)) => assert!(
                    self.beliefs.len() >= QUOTA,
                    "{name}: QUOTA_EXCEEDED while holding {}",
                    self.beliefs.len()
                ),
                (Request::Free { pasid, .. }, Some(Status::Ok)) => {
                    assert!(
                        self.beliefs.remove(&pasid),
                        "{name}: FREE {pasid} succeeded but the VM did not hold it"
                    );
                    Stats::add(&stats.free_ok, 1);
                }
                (Request::Free { pasid, .. }, Some(Status::NotOwner | Status::NotFound)) => {
                    assert!(
                        !self.beliefs.contains(&pasid),
                        "{name}: FREE {pasid} answered {status:?} but the VM held it"
                    );
                }
                (Request::Reset { .. }, Some(Status::Ok)) => {
                    assert_eq!(
                        resp.pasid as usize,
                        self.beliefs.len(),
                        "{name}: RESET released {} references, the VM held {:?}",
                        resp.pasid,
                        self.beliefs
                    );
                    self.beliefs.clear();
                    Stats::add(&stats.resets, 1);
                }
                _ => panic!("{name}: {req:?} answered {resp:?}"),
            }
        }
    }

    /// A random batch: ALLOCs (some in small, contended ranges), FREEs of
    /// PASIDs the VM will hold when the daemon gets to them, sometimes a
    /// RESET.
    fn make_batch(&mut self) -> Vec<Request> {
        let n = 1 + self.rng.below(MAX_BATCH);
        let mut planned: Vec<u32> = self.beliefs.iter().copied().collect();
        let mut reqs = Vec::new();
        let mut reset = false;
        for _ in 0..n {
            let tag = self.vm.tag();
            let free_pct = if planned.len() > 48 { 70 } else { 40 };
            if !reset && self.rng.chance(2) {
                reset = true;
                planned.clear();
                reqs.push(Request::Reset { tag });
            } else if !planned.is_empty() && self.rng.chance(free_pct) {
                let at = self.rng.below(planned.len() as u64) as usize;
                let pasid = planned.swap_remove(at);
                reqs.push(Request::Free { tag, pasid });
            } else if self.rng.chance(40) {
                let min = 1 + self.rng.below(48) as u32;
                let max = min + self.rng.below(8) as u32;
                reqs.push(Request::Alloc { tag, min, max });
            } else {
                let min = 1 + self.rng.below(200) as u32;
                reqs.push(Request::Alloc {
                    tag,
                    min,
                    max: SPACE_MAX,
                });
            }
        }
        reqs
    }

    /// Publishes the beliefs and waits for the orchestrator's check.
    fn pause(&mut self, epoch: u64) {
        *self.shared.beliefs[self.idx].lock().unwrap() = self.beliefs.clone();
        self.shared.acked[self.idx].store(epoch, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.shared.resume_epoch.load(Ordering::SeqCst) < epoch {
            self.shared.check_abort();
            assert!(Instant::now() < deadline, "{}: never resumed", self.name());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn run(mut self) -> TestVm {
        let mut paused = 0;
        loop {
            self.shared.check_abort();
            if self.stale() {
                // Killed between batches: nothing in flight.
                self.reconnect();
            }
            let epoch = self.shared.pause_epoch.load(Ordering::SeqCst);
            if epoch > paused {
                paused = epoch;
                self.pause(epoch);
                continue;
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let reqs = self.make_batch();
            let answers = self.run_batch(&reqs);
            self.apply(&reqs, &answers);
        }
        // Free everything, then RESET (which must find nothing left).
        while !self.beliefs.is_empty() {
            let reqs: Vec<Request> = self
                .beliefs
                .iter()
                .take(MAX_BATCH as usize)
                .map(|&pasid| Request::Free {
                    tag: self.vm.tag(),
                    pasid,
                })
                .collect();
            let answers = self.run_batch(&reqs);
            self.apply(&reqs, &answers);
        }
        let reqs = [Request::Reset { tag: self.vm.tag() }];
        let answers = self.run_batch(&reqs);
        self.apply(&reqs, &answers);
        assert_eq!(
            answers[0].pasid,
            0,
            "{}: RESET after freeing all",
            self.name()
        );
        *self.shared.beliefs[self.idx].lock().unwrap() = self.beliefs.clone();
        self.vm
    }
}

/// The orchestrator's view of the run.
struct Chaos {
    daemon: Daemon,
    shared: Arc<Shared>,
    handles: Vec<Option<JoinHandle<TestVm>>>,
    seed: u64,
    kills: u64,
    /// Kills while the VMs were reconnecting after the previous one.
    double_kills: u64,
    quiesces: u64,
    /// Requests the daemons reported answering from a replay window.
    replayed: u64,
    /// Kills that were followed by start-up kills.
    startup_rounds: u64,
    /// Daemons SIGKILLed during start-up, by how far they had got.
    startup_kills: BTreeMap<StartPhase, u64>,
    /// After how many µs each of them was killed.
    startup_delays: Vec<u64>,
    /// Their pids.
    startup_pids: BTreeSet<i32>,
    /// Restarts that were let become ready: spawn until `event=state-loaded`
    /// (polled finely), and until the control socket answered (polled
    /// every 5 ms by running `pasidctl`), in µs.
    loaded_after: Vec<u64>,
    ready_after: Vec<u64>,
}

/// How far a daemon killed during start-up had got, judged from its log and
/// from the state files it left (their headers, docs/state.md "Format").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StartPhase {
    /// Nothing of the new generation written: killed while starting the
    /// process, reading or replaying the state, or binding sockets.
    BeforeWrite,
    /// The new generation's snapshot written, the journal not yet emptied.
    SnapshotWritten,
    /// The journal emptied, its new header not yet written.
    JournalEmptied,
    /// The new generation's journal header written, `event=state-loaded`
    /// not yet logged.
    GenerationStarted,
    /// `event=state-loaded` logged (the state work was done), not every VM
    /// slot's `event=listen` yet.
    Loaded,
    /// Every VM slot's `event=listen` logged: its threads were starting, the
    /// control socket's next; ready, or about to be.
    Listening,
}

/// Generations in the state files' headers: the highest of the snapshot
/// slots, and the journal's (None if it has no header, e.g. emptied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DiskGenerations {
    snapshot: Option<u64>,
    journal: Option<u64>,
}

/// The generation in a state file's header, if it has `magic`.
fn header_generation(path: &Path, magic: &[u8; 8]) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 20 || &bytes[..8] != magic {
        return None;
    }
    Some(u64::from_le_bytes(bytes[12..20].try_into().unwrap()))
}

fn disk_generations(state: &Path) -> DiskGenerations {
    let snapshot = (0..2)
        .filter_map(|i| {
            let path = state.join(format!("snapshot.{i}"));
            header_generation(&path, b"VPASIDS\x01")
        })
        .max();
    let journal = header_generation(&state.join("journal"), b"VPASIDJ\x01");
    DiskGenerations { snapshot, journal }
}

impl StartPhase {
    /// `log`: what the daemon logged.
    fn judge(before: DiskGenerations, after: DiskGenerations, log: &str) -> StartPhase {
        if log.matches(" event=listen ").count() >= VMS {
            StartPhase::Listening
        } else if log.contains("event=state-loaded ") {
            StartPhase::Loaded
        } else if after.journal.is_some() && after.journal != before.journal {
            StartPhase::GenerationStarted
        } else if after.journal.is_none() && before.journal.is_some() {
            StartPhase::JournalEmptied
        } else if after.snapshot > before.snapshot {
            StartPhase::SnapshotWritten
        } else {
            StartPhase::BeforeWrite
        }
    }
}

/// "min .. p10 .. median .. p90 .. max" of `v` (µs), in ms.
fn spread(v: &[u64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let at = |q: usize| v[(v.len() - 1) * q / 100] as f64 / 1000.0;
    format!(
        "min {:.1} p10 {:.1} median {:.1} p90 {:.1} max {:.1} ms (n={})",
        at(0),
        at(10),
        at(50),
        at(90),
        at(100),
        v.len()
    )
}

impl Chaos {
    /// Panics with the daemon's log and the seed.
    fn fail(&self, msg: &str) -> ! {
        if let Ok(keep) = std::env::var("VPASID_CHAOS_LOG") {
            let _ = std::fs::write(&keep, self.daemon.log());
        }
        panic!(
            "{msg}\nseed {} (VPASID_CHAOS_SEED={} reproduces the schedule); daemon log tail:\n{}",
            self.seed,
            self.seed,
            self.daemon.log_tail(60)
        );
    }

    /// Fails if a frontend died or the daemon exited on its own.
    fn watch(&mut self) {
        for i in 0..self.handles.len() {
            if self.handles[i]
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
                && !self.shared.stop.load(Ordering::SeqCst)
            {
                let h = self.handles[i].take().unwrap();
                let why = match h.join() {
                    Ok(_) => "returned early".to_string(),
                    Err(e) => e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(ToString::to_string))
                        .unwrap_or_else(|| "panicked".into()),
                };
                self.fail(&format!("frontend {} failed: {why}", vm_name(i)));
            }
        }
        if let Some(status) = self.daemon.try_exited() {
            self.fail(&format!("the daemon exited by itself: {status}"));
        }
    }

    /// Sleeps `d` while watching.
    fn sleep(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            self.watch();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }

    /// SIGKILLs the daemon, sometimes (`rng`) kills 1..=STARTUP_KILLS_MAX
    /// daemons started after it during their start-up, then restarts it and
    /// waits until it is ready. `current_pid` is 0 from before the first
    /// kill until then, so that no VM reconnects to a daemon about to die.
    fn kill_and_restart(&mut self, rng: &mut Rng) {
        self.watch();
        self.shared.current_pid.store(0, Ordering::SeqCst);
        self.daemon.kill9();
        self.kills += 1;
        if rng.chance(STARTUP_KILL_PCT) {
            self.startup_rounds += 1;
            for _ in 0..=rng.below(STARTUP_KILLS_MAX) {
                let reach = self.startup_median_us() * STARTUP_KILL_REACH / 100;
                self.kill_during_startup(reach * rng.below(1001) / 1000);
            }
        }
        self.restart_measured();
        assert_eq!(self.shared.current_pid.load(Ordering::SeqCst), 0);
        self.shared
            .current_pid
            .store(self.daemon.pid(), Ordering::SeqCst);
    }

    /// The median time from spawn to `event=state-loaded` so far, in µs.
    fn startup_median_us(&self) -> u64 {
        if self.loaded_after.is_empty() {
            return STARTUP_GUESS_US;
        }
        let mut v = self.loaded_after.clone();
        v.sort_unstable();
        v[v.len() / 2]
    }

    /// Starts the daemon and SIGKILLs it `delay_us` µs later, ready or not.
    fn kill_during_startup(&mut self, delay_us: u64) {
        let state = self.daemon.path("state");
        let before = disk_generations(&state);
        let from = self.daemon.log_len();
        self.daemon
            .spawn_again(&format!("start-up, to be SIGKILLed after {delay_us} us"));
        self.startup_pids.insert(self.daemon.pid());
        // Fails if it exits by itself (refusing the state, say).
        self.sleep(Duration::from_micros(delay_us));
        let status = self.daemon.kill9_status();
        if status.signal() != Some(libc::SIGKILL) {
            self.fail(&format!(
                "the daemon started {delay_us} us before had exited by itself: {status}"
            ));
        }
        let after = disk_generations(&state);
        let phase = StartPhase::judge(before, after, &self.daemon.log_since(from));
        *self.startup_kills.entry(phase).or_default() += 1;
        self.startup_delays.push(delay_us);
    }

    /// Restarts the daemon and waits until it is ready, noting how long
    /// that took.
    fn restart_measured(&mut self) {
        let from = self.daemon.log_len();
        self.daemon.spawn_again("restart");
        // From its exec, as the delays of the start-up kills.
        let spawned = Instant::now();
        loop {
            if let Some(status) = self.daemon.try_exited() {
                self.fail(&format!("the daemon exited while starting: {status}"));
            }
            if self.daemon.log_since(from).contains("event=state-loaded ") {
                break;
            }
            if spawned.elapsed() > Duration::from_secs(10) {
                self.fail("the restarted daemon did not log event=state-loaded within 10 s");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.loaded_after.push(spawned.elapsed().as_micros() as u64);
        self.daemon.wait_ready(Duration::from_secs(10));
        self.ready_after.push(spawned.elapsed().as_micros() as u64);
    }

    /// Quiesces every frontend (in-flight batch completed) and checks the
    /// daemon's holdings against their beliefs.
    fn quiesce_and_check(&mut self, when: &str) {
        self.quiesces += 1;
        let epoch = self.quiesces;
        self.shared.pause_epoch.store(epoch, Ordering::SeqCst);
        let deadline = Instant::now() + QUIESCE;
        while self
            .shared
            .acked
            .iter()
            .any(|a| a.load(Ordering::SeqCst) < epoch)
        {
            self.watch();
            if Instant::now() > deadline {
                let acked: Vec<u64> = self
                    .shared
                    .acked
                    .iter()
                    .map(|a| a.load(Ordering::SeqCst))
                    .collect();
                self.fail(&format!(
                    "{when}: frontends not quiescent within {QUIESCE:?} (acked {acked:?}, want {epoch})"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let beliefs: Vec<BTreeSet<u32>> = self
            .shared
            .beliefs
            .iter()
            .map(|b| b.lock().unwrap().clone())
            .collect();
        if let Err(e) = self.check_holdings(&beliefs) {
            self.fail(&format!("{when}: {e}"));
        }
        // Requests this daemon answered from the record of their first
        // answer (its counters start at zero with each restart).
        let vms = self.daemon.ctl_json(&["vms"]);
        self.replayed += vms
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["counters"]["replayed"].as_u64().unwrap())
            .sum::<u64>();
        self.shared.resume_epoch.store(epoch, Ordering::SeqCst);
    }

    /// The daemon's holdings must equal `beliefs`, VM by VM.
    fn check_holdings(&self, beliefs: &[BTreeSet<u32>]) -> Result<(), String> {
        let list = self.daemon.ctl_json(&["pasids"]);
        let mut held: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for p in list.as_array().ok_or("pasids is not a list")? {
            let pasid = p["pasid"].as_u64().ok_or("pasid")? as u32;
            let holders = p["holders"].as_array().ok_or("holders")?;
            let vms: Vec<&serde_json::Value> =
                holders.iter().filter(|h| h["kind"] == "vm").collect();
            if vms.len() != 1 || holders.len() != 1 {
                return Err(format!(
                    "PASID {pasid} must have exactly one holder, a VM: {p}"
                ));
            }
            if vms[0]["refs"].as_u64() != Some(1) {
                return Err(format!("PASID {pasid}: one reference expected: {p}"));
            }
            let owner = vms[0]["owner"].as_str().ok_or("owner")?.to_string();
            held.entry(owner).or_default().insert(pasid);
        }
        let mut all = BTreeSet::new();
        for (i, b) in beliefs.iter().enumerate() {
            if let Some(p) = b.iter().find(|p| all.contains(*p)) {
                return Err(format!(
                    "PASID {p} believed held by {} and another VM",
                    vm_name(i)
                ));
            }
            all.extend(b.iter().copied());
            let daemon = held.remove(&vm_name(i)).unwrap_or_default();
            if &daemon != b {
                let lost: Vec<_> = b.difference(&daemon).collect();
                let leaked: Vec<_> = daemon.difference(b).collect();
                return Err(format!(
                    "{}: the daemon's holdings differ from the VM's beliefs: believed but \
                     not held {lost:?}, held but not believed {leaked:?} ({} believed, {} held)",
                    vm_name(i),
                    b.len(),
                    daemon.len()
                ));
            }
        }
        if !held.is_empty() {
            return Err(format!("PASIDs held by unknown owners: {held:?}"));
        }
        Ok(())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
    )
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let seed = env_u64("VPASID_CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    });
    let target_kills = env_u64("VPASID_CHAOS_KILLS").unwrap_or(DEFAULT_KILLS);
    eprintln!("chaos: seed {seed} (VPASID_CHAOS_SEED={seed} to replay), {target_kills} kills");
    let mut rng = Rng::new(seed);

    let mut args: Vec<String> = Vec::new();
    for i in 0..VMS {
        args.push("--vm".into());
        args.push(format!("{}={{dir}}/{}.sock", vm_name(i), vm_name(i)));
    }
    let quota = QUOTA.to_string();
    args.extend(
        [
            "--quota",
            &quota,
            "--state-dir",
            "{dir}/state",
            "--journal-limit",
            JOURNAL_LIMIT,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args);

    let shared = Arc::new(Shared {
        current_pid: AtomicI32::new(daemon.pid()),
        pause_epoch: AtomicU64::new(0),
        resume_epoch: AtomicU64::new(0),
        acked: (0..VMS).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        beliefs: (0..VMS).map(|_| Mutex::new(BTreeSet::new())).collect(),
        stats: Stats::default(),
        changed: Mutex::new(Vec::new()),
        met: Mutex::new(Vec::new()),
    });
    let _abort = AbortOnDrop(shared.clone());
    let mut guests = Vec::new();
    for idx in 0..VMS {
        let path = daemon.path(&format!("{}.sock", vm_name(idx)));
        let vm = TestVm::connect(&path);
        let peer = vm.peer_pid();
        assert_eq!(peer, daemon.pid(), "peer pid of {}", vm_name(idx));
        guests.push(Guest {
            idx,
            path,
            vm,
            peer,
            rng: Rng::new(seed ^ (idx as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            beliefs: BTreeSet::new(),
            shared: shared.clone(),
        });
    }
    let handles = guests
        .into_iter()
        .map(|g| {
            Some(
                std::thread::Builder::new()
                    .name(g.name())
                    .spawn(move || g.run())
                    .unwrap(),
            )
        })
        .collect();
    let mut chaos = Chaos {
        daemon,
        shared: shared.clone(),
        handles,
        seed,
        kills: 0,
        double_kills: 0,
        quiesces: 0,
        replayed: 0,
        startup_rounds: 0,
        startup_kills: BTreeMap::new(),
        startup_delays: Vec::new(),
        startup_pids: BTreeSet::new(),
        loaded_after: Vec::new(),
        ready_after: Vec::new(),
    };

    while chaos.kills < target_kills {
        // Let the VMs run for a random while, then kill.
        let run_for = Duration::from_millis(rng.below(120));
        chaos.sleep(run_for);
        chaos.kill_and_restart(&mut rng);
        // Sometimes kill again while the VMs reconnect and their requests
        // are re-processed: once 1..=VMS of them have reconnected.
        if chaos.kills < target_kills && rng.chance(30) {
            let want = Stats::get(&shared.stats.reconnects) + 1 + rng.below(VMS as u64);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Stats::get(&shared.stats.reconnects) < want && Instant::now() < deadline {
                chaos.sleep(Duration::from_micros(200));
            }
            chaos.sleep(Duration::from_micros(rng.below(3000)));
            chaos.kill_and_restart(&mut rng);
            chaos.double_kills += 1;
        }
        let when = format!("after kill {}", chaos.kills);
        chaos.quiesce_and_check(&when);
    }

    // The end: every VM frees what it holds and RESETs, staying connected
    // (a disconnect would reclaim, and hide a leak).
    shared.stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut vms = Vec::new();
    for i in 0..VMS {
        while !chaos.handles[i].as_ref().unwrap().is_finished() {
            if Instant::now() > deadline {
                chaos.fail(&format!("{} did not finish freeing", vm_name(i)));
            }
            if let Some(status) = chaos.daemon.try_exited() {
                chaos.fail(&format!("the daemon exited by itself: {status}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match chaos.handles[i].take().unwrap().join() {
            Ok(vm) => vms.push(vm),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panicked".into());
                chaos.fail(&format!("frontend {} failed at the end: {why}", vm_name(i)));
            }
        }
    }
    let empty = vec![BTreeSet::new(); VMS];
    if let Err(e) = chaos.check_holdings(&empty) {
        chaos.fail(&format!("after freeing everything: {e}"));
    }
    let listed = chaos.daemon.ctl_json(&["pasids"]);
    if !listed.as_array().is_some_and(Vec::is_empty) {
        chaos.fail(&format!(
            "after freeing everything the daemon lists {listed}"
        ));
    }
    chaos.kill_and_restart(&mut rng);
    let listed = chaos.daemon.ctl_json(&["pasids"]);
    if !listed.as_array().is_some_and(Vec::is_empty) {
        chaos.fail(&format!("after the last restart the daemon lists {listed}"));
    }

    let s = &shared.stats;
    let log = chaos.daemon.log();
    let compactions = log.matches("event=compact ").count();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines() {
        if let Some(at) = line.find("event=") {
            let ev = line[at + 6..].split_whitespace().next().unwrap_or("");
            *events.entry(ev).or_default() += 1;
        }
    }
    eprintln!("chaos: daemon log events: {events:?}");
    if let Ok(keep) = std::env::var("VPASID_CHAOS_LOG") {
        std::fs::write(&keep, &log).unwrap();
        eprintln!("chaos: daemon log copied to {keep}");
    }
    for c in shared.changed.lock().unwrap().iter() {
        eprintln!("chaos: unpublished answer changed: {c}");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "chaos: seed {seed}: {} kills ({} while reconnecting), {} quiescent checks, {} batches, {} requests \
         ({} ALLOC ok, {} FREE ok, {} RESET, {} NO_SPACE, {} RATE_LIMITED); {} batches \
         interrupted, {} answers read only after a reconnect, {} reconnects ({} retried), \
         {} answers written but unpublished at a kill ({} identical after restart); \
         {} answered again from the record of their first answer; \
         {compactions} compactions; {elapsed:.1?}",
        chaos.kills,
        chaos.double_kills,
        chaos.quiesces,
        Stats::get(&s.batches),
        Stats::get(&s.requests),
        Stats::get(&s.alloc_ok),
        Stats::get(&s.free_ok),
        Stats::get(&s.resets),
        Stats::get(&s.no_space),
        Stats::get(&s.rate_limited),
        Stats::get(&s.interrupted),
        Stats::get(&s.after_reconnect),
        Stats::get(&s.reconnects),
        Stats::get(&s.reconnect_retries),
        Stats::get(&s.unpublished),
        Stats::get(&s.unpublished_same),
        chaos.replayed,
    );
    // Start-up kills that landed before the state was loaded: the delays
    // must reach into start-up, or the feature tests nothing.
    let startup_total: u64 = chaos.startup_kills.values().sum();
    let late: u64 = chaos
        .startup_kills
        .range(StartPhase::Loaded..)
        .map(|(_, n)| n)
        .sum();
    let phases: Vec<String> = chaos
        .startup_kills
        .iter()
        .map(|(p, n)| format!("{p:?} {n}"))
        .collect();
    eprintln!(
        "chaos: start-up of the {} restarts that stayed: spawn to event=state-loaded {}; \
         spawn to control socket answering {}",
        chaos.loaded_after.len(),
        spread(&chaos.loaded_after),
        spread(&chaos.ready_after)
    );
    let (met_ok, met_failed) = shared
        .met
        .lock()
        .unwrap()
        .iter()
        .filter(|(pid, _)| chaos.startup_pids.contains(pid))
        .fold((0, 0), |(ok, failed), (_, done)| {
            if *done {
                (ok + 1, failed)
            } else {
                (ok, failed + 1)
            }
        });
    eprintln!(
        "chaos: {startup_total} start-up kills ({} before event=state-loaded) after {} of the \
         kills, delays uniform in 0..={STARTUP_KILL_REACH}% of the median start-up so \
         far: {}; by phase reached: {}; VM reconnects that met such a daemon: {met_ok} \
         completed the handshake, {met_failed} failed",
        startup_total - late,
        chaos.startup_rounds,
        spread(&chaos.startup_delays),
        phases.join(", ")
    );
    if chaos.replayed == 0 {
        chaos.fail("no request was answered from a replay window: replays never happened");
    }
    if Stats::get(&s.after_reconnect) == 0 {
        chaos.fail("no answer was read after a reconnect: the kills never hit a request in flight");
    }
    if Stats::get(&s.reconnects) < VMS as u64 {
        chaos.fail("the VMs never reconnected");
    }
    if target_kills >= DEFAULT_KILLS && startup_total - late == 0 {
        chaos.fail(&format!(
            "none of the {startup_total} start-up kills landed before event=state-loaded: \
             the delays (up to {STARTUP_KILL_REACH}% of the median start-up) miss it \
             (spawn to event=state-loaded: {}; delays used: {})",
            spread(&chaos.loaded_after),
            spread(&chaos.startup_delays)
        ));
    }
    let loaded = events.get("state-loaded").copied().unwrap_or(0);
    if loaded as u64 != chaos.kills + 1 + late {
        chaos.fail(&format!(
            "{loaded} event=state-loaded lines for {} starts that stayed and {late} \
             killed after logging it",
            chaos.kills + 1
        ));
    }
    // The VMs never disconnect from a live daemon, and RESET is the only
    // other reason to reclaim: any other reclaim dropped a VM's PASIDs.
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("event=reclaim") && !l.contains("reason=\"driver reset\""))
    {
        chaos.fail(&format!("unexpected reclaim: {line}"));
    }
    if compactions == 0 {
        chaos.fail("the log shows no event=compact: --journal-limit never triggered compaction");
    }
    drop(chaos);
    drop(vms);
}
