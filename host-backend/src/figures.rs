// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the daemon measures, below the registry and durable state: the
//! duration histogram they observe into, the durable state's figures, and
//! the label each opcode and status has in metrics and log lines. The
//! histogram is a `prometheus-client` metric, observed where the event
//! happens and encoded by `scrape`: neither side imports the other.

use std::time::Duration;

use pasid_protocol::{Opcode, Status};
use prometheus_client::metrics::histogram;

/// Upper bounds of the latency histogram's buckets, in seconds. One
/// request takes a few microseconds; the top buckets catch lock contention
/// and a stalled host.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.001,
    0.01,
    0.1,
    1.0,
];

/// A histogram of durations over [`LATENCY_BUCKETS_SECONDS`]. Clones share
/// one set of buckets: a clone handed to the metrics is the live histogram.
#[derive(Clone, Debug)]
pub struct Histogram(histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(histogram::Histogram::new(LATENCY_BUCKETS_SECONDS))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    /// The metric itself, for registering with a metrics registry.
    pub fn metric(&self) -> histogram::Histogram {
        self.0.clone()
    }
}

/// Durable-state figures for the metrics (`vpasid_state_*`), counted by
/// the journal as it writes.
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
        Opcode::Reconcile => "reconcile",
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
