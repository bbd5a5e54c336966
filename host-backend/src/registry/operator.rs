// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Operator commands (`pasidctl` over the control socket): quotas, host
//! holders' references, and releasing a VM.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use log::info;

use super::record::{Record, Reservation};
use super::{
    valid_name, Detaching, Exported, ReclaimReason, Registry, RegistryError, ReserveConflict,
    Reserved, ReservedUntil, VmId, DEFAULT_HOLD, MAX_HOLD, UNCONFIGURED,
};
use crate::logfmt::Value;
use crate::pasid_space::{Claim, OwnerId, OwnerKind, OwnerLimits, Pasid};

impl Registry {
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
}

/// Migration: a VM leaving (`pasidctl detach`), what it holds (`export`),
/// and its PASIDs kept for it on the host it goes to (`reserve`).
impl Registry {
    /// `pasidctl detach`, before the device is unplugged: the coming
    /// disconnect is held over for at least `hold`, whatever the VM's own
    /// hold-over, and `device` (JSON text) is what `attach` plugs again.
    /// With `keep`, the hold-over outlives the VM's QEMU process
    /// ([`Registry::unbind_qemu`]): the same-host case, where the source
    /// QEMU exits before the destination attaches.
    pub fn prepare_detach(
        &mut self,
        name: &str,
        hold: Duration,
        keep: bool,
        device: Option<String>,
    ) -> Result<Detaching, RegistryError> {
        let vm = self.vm(name)?;
        if hold > MAX_HOLD {
            return Err(RegistryError::HoldTooLong {
                secs: hold.as_secs(),
            });
        }
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let Some(rec) = self.record_mut(vm) else {
            return Err(RegistryError::UnknownVm(name.to_string()));
        };
        let hold = rec.holdover.max(hold);
        match rec.held_over_until {
            // Already disconnected and held over (its device died with a
            // daemon before this one): the hold-over lasts at least
            // `hold` from now.
            Some(until) if !rec.connected => {
                rec.held_over_until = Some(until.max(Instant::now() + hold));
            }
            _ => rec.detach_hold = Some(hold),
        }
        if device.is_some() {
            rec.device = device;
        }
        if keep {
            self.unbind_qemu(vm);
        }
        info!(
            "vm={name} event=detach pasids={held} hold_seconds={} keep={keep}",
            hold.as_secs()
        );
        Ok(Detaching { held, hold })
    }

    /// `pasidctl export`: what VM `name` holds, for `reserve` on another
    /// host.
    pub fn export(&self, name: &str) -> Result<Exported, RegistryError> {
        let vm = self.vm(name)?;
        let usage = self
            .space
            .usage(vm.0)
            .ok_or_else(|| RegistryError::UnknownVm(name.to_string()))?;
        let mut pasids = self.space.held_by(vm.0);
        pasids.sort_unstable();
        let rec = self.vms.get(name);
        Ok(Exported {
            name: name.to_string(),
            space_id: self.space_id,
            pasids,
            quota: usage.quota,
            range_start: usage.range_start,
            range_end: usage.range_end,
            lease: rec.map_or(0, |r| r.lease),
            device: rec.and_then(|r| r.device.clone()),
        })
    }

    /// `pasidctl reserve`: VM `name`, not yet arrived, holds exactly
    /// `pasids` until it connects or `hold` runs out (default: its own
    /// hold-over if it has one, else [`DEFAULT_HOLD`]). All or nothing:
    /// every PASID another owner holds, that this host cannot give or
    /// that lies outside the VM's range, and a quota too small, is named
    /// in the error, and nothing changes. PASIDs the VM already holds
    /// (a reservation made again) stay as they are. Journaled before the
    /// reply.
    pub fn reserve(
        &mut self,
        name: &str,
        pasids: &[Pasid],
        hold: Option<Duration>,
        device: Option<String>,
    ) -> Result<Reserved, RegistryError> {
        let vm = match self.vms.get(name) {
            Some(rec) if rec.socket != UNCONFIGURED => VmId(rec.owner),
            _ => return Err(RegistryError::NoSlot(name.to_string())),
        };
        let own_holdover = self.vms.get(name).map_or(Duration::ZERO, |r| r.holdover);
        let hold = hold.unwrap_or(if own_holdover.is_zero() {
            DEFAULT_HOLD
        } else {
            own_holdover
        });
        if hold > MAX_HOLD {
            return Err(RegistryError::HoldTooLong {
                secs: hold.as_secs(),
            });
        }
        if self.is_connected(vm) {
            return Err(RegistryError::ReserveConnected(name.to_string()));
        }
        let mut wanted = pasids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let held = self.space.held_by(vm.0);
        let mut others: Vec<Pasid> = held
            .iter()
            .copied()
            .filter(|p| wanted.binary_search(p).is_err())
            .collect();
        if !others.is_empty() {
            others.sort_unstable();
            return Err(RegistryError::HoldsOthers {
                vm: name.to_string(),
                pasids: others,
            });
        }
        let conflicts = self.reserve_conflicts(vm, &wanted, &held);
        if !conflicts.is_empty() {
            info!(
                "vm={name} event=reserve-refused pasids={} conflicts={}",
                wanted.len(),
                conflicts.len()
            );
            return Err(RegistryError::ReserveRefused {
                vm: name.to_string(),
                conflicts,
            });
        }
        let mut taken = Vec::new();
        for &pasid in &wanted {
            match self.space.claim(vm.0, pasid) {
                Ok(Claim::Kept) => {}
                Ok(Claim::Granted) => taken.push(pasid),
                // Checked above; should the space disagree, undo.
                other => {
                    for &p in &taken {
                        let _ = self.space.put(vm.0, p);
                    }
                    let holders = self
                        .space
                        .info(pasid)
                        .map(|i| i.holders.into_iter().map(|h| h.owner).collect())
                        .unwrap_or_default();
                    return Err(match other {
                        Err(e) => e.into(),
                        Ok(_) => RegistryError::ReserveRefused {
                            vm: name.to_string(),
                            conflicts: vec![ReserveConflict::Held { pasid, holders }],
                        },
                    });
                }
            }
        }
        let reserved =
            ReservedUntil::starting(Instant::now(), hold).ok_or(RegistryError::HoldTooLong {
                secs: hold.as_secs(),
            })?;
        let Some(rec) = self.record_mut(vm) else {
            return Err(RegistryError::UnknownVm(name.to_string()));
        };
        rec.reservation = Some(reserved);
        rec.held_over_until = None;
        if device.is_some() {
            rec.device = device;
        }
        rec.tally.count_reservation();
        let device = rec.device.clone();
        self.log(&Record::Reserve(Reservation {
            owner: vm.0.as_u32(),
            deadline_ms: reserved.deadline_ms(),
            pasids: wanted.clone(),
            device,
        }));
        // The reservation waits for a QEMU still to come: the exit of one
        // this slot knew before must not end it.
        self.unbind_qemu(vm);
        let count = u32::try_from(wanted.len()).unwrap_or(u32::MAX);
        let new = u32::try_from(taken.len()).unwrap_or(u32::MAX);
        info!(
            "vm={name} event=reserved pasids={count} new={new} seconds={}",
            hold.as_secs()
        );
        Ok(Reserved {
            pasids: count,
            new,
            until: reserved.deadline,
            hold,
        })
    }

    /// Every reason `wanted` (sorted, no repeats) cannot be reserved for
    /// `vm`, which holds `held` (all of them in `wanted`).
    fn reserve_conflicts(
        &self,
        vm: VmId,
        wanted: &[Pasid],
        held: &[Pasid],
    ) -> Vec<ReserveConflict> {
        let mut conflicts = Vec::new();
        let Some(range) = self.space.limits(vm.0).map(|l| l.range) else {
            return Vec::new();
        };
        let quota = self.space.usage(vm.0).map_or(0, |u| u.quota);
        let held: std::collections::HashSet<Pasid> = held.iter().copied().collect();
        for &pasid in wanted {
            if held.contains(&pasid) {
                continue;
            }
            if pasid == 0 || pasid > self.space.max_pasid() || self.space.is_reserved(pasid) {
                conflicts.push(ReserveConflict::Unavailable { pasid });
            } else if !range.contains(&pasid) {
                conflicts.push(ReserveConflict::OutsideRange {
                    pasid,
                    start: *range.start(),
                    end: *range.end(),
                });
            } else if let Some(info) = self.space.info(pasid) {
                conflicts.push(ReserveConflict::Held {
                    pasid,
                    holders: info.holders.into_iter().map(|h| h.owner).collect(),
                });
            }
        }
        let needed = wanted.len() as u64;
        if needed > u64::from(quota) {
            conflicts.push(ReserveConflict::OverQuota { quota, needed });
        }
        conflicts
    }

    /// Names of the VMs with a reservation in force.
    pub fn reserved_vms(&self) -> Vec<String> {
        self.vms
            .iter()
            .filter(|(_, r)| r.reservation.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }
}
