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
}

impl ReclaimReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ReclaimReason::DriverReset => "driver reset",
            ReclaimReason::Disconnect => "disconnect",
            ReclaimReason::Operator => "operator release",
            ReclaimReason::HoldoverExpired => "hold-over expired",
            ReclaimReason::QemuExited => "qemu exited",
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
