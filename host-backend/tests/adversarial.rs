// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A hostile frontend against the real daemon over its real sockets, while a
//! well-behaved VM keeps allocating in a thread and must see every request
//! succeed with a p99 round trip under [`P99_BOUND`].
//!
//! Covered: chains of the wrong shape, zero-length and huge buffers,
//! swapped read/write flags, buffers outside guest memory, in a gap or
//! straddling two memory regions, looping and nested indirect tables, an
//! avail index that jumps past the queue, kicks with nothing queued and
//! floods of kicks; FREE of PASIDs another VM or the host holds, stale and
//! duplicate tags; allocation and request-rate floods; many hostile
//! reconnects (no thread or descriptor leak); seccomp, privilege drop and
//! the control socket's peer check. See docs/security.md.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use frontend::{
    held_by, Daemon, RawDesc, TestVm, FAR_GPA, FAR_SIZE, MEM_SIZE, REGION_SPLIT, SCRATCH_GPA,
};
use pasid_protocol::{Request, Response, Status, PASID_NONE, RESPONSE_SIZE};
use vhost::VhostBackend;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// The well-behaved VM's p99 round trip must stay under this, whatever the
/// hostile VM does (generous: the daemon answers in microseconds).
const P99_BOUND: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(10);
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

fn status(r: Response) -> Status {
    Status::from_wire(r.status).unwrap()
}

// ---------------------------------------------------------------------------
// The well-behaved VM

/// What the well-behaved VM saw.
struct GoodReport {
    rtts: Vec<Duration>,
    failures: Vec<String>,
}

impl GoodReport {
    fn p99(&self) -> Duration {
        let mut s = self.rtts.clone();
        s.sort_unstable();
        s[((s.len() - 1) * 99) / 100]
    }

    /// Every request succeeded, there were enough of them to mean
    /// something, and the p99 round trip stayed under the bound.
    fn assert_healthy(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: the good VM saw failures: {:?}",
            self.failures
        );
        assert!(
            self.rtts.len() >= 100,
            "{what}: the good VM made only {} requests",
            self.rtts.len()
        );
        let p99 = self.p99();
        let max = self.rtts.iter().max().copied().unwrap_or_default();
        eprintln!(
            "{what}: good VM {} requests, p99 {p99:?}, max {max:?}",
            self.rtts.len()
        );
        assert!(p99 < P99_BOUND, "{what}: p99 {p99:?} >= {P99_BOUND:?}");
    }
}

/// A well-behaved VM allocating and freeing in a thread until stopped.
struct GoodVm {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<GoodReport>,
}

impl GoodVm {
    fn start(path: &Path, pace: Duration) -> GoodVm {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = path.to_path_buf();
        let thread = thread::spawn(move || {
            let mut vm = TestVm::connect(&path);
            let mut report = GoodReport {
                rtts: Vec::new(),
                failures: Vec::new(),
            };
            while !flag.load(Ordering::Relaxed) {
                let tag = vm.tag();
                let t = Instant::now();
                let r = vm.request(Request::Alloc {
                    tag,
                    min: 1,
                    max: 0xfffff,
                });
                report.rtts.push(t.elapsed());
                if status(r) != Status::Ok {
                    report.failures.push(format!("ALLOC: {r:?}"));
                    continue;
                }
                let tag = vm.tag();
                let t = Instant::now();
                let f = vm.request(Request::Free {
                    tag,
                    pasid: r.pasid,
                });
                report.rtts.push(t.elapsed());
                if status(f) != Status::Ok {
                    report.failures.push(format!("FREE {}: {f:?}", r.pasid));
                }
                if !pace.is_zero() {
                    thread::sleep(pace);
                }
            }
            report
        });
        GoodVm { stop, thread }
    }

    fn finish(self) -> GoodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the good VM's thread panicked")
    }
}

// ---------------------------------------------------------------------------
// Hostile chains

fn rd(addr: u64, len: u32) -> RawDesc {
    RawDesc {
        addr,
        len,
        flags: 0,
        next: 0,
    }
}

fn wr(addr: u64, len: u32) -> RawDesc {
    RawDesc {
        addr,
        len,
        flags: WRITE,
        next: 0,
    }
}

/// Links `descs` in order (NEXT to the following index).
fn linked(descs: &[RawDesc]) -> Vec<RawDesc> {
    let n = descs.len();
    descs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i + 1 < n {
                RawDesc {
                    flags: d.flags | NEXT,
                    next: i as u16 + 1,
                    ..*d
                }
            } else {
                *d
            }
        })
        .collect()
}

fn desc_bytes(d: RawDesc) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.flags.to_le_bytes());
    b[14..16].copy_from_slice(&d.next.to_le_bytes());
    b
}

/// Writes an indirect table at `gpa`.
fn write_table(vm: &TestVm, gpa: u64, descs: &[RawDesc]) {
    for (i, d) in descs.iter().enumerate() {
        vm.write_at(gpa + i as u64 * 16, &desc_bytes(*d));
    }
}

/// Where hostile tests put their buffers (region B, and A's end).
const REQ_AT: u64 = SCRATCH_GPA + 0x1000;
const RESP_AT: u64 = SCRATCH_GPA + 0x2000;
const TABLE_AT: u64 = SCRATCH_GPA + 0x3000;
const TABLE2_AT: u64 = SCRATCH_GPA + 0x4000;

/// Sends one chain whose descriptors are `descs` (written at indices 0..,
/// with their own flags and `next`); returns its used length.
fn send_raw(vm: &mut TestVm, descs: &[RawDesc]) -> u32 {
    for (i, d) in descs.iter().enumerate() {
        vm.write_desc(i as u16, *d);
    }
    vm.push_avail(0);
    vm.publish();
    vm.kick();
    let used = vm.wait_used(1, LONG);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, 0, "used head");
    used[0].1
}

/// One hostile chain and what the device must answer.
struct Case {
    name: &'static str,
    /// Sets up memory (indirect tables) and returns the chain.
    chain: Vec<RawDesc>,
    /// Indirect tables to write first: (address, entries).
    tables: Vec<(u64, Vec<RawDesc>)>,
    /// Where the response goes, if the chain is answered.
    resp_at: u64,
    /// Used length 16 and this status, or `None` for "returned unused".
    answer: Option<Status>,
}

fn case(name: &'static str, chain: Vec<RawDesc>, answer: Option<Status>) -> Case {
    Case {
        name,
        chain,
        tables: Vec::new(),
        resp_at: RESP_AT,
        answer,
    }
}

fn indirect(
    name: &'static str,
    head: RawDesc,
    tables: Vec<(u64, Vec<RawDesc>)>,
    answer: Option<Status>,
) -> Case {
    Case {
        name,
        chain: vec![head],
        tables,
        resp_at: RESP_AT,
        answer,
    }
}

fn hostile_cases() -> Vec<Case> {
    let alloc_ok = Some(Status::Ok);
    let invalid = Some(Status::Invalid);
    let straddle_req = REGION_SPLIT - 10; // 10 bytes in region A, 14 in B
    let table = |entries: Vec<RawDesc>| indirect_head(TABLE_AT, entries.len() as u32 * 16);
    let good_pair = linked(&[rd(REQ_AT, 24), wr(RESP_AT, 16)]);
    vec![
        // Shapes.
        case(
            "three readable parts, nothing writable",
            linked(&[rd(REQ_AT, 8), rd(REQ_AT + 8, 8), rd(REQ_AT + 16, 8)]),
            None,
        ),
        case(
            "request in 3 parts, response in 2",
            linked(&[
                rd(REQ_AT, 1),
                rd(REQ_AT + 1, 22),
                rd(REQ_AT + 23, 1),
                wr(RESP_AT, 3),
                wr(RESP_AT + 3, 13),
            ]),
            alloc_ok,
        ),
        case(
            "request too long",
            linked(&[rd(REQ_AT, 25), wr(RESP_AT, 16)]),
            invalid,
        ),
        // Zero-length and huge buffers.
        case(
            "zero-length request",
            linked(&[rd(REQ_AT, 0), wr(RESP_AT, 16)]),
            invalid,
        ),
        case(
            "zero-length request and response",
            linked(&[rd(REQ_AT, 0), wr(RESP_AT, 0)]),
            None,
        ),
        case(
            "huge request",
            linked(&[rd(0, u32::MAX), wr(RESP_AT, 16)]),
            None,
        ),
        case(
            "huge response",
            linked(&[rd(REQ_AT, 24), wr(0, u32::MAX)]),
            None,
        ),
        case(
            "many zero-length descriptors before a good pair",
            linked(
                &(0..100)
                    .map(|_| rd(REQ_AT, 0))
                    .chain([rd(REQ_AT, 24), wr(RESP_AT, 16)])
                    .collect::<Vec<_>>(),
            ),
            alloc_ok,
        ),
        // Read/write flags swapped.
        case(
            "response buffer first, request after it",
            linked(&[wr(RESP_AT, 16), rd(REQ_AT, 24)]),
            None,
        ),
        // The response goes to the first writable bytes.
        Case {
            resp_at: REQ_AT,
            ..case(
                "request in a writable buffer",
                linked(&[wr(REQ_AT, 24), wr(RESP_AT, 16)]),
                invalid,
            )
        },
        // Outside guest memory, in the gap, across regions.
        case(
            "request far outside memory",
            linked(&[rd(1 << 40, 24), wr(RESP_AT, 16)]),
            None,
        ),
        case(
            "response in the gap between regions",
            linked(&[rd(REQ_AT, 24), wr(MEM_SIZE + 0x1000, 16)]),
            None,
        ),
        case(
            "request running from region B into the gap",
            linked(&[rd(MEM_SIZE - 8, 24), wr(RESP_AT, 16)]),
            None,
        ),
        case(
            "response running past the far region",
            linked(&[rd(REQ_AT, 24), wr(FAR_GPA + FAR_SIZE - 8, 16)]),
            None,
        ),
        case(
            "address that wraps the address space",
            linked(&[rd(u64::MAX - 8, 24), wr(RESP_AT, 16)]),
            None,
        ),
        Case {
            resp_at: straddle_req + 24,
            ..case(
                "request straddling the two adjacent regions",
                linked(&[rd(straddle_req, 24), wr(straddle_req + 24, 16)]),
                alloc_ok,
            )
        },
        Case {
            resp_at: FAR_GPA,
            ..case(
                "response in the far region",
                linked(&[rd(REQ_AT, 24), wr(FAR_GPA, 16)]),
                alloc_ok,
            )
        },
        // Broken links.
        case(
            "chain that loops",
            vec![
                RawDesc {
                    flags: NEXT,
                    next: 1,
                    ..rd(REQ_AT, 24)
                },
                RawDesc {
                    flags: WRITE | NEXT,
                    next: 0,
                    ..wr(RESP_AT, 16)
                },
            ],
            None,
        ),
        case(
            "next index outside the queue",
            vec![
                RawDesc {
                    flags: NEXT,
                    next: 1,
                    ..rd(REQ_AT, 24)
                },
                RawDesc {
                    flags: WRITE | NEXT,
                    next: 1000,
                    ..wr(RESP_AT, 16)
                },
            ],
            None,
        ),
        // Indirect tables.
        indirect(
            "indirect table",
            table(good_pair.clone()),
            vec![(TABLE_AT, good_pair.clone())],
            alloc_ok,
        ),
        indirect(
            "indirect table that loops",
            table(good_pair.clone()),
            vec![(
                TABLE_AT,
                vec![
                    good_pair[0],
                    RawDesc {
                        flags: WRITE | NEXT,
                        next: 0,
                        ..good_pair[1]
                    },
                ],
            )],
            None,
        ),
        indirect(
            "indirect table inside an indirect table",
            indirect_head(TABLE_AT, 16),
            vec![
                (TABLE_AT, vec![indirect_head(TABLE2_AT, 32)]),
                (TABLE2_AT, good_pair.clone()),
            ],
            None,
        ),
        indirect(
            "indirect table outside memory",
            indirect_head(1 << 40, 32),
            Vec::new(),
            None,
        ),
        indirect(
            "indirect table of 20 bytes",
            indirect_head(TABLE_AT, 20),
            vec![(TABLE_AT, good_pair.clone())],
            None,
        ),
        indirect(
            "empty indirect table",
            indirect_head(TABLE_AT, 0),
            Vec::new(),
            None,
        ),
        // Mixed chains (5.x.6.1): direct descriptors, then one indirect
        // descriptor that ends the chain. The test VM never negotiates
        // VIRTIO_RING_F_INDIRECT_DESC: indirect tables are served anyway.
        Case {
            tables: vec![(TABLE_AT, vec![wr(RESP_AT, 16)])],
            ..case(
                "direct request, then an indirect table holding the response",
                linked(&[rd(REQ_AT, 24), indirect_head(TABLE_AT, 16)]),
                alloc_ok,
            )
        },
        Case {
            tables: vec![(TABLE_AT, linked(&[rd(REQ_AT + 10, 14), wr(RESP_AT, 16)]))],
            ..case(
                "request split between a direct descriptor and an indirect table",
                linked(&[rd(REQ_AT, 10), indirect_head(TABLE_AT, 32)]),
                alloc_ok,
            )
        },
        Case {
            tables: vec![(TABLE_AT, vec![rd(REQ_AT, 24)])],
            ..case(
                "indirect descriptor with NEXT: the response after it is ignored",
                vec![
                    RawDesc {
                        flags: INDIRECT | NEXT,
                        next: 1,
                        ..indirect_head(TABLE_AT, 16)
                    },
                    wr(RESP_AT, 16),
                ],
                None,
            )
        },
        indirect(
            "indirect descriptor flagged WRITE (the flag is ignored)",
            RawDesc {
                flags: INDIRECT | WRITE,
                ..table(good_pair.clone())
            },
            vec![(TABLE_AT, good_pair.clone())],
            alloc_ok,
        ),
        case(
            "zero-length readable descriptor after the response",
            linked(&[rd(REQ_AT, 24), wr(RESP_AT, 16), rd(REQ_AT, 0)]),
            None,
        ),
        case(
            "zero-length writable descriptor before the response",
            linked(&[rd(REQ_AT, 24), wr(RESP_AT + 0x100, 0), wr(RESP_AT, 16)]),
            alloc_ok,
        ),
        indirect(
            "zero-length descriptors in an indirect table",
            table(vec![rd(REQ_AT, 0); 4]),
            vec![(
                TABLE_AT,
                linked(&[
                    rd(REQ_AT, 0),
                    rd(REQ_AT, 24),
                    wr(RESP_AT, 0),
                    wr(RESP_AT, 16),
                ]),
            )],
            alloc_ok,
        ),
        indirect(
            "indirect table pointing past its end",
            table(good_pair.clone()),
            vec![(
                TABLE_AT,
                vec![
                    good_pair[0],
                    RawDesc {
                        flags: WRITE | NEXT,
                        next: 7,
                        ..good_pair[1]
                    },
                ],
            )],
            None,
        ),
    ]
}

fn indirect_head(addr: u64, len: u32) -> RawDesc {
    RawDesc {
        addr,
        len,
        flags: INDIRECT,
        next: 0,
    }
}

/// Runs every hostile chain on `bad`, checking each answer.
fn run_cases(bad: &mut TestVm) {
    for c in hostile_cases() {
        let req = Request::Alloc {
            tag: 0xbad0 + u64::from(c.name.len() as u32),
            min: 1,
            max: 0xfffff,
        };
        bad.write_at(REQ_AT, &req.encode());
        bad.write_at(REGION_SPLIT - 10, &req.encode());
        for (gpa, entries) in &c.tables {
            write_table(bad, *gpa, entries);
        }
        bad.write_at(c.resp_at, &[0xee; RESPONSE_SIZE]);
        let len = send_raw(bad, &c.chain);
        match c.answer {
            None => {
                assert_eq!(len, 0, "{}: expected the chain back unused", c.name);
            }
            Some(expected) => {
                assert_eq!(len, RESPONSE_SIZE as u32, "{}", c.name);
                let r = bad.read_response_at(c.resp_at);
                assert_eq!(status(r), expected, "{}: {r:?}", c.name);
                assert_eq!(r.reserved, 0, "{}", c.name);
                if expected == Status::Ok {
                    assert_eq!(r.tag, req.tag(), "{}", c.name);
                } else {
                    assert_eq!(r.pasid, PASID_NONE, "{}", c.name);
                }
            }
        }
    }
}

/// Posts `count` malformed chains (a short request) in batches, kicking
/// once per batch.
fn malformed_flood(bad: &mut TestVm, count: usize) {
    let per_batch = 100u16;
    let mut left = count;
    while left > 0 {
        let n = (left as u16).min(per_batch);
        for i in 0..n {
            bad.write_desc(2 * i, rd(REQ_AT, 8).with_next(2 * i + 1));
            bad.write_desc(2 * i + 1, wr(RESP_AT + 16 * u64::from(i), 16));
            bad.push_avail(2 * i);
        }
        bad.publish();
        bad.kick();
        for (_, len) in bad.wait_used(n, LONG) {
            assert_eq!(len, RESPONSE_SIZE as u32);
        }
        left -= usize::from(n);
    }
}

trait WithNext {
    fn with_next(self, next: u16) -> RawDesc;
}

impl WithNext for RawDesc {
    fn with_next(self, next: u16) -> RawDesc {
        RawDesc {
            flags: self.flags | NEXT,
            next,
            ..self
        }
    }
}

// ---------------------------------------------------------------------------
// /proc views of the daemon

fn proc_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

fn status_field(pid: i32, field: &str) -> String {
    proc_status(pid)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn threads(pid: i32) -> usize {
    status_field(pid, "Threads").parse().unwrap()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What the daemon's descriptors point at, for failure messages.
fn fd_targets(pid: i32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    out.sort();
    out
}

/// CPU time (user + system, all threads) in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf with a valid name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// Waits until `cond` holds, for up to `LONG`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn connected(d: &Daemon, vm: &str) -> bool {
    d.ctl_json(&["vms"])
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == vm && v["connected"] == true)
}

fn vm_view(d: &Daemon, vm: &str) -> serde_json::Value {
    d.ctl_json(&["vms"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vm)
        .cloned()
        .unwrap()
}

/// Connects once the slot is free. A half-open session (a bare connection
/// dropped at once) may still be in the listen backlog or being torn down
/// when the checks say the slot is free; the slot then serves this frontend
/// after it (slot.rs `HANDOVER_WAIT`), so no retry is needed.
fn connect_when_free(d: &Daemon, path: &Path) -> TestVm {
    wait_until("the slot to be free", || !connected(d, "bad"));
    TestVm::connect(path)
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// Tests

/// Every malformed chain a hostile guest can build is answered INVALID or
/// returned unused, the hostile VM's broken avail index costs no CPU, and
/// the well-behaved VM sees nothing of it: every request succeeds, p99
/// under the bound. The daemon's warnings name the hostile VM and are
/// rate-limited.
#[test]
fn hostile_chains_do_not_disturb_a_good_vm() {
    let d = Daemon::start(&[
        "--holdover",
        "0",
        "--vm",
        "bad={dir}/bad.sock",
        "--vm",
        "good={dir}/good.sock",
    ]);
    let good = GoodVm::start(&d.path("good.sock"), Duration::ZERO);
    let mut bad = TestVm::connect_regions(&d.path("bad.sock"));

    run_cases(&mut bad);
    // The hostile VM's own device still works after all of it.
    assert_eq!(status(bad.alloc(1, 0xfffff)), Status::Ok);

    // Kicks with nothing queued, then a flood of kicks.
    for _ in 0..1000 {
        bad.kick();
    }
    assert!(bad.nothing_used_within(Duration::from_millis(100)));
    let flood_end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < flood_end {
        for _ in 0..1000 {
            bad.kick();
        }
    }
    assert!(bad.nothing_used_within(Duration::from_millis(50)));

    // A flood of malformed chains: all answered, the log stays short.
    malformed_flood(&mut bad, 5000);
    assert_eq!(status(bad.alloc(1, 0xfffff)), Status::Ok);
    drop(bad);
    wait_until("bad to disconnect", || !connected(&d, "bad"));
    assert!(held_by(&d, "bad").is_empty(), "disconnect reclaims");

    // An avail index more than a queue ahead (in a new session, whose
    // warnings are not suppressed yet): nothing is used, the daemon does
    // not spin on it, and the rest of the host carries on.
    let mut bad = TestVm::connect(&d.path("bad.sock"));
    assert_eq!(status(bad.alloc(1, 0xfffff)), Status::Ok);
    let pid = d.pid();
    let window = Duration::from_millis(1200);
    let busy = |f: &mut dyn FnMut()| {
        let before = cpu_ticks(pid);
        let t = Instant::now();
        while t.elapsed() < window {
            f();
            thread::sleep(Duration::from_millis(100));
        }
        (cpu_ticks(pid) - before) * 1000 / clock_ticks_per_sec()
    };
    // Baseline: the daemon serving the good VM's tight loop.
    let baseline_ms = busy(&mut || {});
    let jump = bad.next_avail().wrapping_add(256 + 5);
    bad.publish_avail_idx(jump);
    bad.kick();
    assert!(bad.nothing_used_within(Duration::from_millis(300)));
    // More kicks on the broken queue while measuring.
    let broken_ms = busy(&mut || {
        for _ in 0..10 {
            bad.kick();
        }
    });
    eprintln!("daemon CPU in {window:?}: {baseline_ms} ms serving the good VM, {broken_ms} ms with a broken queue too");
    // A worker spinning on the broken queue would add a whole core.
    assert!(
        broken_ms < baseline_ms + 400,
        "daemon CPU {broken_ms} ms with a broken queue (baseline {baseline_ms} ms)"
    );
    // That VM's problem: it reconnects and is served again.
    drop(bad);
    wait_until("bad to disconnect", || !connected(&d, "bad"));
    assert!(held_by(&d, "bad").is_empty(), "disconnect reclaims");
    let mut bad = TestVm::connect(&d.path("bad.sock"));
    assert_eq!(status(bad.alloc(1, 0xfffff)), Status::Ok);
    drop(bad);

    good.finish().assert_healthy("hostile chains");
    wait_until("bad to disconnect", || !connected(&d, "bad"));
    assert!(held_by(&d, "bad").is_empty());
    assert!(held_by(&d, "good").is_empty());

    let view = vm_view(&d, "bad");
    let malformed = view["counters"]["malformed"].as_u64().unwrap();
    assert!(malformed >= 5000, "malformed counted: {malformed}");
    let log = d.log();
    let warnings = log.matches("vm=bad event=guest-error").count();
    assert!(
        (10..=60).contains(&warnings),
        "{warnings} guest-error lines for {malformed} malformed chains"
    );
    assert!(
        log.contains("vm=bad event=guest-error suppressed="),
        "summary line"
    );
    assert!(
        log.contains("vm=bad event=guest-error request queue error"),
        "the broken avail index is named:\n{log}"
    );
    assert!(!log.contains("vm=good event=guest-error"), "{log}");
    let (exit, log) = d.stop();
    assert!(exit.success(), "{log}");
}

/// FREE of a PASID held by another VM or by the host is NOT_OWNER, and the
/// answer is the same byte for byte whoever holds it: nothing about the
/// holder leaks. A FREE with a stale tag after RESET cannot release what
/// another VM was given since, and duplicate tags are just echoed.
#[test]
fn other_holders_pasids_are_untouchable_and_anonymous() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--vm", "b={dir}/b.sock"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    let by_vm = a.alloc_ok(1, 100);
    let by_host = a.alloc_ok(1, 100);
    d.ctl_json(&["get", &by_host.to_string(), "--holder", "iommu"]);
    assert_eq!(a.free(by_host), Status::Ok); // now only the host holds it

    let tag = 0x5eed;
    let answers: Vec<Response> = [by_vm, by_host]
        .iter()
        .map(|p| b.request(Request::Free { tag, pasid: *p }))
        .collect();
    for r in &answers {
        assert_eq!(
            *r,
            Response {
                status: Status::NotOwner as u16,
                reserved: 0,
                pasid: PASID_NONE,
                tag,
            }
        );
    }
    assert_eq!(
        answers[0].encode(),
        answers[1].encode(),
        "holders are anonymous"
    );
    assert_eq!(held_by(&d, "a"), vec![by_vm], "NOT_OWNER changed nothing");
    assert_eq!(
        d.ctl_json(&["pasids"]).as_array().unwrap().len(),
        2,
        "the host's pin is still there"
    );

    // Stale tag: a RESETs, b is given the same PASID, a replays its FREE.
    let stale = Request::Free {
        tag: 0x77,
        pasid: by_vm,
    };
    assert_eq!(status(a.reset()), Status::Ok);
    assert_eq!(b.alloc_ok(1, 100), by_vm, "lowest free is reused");
    let r = a.request(stale);
    assert_eq!((status(r), r.tag), (Status::NotOwner, 0x77));
    assert_eq!(held_by(&d, "b"), vec![by_vm]);

    // Duplicate tags in one batch: each request is its own.
    let reqs = vec![
        Request::Alloc {
            tag: 9,
            min: 1,
            max: 100
        };
        4
    ];
    let got = a.batch(&reqs);
    let mut pasids: Vec<u32> = got.iter().map(|r| r.pasid).collect();
    assert!(got.iter().all(|r| r.tag == 9 && status(*r) == Status::Ok));
    pasids.sort_unstable();
    pasids.dedup();
    assert_eq!(pasids.len(), 4);

    // The operator's commands cannot be aimed at a VM as a host holder.
    let (ok, _, err) = d.ctl(&["put", &by_vm.to_string(), "--holder", "b"]);
    assert!(!ok && err.contains("is a VM slot"), "{err}");
    assert_eq!(held_by(&d, "b"), vec![by_vm]);
}

/// An allocation flood meets the quota; the other VM keeps allocating,
/// and the space is not exhausted for anyone else.
#[test]
fn allocation_floods_stop_at_the_quota() {
    let d = Daemon::start(&[
        "--vm",
        "bad={dir}/bad.sock,quota=64",
        "--vm",
        "good={dir}/good.sock",
    ]);
    let good = GoodVm::start(&d.path("good.sock"), Duration::ZERO);
    let mut bad = TestVm::connect(&d.path("bad.sock"));
    // Flood for at least 1.5 s (and whole cycles of five rounds: one that
    // fills the quota, four refused, then RESET), so that the good VM makes
    // enough requests meanwhile even on a slow machine.
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds < 20 || start.elapsed() < Duration::from_millis(1500) || rounds % 5 != 0 {
        let reqs: Vec<Request> = (0..128)
            .map(|i| Request::Alloc {
                tag: rounds * 1000 + i,
                min: 1,
                max: 0xfffff,
            })
            .collect();
        let got = bad.batch(&reqs);
        let ok = got.iter().filter(|r| status(**r) == Status::Ok).count();
        let refused = got
            .iter()
            .filter(|r| status(**r) == Status::QuotaExceeded)
            .count();
        assert_eq!(ok + refused, 128);
        assert_eq!(ok, if rounds % 5 == 0 { 64 } else { 0 }, "round {rounds}");
        if rounds % 5 == 4 {
            assert_eq!(bad.reset().pasid, 64);
        }
        rounds += 1;
    }
    assert_eq!(held_by(&d, "bad").len(), 0, "the last round was reset");
    good.finish().assert_healthy("allocation flood");
    let view = vm_view(&d, "bad");
    assert_eq!(
        view["counters"]["statuses"]["QUOTA_EXCEEDED"].as_u64(),
        Some(rounds * 128 - rounds / 5 * 64)
    );
}

/// Requests beyond the rate limit are answered RATE_LIMITED (tag echoed,
/// no effect) rather than dropped; each VM has its own bucket, so the
/// other VM is never limited; the bucket refills.
#[test]
fn request_floods_meet_the_rate_limit() {
    let d = Daemon::start(&[
        "--vm",
        "bad={dir}/bad.sock",
        "--vm",
        "good={dir}/good.sock",
        "--rate-limit",
        "2000/s,burst=200",
    ]);
    // About 600 requests/s: well inside its own budget.
    let good = GoodVm::start(&d.path("good.sock"), Duration::from_millis(3));
    let mut bad = TestVm::connect(&d.path("bad.sock"));
    let mut ok = 0;
    let mut limited = 0;
    for round in 0..10u64 {
        let reqs: Vec<Request> = (0..100)
            .map(|i| Request::Alloc {
                tag: round * 100 + i,
                min: 1,
                max: 0xfffff,
            })
            .collect();
        for (req, r) in reqs.iter().zip(bad.batch(&reqs)) {
            assert_eq!(r.tag, req.tag());
            match status(r) {
                Status::Ok => ok += 1,
                Status::RateLimited => {
                    assert_eq!(r.pasid, PASID_NONE);
                    limited += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(limited > 0, "a flood of 1000 must meet a burst of 200");
    assert!(ok >= 200, "the burst is granted ({ok})");
    assert_eq!(held_by(&d, "bad").len(), ok, "RATE_LIMITED had no effect");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        status(bad.alloc(1, 0xfffff)),
        Status::Ok,
        "the bucket refills"
    );
    thread::sleep(Duration::from_millis(400));
    good.finish().assert_healthy("request flood");
    let bad_view = vm_view(&d, "bad");
    assert_eq!(
        bad_view["counters"]["statuses"]["RATE_LIMITED"].as_u64(),
        Some(limited as u64)
    );
    let good_view = vm_view(&d, "good");
    assert!(good_view["counters"]["statuses"]["RATE_LIMITED"].is_null());
}

/// Many hostile sessions (full ones that allocate, send garbage and break
/// their queue, and ones that hang up mid-handshake) leave nothing behind:
/// no PASIDs, no threads, no descriptors.
#[test]
fn hostile_reconnects_leak_nothing() {
    let d = Daemon::start(&[
        "--holdover",
        "0",
        "--vm",
        "bad={dir}/bad.sock",
        "--vm",
        "good={dir}/good.sock",
    ]);
    let pid = d.pid();
    let path = d.path("bad.sock");
    let mut good = TestVm::connect(&d.path("good.sock"));
    good.alloc_ok(1, 10);
    // Warm up once so that lazily made things (thread-local keys, logger
    // buffers) exist before the baseline.
    drop(TestVm::connect(&path));
    wait_until("warm-up disconnect", || !connected(&d, "bad"));
    let base_threads = threads(pid);
    let base_fds = fds(pid);
    let base_targets = fd_targets(pid);

    for i in 0..40u16 {
        let mut vm = connect_when_free(&d, &path);
        for _ in 0..3 {
            vm.alloc_ok(1, 0xfffff);
        }
        malformed_flood(&mut vm, 10);
        if i % 2 == 0 {
            vm.publish_avail_idx(vm.next_avail().wrapping_add(1000));
            vm.kick();
        }
        drop(vm);
        wait_until("disconnect", || !connected(&d, "bad"));
        // Half-open sessions: a bare connection, and one that stops after
        // SET_OWNER.
        drop(std::os::unix::net::UnixStream::connect(&path).unwrap());
        let f = frontend::connect_frontend(&path);
        let _ = f.set_owner();
        let _ = f.get_features();
        drop(f);
    }
    wait_until("sessions to end", || !connected(&d, "bad"));
    assert!(held_by(&d, "bad").is_empty(), "hostile VM holds nothing");
    assert_eq!(held_by(&d, "good"), vec![1], "the good VM keeps its PASID");
    wait_until("threads back to the baseline", || {
        threads(pid) <= base_threads
    });
    let deadline = Instant::now() + LONG;
    while fds(pid) > base_fds {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: before {base_targets:?}, after {:?}",
            fd_targets(pid)
        );
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "after 120 hostile sessions: threads {} (baseline {base_threads}), fds {} (baseline {base_fds})",
        threads(pid),
        fds(pid)
    );
    good.alloc_ok(1, 10);
}

/// The daemon runs under its seccomp filter by default (two filters: the
/// allow-list and the clone3 refusal) with no_new_privs; `--seccomp off`
/// installs none. Everything else in this file and in tests/daemon.rs runs
/// with the filter on, so the allow-list covers connections, reconnects,
/// control clients, logging, thread creation and SIGTERM.
#[test]
fn seccomp_is_on_by_default() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    vm.alloc_ok(1, 10);
    let pid = d.pid();
    assert_eq!(status_field(pid, "Seccomp"), "2", "filter mode");
    assert_eq!(status_field(pid, "Seccomp_filters"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // Every thread carries it, including ones started after set-up.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }
    d.wait_log("event=sandbox user=(unchanged) seccomp=kill");
    let (exit, log) = d.stop();
    assert!(exit.success(), "SIGTERM under seccomp: {log}");

    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--seccomp", "off"]);
    assert_eq!(status_field(d.pid(), "Seccomp"), "0");
}

/// The privilege drop holds on every thread, also on the journal writer
/// that `--state-dir` starts before the drop: the ids are set through the C
/// library, which changes them for the whole process (the bare system
/// calls would change the calling thread only, leaving the writer root).
#[test]
fn the_privilege_drop_covers_every_thread() {
    if !is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock",
        "--state-dir",
        "{dir}/state",
        "--user",
        "nobody",
    ]);
    d.wait_log("event=sandbox user=nobody");
    let mut vm = TestVm::connect(&d.path("a.sock"));
    vm.alloc_ok(1, 10); // committed by the writer, acknowledged once durable
    let pid = d.pid();
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("status")).unwrap())
        .collect();
    assert!(
        tasks.iter().any(|s| s.contains("Name:\tstate-writer")),
        "no journal writer among {} threads",
        tasks.len()
    );
    for status in &tasks {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(field("Uid"), "65534 65534 65534 65534", "{status}");
        assert_eq!(field("Gid"), "65534 65534 65534 65534", "{status}");
        assert_eq!(field("Groups"), "", "{status}");
        assert_eq!(field("CapEff"), "0000000000000000", "{status}");
    }
    let (exit, log) = d.stop();
    assert!(exit.success(), "{log}");
}

/// Started as root with `--user nobody`, the daemon serves as nobody with
/// no capabilities and no supplementary groups, gives its sockets (and the
/// control directory it made) to nobody, and removes them at exit. The
/// control socket refuses state changes to a group member that is neither
/// root nor nobody, and lets it list.
#[test]
fn runs_unprivileged_with_a_peer_checked_control_socket() {
    if !is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vms = root.join("vms");
    std::fs::create_dir(&vms).unwrap();
    std::os::unix::fs::chown(&vms, Some(65534), Some(65534)).unwrap();
    let control = root.join("run/control.sock");
    let log = root.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
        .arg("--vm")
        .arg(format!("a={}", vms.join("a.sock").display()))
        .arg("--control-socket")
        .arg(&control)
        .args(["--user", "nobody", "--control-group", "nogroup"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let ctl = |uid: Option<u32>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pasidctl"));
        cmd.arg("--socket").arg(&control).args(args);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(65534);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    wait_until("the sandbox", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("event=sandbox")
    });
    let ids = |field: &str| status_field(pid, field);
    assert_eq!(
        ids("Uid").split_whitespace().collect::<Vec<_>>(),
        ["65534"; 4]
    );
    assert_eq!(
        ids("Gid").split_whitespace().collect::<Vec<_>>(),
        ["65534"; 4]
    );
    assert_eq!(ids("Groups"), "");
    assert_eq!(ids("CapEff"), "0000000000000000");
    assert_eq!(ids("CapPrm"), "0000000000000000");
    assert_eq!(ids("Seccomp"), "2");

    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta(&control).uid(), 65534);
    assert_eq!(meta(&control).gid(), 65534);
    assert_eq!(meta(&control).mode() & 0o777, 0o660);
    assert_eq!(
        meta(control.parent().unwrap()).uid(),
        65534,
        "created dir handed over"
    );
    assert_eq!(meta(&vms.join("a.sock")).uid(), 65534);

    let mut vm = TestVm::connect(&vms.join("a.sock"));
    let p = vm.alloc_ok(1, 10);
    // root: everything.
    let (ok, _, err) = ctl(None, &["get", &p.to_string(), "--holder", "op"]);
    assert!(ok, "{err}");
    // uid 1 in the control group: read-only.
    let (ok, out, err) = ctl(Some(1), &["--json", "pasids"]);
    assert!(ok && out.contains("\"pasid\""), "{out}{err}");
    for args in [
        vec!["put", "1", "--holder", "op"],
        vec!["release", "--vm", "a"],
        vec!["quota", "--vm", "a", "0"],
    ] {
        let (ok, _, err) = ctl(Some(1), &args);
        assert!(!ok && err.contains("permission denied"), "{args:?}: {err}");
    }
    assert_eq!(vm.free(p), Status::Ok);
    let (ok, out, _) = ctl(None, &["--json", "pasids"]);
    assert!(ok && out.contains("\"op\""), "the host pin survived: {out}");

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let exit = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{text}");
    assert!(
        !control.exists(),
        "control socket removed by nobody: {text}"
    );
    assert!(!vms.join("a.sock").exists(), "VM socket removed: {text}");
}
