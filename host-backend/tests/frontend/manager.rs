// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Plays systemd for the daemon (systemd is not PID 1 here): a datagram
//! socket at `NOTIFY_SOCKET` that keeps the descriptors the daemon stores
//! by name (`FDSTORE=1`, `FDNAME=`), honours `FDSTOREREMOVE=1` and
//! `FDPOLL=0`, drops a polled descriptor that reports POLLHUP or POLLERR,
//! keeps one copy of descriptors that are one open file (as systemd's
//! `same_fd()` does), and starts the next daemon with the store as
//! `LISTEN_FDS`/`LISTEN_FDNAMES` and `LISTEN_PID` set to the daemon's own
//! pid (sd_notify(3), sd_listen_fds_with_names(3)).
//!
//! Shared by the host tests (through [`super::service`]) and the QEMU tests
//! (`qemu-tests/tests/fdstore.rs`, through `#[path]`): it uses nothing of
//! either.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// One stored descriptor.
#[derive(Debug)]
struct Entry {
    name: String,
    fd: OwnedFd,
    poll: bool,
}

#[derive(Debug, Default)]
struct Store {
    entries: Vec<Entry>,
    ready: u64,
    messages: Vec<String>,
}

/// The service manager of one test.
#[derive(Debug)]
pub struct Manager {
    dir: tempfile::TempDir,
    socket: PathBuf,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = libc::c_long::from(unsafe { libc::getpid() });
    // SAFETY: kcmp compares two descriptors of this process; no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            0 as libc::c_long,
            libc::c_long::from(a.as_raw_fd()),
            libc::c_long::from(b.as_raw_fd()),
        )
    };
    r == 0
}

fn handle(store: &mut Store, text: &str, fds: Vec<OwnedFd>) {
    store.messages.push(text.to_string());
    let mut fdstore = false;
    let mut remove = false;
    let mut name = "stored".to_string();
    let mut poll = true;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => store.ready += 1,
            Some(("FDSTORE", "1")) => fdstore = true,
            Some(("FDSTOREREMOVE", "1")) => remove = true,
            Some(("FDNAME", n)) => name = n.to_string(),
            Some(("FDPOLL", "0")) => poll = false,
            _ => {}
        }
    }
    if remove {
        store.entries.retain(|e| e.name != name);
    }
    if fdstore {
        for fd in fds {
            if store
                .entries
                .iter()
                .any(|e| same_file(e.fd.as_fd(), fd.as_fd()))
            {
                continue; // systemd: "Suppressing duplicate fd in fd store."
            }
            store.entries.push(Entry {
                name: name.clone(),
                fd,
                poll,
            });
        }
    }
}

fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

fn serve(socket: UnixDatagram, store: Arc<Mutex<Store>>, stop: Arc<AtomicBool>) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(5)));
    while !stop.load(Ordering::Relaxed) {
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let got = recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()
        .map(|msg| {
            let mut fds = Vec::new();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: installed for this process just now.
                    fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            (msg.bytes, fds)
        });
        let mut store = store.lock().unwrap();
        if let Some((n, fds)) = got {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            handle(&mut store, &text, fds);
        }
        // FDPOLL: systemd drops a polled descriptor that hangs up.
        store.entries.retain(|e| !(e.poll && hung_up(e.fd.as_fd())));
    }
}

/// What the store holds for VM `vm`: the role of each of its descriptors
/// (the daemon's names are `vpasid.VM.SESSION.ROLE`), sorted, with the
/// counter that ends a role's name removed (`kick0-4` -> `kick0-`).
pub fn roles(names: &[String], vm: &str) -> Vec<String> {
    let prefix = format!("vpasid.{vm}.");
    let mut r: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once('.').map(|(_, role)| role.to_string()))
        .map(|role| {
            role.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_string()
        })
        .collect();
    r.sort();
    r
}

impl Manager {
    pub fn new() -> Arc<Manager> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("notify");
        let listener = UnixDatagram::bind(&socket).unwrap();
        // The daemon may run as another user (--user).
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let store = Arc::new(Mutex::new(Store::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (store.clone(), stop.clone());
        std::thread::spawn(move || serve(listener, s, st));
        Arc::new(Manager {
            dir,
            socket,
            store,
            stop,
        })
    }

    /// The names in the store, sorted (one per descriptor).
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .store
            .lock()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect();
        n.sort();
        n
    }

    /// Descriptors in the store.
    pub fn count(&self) -> usize {
        self.store.lock().unwrap().entries.len()
    }

    /// READY=1 messages received.
    pub fn ready(&self) -> u64 {
        self.store.lock().unwrap().ready
    }

    /// Every message received, in order.
    pub fn messages(&self) -> Vec<String> {
        self.store.lock().unwrap().messages.clone()
    }

    /// Waits (bounded) until `pred` holds for the store's names.
    pub fn wait_names(&self, what: &str, limit: Duration, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let names = self.names();
            if pred(&names) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "store never reached {what} within {limit:?}: {names:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Empties the store, as `systemctl stop` does.
    pub fn flush(&self) {
        self.store.lock().unwrap().entries.clear();
    }

    /// The command that starts `program ARGS` as systemd would: with
    /// `NOTIFY_SOCKET`, and the store as `LISTEN_FDS` (descriptors 3..),
    /// `LISTEN_FDNAMES` and `LISTEN_PID` (the program's own pid).
    pub fn command(&self, program: &std::path::Path, args: &[String]) -> Command {
        let store = self.store.lock().unwrap();
        let names: Vec<String> = store.entries.iter().map(|e| e.name.clone()).collect();
        let fds: Vec<OwnedFd> = store
            .entries
            .iter()
            .map(|e| e.fd.try_clone().unwrap())
            .collect();
        drop(store);
        // LISTEN_PID must be the daemon's own pid: the shell sets it to its
        // pid ($$), then execs the daemon, which keeps that pid.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .env("NOTIFY_SOCKET", &self.socket)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("LISTEN_PID")
            .stdout(Stdio::null());
        if fds.is_empty() {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
        } else {
            cmd.env("LISTEN_FDS", fds.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: between fork and exec only async-signal-safe calls
        // (fcntl, dup2, close) on descriptors this process owns (`fds`,
        // kept alive by the closure): first out of the way, then to 3.. in
        // order, without FD_CLOEXEC, as systemd passes them.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &fds;
                let mut high = Vec::with_capacity(raw.len());
                for fd in &raw {
                    let h = libc::fcntl(*fd, libc::F_DUPFD, 1000);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (target, h) in (3..).zip(&high) {
                    if libc::dup2(*h, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(*h);
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = &self.dir;
    }
}
