// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The real `pasidctl` binary against the real daemon: guarded release,
//! holder names and owner forgetting, log values, the `pasids --vm`
//! filter, tables, quota bounds, `watch` on a pipe and on a terminal, a
//! closed stdout, errors that name their cause, and `detach`/`attach`
//! against a scripted QMP peer (a q35 device on its root port).
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use frontend::{held_by, Daemon, TestVm};
use pasid_protocol::Status;

const LONG: Duration = Duration::from_secs(10);

/// ANSI clear-screen sequence `watch` draws on a terminal.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// `pasidctl --socket SOCKET ARGS`, not yet run.
fn pasidctl(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pasidctl"));
    cmd.arg("--socket").arg(socket).args(args);
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (bounded) for `child` to exit.
fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pasidctl did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `release` of a connected VM is refused and changes nothing; the
/// message says what --force does. With --force the running guest loses
/// its PASIDs. An idle VM needs no --force.
#[test]
fn release_of_a_connected_vm_needs_force() {
    let d = Daemon::start(&["--holdover", "0", "--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let mine = vec![vm.alloc_ok(1, 100), vm.alloc_ok(1, 100)];

    let (ok, _, err) = d.ctl(&["release", "--vm", "a"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "pasidctl: VM \"a\" is connected: releasing would strip every PASID from the \
         running guest, whose devices may still have them programmed; shut the VM down \
         first, or use --force to release them anyway"
    );
    assert_eq!(held_by(&d, "a"), mine, "a refused release changes nothing");
    assert_eq!(vm.free(mine[0]), Status::Ok, "the guest still owns them");

    let (ok, out, err) = d.ctl(&["release", "--vm", "a", "--force"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "VM a: released 1 references");
    assert!(held_by(&d, "a").is_empty());
    assert_eq!(
        vm.free(mine[1]),
        Status::NotFound,
        "stripped from the guest"
    );
    d.wait_log("vm=a event=reclaim reason=\"operator release\" references=1");

    // Once the VM is gone, release needs no --force.
    vm.alloc_ok(1, 100);
    drop(vm);
    d.wait_log("vm=a event=reclaim reason=\"disconnect\" references=1");
    let r = d.ctl_json(&["release", "--vm", "a"]);
    assert_eq!(r["released"].as_u64(), Some(0));
}

/// A live `reattach` of a VM that holds PASIDs with a hold-over of 0 would
/// release them while the guest uses them: it is refused before QMP is
/// touched, says why and how, and changes nothing. `--force`, a hold-over,
/// or holding nothing lets it go on (here to the missing QMP socket).
#[test]
fn live_reattach_that_would_release_pasids_is_refused() {
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock,holdover=0",
        "--vm",
        "b={dir}/b.sock,holdover=30",
    ]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    let mine = vec![a.alloc_ok(1, 100), a.alloc_ok(1, 100)];
    let theirs = b.alloc_ok(1, 100);
    let qmp = d.path("missing.qmp");
    let qmp = qmp.to_str().unwrap();
    let reattach = |vm: &str, extra: &[&str]| {
        let mut args = vec!["reattach", "--vm", vm, "--qmp", qmp];
        args.extend_from_slice(extra);
        d.ctl(&args)
    };

    let (ok, _, err) = reattach("a", &[]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "pasidctl: VM a is connected and holds 2 PASID(s), and its hold-over is 0: \
         unplugging its device would release them while the guest still uses them, and the \
         daemon could give them to other VMs before the guest reconciles. Give the VM a \
         hold-over (--vm a=...,holdover=SECONDS or --holdover SECONDS, then restart the \
         daemon) and reattach, or pass --force to re-plug anyway"
    );
    assert_eq!(held_by(&d, "a"), mine, "a refused reattach changes nothing");
    assert_eq!(a.free(mine[1]), Status::Ok, "the guest is still served");

    // Past the check, each of these fails at the QMP socket instead.
    for (vm, extra) in [("a", &["--force"][..]), ("b", &[][..])] {
        let (ok, _, err) = reattach(vm, extra);
        assert!(!ok);
        assert!(err.contains("QMP"), "{vm} {extra:?}: {err}");
        assert!(!err.contains("hold-over is 0"), "{err}");
    }
    assert_eq!(d.ctl_json(&["vms"])[1]["holdover_secs"], 30);
    assert_eq!(held_by(&d, "b"), vec![theirs]);
    // Holding nothing, a VM without a hold-over is re-plugged as before.
    assert_eq!(a.free(mine[0]), Status::Ok);
    let (ok, _, err) = reattach("a", &[]);
    assert!(!ok && err.contains("QMP"), "{err}");
}

/// Holder names follow the VM-name rules: an empty name, spaces, tabs,
/// newlines or quotes are refused before anything is created or logged.
#[test]
fn holder_names_are_validated() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let p = vm.alloc_ok(1, 100).to_string();
    for bad in [
        "",
        "two words",
        "tab\there",
        "line\nvm=a event=forged",
        "q\"x",
    ] {
        for cmd in ["get", "put"] {
            let (ok, _, err) = d.ctl(&[cmd, &p, "--holder", bad]);
            assert!(!ok, "{cmd} {bad:?}");
            assert!(
                err.starts_with("pasidctl: invalid holder name ")
                    && err.contains("1-64 characters of letters, digits"),
                "{cmd} {bad:?}: {err}"
            );
        }
    }
    assert_eq!(d.ctl_json(&["stats"])["space"]["owners"], 1);
    assert!(!d.log().contains("event=forged"), "{}", d.log());
    let (ok, _, err) = d.ctl(&["get", &p, "--holder", "iommu-0.dev_1"]);
    assert!(ok, "{err}");
}

/// Host holders that come and go do not pile up: after 100 distinct
/// holders each took and dropped a reference, the space has the VM as its
/// only owner, through a restart of the durable state as well.
#[test]
fn owners_with_nothing_held_are_forgotten() {
    let d = Daemon::start(&[
        "--holdover",
        "0",
        "--vm",
        "a={dir}/a.sock",
        "--state-dir",
        "{dir}/state",
    ]);
    let mut vm = TestVm::connect(&d.path("a.sock"));
    let p = vm.alloc_ok(1, 100).to_string();
    for i in 0..100 {
        let holder = format!("drv{i}");
        let got = d.ctl_json(&["get", &p, "--holder", &holder]);
        assert_eq!(got["refs"], 2, "{holder}");
        if i == 50 {
            // Mid-way: the holder is listed while it holds the reference.
            assert_eq!(d.ctl_json(&["stats"])["space"]["owners"], 2);
        }
        let put = d.ctl_json(&["put", &p, "--holder", &holder]);
        assert_eq!(put["freed"], false, "{holder}");
    }
    // A get that fails creates no holder either.
    let (ok, _, _) = d.ctl(&["get", "99", "--holder", "ghost"]);
    assert!(!ok);
    assert_eq!(d.ctl_json(&["stats"])["space"]["owners"], 1);
    d.wait_log("holder=drv99 event=put");
    assert!(d.log().contains("forgotten=true"), "{}", d.log());

    // One holder stays; durable state keeps it, and only it, at restart.
    d.ctl_json(&["get", &p, "--holder", "keeper"]);
    drop(vm);
    d.wait_log("vm=a event=reclaim reason=\"disconnect\"");
    let mut d = d;
    d.kill9();
    d.restart();
    let stats = d.ctl_json(&["stats"]);
    assert_eq!(stats["space"]["owners"], 2, "{stats}");
    assert_eq!(held_by(&d, "keeper"), vec![p.parse::<u32>().unwrap()]);
}

/// A free-form value with a space is quoted in its log field, so the line
/// still splits into the right fields.
#[test]
fn log_values_with_spaces_are_quoted() {
    let d = Daemon::start(&["--vm", "a={dir}/my vm.sock"]);
    let path = d.path("my vm.sock");
    d.wait_log(&format!("vm=a event=listen socket=\"{}\"", path.display()));
    drop(TestVm::connect(&path));
    let log = d.wait_log(&format!("vm=a event=connect socket=\"{}\"", path.display()));
    for debug_form in ["Some(", " { ", "\\\""] {
        assert!(!log.contains(debug_form), "{debug_form:?} in\n{log}");
    }
}

/// `pasids --vm NAME` lists only what that VM holds, in both forms; an
/// unknown VM is an error naming it.
#[test]
fn pasids_filter_by_vm() {
    let d = Daemon::start(&["--vm", "a={dir}/a.sock", "--vm", "b={dir}/b.sock"]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let mut b = TestVm::connect(&d.path("b.sock"));
    let pa = a.alloc_ok(1, 100);
    let pb = b.alloc_ok(1, 100);
    let shared = b.alloc_ok(1, 100);
    d.ctl_json(&["get", &shared.to_string(), "--holder", "drv"]);
    let listed = |vm: &str| -> Vec<u64> {
        d.ctl_json(&["pasids", "--vm", vm])
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pasid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(listed("a"), [u64::from(pa)]);
    assert_eq!(listed("b"), [u64::from(pb), u64::from(shared)]);
    let (ok, out, err) = d.ctl(&["pasids", "--vm", "a"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("a (vm) x1") && !out.contains("b (vm)"),
        "{out}"
    );
    assert!(out.ends_with("1 PASIDs allocated\n"), "{out}");
    let (ok, _, err) = d.ctl(&["pasids", "--vm", "nope"]);
    assert!(!ok);
    assert_eq!(err.trim(), "pasidctl: no VM named \"nope\"");
    let (ok, _, err) = d.ctl(&["pasids", "--vm", "drv"]);
    assert!(!ok && err.contains("no VM named \"drv\""), "{err}");
}

/// Column `title` starts at the same place in the header and every row.
fn assert_column_aligned(table: &str, title: &str, cells: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let at = header
        .find(title)
        .unwrap_or_else(|| panic!("{title} in {table}"));
    for (line, cell) in lines.zip(cells) {
        assert_eq!(
            line.get(at..at + cell.len()),
            Some(*cell),
            "{title}:\n{table}"
        );
        assert_eq!(line.as_bytes()[at - 1], b' ', "{title}:\n{table}");
    }
}

/// The last column is right-aligned: every line ends at the same place.
fn assert_right_aligned_to_the_end(table: &str) {
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(
        widths.windows(2).all(|w| w[0] == w[1]),
        "{widths:?}:\n{table}"
    );
}

/// Tables are as wide as their content: a 64-character VM name and a
/// 64-character holder name keep every column in line.
#[test]
fn tables_fit_long_names() {
    let long_vm = "v".repeat(64);
    let long_holder = "h".repeat(64);
    let d = Daemon::start(&[
        "--vm",
        &format!("{long_vm}={{dir}}/long.sock"),
        "--vm",
        "b={dir}/b.sock",
    ]);
    let mut vm = TestVm::connect(&d.path("long.sock"));
    let p = vm.alloc_ok(1, 100).to_string();
    d.ctl_json(&["get", &p, "--holder", &long_holder]);

    let (ok, out, err) = d.ctl(&["vms"]);
    assert!(ok, "{err}");
    // Rows in name order: b, then the long name.
    assert!(
        out.lines()
            .nth(2)
            .unwrap()
            .starts_with(&format!("{long_vm}  connected")),
        "{out}"
    );
    assert_column_aligned(&out, "STATE", &["idle", "connected"]);
    assert_column_aligned(&out, "SOCKET", &["/", "/"]);

    let (ok, out, err) = d.ctl(&["pasids"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{long_holder} (host) x1, {long_vm} (vm) x1")),
        "{out}"
    );

    let (ok, out, err) = d.ctl(&["watch", "--count", "1"]);
    assert!(ok, "{err}");
    let table = &out[out.find("VM ").unwrap()..];
    assert_column_aligned(table, "STATE", &["idle", "connected"]);
    assert_right_aligned_to_the_end(table);

    let (ok, out, err) = d.ctl(&["stats"]);
    assert!(ok, "{err}");
    assert_right_aligned_to_the_end(&out);
    assert!(out.contains("space.owners"), "{out}");
}

/// A quota above the PASIDs the VM's range could ever hold is refused with
/// that maximum; the maximum itself is accepted.
#[test]
fn quota_above_capacity_is_refused() {
    let d = Daemon::start(&[
        "--vm",
        "web={dir}/web.sock",
        "--vm",
        "db={dir}/db.sock,range=100-199",
    ]);
    let capacity = d.ctl_json(&["stats"])["space"]["capacity"]
        .as_u64()
        .unwrap();
    let (ok, _, err) = d.ctl(&["quota", "--vm", "web", "4294967295"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("the most is {capacity}")),
        "capacity {capacity}: {err}"
    );
    let (ok, _, err) = d.ctl(&["quota", "--vm", "web", &(capacity + 1).to_string()]);
    assert!(!ok, "{err}");
    let (ok, _, err) = d.ctl(&["quota", "--vm", "web", &capacity.to_string()]);
    assert!(ok, "{err}");
    let (ok, _, err) = d.ctl(&["quota", "--vm", "db", "101"]);
    assert!(
        !ok && err.contains("range 100-199") && err.contains("the most is 100"),
        "{err}"
    );
    let (ok, _, err) = d.ctl(&["quota", "--vm", "db", "100"]);
    assert!(ok, "{err}");
}

/// The frames of `watch` output printed plainly one after another.
fn frames(out: &str) -> Vec<&str> {
    let starts: Vec<usize> = out
        .match_indices("pasidctl watch:")
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .zip(starts.iter().skip(1).chain([&out.len()]))
        .map(|(a, b)| &out[*a..*b])
        .collect()
}

/// On a pipe, `watch --count 2` prints two plain frames one after the
/// other, with no escape codes, then exits 0 by itself.
#[test]
fn watch_on_a_pipe_prints_frames_plainly() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock,quota=8"]);
    let mut vm = TestVm::connect(&d.path("web.sock"));
    vm.alloc_ok(1, 100);
    vm.alloc_ok(1, 100);
    let (ok, out, err) = d.ctl(&["watch", "--interval", "0.2", "--count", "2"]);
    assert!(ok, "{err}");
    assert!(!out.contains('\x1b'), "{out:?}");
    let frames = frames(&out);
    assert_eq!(frames.len(), 2, "{out}");
    for (i, frame) in frames.iter().enumerate() {
        assert!(
            frame.contains(&format!("refresh {} of 2", i + 1)),
            "{frame}"
        );
        assert!(frame.contains("2 of 1048575 PASIDs allocated"), "{frame}");
        let row = frame.lines().find(|l| l.starts_with("web ")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        // VM STATE HELD CACHED QUOTA USE% REQ/S FAILED MALFORMED RECLAIMED
        assert_eq!(
            &cols[..6],
            ["web", "connected", "2", "0", "8", "25.0%"],
            "{row}"
        );
        assert_eq!(cols[6], if i == 0 { "-" } else { "0.0" }, "{row}");
    }
    assert!(frames[0].ends_with("\n\n"), "a blank line between frames");

    // --json: one object per refresh.
    let (ok, out, err) = d.ctl(&["--json", "watch", "--interval", "0.1", "--count", "3"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["refresh"], 3);
    assert_eq!(lines[0]["vms"][0]["held"], 2);
    assert_eq!(lines[0]["stats"]["connected_vms"], 1);
}

/// On a terminal (a pseudo-terminal here), each frame clears the screen
/// and is drawn in place.
#[test]
fn watch_on_a_terminal_redraws() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock"]);
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the given ints; the
    // name, termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned
    // by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = pasidctl(&d.control, &["watch", "--interval", "0.1", "--count", "2"])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the child's end closes (EIO on a pty master).
    let mut screen = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        screen.extend_from_slice(&buf[..n]);
    }
    assert!(wait(&mut child).success());
    let screen = String::from_utf8_lossy(&screen);
    assert_eq!(screen.matches(CLEAR_SCREEN).count(), 2, "{screen:?}");
    assert!(screen.starts_with(CLEAR_SCREEN), "{screen:?}");
    assert!(screen.contains("refresh 2 of 2"), "{screen:?}");
}

/// Ctrl-C (SIGINT) ends an endless watch cleanly with status 0.
#[test]
fn watch_exits_cleanly_on_sigint() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock"]);
    let mut child = pasidctl(&d.control, &["watch", "--interval", "0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first frame, so the handler is installed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("pasidctl watch:"), "{first:?}");
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// A reader that goes away (`pasidctl watch --json | head -1`) ends
/// pasidctl quietly with status 0, and so does a stdout closed before
/// anything was written.
#[test]
fn a_closed_stdout_ends_quietly() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock"]);
    let mut child = pasidctl(&d.control, &["--json", "watch", "--interval", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    serde_json::from_str::<serde_json::Value>(&first).unwrap();
    drop(stdout); // `head -1` exits
    let status = wait(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!((status.code(), err.as_str()), (Some(0), ""));

    for args in [&["vms"][..], &["metrics"], &["--json", "pasids"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = pasidctl(&d.control, args).stdout(writer).output().unwrap();
        let (_, err) = text(&out);
        assert_eq!((out.status.code(), err.as_str()), (Some(0), ""), "{args:?}");
    }
}

/// Without a daemon, pasidctl says so at once: for a missing socket and
/// for a socket file nobody listens on.
#[test]
fn no_daemon_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap()); // the file stays behind
    for (path, why) in [
        (&missing, "the socket does not exist"),
        (&stale, "nothing accepts connections on the socket"),
    ] {
        let started = Instant::now();
        let out = pasidctl(path, &["vms"]).output().unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            err,
            format!(
                "pasidctl: no daemon is listening on {} ({why}; is vhost-user-pasid \
                 running? try --socket or PASIDCTL_SOCKET)\n",
                path.display()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// A daemon that does not answer (stopped with SIGSTOP) is reported as
/// such after about 2 s, not 10.
#[test]
fn a_daemon_that_does_not_answer_times_out() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock"]);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid(), libc::SIGSTOP) };
    let started = Instant::now();
    let out = pasidctl(&d.control, &["stats"]).output().unwrap();
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(d.pid(), libc::SIGCONT) };
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "pasidctl: the daemon on {} did not answer within 2 s (is it stopped or \
             overloaded?)",
            d.control.display()
        )
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&took),
        "{took:?}"
    );
    // Running again, it answers.
    assert!(d.ctl(&["stats"]).0);
}

/// A user who may not use the control socket is told so, with who may.
#[test]
fn permission_denied_names_who_may_connect() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run pasidctl as another user");
        return;
    }
    let d = Daemon::start(&["--vm", "web={dir}/web.sock"]);
    // The socket's directory must be reachable: only the socket's own mode
    // (0600) may stop the other user.
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = pasidctl(&d.control, &["vms"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "pasidctl: permission denied on {}: the control socket is for root and the \
             daemon's user, and for members of the group given to its --control-group \
             (read-only commands); run with sudo or join that group",
            d.control.display()
        )
    );
}

/// One command a [`ScriptedQmp`] received, and the ack that lets its
/// answer go.
struct QmpCall {
    command: String,
    arguments: serde_json::Value,
    answered: std::sync::mpsc::Sender<()>,
}

/// A scripted QMP peer standing for the monitor of a q35 QEMU whose vpasid
/// device `vp0` (chardev `vu0`, connected to `backend`) sits on the root
/// port `vpasid-port`, as docs/operations.md plugs it. Every command is
/// handed to the test (`calls`) and answered once the test acks it, so the
/// test can play the device's side in between: drop its vhost-user
/// connection at `chardev-remove`, connect a new one at `device_add`.
struct ScriptedQmp {
    path: std::path::PathBuf,
    calls: std::sync::mpsc::Receiver<QmpCall>,
}

impl ScriptedQmp {
    fn start(path: std::path::PathBuf, backend: &Path) -> ScriptedQmp {
        use std::io::Write;
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, calls) = std::sync::mpsc::channel();
        let filename = format!("unix:{}", backend.display());
        std::thread::spawn(move || {
            // One connection per pasidctl run.
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream).lines();
                writeln!(out, r#"{{"QMP":{{"version":{{}},"capabilities":[]}}}}"#).unwrap();
                while let Some(Ok(line)) = lines.next() {
                    let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let command = msg["execute"].as_str().unwrap().to_string();
                    let arguments = msg["arguments"].clone();
                    let (ack, answered) = std::sync::mpsc::channel();
                    let call = QmpCall {
                        command: command.clone(),
                        arguments: arguments.clone(),
                        answered: ack,
                    };
                    if tx.send(call).is_err() {
                        return;
                    }
                    answered.recv_timeout(LONG).unwrap();
                    let answer = scripted_answer(&command, &arguments, &filename);
                    writeln!(out, "{answer}").unwrap();
                    if command == "device_del" {
                        writeln!(
                            out,
                            r#"{{"event":"DEVICE_DELETED","data":{{"path":"/machine/peripheral/vp0/virtio-backend"}}}}"#
                        )
                        .unwrap();
                        writeln!(
                            out,
                            r#"{{"event":"DEVICE_DELETED","data":{{"device":"vp0","path":"/machine/peripheral/vp0"}}}}"#
                        )
                        .unwrap();
                    }
                }
            }
        });
        ScriptedQmp { path, calls }
    }

    /// The next command pasidctl sent (not answered until acked).
    fn next(&self) -> QmpCall {
        self.calls.recv_timeout(LONG).unwrap()
    }
}

/// What the scripted QEMU answers to `command`.
fn scripted_answer(command: &str, args: &serde_json::Value, filename: &str) -> serde_json::Value {
    use serde_json::json;
    let ok = |value: serde_json::Value| json!({ "return": value });
    let no = || json!({"error": {"class": "GenericError", "desc": "Property not found"}});
    match command {
        "query-chardev" => ok(json!([
            {"label": "monitor", "filename": "unix:/run/q.qmp,server=on"},
            {"label": "vu0", "filename": filename},
        ])),
        "qom-list" if args["path"] == "/machine/peripheral" => ok(json!([
            {"name": "type", "type": "string"},
            {"name": "vpasid-port", "type": "child<pcie-root-port>"},
            {"name": "vp0", "type": "child<vhost-user-test-device-pci>"},
        ])),
        "qom-list" => json!({"error": {"class": "DeviceNotFound", "desc": "no such path"}}),
        "qom-get" if args["path"] == "/machine/peripheral/vp0" => {
            match args["property"].as_str().unwrap() {
                "chardev" => ok(json!("vu0")),
                "virtio-id" => ok(json!(37)),
                "num_vqs" => ok(json!(1)),
                "config_size" => ok(json!(32)),
                "vq_size" => ok(json!(64)),
                "addr" => ok(json!(0)),
                "parent_bus" => ok(json!("/machine/peripheral/vpasid-port/vpasid-port")),
                _ => no(),
            }
        }
        "qom-get" => no(),
        _ => ok(json!({})),
    }
}

/// `pasidctl detach` and `attach` against a scripted q35 QEMU and the real
/// daemon: detach tells the daemon first (the VM's hold-over is 0, yet
/// its PASIDs are held over after the unplug), unplugs (device_del,
/// DEVICE_DELETED, chardev-remove), and prints the device with its root
/// port as `bus`; attach plugs the device the daemon remembered on the
/// same bus and address (chardev-add to the VM's socket, device_add),
/// and reports the driver's RECONCILE: every PASID kept.
#[test]
fn detach_and_attach_carry_the_device_over() {
    use serde_json::json;
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let socket = d.path("a.sock");
    let mut vm = frontend::driver(&d, "a", frontend::VmOptions::reconcile());
    let mine = vec![
        vm.alloc_ok(1, 100),
        vm.alloc_ok(1, 100),
        vm.alloc_ok(1, 100),
    ];
    let qemu = ScriptedQmp::start(d.path("q.qmp"), &socket);
    let qmp = qemu.path.to_str().unwrap().to_string();

    let child = pasidctl(
        &d.control,
        &["--json", "detach", "--vm", "a", "--qmp", &qmp],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut seen = Vec::new();
    let mut vm = Some(vm);
    loop {
        let call = qemu.next();
        if call.command == "device_del" {
            // The daemon was told before the unplug began.
            d.wait_log("vm=a event=detach pasids=3 hold_seconds=300 keep=false");
            assert_eq!(call.arguments, json!({"id": "vp0"}));
        }
        if call.command == "chardev-remove" {
            assert_eq!(call.arguments, json!({"id": "vu0"}));
            drop(vm.take()); // QEMU closes the vhost-user connection.
        }
        seen.push(call.command.clone());
        let last = call.command == "chardev-remove";
        call.answered.send(()).unwrap();
        if last {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(seen.first().map(String::as_str), Some("qmp_capabilities"));
    assert_eq!(
        seen.iter().rev().take(2).collect::<Vec<_>>(),
        ["chardev-remove", "device_del"]
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["vm"], "a");
    assert_eq!(
        report["device"],
        json!({"chardev": "vu0", "driver": "vhost-user-test-device-pci", "id": "vp0",
               "properties": {"virtio-id": 37, "num_vqs": 1, "config_size": 32,
                              "vq_size": 64, "addr": 0, "bus": "vpasid-port"}})
    );
    assert_eq!(
        (report["held"].as_u64(), report["hold_secs"].as_u64()),
        (Some(3), Some(300))
    );
    assert_eq!(report["disconnected"], true);
    d.wait_log("vm=a event=held-over pasids=3 seconds=300");
    assert_eq!(held_by(&d, "a"), mine, "held over: the VM's hold-over is 0");
    let exported = d.ctl_json(&["export", "--vm", "a"]);
    assert_eq!(exported["device"], report["device"]);

    // attach: the remembered device, on the same bus and address.
    let child = pasidctl(
        &d.control,
        &["--json", "attach", "--vm", "a", "--qmp", &qmp],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let resumed = loop {
        let call = qemu.next();
        let command = call.command.clone();
        match command.as_str() {
            "chardev-add" => assert_eq!(
                call.arguments,
                json!({"id": "vu0", "backend": {"type": "socket", "data": {
                    "addr": {"type": "unix", "data": {"path": socket.to_str().unwrap()}},
                    "server": false}}})
            ),
            "device_add" => assert_eq!(
                call.arguments,
                json!({"driver": "vhost-user-test-device-pci", "id": "vp0", "chardev": "vu0",
                       "virtio-id": 37, "num_vqs": 1, "config_size": 32, "vq_size": 64,
                       "addr": 0, "bus": "vpasid-port"})
            ),
            _ => {}
        }
        call.answered.send(()).unwrap();
        if command == "device_add" {
            // The guest's driver binds the new device and resumes.
            let mut resumed = frontend::driver(&d, "a", frontend::VmOptions::reconcile());
            let reply = resumed.reconcile(&mine, true, true);
            assert_eq!(
                reply.pasids,
                vec![pasid_protocol::ReconcileResult::Kept as u32; 3]
            );
            break resumed;
        }
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["probe"], "reconcile", "{report}");
    assert_eq!(
        (
            report["kept"].as_u64(),
            report["regranted"].as_u64(),
            report["conflicts"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{report}"
    );
    assert!(report["after_ms"].as_u64().unwrap() < 10_000, "{report}");
    assert_eq!(held_by(&d, "a"), mine);
    drop(resumed);
}

/// `attach` whose driver never answers times out with a clear message and
/// a non-zero status; one that knows no device plugs the protocol's
/// default device on --bus at --addr; an export without a device is no
/// device to plug.
#[test]
fn attach_without_a_probe_times_out() {
    use serde_json::json;
    let d = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    let socket = d.path("a.sock");
    let qemu = ScriptedQmp::start(d.path("q.qmp"), &socket);
    let qmp = qemu.path.to_str().unwrap().to_string();
    // An export taken before the detach has no device to give.
    let early = d.path("early.json");
    std::fs::write(&early, r#"{"vm":"a","pasids":[],"device":null}"#).unwrap();
    let (ok, _, err) = d.ctl(&[
        "attach",
        "--vm",
        "a",
        "--qmp",
        &qmp,
        "--device",
        early.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("names no device") && err.contains("pasidctl detach --json"),
        "{err}"
    );
    let started = Instant::now();
    let child = pasidctl(
        &d.control,
        &[
            "attach",
            "--vm",
            "a",
            "--qmp",
            &qmp,
            "--bus",
            "port1",
            "--addr",
            "0",
            "--timeout",
            "1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    loop {
        let call = qemu.next();
        let command = call.command.clone();
        if command == "device_add" {
            assert_eq!(
                call.arguments,
                json!({"driver": "vhost-user-test-device-pci", "id": "vpasid-a",
                       "chardev": "vpasid-a", "virtio-id": 37, "num_vqs": 1,
                       "config_size": 32, "bus": "port1", "addr": "0"})
            );
        }
        call.answered.send(()).unwrap();
        if command == "device_add" {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        format!(
            "pasidctl: the device was plugged, but VM a's driver sent neither RECONCILE nor \
             RESET within 1 s (is the driver loaded in the guest? is the daemon serving {}?)",
            socket.display()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}
