// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the registry shows: PASID and VM listings, host figures, and the
//! figures the metrics read at scrape time.

use std::time::{Duration, Instant};

use super::{HostStats, Registry, RegistryError, VmFamilies, VmTally, VmView};
use crate::figures::Histogram;
use crate::pasid_space::PasidInfo;

impl Registry {
    /// Durable-state figures for the metrics; `None` without `--state-dir`.
    pub fn journal_stats(&self) -> Option<crate::figures::JournalStats> {
        self.journal.as_ref().map(|j| j.stats())
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
                    holdover: rec.holdover,
                    qemu_pid: rec.qemu.map(|q| q.pid),
                    resumed_at: rec.resumed_at,
                    reserved_for: rec
                        .reservation
                        .map(|r| r.until.saturating_duration_since(Instant::now())),
                    last_probe: rec.last_probe,
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
