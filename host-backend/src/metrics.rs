// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Observability: metrics encoded by `prometheus-client` in the OpenMetrics
//! 1.0 text format (`text`); [`http`] is the optional loopback HTTP
//! listener (`--metrics-listen`), [`process`] the standard `process_*`
//! metrics. What is encoded comes from `scrape` (the registry's metric
//! families and its figures at scrape time): this module knows nothing of
//! the registry.
//!
//! The same text is served on the control socket (`pasidctl metrics`) and,
//! when asked for, at `http://ADDR/metrics`. The daemon's own metrics are
//! named `vpasid_*`; docs/operations.md lists them.

mod http;
mod process;
mod text;

pub use http::{
    bind_listener, serve_metrics, spawn_listener, MetricsError, Render, HTTP_TIMEOUT,
    MAX_HTTP_CLIENTS,
};

use std::net::SocketAddr;

use clap::Args;

pub use process::{sample as sample_process, ProcessStats};
pub use text::{encode, encode_family, ConstFamily, CONTENT_TYPE};

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
