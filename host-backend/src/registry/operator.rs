// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Operator commands (`pasidctl` over the control socket): quotas, host
//! holders' references, and releasing a VM.

use std::ops::RangeInclusive;

use log::info;

use super::record::Record;
use super::{valid_name, ReclaimReason, Registry, RegistryError, UNCONFIGURED};
use crate::logfmt::Value;
use crate::pasid_space::{OwnerId, OwnerKind, OwnerLimits, Pasid};

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
