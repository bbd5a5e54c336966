// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Sessions that outlive the daemon: every VM session runs through a proxy
//! that keeps the session in systemd's file descriptor store, and a daemon
//! started with such descriptors takes the session over.
//!
//! The vhost-user-backend crate serves one connection per
//! `VhostUserDaemon` and keeps the session's state private. So QEMU's
//! connection never goes to the crate: the slot accepts it, and a
//! [`Proxy`] sits between it and an internal connection on which a fresh
//! `VhostUserDaemon` serves. The proxy forwards every control message both
//! ways (descriptors included), and records the set-up into a
//! [`session::Image`], storing the image (a memfd), the connection, the
//! guest memory and eventfds in the store as they arrive. The vrings and
//! eventfds are the daemon's directly: nothing of the data path passes
//! here.
//!
//! At start, [`adopt`] sorts the stored descriptors into sessions and drops
//! (closes, and removes from the store) what cannot be taken over. A slot
//! with a session to take over replays the image into a fresh daemon on a
//! new internal connection, with each running vring's base set to the used
//! index found in guest memory, and proxies QEMU's connection again. QEMU
//! sees no disconnect.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;

use crate::fdstore::{Inherited, Notifier, NAME_PREFIX};
use crate::session::{
    self, member_of, read_used_idx, receive, Image, ImageFile, Message, Recorder, WireError,
};
use crate::vhu_vpasid::PasidDevice;

/// The role names of the two descriptors every session stores.
const CONN: &str = "conn";
const IMAGE: &str = "image";

/// Longest a stopping daemon waits for its proxies to reach a message
/// boundary.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Errors setting a session up.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// A descriptor could not be stored.
    #[error("cannot store descriptors: {0}")]
    Store(io::Error),
    /// The internal connection failed.
    #[error("internal connection: {0}")]
    Internal(String),
    /// The replay into the new daemon failed.
    #[error("replay: {0}")]
    Replay(#[from] WireError),
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The internal listener the per-session daemons accept on: a socket file
/// (mode 0600, the daemon's user) next to the control socket, bound before
/// the seccomp filter.
pub struct Internal {
    listener: Mutex<Listener>,
    path: PathBuf,
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Internal")
            .field("path", &self.path)
            .finish()
    }
}

impl Internal {
    /// Wraps a bound listener.
    pub fn new(listener: UnixListener, path: PathBuf) -> Self {
        Internal {
            listener: Mutex::new(Listener::from(listener)),
            path,
        }
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts `daemon` on a new internal connection and returns the
    /// proxy's end. Serialized: a daemon accepts exactly the connection
    /// made for it.
    pub fn attach(
        &self,
        daemon: &mut VhostUserDaemon<Arc<PasidDevice>>,
    ) -> Result<UnixStream, TakeoverError> {
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        let ours = UnixStream::connect(&self.path)?;
        daemon
            .start(&mut listener)
            .map_err(|e| TakeoverError::Internal(e.to_string()))?;
        Ok(ours)
    }
}

/// Tells the proxies that the daemon stops, and waits for them to reach a
/// message boundary (no reply owed to QEMU).
#[derive(Debug)]
pub struct Stopper {
    fd: EventFd,
    running: AtomicUsize,
    parked: AtomicUsize,
}

impl Stopper {
    /// A stopper nobody has triggered.
    pub fn new() -> io::Result<Self> {
        Ok(Stopper {
            fd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            running: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
        })
    }

    /// Stops every proxy at its next message boundary; returns once all
    /// are parked or after `wait`.
    pub fn stop(&self, wait: Duration) -> bool {
        // Never read: the descriptor stays readable for every proxy.
        let _ = self.fd.write(1);
        let until = Instant::now() + wait;
        loop {
            if self.parked.load(Ordering::Acquire) >= self.running.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What the sessions of one daemon share.
#[derive(Debug)]
pub struct Sessions {
    /// The notify socket, when run by systemd (or a test playing it).
    pub notifier: Option<Arc<Notifier>>,
    /// The internal listener.
    pub internal: Internal,
    /// Stops proxies.
    pub stopper: Stopper,
    /// The PASID space's identifier, written into each image.
    pub space_id: u64,
}

impl Sessions {
    fn store(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), TakeoverError> {
        match &self.notifier {
            Some(n) => n.store(name, fd).map_err(TakeoverError::Store),
            None => Ok(()),
        }
    }

    fn remove(&self, name: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.remove(name) {
                warn!(
                    "event=fdstore-remove-failed name={name} error={}",
                    crate::logfmt::Value(e)
                );
            }
        }
    }
}

/// A session found in the store, checked and ready to take over.
#[derive(Debug)]
pub struct Stored {
    prefix: String,
    image: Image,
    fds: BTreeMap<String, OwnedFd>,
}

impl Stored {
    /// Whether a driver has the device started.
    pub fn started(&self) -> bool {
        self.image.started()
    }

    /// QEMU's connection: its peer is the VM's QEMU process.
    pub fn connection(&self) -> Option<BorrowedFd<'_>> {
        self.fds.get(&self.image.conn).map(AsFd::as_fd)
    }
}

/// What [`adopt`] needs to know of the new daemon.
#[derive(Debug)]
pub struct Fit<'a> {
    /// Configured VM slot names.
    pub slots: &'a [String],
    /// Durable state's space id, when there is durable state.
    pub state_space: Option<u64>,
}

/// Whether a connection's peer has gone (POLLHUP or POLLERR: a Unix
/// stream socket whose peer closed reports POLLHUP). Not POLLRDHUP: nix's
/// `revents()` reads no flag set it does not know, and that is one.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds
            .first()
            .and_then(PollFd::revents)
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        _ => false,
    }
}

fn drop_group(notifier: Option<&Notifier>, fds: BTreeMap<String, OwnedFd>) {
    for name in fds.keys() {
        if let Some(n) = notifier {
            let _ = n.remove(name);
        }
    }
    // Closed without shutdown(2): only the descriptors go.
    drop(fds);
}

/// Sorts the inherited descriptors into sessions, by VM. Drops (removes
/// from the store and closes) every descriptor that belongs to no session
/// the new daemon can take over, with a log line saying why.
/// What [`adopt`] found.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Sessions to take over, by VM.
    pub sessions: BTreeMap<String, Stored>,
    /// VMs whose session ended while no daemon ran (QEMU closed the
    /// connection): their PASIDs go as at any end of a connection.
    pub ended: Vec<String>,
}

pub fn adopt(mut inherited: Inherited, fit: &Fit<'_>, notifier: Option<&Notifier>) -> Adopted {
    let mut out: BTreeMap<String, Stored> = BTreeMap::new();
    let mut ended = Vec::new();
    let prefixes: Vec<String> = inherited
        .keys()
        .filter_map(|n| n.strip_suffix(IMAGE).map(str::to_string))
        .filter(|p| p.ends_with('.'))
        .collect();
    for prefix in prefixes {
        let names: Vec<String> = inherited
            .keys()
            .filter(|n| member_of(n, &prefix))
            .cloned()
            .collect();
        let mut fds: BTreeMap<String, OwnedFd> = names
            .iter()
            .filter_map(|n| inherited.remove(n).map(|fd| (n.clone(), fd)))
            .collect();
        let image_name = format!("{prefix}{IMAGE}");
        let image = fds
            .get(&image_name)
            .and_then(|fd| fd.try_clone().ok())
            .map(ImageFile::from_fd);
        let image = match image.map(|f| f.read()) {
            Some(Ok(Ok(image))) if image.conn == format!("{prefix}{CONN}") => image,
            _ => {
                error!("event=takeover-dropped session={prefix} reason=\"unreadable image\"");
                drop_group(notifier, fds);
                continue;
            }
        };
        let vm = image.vm.clone();
        let abort = if image.started() {
            ""
        } else {
            " (its device is not started: QEMU 11.1 aborts when this connection closes; \
             docs/operations.md)"
        };
        let why = if !fit.slots.contains(&vm) {
            Some("the configuration names no such VM".to_string())
        } else if out.contains_key(&vm) {
            Some("a second session for this VM".to_string())
        } else if fds.get(&image.conn).is_none_or(|c| hung_up(c.as_fd())) {
            ended.push(vm.clone());
            Some("QEMU closed the connection while the daemon was down".to_string())
        } else if let Some(missing) = image.names().into_iter().find(|n| !fds.contains_key(*n)) {
            Some(format!("descriptor {missing} is missing from the store"))
        } else if image.started() && fit.state_space.is_none() {
            Some(
                "its driver may hold PASIDs, and without --state-dir nothing vouches for them"
                    .into(),
            )
        } else if image.started() && fit.state_space != Some(image.space_id) {
            Some(format!(
                "durable state does not know it (image space {:#x}, state space {:#x})",
                image.space_id,
                fit.state_space.unwrap_or(0)
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let gone = why.starts_with("QEMU closed");
            if gone || image.started() {
                info!("vm={vm} event=takeover-dropped reason=\"{why}\"");
            } else {
                warn!("vm={vm} event=takeover-dropped reason=\"{why}\"{abort}");
            }
            drop_group(notifier, fds);
            continue;
        }
        // Descriptors stored but never written into the image (a crash
        // between storing and writing) go.
        let extra: Vec<String> = fds
            .keys()
            .filter(|n| !image.names().contains(&n.as_str()) && **n != image_name)
            .cloned()
            .collect();
        for n in extra {
            if let Some(fd) = fds.remove(&n) {
                drop_group(notifier, BTreeMap::from([(n, fd)]));
            }
        }
        out.insert(vm, Stored { prefix, image, fds });
    }
    // Whatever is left belongs to no session.
    if !inherited.is_empty() {
        warn!(
            "event=takeover-orphans count={} (descriptors of no readable session: closed)",
            inherited.len()
        );
        drop_group(notifier, inherited);
    }
    if let Some(n) = notifier {
        let kept: usize = out.values().map(|s| s.fds.len()).sum();
        n.count_kept(kept as u64);
    }
    Adopted {
        sessions: out,
        ended,
    }
}

fn session_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    #[allow(clippy::cast_possible_truncation)]
    let id = (nanos as u64) ^ ((n as u64) << 48) ^ u64::from(std::process::id()) << 32;
    format!("s{id:016x}")
}

/// How a proxied session ended.
#[derive(Debug)]
pub enum End {
    /// QEMU closed its connection: the session is over.
    Frontend,
    /// The daemon closed the internal connection (it refused a message).
    Backend(WireError),
    /// The daemon stops: the session stays in the store for the next one.
    Stopped,
}

/// One session between QEMU and its daemon.
#[derive(Debug)]
pub struct Proxy {
    vm: String,
    frontend: UnixStream,
    recorder: Recorder,
    image_file: ImageFile,
    sessions: Arc<Sessions>,
    replies_owed: usize,
}

impl Proxy {
    /// A new session on QEMU's connection `frontend`: the connection and an
    /// empty image go into the store before anything is read.
    pub fn start(
        vm: &str,
        frontend: UnixStream,
        sessions: Arc<Sessions>,
    ) -> Result<Proxy, TakeoverError> {
        let prefix = format!("{NAME_PREFIX}{vm}.{}.", session_id());
        let image = Image {
            vm: vm.to_string(),
            space_id: sessions.space_id,
            conn: format!("{prefix}{CONN}"),
            ..Image::default()
        };
        let image_file = ImageFile::create()?;
        image_file.write(&image)?;
        let mut fds = BTreeMap::new();
        fds.insert(image.conn.clone(), OwnedFd::from(frontend.try_clone()?));
        fds.insert(
            format!("{prefix}{IMAGE}"),
            image_file.as_fd().try_clone_to_owned()?,
        );
        let proxy = Proxy {
            vm: vm.to_string(),
            frontend,
            recorder: Recorder::new(prefix.clone(), image, fds),
            image_file,
            sessions,
            replies_owed: 0,
        };
        // The image first: a store holding a connection without an image
        // is a store the next daemon cannot use.
        proxy
            .sessions
            .store(&format!("{prefix}{IMAGE}"), proxy.image_file.as_fd())?;
        proxy
            .sessions
            .store(&proxy.recorder.image.conn, proxy.frontend.as_fd())?;
        Ok(proxy)
    }

    /// A session taken over from the store.
    pub fn resume(
        vm: &str,
        stored: Stored,
        sessions: Arc<Sessions>,
    ) -> Result<Proxy, TakeoverError> {
        let Stored { prefix, image, fds } = stored;
        let conn = fds
            .get(&image.conn)
            .ok_or_else(|| TakeoverError::Internal("no connection".into()))?
            .try_clone()?;
        // The stored image file goes on being the session's image.
        let image_file = fds
            .get(&format!("{prefix}{IMAGE}"))
            .ok_or_else(|| TakeoverError::Internal("no image".into()))?
            .try_clone()
            .map(ImageFile::from_fd)?;
        Ok(Proxy {
            vm: vm.to_string(),
            frontend: UnixStream::from(conn),
            recorder: Recorder::new(prefix, image, fds),
            image_file,
            sessions,
            replies_owed: 0,
        })
    }

    /// The session's image.
    pub fn image(&self) -> &Image {
        &self.recorder.image
    }

    /// Descriptors the session keeps in the store.
    pub fn stored(&self) -> usize {
        self.recorder.fds.len()
    }

    /// Sets a fresh daemon on `backend` up as the image says (returns the
    /// used index each running vring goes on from), then wakes the vrings: a kick the old daemon read but never served, and a used
    /// entry whose interrupt it never sent, are both covered.
    pub fn replay(&mut self, backend: &UnixStream) -> Result<Vec<u16>, TakeoverError> {
        let image = self.recorder.image.clone();
        let pf = image.protocol_features.unwrap_or(0);
        let fds = &self.recorder.fds;
        let bases = std::cell::RefCell::new(Vec::new());
        let messages = image.replay(|v| {
            let idx = read_used_idx(&image, fds, v);
            bases.borrow_mut().extend(idx);
            idx
        });
        for (mut msg, names) in messages {
            for n in &names {
                let fd = fds
                    .get(n)
                    .ok_or_else(|| TakeoverError::Internal(format!("no descriptor {n}")))?;
                msg.fds.push(fd.try_clone()?);
            }
            let reply = msg.wants_reply(pf);
            msg.send(backend)?;
            if reply {
                receive(backend)?;
            }
        }
        // A barrier: the daemon has taken every message above.
        Message::new(session::req::GET_FEATURES, Vec::new()).send(backend)?;
        receive(backend)?;
        for v in image.vrings.iter().filter(|v| image.vring_started(v)) {
            for name in [&v.kick, &v.call].into_iter().flatten() {
                if let Some(fd) = fds.get(name) {
                    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
                }
            }
        }
        Ok(bases.into_inner())
    }

    /// Stores what a frontend message adds, then forwards it.
    fn forward_request(&mut self, backend: &UnixStream) -> Result<(), End> {
        // Read, then stored before it is forwarded: a daemon killed after
        // the read and before the store loses this one message (a window
        // of microseconds, during QEMU's set-up only; docs/operations.md).
        let msg = receive(&self.frontend).map_err(|e| match e {
            WireError::Closed => End::Frontend,
            e => End::Backend(e),
        })?;
        let change = self
            .recorder
            .record(&msg)
            .map_err(|e| End::Backend(e.into()))?;
        for (name, fd) in &change.store {
            if let Err(e) = self.sessions.store(name, fd.as_fd()) {
                error!(
                    "vm={} event=fdstore-failed name={name} error={}",
                    self.vm,
                    crate::logfmt::Value(e)
                );
            }
        }
        self.recorder.keep(change.store);
        if change.image {
            if let Err(e) = self.image_file.write(&self.recorder.image) {
                error!(
                    "vm={} event=image-write-failed error={}",
                    self.vm,
                    crate::logfmt::Value(e)
                );
            }
        }
        for name in &change.remove {
            self.sessions.remove(name);
        }
        self.recorder.forget(&change.remove);
        if msg.wants_reply(self.recorder.image.protocol_features.unwrap_or(0)) {
            self.replies_owed += 1;
        }
        msg.send(backend).map_err(End::Backend)
    }

    /// Forwards the daemon's message (a reply) to QEMU.
    fn forward_reply(&mut self, backend: &UnixStream) -> Result<(), End> {
        let msg = receive(backend).map_err(End::Backend)?;
        if msg.flags & session::REPLY != 0 {
            self.replies_owed = self.replies_owed.saturating_sub(1);
        }
        msg.send(&self.frontend).map_err(|_| End::Frontend)
    }

    /// Forwards messages both ways until the session or the daemon ends.
    pub fn run(&mut self, backend: &UnixStream) -> End {
        let sessions = self.sessions.clone();
        let stopper = &sessions.stopper;
        stopper.running.fetch_add(1, Ordering::AcqRel);
        let end = loop {
            let stopping = poll_one(stopper.fd.as_fd());
            if stopping && self.replies_owed == 0 {
                break End::Stopped;
            }
            let mut fds = vec![PollFd::new(backend.as_fd(), PollFlags::POLLIN)];
            if !stopping {
                fds.push(PollFd::new(self.frontend.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(stopper.fd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => break End::Backend(WireError::Io(e.into())),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            let (back, front) = (ready(0), ready(1));
            if back {
                if let Err(end) = self.forward_reply(backend) {
                    break end;
                }
            }
            if front {
                if let Err(end) = self.forward_request(backend) {
                    break end;
                }
            }
        };
        if matches!(end, End::Stopped) {
            stopper.parked.fetch_add(1, Ordering::AcqRel);
        } else {
            stopper.running.fetch_sub(1, Ordering::AcqRel);
        }
        end
    }

    /// The session is over: its descriptors leave the store, and are
    /// closed (QEMU's connection with them, without shutdown(2)).
    pub fn end(self) {
        for name in self.recorder.fds.keys() {
            self.sessions.remove(name);
        }
    }
}

/// Whether `fd` is readable now.
fn poll_one(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Vring;

    fn efd() -> OwnedFd {
        OwnedFd::from(EventFd::new().unwrap())
    }

    /// A stored session as a daemon leaves it: image, connection (a live
    /// socket pair, whose other end is returned) and a kick eventfd.
    fn stored(vm: &str, started: bool, space: u64) -> (Inherited, UnixStream) {
        let prefix = format!("{NAME_PREFIX}{vm}.s1.");
        let (ours, qemu) = UnixStream::pair().unwrap();
        let mut image = Image {
            vm: vm.into(),
            space_id: space,
            conn: format!("{prefix}{CONN}"),
            features: Some(0),
            ..Image::default()
        };
        let mut fds = Inherited::new();
        if started {
            image.vrings.push(Vring {
                kick: Some(format!("{prefix}kick0-3")),
                addr: Some(session::Addr::default()),
                ..Vring::default()
            });
            fds.insert(format!("{prefix}kick0-3"), efd());
        }
        let file = ImageFile::create().unwrap();
        file.write(&image).unwrap();
        fds.insert(
            format!("{prefix}{IMAGE}"),
            file.as_fd().try_clone_to_owned().unwrap(),
        );
        fds.insert(image.conn.clone(), OwnedFd::from(ours));
        (fds, qemu)
    }

    fn fit(slots: &[String], state: Option<u64>) -> Fit<'_> {
        Fit {
            slots,
            state_space: state,
        }
    }

    /// A crash between storing a descriptor and writing the image leaves
    /// a descriptor no image names: it is closed, the session kept.
    #[test]
    fn descriptors_no_image_names_are_closed() {
        let (mut fds, _qemu) = stored("a", true, 7);
        fds.insert("vpasid.a.s1.call0-9".into(), efd());
        let slots = vec!["a".to_string()];
        let adopted = adopt(fds, &fit(&slots, Some(7)), None);
        let s = adopted.sessions.get("a").unwrap();
        assert_eq!(s.fds.len(), 3, "{:?}", s.fds.keys());
        assert!(!s.fds.contains_key("vpasid.a.s1.call0-9"));
        assert!(adopted.ended.is_empty());
    }

    /// What the new daemon cannot vouch for or serve is dropped; a session
    /// whose QEMU went away is reported as ended.
    #[test]
    fn sessions_that_do_not_fit_are_dropped() {
        let slots = vec!["a".to_string()];
        // Started, and no durable state.
        let (fds, mut qemu) = stored("a", true, 7);
        let adopted = adopt(fds, &fit(&slots, None), None);
        assert!(adopted.sessions.is_empty());
        // The connection was closed: QEMU reads end of file.
        let mut b = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut qemu, &mut b).unwrap(), 0);
        // Started, another PASID space.
        let (fds, _q) = stored("a", true, 7);
        assert!(adopt(fds, &fit(&slots, Some(8)), None).sessions.is_empty());
        // Not started: taken over without state.
        let (fds, _q) = stored("a", false, 0);
        assert!(adopt(fds, &fit(&slots, None), None)
            .sessions
            .contains_key("a"));
        // A VM the configuration no longer names.
        let (fds, _q) = stored("gone", false, 0);
        assert!(adopt(fds, &fit(&slots, None), None).sessions.is_empty());
        // QEMU exited while no daemon ran.
        let (fds, qemu) = stored("a", true, 7);
        drop(qemu);
        let adopted = adopt(fds, &fit(&slots, Some(7)), None);
        assert!(adopted.sessions.is_empty());
        assert_eq!(adopted.ended, ["a"]);
        // A torn image.
        let (mut fds, _q) = stored("a", false, 0);
        let image = fds.get("vpasid.a.s1.image").unwrap();
        nix::unistd::ftruncate(image, 5).unwrap();
        fds.insert("vpasid.orphan.x.y".into(), efd());
        assert!(adopt(fds, &fit(&slots, None), None).sessions.is_empty());
    }
}
