// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The collector: at scrape time, the registry's figures (space occupancy,
//! per-VM state and counters, request latency), durable state's and the
//! process's, in the Prometheus text format of [`crate::metrics`]. The one
//! place that knows both the registry and the exposition, so that neither
//! imports the other. Figures are read under the registry lock, so one
//! scrape is one consistent snapshot.

use std::sync::Mutex;

use pasid_protocol::{Opcode, Status};

use crate::metrics::{render_process, sample_process, status_label, Exposition, ProcessStats};
use crate::registry::{ReclaimReason, Registry, VmTally};

/// Every reclaim reason, in the order the metrics list them.
const RECLAIM_REASONS: [ReclaimReason; 3] = [
    ReclaimReason::DriverReset,
    ReclaimReason::Disconnect,
    ReclaimReason::Operator,
];

/// The registry's figures and the process's in the Prometheus text format.
pub fn render(reg: &Registry) -> String {
    render_with(reg, &sample_process())
}

/// [`render`] with process figures sampled by the caller.
fn render_with(reg: &Registry, proc_stats: &ProcessStats) -> String {
    let stats = reg.stats();
    let vms = reg.vms();
    let mut e = Exposition::default();

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
        "vpasid_vm_cached_pasids",
        "gauge",
        "Of the PASIDs the VM holds, those its driver reports cached (leased, not handed out).",
    );
    for vm in &vms {
        e.sample("vpasid_vm_cached_pasids", &[("vm", &vm.name)], vm.cached);
    }
    e.family(
        "vpasid_vm_in_use_pasids",
        "gauge",
        "Of the PASIDs the VM holds, those not cached: handed out in the guest.",
    );
    for vm in &vms {
        let in_use = vm.held.saturating_sub(vm.cached);
        e.sample("vpasid_vm_in_use_pasids", &[("vm", &vm.name)], in_use);
    }
    e.family(
        "vpasid_vm_lease_cap",
        "gauge",
        "Most PASIDs the VM's driver may keep cached (lease_max); 0 when leases are off.",
    );
    for vm in &vms {
        e.sample("vpasid_vm_lease_cap", &[("vm", &vm.name)], vm.lease);
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

    let per_vm: Vec<(&str, &VmTally)> = reg.vm_tallies().collect();
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
        (
            Opcode::Grant,
            "vpasid_grants_total",
            "GRANT (lease) requests answered, by status.",
        ),
        (
            Opcode::Return,
            "vpasid_returns_total",
            "RETURN (lease) requests answered, by status.",
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
    render_process(&mut e, proc_stats);
    e.finish()
}

/// Renders under the lock; a poisoned lock still holds readable figures.
/// /proc is read before the lock is taken, so a scrape holds up VM
/// requests no longer than rendering the registry's figures takes.
pub fn render_shared(registry: &Mutex<Registry>) -> String {
    let proc_stats = sample_process();
    render_with(
        &registry.lock().unwrap_or_else(|p| p.into_inner()),
        &proc_stats,
    )
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
}
