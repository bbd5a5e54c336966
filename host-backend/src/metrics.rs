// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Observability: the Prometheus text exposition format (version 0.0.4)
//! and the histogram's rendering; [`http`] is the optional loopback HTTP
//! listener (`--metrics-listen`), [`process`] the standard `process_*`
//! metrics. What is rendered comes from `scrape` (the registry's figures
//! at scrape time): this module knows nothing of the registry.
//!
//! The same text is served on the control socket (`pasidctl metrics`) and,
//! when asked for, at `http://ADDR/metrics`. The daemon's own metrics are
//! named `vpasid_*`; docs/operations.md lists them.

mod http;
mod process;

pub use http::{
    bind_listener, serve_metrics, spawn_listener, Render, HTTP_TIMEOUT, MAX_HTTP_CLIENTS,
};

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use clap::Args;

pub use crate::figures::{op_label, status_label, Histogram, JournalStats, LATENCY_BUCKETS_NS};
pub use process::{render as render_process, sample as sample_process, ProcessStats};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// Writes Prometheus text: HELP and TYPE lines, then samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }

    /// A histogram family: `_bucket` per bound and +Inf, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (le, n) in LATENCY_BUCKETS_NS.iter().zip(&h.cumulative()) {
            self.sample(&bucket, &[("le", &seconds_label(*le))], n);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count());
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds());
        self.sample(&format!("{name}_count"), &[], h.count());
    }

    /// The HELP and TYPE lines of a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use assert_matches::assert_matches;

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
}
