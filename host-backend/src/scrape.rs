// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! One scrape: the registry's metric families, which count events where
//! they happen, plus a collector over the figures read at scrape time
//! (space occupancy, per-VM state, durable state's and the process's),
//! named here and encoded by [`crate::metrics`]. The one place that knows
//! both the registry and the metric names, so that neither imports the
//! other. A scrape is encoded under the registry lock, so it is one
//! consistent snapshot.
//!
//! A new figure is one more line in a table below: [`REQUEST_FAMILIES`]
//! for the answers to a new opcode, [`HOST_GAUGES`] or [`VM_GAUGES`] for a
//! gauge (with the field it reads in `HostStats` or `VmView`).

use std::fmt;
use std::sync::Mutex;

use pasid_protocol::{Opcode, Status};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry as Metrics, Unit};

use crate::figures::JournalStats;
use crate::metrics::{encode, encode_family, sample_process, ConstFamily, ProcessStats};
use crate::registry::{HostStats, Registry, VmLabels, VmView};

/// The counter family of each opcode's answers, by VM and status: opcode,
/// name (without `_total`), help. An opcode missing here is still counted
/// (`pasidctl vms`), but not exposed.
const REQUEST_FAMILIES: &[(Opcode, &str, &str)] = &[
    (
        Opcode::Alloc,
        "vpasid_allocations",
        "ALLOC requests answered, by status (status!=\"ok\" are failures)",
    ),
    (
        Opcode::Free,
        "vpasid_frees",
        "FREE requests answered, by status (status!=\"ok\" are failures)",
    ),
    (
        Opcode::Reset,
        "vpasid_resets",
        "RESET requests answered, by status",
    ),
    (
        Opcode::Grant,
        "vpasid_grants",
        "GRANT (lease) requests answered, by status",
    ),
    (
        Opcode::Return,
        "vpasid_returns",
        "RETURN (lease) requests answered, by status",
    ),
    (
        Opcode::Reconcile,
        "vpasid_reconciles",
        "RECONCILE (resume) requests answered, by status",
    ),
];

/// A gauge read at scrape time: name, help, value.
type Gauge<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Whole-host gauges.
const HOST_GAUGES: &[Gauge<HostStats>] = &[
    // Not `..._bits`: Prometheus reads that as a unit and wants bytes.
    (
        "vpasid_space_pasid_width",
        "Width of the host PASID space: PASIDs lie below 2^width (--pasid-bits)",
        |h| u64::from(h.space.pasid_bits),
    ),
    (
        "vpasid_space_capacity",
        "PASIDs the space can hand out: 2^bits minus the reserved ones",
        |h| h.space.capacity,
    ),
    (
        "vpasid_space_reserved",
        "Reserved PASIDs (PASID 0 and --reserve ranges)",
        |h| h.space.reserved,
    ),
    (
        "vpasid_outstanding_pasids",
        "Allocated PASIDs in the whole space, whoever holds them",
        |h| h.space.allocated,
    ),
    (
        "vpasid_vms",
        "Configured VM slots (one vhost-user socket each)",
        |h| count(h.vms),
    ),
    (
        "vpasid_connected_vms",
        "VM slots with a frontend (QEMU) connected",
        |h| count(h.connected_vms),
    ),
];

/// Per-VM gauges, labelled `vm`.
const VM_GAUGES: &[Gauge<VmView>] = &[
    (
        "vpasid_vm_connected",
        "1 while the VM's frontend is connected, else 0",
        |vm| u64::from(vm.connected),
    ),
    (
        "vpasid_vm_outstanding_pasids",
        "PASIDs the VM holds references on",
        |vm| u64::from(vm.held),
    ),
    (
        "vpasid_vm_cached_pasids",
        "Of the PASIDs the VM holds, those its driver reports cached (leased, not handed out)",
        |vm| u64::from(vm.cached),
    ),
    (
        "vpasid_vm_in_use_pasids",
        "Of the PASIDs the VM holds, those not cached: handed out in the guest",
        |vm| u64::from(vm.held.saturating_sub(vm.cached)),
    ),
    (
        "vpasid_vm_lease_cap",
        "Most PASIDs the VM's driver may keep cached (lease_max); 0 when leases are off",
        |vm| u64::from(vm.lease),
    ),
    (
        "vpasid_vm_quota",
        "Most PASIDs the VM may hold at once",
        |vm| u64::from(vm.quota),
    ),
    (
        "vpasid_vm_reserved_pasids",
        "PASIDs kept for the VM by a reservation (pasidctl reserve) until it connects",
        |vm| {
            if vm.reserved_for.is_some() {
                u64::from(vm.held)
            } else {
                0
            }
        },
    ),
];

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The registry's figures and the process's in the OpenMetrics text format.
pub fn render(reg: &Registry) -> String {
    render_with(reg, sample_process())
}

/// Renders under the lock; a poisoned lock still holds readable figures.
/// /proc is read before the lock is taken, so a scrape holds up VM
/// requests no longer than encoding the registry's figures takes.
pub fn render_shared(registry: &Mutex<Registry>) -> String {
    let process = sample_process();
    render_with(&registry.lock().unwrap_or_else(|p| p.into_inner()), process)
}

/// [`render`] with process figures sampled by the caller.
fn render_with(reg: &Registry, process: ProcessStats) -> String {
    let mut metrics = Metrics::default();
    let families = reg.vm_families();
    for &(op, name, help) in REQUEST_FAMILIES {
        if let Some(family) = families.requests(op) {
            metrics.register(name, help, family.clone());
        }
    }
    metrics.register(
        "vpasid_vm_connects",
        "Times a frontend connected to the VM's socket",
        families.connects().clone(),
    );
    metrics.register(
        "vpasid_vm_resumes",
        "Reconciles a VM's driver completed on a new device (RECONCILE with LAST)",
        families.resumes().clone(),
    );
    metrics.register(
        "vpasid_vm_holdovers",
        "Disconnects after which a VM's PASIDs were held over (--holdover)",
        families.holdovers().clone(),
    );
    metrics.register(
        "vpasid_vm_reservations",
        "Reservations made for a VM arriving from another host (pasidctl reserve)",
        families.reservations().clone(),
    );
    metrics.register(
        "vpasid_reconcile_conflicts",
        "PASIDs a VM's RECONCILE claimed that another owner held",
        families.reconcile_conflicts().clone(),
    );
    metrics.register(
        "vpasid_malformed_chains",
        "Descriptor chains that were malformed (answered INVALID or returned unused)",
        families.malformed().clone(),
    );
    metrics.register(
        "vpasid_reclaims",
        "Times all of a VM's references were dropped, by reason \
         (driver_reset, disconnect, operator, holdover_expired, reservation_expired)",
        families.reclaims().clone(),
    );
    metrics.register(
        "vpasid_reclaimed_references",
        "PASID references released by reclaims, by reason",
        families.reclaimed_references().clone(),
    );
    metrics.register_with_unit(
        "vpasid_request_duration",
        "Time the daemon took to handle one descriptor chain, from reading \
         the request to writing the response",
        Unit::Seconds,
        reg.latency().metric(),
    );
    let journal = reg.journal_stats();
    if let Some(j) = &journal {
        metrics.register_with_unit(
            "vpasid_state_sync_duration",
            "Time to write and fdatasync one journal frame; answers wait for it",
            Unit::Seconds,
            j.sync.metric(),
        );
    }
    metrics.register_collector(Box::new(Figures {
        host: reg.stats(),
        vms: reg.vms(),
        quota_rejections: ConstFamily(
            reg.vm_tallies()
                .map(|(vm, tally)| {
                    let vm = vm.to_string();
                    let n = tally.results(Opcode::Alloc, Status::QuotaExceeded);
                    (VmLabels { vm }, ConstCounter::new(n))
                })
                .collect(),
        ),
        journal,
    }));
    metrics.register_collector(Box::new(process));
    encode(&metrics)
}

/// The registry's figures as read at scrape time.
#[derive(Debug)]
struct Figures {
    host: HostStats,
    vms: Vec<VmView>,
    /// The ALLOCs answered QUOTA_EXCEEDED: a second view of that series of
    /// `vpasid_allocations_total`, read from the same counter.
    quota_rejections: ConstFamily<VmLabels, ConstCounter>,
    journal: Option<JournalStats>,
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let version = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        let help = "Version of the running vhost-user-pasid; always 1";
        encode_family(&mut encoder, "vpasid_build", help, None, &version)?;
        for &(name, help, value) in HOST_GAUGES {
            let gauge = ConstGauge::new(value(&self.host));
            encode_family(&mut encoder, name, help, None, &gauge)?;
        }
        for &(name, help, value) in VM_GAUGES {
            let series = self
                .vms
                .iter()
                .map(|vm| {
                    let labels = VmLabels {
                        vm: vm.name.clone(),
                    };
                    (labels, ConstGauge::new(value(vm)))
                })
                .collect();
            encode_family(&mut encoder, name, help, None, &ConstFamily(series))?;
        }
        encode_family(
            &mut encoder,
            "vpasid_session_takeovers",
            "VM sessions taken over from systemd's descriptor store at start \
             (a restart, upgrade or crash the VM did not see)",
            None,
            &ConstCounter::new(crate::fdstore::takeovers()),
        )?;
        encode_family(
            &mut encoder,
            "vpasid_fdstore_descriptors",
            "Descriptors the daemon keeps in systemd's descriptor store \
             (FileDescriptorStoreMax= must exceed it)",
            None,
            &ConstGauge::new(i64::try_from(crate::fdstore::stored()).unwrap_or(i64::MAX)),
        )?;
        encode_family(
            &mut encoder,
            "vpasid_quota_rejections",
            "ALLOC requests refused because the VM was at its quota",
            None,
            &self.quota_rejections,
        )?;
        if let Some(j) = &self.journal {
            for (name, help, value) in [
                (
                    "vpasid_state_frames",
                    "Journal frames written and synced (--state-dir): one per group \
                     commit, however many VMs' requests it carries",
                    j.frames,
                ),
                (
                    "vpasid_state_records",
                    "Journal records appended (one per queue drain or operator change)",
                    j.records,
                ),
                (
                    "vpasid_state_compactions",
                    "Times the journal was rewritten as a snapshot (--journal-limit)",
                    j.compactions,
                ),
            ] {
                encode_family(&mut encoder, name, help, None, &ConstCounter::new(value))?;
            }
            let help = "Current size of the journal file";
            let bytes = ConstGauge::new(j.journal_bytes);
            encode_family(
                &mut encoder,
                "vpasid_state_journal",
                help,
                Some(&Unit::Bytes),
                &bytes,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use pasid_protocol::Request;

    use super::*;
    use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};

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

    /// The OpenMetrics framing: `# EOF` once and last; each family's HELP,
    /// TYPE and (with a unit) UNIT lines name it without the sample
    /// suffixes, and come before its samples, whose names are the family's
    /// with the suffix its type asks for.
    fn assert_openmetrics_framing(text: &str) {
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        let mut kind = "";
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split_once(' ').unwrap().0;
                kind = "";
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, k) = rest.split_once(' ').unwrap();
                assert_eq!(name, family, "{line}");
                kind = k;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# UNIT ") {
                let (name, unit) = rest.split_once(' ').unwrap();
                assert_eq!(name, family, "{line}");
                assert!(family.ends_with(&format!("_{unit}")), "{line}");
                continue;
            }
            if line == "# EOF" {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                "gauge" => &[""],
                other => panic!("{line}: family {family:?} of type {other:?}"),
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "{line} in family {family} ({kind})"
            );
        }
    }

    #[test]
    fn render_counts_requests_reclaims_and_latency() {
        let (mut reg, vm) = registry();
        reg.set_connected(vm, true);
        crate::registry::test_allocs(&mut reg, vm, 3);
        reg.handle(vm, Request::Free { tag: 9, pasid: 200 });
        reg.count_malformed(vm);
        reg.observe_latency(Duration::from_micros(2));
        reg.observe_latency(Duration::from_micros(20));
        reg.release_vm("web").unwrap();
        let text = render(&reg);
        assert_openmetrics_framing(&text);
        let s = samples(&text);
        let get = |k: &str| s.get(k).map(String::as_str).unwrap_or("missing");
        assert_eq!(get("vpasid_space_capacity"), "240");
        assert_eq!(get("vpasid_space_reserved"), "16");
        assert_eq!(get("vpasid_outstanding_pasids"), "0");
        assert_eq!(get("vpasid_connected_vms"), "1");
        assert_eq!(get(r#"vpasid_vm_connected{vm="web"}"#), "1");
        assert_eq!(get(r#"vpasid_vm_quota{vm="web"}"#), "2");
        assert_eq!(get(r#"vpasid_vm_connects_total{vm="web"}"#), "1");
        assert_eq!(
            get(r#"vpasid_allocations_total{vm="web",status="ok"}"#),
            "2"
        );
        assert_eq!(
            get(r#"vpasid_allocations_total{vm="web",status="quota_exceeded"}"#),
            "1"
        );
        // Every status is listed, 0 included.
        assert_eq!(
            get(r#"vpasid_allocations_total{vm="web",status="rate_limited"}"#),
            "0"
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
        let sum: f64 = get("vpasid_request_duration_seconds_sum").parse().unwrap();
        assert!((sum - 0.000_022).abs() < 1e-12, "{sum}");
        assert_eq!(
            get(&format!(
                r#"vpasid_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )),
            "1"
        );
        for family in [
            "# TYPE vpasid_allocations counter\n",
            "# TYPE vpasid_vm_quota gauge\n",
            "# TYPE vpasid_build info\n",
            "# TYPE vpasid_request_duration_seconds histogram\n\
             # UNIT vpasid_request_duration_seconds seconds\n",
        ] {
            assert!(text.contains(family), "{family} in\n{text}");
        }
        // No durable state: no vpasid_state_* families.
        assert!(!text.contains("vpasid_state_"), "{text}");
    }

    /// A VM the registry forgets leaves the metrics with its series; the
    /// others' stay.
    #[test]
    fn a_forgotten_vm_leaves_the_metrics() {
        let (mut reg, _) = registry();
        let limits = OwnerLimits {
            quota: 2,
            range: 1..=255,
        };
        // A slot only durable state knows, holding nothing: released, it
        // is forgotten.
        reg.add_vm("db", crate::registry::UNCONFIGURED, limits)
            .unwrap();
        let text = render(&reg);
        assert!(text.contains("vpasid_vm_quota{vm=\"db\"} 2\n"), "{text}");
        assert!(text.contains("vpasid_frees_total{vm=\"db\",status=\"ok\"} 0\n"));
        reg.operator_release("db", false).unwrap();
        let text = render(&reg);
        assert!(!text.contains("vm=\"db\""), "{text}");
        assert!(text.contains("vpasid_frees_total{vm=\"web\",status=\"ok\"} 0\n"));
        assert_openmetrics_framing(&text);
    }
}
