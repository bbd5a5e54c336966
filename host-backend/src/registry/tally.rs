// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! One VM's counters, each event counted once, where it happens: every
//! counter is a series of a metric family in [`VmFamilies`], so the metrics
//! encode the very counter the event incremented, and `pasidctl vms` reads
//! it too. The families know no metric names: `scrape` registers them.

use std::fmt;
use std::time::Instant;

use log::warn;
use pasid_protocol::{Opcode, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::view::{ReclaimReason, VmCounters};
use crate::figures::{op_label, status_label};
use crate::rate_limit::LogThrottle;

/// Every reclaim reason, in the order the metrics list them.
const RECLAIM_REASONS: [ReclaimReason; 6] = [
    ReclaimReason::DriverReset,
    ReclaimReason::Disconnect,
    ReclaimReason::Operator,
    ReclaimReason::HoldoverExpired,
    ReclaimReason::QemuExited,
    ReclaimReason::ReservationExpired,
];

/// Labels of a series about one VM.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    /// The VM slot's name.
    pub vm: String,
}

/// Labels of a VM's answers with one status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmStatusLabels {
    /// The VM slot's name.
    pub vm: String,
    /// [`status_label`] of the answer.
    pub status: &'static str,
}

/// Labels of a VM's reclaims for one reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmReasonLabels {
    /// The VM slot's name.
    pub vm: String,
    /// [`ReclaimReason::label`].
    pub reason: &'static str,
}

/// A counter family with one series per VM and label value.
pub type CounterFamily<L> = Family<L, Counter>;

/// The metric families every VM's counters belong to. Clones share the
/// families. A VM's series are made with its [`VmTally`] (every status and
/// reason, so a count of 0 is listed too) and removed with it.
#[derive(Clone, Debug, Default)]
pub struct VmFamilies {
    /// Answered requests of each opcode ([`Opcode::ALL`] order), by status.
    requests: [CounterFamily<VmStatusLabels>; Opcode::ALL.len()],
    /// Malformed chains.
    malformed: CounterFamily<VmLabels>,
    /// Frontend connections.
    connects: CounterFamily<VmLabels>,
    /// Reclaims, by reason.
    reclaims: CounterFamily<VmReasonLabels>,
    /// References released by reclaims, by reason.
    reclaimed_references: CounterFamily<VmReasonLabels>,
    /// Reconciles completed (a resumed driver's RECONCILE with LAST).
    resumes: CounterFamily<VmLabels>,
    /// PASIDs a RECONCILE claimed that someone else held.
    reconcile_conflicts: CounterFamily<VmLabels>,
    /// Disconnects after which the VM's PASIDs were held over.
    holdovers: CounterFamily<VmLabels>,
    /// Reservations made (`pasidctl reserve`).
    reservations: CounterFamily<VmLabels>,
}

impl VmFamilies {
    /// Answers to requests of `op`, by VM and status.
    pub fn requests(&self, op: Opcode) -> Option<&CounterFamily<VmStatusLabels>> {
        self.requests.get(position(&Opcode::ALL, op)?)
    }

    /// Malformed chains, by VM.
    pub fn malformed(&self) -> &CounterFamily<VmLabels> {
        &self.malformed
    }

    /// Frontend connections, by VM.
    pub fn connects(&self) -> &CounterFamily<VmLabels> {
        &self.connects
    }

    /// Reclaims, by VM and reason.
    pub fn reclaims(&self) -> &CounterFamily<VmReasonLabels> {
        &self.reclaims
    }

    /// References released by reclaims, by VM and reason.
    pub fn reclaimed_references(&self) -> &CounterFamily<VmReasonLabels> {
        &self.reclaimed_references
    }

    /// Reconciles completed, by VM.
    pub fn resumes(&self) -> &CounterFamily<VmLabels> {
        &self.resumes
    }

    /// Reconcile conflicts, by VM.
    pub fn reconcile_conflicts(&self) -> &CounterFamily<VmLabels> {
        &self.reconcile_conflicts
    }

    /// Hold-overs begun, by VM.
    pub fn holdovers(&self) -> &CounterFamily<VmLabels> {
        &self.holdovers
    }

    /// Reservations made, by VM.
    pub fn reservations(&self) -> &CounterFamily<VmLabels> {
        &self.reservations
    }
}

/// Where `item` is in `all`.
fn position<T: PartialEq>(all: &[T], item: T) -> Option<usize> {
    all.iter().position(|x| *x == item)
}

/// What happened to one VM slot, counted as it happened.
#[derive(Debug)]
pub struct VmTally {
    /// The families its series are in, and its name in their labels.
    families: VmFamilies,
    vm: String,
    /// Answered requests, by opcode ([`Opcode::ALL`] order), then by
    /// status ([`Status::ALL`] order).
    results: [[Counter; Status::ALL.len()]; Opcode::ALL.len()],
    /// Reclaims by reason ([`RECLAIM_REASONS`] order): (times, references
    /// released).
    reclaims: [(Counter, Counter); RECLAIM_REASONS.len()],
    /// Chains that were malformed (answered INVALID or returned unused).
    malformed: Counter,
    /// Times the slot was connected.
    connects: Counter,
    /// Reconciles completed.
    resumes: Counter,
    /// PASIDs a RECONCILE claimed that someone else held.
    reconcile_conflicts: Counter,
    /// Disconnects after which its PASIDs were held over.
    holdovers: Counter,
    /// Reservations made for it.
    reservations: Counter,
    /// Requests re-delivered after a restart and answered from the record
    /// of their first answer (`pasidctl vms` only).
    pub(super) replayed: u64,
    /// Budget of `event=rejected` lines, so that a guest looping on a
    /// failing ALLOC cannot flood the host's log.
    rejections: LogThrottle,
}

impl VmTally {
    /// The counters of VM `vm`, made as series of `families`. One tally per
    /// VM name at a time: dropping it removes the series.
    pub fn new(families: &VmFamilies, vm: &str) -> Self {
        let labels = VmLabels { vm: vm.to_string() };
        let status = |status| VmStatusLabels {
            vm: vm.to_string(),
            status: status_label(status),
        };
        let reason = |reason: ReclaimReason| VmReasonLabels {
            vm: vm.to_string(),
            reason: reason.label(),
        };
        VmTally {
            results: families
                .requests
                .each_ref()
                .map(|family| Status::ALL.map(|s| family.get_or_create_owned(&status(s)))),
            reclaims: RECLAIM_REASONS.map(|r| {
                (
                    families.reclaims.get_or_create_owned(&reason(r)),
                    families
                        .reclaimed_references
                        .get_or_create_owned(&reason(r)),
                )
            }),
            malformed: families.malformed.get_or_create_owned(&labels),
            connects: families.connects.get_or_create_owned(&labels),
            resumes: families.resumes.get_or_create_owned(&labels),
            reconcile_conflicts: families.reconcile_conflicts.get_or_create_owned(&labels),
            holdovers: families.holdovers.get_or_create_owned(&labels),
            reservations: families.reservations.get_or_create_owned(&labels),
            families: families.clone(),
            vm: labels.vm,
            replayed: 0,
            rejections: LogThrottle::default(),
        }
    }

    fn result(&self, op: Opcode, status: Status) -> Option<&Counter> {
        self.results
            .get(position(&Opcode::ALL, op)?)?
            .get(position(&Status::ALL, status)?)
    }

    /// Counts one answered request.
    pub fn count_result(&self, op: Opcode, status: Status) {
        if let Some(counter) = self.result(op, status) {
            counter.inc();
        }
    }

    /// Requests of `op` answered with `status`.
    pub fn results(&self, op: Opcode, status: Status) -> u64 {
        self.result(op, status).map_or(0, Counter::get)
    }

    /// Counts one reclaim that released `references`.
    pub fn count_reclaim(&self, reason: ReclaimReason, references: u64) {
        if let Some((times, released)) =
            position(&RECLAIM_REASONS, reason).and_then(|i| self.reclaims.get(i))
        {
            times.inc();
            released.inc_by(references);
        }
    }

    /// (times, references released) for `reason`.
    pub fn reclaims(&self, reason: ReclaimReason) -> (u64, u64) {
        position(&RECLAIM_REASONS, reason)
            .and_then(|i| self.reclaims.get(i))
            .map_or((0, 0), |(times, released)| (times.get(), released.get()))
    }

    /// Counts a malformed chain.
    pub fn count_malformed(&self) {
        self.malformed.inc();
    }

    /// Chains that were malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed.get()
    }

    /// Counts a frontend connecting.
    pub fn count_connect(&self) {
        self.connects.inc();
    }

    /// Times the slot was connected.
    pub fn connects(&self) -> u64 {
        self.connects.get()
    }

    /// Counts a completed reconcile.
    pub fn count_resume(&self) {
        self.resumes.inc();
    }

    /// Counts a hold-over begun.
    pub fn count_holdover(&self) {
        self.holdovers.inc();
    }

    /// Counts a reservation made.
    pub fn count_reservation(&self) {
        self.reservations.inc();
    }

    /// Counts PASIDs a RECONCILE found held by someone else.
    pub fn count_conflicts(&self, conflicts: u64) {
        self.reconcile_conflicts.inc_by(conflicts);
    }

    /// The counters as `pasidctl vms` shows them: requests by opcode and
    /// by status (those counted at least once), and references reclaimed
    /// for any reason.
    pub fn counters(&self) -> VmCounters {
        let mut counters = VmCounters {
            malformed: self.malformed(),
            connects: self.connects(),
            resumes: self.resumes.get(),
            conflicts: self.reconcile_conflicts.get(),
            holdovers: self.holdovers.get(),
            reservations: self.reservations.get(),
            replayed: self.replayed,
            reclaimed: self
                .reclaims
                .iter()
                .map(|(_, released)| released.get())
                .sum(),
            ..VmCounters::default()
        };
        for (op, by_status) in Opcode::ALL.into_iter().zip(&self.results) {
            for (status, counter) in Status::ALL.into_iter().zip(by_status) {
                let n = counter.get();
                if n > 0 {
                    *counters.requests.entry(op.name()).or_default() += n;
                    *counters.statuses.entry(status.name()).or_default() += n;
                }
            }
        }
        counters
    }

    /// Logs a rejected request, within the VM's log budget.
    pub fn log_rejection(&mut self, vm: &str, op: Opcode, status: Status, detail: fmt::Arguments) {
        self.log_rejection_at(Instant::now(), vm, op, status, detail);
    }

    fn log_rejection_at(
        &mut self,
        now: Instant,
        vm: &str,
        op: Opcode,
        status: Status,
        detail: fmt::Arguments,
    ) {
        let summarise = |n| warn!("vm={vm} event=rejected suppressed={n} (rate limit)");
        if self.rejections.admit(now, summarise) {
            warn!(
                "vm={vm} event=rejected op={} status={} {detail}",
                op_label(op),
                status_label(status)
            );
        }
    }
}

impl Drop for VmTally {
    /// The VM is gone from the registry: its series leave the metrics.
    fn drop(&mut self) {
        let vm = &self.vm;
        for family in &self.families.requests {
            for status in Status::ALL {
                family.remove(&VmStatusLabels {
                    vm: vm.clone(),
                    status: status_label(status),
                });
            }
        }
        for reason in RECLAIM_REASONS {
            let labels = VmReasonLabels {
                vm: vm.clone(),
                reason: reason.label(),
            };
            self.families.reclaims.remove(&labels);
            self.families.reclaimed_references.remove(&labels);
        }
        let labels = VmLabels { vm: vm.clone() };
        self.families.malformed.remove(&labels);
        self.families.connects.remove(&labels);
        self.families.resumes.remove(&labels);
        self.families.reconcile_conflicts.remove(&labels);
        self.families.holdovers.remove(&labels);
        self.families.reservations.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeMetric;

    use super::*;
    use crate::rate_limit::{WARN_BURST, WARN_WINDOW};

    #[test]
    fn rejection_log_is_rate_limited() {
        let mut log = VmTally::new(&VmFamilies::default(), "web");
        let t0 = Instant::now();
        for _ in 0..25 {
            log.log_rejection_at(
                t0,
                "web",
                Opcode::Alloc,
                Status::QuotaExceeded,
                format_args!("x"),
            );
        }
        assert_eq!(log.rejections.emitted(), WARN_BURST);
        assert_eq!(log.rejections.suppressed(), 25 - u64::from(WARN_BURST));
        log.log_rejection_at(
            t0 + WARN_WINDOW,
            "web",
            Opcode::Free,
            Status::NotOwner,
            format_args!("y"),
        );
        assert_eq!(
            (log.rejections.emitted(), log.rejections.suppressed()),
            (1, 0)
        );
    }

    /// The tally's counters are the families' series: one count, seen by
    /// `pasidctl vms` and by the metrics alike, every status listed from
    /// the start, and gone with the tally.
    #[test]
    fn counters_are_the_families_series() {
        let families = VmFamilies::default();
        let web = VmTally::new(&families, "web");
        let db = VmTally::new(&families, "db");
        let series = |vm: &str, status| VmStatusLabels {
            vm: vm.to_string(),
            status: status_label(status),
        };
        let allocs = families.requests(Opcode::Alloc).unwrap();
        for status in Status::ALL {
            assert_eq!(allocs.get(&series("db", status)).map(|c| c.get()), Some(0));
        }
        web.count_result(Opcode::Alloc, Status::Ok);
        web.count_result(Opcode::Alloc, Status::Ok);
        web.count_result(Opcode::Free, Status::NotFound);
        web.count_reclaim(ReclaimReason::Operator, 5);
        web.count_malformed();
        assert_eq!(allocs.get_or_create(&series("web", Status::Ok)).get(), 2);
        assert_eq!(allocs.get_or_create(&series("db", Status::Ok)).get(), 0);
        let frees = families.requests(Opcode::Free).unwrap();
        assert_eq!(
            frees.get_or_create(&series("web", Status::NotFound)).get(),
            1
        );
        let operator = VmReasonLabels {
            vm: "web".into(),
            reason: "operator",
        };
        assert_eq!(families.reclaims().get_or_create(&operator).get(), 1);
        assert_eq!(
            families
                .reclaimed_references()
                .get_or_create(&operator)
                .get(),
            5
        );
        let web_labels = VmLabels { vm: "web".into() };
        assert_eq!(families.malformed().get_or_create(&web_labels).get(), 1);
        let c = web.counters();
        assert_eq!(c.requests.get("ALLOC"), Some(&2));
        assert_eq!(c.statuses.get("NOT_FOUND"), Some(&1));
        assert_eq!((c.reclaimed, c.malformed), (5, 1));
        assert_eq!(web.results(Opcode::Alloc, Status::Ok), 2);
        assert_eq!(web.reclaims(ReclaimReason::Operator), (1, 5));

        drop(web);
        for status in Status::ALL {
            assert!(allocs.get(&series("web", status)).is_none());
            assert!(allocs.get(&series("db", status)).is_some());
        }
        assert!(families.malformed().get(&web_labels).is_none());
        assert!(families.reclaims().get(&operator).is_none());
        let db_labels = VmLabels { vm: "db".into() };
        assert!(families.connects().get(&db_labels).is_some());
        drop(db);
        assert!(EncodeMetric::is_empty(allocs) && EncodeMetric::is_empty(families.connects()));
    }
}
