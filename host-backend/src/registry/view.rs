// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the registry shows of itself: one VM, its counters, the whole
//! host, and why a VM's references were dropped. Plain values, so that
//! the registry's parts (`tally`) and its readers share them without
//! importing the registry.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pasid_space::{Pasid, SpaceStats};

/// Per-VM request counters as `pasidctl vms` shows them, read from the
/// VM's [`VmTally`](super::VmTally).
#[derive(Clone, Debug, Default)]
pub struct VmCounters {
    /// Requests answered, by opcode name.
    pub requests: BTreeMap<&'static str, u64>,
    /// Responses sent, by status name.
    pub statuses: BTreeMap<&'static str, u64>,
    /// Chains that were malformed (answered INVALID or returned unused).
    pub malformed: u64,
    /// PASIDs released by RESET, disconnect or operator release.
    pub reclaimed: u64,
    /// Times the slot was connected.
    pub connects: u64,
    /// Requests re-delivered after a restart and answered from the record
    /// of their first answer.
    pub replayed: u64,
    /// Reconciles completed (resumes on a new device).
    pub resumes: u64,
    /// PASIDs a RECONCILE claimed that someone else held.
    pub conflicts: u64,
    /// Disconnects after which its PASIDs were held over.
    pub holdovers: u64,
    /// Reservations made for it (`pasidctl reserve`).
    pub reservations: u64,
}

/// Why a VM's references were dropped, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimReason {
    /// The driver sent RESET.
    DriverReset,
    /// The vhost-user connection closed.
    Disconnect,
    /// `pasidctl release`.
    Operator,
    /// A disconnected VM's hold-over ran out.
    HoldoverExpired,
    /// The QEMU process its PASIDs were bound to exited (seen through its
    /// pidfd, or found gone at start-up).
    QemuExited,
    /// A reservation (`pasidctl reserve`) ran out before the VM connected.
    ReservationExpired,
}

impl ReclaimReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ReclaimReason::DriverReset => "driver reset",
            ReclaimReason::Disconnect => "disconnect",
            ReclaimReason::Operator => "operator release",
            ReclaimReason::HoldoverExpired => "hold-over expired",
            ReclaimReason::QemuExited => "qemu exited",
            ReclaimReason::ReservationExpired => "reservation expired",
        }
    }

    /// The `reason` label of the reclaim metrics.
    pub fn label(self) -> &'static str {
        match self {
            ReclaimReason::DriverReset => "driver_reset",
            ReclaimReason::Disconnect => "disconnect",
            ReclaimReason::Operator => "operator",
            ReclaimReason::HoldoverExpired => "holdover_expired",
            ReclaimReason::QemuExited => "qemu_exited",
            ReclaimReason::ReservationExpired => "reservation_expired",
        }
    }
}

/// One VM as the control socket shows it.
#[derive(Clone, Debug)]
pub struct VmView {
    /// Slot name.
    pub name: String,
    /// Socket path (or `fd:N`).
    pub socket: String,
    /// Whether a frontend is connected.
    pub connected: bool,
    /// Disconnected and held over: time left before its PASIDs are
    /// reclaimed.
    pub held_over_for: Option<Duration>,
    /// Its hold-over period (`--holdover`, `holdover=`); zero releases its
    /// PASIDs at disconnect.
    pub holdover: Duration,
    /// The pid of the QEMU process its PASIDs are bound to, if any.
    pub qemu_pid: Option<u32>,
    /// When its session was taken over from a previous daemon, if it was.
    pub resumed_at: Option<std::time::SystemTime>,
    /// Reserved (`pasidctl reserve`) and not yet connected: time left
    /// before its PASIDs are reclaimed.
    pub reserved_for: Option<Duration>,
    /// How its driver last took up a device: RESET or a completed
    /// RECONCILE.
    pub last_probe: Option<Probe>,
    /// PASIDs the VM holds references on.
    pub held: u32,
    /// Of those, PASIDs its driver reports cached (leased, not handed
    /// out); never more than `held`.
    pub cached: u32,
    /// Its lease cap (`lease_max`); 0 when leases are off.
    pub lease: u32,
    /// Its quota.
    pub quota: u32,
    /// Lowest PASID it may be given.
    pub range_start: Pasid,
    /// Highest PASID it may be given.
    pub range_end: Pasid,
    /// Counters.
    pub counters: VmCounters,
}

/// What a driver did when it took up a device: RESET, or RECONCILE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// RESET: it started afresh and released what the VM held.
    Reset,
    /// A RECONCILE completed (LAST): it resumed with its PASIDs.
    Reconcile,
}

impl ProbeKind {
    /// As `last_probe.kind` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Reset => "reset",
            ProbeKind::Reconcile => "reconcile",
        }
    }
}

/// A VM's last probe outcome (`pasidctl attach` waits for one newer than
/// its plug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// RESET or RECONCILE.
    pub kind: ProbeKind,
    /// When the daemon answered it.
    pub at: std::time::SystemTime,
    /// RECONCILE: PASIDs the VM still held (KEPT).
    pub kept: u64,
    /// RECONCILE: PASIDs that were free and given back (GRANTED).
    pub regranted: u64,
    /// RECONCILE: PASIDs another owner held (CONFLICT).
    pub conflicts: u64,
}

/// Why one PASID of a reservation (`pasidctl reserve`) cannot be
/// reserved; any one of them refuses the whole reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveConflict {
    /// Another owner holds it.
    Held {
        /// The PASID.
        pasid: Pasid,
        /// Its holders' names.
        holders: Vec<String>,
    },
    /// Not one this host can give: 0, beyond `--pasid-bits`, or
    /// `--reserve`d.
    Unavailable {
        /// The PASID.
        pasid: Pasid,
    },
    /// Outside the VM slot's range on this host.
    OutsideRange {
        /// The PASID.
        pasid: Pasid,
        /// First PASID of the range.
        start: Pasid,
        /// Last PASID of the range.
        end: Pasid,
    },
    /// More PASIDs than the VM's quota on this host.
    OverQuota {
        /// The quota.
        quota: u32,
        /// PASIDs the VM would hold.
        needed: u64,
    },
}

impl ReserveConflict {
    /// The PASID it is about, if one.
    pub fn pasid(&self) -> Option<Pasid> {
        match self {
            ReserveConflict::Held { pasid, .. }
            | ReserveConflict::Unavailable { pasid }
            | ReserveConflict::OutsideRange { pasid, .. } => Some(*pasid),
            ReserveConflict::OverQuota { .. } => None,
        }
    }
}

/// One line for the operator, e.g. `PASID 5 is held by web`.
impl std::fmt::Display for ReserveConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReserveConflict::Held { pasid, holders } => {
                write!(f, "PASID {pasid} is held by {}", holders.join(", "))
            }
            ReserveConflict::Unavailable { pasid } => write!(
                f,
                "PASID {pasid} cannot be given on this host (0, beyond --pasid-bits, or \
                 --reserve'd)"
            ),
            ReserveConflict::OutsideRange { pasid, start, end } => write!(
                f,
                "PASID {pasid} is outside the VM's range {start}-{end} on this host"
            ),
            ReserveConflict::OverQuota { quota, needed } => write!(
                f,
                "the VM's quota on this host is {quota} PASIDs; the reservation needs {needed}"
            ),
        }
    }
}

/// A reservation made (`pasidctl reserve`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// PASIDs reserved (those the VM already held included).
    pub pasids: u32,
    /// Of those, PASIDs it did not hold before.
    pub new: u32,
    /// When the reservation runs out unless the VM connects first.
    pub until: std::time::SystemTime,
    /// How long it lasts.
    pub hold: Duration,
}

/// What the daemon will do with a VM's next disconnect (`pasidctl
/// detach`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detaching {
    /// PASIDs it holds now.
    pub held: u32,
    /// How long they are held over after the disconnect.
    pub hold: Duration,
}

/// What a VM holds, for another host (`pasidctl export`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// Slot name.
    pub name: String,
    /// This daemon's space identifier.
    pub space_id: u64,
    /// PASIDs it holds, ascending.
    pub pasids: Vec<Pasid>,
    /// Its quota.
    pub quota: u32,
    /// Lowest PASID it may be given.
    pub range_start: Pasid,
    /// Highest PASID it may be given.
    pub range_end: Pasid,
    /// Its lease cap.
    pub lease: u32,
    /// The device last detached from it (or reserved with it), as the
    /// JSON text `pasidctl` gave.
    pub device: Option<String>,
}

/// Whole-host figures as the control socket shows them.
#[derive(Clone, Debug)]
pub struct HostStats {
    /// Identifier of this PASID space.
    pub space_id: u64,
    /// Space figures.
    pub space: SpaceStats,
    /// Number of VM slots.
    pub vms: usize,
    /// Slots with a frontend connected.
    pub connected_vms: usize,
    /// Requests answered, all VMs.
    pub requests: u64,
    /// Malformed chains, all VMs.
    pub malformed: u64,
    /// PASIDs reclaimed, all VMs.
    pub reclaimed: u64,
}
