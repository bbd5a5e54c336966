// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The source lets go by itself: a VM's PASIDs are released at once when
//! the QEMU process of its connection exits, against the real daemon
//! (under `--user nobody` when run as root, with its seccomp filter). QEMU
//! is a process of its own that makes the vhost-user connection and
//! allocates ([`qemu_stand_in`], this test binary run again), so the
//! daemon's `SO_PEERCRED` names a process that really exits.
//!
//! Figures (run with `--nocapture`): time from the process's exit, seen
//! through the test's own pidfd, to the daemon holding nothing for the VM.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod frontend;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use frontend::manager::Manager;
use frontend::{held_by, vm_json, Daemon, TestVm};

const WAIT: Duration = Duration::from_secs(20);
/// The stand-in's socket (set: this process is the stand-in).
const STAND_IN_SOCKET: &str = "VPASID_QEMU_STAND_IN_SOCKET";
/// How many PASIDs the stand-in allocates.
const STAND_IN_PASIDS: &str = "VPASID_QEMU_STAND_IN_PASIDS";
/// Prefix of the stand-in's lines on its standard output.
const SAID: &str = "stand-in: ";
/// Hold-over of every test here: far longer than any test, so a release
/// within it can only come from the process's exit.
const HOLDOVER: &str = "300";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The daemon's arguments: `args`, `--holdover 300`, and `--user nobody`
/// when root (the seccomp filter is on by default).
fn sandboxed(args: &[&'static str]) -> Vec<&'static str> {
    let mut out = args.to_vec();
    out.extend(["--holdover", HOLDOVER]);
    if is_root() {
        out.extend(["--user", "nobody"]);
    }
    out
}

/// The QEMU stand-in: connects to the socket `VPASID_QEMU_STAND_IN_SOCKET`
/// names, negotiates and allocates as a guest would, prints its PASIDs,
/// then follows commands on standard input: `close` closes the vhost-user
/// connection and lives on, `exit` exits (so does the end of its input).
#[test]
#[ignore = "the QEMU stand-in: the other tests of this file run it as a process of its own"]
fn qemu_stand_in() {
    let socket = std::env::var(STAND_IN_SOCKET)
        .expect("run by the tests of qemu_exit.rs, which set VPASID_QEMU_STAND_IN_SOCKET");
    let count: usize = std::env::var(STAND_IN_PASIDS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut vm = Some(TestVm::connect(Path::new(&socket)));
    let pasids: Vec<String> = (0..count)
        .map(|_| vm.as_mut().unwrap().alloc_ok(1, 1 << 19).to_string())
        .collect();
    println!("{SAID}pasids {}", pasids.join(","));
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("close") => {
                vm = None;
                println!("{SAID}closed");
            }
            Ok("exit") | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(vm);
    std::process::exit(0);
}

/// A QEMU stand-in process, killed on drop.
struct StandIn {
    child: Child,
    stdin: ChildStdin,
    said: mpsc::Receiver<String>,
    /// The test's own pidfd of it: when it becomes readable is when the
    /// process exited, as the daemon's pidfd sees it.
    pidfd: OwnedFd,
    pasids: Vec<u32>,
}

impl StandIn {
    /// Starts a stand-in that connects to `socket` and allocates `pasids`.
    fn start(socket: &Path, pasids: usize) -> StandIn {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "qemu_stand_in",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STAND_IN_SOCKET, socket)
            .env(STAND_IN_PASIDS, pasids.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, said) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may have begun the line ("test qemu_stand_in ... ").
                if let Some((_, rest)) = line.split_once(SAID) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let mut s = StandIn {
            child,
            stdin,
            said,
            pidfd,
            pasids: Vec::new(),
        };
        let line = s.expect("pasids ");
        s.pasids = line
            .trim_start_matches("pasids ")
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        s.pasids.sort_unstable();
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line starting with `what`.
    fn expect(&self, what: &str) -> String {
        loop {
            let line = self
                .said
                .recv_timeout(WAIT)
                .unwrap_or_else(|e| panic!("the stand-in never said {what:?}: {e}"));
            if line.starts_with(what) {
                return line;
            }
        }
    }

    /// Closes its vhost-user connection; the process lives on.
    fn close(&mut self) {
        writeln!(self.stdin, "close").unwrap();
        self.expect("closed");
    }

    /// Waits (bounded) until the process has exited, as its pidfd says;
    /// returns when that was seen.
    fn exited(&mut self) -> Instant {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
        let seen = Instant::now();
        assert_eq!(n, 1, "the stand-in did not exit within 10 s");
        self.child.wait().unwrap();
        seen
    }

    /// Tells it to exit (closing its connection if open).
    fn exit(&mut self) -> Instant {
        writeln!(self.stdin, "exit").unwrap();
        self.exited()
    }

    /// SIGKILLs it.
    fn kill(&mut self) -> Instant {
        self.child.kill().unwrap();
        self.exited()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many PASIDs `vm` holds, asked over the control socket directly
/// (a `pasidctl` process per poll would blur the figure).
fn held_now(control: &Path, vm: &str) -> usize {
    let mut s = UnixStream::connect(control).unwrap();
    writeln!(s, r#"{{"cmd":"pasids","vm":"{vm}"}}"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let v: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!(v["ok"], true, "{reply}");
    v["result"].as_array().unwrap().len()
}

/// Polls until `vm` holds nothing; returns the time from `exit` to then.
fn released_after(control: &Path, vm: &str, exit: Instant) -> Duration {
    while held_now(control, vm) > 0 {
        assert!(
            exit.elapsed() < WAIT,
            "{vm}'s PASIDs were not released within {WAIT:?} of its QEMU's exit"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    exit.elapsed()
}

/// The daemon's own record of a release at an exit: the event, the
/// reclaim's reason, and the metric.
fn assert_released_for_exit(d: &Daemon, vm: &str, pid: u32) {
    d.wait_log(&format!("vm={vm} event=qemu-exited pid={pid}"));
    let log = d.wait_log(&format!("vm={vm} event=reclaim reason=\"qemu exited\""));
    assert!(!log.contains("hold-over expired"), "{log}");
    let (ok, metrics, _) = d.ctl(&["metrics"]);
    assert!(ok);
    assert!(
        metrics.contains(&format!(
            "vpasid_reclaims_total{{vm=\"{vm}\",reason=\"qemu_exited\"}} 1"
        )),
        "{metrics}"
    );
}

/// The connection closes while its QEMU lives (a device unplugged): the
/// VM is held over, bound to that process, and stays so; when the process
/// is SIGKILLed, the hold-over ends at once and every PASID is released.
#[test]
fn a_qemu_exit_ends_the_holdover_under_the_sandbox() {
    let d = Daemon::start(&sandboxed(&["--vm", "a={dir}/a.sock"]));
    let mut qemu = StandIn::start(&d.path("a.sock"), 3);
    assert_eq!(held_by(&d, "a"), qemu.pasids);
    d.wait_log(if is_root() {
        "event=sandbox user=nobody seccomp=kill"
    } else {
        "event=sandbox user=(unchanged) seccomp=kill"
    });
    assert_eq!(
        vm_json(&d, "a")["qemu_pid"].as_u64(),
        Some(u64::from(qemu.pid())),
        "the daemon names the process that connected"
    );
    qemu.close();
    d.wait_log("vm=a event=held-over pasids=3");
    // Held over while the process lives (well past the time an exit
    // takes to be seen).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(held_by(&d, "a"), qemu.pasids);
    assert!(vm_json(&d, "a")["held_over_secs"].as_u64().is_some());
    let pid = qemu.pid();
    let exit = qemu.kill();
    let took = released_after(&d.control, "a", exit);
    eprintln!(
        "figure: qemu exit (SIGKILL, in hold-over) to release: {:.2} ms",
        took.as_secs_f64() * 1e3
    );
    assert_released_for_exit(&d, "a", pid);
    let vm = vm_json(&d, "a");
    assert!(vm["held_over_secs"].is_null(), "{vm}");
    assert!(vm["qemu_pid"].is_null(), "{vm}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// QEMU exits while connected (a VM shut down): with a hold-over of
/// 300 s, its PASIDs are still released at once, whichever the daemon
/// sees first, the closed socket or the exit.
#[test]
fn a_qemu_that_exits_while_connected_is_released_at_once() {
    let d = Daemon::start(&sandboxed(&[
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock",
    ]));
    let mut times = Vec::new();
    for round in 0..5 {
        let vm = if round % 2 == 0 { "a" } else { "b" };
        let mut qemu = StandIn::start(&d.path(&format!("{vm}.sock")), 2);
        assert_eq!(held_by(&d, vm), qemu.pasids);
        let exit = qemu.exit();
        times.push(released_after(&d.control, vm, exit));
    }
    eprintln!(
        "figure: qemu exit (connected) to release, 5 rounds: {:?} ms",
        times
            .iter()
            .map(|t| (t.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let log = d.log();
    assert_eq!(log.matches("reason=\"qemu exited\"").count(), 5, "{log}");
    assert!(!log.contains("hold-over expired"), "{log}");
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(2)),
        "{times:?}"
    );
}

/// SIGKILL of the daemon (durable state); one VM's QEMU dies while no
/// daemon runs, the other's lives. At start-up the dead one's VM is
/// released, the live one keeps its PASIDs, held over afresh and bound to
/// its process, and is released at once when that process exits.
#[test]
fn start_up_releases_a_vm_whose_qemu_died_while_the_daemon_was_down() {
    let mut d = Daemon::start(&sandboxed(&[
        "--vm",
        "dead={dir}/dead.sock",
        "--vm",
        "live={dir}/live.sock",
        "--state-dir",
        "{dir}/state",
    ]));
    let mut dead = StandIn::start(&d.path("dead.sock"), 2);
    let mut live = StandIn::start(&d.path("live.sock"), 3);
    let dead_pid = dead.pid();
    d.kill9();
    dead.kill();
    d.restart();
    d.wait_log(&format!(
        "vm=dead event=qemu-exited pid={dead_pid} held=2 held_over=false at_start=true"
    ));
    assert_eq!(held_by(&d, "dead"), Vec::<u32>::new());
    assert_eq!(held_by(&d, "live"), live.pasids);
    let log = d.wait_log("event=qemu-check alive=1 gone=1 unknown=0");
    // Held over afresh from the restart, bound to its process.
    assert!(
        log.contains("vm=live event=held-over pasids=3 seconds=300 reason=\"restart\""),
        "{log}"
    );
    let vm = vm_json(&d, "live");
    assert_eq!(vm["qemu_pid"].as_u64(), Some(u64::from(live.pid())), "{vm}");
    // The live one was watched from start-up: its exit releases it.
    let exit = live.kill();
    let took = released_after(&d.control, "live", exit);
    eprintln!(
        "figure: qemu exit (after a daemon restart) to release: {:.2} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A session taken over from the descriptor store knows its QEMU too: the
/// peer of the stored connection. Its exit, after the connection closed,
/// ends the hold-over.
#[test]
fn a_taken_over_session_is_bound_to_its_qemu() {
    let m = Manager::new();
    let mut d = m.start(&sandboxed(&[
        "--vm",
        "a={dir}/a.sock",
        "--state-dir",
        "{dir}/state",
    ]));
    let mut qemu = StandIn::start(&d.path("a.sock"), 2);
    m.wait_names("stored", WAIT, |n| n.len() == 5);
    d.term();
    let restart = d.log_len();
    m.respawn(&mut d, "takeover");
    d.wait_ready(WAIT);
    d.wait_log("vm=a event=resume started=true");
    // The new daemon read the peer of the stored connection itself.
    let connect = "vm=a event=connect socket=";
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let log = d.log_since(restart);
        if let Some(line) = log.lines().find(|l| l.contains(connect)) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no connect after the take-over:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        line.ends_with(&format!("qemu_pid={}", qemu.pid())),
        "{line}"
    );
    assert_eq!(
        vm_json(&d, "a")["qemu_pid"].as_u64(),
        Some(u64::from(qemu.pid()))
    );
    qemu.close();
    d.wait_log("vm=a event=held-over pasids=2");
    let pid = qemu.pid();
    let exit = qemu.kill();
    let took = released_after(&d.control, "a", exit);
    eprintln!(
        "figure: qemu exit (taken-over session, in hold-over) to release: {:.2} ms",
        took.as_secs_f64() * 1e3
    );
    assert_released_for_exit(&d, "a", pid);
}
