// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The OpenMetrics 1.0 text format: its content type, a registry encoded
//! whole, and the encoder of one family read at scrape time.

use std::fmt;

use log::warn;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Content type of the OpenMetrics 1.0 text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
