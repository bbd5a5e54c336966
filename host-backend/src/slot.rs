// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A VM slot: one listening socket with a stable VM identity, served in a
//! loop so that a VM which restarts can connect again.
//!
//! Each connection gets a fresh `VhostUserDaemon` (one daemon serves exactly
//! one connection). When the connection ends, for any reason, the VM's
//! references are reclaimed before the next connection is served. While a VM
//! is connected, a second frontend that connects to the same socket is
//! turned away with a clear log line instead of waiting silently in the
//! listen backlog, unless the session ends within [`HANDOVER_WAIT`]: a VM
//! that reconnects at once is served.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost::vhost_user::Error as VhostUserError;
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon, VhostUserHandlerError};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::qemu_watch::{peer_pid, QemuWatch};
use crate::registry::{Registry, VmId};
use crate::takeover::{End, Proxy, Sessions, Stored, TakeoverError};
use crate::vhu_vpasid::PasidDevice;

/// How long a frontend that connects while the slot is busy waits for the
/// current session to end before it is turned away. A frontend that closes
/// its connection and connects again at once arrives before the slot loop
/// has noticed the close; this covers that hand-over.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(1);

/// Errors that stop a slot from serving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The daemon could not be created.
    #[error("vm {vm}: cannot create vhost-user daemon: {cause}")]
    Daemon {
        /// VM name.
        vm: String,
        /// Cause.
        cause: DaemonError,
    },
    /// A session could not be set up or taken over.
    #[error("vm {vm}: session: {cause}")]
    Session {
        /// VM name.
        vm: String,
        /// Cause.
        cause: TakeoverError,
    },
    /// The listening socket failed.
    #[error("vm {vm}: cannot accept a connection: {source}")]
    Accept {
        /// VM name.
        vm: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// One VM slot ready to serve.
#[derive(Debug)]
pub struct VmSlot {
    /// VM name (stable identity).
    pub name: String,
    /// Its handle in the registry.
    pub vm: VmId,
    /// Where it listens, for messages (a path or `fd:N`).
    pub socket: String,
    /// The listening socket.
    pub listener: UnixListener,
    /// The time slice the session's answering thread asks for
    /// (`--request-slice-us`).
    pub request_slice: Option<std::time::Duration>,
}

/// Turns away frontends that connect while the slot is busy.
///
/// A newcomer is left in the listen backlog, for the slot loop to accept
/// next, if the current session ends within [`HANDOVER_WAIT`] of its
/// arrival; only a session that is still going after that turns it away.
/// The session's stream belongs to the vhost-user-backend daemon, which
/// does not expose it, so its end is what the slot loop reports (dropping
/// the guard), not a hang-up seen on the stream.
struct BusyGuard {
    stop: Option<Arc<EventFd>>,
    thread: Option<JoinHandle<()>>,
}

impl BusyGuard {
    fn start(listener: UnixListener, name: String, socket: String) -> io::Result<Self> {
        let stop = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(format!("busy-{name}"))
            .spawn(move || guard_slot(&listener, &stopped, &name, &socket))?;
        Ok(BusyGuard {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        // Wakes the guard at once, wherever it waits.
        if let Some(stop) = self.stop.take() {
            let _ = stop.write(1);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The busy guard's loop: returns once the session has ended (`stop`).
fn guard_slot(listener: &UnixListener, stop: &EventFd, name: &str, socket: &str) {
    loop {
        match wait_readable(stop, Some(listener), None) {
            Wake::Stop => return,
            Wake::Timeout => continue,
            Wake::Pending => {}
        }
        // The newcomer may be this slot's own VM, connecting again right
        // after it closed: the session is then about to end.
        if wait_readable(stop, None, Some(HANDOVER_WAIT)) == Wake::Stop {
            return;
        }
        // Accept and close it: QEMU then fails with a socket error at once
        // instead of hanging in the handshake.
        if let Ok((conn, _)) = listener.accept() {
            drop(conn);
            error!(
                "vm={name} event=rejected-frontend a second frontend connected to {socket} \
                 while a VM is using this slot: give each VM its own socket (--socket-count \
                 or --vm NAME=PATH)"
            );
        }
    }
}

/// What ended a [`wait_readable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// The slot loop asked the guard to stop.
    Stop,
    /// A connection waits on the listener.
    Pending,
    /// Neither, within the time given (or a signal interrupted the wait).
    Timeout,
}

/// Waits until `stop` is signalled or, if given, `listener` has a pending
/// connection; `timeout` `None` waits without a bound.
fn wait_readable(
    stop: &EventFd,
    listener: Option<&UnixListener>,
    timeout: Option<Duration>,
) -> Wake {
    let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
    fds.extend(listener.map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)));
    let ms = timeout.map_or(PollTimeout::NONE, |t| {
        PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX)
    });
    let ready = poll(&mut fds, ms).is_ok_and(|n| n > 0);
    let woke = |pollfd: Option<&PollFd>, on: PollFlags| {
        pollfd
            .and_then(PollFd::revents)
            .is_some_and(|revents| revents.intersects(on))
    };
    if !ready {
        Wake::Timeout
    } else if woke(fds.first(), PollFlags::all()) {
        Wake::Stop
    } else if woke(fds.get(1), PollFlags::POLLIN) {
        Wake::Pending
    } else {
        Wake::Timeout
    }
}

/// A hint for session errors that stem from QEMU's configuration.
fn session_hint(e: &DaemonError) -> Option<&'static str> {
    let DaemonError::HandleRequest(VhostUserError::ReqHandlerError(io)) = e else {
        return None;
    };
    match io.get_ref()?.downcast_ref::<VhostUserHandlerError>()? {
        VhostUserHandlerError::MissingMemoryMapping => Some(
            "a ring address lies outside the shared guest memory: start QEMU with \
             -object memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem",
        ),
        _ => None,
    }
}

/// The `reason` of a disconnect before the guest's driver started the
/// device (no guest memory shared yet).
const EARLY_HANG_UP: &str = "the frontend left before the guest started the device";

/// How a session begins.
#[derive(Debug)]
pub enum Begin {
    /// QEMU connected to the slot's socket.
    Accepted(UnixStream),
    /// A session a previous daemon left in systemd's descriptor store.
    Resumed(Box<Stored>),
}

/// Serves one VM session; returns when the frontend is gone. QEMU's
/// connection goes through a [`Proxy`] that keeps the session in the
/// descriptor store; the daemon serves the proxy's internal connection.
fn serve_session(
    slot: &VmSlot,
    begin: Begin,
    registry: &Arc<Mutex<Registry>>,
    (sessions, watch): (&Arc<Sessions>, &QemuWatch),
) -> Result<(), SlotError> {
    let device = Arc::new(
        PasidDevice::new(slot.vm, &slot.name, registry.clone())
            .with_request_slice(slot.request_slice),
    );
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new(format!("vpasid-{}", slot.name), device.clone(), mem)
        .map_err(|cause| SlotError::Daemon {
            vm: slot.name.clone(),
            cause,
        })?;
    let taking_over = Instant::now();
    let resumed = matches!(begin, Begin::Resumed(_));
    // The process that connected: QEMU (for a stored session, the one
    // that connected to the daemon before this one).
    let qemu = match &begin {
        Begin::Accepted(conn) => peer_pid(conn.as_fd()),
        Begin::Resumed(stored) => stored.connection().and_then(peer_pid),
    };
    let proxy = match begin {
        Begin::Accepted(conn) => Proxy::start(&slot.name, conn, sessions.clone()),
        Begin::Resumed(stored) => Proxy::resume(&slot.name, *stored, sessions.clone()),
    };
    let mut proxy = proxy.map_err(|cause| SlotError::Session {
        vm: slot.name.clone(),
        cause,
    })?;
    let backend = match sessions.internal.attach(&mut daemon) {
        Ok(b) => b,
        Err(cause) => {
            proxy.end();
            return Err(SlotError::Session {
                vm: slot.name.clone(),
                cause,
            });
        }
    };
    if resumed {
        let bases = match proxy.replay(&backend) {
            Ok(bases) => bases,
            Err(e) => {
                let abort = if proxy.image().started() {
                    ""
                } else {
                    " (its device is not started: QEMU 11.1 aborts when the connection closes)"
                };
                error!(
                    "vm={} event=takeover-failed error={}: session closed{abort}",
                    slot.name,
                    crate::logfmt::Value(e)
                );
                proxy.end();
                drop(backend);
                let _ = daemon.wait();
                return Ok(());
            }
        };
        crate::fdstore::count_takeover();
        lock(registry).set_resumed(slot.vm, Some(SystemTime::now()));
        info!(
            "vm={} event=resume started={} stored={} used={bases:?} us={}",
            slot.name,
            proxy.image().started(),
            proxy.stored(),
            taking_over.elapsed().as_micros()
        );
    } else {
        lock(registry).set_resumed(slot.vm, None);
    }
    lock(registry).set_connected(slot.vm, true);
    // After the connect: a process found gone already is then released
    // at the end of this connection, not before it.
    watch.bind(registry, slot.vm, &slot.name, qemu);
    info!(
        "vm={} event=connect socket={} qemu_pid={}",
        slot.name,
        crate::logfmt::Value(&slot.socket),
        qemu.unwrap_or(0)
    );

    let guard = slot
        .listener
        .try_clone()
        .and_then(|dup| BusyGuard::start(dup, slot.name.clone(), slot.socket.clone()));
    if let Err(e) = &guard {
        // Serving goes on; newcomers then wait in the listen backlog.
        error!(
            "vm={} event=busy-guard-failed error={}",
            slot.name,
            crate::logfmt::Value(e)
        );
    }
    let end = proxy.run(&backend);
    if let End::Stopped = end {
        // The daemon exits; the session stays in the store for the next
        // one. Nothing here may touch QEMU's connection again.
        loop {
            thread::park();
        }
    }
    // Out of the store, then closed: QEMU's connection (the session is
    // over), then the internal one, which ends the daemon's thread.
    proxy.end();
    drop(backend);
    let result = daemon.wait();
    // The session is over: a newcomer already waiting is left for the next
    // accept, after the reclaim below.
    drop(guard);
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    drop(daemon);

    // QEMU exiting closes the socket: the normal end of a session.
    let hung_up = matches!(
        &result,
        Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        ))
    );
    // QEMU shares guest memory when the guest's driver starts the device.
    // A frontend that hung up before that (QEMU exiting after a failed
    // start, a destroy before the driver loaded) is no misconfiguration;
    // one that failed a request without memory (QEMU without share=on sends
    // ring addresses we cannot map) is.
    let never_started = !device.has_memory() && !device.memory_misconfig_reported();
    if result.is_err() && !hung_up && !device.has_memory() {
        device.memory_not_shared();
    }
    let mut reg = lock(registry);
    reg.set_connected(slot.vm, false);
    reg.set_resumed(slot.vm, None);
    match &result {
        Ok(()) => info!("vm={} event=disconnect", slot.name),
        Err(_) if hung_up && never_started => info!(
            "vm={} event=disconnect reason=\"{EARLY_HANG_UP}\"",
            slot.name
        ),
        Err(_) if hung_up => info!("vm={} event=disconnect", slot.name),
        Err(e) => match session_hint(e) {
            Some(hint) => error!(
                "vm={} event=disconnect error={}: {hint}",
                slot.name,
                crate::logfmt::Value(e)
            ),
            None => info!(
                "vm={} event=disconnect reason={}",
                slot.name,
                crate::logfmt::Value(e)
            ),
        },
    }
    reg.end_connection(slot.vm, std::time::Instant::now());
    let commit = reg.commit_point();
    drop(reg);
    if let Some(point) = commit {
        point.settle();
    }
    Ok(())
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves a slot forever: the session a previous daemon left, if any,
/// then one session after another.
pub fn serve_slot(
    slot: VmSlot,
    registry: Arc<Mutex<Registry>>,
    (sessions, watch): (Arc<Sessions>, Arc<QemuWatch>),
    stored: Option<Stored>,
) -> Result<(), SlotError> {
    if let Some(stored) = stored {
        serve_session(
            &slot,
            Begin::Resumed(Box::new(stored)),
            &registry,
            (&sessions, &watch),
        )?;
    }
    loop {
        let conn = match slot.listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(SlotError::Accept {
                    vm: slot.name.clone(),
                    source,
                })
            }
        };
        serve_session(&slot, Begin::Accepted(conn), &registry, (&sessions, &watch))?;
    }
}
