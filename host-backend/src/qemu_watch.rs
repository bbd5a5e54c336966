// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The QEMU process of each VM's connection, and its exit.
//!
//! When a VM connects (or its session is taken over from the descriptor
//! store), the slot reads the peer's pid from the vhost-user socket
//! (`SO_PEERCRED`: the process that connected, QEMU) and binds the VM's
//! PASIDs to it in the registry, durably, with the host's boot id. The
//! watcher opens a pidfd for it (`pidfd_open`) and one thread polls every
//! pidfd: when the process exits, the registry releases what a VM in
//! hold-over (or otherwise disconnected) still holds, at once. At
//! start-up, [`QemuWatch::check_at_start`] opens a pidfd for each durable
//! pid of this boot: a process that no longer exists (`ESRCH`), or one of
//! an earlier boot, releases its VM; a live one is watched.
//!
//! No /proc scans: a pidfd stays bound to its process (a reused pid is
//! another process). Between reading the pid and opening the pidfd, or
//! while the daemon is down, the pid may be reused: the daemon then takes
//! the new process for QEMU and keeps the PASIDs until it exits, the safe
//! direction (docs/operations.md).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{error, info, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::logfmt::Value;
use crate::registry::record::QemuPeer;
use crate::registry::{Registry, VmId};

/// Where the kernel names this boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The host's boot id as 16 bytes, from its textual UUID form; all zeros
/// when it cannot be read (pids are then never judged across a reboot).
pub fn read_boot_id() -> [u8; 16] {
    std::fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .and_then(|text| parse_boot_id(&text))
        .unwrap_or([0; 16])
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (a newline may follow) as bytes.
fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.trim().bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

/// The pid of the process at the other end of the Unix socket `conn` (the
/// one that connected it), if the kernel names one in this pid namespace.
pub fn peer_pid(conn: BorrowedFd<'_>) -> Option<u32> {
    let cred = getsockopt(&conn, PeerCredentials).ok()?;
    u32::try_from(cred.pid()).ok().filter(|pid| *pid > 0)
}

/// What opening a pidfd for a pid found.
#[derive(Debug)]
pub enum Liveness {
    /// The process exists: its pidfd.
    Alive(OwnedFd),
    /// No such process (`ESRCH`).
    Gone,
    /// The pidfd could not be opened for another reason (a kernel before
    /// 5.3, a filter): nothing is known.
    Unknown(io::Error),
}

/// Opens a pidfd for `pid`.
pub fn open_pidfd(pid: u32) -> Liveness {
    let Some(pid_t) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Liveness::Unknown(io::Error::from(io::ErrorKind::InvalidInput));
    };
    match rustix::process::pidfd_open(pid_t, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Liveness::Alive(fd),
        Err(rustix::io::Errno::SRCH) => Liveness::Gone,
        Err(e) => Liveness::Unknown(e.into()),
    }
}

/// One process watched for a VM.
#[derive(Debug)]
struct Watched {
    vm: VmId,
    pid: u32,
    pidfd: OwnedFd,
}

/// The QEMU processes bound to VMs, and the thread that sees them exit.
#[derive(Debug)]
pub struct QemuWatch {
    /// This boot's id, stored with every pid.
    boot_id: [u8; 16],
    /// Processes to watch from now on, handed to the thread.
    pending: Mutex<Vec<Watched>>,
    /// Wakes the thread for `pending`.
    wake: EventFd,
}

/// What [`QemuWatch::check_at_start`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartCheck {
    /// Bound processes that live: watched.
    pub alive: usize,
    /// Bound processes gone (or of an earlier boot): their VMs released.
    pub gone: usize,
    /// Bound processes that could not be checked: their VMs keep their
    /// PASIDs.
    pub unknown: usize,
}

impl QemuWatch {
    /// A watcher for this boot (its id read now, before the sandbox).
    pub fn new() -> io::Result<Self> {
        Ok(QemuWatch {
            boot_id: read_boot_id(),
            pending: Mutex::new(Vec::new()),
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Watched>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self, vm: VmId, pid: u32, pidfd: OwnedFd) {
        self.pending().push(Watched { vm, pid, pidfd });
        // Only fails if the counter would overflow: it is read every wake.
        let _ = self.wake.write(1);
    }

    /// VM `vm` connected from process `pid` (the peer of its socket, if
    /// known): binds its PASIDs to that process and watches it. A process
    /// already gone releases at the connection's end.
    pub fn bind(&self, registry: &Mutex<Registry>, vm: VmId, name: &str, pid: Option<u32>) {
        let peer = pid.map(|pid| QemuPeer {
            pid,
            boot_id: self.boot_id,
        });
        lock(registry).bind_qemu(vm, peer);
        let Some(pid) = pid else {
            warn!(
                "vm={name} event=qemu-unknown the connection's peer has no pid in this \
                 namespace: its exit cannot end the VM's hold-over"
            );
            return;
        };
        match open_pidfd(pid) {
            Liveness::Alive(pidfd) => self.watch(vm, pid, pidfd),
            Liveness::Gone => exited(registry, vm, pid),
            Liveness::Unknown(e) => warn!(
                "vm={name} event=qemu-watch-failed pid={pid} error={}: its exit cannot end \
                 the VM's hold-over",
                Value(e)
            ),
        }
    }

    /// At start-up (before the threads), for each VM durable state binds
    /// to a QEMU process, except those named in `resumed` (their session
    /// is taken over: they bind again): a live process is watched, one
    /// that is gone (or of an earlier boot) releases its VM.
    pub fn check_at_start(&self, registry: &mut Registry, resumed: &[&str]) -> StartCheck {
        let mut found = StartCheck::default();
        for (name, vm, peer) in registry.bound_qemus() {
            if resumed.contains(&name.as_str()) {
                continue;
            }
            let unknown_boot = self.boot_id == [0; 16] || peer.boot_id == [0; 16];
            let liveness = if unknown_boot {
                Liveness::Unknown(io::Error::other("boot id unknown"))
            } else if peer.boot_id != self.boot_id {
                Liveness::Gone
            } else {
                open_pidfd(peer.pid)
            };
            match liveness {
                Liveness::Alive(pidfd) => {
                    found.alive += 1;
                    self.watch(vm, peer.pid, pidfd);
                }
                Liveness::Gone => {
                    found.gone += 1;
                    registry.qemu_exited(vm, peer.pid, true);
                }
                Liveness::Unknown(e) => {
                    found.unknown += 1;
                    warn!(
                        "vm={name} event=qemu-check-failed pid={} error={}: its PASIDs stay",
                        peer.pid,
                        Value(e)
                    );
                }
            }
        }
        if found != StartCheck::default() {
            info!(
                "event=qemu-check alive={} gone={} unknown={}",
                found.alive, found.gone, found.unknown
            );
        }
        found
    }

    /// The watcher thread: polls every watched pidfd and tells the
    /// registry of each exit. Never returns.
    pub fn run(self: Arc<Self>, registry: Arc<Mutex<Registry>>) {
        let mut watched: Vec<Watched> = Vec::new();
        loop {
            for new in self.pending().drain(..) {
                // A VM's new connection replaces its old process.
                watched.retain(|w| w.vm != new.vm);
                watched.push(new);
            }
            let ended = match wait_for_exits(self.wake.as_fd(), &watched) {
                Ok(ended) => ended,
                Err(e) => {
                    error!("event=qemu-watch-failed error={}", Value(e));
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
            };
            // Drained now, so a bind during the poll wakes the next one.
            let _ = self.wake.read();
            for index in ended.into_iter().rev() {
                if index < watched.len() {
                    let gone = watched.swap_remove(index);
                    exited(&registry, gone.vm, gone.pid);
                }
            }
        }
    }
}

/// Polls the wake eventfd and every pidfd; returns the indexes (in
/// `watched`, ascending) of the processes that exited.
fn wait_for_exits(wake: BorrowedFd<'_>, watched: &[Watched]) -> Result<Vec<usize>, Errno> {
    let mut fds = Vec::with_capacity(watched.len() + 1);
    fds.push(PollFd::new(wake, PollFlags::POLLIN));
    fds.extend(
        watched
            .iter()
            .map(|w| PollFd::new(w.pidfd.as_fd(), PollFlags::POLLIN)),
    );
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(fds
        .iter()
        .skip(1)
        .enumerate()
        .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
        .map(|(i, _)| i)
        .collect())
}

/// Process `pid` of VM `vm` exited: the registry releases what it should,
/// made durable before the next exit is looked at.
fn exited(registry: &Mutex<Registry>, vm: VmId, pid: u32) {
    let commit = {
        let mut reg = lock(registry);
        reg.qemu_exited(vm, pid, false);
        reg.commit_point()
    };
    if let Some(point) = commit {
        point.settle();
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn boot_ids_parse_from_the_kernels_form() {
        assert_eq!(
            parse_boot_id("01234567-89ab-cdef-0123-456789abcdef\n"),
            Some([
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ])
        );
        for bad in ["", "0123", "0123456789abcdef0123456789abcdeg", "é"] {
            assert_eq!(parse_boot_id(bad), None, "{bad:?}");
        }
        assert_ne!(read_boot_id(), [0; 16], "this kernel names its boot");
    }

    /// A registry with VM "a", hold-over 300 s.
    fn registry() -> (Arc<Mutex<Registry>>, VmId) {
        let (reg, vm) = crate::registry::test_registry(Duration::from_secs(300));
        (Arc::new(Mutex::new(reg)), vm)
    }

    /// PASIDs VM `vm` holds.
    fn held(registry: &Mutex<Registry>, vm: VmId) -> usize {
        let reg = lock(registry);
        let name = reg.vm_name(vm).to_string();
        reg.vms()
            .iter()
            .find(|v| v.name == name)
            .map_or(0, |v| v.held as usize)
    }

    /// Waits (bounded) until `vm` holds nothing.
    fn wait_released(registry: &Mutex<Registry>, vm: VmId) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if held(registry, vm) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// With a real process (a `sleep` child) as the VM's QEMU and the
    /// watcher thread running: the hold-over of a disconnected VM ends
    /// when the process is killed; after `unbind_qemu` it does not.
    #[test]
    fn a_real_process_exit_ends_the_holdover_unless_unbound() {
        for unbind in [false, true] {
            let (registry, vm) = registry();
            let watch = Arc::new(QemuWatch::new().unwrap());
            let thread_watch = watch.clone();
            let thread_registry = registry.clone();
            std::thread::spawn(move || thread_watch.run(thread_registry));
            let mut child = Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            // As a connection does: connected, bound, then the driver's
            // requests.
            lock(&registry).set_connected(vm, true);
            watch.bind(&registry, vm, "a", Some(child.id()));
            crate::registry::test_allocs(&mut lock(&registry), vm, 3);
            assert_eq!(lock(&registry).vms()[0].qemu_pid, Some(child.id()));
            {
                let mut reg = lock(&registry);
                reg.set_connected(vm, false);
                reg.end_connection(vm, Instant::now());
                if unbind {
                    reg.unbind_qemu(vm);
                }
            }
            assert_eq!(held(&registry, vm), 3);
            child.kill().unwrap();
            child.wait().unwrap();
            if unbind {
                std::thread::sleep(Duration::from_millis(200));
                assert_eq!(held(&registry, vm), 3, "unbound: the exit releases nothing");
                assert!(lock(&registry).vms()[0].held_over_for.is_some());
            } else {
                assert!(wait_released(&registry, vm), "the exit ends the hold-over");
            }
        }
    }

    /// At start-up: a durable pid that is gone, or of another boot,
    /// releases; a live one is kept and watched; a resumed VM is skipped.
    #[test]
    fn start_up_releases_gone_processes_and_watches_live_ones() {
        let watch = QemuWatch::new().unwrap();
        let mut dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut live = Command::new("sleep").arg("600").spawn().unwrap();
        let boot = read_boot_id();
        let cases = [
            (dead_pid, boot, 0, "gone"),
            (live.id(), boot, 2, "alive"),
            (live.id(), [9; 16], 0, "earlier boot"),
            (live.id(), [0; 16], 2, "boot unknown"),
        ];
        for (pid, boot_id, kept, what) in cases {
            let (registry, vm) = registry();
            let mut reg = lock(&registry);
            reg.set_connected(vm, true);
            reg.bind_qemu(vm, Some(QemuPeer { pid, boot_id }));
            crate::registry::test_allocs(&mut reg, vm, 2);
            // As after a restart: nothing connected.
            reg.set_connected(vm, false);
            assert_eq!(
                watch.check_at_start(&mut reg, &["a"]),
                StartCheck::default()
            );
            watch.check_at_start(&mut reg, &[]);
            assert_eq!(reg.vms()[0].held, kept, "{what}");
        }
        live.kill().unwrap();
        live.wait().unwrap();
    }
}
