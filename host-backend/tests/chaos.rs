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
use std::path::PathBuf;
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
                    self.peer = pid;
                }
                Err(e) => {
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

    fn kill_and_restart(&mut self) {
        self.watch();
        self.shared.current_pid.store(0, Ordering::SeqCst);
        self.daemon.kill9();
        self.kills += 1;
        self.daemon.restart();
        self.shared
            .current_pid
            .store(self.daemon.pid(), Ordering::SeqCst);
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
    };

    while chaos.kills < target_kills {
        // Let the VMs run for a random while, then kill.
        let run_for = Duration::from_millis(rng.below(120));
        chaos.sleep(run_for);
        chaos.kill_and_restart();
        // Sometimes kill again while the VMs reconnect and their requests
        // are re-processed: once 1..=VMS of them have reconnected.
        if chaos.kills < target_kills && rng.chance(30) {
            let want = Stats::get(&shared.stats.reconnects) + 1 + rng.below(VMS as u64);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Stats::get(&shared.stats.reconnects) < want && Instant::now() < deadline {
                chaos.sleep(Duration::from_micros(200));
            }
            chaos.sleep(Duration::from_micros(rng.below(3000)));
            chaos.kill_and_restart();
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
    chaos.kill_and_restart();
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
    if chaos.replayed == 0 {
        chaos.fail("no request was answered from a replay window: replays never happened");
    }
    if Stats::get(&s.after_reconnect) == 0 {
        chaos.fail("no answer was read after a reconnect: the kills never hit a request in flight");
    }
    if Stats::get(&s.reconnects) < VMS as u64 {
        chaos.fail("the VMs never reconnected");
    }
    let loaded = events.get("state-loaded").copied().unwrap_or(0);
    if loaded as u64 != chaos.kills + 1 {
        chaos.fail(&format!(
            "{loaded} event=state-loaded lines for {} starts",
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
