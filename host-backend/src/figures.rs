// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the daemon measures, as plain values: a duration histogram, the
//! durable state's figures, and the label each opcode and status has in
//! metrics and log lines. Counted where the events happen (registry,
//! state), rendered by `metrics` (through `scrape`): neither side imports
//! the other.

use std::time::Duration;

use pasid_protocol::{Opcode, Status};

/// Upper bounds of the latency histogram's buckets, in nanoseconds. One
/// request takes a few microseconds; the top buckets catch lock contention
/// and a stalled host.
pub const LATENCY_BUCKETS_NS: [u64; 12] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// A fixed-bucket histogram of durations ([`LATENCY_BUCKETS_NS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; LATENCY_BUCKETS_NS.len() + 1],
    /// Sum of all observations, in nanoseconds.
    sum_ns: u128,
    /// Number of observations.
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let ns = d.as_nanos();
        let slot = LATENCY_BUCKETS_NS
            .iter()
            .position(|&le| ns <= u128::from(le))
            .unwrap_or(LATENCY_BUCKETS_NS.len());
        if let Some(c) = self.counts.get_mut(slot) {
            *c += 1;
        }
        self.sum_ns += ns;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Cumulative counts: one per bound of [`LATENCY_BUCKETS_NS`], then +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        // Precision beyond f64's is of no use to a latency sum.
        #[allow(clippy::cast_precision_loss)]
        let s = self.sum_ns as f64 / 1e9;
        s
    }
}

/// Durable-state figures for the metrics (`vpasid_state_*`).
#[derive(Clone, Debug)]
pub struct JournalStats {
    /// Frames written and synced since start-up.
    pub frames: u64,
    /// Records appended since start-up.
    pub records: u64,
    /// Compactions since start-up.
    pub compactions: u64,
    /// Current journal size.
    pub journal_bytes: u64,
    /// Write-and-sync time per frame.
    pub sync: Histogram,
}

/// Metric label of an opcode.
pub fn op_label(op: Opcode) -> &'static str {
    match op {
        Opcode::Alloc => "alloc",
        Opcode::Free => "free",
        Opcode::Reset => "reset",
        Opcode::Grant => "grant",
        Opcode::Return => "return",
    }
}

/// Metric label of a status.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::NoSpace => "no_space",
        Status::QuotaExceeded => "quota_exceeded",
        Status::Invalid => "invalid",
        Status::NotOwner => "not_owner",
        Status::NotFound => "not_found",
        Status::Internal => "internal",
        Status::RateLimited => "rate_limited",
    }
}
