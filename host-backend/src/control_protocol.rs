// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Messages of the control socket, shared by the daemon and `pasidctl`.
//!
//! One JSON object per line in each direction. A request names a command;
//! the reply is `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
//! The results are typed here once ([`ReplyResult`] and the types it
//! holds), built from the daemon's own values by `From`, serialised by the
//! daemon and read back by `pasidctl`; the allocator core knows no serde.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::logfmt::Value;
use crate::pasid_space::{Holder, OwnerKind, PasidInfo, SpaceStats};
use crate::registry::{Exported, HostStats, Probe, ReserveConflict, Reserved, VmCounters, VmView};

/// Longest request line the daemon reads: a `reserve` lists every PASID
/// of a VM (up to its quota), about 32,000 in this many bytes.
pub const MAX_REQUEST_LINE: usize = 256 * 1024;

/// A control command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    // Unit variants would accept unknown fields; empty structs reject them.
    /// Every allocated PASID with its holders, or (with `vm`) those that VM
    /// holds a reference on.
    Pasids {
        /// Only PASIDs this VM holds; an unknown VM is an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
    },
    /// Every VM slot with usage and quota.
    Vms {},
    /// Whole-host figures.
    Stats {},
    /// OpenMetrics text exposition of every metric (the result is a string).
    Metrics {},
    /// A host holder takes a reference on a PASID.
    Get {
        /// Holder name.
        holder: String,
        /// The PASID.
        pasid: u32,
    },
    /// A host holder drops a reference.
    Put {
        /// Holder name.
        holder: String,
        /// The PASID.
        pasid: u32,
    },
    /// Drop every reference a VM holds. A VM whose frontend is connected
    /// is refused unless `force` is true.
    Release {
        /// VM name.
        vm: String,
        /// Release even while the VM is connected (its running guest loses
        /// PASIDs its devices may still use).
        #[serde(default)]
        force: bool,
    },
    /// Change a VM's quota.
    Quota {
        /// VM name.
        vm: String,
        /// New quota.
        quota: u32,
    },
    /// The VM's device is about to be unplugged (`pasidctl detach`): hold
    /// its PASIDs over for at least `hold_secs` after the disconnect, and
    /// remember `device` for `attach`.
    Detach {
        /// VM name.
        vm: String,
        /// Least hold-over after the disconnect, in seconds (default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_secs: Option<u64>,
        /// The hold-over outlives the VM's QEMU process (same-host
        /// migration).
        #[serde(default)]
        keep: bool,
        /// The device being removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<DeviceSpec>,
    },
    /// What a VM holds, for `reserve` on another host.
    Export {
        /// VM name.
        vm: String,
    },
    /// Reserve exactly `pasids` for a VM that has not arrived yet, all or
    /// nothing, until it connects or the hold runs out.
    Reserve {
        /// VM name (its slot must exist).
        vm: String,
        /// The PASIDs.
        pasids: Vec<u32>,
        /// How long, in seconds (default: the VM's hold-over, else 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_secs: Option<u64>,
        /// The device to plug for it (`pasidctl attach`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<DeviceSpec>,
    },
}

/// A vpasid device as QEMU's `device_add` takes it: what `pasidctl
/// detach` removed and `attach` plugs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Label of the chardev it used (`attach` gives the new one this label
    /// unless the VM's QEMU already has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chardev: Option<String>,
    /// QOM type, e.g. `vhost-user-test-device-pci`.
    pub driver: String,
    /// Device id for `device_add`.
    pub id: String,
    /// The other `device_add` properties: `virtio-id`, `num_vqs`,
    /// `config_size`, `vq_size`, `bus`, `addr`.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// The request as `key=value` log fields, e.g. `cmd=quota vm=web quota=5`;
/// names are quoted when they need it.
impl fmt::Display for ControlRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlRequest::Pasids { vm: None } => f.write_str("cmd=pasids"),
            ControlRequest::Pasids { vm: Some(vm) } => write!(f, "cmd=pasids vm={}", Value(vm)),
            ControlRequest::Vms {} => f.write_str("cmd=vms"),
            ControlRequest::Stats {} => f.write_str("cmd=stats"),
            ControlRequest::Metrics {} => f.write_str("cmd=metrics"),
            ControlRequest::Get { holder, pasid } => {
                write!(f, "cmd=get holder={} pasid={pasid}", Value(holder))
            }
            ControlRequest::Put { holder, pasid } => {
                write!(f, "cmd=put holder={} pasid={pasid}", Value(holder))
            }
            ControlRequest::Release { vm, force } => {
                write!(f, "cmd=release vm={} force={force}", Value(vm))
            }
            ControlRequest::Quota { vm, quota } => {
                write!(f, "cmd=quota vm={} quota={quota}", Value(vm))
            }
            ControlRequest::Detach {
                vm,
                hold_secs,
                keep,
                ..
            } => {
                write!(f, "cmd=detach vm={} keep={keep}", Value(vm))?;
                match hold_secs {
                    Some(secs) => write!(f, " hold={secs}"),
                    None => Ok(()),
                }
            }
            ControlRequest::Export { vm } => write!(f, "cmd=export vm={}", Value(vm)),
            ControlRequest::Reserve {
                vm,
                pasids,
                hold_secs,
                ..
            } => {
                write!(f, "cmd=reserve vm={} pasids={}", Value(vm), pasids.len())?;
                match hold_secs {
                    Some(secs) => write!(f, " hold={secs}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A reply: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
///
/// `T` is the result: [`ReplyResult`] (any command's) where the daemon
/// sends it, the one type the command answers with where `pasidctl` reads
/// it (for `vms`, `Vec<VmEntry>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlReply<T = ReplyResult> {
    /// Whether the command succeeded.
    pub ok: bool,
    /// Its result, when it succeeded (absent reads as `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// One line saying what went wrong, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A refused `reserve`: every reason, one per conflicting PASID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictEntry>,
}

/// Why one PASID of a refused `reserve` could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// Its holders, when another owner holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// The line for the operator, e.g. `PASID 5 is held by web`.
    pub message: String,
    /// The PASID (absent for the quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pasid: Option<u32>,
}

impl<T> ControlReply<T> {
    /// A success carrying `result`.
    pub fn success(result: T) -> Self {
        ControlReply {
            ok: true,
            result: Some(result),
            error: None,
            conflicts: Vec::new(),
        }
    }

    /// A failure saying `error`.
    pub fn failure(error: impl ToString) -> Self {
        ControlReply {
            ok: false,
            result: None,
            error: Some(error.to_string()),
            conflicts: Vec::new(),
        }
    }

    /// A refused reservation: `error`, and each conflict.
    pub fn refused(error: impl ToString, conflicts: Vec<ConflictEntry>) -> Self {
        ControlReply {
            conflicts,
            ..Self::failure(error)
        }
    }
}

// The result types below declare their fields in alphabetical order: that
// is the order of the keys on the wire and in `pasidctl --json` since the
// first release (results went through `serde_json::Value`, whose objects
// are sorted), and scripts may compare the text.

/// The result of any command, as the daemon sends it: its JSON is that of
/// the variant's content alone.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyResult {
    /// `pasids`.
    Pasids(Vec<PasidEntry>),
    /// `vms`.
    Vms(Vec<VmEntry>),
    /// `stats`.
    Stats(StatsResult),
    /// `metrics`: the OpenMetrics text exposition.
    Metrics(String),
    /// `get`.
    Get(GetResult),
    /// `put`.
    Put(PutResult),
    /// `release`.
    Release(ReleaseResult),
    /// `quota`.
    Quota(QuotaResult),
    /// `detach`.
    Detach(DetachResult),
    /// `export`.
    Export(ExportResult),
    /// `reserve`.
    Reserve(ReserveResult),
}

/// One allocated PASID with its holders (`pasids`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasidEntry {
    /// Holders, sorted by owner name.
    pub holders: Vec<HolderEntry>,
    /// The PASID.
    pub pasid: u32,
    /// References summed over all holders.
    pub total_refs: u32,
}

/// One holder of a PASID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderEntry {
    /// What kind of holder it is.
    pub kind: HolderKind,
    /// Its name.
    pub owner: String,
    /// References it holds on the PASID.
    pub refs: u32,
    /// A VM holding it under a reservation (`pasidctl reserve`), not yet
    /// arrived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
}

/// What kind of party holds a PASID: `vm` or `host` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HolderKind {
    /// A VM slot.
    Vm,
    /// A host holder.
    Host,
}

/// As on the wire: `vm` or `host`.
impl fmt::Display for HolderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderKind::Vm => "vm",
            HolderKind::Host => "host",
        })
    }
}

/// One VM slot with usage, quota and counters (`vms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmEntry {
    /// Of `held`, PASIDs its driver reports cached: leased, not handed
    /// out (the driver's own figure, informational only).
    #[serde(default)]
    pub cached: u32,
    /// Whether a frontend is connected.
    pub connected: bool,
    /// Its request counters.
    pub counters: VmCountersEntry,
    /// Disconnected and held over: whole seconds left before its PASIDs
    /// are reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_over_secs: Option<u64>,
    /// PASIDs it holds references on.
    pub held: u32,
    /// Its hold-over period in seconds (`--holdover`, `holdover=`): how
    /// long its PASIDs stay reserved after a disconnect; 0 releases them
    /// at once.
    #[serde(default)]
    pub holdover_secs: u64,
    /// Of `held`, PASIDs in use: `held - cached`.
    #[serde(default)]
    pub in_use: u32,
    /// How its driver last took up a device (RESET, or a completed
    /// RECONCILE), or null.
    #[serde(default)]
    pub last_probe: Option<ProbeEntry>,
    /// Its lease cap: most PASIDs its driver may keep cached; 0 when
    /// leases are off.
    #[serde(default)]
    pub lease: u32,
    /// Slot name.
    pub name: String,
    /// The pid of the QEMU process its PASIDs are bound to (the peer of
    /// its current or last connection): its exit releases them. Absent
    /// when none is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_pid: Option<u32>,
    /// Its quota.
    pub quota: u32,
    /// Highest PASID it may be given.
    pub range_end: u32,
    /// Lowest PASID it may be given.
    pub range_start: u32,
    /// Reserved (`pasidctl reserve`) and not yet connected: whole seconds
    /// left before its PASIDs are reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_secs: Option<u64>,
    /// Socket path (or `fd:N`).
    pub socket: String,
    /// When its session was taken over from a previous daemon (systemd's
    /// descriptor store), in seconds since the Unix epoch; absent for a
    /// session this daemon accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<u64>,
    /// `connected`, `held-over`, `reserved` or `idle`.
    #[serde(default)]
    pub state: String,
}

/// A VM's last probe outcome (`vms`, `last_probe`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeEntry {
    /// When the daemon answered it, in seconds since the Unix epoch.
    pub at: f64,
    /// RECONCILE: PASIDs another owner held.
    pub conflicts: u64,
    /// RECONCILE: PASIDs the VM still held.
    pub kept: u64,
    /// `reconcile` or `reset`.
    pub kind: String,
    /// RECONCILE: PASIDs that were free and given back.
    pub regranted: u64,
}

/// Result of `detach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachResult {
    /// PASIDs the VM holds.
    pub held: u32,
    /// Seconds they are held over after the disconnect.
    pub hold_secs: u64,
    /// The VM.
    pub vm: String,
}

/// Result of `export`: what `reserve` reads on the other host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportResult {
    /// The device last detached from the VM (or brought by `reserve`), or
    /// null.
    #[serde(default)]
    pub device: Option<DeviceSpec>,
    /// Its lease cap.
    #[serde(default)]
    pub lease_max: u32,
    /// PASIDs it holds, ascending.
    pub pasids: Vec<u32>,
    /// Its quota.
    pub quota: u32,
    /// Lowest and highest PASID it may be given.
    pub range: [u32; 2],
    /// The exporting daemon's space identifier (hex).
    #[serde(default)]
    pub space: String,
    /// The VM.
    pub vm: String,
}

/// Result of `reserve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReserveResult {
    /// Seconds the reservation lasts unless the VM connects first.
    pub hold_secs: u64,
    /// Of `reserved`, PASIDs the VM did not hold before.
    pub new: u32,
    /// PASIDs reserved.
    pub reserved: u32,
    /// When it runs out, in seconds since the Unix epoch.
    pub until: f64,
    /// The VM.
    pub vm: String,
}

/// Request counters of one VM slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCountersEntry {
    /// PASIDs a RECONCILE claimed that another owner held.
    #[serde(default)]
    pub conflicts: u64,
    /// Times the slot was connected.
    pub connects: u64,
    /// Disconnects after which its PASIDs were held over.
    #[serde(default)]
    pub holdovers: u64,
    /// Chains that were malformed.
    pub malformed: u64,
    /// PASIDs released by RESET, disconnect, operator release or an
    /// expired hold-over.
    pub reclaimed: u64,
    /// Re-delivered requests answered from the record of their first answer.
    pub replayed: u64,
    /// Requests answered, by opcode name.
    pub requests: BTreeMap<String, u64>,
    /// Reservations made for it (`pasidctl reserve`).
    #[serde(default)]
    pub reservations: u64,
    /// Reconciles completed (resumes on a new device).
    #[serde(default)]
    pub resumes: u64,
    /// Responses sent, by status name.
    pub statuses: BTreeMap<String, u64>,
}

/// Whole-host figures (`stats`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResult {
    /// Slots with a frontend connected.
    pub connected_vms: usize,
    /// Malformed chains, all VMs.
    pub malformed: u64,
    /// PASIDs reclaimed, all VMs.
    pub reclaimed: u64,
    /// Requests answered, all VMs.
    pub requests: u64,
    /// Figures of the PASID space.
    pub space: SpaceFigures,
    /// Identifier of the PASID space.
    pub space_id: u64,
    /// Number of VM slots.
    pub vms: usize,
}

/// Figures of the PASID space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceFigures {
    /// Allocated PASIDs.
    pub allocated: u64,
    /// Usable IDs: 2^bits minus the reserved ones.
    pub capacity: u64,
    /// Registered owners.
    pub owners: u64,
    /// Width of the space in bits.
    pub pasid_bits: u32,
    /// Reserved IDs, PASID 0 included.
    pub reserved: u64,
    /// References summed over all PASIDs.
    pub total_refs: u64,
}

/// Result of `get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    /// The PASID.
    pub pasid: u32,
    /// Total references after the get.
    pub refs: u32,
}

/// Result of `put`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// Whether the put freed it.
    pub freed: bool,
    /// The PASID.
    pub pasid: u32,
}

/// Result of `release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// References released.
    pub released: u64,
    /// The VM.
    pub vm: String,
}

/// Result of `quota`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaResult {
    /// The new quota.
    pub quota: u32,
    /// The VM.
    pub vm: String,
}

// ---- built from the daemon's own types ----------------------------------

impl From<OwnerKind> for HolderKind {
    fn from(kind: OwnerKind) -> Self {
        match kind {
            OwnerKind::Vm => HolderKind::Vm,
            OwnerKind::Host => HolderKind::Host,
        }
    }
}

impl From<Holder> for HolderEntry {
    fn from(h: Holder) -> Self {
        HolderEntry {
            kind: h.kind.into(),
            owner: h.owner,
            refs: h.refs,
            reserved: false,
        }
    }
}

impl PasidEntry {
    /// Marks the holders among `reserved` (VMs with a reservation in
    /// force).
    pub fn mark_reserved(mut self, reserved: &[String]) -> Self {
        for holder in &mut self.holders {
            holder.reserved = holder.kind == HolderKind::Vm && reserved.contains(&holder.owner);
        }
        self
    }
}

/// Seconds since the Unix epoch, with the fraction.
fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl From<Probe> for ProbeEntry {
    fn from(p: Probe) -> Self {
        ProbeEntry {
            at: unix_secs(p.at),
            conflicts: p.conflicts,
            kept: p.kept,
            kind: p.kind.as_str().to_string(),
            regranted: p.regranted,
        }
    }
}

impl From<&ReserveConflict> for ConflictEntry {
    fn from(c: &ReserveConflict) -> Self {
        ConflictEntry {
            holders: match c {
                ReserveConflict::Held { holders, .. } => holders.clone(),
                _ => Vec::new(),
            },
            message: c.to_string(),
            pasid: c.pasid(),
        }
    }
}

impl ReserveResult {
    /// The result of a reservation for `vm`.
    pub fn new(vm: String, reserved: &Reserved) -> Self {
        ReserveResult {
            hold_secs: reserved.hold.as_secs(),
            new: reserved.new,
            reserved: reserved.pasids,
            until: unix_secs(reserved.until),
            vm,
        }
    }
}

impl ExportResult {
    /// What `export` prints for `e`; a remembered device that does not
    /// read as one is left out.
    pub fn new(e: Exported) -> Self {
        ExportResult {
            device: e
                .device
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
            lease_max: e.lease,
            pasids: e.pasids,
            quota: e.quota,
            range: [e.range_start, e.range_end],
            space: format!("{:#x}", e.space_id),
            vm: e.name,
        }
    }
}

impl From<PasidInfo> for PasidEntry {
    fn from(info: PasidInfo) -> Self {
        PasidEntry {
            holders: info.holders.into_iter().map(HolderEntry::from).collect(),
            pasid: info.pasid,
            total_refs: info.total_refs,
        }
    }
}

impl From<VmCounters> for VmCountersEntry {
    fn from(c: VmCounters) -> Self {
        let names = |map: BTreeMap<&'static str, u64>| {
            map.into_iter()
                .map(|(name, n)| (name.to_string(), n))
                .collect()
        };
        VmCountersEntry {
            conflicts: c.conflicts,
            connects: c.connects,
            holdovers: c.holdovers,
            reservations: c.reservations,
            malformed: c.malformed,
            reclaimed: c.reclaimed,
            replayed: c.replayed,
            requests: names(c.requests),
            resumes: c.resumes,
            statuses: names(c.statuses),
        }
    }
}

impl From<VmView> for VmEntry {
    fn from(vm: VmView) -> Self {
        VmEntry {
            cached: vm.cached,
            connected: vm.connected,
            counters: vm.counters.into(),
            // Rounded up: "0 s left" would read as already reclaimed.
            held_over_secs: vm
                .held_over_for
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            holdover_secs: vm.holdover.as_secs(),
            held: vm.held,
            in_use: vm.held.saturating_sub(vm.cached),
            lease: vm.lease,
            name: vm.name,
            qemu_pid: vm.qemu_pid,
            quota: vm.quota,
            range_end: vm.range_end,
            range_start: vm.range_start,
            resumed_at: vm
                .resumed_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            state: match (vm.connected, vm.held_over_for, vm.reserved_for) {
                (true, _, _) => "connected",
                (false, _, Some(_)) => "reserved",
                (false, Some(_), None) => "held-over",
                (false, None, None) => "idle",
            }
            .to_string(),
            // Rounded up, as held_over_secs.
            reserved_secs: vm
                .reserved_for
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            last_probe: vm.last_probe.map(ProbeEntry::from),
            socket: vm.socket,
        }
    }
}

impl From<SpaceStats> for SpaceFigures {
    fn from(s: SpaceStats) -> Self {
        SpaceFigures {
            allocated: s.allocated,
            capacity: s.capacity,
            owners: s.owners,
            pasid_bits: s.pasid_bits,
            reserved: s.reserved,
            total_refs: s.total_refs,
        }
    }
}

impl From<HostStats> for StatsResult {
    fn from(s: HostStats) -> Self {
        StatsResult {
            connected_vms: s.connected_vms,
            malformed: s.malformed,
            reclaimed: s.reclaimed,
            requests: s.requests,
            space: s.space.into(),
            space_id: s.space_id,
            vms: s.vms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_have_stable_json() {
        let req = ControlRequest::Get {
            holder: "op".into(),
            pasid: 5,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(text, r#"{"cmd":"get","holder":"op","pasid":5}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(&text).unwrap(), req);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"pasids"}"#).unwrap(),
            ControlRequest::Pasids { vm: None }
        );
        let pasids = ControlRequest::Pasids {
            vm: Some("web".into()),
        };
        let text = serde_json::to_string(&pasids).unwrap();
        assert_eq!(text, r#"{"cmd":"pasids","vm":"web"}"#);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&text).unwrap(),
            pasids
        );
        // A client that does not know `force` asks for the safe release.
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"release","vm":"a"}"#).unwrap(),
            ControlRequest::Release {
                vm: "a".into(),
                force: false
            }
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Metrics {}).unwrap(),
            r#"{"cmd":"metrics"}"#
        );
    }

    /// Requests log as fields; a name that would split the line is quoted.
    #[test]
    fn requests_display_as_log_fields() {
        let quota = ControlRequest::Quota {
            vm: "a".into(),
            quota: 5,
        };
        assert_eq!(quota.to_string(), "cmd=quota vm=a quota=5");
        let get = ControlRequest::Get {
            holder: "x\nvm=forged".into(),
            pasid: 17,
        };
        assert_eq!(get.to_string(), r#"cmd=get holder="x\nvm=forged" pasid=17"#);
        let release = ControlRequest::Release {
            vm: "web".into(),
            force: true,
        };
        assert_eq!(release.to_string(), "cmd=release vm=web force=true");
    }

    /// Owner kinds read `vm` and `host` on the wire, as they always have.
    #[test]
    fn serialised_shapes() {
        assert_eq!(
            serde_json::to_string(&HolderKind::from(OwnerKind::Vm)).unwrap(),
            "\"vm\""
        );
        assert_eq!(
            serde_json::to_string(&HolderKind::from(OwnerKind::Host)).unwrap(),
            "\"host\""
        );
        assert_eq!(HolderKind::Host.to_string(), "host");
    }

    /// Each result, built from the daemon's own values, has the JSON it had
    /// when results went through `serde_json::Value` (keys sorted), and
    /// reads back as the same value.
    #[test]
    fn replies_have_stable_json() {
        fn round_trip<T>(result: T, wire: &str)
        where
            T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug + Clone,
        {
            let text = serde_json::to_string(&ControlReply::success(result.clone())).unwrap();
            assert_eq!(text, format!(r#"{{"ok":true,"result":{wire}}}"#));
            let back: ControlReply<T> = serde_json::from_str(&text).unwrap();
            assert_eq!(back.result, Some(result));
        }
        let info = PasidInfo {
            pasid: 6,
            total_refs: 3,
            holders: vec![
                Holder {
                    owner: "b".into(),
                    kind: OwnerKind::Vm,
                    refs: 1,
                },
                Holder {
                    owner: "drv".into(),
                    kind: OwnerKind::Host,
                    refs: 2,
                },
            ],
        };
        round_trip(
            vec![PasidEntry::from(info)],
            r#"[{"holders":[{"kind":"vm","owner":"b","refs":1},{"kind":"host","owner":"drv","refs":2}],"pasid":6,"total_refs":3}]"#,
        );
        let mut counters = VmCounters {
            malformed: 1,
            reclaimed: 2,
            connects: 3,
            replayed: 4,
            resumes: 5,
            conflicts: 6,
            ..VmCounters::default()
        };
        counters.requests.insert("FREE", 2);
        counters.requests.insert("ALLOC", 5);
        counters.requests.insert("GRANT", 1);
        counters.statuses.insert("OK", 7);
        counters.statuses.insert("NOT_OWNER", 1);
        let vm = VmView {
            name: "a".into(),
            socket: "/run/a.sock".into(),
            connected: true,
            held_over_for: None,
            holdover: Duration::from_secs(30),
            qemu_pid: None,
            resumed_at: None,
            reserved_for: None,
            last_probe: None,
            held: 2,
            cached: 1,
            lease: 32,
            quota: 8,
            range_start: 1,
            range_end: 1023,
            counters,
        };
        round_trip(
            vec![VmEntry::from(vm)],
            r#"[{"cached":1,"connected":true,"counters":{"conflicts":6,"connects":3,"holdovers":0,"malformed":1,"reclaimed":2,"replayed":4,"requests":{"ALLOC":5,"FREE":2,"GRANT":1},"reservations":0,"resumes":5,"statuses":{"NOT_OWNER":1,"OK":7}},"held":2,"holdover_secs":30,"in_use":1,"last_probe":null,"lease":32,"name":"a","quota":8,"range_end":1023,"range_start":1,"socket":"/run/a.sock","state":"connected"}]"#,
        );
        let stats = HostStats {
            space_id: 0x77,
            space: SpaceStats {
                pasid_bits: 10,
                capacity: 1020,
                reserved: 4,
                allocated: 1,
                total_refs: 2,
                owners: 3,
            },
            vms: 2,
            connected_vms: 1,
            requests: 5,
            malformed: 6,
            reclaimed: 7,
        };
        round_trip(
            StatsResult::from(stats),
            r#"{"connected_vms":1,"malformed":6,"reclaimed":7,"requests":5,"space":{"allocated":1,"capacity":1020,"owners":3,"pasid_bits":10,"reserved":4,"total_refs":2},"space_id":119,"vms":2}"#,
        );
        round_trip(GetResult { pasid: 6, refs: 2 }, r#"{"pasid":6,"refs":2}"#);
        round_trip(
            PutResult {
                freed: false,
                pasid: 6,
            },
            r#"{"freed":false,"pasid":6}"#,
        );
        round_trip(
            ReleaseResult {
                released: 3,
                vm: "a".into(),
            },
            r#"{"released":3,"vm":"a"}"#,
        );
        round_trip(
            QuotaResult {
                quota: 3,
                vm: "a".into(),
            },
            r#"{"quota":3,"vm":"a"}"#,
        );
        // The daemon's any-result sends the content alone; metrics is a string.
        let metrics = ReplyResult::Metrics("# HELP x\n".into());
        assert_eq!(
            serde_json::to_string(&ControlReply::success(metrics)).unwrap(),
            r##"{"ok":true,"result":"# HELP x\n"}"##
        );
        let get = ReplyResult::Get(GetResult { pasid: 1, refs: 1 });
        assert_eq!(
            serde_json::to_string(&get).unwrap(),
            r#"{"pasid":1,"refs":1}"#
        );
        let failure: ControlReply = ControlReply::failure("no VM named \"x\"");
        assert_eq!(
            serde_json::to_string(&failure).unwrap(),
            r#"{"ok":false,"error":"no VM named \"x\""}"#
        );
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [
            "",
            "{}",
            r#"{"cmd":"nope"}"#,
            r#"{"cmd":"get","holder":"x"}"#,
            r#"{"cmd":"get","holder":"x","pasid":-1}"#,
            r#"{"cmd":"vms","extra":1}"#,
            r#"{"cmd":"pasids","vm":7}"#,
            r#"{"cmd":"release","vm":"a","force":"yes"}"#,
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
