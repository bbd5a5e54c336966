// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Observability: metrics encoded by `prometheus-client` in the OpenMetrics
//! 1.0 text format; [`http`] is the optional loopback HTTP listener
//! (`--metrics-listen`), [`process`] the standard `process_*` metrics. What
//! is encoded comes from `scrape` (the registry's metric families and its
//! figures at scrape time): this module knows nothing of the registry.
//!
//! The same text is served on the control socket (`pasidctl metrics`) and,
//! when asked for, at `http://ADDR/metrics`. The daemon's own metrics are
//! named `vpasid_*`; docs/operations.md lists them.

mod http;
mod process;

pub use http::{
    bind_listener, serve_metrics, spawn_listener, Render, HTTP_TIMEOUT, MAX_HTTP_CLIENTS,
};

use std::fmt;
use std::net::SocketAddr;

use clap::Args;
use log::warn;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

pub use process::{sample as sample_process, ProcessStats};

/// Content type of the OpenMetrics 1.0 text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// The metrics of `registry` in the OpenMetrics text format, `# EOF` last.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; only a metric's own encoding could,
    // and then the text lacks its `# EOF`, so a scraper rejects it whole
    // rather than store part of it.
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        warn!("metrics: encoding failed; the scrape is incomplete");
    }
    text
}

/// Encodes, for a [`prometheus_client::collector::Collector`], one family
/// read at scrape time: its HELP, TYPE (and UNIT) lines, then its samples.
/// As for a family registered with a [`Registry`], `name` lacks the unit
/// and type suffixes (`_seconds`, `_total`) and `help` its full stop.
pub fn encode_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let help = format!("{help}.");
    let samples = encoder.encode_descriptor(name, &help, unit, metric.metric_type())?;
    metric.encode(samples)
}

/// Series read at scrape time, one per label set: a family for
/// [`encode_family`].
#[derive(Debug)]
pub struct ConstFamily<L, M>(pub Vec<(L, M)>);

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for ConstFamily<L, M> {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

#[cfg(test)]
mod tests {
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
}
