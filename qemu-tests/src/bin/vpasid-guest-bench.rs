// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vpasid-guest-bench`: what a PASID allocation costs a guest, measured
//! inside the guest kernel.
//!
//! In one guest boot (QEMU TCG) with the real `vhost-user-pasid` running, the
//! test-only `ioasid_exerciser` times N `ioasid_alloc()` + `ioasid_free()`
//! pairs over [1, 2^20 - 1] in the same boot with three allocators: the
//! guest's default (in-guest) allocator; `virtio_pasid` with leases (the
//! host's cap 32: the driver's cache serves the pairs); and `virtio_pasid
//! lease=0`, with every allocation and free going to the host (the v1
//! path). The three take turns in each of 5 rounds (the driver is loaded
//! and unloaded around its runs), each run after an untimed warm-up and a
//! short pause (SETTLE).
//! Prints ns per pair (median round), the ratios to the default allocator
//! and the host requests per 10,000 pairs.
//!
//! Held mode (`--mode held`): as SVA users keep their PASIDs, the exerciser
//! allocates N (2000, then 20,000) in a row and keeps them, then frees them
//! all (`held N MIN MAX`), with the same three allocators taking turns in
//! each round of the same boot, the host's lease cap being its default.
//! A round times 20,000 allocations per allocator: ten bursts of 2000, or
//! one of 20,000, each after SETTLE, and takes their mean.
//! Prints ns per allocation and per free (median round), each ratio to the
//! default allocator (by medians, and as the median of the rounds' own
//! ratios), and host requests per 1000 allocations (all the requests of
//! the run, its frees' included).
//!
//! Threads are placed as docs/operations.md ("Answer latency") recommends
//! for a deployment: the guest's vCPU thread on a host core of its own,
//! QEMU's other threads and the daemon on the rest (`pinning.rs`; needs 2
//! host CPUs). `--no-pin` leaves them where Linux puts them: it wakes the
//! daemon's answering thread and QEMU's main loop onto the vCPU's core, so
//! every host answer also costs the vCPU time.
//!
//! Usage: `vpasid-guest-bench [--kernel 6.1|5.10|all] [--mode pairs|held|all]
//! [--pairs N] [--rounds R] [--no-pin]`. Needs root and the binaries built
//! (`cargo build --release --bins`). TCG inflates every figure; compare the
//! rows, not absolute numbers.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use qemu_tests::daemon::VmCounters;
use qemu_tests::pinning::pin_apart;
use qemu_tests::vpasid::{parse_bench, DriverStatus, Held};
use qemu_tests::{
    ensure_setup, Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest,
};

/// Default number of alloc/free pairs per round: a round through the host
/// takes 1.5-6 s under TCG on the project's 2-core machines.
const DEFAULT_PAIRS: u32 = 50_000;
/// Timed rounds per allocator; the median is reported.
const DEFAULT_ROUNDS: u32 = 5;
/// Most rounds `--rounds` takes.
const MAX_ROUNDS: u32 = 99;
/// Pairs of the untimed warm-up round (TCG translates the code path first).
const WARMUP_PAIRS: u32 = 1000;
/// The exerciser's limit.
const MAX_PAIRS: u32 = 10_000_000;
/// The widest PASID range: PASID 0 is reserved.
const RANGE: (u32, u32) = (1, (1 << 20) - 1);
/// Bound on one bench command.
const BENCH_TIMEOUT: Duration = Duration::from_secs(300);
const CMD: Duration = Duration::from_secs(60);
const VM: &str = "bench";
/// The host's lease cap for the bench VM, which the leased driver uses.
const LEASE: u32 = 32;
/// The target: leased at most this many times the default
/// allocator's ns per pair.
const TARGET_RATIO: f64 = 1.25;

/// Held mode: PASIDs allocated in a row and kept, per run.
const HELD_SIZES: [u32; 2] = [2000, 20_000];
/// Held mode: the bench VM's quota, above the largest burst plus any cap.
const HELD_QUOTA: u32 = 32_768;
/// Held mode targets: per allocation and per free, at most this many times
/// the default allocator; at most this many host requests per 1000
/// allocations.
const HELD_TARGET_RATIO: f64 = 1.5;
const HELD_TARGET_REQUESTS: f64 = 40.0;
/// Held mode: allocations of the untimed warm-up run.
const HELD_WARMUP: u32 = 500;
/// Held mode: allocations timed per allocator and round. A round runs
/// bursts of N until it has this many (at least one burst), each after the
/// SETTLE pause, and takes their mean: a burst of 2000 lasts a few ms, and
/// this machine's speed changes twofold over such spans (seen in one boot:
/// the default allocator's 2000 frees at 1.0 or 2.1 us each, run after
/// run), so that one burst per round left each median to chance.
const HELD_ROUND_ALLOCS: u32 = 20_000;
/// Idle time before each timed run: the previous run's frees end in
/// kfree_rcu(), which RCU completes later, in the guest's softirq and
/// kthreads; without a pause they fall into whichever run comes next
/// (seen: the default allocator's figures varying sixfold in one boot).
const SETTLE: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error>;

#[derive(Debug)]
struct Options {
    kernels: Vec<Kernel>,
    pairs: u32,
    rounds: u32,
    pairs_mode: bool,
    held_mode: bool,
    /// Put the vCPU thread on a core of its own (`pinning.rs`).
    pin: bool,
}

fn usage() -> String {
    format!(
        "usage: vpasid-guest-bench [--kernel 6.1|5.10|all] [--mode pairs|held|all]\n\
         \x20                         [--pairs N] [--rounds R] [--no-pin]\n\
         Times N ioasid_alloc()+ioasid_free() pairs in a guest with the guest's\n\
         default allocator, virtio_pasid with leases and virtio_pasid lease=0,\n\
         taking turns in each of R rounds (default N = {DEFAULT_PAIRS}, at most\n\
         {MAX_PAIRS}; default R = {DEFAULT_ROUNDS}, at most {MAX_ROUNDS}). Held mode:\n\
         {HELD_SIZES:?} allocations in a row, kept, then all freed, the same way.\n\
         Default mode: all (pairs, then held). The vCPU thread runs on a host\n\
         CPU of its own, QEMU's other threads and the daemon on the rest, as\n\
         docs/operations.md recommends; --no-pin leaves them unpinned."
    )
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        kernels: vec![Kernel::V6_1],
        pairs: DEFAULT_PAIRS,
        rounds: DEFAULT_ROUNDS,
        pairs_mode: true,
        held_mode: true,
        pin: true,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-pin" => options.pin = false,
            "--kernel" => {
                options.kernels = match value("--kernel")?.as_str() {
                    "6.1" => vec![Kernel::V6_1],
                    "5.10" => vec![Kernel::V5_10],
                    "all" => Kernel::ALL.to_vec(),
                    other => return Err(format!("unknown kernel {other:?}: use 6.1, 5.10 or all")),
                }
            }
            "--mode" => {
                (options.pairs_mode, options.held_mode) = match value("--mode")?.as_str() {
                    "pairs" => (true, false),
                    "held" => (false, true),
                    "all" => (true, true),
                    other => return Err(format!("unknown mode {other:?}: use pairs, held or all")),
                }
            }
            "--pairs" => {
                let text = value("--pairs")?;
                options.pairs = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAIRS).contains(n))
                    .ok_or_else(|| format!("--pairs must be 1..={MAX_PAIRS}, got {text:?}"))?;
            }
            "--rounds" => {
                let text = value("--rounds")?;
                options.rounds = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ROUNDS).contains(n))
                    .ok_or_else(|| format!("--rounds must be 1..={MAX_ROUNDS}, got {text:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(Some(options))
}

/// One allocator's figures on one kernel.
#[derive(Debug)]
struct Run {
    /// Median ns per pair.
    ns: u64,
    /// Host requests (all opcodes) per 10,000 pairs; 0 for the default
    /// allocator.
    requests_per_10k: f64,
    /// The driver's counters after the run (`None` for the default
    /// allocator).
    driver: Option<DriverStatus>,
}

/// One kernel's figures: the default allocator, leased virtio_pasid and
/// `lease=0` virtio_pasid, from the same boot.
#[derive(Debug)]
struct Figures {
    kernel: Kernel,
    default: Run,
    leased: Run,
    v1: Run,
    /// Median over the rounds of leased ns / default ns in the same round:
    /// each round's pair ran back to back, so the host's load changes
    /// less between them than between the sides' medians.
    paired_ratio: f64,
}

fn bench_once(guest: &mut Guest, pairs: u32) -> Result<u64, BoxError> {
    let command = format!("bench {pairs} {} {}", RANGE.0, RANGE.1);
    let out = guest.run_ok(
        &format!(
            "echo '{command}' > {ctl} && cat {ctl}",
            ctl = qemu_tests::vpasid::EXERCISER_CTL
        ),
        BENCH_TIMEOUT,
    )?;
    Ok(parse_bench(out.trim())?)
}

/// One allocator under test: `None` for the guest's default allocator,
/// else `virtio_pasid` loaded with these module parameters.
struct Side {
    label: &'static str,
    driver_params: Option<&'static str>,
    /// ns per pair of each timed round.
    rounds: Vec<u64>,
    /// Host requests answered during this side's rounds, by opcode (RESET
    /// at probe and remove excluded).
    requests: VmCounters,
    /// The driver's counters after its last round.
    driver: Option<DriverStatus>,
}

impl Side {
    fn new(label: &'static str, driver_params: Option<&'static str>) -> Self {
        Side {
            label,
            driver_params,
            rounds: Vec::new(),
            requests: VmCounters::default(),
            driver: None,
        }
    }

    /// The median round, and the host requests per 10,000 pairs.
    fn run(&self, pairs: u32, rounds: u32) -> Run {
        let mut sorted = self.rounds.clone();
        sorted.sort_unstable();
        let ns = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        let per_pairs = self.requests.total_requests();
        Run {
            ns,
            requests_per_10k: per_pairs as f64 * 10_000.0 / pairs_per_side(pairs, rounds) as f64,
            driver: self.driver.clone(),
        }
    }
}

/// Pairs one side runs over all rounds: a warm-up and a timed run each.
fn pairs_per_side(pairs: u32, rounds: u32) -> u64 {
    (u64::from(pairs) + u64::from(pairs.min(WARMUP_PAIRS))) * u64::from(rounds)
}

/// One round of `side`: loads the driver if the side has one, an untimed
/// warm-up, a timed run (printed), and unloads the driver again (which
/// gives its cache back: the host must then hold nothing).
fn round(
    guest: &mut Guest,
    daemon: &Daemon,
    side: &mut Side,
    round: usize,
    pairs: u32,
) -> Result<(), BoxError> {
    let before = daemon.vm(VM)?.counters;
    if let Some(params) = side.driver_params {
        guest.load_driver(params)?;
        guest.wait_driver_state("active", CMD)?;
    }
    bench_once(guest, pairs.min(WARMUP_PAIRS))?;
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    let ns = bench_once(guest, pairs)?;
    println!(
        "{:<32} round {round}: {ns:>8} ns per pair ({:.1} s)",
        side.label,
        started.elapsed().as_secs_f64()
    );
    side.rounds.push(ns);
    if side.driver_params.is_some() {
        side.driver = Some(guest.driver_status()?);
        guest.run_ok("rmmod virtio_pasid", CMD)?;
    }
    let after = daemon.vm(VM)?;
    if after.held != 0 {
        return Err(format!(
            "the host still holds {} PASIDs after {}",
            after.held, side.label
        )
        .into());
    }
    for (op, n) in after.counters.requests {
        if op != "RESET" {
            *side.requests.requests.entry(op.clone()).or_default() +=
                n.saturating_sub(before.request(&op));
        }
    }
    Ok(())
}

/// Puts the vCPU thread on a host core of its own, unless `--no-pin`, and
/// says where the threads run.
fn place_threads(guest: &Guest, daemon: &Daemon, pin: bool) -> Result<(), BoxError> {
    if !pin {
        println!("threads: unpinned (--no-pin)");
        return Ok(());
    }
    match pin_apart(guest.pid(), daemon.pid())? {
        Some(pinned) => println!("threads: {pinned}"),
        None => println!("threads: unpinned (fewer than 2 host CPUs, or no vCPU thread found)"),
    }
    Ok(())
}

fn run_kernel(kernel: Kernel, pairs: u32, rounds: u32, pin: bool) -> Result<Figures, BoxError> {
    println!(
        "\n=== Linux {kernel}: {pairs} ioasid_alloc()+ioasid_free() pairs over [{}, {}] ===",
        RANGE.0, RANGE.1
    );
    let daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new(VM).lease(LEASE))
            .test_name(format!("vpasid-guest-bench-{kernel}")),
    )?;
    let mut config = GuestConfig::new(VM, kernel).vhost_user(daemon.socket(VM)?);
    config.test_name = Some(format!("vpasid-guest-bench-{kernel}"));
    let started = Instant::now();
    let mut guest = Guest::boot(config)?;
    println!(
        "guest booted in {:.1} s (console log: {})",
        started.elapsed().as_secs_f64(),
        guest.log_path().display()
    );
    guest.load_exerciser()?;
    place_threads(&guest, &daemon, pin)?;

    // The three sides take turns in every round, so that a change in the
    // host's load (2 cores shared) hits all three alike.
    let mut sides = [
        Side::new("guest default allocator", None),
        Side::new("virtio_pasid, leases (lease=32)", Some("")),
        Side::new("virtio_pasid, lease=0 (v1 path)", Some("lease=0")),
    ];
    for n in 1..=rounds as usize {
        for side in &mut sides {
            round(&mut guest, &daemon, side, n, pairs)?;
        }
    }
    let [default, leased, v1] = &sides;

    if default.requests.total_requests() != 0 {
        return Err(format!(
            "the default-allocator runs reached the host: {:?}",
            default.requests.requests
        )
        .into());
    }
    let cap = leased.driver.as_ref().map_or(0, |d| d.counter("lease_cap"));
    if cap != u64::from(LEASE) || leased.requests.request("GRANT") == 0 {
        return Err(format!(
            "the leased runs did not lease: lease_cap {cap}, host requests {:?}",
            leased.requests.requests
        )
        .into());
    }
    let expected = pairs_per_side(pairs, rounds);
    let (allocs, frees) = (v1.requests.request("ALLOC"), v1.requests.request("FREE"));
    if allocs != expected || frees != expected {
        return Err(format!(
            "the lease=0 runs made {allocs} ALLOC and {frees} FREE requests, expected {expected} each"
        )
        .into());
    }
    for side in &sides {
        println!(
            "host requests, {}: {:?}",
            side.label, side.requests.requests
        );
    }

    guest.check_health()?;
    guest.poweroff(CMD)?;
    let mut daemon = daemon;
    daemon.stop()?;
    Ok(Figures {
        kernel,
        default: default.run(pairs, rounds),
        leased: leased.run(pairs, rounds),
        v1: v1.run(pairs, rounds),
        paired_ratio: median_ratio(&leased.rounds, &default.rounds),
    })
}

/// The median of `ns[i] / base[i]` over the rounds.
fn median_ratio(ns: &[u64], base: &[u64]) -> f64 {
    let mut ratios: Vec<f64> = ns.iter().zip(base).map(|(&n, &b)| ratio(n, b)).collect();
    ratios.sort_unstable_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `ns` as a multiple of the default allocator's `base`.
fn ratio(ns: u64, base: u64) -> f64 {
    if base == 0 {
        f64::INFINITY
    } else {
        ns as f64 / base as f64
    }
}

/// Held mode: one allocator's timed runs of one burst size.
#[derive(Debug, Default)]
struct HeldSide {
    /// ns per allocation, per free, of each timed round (the mean of its
    /// bursts).
    alloc: Vec<u64>,
    free: Vec<u64>,
    /// Host requests (all opcodes but RESET) of the timed runs.
    requests: u64,
    /// The driver's counters after its last timed run.
    driver: Option<DriverStatus>,
}

/// Held mode: one kernel's figures for one burst size, from one boot.
#[derive(Debug)]
struct HeldFigures {
    kernel: Kernel,
    n: u32,
    rounds: u32,
    /// Bursts of `n` per round and allocator (`held_bursts()`).
    bursts: u32,
    /// The host's lease cap for the VM (its default).
    cap: u32,
    /// default, leased, lease=0.
    sides: [HeldSide; 3],
}

impl HeldFigures {
    fn median(ns: &[u64]) -> u64 {
        let mut sorted = ns.to_vec();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(0)
    }

    /// Median ns per allocation and per free of side `i`.
    fn ns(&self, i: usize) -> (u64, u64) {
        (
            Self::median(&self.sides[i].alloc),
            Self::median(&self.sides[i].free),
        )
    }

    /// Side `i`'s ratios to the default allocator (medians), alloc and free.
    fn ratios(&self, i: usize) -> (f64, f64) {
        let (a, f) = self.ns(i);
        let (da, df) = self.ns(0);
        (ratio(a, da), ratio(f, df))
    }

    /// Side `i`'s ratios to the default allocator as the median of the
    /// rounds' own ratios, alloc and free.
    fn paired_ratios(&self, i: usize) -> (f64, f64) {
        let (side, base) = (&self.sides[i], &self.sides[0]);
        (
            median_ratio(&side.alloc, &base.alloc),
            median_ratio(&side.free, &base.free),
        )
    }

    /// Side `i`'s host requests per 1000 allocations.
    fn requests_per_1000(&self, i: usize) -> f64 {
        let allocations = f64::from(self.n) * f64::from(self.bursts) * f64::from(self.rounds);
        self.sides[i].requests as f64 * 1000.0 / allocations
    }
}

/// One held run of `n` in a row over [`RANGE`], which must succeed
/// completely and hand out no duplicate, out-of-range or unmapped ID.
fn held_once(guest: &mut Guest, n: u32) -> Result<Held, BoxError> {
    let held = guest.held(n, RANGE, BENCH_TIMEOUT)?;
    if held.done != u64::from(n) || held.duplicate + held.out_of_range + held.lookup != 0 {
        return Err(format!("held {n}: {held:?}").into());
    }
    Ok(held)
}

/// Bursts of `n` a held round times per allocator: `HELD_ROUND_ALLOCS`
/// allocations, at least one burst.
fn held_bursts(n: u32) -> u32 {
    (HELD_ROUND_ALLOCS / n).max(1)
}

/// Held mode on one kernel: for each burst size, the three allocators
/// take turns in each round, in one boot.
fn run_held_kernel(kernel: Kernel, rounds: u32, pin: bool) -> Result<Vec<HeldFigures>, BoxError> {
    println!(
        "\n=== Linux {kernel}: held bursts of {HELD_SIZES:?} ioasid_alloc() in a row, kept, \
         then all freed, over [{}, {}] ===",
        RANGE.0, RANGE.1
    );
    let name = format!("vpasid-guest-bench-held-{kernel}");
    let daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new(VM).quota(HELD_QUOTA))
            .test_name(name.clone()),
    )?;
    let mut config = GuestConfig::new(VM, kernel).vhost_user(daemon.socket(VM)?);
    config.test_name = Some(name);
    let mut guest = Guest::boot(config)?;
    guest.load_exerciser()?;
    place_threads(&guest, &daemon, pin)?;
    let cap = daemon.vm(VM)?.lease;
    println!("host lease cap (its default): {cap}; quota {HELD_QUOTA}");
    let params: [(&str, Option<&str>); 3] = [
        ("guest default allocator", None),
        ("virtio_pasid, leases", Some("")),
        ("virtio_pasid, lease=0", Some("lease=0")),
    ];
    let mut all = Vec::new();
    for n in HELD_SIZES {
        let bursts = held_bursts(n);
        let mut sides: [HeldSide; 3] = Default::default();
        for r in 1..=rounds {
            for ((label, driver), side) in params.iter().zip(sides.iter_mut()) {
                if let Some(p) = driver {
                    guest.load_driver(p)?;
                    guest.wait_driver_state("active", CMD)?;
                }
                held_once(&mut guest, HELD_WARMUP)?;
                let warm = match driver {
                    Some(_) => Some(guest.driver_status()?),
                    None => None,
                };
                let before = daemon.vm(VM)?.counters;
                let (mut alloc_ns, mut free_ns) = (0, 0);
                for _ in 0..bursts {
                    std::thread::sleep(SETTLE);
                    let held = held_once(&mut guest, n)?;
                    alloc_ns += held.alloc_ns;
                    free_ns += held.free_ns;
                }
                let (alloc_ns, free_ns) =
                    (alloc_ns / u64::from(bursts), free_ns / u64::from(bursts));
                let after = daemon.vm(VM)?.counters;
                let requests: u64 = after
                    .requests
                    .iter()
                    .filter(|(op, _)| op.as_str() != "RESET")
                    .map(|(op, &k)| k.saturating_sub(before.request(op)))
                    .sum();
                println!(
                    "{label:<26} N={n:<6} round {r}: {alloc_ns:>8} ns/alloc {free_ns:>8} ns/free \
                     (mean of {bursts}), {requests} host requests"
                );
                side.alloc.push(alloc_ns);
                side.free.push(free_ns);
                side.requests += requests;
                if let Some(warm) = &warm {
                    let status = guest.driver_status()?;
                    println!("{:<26} {}", "", where_time_went(&status, warm));
                    side.driver = Some(status);
                    guest.run_ok("rmmod virtio_pasid", CMD)?;
                }
                let vm = daemon.vm(VM)?;
                if vm.held != 0 {
                    return Err(
                        format!("the host still holds {} PASIDs after {label}", vm.held).into(),
                    );
                }
            }
        }
        if sides[0].requests != 0 {
            return Err("the default-allocator runs reached the host".into());
        }
        all.push(HeldFigures {
            kernel,
            n,
            rounds,
            bursts,
            cap,
            sides,
        });
    }
    guest.check_health()?;
    guest.poweroff(CMD)?;
    let mut daemon = daemon;
    daemon.stop()?;
    Ok(all)
}

/// Where the time of a driver's timed run went, from its counters after
/// the run less those before it (after the warm-up): waits for the host
/// inside alloc() and free(), the mean round trip of every answer, single
/// FREEs, misses.
fn where_time_went(d: &DriverStatus, before: &DriverStatus) -> String {
    let n = |name: &str| d.counter(name).saturating_sub(before.counter(name));
    let mean = |ns: &str, count: &str| n(ns) / n(count).max(1) / 1000;
    format!(
        "alloc waits {} ({} us total, {} us each), free waits {} ({} us total), \
         answers {} (mean rtt {} us), single FREEs {}, misses {}",
        n("alloc_waits"),
        n("alloc_wait_ns") / 1000,
        mean("alloc_wait_ns", "alloc_waits"),
        n("free_waits"),
        n("free_wait_ns") / 1000,
        n("answers"),
        mean("answer_rtt_ns", "answers"),
        n("single_frees"),
        n("lease_misses"),
    )
}

/// Prints the held-mode table and the targets.
fn print_held(all: &[HeldFigures], rounds: u32) {
    println!(
        "\n=== Held bursts (QEMU TCG, 1 vCPU; median of {rounds} rounds, each the mean of \
         {HELD_ROUND_ALLOCS} / N bursts; ns per ioasid_alloc() and per ioasid_free(); host \
         requests per 1000 allocations, frees included) ==="
    );
    println!(
        "{:<7} {:>6} {:>5} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>9} {:>8} {:>9} {:>8} {:>7} {:>7}",
        "kernel",
        "N",
        "cap",
        "def alloc",
        "def free",
        "lsd alloc",
        "ratio",
        "lsd free",
        "ratio",
        "l=0 alloc",
        "ratio",
        "l=0 free",
        "ratio",
        "req lsd",
        "req l=0"
    );
    for f in all {
        let (da, df) = f.ns(0);
        let (la, lf) = f.ns(1);
        let (va, vf) = f.ns(2);
        let (lra, lrf) = f.ratios(1);
        let (vra, vrf) = f.ratios(2);
        println!(
            "{:<7} {:>6} {:>5} {:>9} {:>9} {:>9} {:>6.2}x {:>9} {:>6.2}x {:>9} {:>7.1}x {:>9} {:>7.1}x {:>7.1} {:>7.1}",
            f.kernel.name(), f.n, f.cap, da, df, la, lra, lf, lrf, va, vra, vf, vrf,
            f.requests_per_1000(1), f.requests_per_1000(2)
        );
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    for f in all {
        let (ra, rf) = f.ratios(1);
        let (pa, pf) = f.paired_ratios(1);
        let req = f.requests_per_1000(1);
        println!(
            "Linux {} N={}: leased {ra:.2}x per alloc ({}), {rf:.2}x per free ({}; target <= \
             {HELD_TARGET_RATIO}x) by medians, {pa:.2}x and {pf:.2}x by the median of the \
             rounds' own ratios; {req:.1} host requests per 1000 allocations (target <= \
             {HELD_TARGET_REQUESTS}: {}); driver after the last run: {}",
            f.kernel.name(),
            f.n,
            met(ra <= HELD_TARGET_RATIO),
            met(rf <= HELD_TARGET_RATIO),
            met(req <= HELD_TARGET_REQUESTS),
            f.sides[1]
                .driver
                .as_ref()
                .map_or(String::new(), |d| format!(
                    "lease_size {} hits {} misses {} refills {} returns {}",
                    d.counter("lease_size"),
                    d.counter("lease_hits"),
                    d.counter("lease_misses"),
                    d.counter("refills"),
                    d.counter("returns")
                )),
        );
    }
}

fn run(options: &Options) -> Result<(), BoxError> {
    println!(
        "Setting up (QEMU chroot, kernels, modules, initramfs; cached after the first run)..."
    );
    ensure_setup()?;
    if options.held_mode {
        let mut held = Vec::new();
        for &kernel in &options.kernels {
            held.extend(run_held_kernel(kernel, options.rounds, options.pin)?);
        }
        print_held(&held, options.rounds);
    }
    if !options.pairs_mode {
        return Ok(());
    }
    let mut all = Vec::new();
    for &kernel in &options.kernels {
        all.push(run_kernel(
            kernel,
            options.pairs,
            options.rounds,
            options.pin,
        )?);
    }

    println!(
        "\n=== Results (QEMU TCG, 1 vCPU; median of {} rounds, ns per \
         ioasid_alloc()+ioasid_free() pair; host requests per 10,000 pairs) ===",
        options.rounds
    );
    println!(
        "{:<7} {:>8} {:>10} {:>10} {:>7} {:>10} {:>7} {:>11} {:>11} {:>10}",
        "kernel",
        "pairs",
        "default",
        "leased",
        "ratio",
        "lease=0",
        "ratio",
        "req leased",
        "req lease=0",
        "hits/round"
    );
    for f in &all {
        let hits = f
            .leased
            .driver
            .as_ref()
            .map_or(0, |d| d.counter("lease_hits"));
        println!(
            "{:<7} {:>8} {:>10} {:>10} {:>6.2}x {:>10} {:>6.2}x {:>11.1} {:>11.1} {:>10}",
            f.kernel.name(),
            options.pairs,
            f.default.ns,
            f.leased.ns,
            ratio(f.leased.ns, f.default.ns),
            f.v1.ns,
            ratio(f.v1.ns, f.default.ns),
            f.leased.requests_per_10k,
            f.v1.requests_per_10k,
            hits,
        );
    }
    for f in &all {
        let r = ratio(f.leased.ns, f.default.ns);
        let met = |r: f64| if r <= TARGET_RATIO { "met" } else { "NOT met" };
        println!(
            "Linux {}: leased {r:.2}x the default allocator by medians ({}), {:.2}x by the \
             median of the rounds' own ratios ({}; target <= {TARGET_RATIO}x); {:.1} host \
             requests per 10,000 pairs (target <= 100: {})",
            f.kernel.name(),
            met(r),
            f.paired_ratio,
            met(f.paired_ratio),
            f.leased.requests_per_10k,
            if f.leased.requests_per_10k <= 100.0 {
                "met"
            } else {
                "NOT met"
            },
        );
    }
    println!(
        "\nA lease=0 pair is two virtqueue round trips (ALLOC, FREE) that the guest \
         busy-polls for; a leased pair is served by the driver's cache; the default \
         allocator is an in-guest xarray."
    );
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vpasid-guest-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpasid-guest-bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
