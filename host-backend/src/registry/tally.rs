// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! One VM's counters, each event counted once: `pasidctl vms` and the
//! metrics both read them from here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use log::warn;
use pasid_protocol::{Opcode, Status};

use super::{ReclaimReason, VmCounters};
use crate::figures::{op_label, status_label};
use crate::rate_limit::LogThrottle;

/// What happened to one VM slot, counted as it happened.
#[derive(Debug, Default)]
pub struct VmTally {
    /// Answered requests by (opcode label, status label).
    results: BTreeMap<(&'static str, &'static str), u64>,
    /// Reclaims by reason label: (times, references released).
    reclaims: BTreeMap<&'static str, (u64, u64)>,
    /// Chains that were malformed (answered INVALID or returned unused).
    pub(super) malformed: u64,
    /// Times the slot was connected.
    pub(super) connects: u64,
    /// Requests re-delivered after a restart and answered from the record
    /// of their first answer.
    pub(super) replayed: u64,
    /// Budget of `event=rejected` lines, so that a guest looping on a
    /// failing ALLOC cannot flood the host's log.
    rejections: LogThrottle,
}

impl VmTally {
    /// Counts one answered request.
    pub fn count_result(&mut self, op: Opcode, status: Status) {
        *self
            .results
            .entry((op_label(op), status_label(status)))
            .or_default() += 1;
    }

    /// Requests of `op` answered with `status`.
    pub fn results(&self, op: Opcode, status: Status) -> u64 {
        self.results
            .get(&(op_label(op), status_label(status)))
            .copied()
            .unwrap_or(0)
    }

    /// Counts one reclaim that released `references`.
    pub fn count_reclaim(&mut self, reason: ReclaimReason, references: u64) {
        let e = self.reclaims.entry(reason.label()).or_default();
        e.0 += 1;
        e.1 += references;
    }

    /// (times, references released) for `reason`.
    pub fn reclaims(&self, reason: ReclaimReason) -> (u64, u64) {
        self.reclaims
            .get(reason.label())
            .copied()
            .unwrap_or_default()
    }

    /// Chains that were malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Times the slot was connected.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The counters as `pasidctl vms` shows them: requests by opcode and
    /// by status (those counted at least once), and references reclaimed
    /// for any reason.
    pub fn counters(&self) -> VmCounters {
        let mut counters = VmCounters {
            malformed: self.malformed,
            connects: self.connects,
            replayed: self.replayed,
            reclaimed: self.reclaims.values().map(|r| r.1).sum(),
            ..VmCounters::default()
        };
        for op in Opcode::ALL {
            for status in Status::ALL {
                let n = self.results(op, status);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{WARN_BURST, WARN_WINDOW};

    #[test]
    fn rejection_log_is_rate_limited() {
        let mut log = VmTally::default();
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
}
