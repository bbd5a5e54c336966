// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon as a systemd service, run as the real binary: readiness
//! (`Type=notify`: READY=1 on `NOTIFY_SOCKET` once every socket is bound,
//! also under `--user` and the seccomp filter), `--log-level` and how it
//! combines with `RUST_LOG`, and journald priority prefixes when standard
//! error is the journal's stream (`JOURNAL_STREAM`).
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use frontend::TestVm;
use pasid_protocol::Status;

const LONG: Duration = Duration::from_secs(10);

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just opened both and nothing else owns them.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// "DEV:INO" of an open file, as systemd writes `JOURNAL_STREAM`.
fn dev_ino(fd: &OwnedFd) -> String {
    let meta = File::from(fd.try_clone().unwrap()).metadata().unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// What `JOURNAL_STREAM` says in a run.
#[derive(Clone, Copy, Debug)]
enum Journal {
    /// Unset.
    Unset,
    /// Names the pipe that is the daemon's stderr.
    Stderr,
    /// Names another pipe (stderr was redirected away from the journal).
    Elsewhere,
}

/// A daemon whose standard error is a pipe read by a thread.
struct Run {
    child: Child,
    dir: tempfile::TempDir,
    reader: JoinHandle<String>,
}

impl Run {
    /// Starts the daemon with `args` (`{dir}` is its temp dir) and a
    /// control socket in that dir, `env` added and `RUST_LOG` removed
    /// unless `env` sets it.
    fn start(args: &[&str], journal: Journal, env: &[(&str, &str)]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (mut read, write) = pipe();
        let (_other_read, other_write) = pipe();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"));
        cmd.args(args.iter().map(|a| a.replace("{dir}", &d)))
            .arg("--control-socket")
            .arg(dir.path().join("control.sock"))
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        match journal {
            Journal::Unset => {}
            Journal::Stderr => {
                cmd.env("JOURNAL_STREAM", dev_ino(&write));
            }
            Journal::Elsewhere => {
                cmd.env("JOURNAL_STREAM", dev_ino(&other_write));
            }
        }
        cmd.stderr(Stdio::from(write));
        let child = cmd.spawn().unwrap();
        // Our copy of the write end goes with `cmd`: EOF once the daemon
        // has exited.
        drop(cmd);
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            read.read_to_string(&mut text).unwrap();
            text
        });
        Run { child, dir, reader }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends SIGTERM and returns the exit status and everything logged.
    fn finish(self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.exit()
    }

    /// Waits (bounded) for the daemon to exit by itself; returns the exit
    /// status and everything logged.
    fn exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + LONG;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.reader.join().unwrap())
    }
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a daemon with one VM at quota 1, makes one request succeed and one
/// fail at the quota (a warning), stops it, and returns its log.
fn log_of_a_session(extra: &[&str], journal: Journal, env: &[(&str, &str)]) -> String {
    let mut args = vec!["--vm", "web={dir}/web.sock,quota=1"];
    args.extend_from_slice(extra);
    let run = Run::start(&args, journal, env);
    let sock = run.path("web.sock");
    let control = run.path("control.sock");
    wait_until("the daemon's sockets", || sock.exists() && control.exists());
    let mut vm = TestVm::connect(&sock);
    vm.alloc_ok(1, 100);
    assert_eq!(
        Status::from_wire(vm.alloc(1, 100).status),
        Some(Status::QuotaExceeded)
    );
    drop(vm);
    let (status, log) = run.finish();
    assert!(status.success(), "{status:?}\n{log}");
    log
}

/// With stderr the journal's stream, every line is `<N>message`: 6 for
/// info, 4 for warnings, 7 for debug, 3 for errors, and no timestamp of
/// our own.
#[test]
fn journal_stream_gets_priority_prefixes() {
    let log = log_of_a_session(&["--log-level", "debug"], Journal::Stderr, &[]);
    for line in log.lines() {
        let prio = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(prio, Some("3" | "4" | "6" | "7")),
            "line without a priority prefix: {line:?}\n{log}"
        );
    }
    assert!(log.contains("\n<6>event=start ") || log.starts_with("<6>event=start "));
    assert!(log.contains("<6>vm=web event=connect "), "{log}");
    assert!(
        log.contains("<4>vm=web event=rejected op=alloc status=quota_exceeded"),
        "{log}"
    );
    assert!(log.contains("<7>vm=web op=ALLOC "), "{log}");
    assert!(log.contains("<6>event=stop signal=15"), "{log}");

    // An error at start-up: priority 3, and the exit status says so.
    let run = Run::start(
        &["--vm", "a={dir}/a.sock", "--metrics-listen", "0.0.0.0:9"],
        Journal::Stderr,
        &[],
    );
    let (status, log) = run.exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.starts_with("<3>--metrics-listen 0.0.0.0:9 is not a loopback address"),
        "{log}"
    );
}

/// Without `JOURNAL_STREAM`, or with one naming another file than stderr,
/// lines keep the plain format (timestamp, level, module) and no prefix.
#[test]
fn no_prefixes_unless_stderr_is_the_journal() {
    for journal in [Journal::Unset, Journal::Elsewhere] {
        let log = log_of_a_session(&[], journal, &[]);
        assert!(log.contains(" INFO "), "{journal:?}: {log}");
        assert!(log.contains("event=start "), "{journal:?}: {log}");
        assert!(log.contains(" WARN "), "{journal:?}: {log}");
        assert!(
            log.lines().all(|l| !l.starts_with('<')),
            "{journal:?}: {log}"
        );
    }
}

/// `--log-level warn` keeps warnings and drops info lines; `RUST_LOG`,
/// when set, wins over it; `--log-level info` (the default) logs no
/// request lines.
#[test]
fn log_level_and_rust_log() {
    let warn = log_of_a_session(&["--log-level", "warn"], Journal::Stderr, &[]);
    assert!(warn.contains("<4>vm=web event=rejected"), "{warn}");
    assert!(!warn.contains("event=start"), "{warn}");
    assert!(!warn.contains("<6>") && !warn.contains("<7>"), "{warn}");

    let env_wins = log_of_a_session(
        &["--log-level", "warn"],
        Journal::Stderr,
        &[("RUST_LOG", "info")],
    );
    assert!(env_wins.contains("<6>event=start "), "{env_wins}");

    let default = log_of_a_session(&[], Journal::Stderr, &[]);
    assert!(default.contains("<6>event=start "), "{default}");
    assert!(!default.contains(" op=ALLOC "), "{default}");

    // A module directive in RUST_LOG adds to --log-level.
    let module = log_of_a_session(
        &["--log-level", "warn"],
        Journal::Stderr,
        &[("RUST_LOG", "vhost_user_pasid::vhu_vpasid=debug")],
    );
    assert!(module.contains("<7>vm=web op=ALLOC "), "{module}");
    assert!(!module.contains("event=start"), "{module}");
}

/// A loopback port free a moment ago, for a daemon that must be reachable
/// before it could log the port it got.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A notify socket as systemd makes it: a datagram socket anyone may
/// write to, in a directory anyone may traverse.
fn notify_socket() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    (dir, path, sock)
}

/// The next notification, as text.
fn receive(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .to_string()
}

/// READY=1 arrives once, and when it does every socket (two VM slots, the
/// control socket, the metrics listener) exists and accepts connections;
/// then each serves.
#[test]
fn ready_is_sent_once_every_socket_accepts() {
    let (_ndir, notify, sock) = notify_socket();
    let metrics = free_port();
    let notify_env = notify.display().to_string();
    let run = Run::start(
        &[
            "--vm",
            "web={dir}/web.sock",
            "--vm",
            "db={dir}/db.sock",
            "--metrics-listen",
            &metrics.to_string(),
        ],
        Journal::Unset,
        &[("NOTIFY_SOCKET", &notify_env)],
    );
    assert_eq!(receive(&sock), "READY=1\n");
    // Nothing waited for: at READY each socket takes a connection. (A VM
    // slot serves one frontend at a time and a probe's session takes a
    // moment to end, so web is probed by a real VM session at once.)
    let mut vm = TestVm::connect(&run.path("web.sock"));
    let probes: Vec<UnixStream> = ["db.sock", "control.sock"]
        .iter()
        .map(|s| {
            UnixStream::connect(run.path(s))
                .unwrap_or_else(|e| panic!("{s} not accepting at READY: {e}"))
        })
        .collect();
    let scrape = TcpStream::connect(metrics)
        .unwrap_or_else(|e| panic!("metrics not accepting at READY: {e}"));
    drop(probes);
    drop(scrape);
    // And they serve.
    assert_eq!(vm.alloc_ok(1, 100), 1);
    let (status, log) = run.finish();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("event=notify state=READY").count(), 1, "{log}");
    // Since sessions are kept in the descriptor store, the VM's and the
    // probes' sessions sent FDSTORE=1 and FDSTOREREMOVE=1 messages
    // (tests/fdstore.rs checks them); none of them, and nothing else, is a
    // second READY=1.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = sock.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            text.starts_with("FDSTORE=1\nFDNAME=vpasid.")
                || text.starts_with("FDSTOREREMOVE=1\nFDNAME=vpasid."),
            "a second notification: {text:?}"
        );
    }
}

/// Under `--user nobody` and the default seccomp filter, READY=1 still
/// reaches the notify socket, is sent by the unprivileged process (the
/// drop happens first), and the daemon serves after it.
#[test]
fn ready_is_sent_after_the_privilege_drop() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let (_ndir, notify, sock) = notify_socket();
    let notify_env = notify.display().to_string();
    let run = Run::start(
        &["--vm", "web={dir}/web.sock", "--user", "nobody"],
        Journal::Unset,
        &[("NOTIFY_SOCKET", &notify_env)],
    );
    assert_eq!(receive(&sock), "READY=1\n");
    let pid = run.child.id();
    let uids = status_field(pid, "Uid");
    assert_eq!(uids.split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
    let mut vm = TestVm::connect(&run.path("web.sock"));
    assert_eq!(vm.alloc_ok(1, 100), 1);
    assert_eq!(status_field(pid, "Seccomp"), "2", "the filter is on");
    let (status, log) = run.finish();
    assert!(status.success(), "{log}");
}

/// A notify socket the daemon cannot reach is logged as a warning naming
/// it; the daemon serves anyway.
#[test]
fn unreachable_notify_socket_is_a_warning() {
    let run = Run::start(
        &["--vm", "web={dir}/web.sock"],
        Journal::Unset,
        &[("NOTIFY_SOCKET", "/nonexistent/notify")],
    );
    let sock = run.path("web.sock");
    wait_until("the VM socket", || sock.exists());
    let mut vm = TestVm::connect(&sock);
    assert_eq!(vm.alloc_ok(1, 100), 1);
    let (status, log) = run.finish();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(" WARN ") && log.contains("event=notify socket=/nonexistent/notify error="),
        "{log}"
    );
}
