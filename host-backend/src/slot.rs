// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A VM slot: one listening socket with a stable VM identity, served in a
//! loop so that a VM which restarts can connect again.
//!
//! Each connection gets a fresh `VhostUserDaemon` (one daemon serves exactly
//! one connection). When the connection ends, for any reason, the VM's
//! references are reclaimed. While a VM is connected, a second frontend that
//! connects to the same socket is turned away with a clear log line instead
//! of waiting silently in the listen backlog.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use log::{error, info};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon, VhostUserHandlerError};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::registry::{ReclaimReason, Registry, VmId};
use crate::vhu_vpasid::PasidDevice;

/// How often the busy-slot guard looks for a second frontend, in ms.
const BUSY_POLL_MS: i32 = 100;

/// Errors that stop a slot from serving.
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
    /// The listening socket failed.
    #[error("vm {vm}: cannot accept a connection on {socket}: {cause}")]
    Accept {
        /// VM name.
        vm: String,
        /// Socket description.
        socket: String,
        /// Cause.
        cause: DaemonError,
    },
    /// The busy guard could not duplicate the listener.
    #[error("vm {vm}: cannot duplicate listener: {source}")]
    Dup {
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
}

/// Turns away frontends that connect while the slot is busy.
struct BusyGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BusyGuard {
    fn start(listener: UnixListener, name: String, socket: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("busy-{name}"))
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if !pending_connection(&listener) {
                        continue;
                    }
                    // Accept and close it: QEMU then fails with a socket error
                    // at once instead of hanging in the handshake.
                    if let Ok((conn, _)) = listener.accept() {
                        drop(conn);
                        error!(
                            "vm={name} event=rejected-frontend a second frontend connected to \
                             {socket} while a VM is using this slot: give each VM its own \
                             socket (--socket-count or --vm NAME=PATH)"
                        );
                    }
                }
            })
            .ok();
        BusyGuard { stop, thread }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits up to `BUSY_POLL_MS` for a pending connection on `listener`.
fn pending_connection(listener: &UnixListener) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and the
    // count passed is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, BUSY_POLL_MS) };
    rc > 0 && (pfd.revents & libc::POLLIN) != 0
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

/// Serves one VM session on `listener`; returns when the frontend is gone.
fn serve_session(
    slot: &VmSlot,
    listener: &mut Listener,
    registry: &Arc<Mutex<Registry>>,
) -> Result<(), SlotError> {
    let device = Arc::new(PasidDevice::new(slot.vm, &slot.name, registry.clone()));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new(format!("vpasid-{}", slot.name), device.clone(), mem)
        .map_err(|cause| SlotError::Daemon {
            vm: slot.name.clone(),
            cause,
        })?;
    daemon.start(listener).map_err(|cause| SlotError::Accept {
        vm: slot.name.clone(),
        socket: slot.socket.clone(),
        cause,
    })?;
    lock(registry).set_connected(slot.vm, true);
    info!(
        "vm={} event=connect socket={}",
        slot.name,
        crate::logfmt::Value(&slot.socket)
    );

    let guard = slot
        .listener
        .try_clone()
        .map(|dup| BusyGuard::start(dup, slot.name.clone(), slot.socket.clone()))
        .map_err(|source| SlotError::Dup {
            vm: slot.name.clone(),
            source,
        });
    let result = daemon.wait();
    drop(guard);
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    drop(daemon);

    if result.is_err() && !device.has_memory() {
        // QEMU without share=on sends ring addresses we cannot map.
        device.memory_not_shared();
    }
    let mut reg = lock(registry);
    reg.set_connected(slot.vm, false);
    match &result {
        Ok(()) => info!("vm={} event=disconnect", slot.name),
        // QEMU exiting closes the socket: the normal end of a session.
        Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => info!("vm={} event=disconnect", slot.name),
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
    reg.reclaim_vm(slot.vm, ReclaimReason::Disconnect);
    let commit = reg.commit_point();
    drop(reg);
    if let Some(point) = commit {
        point.settle(registry);
    }
    Ok(())
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves a slot forever: one session after another.
pub fn serve_slot(slot: VmSlot, registry: Arc<Mutex<Registry>>) -> Result<(), SlotError> {
    let dup = slot.listener.try_clone().map_err(|source| SlotError::Dup {
        vm: slot.name.clone(),
        source,
    })?;
    // Built from a UnixListener, the vhost Listener never unlinks the path.
    let mut listener = Listener::from(dup);
    loop {
        serve_session(&slot, &mut listener, &registry)?;
    }
}
