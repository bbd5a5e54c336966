// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Requests over the real vhost-user socket, beside the floor measured in the
//! same run.
//!
//! The floor is an eventfd ping-pong between two threads: the least a
//! request can cost when the guest kicks and then waits for the device's
//! call. The daemon is the release binary, serving a test VM that plays QEMU
//! and the guest driver (memfd memory, real vrings, eventfds).
//!
//! Run: `cargo bench -p vhost-user-pasid --bench socket`
//! (`VPASID_BENCH_QUICK=1` for a short smoke run).

// Benchmark tooling, like a test: failing loudly is the right behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

#[path = "../tests/frontend/mod.rs"]
mod frontend;

use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use frontend::{Daemon, TestVm};
use pasid_protocol::{Request, Status};
use vmm_sys_util::eventfd::EventFd;

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

/// Round trips of `per_kick` requests per kick: half ALLOC, then the
/// matching FREEs in the next kick, so the space stays small.
fn daemon_round_trips(vm: &mut TestVm, per_kick: usize, kicks: usize) -> Figures {
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
            assert_eq!(Status::from_wire(resp.status), Some(Status::Ok));
            if let Request::Alloc { .. } = req {
                held.push(resp.pasid);
            }
        }
    }
    summarise(samples, per_kick)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a test.
    let quick = std::env::var_os("VPASID_BENCH_QUICK").is_some()
        || std::env::args().all(|a| a != "--bench");
    let (singles, batches) = if quick { (500, 200) } else { (20_000, 20_000) };

    let daemon = Daemon::start(&["--vm", "bench={dir}/bench.sock", "--quota", "100000"]);
    let mut vm = TestVm::connect(&daemon.path("bench.sock"));
    // Warm up both paths.
    daemon_round_trips(&mut vm, 1, 200);
    eventfd_floor(1000);

    let floor = eventfd_floor(singles);
    let one = daemon_round_trips(&mut vm, 1, singles);
    let many = daemon_round_trips(&mut vm, 64, batches);

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
    let ratio = one.p50.as_secs_f64() / floor.p50.as_secs_f64();
    println!(
        "single-request p50 / floor p50 = {ratio:.2}x (target <= 2x); \
         64/kick = {:.2} M requests/s (target >= 1 M)",
        many.per_sec / 1e6
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
