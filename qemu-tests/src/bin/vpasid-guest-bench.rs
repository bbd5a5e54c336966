// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vpasid-guest-bench`: what a PASID allocation costs a guest, measured
//! inside the guest kernel.
//!
//! In one guest boot (QEMU TCG) with the real `vhost-user-pasid` running, the
//! test-only `ioasid_exerciser` times N `ioasid_alloc()` + `ioasid_free()`
//! pairs over [1, 2^20 - 1]: first with the guest's default (in-guest)
//! allocator, then, after `modprobe virtio_pasid`, with every allocation
//! and free going to the host. Prints ns per pair for both and the ratio.
//!
//! Usage: `vpasid-guest-bench [--kernel 6.1|5.10|all] [--pairs N]`. Needs
//! root and the binaries built (`cargo build --release --bins`). TCG
//! inflates every figure; compare the two rows, not absolute numbers.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use qemu_tests::vpasid::{parse_bench, DriverStatus};
use qemu_tests::{
    ensure_setup, Daemon, DaemonConfig, Guest, GuestConfig, Kernel, VmSlot, VpasidGuest,
};

/// Default number of alloc/free pairs per round: a round through the host
/// takes 1.5-6 s under TCG on the project's 2-core machines.
const DEFAULT_PAIRS: u32 = 50_000;
/// Timed rounds per allocator; the median is reported.
const ROUNDS: usize = 3;
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

type BoxError = Box<dyn std::error::Error>;

#[derive(Debug)]
struct Options {
    kernels: Vec<Kernel>,
    pairs: u32,
}

fn usage() -> String {
    format!(
        "usage: vpasid-guest-bench [--kernel 6.1|5.10|all] [--pairs N]\n\
         Times N ioasid_alloc()+ioasid_free() pairs in a guest, first with the\n\
         guest's default allocator, then through vhost-user-pasid (default N = \
         {DEFAULT_PAIRS}, at most {MAX_PAIRS})."
    )
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        kernels: vec![Kernel::V6_1],
        pairs: DEFAULT_PAIRS,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--kernel" => {
                options.kernels = match value("--kernel")?.as_str() {
                    "6.1" => vec![Kernel::V6_1],
                    "5.10" => vec![Kernel::V5_10],
                    "all" => Kernel::ALL.to_vec(),
                    other => return Err(format!("unknown kernel {other:?}: use 6.1, 5.10 or all")),
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
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(Some(options))
}

/// One kernel's figures.
#[derive(Debug)]
struct Figures {
    kernel: Kernel,
    default_ns: u64,
    host_ns: u64,
    driver: DriverStatus,
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

/// A warm-up round, then `ROUNDS` timed rounds; prints each, returns the
/// median ns per pair.
fn bench(guest: &mut Guest, label: &str, pairs: u32) -> Result<u64, BoxError> {
    bench_once(guest, pairs.min(WARMUP_PAIRS))?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let ns = bench_once(guest, pairs)?;
        println!(
            "{label:<27} round {round}: {ns:>8} ns per pair ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        rounds.push(ns);
    }
    rounds.sort_unstable();
    Ok(rounds[ROUNDS / 2])
}

fn run_kernel(kernel: Kernel, pairs: u32) -> Result<Figures, BoxError> {
    println!(
        "\n=== Linux {kernel}: {pairs} ioasid_alloc()+ioasid_free() pairs over [{}, {}] ===",
        RANGE.0, RANGE.1
    );
    let daemon = Daemon::start(
        DaemonConfig::new()
            .vm(VmSlot::new(VM))
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
    let default_ns = bench(&mut guest, "guest default allocator", pairs)?;
    let before = daemon.vm(VM)?.counters;
    if before.request("ALLOC") != 0 {
        return Err("the default-allocator run reached the host".into());
    }

    guest.load_driver("")?;
    guest.wait_driver_state("active", CMD)?;
    let host_ns = bench(&mut guest, "host via vhost-user-pasid", pairs)?;
    let after = daemon.vm(VM)?.counters;
    let (allocs, frees) = (after.request("ALLOC"), after.request("FREE"));
    let expected = u64::from(pairs) * ROUNDS as u64 + u64::from(pairs.min(WARMUP_PAIRS));
    if allocs != expected || frees != expected {
        return Err(format!(
            "the host answered {allocs} ALLOC and {frees} FREE requests, expected {expected} each"
        )
        .into());
    }
    let driver = guest.driver_status()?;
    if !daemon.pasids()?.is_empty() {
        return Err("the host still lists PASIDs after the bench".into());
    }
    guest.check_health()?;
    guest.poweroff(CMD)?;
    let mut daemon = daemon;
    daemon.stop()?;
    Ok(Figures {
        kernel,
        default_ns,
        host_ns,
        driver,
    })
}

fn run(options: &Options) -> Result<(), BoxError> {
    println!(
        "Setting up (QEMU chroot, kernels, modules, initramfs; cached after the first run)..."
    );
    ensure_setup()?;
    let mut all = Vec::new();
    for &kernel in &options.kernels {
        all.push(run_kernel(kernel, options.pairs)?);
    }

    println!(
        "\n=== Results (QEMU TCG, 1 vCPU; median of {ROUNDS} rounds, ns per \
         ioasid_alloc()+ioasid_free() pair) ==="
    );
    println!(
        "{:<7} {:>8} {:>16} {:>16} {:>9} {:>15} {:>15}",
        "kernel", "pairs", "default ns/pair", "host ns/pair", "ratio", "last rtt ns", "max rtt ns"
    );
    for f in &all {
        let ratio = if f.default_ns == 0 {
            f64::INFINITY
        } else {
            f.host_ns as f64 / f.default_ns as f64
        };
        println!(
            "{:<7} {:>8} {:>16} {:>16} {:>8.1}x {:>15} {:>15}",
            f.kernel.name(),
            options.pairs,
            f.default_ns,
            f.host_ns,
            ratio,
            f.driver.counter("last_rtt_ns"),
            f.driver.counter("max_rtt_ns"),
        );
    }
    println!(
        "\nA host pair is two virtqueue round trips (ALLOC, FREE) that the guest \
         busy-polls for; the default allocator is an in-guest xarray."
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
