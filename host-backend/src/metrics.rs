// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Observability: the daemon's figures in the Prometheus text exposition
//! format (version 0.0.4), the request latency histogram, rate-limited log
//! lines for rejected requests; [`http`] is the optional loopback HTTP
//! listener (`--metrics-listen`), [`process`] the standard `process_*`
//! metrics.
//!
//! The same text is served on the control socket (`pasidctl metrics`) and,
//! when asked for, at `http://ADDR/metrics`. The daemon's own metrics are
//! named `vpasid_*`; docs/operations.md lists them. They are read under the
//! registry lock, so one scrape is one consistent snapshot.

mod http;
mod process;

pub use http::{bind_listener, serve_metrics, spawn_listener, HTTP_TIMEOUT, MAX_HTTP_CLIENTS};

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use log::warn;
use pasid_protocol::{Opcode, Status};

use crate::rate_limit::LogThrottle;
use crate::registry::{ReclaimReason, Registry};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// Errors of the metrics listener and its command line.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `--metrics-listen` is not `IP:PORT`.
    #[error("invalid --metrics-listen {0:?}: expected IP:PORT such as 127.0.0.1:9860")]
    InvalidListen(String),
    /// `--metrics-listen` names an address other hosts could reach.
    #[error(
        "--metrics-listen {0} is not a loopback address: metrics are served on \
         127.0.0.0/8 or [::1] only (put a proxy in front to export them)"
    )]
    NotLoopback(SocketAddr),
    /// The listening socket could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The listener thread could not be started.
    #[error("cannot start serving metrics: {0}")]
    Thread(std::io::Error),
}

/// Command-line options of the metrics listener, flattened into the
/// daemon's arguments.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsArgs {
    /// Also serve the Prometheus metrics over HTTP at ADDR:PORT/metrics.
    /// Only loopback addresses (127.0.0.0/8, [::1]) are accepted. The same
    /// text is always available as `pasidctl metrics`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
}

impl MetricsArgs {
    /// The validated listen address, if one was given.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, MetricsError> {
        self.metrics_listen
            .as_deref()
            .map(parse_listen_addr)
            .transpose()
    }
}

/// Parses `IP:PORT` and insists on a loopback IP.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, MetricsError> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| MetricsError::InvalidListen(s.to_string()))?;
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    Ok(addr)
}

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

/// Every reclaim reason, in the order the metrics list them.
const RECLAIM_REASONS: [ReclaimReason; 3] = [
    ReclaimReason::DriverReset,
    ReclaimReason::Disconnect,
    ReclaimReason::Operator,
];

/// Per-VM figures kept only for metrics (the rest are the VM's
/// [`crate::registry::VmCounters`]).
#[derive(Debug, Default)]
pub struct VmMetrics {
    /// Answered requests by (opcode label, status label).
    results: BTreeMap<(&'static str, &'static str), u64>,
    /// Reclaims by reason: (times, references released).
    reclaims: BTreeMap<&'static str, (u64, u64)>,
    /// Budget of `event=rejected` lines, so that a guest looping on a
    /// failing ALLOC cannot flood the host's log.
    rejections: LogThrottle,
}

impl VmMetrics {
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

/// Writes Prometheus text: HELP and TYPE lines, then samples.
struct Exposition {
    out: String,
}

impl Exposition {
    /// A histogram family: `_bucket` per bound and +Inf, `_sum`, `_count`.
    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (le, n) in LATENCY_BUCKETS_NS.iter().zip(&h.cumulative()) {
            self.sample(&bucket, &[("le", &seconds_label(*le))], n);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count());
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds());
        self.sample(&format!("{name}_count"), &[], h.count());
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value as the text format requires.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A bucket bound in seconds, exactly (1_000 ns -> "0.000001").
fn seconds_label(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The registry's figures and the process's in the Prometheus text format.
pub fn render(reg: &Registry) -> String {
    render_with(reg, &process::sample())
}

/// [`render`] with process figures sampled by the caller.
fn render_with(reg: &Registry, proc_stats: &process::ProcessStats) -> String {
    let stats = reg.stats();
    let vms = reg.vms();
    let mut e = Exposition { out: String::new() };

    e.family(
        "vpasid_build_info",
        "gauge",
        "Version of the running vhost-user-pasid; always 1.",
    );
    e.sample(
        "vpasid_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    // Not `..._bits`: Prometheus reads that as a unit and wants bytes.
    e.family(
        "vpasid_space_pasid_width",
        "gauge",
        "Width of the host PASID space: PASIDs lie below 2^width (--pasid-bits).",
    );
    e.sample("vpasid_space_pasid_width", &[], stats.space.pasid_bits);
    e.family(
        "vpasid_space_capacity",
        "gauge",
        "PASIDs the space can hand out: 2^bits minus the reserved ones.",
    );
    e.sample("vpasid_space_capacity", &[], stats.space.capacity);
    e.family(
        "vpasid_space_reserved",
        "gauge",
        "Reserved PASIDs (PASID 0 and --reserve ranges).",
    );
    e.sample("vpasid_space_reserved", &[], stats.space.reserved);
    e.family(
        "vpasid_outstanding_pasids",
        "gauge",
        "Allocated PASIDs in the whole space, whoever holds them.",
    );
    e.sample("vpasid_outstanding_pasids", &[], stats.space.allocated);
    e.family(
        "vpasid_vms",
        "gauge",
        "Configured VM slots (one vhost-user socket each).",
    );
    e.sample("vpasid_vms", &[], stats.vms);
    e.family(
        "vpasid_connected_vms",
        "gauge",
        "VM slots with a frontend (QEMU) connected.",
    );
    e.sample("vpasid_connected_vms", &[], stats.connected_vms);

    e.family(
        "vpasid_vm_connected",
        "gauge",
        "1 while the VM's frontend is connected, else 0.",
    );
    for vm in &vms {
        e.sample(
            "vpasid_vm_connected",
            &[("vm", &vm.name)],
            u8::from(vm.connected),
        );
    }
    e.family(
        "vpasid_vm_outstanding_pasids",
        "gauge",
        "PASIDs the VM holds references on.",
    );
    for vm in &vms {
        e.sample("vpasid_vm_outstanding_pasids", &[("vm", &vm.name)], vm.held);
    }
    e.family(
        "vpasid_vm_quota",
        "gauge",
        "Most PASIDs the VM may hold at once.",
    );
    for vm in &vms {
        e.sample("vpasid_vm_quota", &[("vm", &vm.name)], vm.quota);
    }
    e.family(
        "vpasid_vm_connects_total",
        "counter",
        "Times a frontend connected to the VM's socket.",
    );
    for vm in &vms {
        e.sample(
            "vpasid_vm_connects_total",
            &[("vm", &vm.name)],
            vm.counters.connects,
        );
    }

    let per_vm: Vec<(&str, &VmMetrics)> = reg.vm_metrics().collect();
    for (op, name, help) in [
        (
            Opcode::Alloc,
            "vpasid_allocations_total",
            "ALLOC requests answered, by status (status!=\"ok\" are failures).",
        ),
        (
            Opcode::Free,
            "vpasid_frees_total",
            "FREE requests answered, by status (status!=\"ok\" are failures).",
        ),
        (
            Opcode::Reset,
            "vpasid_resets_total",
            "RESET requests answered, by status.",
        ),
    ] {
        e.family(name, "counter", help);
        for (vm, m) in &per_vm {
            for status in Status::ALL {
                e.sample(
                    name,
                    &[("vm", vm), ("status", status_label(status))],
                    m.results(op, status),
                );
            }
        }
    }
    e.family(
        "vpasid_quota_rejections_total",
        "counter",
        "ALLOC requests refused because the VM was at its quota.",
    );
    for (vm, m) in &per_vm {
        e.sample(
            "vpasid_quota_rejections_total",
            &[("vm", vm)],
            m.results(Opcode::Alloc, Status::QuotaExceeded),
        );
    }
    e.family(
        "vpasid_malformed_chains_total",
        "counter",
        "Descriptor chains that were malformed (answered INVALID or returned unused).",
    );
    for vm in &vms {
        e.sample(
            "vpasid_malformed_chains_total",
            &[("vm", &vm.name)],
            vm.counters.malformed,
        );
    }
    e.family(
        "vpasid_reclaims_total",
        "counter",
        "Times all of a VM's references were dropped, by reason \
         (driver_reset, disconnect, operator).",
    );
    for (vm, m) in &per_vm {
        for reason in RECLAIM_REASONS {
            e.sample(
                "vpasid_reclaims_total",
                &[("vm", vm), ("reason", reason.label())],
                m.reclaims(reason).0,
            );
        }
    }
    e.family(
        "vpasid_reclaimed_references_total",
        "counter",
        "PASID references released by reclaims, by reason.",
    );
    for (vm, m) in &per_vm {
        for reason in RECLAIM_REASONS {
            e.sample(
                "vpasid_reclaimed_references_total",
                &[("vm", vm), ("reason", reason.label())],
                m.reclaims(reason).1,
            );
        }
    }

    e.histogram(
        "vpasid_request_duration_seconds",
        "Time the daemon took to handle one descriptor chain, from reading \
         the request to writing the response.",
        reg.latency(),
    );

    if let Some(j) = reg.journal_stats() {
        e.family(
            "vpasid_state_frames_total",
            "counter",
            "Journal frames written and synced (--state-dir): one per group \
             commit, however many VMs' requests it carries.",
        );
        e.sample("vpasid_state_frames_total", &[], j.frames);
        e.family(
            "vpasid_state_records_total",
            "counter",
            "Journal records appended (one per queue drain or operator change).",
        );
        e.sample("vpasid_state_records_total", &[], j.records);
        e.family(
            "vpasid_state_compactions_total",
            "counter",
            "Times the journal was rewritten as a snapshot (--journal-limit).",
        );
        e.sample("vpasid_state_compactions_total", &[], j.compactions);
        e.family(
            "vpasid_state_journal_bytes",
            "gauge",
            "Current size of the journal file.",
        );
        e.sample("vpasid_state_journal_bytes", &[], j.journal_bytes);
        e.histogram(
            "vpasid_state_sync_duration_seconds",
            "Time to write and fdatasync one journal frame; answers wait for it.",
            &j.sync,
        );
    }
    process::render(&mut e, proc_stats);
    e.out
}

/// Renders under the lock; a poisoned lock still holds readable figures.
/// /proc is read before the lock is taken, so a scrape holds up VM
/// requests no longer than rendering the registry's figures takes.
pub fn render_shared(registry: &Mutex<Registry>) -> String {
    let proc_stats = process::sample();
    render_with(
        &registry.lock().unwrap_or_else(|p| p.into_inner()),
        &proc_stats,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
    use crate::rate_limit::{WARN_BURST, WARN_WINDOW};
    use assert_matches::assert_matches;
    use pasid_protocol::Request;

    fn registry() -> (Registry, crate::registry::VmId) {
        let space = PasidSpace::new(SpaceConfig {
            pasid_bits: 8,
            reserved: vec![1..=15],
        })
        .unwrap();
        let mut reg = Registry::new(space, 3);
        let vm = reg
            .add_vm(
                "web",
                "/run/web.sock",
                OwnerLimits {
                    quota: 2,
                    range: 1..=255,
                },
            )
            .unwrap();
        (reg, vm)
    }

    /// The sample lines of `text` as (name{labels}, value).
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn listen_address_must_be_loopback() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:9860").unwrap(),
            "127.0.0.1:9860".parse().unwrap()
        );
        assert!(parse_listen_addr("[::1]:9860").is_ok());
        assert!(parse_listen_addr("127.1.2.3:1").is_ok());
        assert_matches!(
            parse_listen_addr("0.0.0.0:9860"),
            Err(MetricsError::NotLoopback(a)) if a.port() == 9860
        );
        assert_matches!(
            parse_listen_addr("192.168.1.2:80"),
            Err(MetricsError::NotLoopback(_))
        );
        assert_matches!(
            parse_listen_addr("localhost:9860"),
            Err(MetricsError::InvalidListen(s)) if s == "localhost:9860"
        );
        assert_matches!(
            parse_listen_addr("127.0.0.1"),
            Err(MetricsError::InvalidListen(_))
        );
        let args = MetricsArgs::default();
        assert_matches!(args.listen_addr(), Ok(None));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_nanos(500));
        h.observe(Duration::from_nanos(1_000));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_secs(5));
        let c = h.cumulative();
        assert_eq!(c.len(), LATENCY_BUCKETS_NS.len() + 1);
        assert_eq!(&c[..4], &[2, 2, 3, 3]);
        assert_eq!(c[LATENCY_BUCKETS_NS.len() - 1], 3);
        assert_eq!(c[LATENCY_BUCKETS_NS.len()], 4);
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 5.0000045).abs() < 1e-9);
    }

    #[test]
    fn bucket_bounds_print_exactly() {
        assert_eq!(seconds_label(1_000), "0.000001");
        assert_eq!(seconds_label(2_500), "0.0000025");
        assert_eq!(seconds_label(100_000_000), "0.1");
        assert_eq!(seconds_label(1_000_000_000), "1");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn render_counts_requests_reclaims_and_latency() {
        let (mut reg, vm) = registry();
        reg.set_connected(vm, true);
        for tag in 0..3 {
            reg.handle(
                vm,
                Request::Alloc {
                    tag,
                    min: 1,
                    max: 255,
                },
            );
        }
        reg.handle(vm, Request::Free { tag: 9, pasid: 200 });
        reg.count_malformed(vm);
        reg.observe_latency(Duration::from_micros(2));
        reg.observe_latency(Duration::from_micros(20));
        reg.release_vm("web").unwrap();
        let text = render(&reg);
        let s = samples(&text);
        let get = |k: &str| s.get(k).map(String::as_str).unwrap_or("missing");
        assert_eq!(get("vpasid_space_capacity"), "240");
        assert_eq!(get("vpasid_space_reserved"), "16");
        assert_eq!(get("vpasid_outstanding_pasids"), "0");
        assert_eq!(get("vpasid_connected_vms"), "1");
        assert_eq!(get(r#"vpasid_vm_connected{vm="web"}"#), "1");
        assert_eq!(get(r#"vpasid_vm_quota{vm="web"}"#), "2");
        assert_eq!(
            get(r#"vpasid_allocations_total{vm="web",status="ok"}"#),
            "2"
        );
        assert_eq!(
            get(r#"vpasid_allocations_total{vm="web",status="quota_exceeded"}"#),
            "1"
        );
        assert_eq!(
            get(r#"vpasid_frees_total{vm="web",status="not_found"}"#),
            "1"
        );
        assert_eq!(get(r#"vpasid_quota_rejections_total{vm="web"}"#), "1");
        assert_eq!(get(r#"vpasid_malformed_chains_total{vm="web"}"#), "1");
        assert_eq!(
            get(r#"vpasid_reclaims_total{vm="web",reason="operator"}"#),
            "1"
        );
        assert_eq!(
            get(r#"vpasid_reclaimed_references_total{vm="web",reason="operator"}"#),
            "2"
        );
        assert_eq!(
            get(r#"vpasid_request_duration_seconds_bucket{le="0.0000025"}"#),
            "1"
        );
        assert_eq!(
            get(r#"vpasid_request_duration_seconds_bucket{le="0.000025"}"#),
            "2"
        );
        assert_eq!(
            get(r#"vpasid_request_duration_seconds_bucket{le="+Inf"}"#),
            "2"
        );
        assert_eq!(get("vpasid_request_duration_seconds_count"), "2");
        assert_eq!(get("vpasid_request_duration_seconds_sum"), "0.000022");
        // Every sample belongs to a family announced by HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(text.contains(&format!("# HELP {family} ")), "{line}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }

    #[test]
    fn rejection_log_is_rate_limited() {
        let mut log = VmMetrics::default();
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
