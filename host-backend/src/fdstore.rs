// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! systemd's file descriptor store, spoken directly (sd_notify(3),
//! sd_listen_fds_with_names(3)).
//!
//! [`Notifier`] is the `NOTIFY_SOCKET` datagram socket, opened and connected
//! once at start-up, before the seccomp filter (which forbids `socket` for
//! datagram sockets): every later `READY=1`, `FDSTORE=1`+`FDNAME=` and
//! `FDSTOREREMOVE=1`+`FDNAME=` goes through it with `sendmsg`. (The
//! sd-notify crate opens a socket per message.)
//!
//! [`take_inherited`] adopts the descriptors a new start of the service
//! receives (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), those whose name
//! starts with [`NAME_PREFIX`] only: any other (a socket-activated
//! listener named by `--fd`) is left alone.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};

use log::warn;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Every descriptor the daemon stores is named `vpasid.` + VM + `.` +
/// session + `.` + what it is (FDNAME=, at most 255 printable characters,
/// no `:`).
pub const NAME_PREFIX: &str = "vpasid.";

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The open `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: String,
}

/// Descriptors this process has in the store (stored or kept at start,
/// not yet removed): `vpasid_fdstore_descriptors`.
static STORED: AtomicU64 = AtomicU64::new(0);
/// Sessions taken over from the store: `vpasid_session_takeovers_total`.
static TAKEOVERS: AtomicU64 = AtomicU64::new(0);

/// Descriptors this process has in the store.
pub fn stored() -> u64 {
    STORED.load(Ordering::Relaxed)
}

/// Sessions this process took over from the store.
pub fn takeovers() -> u64 {
    TAKEOVERS.load(Ordering::Relaxed)
}

/// Counts a session taken over.
pub fn count_takeover() {
    TAKEOVERS.fetch_add(1, Ordering::Relaxed);
}

impl Notifier {
    /// Opens the socket `NOTIFY_SOCKET` names (a path, or `@name` in the
    /// abstract namespace); `None` when the variable is unset.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let target = target.to_string_lossy().into_owned();
        let socket = UnixDatagram::unbound()?;
        match target.strip_prefix('@') {
            Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?,
            None => socket.connect(&target)?,
        }
        Ok(Some(Notifier { socket, target }))
    }

    /// Where the messages go, for log lines.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends one message (`KEY=VALUE` lines) with `fds` attached.
    pub fn send(&self, message: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        let sent = sendmsg::<UnixAddr>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(message.as_bytes())],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "incomplete notify message",
            ));
        }
        Ok(())
    }

    /// `READY=1`.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1\n", &[])
    }

    /// Stores `fd` under `name` (FDSTORE=1, FDNAME=), one descriptor per
    /// message so that each has its own name. systemd keeps it
    /// until [`Notifier::remove`], and drops it by itself when it reports
    /// POLLHUP or POLLERR (FDPOLL defaults to on): a connection whose peer
    /// closed leaves the store even while the daemon is down.
    pub fn store(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.send(&format!("FDSTORE=1\nFDNAME={name}\n"), &[fd])?;
        STORED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes every stored descriptor named `name` (FDSTOREREMOVE=1).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}\n"), &[])?;
        let _ = STORED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
        Ok(())
    }

    /// Counts descriptors a new start found in the store and kept.
    pub fn count_kept(&self, n: u64) {
        STORED.fetch_add(n, Ordering::Relaxed);
    }
}

/// Whether `name` may be an FDNAME= (systemd's `fdname_is_valid`):
/// 1-255 printable ASCII characters, no `:`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
}

/// The daemon's descriptors found in the store at start, by name. Names
/// are unique per descriptor (the daemon never stores two under one name);
/// a repeated name keeps the last one and closes the others.
pub type Inherited = BTreeMap<String, OwnedFd>;

/// Adopts the stored descriptors passed to this process (`LISTEN_PID` is
/// its pid), those named [`NAME_PREFIX`]`*`, and removes the `LISTEN_*`
/// variables. Call it before any thread starts (it changes the
/// environment).
pub fn take_inherited() -> Inherited {
    let mut found = Inherited::new();
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    if !pid_matches || count <= 0 {
        return found;
    }
    let mut names = names.split(':');
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        let name = names.next().unwrap_or("unknown");
        if !name.starts_with(NAME_PREFIX) {
            continue;
        }
        // Only an open descriptor may be owned.
        if fcntl(
            // SAFETY: borrowed for this call only; checked open below.
            unsafe { BorrowedFd::borrow_raw(fd) },
            FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC),
        )
        .is_err()
        {
            warn!("event=fdstore-missing fd={fd} name={name}");
            continue;
        }
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
        // is ours) under a name only this daemon gives, and it is open
        // (F_SETFD succeeded): nothing else in the process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        found.insert(name.to_string(), owned);
    }
    // The variables describe this process's descriptors only: a child
    // must not read them. Nothing else has started yet (see above).
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::io::IoSliceMut;

    #[test]
    fn names_follow_systemd() {
        assert!(valid_name("vpasid.vm-1.1a2b.conn"));
        assert!(!valid_name(""));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("tab\there"));
        assert!(!valid_name(&"x".repeat(256)));
        assert!(valid_name(&"x".repeat(255)));
    }

    /// Stores and removes over a real datagram socket, as systemd reads them.
    #[test]
    fn store_and_remove_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: {
                let s = UnixDatagram::unbound().unwrap();
                s.connect(&path).unwrap();
                s
            },
            target: path.display().to_string(),
        };
        let before = stored();
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        notifier
            .store("vpasid.a.1.kick0", std::os::fd::AsFd::as_fd(&efd))
            .unwrap();
        assert!(stored() > before);
        let mut buf = [0u8; 256];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<UnixAddr>(
            manager.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let fds: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => f,
                _ => Vec::new(),
            })
            .collect();
        let len = msg.bytes;
        assert_eq!(fds.len(), 1);
        assert_eq!(&buf[..len], b"FDSTORE=1\nFDNAME=vpasid.a.1.kick0\n");
        // SAFETY: received just now, owned by nobody else.
        drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        notifier.remove("vpasid.a.1.kick0").unwrap();
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"FDSTOREREMOVE=1\nFDNAME=vpasid.a.1.kick0\n");
    }
}
