// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The registry as a value and back: its snapshot image, a registry over
//! what durable state recovered, and the command line matched against what
//! the state remembers. How any of it is stored is `state`'s business.

use std::sync::Arc;

use log::{info, warn};

use super::record::{ChangeLog, OwnerImage, RememberedVm, Reservation, StateImage};
use super::{Registry, RegistryError, ReservedUntil, VmId, VmRecord, VmTally, UNCONFIGURED};
use crate::pasid_space::{OwnerKind, OwnerLimits, PasidSpace};
use crate::rate_limit::TokenBucket;

impl Registry {
    /// A registry over a space recovered from durable state, with the VMs
    /// it remembers. They start unconfigured until
    /// [`Registry::configure_vm`] names their socket; each one's window is
    /// what its frontend may re-deliver, answered the first time's way.
    pub fn restored(space: PasidSpace, space_id: u64, vms: Vec<RememberedVm>) -> Self {
        let mut reg = Registry::new(space, space_id);
        for vm in vms {
            let Some(owner) = reg.space.owner(&vm.name) else {
                continue;
            };
            let tally = VmTally::new(&reg.families, &vm.name);
            let mut rec = VmRecord::new(owner, UNCONFIGURED, None, tally);
            rec.configured = vm.configured;
            rec.replay = vm.window.clone();
            rec.window = vm.window;
            rec.qemu = vm.peer;
            if let Some(kept) = vm.reservation.filter(|r| !r.is_end()) {
                rec.reservation = Some(ReservedUntil::from_deadline(kept.deadline_ms));
                rec.device = kept.device;
            }
            reg.vms.insert(vm.name, rec);
        }
        reg
    }

    /// Names the socket of VM `name` from the command line and applies its
    /// limits; a VM the registry does not know yet (always so without
    /// durable state) is added. A VM the state knows keeps its PASIDs; its
    /// limits follow the command line if that changed since the last start,
    /// and otherwise stay as they were (a `pasidctl quota` survives a
    /// restart).
    pub fn configure_vm(
        &mut self,
        name: &str,
        socket: &str,
        limits: OwnerLimits,
    ) -> Result<VmId, RegistryError> {
        let bucket = self.rate_limit.map(TokenBucket::new);
        let Some(rec) = self.vms.get_mut(name) else {
            if self.space.owner(name).is_some() {
                return Err(RegistryError::NotAVm(name.to_string()));
            }
            let vm = self.add_vm(name, socket, limits.clone())?;
            if let Some(rec) = self.record_mut(vm) {
                rec.configured = Some(limits);
            }
            return Ok(vm);
        };
        rec.socket = socket.to_string();
        rec.bucket = bucket;
        let id = rec.owner;
        if rec.configured.as_ref() != Some(&limits) {
            rec.configured = Some(limits.clone());
            self.space.set_limits(id, limits.clone())?;
            info!(
                "vm={name} event=limits quota={} range={}-{} source=command-line",
                limits.quota,
                limits.range.start(),
                limits.range.end()
            );
        } else if let Some(current) = self.space.limits(id).filter(|l| l.quota != limits.quota) {
            info!(
                "vm={name} event=limits quota={} source=state (set by pasidctl quota; the \
                 command line's {} is unchanged since the last start)",
                current.quota, limits.quota
            );
        }
        Ok(VmId(id))
    }

    /// Warns about VMs the state holds PASIDs for but the command line no
    /// longer names: their PASIDs stay reserved until released.
    pub fn warn_unconfigured(&self) {
        for (name, rec) in &self.vms {
            if rec.socket != UNCONFIGURED {
                continue;
            }
            let held = self.space.usage(rec.owner).map_or(0, |u| u.held);
            if held > 0 {
                warn!(
                    "vm={name} event=unconfigured held={held} the state holds PASIDs for a VM \
                     the command line does not name; they stay reserved until \
                     `pasidctl release --vm {name}`"
                );
            }
        }
    }

    /// Everything durable, as a snapshot holds it.
    pub fn image(&self) -> StateImage {
        let owners = (0..self.space.owner_index_end())
            .map(|index| {
                let Some(id) = self.space.owner_at(index) else {
                    return OwnerImage::vacant();
                };
                let name = self.space.owner_name(id).unwrap_or_default().to_string();
                let rec = self.vms.get(&name);
                OwnerImage {
                    kind: self.space.owner_kind(id).unwrap_or(OwnerKind::Host),
                    limits: self.space.limits(id).unwrap_or(OwnerLimits {
                        quota: 0,
                        range: 1..=1,
                    }),
                    configured: rec.and_then(|r| r.configured.clone()),
                    window: rec.map(|r| r.window.clone()).unwrap_or_default(),
                    holdings: self.space.holdings(id),
                    peer: rec.and_then(|r| r.qemu),
                    name,
                }
            })
            .collect();
        let reservations = self
            .vms
            .values()
            .filter_map(|rec| {
                let reserved = rec.reservation?;
                let mut pasids = self.space.held_by(rec.owner);
                pasids.sort_unstable();
                Some(Reservation {
                    owner: rec.owner.as_u32(),
                    deadline_ms: reserved.deadline_ms(),
                    pasids,
                    device: rec.device.clone(),
                })
            })
            .collect();
        StateImage {
            pasid_bits: self.space.pasid_bits(),
            space_id: self.space_id,
            owners,
            reservations,
        }
    }

    /// From now on every change is recorded in `log` (`--state-dir`).
    pub fn attach_change_log(&mut self, log: Arc<dyn ChangeLog>) {
        self.journal = Some(log);
    }
}
