// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host's single authority: the PASID space plus what it knows of each
//! VM slot and host holder.
//!
//! One `Registry` lives behind one mutex shared by every VM session and the
//! control socket. A request batch takes the lock once per queue drain.
//!
//! This file holds the types, construction, lookups, the change log and
//! `reclaim_vm`; the methods are split by who calls them: `guest` (a VM
//! session: connection, hold-over, requests), `operator` (the control
//! socket's commands), `views` (listings and figures, with the values
//! they show in `view`). `tally` counts, `image` is the state
//! image, [`record`] what is journaled, [`reconcile`] RECONCILE's rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use pasid_protocol::{Opcode, PasidList};

mod guest;
mod image;
mod operator;
mod qemu;
pub mod reconcile;
pub mod record;
mod tally;
mod view;
mod views;

pub use tally::{VmFamilies, VmLabels, VmReasonLabels, VmStatusLabels, VmTally};
pub use view::{
    Detaching, Exported, HostStats, Probe, ProbeKind, ReclaimReason, ReserveConflict, Reserved,
    VmCounters, VmView,
};

use crate::figures::Histogram;
use crate::pasid_space::{
    OwnerId, OwnerKind, OwnerLimits, Pasid, PasidSpace, RefError, SpaceError,
};
use crate::rate_limit::{RateLimit, TokenBucket};
use reconcile::Reconciliation;
use record::{Answered, ChangeLog, QemuPeer, Record};

/// Socket label of a VM that durable state knows but the command line
/// does not name.
pub const UNCONFIGURED: &str = "(not configured)";

/// Errors of registry operations requested by the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// No VM slot of that name.
    #[error("no VM named {0:?}")]
    UnknownVm(String),
    /// The name belongs to a VM, not a host holder.
    #[error("{0:?} is a VM slot, not a host holder")]
    NotAHolder(String),
    /// The name belongs to a host holder, not a VM.
    #[error("{0:?} is a host holder in the durable state, not a VM slot")]
    NotAVm(String),
    /// A new host holder's name is not one a VM could have.
    #[error(
        "invalid holder name {0:?}: like a VM name, 1-64 characters of letters, digits, \
         '-', '_' or '.'"
    )]
    InvalidHolder(String),
    /// `release` of a VM whose frontend is connected, without `force`.
    #[error(
        "VM {0:?} is connected: releasing would strip every PASID from the running guest, \
         whose devices may still have them programmed; shut the VM down first, or use \
         --force to release them anyway"
    )]
    Connected(String),
    /// A quota above what the VM's range could ever hold.
    #[error(
        "quota {quota} for VM {vm:?} is more than its range {start}-{end} could ever hold; \
         the most is {max} (the range's PASIDs minus reserved ones)"
    )]
    QuotaAboveCapacity {
        /// The VM.
        vm: String,
        /// The quota asked for.
        quota: u32,
        /// PASIDs its range holds, reserved ones excluded.
        max: u64,
        /// First PASID of its range.
        start: Pasid,
        /// Last PASID of its range.
        end: Pasid,
    },
    /// `reserve` for a VM name this daemon has no slot for.
    #[error(
        "this daemon has no VM slot named {0:?}: the VM's slot must exist before a \
         reservation (--vm {0}=SOCKET in the daemon's configuration)"
    )]
    NoSlot(String),
    /// `reserve` for a VM whose frontend is connected: its PASIDs are its
    /// running guest's.
    #[error(
        "VM {0:?} is connected on this daemon: a reservation is for a VM that has not \
         arrived yet"
    )]
    ReserveConnected(String),
    /// `reserve` for a VM that holds PASIDs the reservation does not name.
    #[error(
        "VM {vm:?} already holds {} PASID(s) the reservation does not name ({}); release \
         them first (pasidctl release --vm {vm})",
        .pasids.len(),
        list_pasids(.pasids)
    )]
    HoldsOthers {
        /// The VM.
        vm: String,
        /// What it holds beyond the reservation.
        pasids: Vec<Pasid>,
    },
    /// `reserve` refused: nothing was reserved.
    #[error(
        "reservation for VM {vm:?} refused, nothing reserved: {}",
        list_conflicts(.conflicts)
    )]
    ReserveRefused {
        /// The VM.
        vm: String,
        /// Every reason, one per conflicting PASID.
        conflicts: Vec<ReserveConflict>,
    },
    /// A hold or reservation longer than the daemon keeps one.
    #[error("{secs} s is longer than the longest hold, {max} s", max = MAX_HOLD.as_secs())]
    HoldTooLong {
        /// What was asked for.
        secs: u64,
    },
    /// A PASID-space operation failed.
    #[error("{0}")]
    Ref(#[from] RefError),
    /// Owner management failed.
    #[error("{0}")]
    Space(#[from] SpaceError),
}

/// Longest hold-over `detach` or reservation `reserve` may ask for.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// A reservation's length when `reserve` names none and the VM has no
/// hold-over of its own; also `detach`'s default hold.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);

/// `1, 2, 5`: at most the first eight, then how many more.
fn list_pasids(pasids: &[Pasid]) -> String {
    let mut text: Vec<String> = pasids.iter().take(8).map(ToString::to_string).collect();
    if pasids.len() > 8 {
        text.push(format!("and {} more", pasids.len() - 8));
    }
    text.join(", ")
}

/// The first few conflicts, then how many more (a whole VM's worth would
/// make one very long line; the control reply lists each).
fn list_conflicts(conflicts: &[ReserveConflict]) -> String {
    let mut text: Vec<String> = conflicts.iter().take(3).map(ToString::to_string).collect();
    if conflicts.len() > 3 {
        text.push(format!("and {} more", conflicts.len() - 3));
    }
    text.join("; ")
}

/// A reservation in force (`pasidctl reserve`): a hold-over with no
/// connection behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReservedUntil {
    /// When its PASIDs are reclaimed unless the VM connects first.
    until: Instant,
    /// The same deadline on the wall clock: what durable state keeps.
    deadline: std::time::SystemTime,
}

impl ReservedUntil {
    /// A reservation running for `hold` from `now`.
    fn starting(now: Instant, hold: Duration) -> Option<Self> {
        Some(ReservedUntil {
            until: now.checked_add(hold)?,
            deadline: std::time::SystemTime::now().checked_add(hold)?,
        })
    }

    /// A reservation durable state kept, running out at `deadline_ms`
    /// (milliseconds since the Unix epoch); one already past runs out at
    /// once.
    fn from_deadline(deadline_ms: u64) -> Self {
        let deadline = std::time::UNIX_EPOCH
            .checked_add(Duration::from_millis(deadline_ms))
            .unwrap_or(std::time::UNIX_EPOCH);
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_HOLD);
        ReservedUntil {
            until: Instant::now() + left,
            deadline,
        }
    }

    /// The deadline in milliseconds since the Unix epoch (at least 1: 0
    /// records a reservation's end).
    fn deadline_ms(self) -> u64 {
        let ms = self
            .deadline
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }
}

/// What the registry knows of one VM slot.
#[derive(Debug)]
struct VmRecord {
    owner: OwnerId,
    socket: String,
    connected: bool,
    /// Everything counted about it.
    tally: VmTally,
    /// Request budget (`--rate-limit`); `None` means unlimited.
    bucket: Option<TokenBucket>,
    /// The limits the command line gave (durable state keeps them to tell
    /// an edited command line from a `pasidctl quota`).
    configured: Option<OwnerLimits>,
    /// Answers of the queue drain in progress (durable state only).
    batch: Vec<Answered>,
    /// The last batch made durable: what a crash could leave unused.
    window: Vec<Answered>,
    /// After a restart, the window as loaded: requests the frontend
    /// re-delivers from it get their first answer again.
    replay: Vec<Answered>,
    /// Lease cap: most PASIDs the driver may keep cached (`lease_max`);
    /// 0 means the device does not offer VIRTIO_PASID_F_LEASE.
    lease: u32,
    /// PASIDs the driver says it holds but has not handed out: the
    /// `cached` of its last GRANT or RETURN, moved by that request's
    /// effect. Untrusted, shown only (and read by GRANT's cap check).
    cached: u32,
    /// The reconcile its driver has begun and not yet ended.
    reconciling: Option<Reconciliation>,
    /// How long its PASIDs stay reserved after it disconnects
    /// (`--holdover`, `holdover=`); zero reclaims at disconnect.
    holdover: Duration,
    /// Disconnected and held over: when its PASIDs are reclaimed unless a
    /// device connects first.
    held_over_until: Option<Instant>,
    /// When its current session was taken over from a daemon before this
    /// one (systemd's descriptor store), if it was.
    resumed_at: Option<std::time::SystemTime>,
    /// The QEMU process its PASIDs are bound to: the peer of its current
    /// or last connection, until [`Registry::unbind_qemu`] or that
    /// process's exit. Its exit ends a hold-over at once. Durable.
    qemu: Option<QemuPeer>,
    /// The bound process exited while the VM was connected: the end of
    /// the connection releases at once instead of holding over. Not
    /// durable: a restart checks the process again.
    qemu_exited: bool,
    /// The process of a connection that came while the VM held PASIDs
    /// bound elsewhere (or to none): bound only once its driver sends a
    /// request, so that a QEMU that connects and leaves without starting
    /// the device (a refused `virsh restore`, a probe of the socket)
    /// cannot take the PASIDs with it when it exits. Not durable.
    qemu_pending: Option<QemuPeer>,
    /// Reserved for an arriving VM and not connected yet.
    reservation: Option<ReservedUntil>,
    /// `pasidctl detach` announced the coming disconnect: hold over for at
    /// least this long, whatever `holdover` says.
    detach_hold: Option<Duration>,
    /// The device `pasidctl detach` removed, or `reserve` brought, as
    /// JSON text (the registry does not read it): what `attach` plugs.
    device: Option<String>,
    /// How its driver last took up a device.
    last_probe: Option<Probe>,
}

impl VmRecord {
    fn new(owner: OwnerId, socket: &str, bucket: Option<TokenBucket>, tally: VmTally) -> Self {
        VmRecord {
            owner,
            socket: socket.to_string(),
            connected: false,
            tally,
            bucket,
            configured: None,
            batch: Vec::new(),
            window: Vec::new(),
            replay: Vec::new(),
            lease: 0,
            cached: 0,
            reconciling: None,
            holdover: Duration::ZERO,
            held_over_until: None,
            resumed_at: None,
            qemu: None,
            qemu_exited: false,
            qemu_pending: None,
            reservation: None,
            detach_hold: None,
            device: None,
            last_probe: None,
        }
    }

    /// The device is gone (disconnect, operator release): nothing of it can
    /// be re-delivered any more.
    fn forget_device(&mut self) {
        self.window = Vec::new();
        self.replay = Vec::new();
    }

    /// The first answer of a re-delivered request, if `position` and the
    /// readable bytes (`request`, and a RETURN's `list`) match one in the
    /// loaded window. A position past the window means the re-delivery is
    /// over: the window is dropped.
    fn replayed(&mut self, position: u16, request: &[u8], list: &PasidList) -> Option<Answered> {
        let (first, last) = (self.replay.first()?.position, self.replay.last()?.position);
        if position.wrapping_sub(first) > last.wrapping_sub(first) {
            self.replay = Vec::new();
            return None;
        }
        self.replay
            .iter()
            .find(|a| {
                a.position == position
                    && a.request == request
                    // A RETURN's or RECONCILE's list is part of its
                    // readable bytes; a GRANT's is part of its answer.
                    && (!lists_pasids(request) || a.list == *list)
            })
            .copied()
    }
}

/// Whether the request bytes are a RETURN's or RECONCILE's, whose readable
/// part carries a PASID list.
fn lists_pasids(request: &[u8]) -> bool {
    request
        .first()
        .is_some_and(|&op| op == Opcode::Return as u8 || op == Opcode::Reconcile as u8)
}

/// The PASID space and everything attached to it.
#[derive(Debug)]
pub struct Registry {
    space: PasidSpace,
    space_id: u64,
    vms: BTreeMap<String, VmRecord>,
    /// Time to handle one descriptor chain, all VMs.
    latency: Histogram,
    /// The metric families of every VM's counters.
    families: VmFamilies,
    /// Request rate limit of each VM; `None` means unlimited.
    rate_limit: Option<RateLimit>,
    /// Where changes are made durable (`--state-dir`).
    journal: Option<Arc<dyn ChangeLog>>,
}

/// Handle for a VM slot, cheap to copy into sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmId(OwnerId);

impl Registry {
    /// Wraps a PASID space; `space_id` identifies it to guests.
    pub fn new(space: PasidSpace, space_id: u64) -> Self {
        Registry {
            space,
            space_id,
            vms: BTreeMap::new(),
            latency: Histogram::default(),
            families: VmFamilies::default(),
            rate_limit: None,
            journal: None,
        }
    }

    /// Limits the requests each VM may have carried out (existing and
    /// future slots); `None` lifts the limit. Each slot gets a full bucket.
    pub fn set_rate_limit(&mut self, limit: Option<RateLimit>) {
        self.rate_limit = limit;
        for rec in self.vms.values_mut() {
            rec.bucket = limit.map(TokenBucket::new);
        }
    }

    /// Read access to the space, for listings and tests.
    pub fn space(&self) -> &PasidSpace {
        &self.space
    }

    /// Adds a VM slot.
    pub fn add_vm(
        &mut self,
        name: &str,
        socket: &str,
        limits: OwnerLimits,
    ) -> Result<VmId, RegistryError> {
        let owner = self.space.add_owner(name, OwnerKind::Vm, limits)?;
        let tally = VmTally::new(&self.families, name);
        self.vms.insert(
            name.to_string(),
            VmRecord::new(owner, socket, self.rate_limit.map(TokenBucket::new), tally),
        );
        Ok(VmId(owner))
    }

    fn record_mut(&mut self, vm: VmId) -> Option<&mut VmRecord> {
        let name = self.space.owner_name(vm.0)?;
        self.vms.get_mut(name)
    }

    /// Name of a VM slot.
    pub fn vm_name(&self, vm: VmId) -> &str {
        self.space.owner_name(vm.0).unwrap_or("?")
    }

    /// Records `record` in the change log, if there is one.
    fn log(&self, record: &Record) {
        if let Some(journal) = &self.journal {
            journal.record(record);
        }
    }

    /// Drops every reference a VM holds and logs how many PASIDs that was.
    /// Returns the number of references released.
    pub fn reclaim_vm(&mut self, vm: VmId, reason: ReclaimReason) -> u64 {
        let summary = self.space.reclaim(vm.0);
        let name = self.vm_name(vm).to_string();
        if let Some(rec) = self.record_mut(vm) {
            rec.tally.count_reclaim(reason, summary.references);
            rec.cached = 0;
            // RESET and the end of the connection end a reconcile.
            rec.reconciling = None;
            // Nothing is left to hold over or keep reserved.
            rec.held_over_until = None;
            rec.reservation = None;
            if reason != ReclaimReason::DriverReset {
                rec.forget_device();
            }
        }
        // A driver's RESET is journaled as the answer it is, in its batch.
        if reason != ReclaimReason::DriverReset {
            self.log(&Record::Reclaim {
                owner: vm.0.as_u32(),
            });
        }
        if summary.references > 0 || reason != ReclaimReason::DriverReset {
            info!(
                "vm={name} event=reclaim reason=\"{}\" references={} pasids_freed={}",
                reason.as_str(),
                summary.references,
                summary.pasids_freed
            );
        }
        summary.references
    }

    /// Looks a VM slot up by name.
    pub fn vm(&self, name: &str) -> Result<VmId, RegistryError> {
        self.vms
            .get(name)
            .map(|r| VmId(r.owner))
            .ok_or_else(|| RegistryError::UnknownVm(name.to_string()))
    }
}

/// Whether `name` may name a VM slot or a host holder: 1-64 characters
/// that need no quoting in a log line or a path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// For unit tests: a registry over an 8-bit space with one VM, "a"
/// (quota 10, range 1-255), and the hold-over given.
#[cfg(test)]
pub(crate) fn test_registry(holdover: Duration) -> (Registry, VmId) {
    let space = PasidSpace::new(crate::pasid_space::SpaceConfig {
        pasid_bits: 8,
        reserved: vec![],
    })
    .unwrap();
    let mut reg = Registry::new(space, 1);
    let limits = OwnerLimits {
        quota: 10,
        range: 1..=255,
    };
    let vm = reg.add_vm("a", "a.sock", limits).unwrap();
    reg.set_holdover(vm, holdover);
    (reg, vm)
}

/// For unit tests: `n` ALLOCs over 1-255 by VM `vm`, tags 0 to `n - 1`.
#[cfg(test)]
pub(crate) fn test_allocs(reg: &mut Registry, vm: VmId, n: u64) {
    for tag in 0..n {
        reg.handle(
            vm,
            pasid_protocol::Request::Alloc {
                tag,
                min: 1,
                max: 255,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pasid_protocol::Request;

    fn registry(holdover: Duration) -> (Registry, VmId) {
        test_registry(holdover)
    }

    fn alloc(reg: &mut Registry, vm: VmId) -> Pasid {
        let tag = 1;
        reg.handle(
            vm,
            Request::Alloc {
                tag,
                min: 1,
                max: 255,
            },
        )
        .pasid
    }

    /// The hold-over keeps the PASIDs until its last instant and not
    /// after; `vms` shows the time left.
    #[test]
    fn holdover_lasts_exactly_its_period() {
        let (mut reg, vm) = registry(Duration::from_secs(30));
        let p = alloc(&mut reg, vm);
        let t0 = Instant::now();
        reg.set_connected(vm, true);
        reg.set_connected(vm, false);
        reg.end_connection(vm, t0);
        assert_eq!(reg.space().held_by(vm.0), vec![p]);
        let next = reg.expire_holdovers(t0 + Duration::from_secs(29));
        assert_eq!(next, Some(t0 + Duration::from_secs(30)));
        assert_eq!(reg.space().held_by(vm.0), vec![p]);
        assert!(reg.vms()[0].held_over_for.is_some());
        assert_eq!(reg.expire_holdovers(t0 + Duration::from_secs(30)), None);
        assert!(reg.space().held_by(vm.0).is_empty());
        assert_eq!(reg.vms()[0].held_over_for, None);
        assert_eq!(reg.vms()[0].counters.holdovers, 1);
    }

    /// A connection ends the hold-over; an operator release clears it; a
    /// VM that holds nothing, or has no hold-over, is reclaimed at once.
    #[test]
    fn holdover_ends_on_connect_release_or_nothing_held() {
        let (mut reg, vm) = registry(Duration::from_secs(30));
        let p = alloc(&mut reg, vm);
        let t0 = Instant::now();
        reg.end_connection(vm, t0);
        reg.set_connected(vm, true);
        assert_eq!(reg.expire_holdovers(t0 + Duration::from_secs(60)), None);
        assert_eq!(reg.space().held_by(vm.0), vec![p]);
        reg.set_connected(vm, false);
        reg.end_connection(vm, t0);
        reg.reclaim_vm(vm, ReclaimReason::Operator);
        assert_eq!(reg.vms()[0].held_over_for, None);
        assert_eq!(reg.expire_holdovers(t0), None);
        // Nothing held: no hold-over begins.
        reg.end_connection(vm, t0);
        assert_eq!(reg.vms()[0].held_over_for, None);

        let (mut reg, vm) = registry(Duration::ZERO);
        alloc(&mut reg, vm);
        reg.end_connection(vm, t0);
        assert!(reg.space().held_by(vm.0).is_empty());
        assert_eq!(reg.vms()[0].counters.holdovers, 0);
    }

    /// A reservation is all or nothing, names every conflict, and ends
    /// when the VM connects or at its deadline.
    #[test]
    fn reservations_are_all_or_nothing_and_end() {
        let (mut reg, a) = registry(Duration::ZERO);
        let limits = OwnerLimits {
            quota: 10,
            range: 1..=255,
        };
        let b = reg.add_vm("b", "b.sock", limits).unwrap();
        let theirs = alloc(&mut reg, b);
        let refused = reg.reserve("a", &[7, theirs, 0, 9], None, None);
        assert_eq!(
            refused,
            Err(RegistryError::ReserveRefused {
                vm: "a".into(),
                conflicts: vec![
                    ReserveConflict::Unavailable { pasid: 0 },
                    ReserveConflict::Held {
                        pasid: theirs,
                        holders: vec!["b".into()]
                    },
                ],
            })
        );
        assert!(reg.space().held_by(a.0).is_empty());
        let made = reg.reserve("a", &[9, 7, 9], None, None).unwrap();
        assert_eq!((made.pasids, made.new, made.hold), (2, 2, DEFAULT_HOLD));
        let mut held = reg.space().held_by(a.0);
        held.sort_unstable();
        assert_eq!(held, [7, 9]);
        assert!(reg.vms()[0].reserved_for.is_some());
        // Holding something else refuses a reservation that leaves it out.
        assert!(matches!(
            reg.reserve("a", &[7], None, None),
            Err(RegistryError::HoldsOthers { .. })
        ));
        reg.set_connected(a, true);
        assert_eq!(reg.vms()[0].reserved_for, None);
        assert!(matches!(
            reg.reserve("a", &[7, 9], None, None),
            Err(RegistryError::ReserveConnected(_))
        ));
        reg.set_connected(a, false);
        reg.reserve("a", &[7, 9], Some(Duration::from_secs(5)), None)
            .unwrap();
        let now = Instant::now();
        assert!(reg.expire_holdovers(now).is_some());
        assert_eq!(reg.space().held_by(a.0).len(), 2);
        assert_eq!(reg.expire_holdovers(now + Duration::from_secs(6)), None);
        assert!(reg.space().held_by(a.0).is_empty());
        assert_eq!(reg.vms()[0].reserved_for, None);
        assert_eq!(
            reg.reserve("zz", &[1], None, None),
            Err(RegistryError::NoSlot("zz".into()))
        );
    }

    /// `detach`'s hold keeps a VM without a hold-over held over, once.
    #[test]
    fn detach_holds_the_next_disconnect_over() {
        let (mut reg, vm) = registry(Duration::ZERO);
        let p = alloc(&mut reg, vm);
        reg.set_connected(vm, true);
        let told = reg
            .prepare_detach("a", Duration::from_secs(60), false, Some("{}".into()))
            .unwrap();
        assert_eq!((told.held, told.hold), (1, Duration::from_secs(60)));
        reg.set_connected(vm, false);
        let t0 = Instant::now();
        reg.end_connection(vm, t0);
        assert_eq!(reg.space().held_by(vm.0), vec![p]);
        assert_eq!(reg.expire_holdovers(t0), Some(t0 + Duration::from_secs(60)));
        assert_eq!(reg.export("a").unwrap().device.as_deref(), Some("{}"));
        reg.set_connected(vm, true);
        reg.set_connected(vm, false);
        reg.end_connection(vm, t0);
        assert!(reg.space().held_by(vm.0).is_empty(), "one disconnect only");
    }
}
