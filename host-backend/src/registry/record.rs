// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the registry's changes and state are, as values: the records a
//! journal keeps, the image a snapshot keeps, and the [`ChangeLog`] the
//! registry hands them to. The registry knows nothing of how they are
//! stored: `state` implements [`ChangeLog`] and encodes these types.

use std::fmt;
use std::sync::Arc;

use pasid_protocol::{PasidList, REQUEST_SIZE, RESPONSE_SIZE};

use crate::pasid_space::{OwnerKind, OwnerLimits, Pasid};

/// One answered guest request as the state keeps it: enough to recognise a
/// replay of it and to give the same answer again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    /// Position of the chain in the avail ring (the free-running index).
    pub position: u16,
    /// The request as the driver wrote it (canonical encoding).
    pub request: [u8; REQUEST_SIZE],
    /// The response given.
    pub response: [u8; RESPONSE_SIZE],
    /// PASIDs that belong to the request or its answer: a RETURN's or
    /// RECONCILE's list (part of its readable bytes), the PASIDs a GRANT
    /// granted (part of its answer). Empty for every other request.
    pub list: PasidList,
    /// A RECONCILE's per-PASID results (part of its answer, wire values of
    /// `ReconcileResult`). Empty for every other request.
    pub results: PasidList,
    /// Given again from the record of an earlier answer; changed nothing.
    pub replayed: bool,
}

/// One change to the state, as the journal records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A VM's answers to one queue drain, in ring order. Replaying it applies
    /// each answer's effect (ALLOC OK: the PASID is the VM's; FREE OK: one
    /// reference dropped; RESET OK: everything reclaimed; GRANT OK: each
    /// granted PASID is the VM's; RETURN OK: one reference dropped on each
    /// listed PASID; RECONCILE OK: carried out again, which must give the
    /// recorded results) and makes the batch the VM's replay window.
    Batch {
        /// Owner index.
        owner: u32,
        /// The answers.
        answers: Vec<Answered>,
    },
    /// Everything the owner holds was released (disconnect, operator).
    Reclaim {
        /// Owner index.
        owner: u32,
    },
    /// New limits for an owner (`pasidctl quota`).
    Limits {
        /// Owner index.
        owner: u32,
        /// The limits.
        limits: OwnerLimits,
    },
    /// A new owner (a host holder's first use); its index is the lowest one
    /// a [`Record::Forget`] left vacant, else the next one.
    AddOwner {
        /// VM or host holder.
        kind: OwnerKind,
        /// Its name.
        name: String,
        /// Its limits.
        limits: OwnerLimits,
    },
    /// A host holder took a reference (`pasidctl get`).
    Get {
        /// Owner index.
        owner: u32,
        /// The PASID.
        pasid: Pasid,
    },
    /// A host holder dropped a reference (`pasidctl put`).
    Put {
        /// Owner index.
        owner: u32,
        /// The PASID.
        pasid: Pasid,
    },
    /// An owner holding nothing was forgotten (a host holder's last put);
    /// its index is vacant until the next [`Record::AddOwner`].
    Forget {
        /// Owner index.
        owner: u32,
    },
    /// The QEMU process a VM's PASIDs are bound to (the peer of its
    /// vhost-user connection), or `None`: no longer bound to any
    /// (`Registry::unbind_qemu`, or that process exited).
    Peer {
        /// Owner index (a VM).
        owner: u32,
        /// The process, on this host's boot.
        peer: Option<QemuPeer>,
    },
    /// A VM's reservation (`pasidctl reserve`) began, or ended because the
    /// VM connected ([`Reservation::ended`]).
    Reserve(Reservation),
}

/// The QEMU process of a VM's vhost-user connection, as durable state
/// keeps it: its pid is only meaningful on the boot it was read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuPeer {
    /// Its process id (`SO_PEERCRED` of the accepted connection).
    pub pid: u32,
    /// The host's boot id when the pid was read
    /// (`/proc/sys/kernel/random/boot_id`, 16 bytes).
    pub boot_id: [u8; 16],
}

/// A VM's reservation as durable state keeps it: the PASIDs reserved (the
/// VM holds one reference on each) until a wall-clock deadline, since a
/// monotonic clock does not survive a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Owner index of the VM.
    pub owner: u32,
    /// When it runs out, in milliseconds since the Unix epoch; 0 records
    /// its end (the VM connected).
    pub deadline_ms: u64,
    /// The PASIDs reserved; replaying the record takes a reference on
    /// each one the VM does not hold yet.
    pub pasids: Vec<Pasid>,
    /// The device to plug for the VM (`pasidctl attach`), as JSON text.
    pub device: Option<String>,
}

impl Reservation {
    /// The record of `owner`'s reservation ending because it connected.
    pub fn ended(owner: u32) -> Self {
        Reservation {
            owner,
            deadline_ms: 0,
            pasids: Vec::new(),
            device: None,
        }
    }

    /// Whether this records a reservation's end.
    pub fn is_end(&self) -> bool {
        self.deadline_ms == 0
    }
}

/// One owner as a snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerImage {
    /// VM slot or host holder.
    pub kind: OwnerKind,
    /// Its name (a VM's slot name).
    pub name: String,
    /// Limits in force.
    pub limits: OwnerLimits,
    /// For a VM: the limits its command line gave at the last start, so a
    /// restart can tell an operator's `pasidctl quota` (kept) from an edited
    /// command line (applied).
    pub configured: Option<OwnerLimits>,
    /// The VM's last answered batch (its replay window).
    pub window: Vec<Answered>,
    /// PASIDs held, with this owner's reference count on each.
    pub holdings: Vec<(Pasid, u32)>,
    /// For a VM: the QEMU process its PASIDs are bound to, if any.
    pub peer: Option<QemuPeer>,
}

impl OwnerImage {
    /// What a snapshot holds at a vacant index (an owner was forgotten and
    /// no other took its place yet): a host owner with an empty name that
    /// holds nothing. Host holder names are never empty.
    pub fn vacant() -> Self {
        OwnerImage {
            kind: OwnerKind::Host,
            name: String::new(),
            limits: OwnerLimits {
                quota: 0,
                range: 1..=1,
            },
            configured: None,
            window: Vec::new(),
            holdings: Vec::new(),
            peer: None,
        }
    }

    /// Whether this stands for a vacant index ([`OwnerImage::vacant`]).
    pub fn is_vacant(&self) -> bool {
        self.kind == OwnerKind::Host && self.name.is_empty() && self.holdings.is_empty()
    }
}

/// Everything durable: what a snapshot holds. Owners are in index order,
/// vacant indexes included ([`OwnerImage::vacant`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateImage {
    /// Width of the space when the snapshot was written (informational; the
    /// command line decides, and holdings that do not fit are refused).
    pub pasid_bits: u32,
    /// The space's identifier as guests read it (`space_id` in the config
    /// space): kept, since the space is the same one after a restart.
    pub space_id: u64,
    /// Owners by index.
    pub owners: Vec<OwnerImage>,
    /// Reservations in force, by owner index (none in snapshots written
    /// before reservations).
    pub reservations: Vec<Reservation>,
}

/// A VM as durable state remembers it, for [`super::Registry::restored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberedVm {
    /// Its slot name (its owner in the space has the same name).
    pub name: String,
    /// The limits its command line gave at the last start.
    pub configured: Option<OwnerLimits>,
    /// Its last answered batch: requests the frontend may re-deliver.
    pub window: Vec<Answered>,
    /// The QEMU process its PASIDs are bound to, if any.
    pub peer: Option<QemuPeer>,
    /// Its reservation, if one is in force.
    pub reservation: Option<Reservation>,
}

/// Where the registry's changes go to be made durable (`--state-dir`;
/// `state::Journal` is the one implementation). Every call is made with
/// the registry lock held, so the log's order is the order of the changes.
pub trait ChangeLog: Send + Sync + fmt::Debug {
    /// Records one change.
    fn record(&self, record: &Record);
    /// Records a VM's answers to one queue drain ([`Record::Batch`],
    /// without copying them into one).
    fn batch(&self, owner: u32, answers: &[Answered]);
    /// The position of the latest change recorded.
    fn latest(&self) -> u64;
    /// Returns once every change up to `position` is durable. Never called
    /// with the registry lock held.
    fn wait(&self, position: u64);
    /// Rewrites the log as a snapshot if it has grown past its limit.
    /// Takes the registry lock itself: never called with it held.
    fn compact_if_due(&self);
    /// Figures for the metrics.
    fn stats(&self) -> crate::figures::JournalStats;
}

/// The point every change made so far becomes durable at: answers and
/// operator replies wait for it before they are released. Opaque to its
/// holder; `None` in its place means there is no durable state.
#[derive(Debug)]
pub struct CommitTicket {
    log: Arc<dyn ChangeLog>,
    position: u64,
}

impl CommitTicket {
    /// The latest point of `log`.
    pub fn latest(log: Arc<dyn ChangeLog>) -> CommitTicket {
        let position = log.latest();
        CommitTicket { log, position }
    }

    /// Waits until the point is durable (group commit). Call without the
    /// registry lock.
    pub fn wait(&self) {
        self.log.wait(self.position);
    }

    /// Compacts the log if it has grown past its limit. Call without the
    /// registry lock, after the answers are released.
    pub fn compact_if_due(&self) {
        self.log.compact_if_due();
    }

    /// [`CommitTicket::wait`], then [`CommitTicket::compact_if_due`].
    pub fn settle(&self) {
        self.wait();
        self.compact_if_due();
    }
}
