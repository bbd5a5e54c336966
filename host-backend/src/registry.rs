// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host's single authority: the PASID space plus what it knows of each
//! VM slot and host holder.
//!
//! One `Registry` lives behind one mutex shared by every VM session and the
//! control socket. A request batch takes the lock once per queue drain.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use pasid_protocol::{
    Config, Opcode, ReconcileResult, Request, Response, Status, PASID_NONE, VERSION,
};

mod image;
pub mod reconcile;
pub mod record;
mod tally;

pub use tally::{VmFamilies, VmLabels, VmReasonLabels, VmStatusLabels, VmTally};

use crate::figures::Histogram;
use crate::logfmt::Value;
use crate::pasid_space::{
    AllocError, OwnerId, OwnerKind, OwnerLimits, Pasid, PasidInfo, PasidSpace, RefError,
    SpaceError, SpaceStats,
};
use crate::rate_limit::{RateLimit, TokenBucket};
use crate::request::{Answer, PasidList};
use reconcile::{Reconciliation, Settled};
use record::{Answered, ChangeLog, CommitTicket, Record};

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
    /// A PASID-space operation failed.
    #[error("{0}")]
    Ref(#[from] RefError),
    /// Owner management failed.
    #[error("{0}")]
    Space(#[from] SpaceError),
}

/// Per-VM request counters as `pasidctl vms` shows them, read from the
/// VM's [`VmTally`].
#[derive(Clone, Debug, Default)]
pub struct VmCounters {
    /// Requests answered, by opcode name.
    pub requests: BTreeMap<&'static str, u64>,
    /// Responses sent, by status name.
    pub statuses: BTreeMap<&'static str, u64>,
    /// Chains that were malformed (answered INVALID or returned unused).
    pub malformed: u64,
    /// PASIDs released by RESET, disconnect or operator release.
    pub reclaimed: u64,
    /// Times the slot was connected.
    pub connects: u64,
    /// Requests re-delivered after a restart and answered from the record
    /// of their first answer.
    pub replayed: u64,
    /// Reconciles completed (resumes on a new device).
    pub resumes: u64,
    /// PASIDs a RECONCILE claimed that someone else held.
    pub conflicts: u64,
    /// Disconnects after which its PASIDs were held over.
    pub holdovers: u64,
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

/// Why a VM's references were dropped, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimReason {
    /// The driver sent RESET.
    DriverReset,
    /// The vhost-user connection closed.
    Disconnect,
    /// `pasidctl release`.
    Operator,
    /// A disconnected VM's hold-over ran out.
    HoldoverExpired,
}

impl ReclaimReason {
    fn as_str(self) -> &'static str {
        match self {
            ReclaimReason::DriverReset => "driver reset",
            ReclaimReason::Disconnect => "disconnect",
            ReclaimReason::Operator => "operator release",
            ReclaimReason::HoldoverExpired => "hold-over expired",
        }
    }

    /// The `reason` label of the reclaim metrics.
    pub fn label(self) -> &'static str {
        match self {
            ReclaimReason::DriverReset => "driver_reset",
            ReclaimReason::Disconnect => "disconnect",
            ReclaimReason::Operator => "operator",
            ReclaimReason::HoldoverExpired => "holdover_expired",
        }
    }
}

/// One VM as the control socket shows it.
#[derive(Clone, Debug)]
pub struct VmView {
    /// Slot name.
    pub name: String,
    /// Socket path (or `fd:N`).
    pub socket: String,
    /// Whether a frontend is connected.
    pub connected: bool,
    /// Disconnected and held over: time left before its PASIDs are
    /// reclaimed.
    pub held_over_for: Option<Duration>,
    /// When its session was taken over from a previous daemon, if it was.
    pub resumed_at: Option<std::time::SystemTime>,
    /// PASIDs the VM holds references on.
    pub held: u32,
    /// Of those, PASIDs its driver reports cached (leased, not handed
    /// out); never more than `held`.
    pub cached: u32,
    /// Its lease cap (`lease_max`); 0 when leases are off.
    pub lease: u32,
    /// Its quota.
    pub quota: u32,
    /// Lowest PASID it may be given.
    pub range_start: Pasid,
    /// Highest PASID it may be given.
    pub range_end: Pasid,
    /// Counters.
    pub counters: VmCounters,
}

/// Whole-host figures as the control socket shows them.
#[derive(Clone, Debug)]
pub struct HostStats {
    /// Identifier of this PASID space.
    pub space_id: u64,
    /// Space figures.
    pub space: SpaceStats,
    /// Number of VM slots.
    pub vms: usize,
    /// Slots with a frontend connected.
    pub connected_vms: usize,
    /// Requests answered, all VMs.
    pub requests: u64,
    /// Malformed chains, all VMs.
    pub malformed: u64,
    /// PASIDs reclaimed, all VMs.
    pub reclaimed: u64,
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

    /// The device configuration space this VM's driver reads.
    pub fn device_config(&self, vm: VmId) -> Config {
        let limits = self.space.limits(vm.0);
        Config {
            version: VERSION,
            pasid_bits: self.space.pasid_bits(),
            pasid_min: limits.as_ref().map_or(1, |l| *l.range.start()),
            pasid_max: limits.as_ref().map_or(0, |l| *l.range.end()),
            quota: limits.map_or(0, |l| l.quota),
            lease_max: self.lease_cap(vm),
            space_id: self.space_id,
        }
    }

    /// A VM's lease cap: most PASIDs its driver may keep cached. The device
    /// offers VIRTIO_PASID_F_LEASE iff it is not 0.
    pub fn lease_cap(&self, vm: VmId) -> u32 {
        self.space
            .owner_name(vm.0)
            .and_then(|n| self.vms.get(n))
            .map_or(0, |r| r.lease)
    }

    /// Sets a VM's lease cap (`--lease`, `lease=`), at most
    /// [`pasid_protocol::LEASE_MAX`]. Set before the VM's first session: the
    /// device's features and config space follow it.
    pub fn set_lease_cap(&mut self, vm: VmId, cap: u32) {
        if let Some(rec) = self.record_mut(vm) {
            rec.lease = cap.min(pasid_protocol::LEASE_MAX);
        }
    }

    /// Marks a slot connected or disconnected. A device that connects
    /// ends a hold-over: the PASIDs are its driver's to keep (RECONCILE)
    /// or release (RESET).
    pub fn set_connected(&mut self, vm: VmId, connected: bool) {
        if let Some(rec) = self.record_mut(vm) {
            rec.connected = connected;
            if connected {
                rec.tally.count_connect();
                rec.held_over_until = None;
            }
        }
    }

    /// Marks a slot's session as taken over from a previous daemon at
    /// `at` (`None` when a new session starts).
    pub fn set_resumed(&mut self, vm: VmId, at: Option<std::time::SystemTime>) {
        if let Some(rec) = self.record_mut(vm) {
            rec.resumed_at = at;
        }
    }

    /// Sets how long a VM's PASIDs stay reserved after it disconnects
    /// (`--holdover`, `holdover=`).
    pub fn set_holdover(&mut self, vm: VmId, holdover: Duration) {
        if let Some(rec) = self.record_mut(vm) {
            rec.holdover = holdover;
        }
    }

    /// The VM's connection ended at `now`: with a hold-over and PASIDs
    /// held, they stay reserved until the hold-over runs out
    /// ([`Registry::expire_holdovers`]); otherwise they are reclaimed at
    /// once (docs/protocol.md 5.x.6.8).
    pub fn end_connection(&mut self, vm: VmId, now: Instant) {
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let name = self.vm_name(vm).to_string();
        let holdover = self.record_mut(vm).map_or(Duration::ZERO, |r| r.holdover);
        if holdover.is_zero() || held == 0 {
            self.reclaim_vm(vm, ReclaimReason::Disconnect);
            return;
        }
        if let Some(rec) = self.record_mut(vm) {
            rec.held_over_until = Some(now + holdover);
            rec.reconciling = None;
            // The device is gone: nothing of it can be re-delivered.
            rec.forget_device();
            rec.tally.count_holdover();
        }
        info!(
            "vm={name} event=held-over pasids={held} seconds={}",
            holdover.as_secs()
        );
    }

    /// Reclaims the PASIDs of every VM whose hold-over ran out by `now`.
    /// Returns when the next one runs out, if any is held over.
    pub fn expire_holdovers(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<VmId> = self
            .vms
            .values()
            .filter(|r| r.held_over_until.is_some_and(|t| t <= now))
            .map(|r| VmId(r.owner))
            .collect();
        for vm in expired {
            if let Some(rec) = self.record_mut(vm) {
                rec.held_over_until = None;
            }
            self.reclaim_vm(vm, ReclaimReason::HoldoverExpired);
        }
        self.vms.values().filter_map(|r| r.held_over_until).min()
    }

    /// Whether a slot has a frontend connected.
    pub fn is_connected(&self, vm: VmId) -> bool {
        self.space
            .owner_name(vm.0)
            .and_then(|n| self.vms.get(n))
            .is_some_and(|r| r.connected)
    }

    /// Counts a malformed chain against a VM.
    pub fn count_malformed(&mut self, vm: VmId) {
        if let Some(rec) = self.record_mut(vm) {
            rec.tally.count_malformed();
        }
    }

    /// Carries out a guest request taken from avail-ring `position`. With
    /// durable state, a request re-delivered after a restart (same position,
    /// same bytes as one answered before the crash) gets its first answer
    /// again and changes nothing; every answer joins the VM's batch, made
    /// durable by [`Registry::end_batch`].
    pub fn answer(
        &mut self,
        vm: VmId,
        position: u16,
        request: Request,
        list: &PasidList,
    ) -> Answer {
        if self.journal.is_none() {
            return self.serve(vm, request, list);
        }
        let bytes = request.encode();
        if let Some(rec) = self.record_mut(vm) {
            if let Some(first) = rec.replayed(position, &bytes, list) {
                rec.tally.replayed += 1;
                rec.batch.push(Answered {
                    replayed: true,
                    ..first
                });
                let granted = match request {
                    Request::Grant { .. } => first.list,
                    Request::Reconcile { .. } => first.results,
                    _ => PasidList::default(),
                };
                return Answer {
                    response: Response::decode(&first.response),
                    granted,
                };
            }
        }
        let answer = self.serve(vm, request, list);
        if let Some(rec) = self.record_mut(vm) {
            rec.batch.push(Answered {
                position,
                request: bytes,
                response: answer.response.encode(),
                list: match request {
                    Request::Return { .. } | Request::Reconcile { .. } => *list,
                    _ => answer.granted,
                },
                results: match request {
                    Request::Reconcile { .. } => answer.granted,
                    _ => PasidList::default(),
                },
                replayed: false,
            });
        }
        answer
    }

    /// Closes the batch of answers [`Registry::answer`] gave `vm`: appends
    /// it to the journal, and returns the point to wait for before putting
    /// any of them on the used ring. `None` without durable state.
    pub fn end_batch(&mut self, vm: VmId) -> Option<CommitTicket> {
        let journal = self.journal.clone()?;
        if let Some(rec) = self.record_mut(vm) {
            if !rec.batch.is_empty() {
                let batch = std::mem::take(&mut rec.batch);
                let owner = rec.owner.as_u32();
                journal.batch(owner, &batch);
                rec.window = batch;
            }
        }
        Some(CommitTicket::latest(journal))
    }

    /// The point to wait for before acting on an operator command's result
    /// (or anything else just changed). `None` without durable state.
    pub fn commit_point(&self) -> Option<CommitTicket> {
        self.journal.clone().map(CommitTicket::latest)
    }

    /// Durable-state figures for the metrics; `None` without `--state-dir`.
    pub fn journal_stats(&self) -> Option<crate::figures::JournalStats> {
        self.journal.as_ref().map(|j| j.stats())
    }

    /// Records `record` in the change log, if there is one.
    fn log(&self, record: &Record) {
        if let Some(journal) = &self.journal {
            journal.record(record);
        }
    }

    /// Carries out one well-formed request that carries no PASID list
    /// (anything but RETURN; a GRANT's PASIDs are not returned): the
    /// operator's and the tests' way in. The guest's is
    /// [`Registry::answer`].
    pub fn handle(&mut self, vm: VmId, request: Request) -> Response {
        self.serve(vm, request, &PasidList::default()).response
    }

    /// Carries out one well-formed guest request; `list` is a RETURN's
    /// list (empty for every other request).
    pub fn serve(&mut self, vm: VmId, request: Request, list: &PasidList) -> Answer {
        let tag = request.tag();
        // Every well-formed request costs a token; without one it is
        // answered RATE_LIMITED and has no effect.
        let admitted = self
            .record_mut(vm)
            .is_none_or(|rec| rec.bucket.as_mut().is_none_or(TokenBucket::take));
        let answer = match request {
            _ if !admitted => Response::new(Status::RateLimited, tag).into(),
            Request::Alloc { min, max, .. } => match self.space.alloc(vm.0, min, max) {
                Ok(pasid) => Response::ok(tag, pasid),
                Err(e) => Response::new(alloc_status(e), tag),
            }
            .into(),
            Request::Free { pasid, .. } => match self.space.put(vm.0, pasid) {
                Ok(_) => Response::new(Status::Ok, tag),
                Err(e) => Response::new(ref_status(e), tag),
            }
            .into(),
            Request::Reset { .. } => {
                let released = self.reclaim_vm(vm, ReclaimReason::DriverReset);
                Response::ok(tag, u32::try_from(released).unwrap_or(PASID_NONE - 1)).into()
            }
            Request::Grant {
                count,
                cached,
                min,
                max,
                ..
            } => self.grant(vm, tag, count, cached, min..=max),
            Request::Return { cached, .. } => self.give_back(vm, tag, cached, list),
            Request::Reconcile {
                first,
                last,
                cached,
                ..
            } => self.reconcile(vm, tag, (first, last), cached, list),
        };
        self.name_if_reconciling(vm, request, &answer);
        self.count_result(vm, request, &answer.response);
        answer
    }

    /// RECONCILE (docs/protocol.md 5.x.6.13): settles each listed PASID,
    /// and on LAST drops what the reconcile did not name. The answer
    /// carries one result per listed PASID.
    fn reconcile(
        &mut self,
        vm: VmId,
        tag: u64,
        (first, last): (bool, bool),
        cached: u16,
        list: &PasidList,
    ) -> Answer {
        let Some(rec) = self.record_mut(vm) else {
            return Response::new(Status::Internal, tag).into();
        };
        let mut progress = rec.reconciling.take();
        let settled = reconcile::settle(
            &mut self.space,
            vm.0,
            &mut progress,
            first,
            last,
            list.as_slice(),
        );
        let name = self.vm_name(vm).to_string();
        if let Some(rec) = self.record_mut(vm) {
            rec.reconciling = progress;
        }
        match settled {
            Ok(settled) => {
                self.note_cached(vm, u32::from(cached));
                self.log_reconcile(vm, &name, list, &settled);
                Answer {
                    // At most the VM's quota, which is a u32.
                    response: Response::ok(tag, u32::try_from(settled.dropped).unwrap_or(0)),
                    granted: settled.results,
                }
            }
            Err(e) => {
                log::debug!("vm={name} event=reconcile-rejected tag={tag:#x} error=\"{e}\"");
                Response::new(Status::Invalid, tag).into()
            }
        }
    }

    /// Counts and logs one carried-out RECONCILE: each conflict (a PASID
    /// the VM claims that someone else holds) and, on LAST, the resume.
    fn log_reconcile(&mut self, vm: VmId, name: &str, list: &PasidList, settled: &Settled) {
        let conflicts: Vec<(Pasid, Vec<String>)> = list
            .as_slice()
            .iter()
            .zip(settled.results.as_slice())
            .filter(|(_, r)| **r == ReconcileResult::Conflict as u32)
            .map(|(&p, _)| {
                let holders = self
                    .space
                    .info(p)
                    .map(|i| i.holders.into_iter().map(|h| h.owner).collect())
                    .unwrap_or_default();
                (p, holders)
            })
            .collect();
        for (pasid, holders) in &conflicts {
            log::warn!(
                "vm={name} event=reconcile-conflict pasid={pasid} held_by={}",
                Value(&holders.join(","))
            );
        }
        let Some(rec) = self.record_mut(vm) else {
            return;
        };
        rec.tally.count_conflicts(conflicts.len() as u64);
        if settled.finished {
            rec.tally.count_resume();
            info!(
                "vm={name} event=resumed kept={} granted={} conflicts={} refused={} dropped={}",
                settled.total(ReconcileResult::Kept),
                settled.total(ReconcileResult::Granted),
                settled.total(ReconcileResult::Conflict),
                settled.total(ReconcileResult::Refused),
                settled.dropped
            );
        }
    }

    /// While a reconcile is in progress, what ALLOC and GRANT give the VM
    /// counts as named: LAST must not drop it.
    fn name_if_reconciling(&mut self, vm: VmId, request: Request, answer: &Answer) {
        if Status::from_wire(answer.response.status) != Some(Status::Ok) {
            return;
        }
        let Some(progress) = self.record_mut(vm).and_then(|r| r.reconciling.as_mut()) else {
            return;
        };
        match request {
            Request::Alloc { .. } => progress.name(answer.response.pasid),
            Request::Grant { .. } => {
                for &pasid in answer.granted.as_slice() {
                    progress.name(pasid);
                }
            }
            _ => {}
        }
    }

    /// GRANT: up to `count` of the lowest free PASIDs in `range`, bounded
    /// by the quota and by the lease cap less what the driver says it has
    /// `cached` (docs/protocol.md 5.x.6.12).
    fn grant(
        &mut self,
        vm: VmId,
        tag: u64,
        count: u16,
        cached: u16,
        range: RangeInclusive<Pasid>,
    ) -> Answer {
        let cap = self.lease_cap(vm);
        let allowed = u32::from(count).min(cap.saturating_sub(u32::from(cached)));
        let mut granted = PasidList::default();
        let result = match granted.slots(allowed as usize) {
            Some(slots) => self
                .space
                .alloc_batch(vm.0, *range.start(), *range.end(), slots),
            None => Err(AllocError::NoSpace),
        };
        match result {
            Ok(n) => {
                granted.truncate(n);
                // At most LEASE_BATCH_MAX.
                let n = u32::try_from(n).unwrap_or(0);
                self.note_cached(vm, u32::from(cached).saturating_add(n));
                Answer {
                    response: Response::ok(tag, n),
                    granted,
                }
            }
            Err(e) => {
                self.note_cached(vm, u32::from(cached));
                Response::new(alloc_status(e), tag).into()
            }
        }
    }

    /// RETURN: drops the VM's reference on every listed PASID, all or
    /// nothing.
    fn give_back(&mut self, vm: VmId, tag: u64, cached: u16, list: &PasidList) -> Answer {
        let pasids = list.as_slice();
        match self.space.put_batch(vm.0, pasids) {
            Ok(_) => {
                // At most LEASE_BATCH_MAX.
                let returned = u32::try_from(pasids.len()).unwrap_or(0);
                self.note_cached(vm, u32::from(cached).saturating_sub(returned));
                Response::ok(tag, returned).into()
            }
            Err(e) => {
                self.note_cached(vm, u32::from(cached));
                Response::new(ref_status(e), tag).into()
            }
        }
    }

    /// Keeps the driver's latest `cached` figure, never above what the VM
    /// holds.
    fn note_cached(&mut self, vm: VmId, cached: u32) {
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        if let Some(rec) = self.record_mut(vm) {
            rec.cached = cached.min(held);
        }
    }

    /// Counts an answered request for the metrics and logs a rejected one
    /// (rate-limited per VM).
    fn count_result(&mut self, vm: VmId, request: Request, response: &Response) {
        let status = Status::from_wire(response.status).unwrap_or(Status::Internal);
        let Some(name) = self.space.owner_name(vm.0) else {
            return;
        };
        let Some(rec) = self.vms.get_mut(name) else {
            return;
        };
        rec.tally.count_result(request.opcode(), status);
        if status == Status::Ok {
            return;
        }
        let detail = match request {
            Request::Alloc { tag, min, max } => {
                let (held, quota) = self.space.usage(vm.0).map_or((0, 0), |u| (u.held, u.quota));
                format!("tag={tag:#x} min={min} max={max} held={held} quota={quota}")
            }
            Request::Free { tag, pasid } => format!("tag={tag:#x} pasid={pasid}"),
            Request::Reset { tag } => format!("tag={tag:#x}"),
            other => other.to_string(),
        };
        rec.tally
            .log_rejection(name, request.opcode(), status, format_args!("{detail}"));
    }

    /// Undoes a request whose response never reached the guest.
    pub fn undo(&mut self, vm: VmId, request: Request, answer: &Answer) {
        if let Some(rec) = self.record_mut(vm) {
            // Its answer is the last of the batch: it must not be recorded.
            if rec
                .batch
                .last()
                .is_some_and(|a| a.request == request.encode())
            {
                rec.batch.pop();
            }
        }
        if Status::from_wire(answer.response.status) != Some(Status::Ok) {
            return;
        }
        // The guest never saw these PASIDs: drop the references they got.
        match request {
            Request::Alloc { .. } => {
                let _ = self.space.put(vm.0, answer.response.pasid);
            }
            Request::Grant { .. } => {
                let _ = self.space.put_batch(vm.0, answer.granted.as_slice());
            }
            _ => {}
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
            // Nothing is left to hold over.
            rec.held_over_until = None;
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

    /// Changes a VM's quota; a quota above the PASIDs its range could ever
    /// hold is refused (it would mean "unlimited" while reading as a
    /// number).
    pub fn set_quota(&mut self, name: &str, quota: u32) -> Result<(), RegistryError> {
        let vm = self.vm(name)?;
        let limits = self
            .space
            .limits(vm.0)
            .ok_or_else(|| RegistryError::UnknownVm(name.to_string()))?;
        let max = self.space.range_capacity(&limits.range);
        if u64::from(quota) > max {
            return Err(RegistryError::QuotaAboveCapacity {
                vm: name.to_string(),
                quota,
                max,
                start: *limits.range.start(),
                end: *limits.range.end(),
            });
        }
        self.space.set_limits(
            vm.0,
            OwnerLimits {
                quota,
                ..limits.clone()
            },
        )?;
        self.log(&Record::Limits {
            owner: vm.0.as_u32(),
            limits: OwnerLimits { quota, ..limits },
        });
        info!("vm={name} event=quota quota={quota}");
        Ok(())
    }

    /// The host holder of that name, if it holds anything; a VM's name is
    /// `NotAHolder`.
    fn existing_holder(&self, name: &str) -> Result<Option<OwnerId>, RegistryError> {
        if self.vms.contains_key(name) {
            return Err(RegistryError::NotAHolder(name.to_string()));
        }
        Ok(self.space.owner(name))
    }

    /// A host holder takes a reference on an allocated PASID. A new holder
    /// comes into being with its first reference; its name must be a valid
    /// VM name (it shows in listings and log lines).
    pub fn host_get(&mut self, holder: &str, pasid: Pasid) -> Result<u32, RegistryError> {
        let (id, new) = match self.existing_holder(holder)? {
            Some(id) => (id, false),
            None if !valid_name(holder) => {
                return Err(RegistryError::InvalidHolder(holder.to_string()))
            }
            None => {
                let limits = self.holder_limits();
                (self.space.add_owner(holder, OwnerKind::Host, limits)?, true)
            }
        };
        let refs = match self.space.get(id, pasid) {
            Ok(refs) => refs,
            Err(e) => {
                if new {
                    // Never journaled: the holder leaves no trace.
                    let _ = self.space.forget_owner(id);
                }
                return Err(e.into());
            }
        };
        if new {
            self.log(&Record::AddOwner {
                kind: OwnerKind::Host,
                name: holder.to_string(),
                limits: self.holder_limits(),
            });
        }
        self.log(&Record::Get {
            owner: id.as_u32(),
            pasid,
        });
        info!(
            "holder={} event=get pasid={pasid} refs={refs}",
            Value(holder)
        );
        Ok(refs)
    }

    /// Limits of a host holder: the whole space, no quota.
    fn holder_limits(&self) -> OwnerLimits {
        let full: RangeInclusive<Pasid> = 1..=self.space.max_pasid();
        OwnerLimits {
            quota: u32::MAX,
            range: full,
        }
    }

    /// A host holder drops a reference; says whether the PASID was freed.
    /// A holder left holding nothing is forgotten, so holders that come and
    /// go do not pile up.
    pub fn host_put(&mut self, holder: &str, pasid: Pasid) -> Result<bool, RegistryError> {
        let Some(id) = self.existing_holder(holder)? else {
            // Holders exist only while they hold something.
            return Err(if valid_name(holder) {
                self.space.not_held_error(pasid).into()
            } else {
                RegistryError::InvalidHolder(holder.to_string())
            });
        };
        let outcome = self.space.put(id, pasid)?;
        self.log(&Record::Put {
            owner: id.as_u32(),
            pasid,
        });
        let forgotten = self.forget_if_empty(id);
        info!(
            "holder={} event=put pasid={pasid} freed={} forgotten={forgotten}",
            Value(holder),
            outcome.freed
        );
        Ok(outcome.freed)
    }

    /// Operator release of everything a VM holds, connected or not.
    pub fn release_vm(&mut self, name: &str) -> Result<u64, RegistryError> {
        let vm = self.vm(name)?;
        Ok(self.reclaim_vm(vm, ReclaimReason::Operator))
    }

    /// `pasidctl release`: [`Registry::release_vm`], but a connected VM is
    /// refused unless `force`: its guest is running and its devices may
    /// still use the PASIDs, which could then be handed to another VM. A VM
    /// the command line no longer names (known only from durable state) is
    /// then forgotten: nothing is left of it.
    pub fn operator_release(&mut self, name: &str, force: bool) -> Result<u64, RegistryError> {
        let vm = self.vm(name)?;
        if !force && self.is_connected(vm) {
            return Err(RegistryError::Connected(name.to_string()));
        }
        let released = self.release_vm(name)?;
        if self.vms.get(name).is_some_and(|r| r.socket == UNCONFIGURED) {
            self.forget_if_empty(vm.0);
        }
        Ok(released)
    }

    /// Forgets an owner that holds nothing (a host holder after its last
    /// put, an unconfigured VM after its release), so that owners without
    /// PASIDs or configuration do not pile up; journals it. Says whether it
    /// was forgotten.
    fn forget_if_empty(&mut self, id: OwnerId) -> bool {
        if self.space.usage(id).is_none_or(|u| u.held > 0) {
            return false;
        }
        let name = self.space.owner_name(id).unwrap_or_default().to_string();
        if self.space.forget_owner(id).is_err() {
            return false;
        }
        self.vms.remove(&name);
        self.log(&Record::Forget { owner: id.as_u32() });
        true
    }

    /// Allocated PASIDs with their holders: every one, or those `vm` holds
    /// a reference on.
    pub fn pasids_of(&self, vm: Option<&str>) -> Result<Vec<PasidInfo>, RegistryError> {
        let Some(name) = vm else {
            return Ok(self.pasids());
        };
        let id = self.vm(name)?;
        Ok(self
            .space
            .held_by(id.0)
            .into_iter()
            .filter_map(|p| self.space.info(p))
            .collect())
    }

    /// Every allocated PASID with its holders.
    pub fn pasids(&self) -> Vec<PasidInfo> {
        self.space.list()
    }

    /// Every VM slot.
    pub fn vms(&self) -> Vec<VmView> {
        self.vms
            .iter()
            .map(|(name, rec)| {
                let usage = self.space.usage(rec.owner);
                let held = usage.as_ref().map_or(0, |u| u.held);
                VmView {
                    name: name.clone(),
                    socket: rec.socket.clone(),
                    connected: rec.connected,
                    held_over_for: rec
                        .held_over_until
                        .map(|t| t.saturating_duration_since(Instant::now())),
                    resumed_at: rec.resumed_at,
                    held,
                    // FREE or an operator's get/put may have moved `held`
                    // since the driver last reported.
                    cached: rec.cached.min(held),
                    lease: rec.lease,
                    quota: usage.as_ref().map_or(0, |u| u.quota),
                    range_start: usage.as_ref().map_or(0, |u| u.range_start),
                    range_end: usage.as_ref().map_or(0, |u| u.range_end),
                    counters: rec.tally.counters(),
                }
            })
            .collect()
    }

    /// Records how long one descriptor chain took to handle, from reading
    /// the request to writing the response (`vpasid_request_duration_seconds`).
    pub fn observe_latency(&mut self, elapsed: Duration) {
        self.latency.observe(elapsed);
    }

    /// The request latency histogram.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// The metric families every VM's counters are series of.
    pub fn vm_families(&self) -> &VmFamilies {
        &self.families
    }

    /// Each VM slot's name with its counters, in name order.
    pub fn vm_tallies(&self) -> impl Iterator<Item = (&str, &VmTally)> {
        self.vms
            .iter()
            .map(|(name, rec)| (name.as_str(), &rec.tally))
    }

    /// Whole-host figures.
    pub fn stats(&self) -> HostStats {
        let mut requests = 0;
        let mut malformed = 0;
        let mut reclaimed = 0;
        for rec in self.vms.values() {
            let counters = rec.tally.counters();
            requests += counters.requests.values().sum::<u64>();
            malformed += counters.malformed;
            reclaimed += counters.reclaimed;
        }
        HostStats {
            space_id: self.space_id,
            space: self.space.stats(),
            vms: self.vms.len(),
            connected_vms: self.vms.values().filter(|r| r.connected).count(),
            requests,
            malformed,
            reclaimed,
        }
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

fn alloc_status(e: AllocError) -> Status {
    match e {
        AllocError::InvalidRange { .. } => Status::Invalid,
        AllocError::NoSpace => Status::NoSpace,
        AllocError::QuotaExceeded { .. } => Status::QuotaExceeded,
        AllocError::UnknownOwner => Status::Internal,
    }
}

fn ref_status(e: RefError) -> Status {
    match e {
        RefError::NotFound(_) => Status::NotFound,
        RefError::NotOwner(_) => Status::NotOwner,
        RefError::Invalid(_) | RefError::Repeated(_) => Status::Invalid,
        RefError::QuotaExceeded { .. } => Status::QuotaExceeded,
        RefError::Overflow(_) | RefError::UnknownOwner => Status::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pasid_space::SpaceConfig;

    fn registry(holdover: Duration) -> (Registry, VmId) {
        let space = PasidSpace::new(SpaceConfig {
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
}
