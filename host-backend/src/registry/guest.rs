// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest path: what a VM's device session asks of the registry. Its
//! connection and hold-over, its configuration space, and its requests
//! (ALLOC, FREE, RESET, GRANT, RETURN, RECONCILE), answered, counted and
//! made durable batch by batch.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use log::info;
use pasid_protocol::{
    Answer, Config, PasidList, ReconcileResult, Request, Response, Status, PASID_NONE, VERSION,
};

use super::reconcile::{self, Settled};
use super::record::{Answered, CommitTicket, Record, Reservation};
use super::{Probe, ProbeKind, ReclaimReason, Registry, VmId};
use crate::logfmt::Value;
use crate::pasid_space::{AllocError, Pasid, RefError};
use crate::rate_limit::TokenBucket;

impl Registry {
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
        let mut took_up = None;
        if let Some(rec) = self.record_mut(vm) {
            rec.connected = connected;
            if connected {
                rec.tally.count_connect();
                rec.held_over_until = None;
                // The VM a reservation waited for has arrived: its
                // driver's RECONCILE finds every reserved PASID its own.
                if rec.reservation.take().is_some() {
                    took_up = Some(rec.owner.as_u32());
                }
            }
        }
        if let Some(owner) = took_up {
            let held = self.space.usage(vm.0).map_or(0, |u| u.held);
            self.log(&Record::Reserve(Reservation::ended(owner)));
            info!(
                "vm={} event=reservation-ended reason=\"connected\" pasids={held}",
                self.vm_name(vm)
            );
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
    /// ([`Registry::expire_holdovers`]) or the QEMU process they are bound
    /// to exits ([`Registry::qemu_exited`]); otherwise, or if that process
    /// has exited already, they are reclaimed at once (docs/protocol.md
    /// 5.x.6.8).
    pub fn end_connection(&mut self, vm: VmId, now: Instant) {
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let name = self.vm_name(vm).to_string();
        // A disconnect `pasidctl detach` announced is held over for at
        // least the hold it asked for.
        let holdover = self.record_mut(vm).map_or(Duration::ZERO, |r| {
            r.holdover
                .max(r.detach_hold.take().unwrap_or(Duration::ZERO))
        });
        // Its QEMU has already exited: no device of it can come back.
        let exited = self.take_qemu_exited(vm);
        if holdover.is_zero() || held == 0 {
            self.reclaim_vm(vm, ReclaimReason::Disconnect);
            return;
        }
        if exited {
            self.reclaim_vm(vm, ReclaimReason::QemuExited);
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

    /// After a restart (`now`), a VM that holds PASIDs from durable state
    /// but has no session (none was taken over from the descriptor store)
    /// starts its hold-over afresh, as if it had disconnected at the
    /// restart: the new daemon cannot tell when, or whether, its QEMU went
    /// away. With a hold-over of 0 its PASIDs stay until its next
    /// connection ends, RESET, or an operator release (docs/protocol.md
    /// 5.x.6.8).
    pub fn hold_over_after_restart(&mut self, vm: VmId, now: Instant) {
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let name = self.vm_name(vm).to_string();
        let Some(rec) = self.record_mut(vm) else {
            return;
        };
        // Connected, already held over (its stored session was found ended),
        // nothing to keep, or no hold-over: nothing to start.
        // A reservation keeps its own deadline.
        if rec.connected
            || rec.held_over_until.is_some()
            || rec.reservation.is_some()
            || rec.holdover.is_zero()
            || held == 0
        {
            return;
        }
        let holdover = rec.holdover;
        rec.held_over_until = Some(now + holdover);
        rec.tally.count_holdover();
        info!(
            "vm={name} event=held-over pasids={held} seconds={} reason=\"restart\"",
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
        let lapsed: Vec<VmId> = self
            .vms
            .values()
            .filter(|r| r.reservation.is_some_and(|t| t.until <= now))
            .map(|r| VmId(r.owner))
            .collect();
        for vm in lapsed {
            self.reclaim_vm(vm, ReclaimReason::ReservationExpired);
        }
        self.vms
            .values()
            .filter_map(|r| r.held_over_until)
            .chain(
                self.vms
                    .values()
                    .filter_map(|r| r.reservation.map(|t| t.until)),
            )
            .min()
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
        let (admitted, spoke) = self.record_mut(vm).map_or((true, None), |rec| {
            // Every well-formed request costs a token; without one it is
            // answered RATE_LIMITED and has no effect.
            let admitted = rec.bucket.as_mut().is_none_or(TokenBucket::take);
            // A driver speaking on this connection has taken up the
            // device: its process, if its binding waited for that.
            (admitted, rec.qemu_pending.take())
        });
        if let Some(peer) = spoke {
            self.driver_spoke(vm, peer);
        }
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
                self.note_probe(vm, ProbeKind::Reset, [0; 3]);
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
            rec.last_probe = Some(Probe {
                kind: ProbeKind::Reconcile,
                at: std::time::SystemTime::now(),
                kept: settled.total(ReconcileResult::Kept),
                regranted: settled.total(ReconcileResult::Granted),
                conflicts: settled.total(ReconcileResult::Conflict),
            });
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

    /// Records how the VM's driver took up its device (`last_probe`):
    /// `counts` are kept, re-granted and conflicts.
    fn note_probe(&mut self, vm: VmId, kind: ProbeKind, [kept, regranted, conflicts]: [u64; 3]) {
        if let Some(rec) = self.record_mut(vm) {
            rec.last_probe = Some(Probe {
                kind,
                at: std::time::SystemTime::now(),
                kept,
                regranted,
                conflicts,
            });
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
