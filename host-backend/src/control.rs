// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The control socket: `pasidctl`'s window onto the registry.
//!
//! The socket is created with mode 0600 (0660 with `--control-group`). Each
//! connection is served on its own short-lived thread with a read timeout,
//! so a stuck client holds up no one, and at most [`MAX_CLIENTS`] are served
//! at once. Each client's credentials (`SO_PEERCRED`) decide what it may do:
//! root and the daemon's own user anything, anyone else who could connect
//! (the control group) only the read-only commands; see [`Access`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::geteuid;

use crate::control_protocol::{
    ConflictEntry, ControlReply, ControlRequest, DetachResult, DeviceSpec, ExportResult, GetResult,
    PasidEntry, PutResult, QuotaResult, ReleaseResult, ReplyResult, ReserveResult, StatsResult,
    VmEntry, MAX_REQUEST_LINE,
};
use crate::rate_limit::LogThrottle;
use crate::registry::{Registry, RegistryError, DEFAULT_HOLD};

/// How long a client may take to send a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most control clients served at once; more are turned away, so a local
/// client opening connections in a loop cannot exhaust threads.
pub const MAX_CLIENTS: usize = 32;

/// What a control client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every command (root, or the daemon's own user).
    Full,
    /// Only commands that change nothing (`--control-group` members).
    ReadOnly,
}

impl Access {
    /// The access of a peer with user id `peer_uid`, the daemon running as
    /// `daemon_uid`.
    pub fn of_peer(peer_uid: u32, daemon_uid: u32) -> Access {
        if peer_uid == 0 || peer_uid == daemon_uid {
            Access::Full
        } else {
            Access::ReadOnly
        }
    }

    /// Whether this access allows `request`.
    pub fn permits(self, request: &ControlRequest) -> bool {
        self == Access::Full || !changes_state(request)
    }
}

/// Whether a command changes the registry. Deliberately exhaustive: a new
/// command must be classified here before it builds.
pub fn changes_state(request: &ControlRequest) -> bool {
    match request {
        ControlRequest::Pasids { .. }
        | ControlRequest::Vms {}
        | ControlRequest::Stats {}
        | ControlRequest::Metrics {}
        | ControlRequest::Export { .. } => false,
        ControlRequest::Get { .. }
        | ControlRequest::Put { .. }
        | ControlRequest::Release { .. }
        | ControlRequest::Quota { .. }
        | ControlRequest::Detach { .. }
        | ControlRequest::Reserve { .. } => true,
    }
}

/// Logs a refused command, at most [`crate::rate_limit::WARN_BURST`] lines
/// per [`crate::rate_limit::WARN_WINDOW`] for all clients together, so that
/// a read-only client looping on a forbidden command cannot flood the log.
fn log_denial(request: &ControlRequest) {
    static THROTTLE: Mutex<LogThrottle> = Mutex::new(LogThrottle::new());
    let mut throttle = THROTTLE.lock().unwrap_or_else(|p| p.into_inner());
    let summarise = |n| warn!("control event=denied suppressed={n} (rate limit)");
    if throttle.admit(Instant::now(), summarise) {
        warn!("control event=denied {request} (read-only client)");
    }
}

/// The user id of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    Ok(getsockopt(stream, PeerCredentials)?.uid())
}

/// Carries out one control command.
pub fn execute(registry: &Mutex<Registry>, request: ControlRequest) -> ControlReply {
    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    let reply = execute_locked(&mut reg, request);
    // A change is on disk before the operator hears it is done.
    let commit = reg.commit_point();
    drop(reg);
    if let Some(point) = commit {
        point.settle();
    }
    reply
}

/// A device description as the registry keeps it: JSON text.
fn device_text(device: Option<&DeviceSpec>) -> Option<String> {
    device.and_then(|d| serde_json::to_string(d).ok())
}

fn execute_locked(reg: &mut Registry, request: ControlRequest) -> ControlReply {
    let result = match request {
        ControlRequest::Pasids { vm } => {
            let reserved = reg.reserved_vms();
            reg.pasids_of(vm.as_deref()).map(|list| {
                ReplyResult::Pasids(
                    list.into_iter()
                        .map(|p| PasidEntry::from(p).mark_reserved(&reserved))
                        .collect(),
                )
            })
        }
        ControlRequest::Vms {} => Ok(ReplyResult::Vms(
            reg.vms().into_iter().map(VmEntry::from).collect(),
        )),
        ControlRequest::Stats {} => Ok(ReplyResult::Stats(StatsResult::from(reg.stats()))),
        ControlRequest::Metrics {} => Ok(ReplyResult::Metrics(crate::scrape::render(reg))),
        ControlRequest::Get { holder, pasid } => reg
            .host_get(&holder, pasid)
            .map(|refs| ReplyResult::Get(GetResult { pasid, refs })),
        ControlRequest::Put { holder, pasid } => reg
            .host_put(&holder, pasid)
            .map(|freed| ReplyResult::Put(PutResult { freed, pasid })),
        ControlRequest::Release { vm, force } => reg
            .operator_release(&vm, force)
            .map(|released| ReplyResult::Release(ReleaseResult { released, vm })),
        ControlRequest::Quota { vm, quota } => reg
            .set_quota(&vm, quota)
            .map(|()| ReplyResult::Quota(QuotaResult { quota, vm })),
        ControlRequest::Detach {
            vm,
            hold_secs,
            keep,
            device,
        } => {
            let hold = hold_secs.map_or(DEFAULT_HOLD, Duration::from_secs);
            reg.prepare_detach(&vm, hold, keep, device_text(device.as_ref()))
                .map(|d| {
                    ReplyResult::Detach(DetachResult {
                        held: d.held,
                        hold_secs: d.hold.as_secs(),
                        vm,
                    })
                })
        }
        ControlRequest::Export { vm } => reg
            .export(&vm)
            .map(|e| ReplyResult::Export(ExportResult::new(e))),
        ControlRequest::Reserve {
            vm,
            pasids,
            hold_secs,
            device,
        } => reg
            .reserve(
                &vm,
                &pasids,
                hold_secs.map(Duration::from_secs),
                device_text(device.as_ref()),
            )
            .map(|r| ReplyResult::Reserve(ReserveResult::new(vm, &r))),
    };
    match result {
        Ok(result) => ControlReply::success(result),
        Err(RegistryError::ReserveRefused { vm, conflicts }) => {
            let entries = conflicts.iter().map(ConflictEntry::from).collect();
            ControlReply::refused(RegistryError::ReserveRefused { vm, conflicts }, entries)
        }
        Err(e) => ControlReply::failure(e),
    }
}

/// Parses one request line and answers it with full access.
pub fn answer_line(registry: &Mutex<Registry>, line: &str) -> ControlReply {
    answer_line_as(registry, line, Access::Full)
}

/// Parses one request line and answers it if `access` allows it.
pub fn answer_line_as(registry: &Mutex<Registry>, line: &str, access: Access) -> ControlReply {
    match serde_json::from_str::<ControlRequest>(line) {
        Ok(request) if !access.permits(&request) => {
            log_denial(&request);
            ControlReply::failure(
                "permission denied: this command changes state and needs root or the daemon's user",
            )
        }
        Ok(request) => {
            debug!("control {request}");
            execute(registry, request)
        }
        Err(e) => ControlReply::failure(format!("bad request: {e}")),
    }
}

fn serve_client(stream: UnixStream, registry: &Mutex<Registry>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let access = Access::of_peer(peer_uid(&stream)?, geteuid().as_raw());
    let mut writer = stream.try_clone()?;
    // The limit keeps a client from growing a line without end.
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_LINE as u64 * 4));
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_REQUEST_LINE {
            ControlReply::failure(format!("request longer than {MAX_REQUEST_LINE} bytes"))
        } else {
            answer_line_as(registry, line.trim(), access)
        };
        let mut text = serde_json::to_string(&reply)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error"}"#.to_string());
        text.push('\n');
        writer.write_all(text.as_bytes())?;
    }
}

/// One counted control client; uncounted when dropped, however its thread
/// ends (or fails to start).
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts control clients forever.
pub fn serve_control(listener: UnixListener, registry: Arc<Mutex<Registry>>) {
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                continue;
            }
        };
        let slot = ClientSlot(clients.clone());
        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            debug!("control client turned away: {MAX_CLIENTS} already connected");
            let _ = stream.write_all(b"{\"ok\":false,\"error\":\"too many control clients\"}\n");
            continue;
        }
        let registry = registry.clone();
        let spawned = thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve_client(stream, &registry) {
                    debug!("control client ended: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start control client thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};

    fn registry() -> Mutex<Registry> {
        let space = PasidSpace::new(SpaceConfig {
            pasid_bits: 8,
            reserved: vec![],
        })
        .unwrap();
        let mut reg = Registry::new(space, 1);
        reg.add_vm(
            "vm0",
            "test",
            OwnerLimits {
                quota: 4,
                range: 1..=255,
            },
        )
        .unwrap();
        Mutex::new(reg)
    }

    #[test]
    fn root_and_own_user_get_full_access() {
        assert_eq!(Access::of_peer(0, 1000), Access::Full);
        assert_eq!(Access::of_peer(1000, 1000), Access::Full);
        assert_eq!(Access::of_peer(1001, 1000), Access::ReadOnly);
        assert_eq!(Access::of_peer(0, 0), Access::Full);
    }

    /// A read-only client may list, but every command that changes state
    /// is refused and changes nothing.
    #[test]
    fn read_only_clients_cannot_change_state() {
        let reg = registry();
        for line in [
            r#"{"cmd":"pasids"}"#,
            r#"{"cmd":"vms"}"#,
            r#"{"cmd":"stats"}"#,
            r#"{"cmd":"metrics"}"#,
        ] {
            assert!(answer_line_as(&reg, line, Access::ReadOnly).ok, "{line}");
        }
        let vm = reg.lock().unwrap().vm("vm0").unwrap();
        let pasid = match reg.lock().unwrap().handle(
            vm,
            pasid_protocol::Request::Alloc {
                tag: 1,
                min: 1,
                max: 255,
            },
        ) {
            r if r.status == 0 => r.pasid,
            r => panic!("{r:?}"),
        };
        for line in [
            format!(r#"{{"cmd":"get","holder":"h","pasid":{pasid}}}"#),
            format!(r#"{{"cmd":"put","holder":"h","pasid":{pasid}}}"#),
            r#"{"cmd":"release","vm":"vm0"}"#.to_string(),
            r#"{"cmd":"quota","vm":"vm0","quota":0}"#.to_string(),
        ] {
            let reply = answer_line_as(&reg, &line, Access::ReadOnly);
            assert!(!reply.ok, "{line}");
            assert!(
                reply
                    .error
                    .unwrap_or_default()
                    .starts_with("permission denied"),
                "{line}"
            );
        }
        let reg = reg.lock().unwrap();
        assert_eq!(reg.pasids().len(), 1, "nothing released");
        assert_eq!(reg.vms().first().map(|v| (v.held, v.quota)), Some((1, 4)));
    }

    /// A quota above what the VM's range could hold is refused with the
    /// maximum named; the maximum itself is accepted.
    #[test]
    fn quota_above_the_range_is_refused() {
        let reg = registry();
        let reply = answer_line(&reg, r#"{"cmd":"quota","vm":"vm0","quota":4294967295}"#);
        assert!(!reply.ok);
        let error = reply.error.unwrap();
        assert!(error.contains("the most is 255"), "{error}");
        let reply = answer_line(&reg, r#"{"cmd":"quota","vm":"vm0","quota":256}"#);
        assert!(!reply.ok);
        assert!(answer_line(&reg, r#"{"cmd":"quota","vm":"vm0","quota":255}"#).ok);
        assert_eq!(reg.lock().unwrap().vms()[0].quota, 255);
    }

    /// Release of a connected VM needs `force`; of an idle one it does not.
    #[test]
    fn releasing_a_connected_vm_needs_force() {
        let reg = registry();
        let vm = reg.lock().unwrap().vm("vm0").unwrap();
        reg.lock().unwrap().set_connected(vm, true);
        let reply = answer_line(&reg, r#"{"cmd":"release","vm":"vm0"}"#);
        assert!(!reply.ok);
        assert!(reply.error.unwrap().contains("--force"));
        let reply = answer_line(&reg, r#"{"cmd":"release","vm":"vm0","force":true}"#);
        assert!(reply.ok, "{reply:?}");
        reg.lock().unwrap().set_connected(vm, false);
        assert!(answer_line(&reg, r#"{"cmd":"release","vm":"vm0"}"#).ok);
    }

    #[test]
    fn peer_credentials_are_read() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), geteuid().as_raw());
    }
}
