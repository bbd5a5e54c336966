// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Wire format of the vpasid PASID allocation device.
//!
//! This crate is the single source of truth for the protocol. The C header
//! `include/virtio_pasid.h` mirrors it for the guest driver, and
//! `tests/c_header.rs` compiles that header and fails on any drift.
//! `docs/protocol.md` is the normative specification.
//!
//! Every structure is fixed-size and little-endian. Encoding and decoding are
//! explicit byte operations, so they are independent of the host's byte
//! order and never read past the buffers they are given.

// Guest-controlled bytes pass through here: no unchecked indexing outside
// the fixed-offset field accessors (which carry a local allow) and tests.
#![deny(clippy::indexing_slicing)]

mod answer;

use std::fmt;

pub use answer::{Answer, PasidList};

/// Protocol version reported in [`Config::version`].
pub const VERSION: u32 = 1;

/// Default virtio device ID; see `docs/protocol.md` for why 37.
pub const DEFAULT_DEVICE_ID: u32 = 37;

/// Index of the request virtqueue.
pub const VQ_REQUEST: u16 = 0;
/// Number of virtqueues.
pub const VQ_MAX: usize = 1;

/// Device-specific feature bits 0..=23 are reserved for this device.
pub const FEATURES_RESERVED_MASK: u64 = 0x0000_0000_00ff_ffff;

/// Feature bit: the device serves GRANT and RETURN (PASID leases) and
/// reports its lease cap in [`Config::lease_max`].
pub const F_LEASE: u32 = 0;

/// Feature bit: the device serves RECONCILE, so a driver that already
/// holds PASIDs can resume on a new device instead of sending RESET.
pub const F_RECONCILE: u32 = 1;

/// RECONCILE `flags` bit: this request starts a reconcile.
pub const RECONCILE_F_FIRST: u16 = 1 << 0;
/// RECONCILE `flags` bit: this request ends a reconcile; the device then
/// drops every reference of the VM that the reconcile did not list.
pub const RECONCILE_F_LAST: u16 = 1 << 1;
/// Every `flags` bit a RECONCILE may carry.
const RECONCILE_FLAGS: u16 = RECONCILE_F_FIRST | RECONCILE_F_LAST;

/// Most PASIDs one GRANT asks for, one RETURN gives back or one RECONCILE
/// lists.
pub const LEASE_BATCH_MAX: u16 = 64;
/// Highest lease cap a device may report in [`Config::lease_max`].
pub const LEASE_MAX: u32 = 4096;
/// Size in bytes of one PASID in a GRANT response or RETURN list.
pub const PASID_ENTRY_SIZE: usize = 4;

/// Widest PASID space: PCIe PASIDs are 20 bits.
pub const MAX_PASID_BITS: u32 = 20;
/// Value of a `pasid` field that carries no PASID.
pub const PASID_NONE: u32 = 0xffff_ffff;

/// Size in bytes of an encoded [`Request`].
pub const REQUEST_SIZE: usize = 24;
/// Size in bytes of an encoded [`Response`].
pub const RESPONSE_SIZE: usize = 16;
/// Size in bytes of the device configuration space ([`Config`]).
pub const CONFIG_SIZE: usize = 32;

/// Request opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Allocate the lowest free PASID in `[min, max]`.
    Alloc = 1,
    /// Drop this VM's reference on `pasid`.
    Free = 2,
    /// Drop every reference this VM holds.
    Reset = 3,
    /// Lease: allocate up to `count` PASIDs in `[min, max]` at once
    /// (needs [`F_LEASE`]).
    Grant = 4,
    /// Lease: drop this VM's reference on each PASID of a list
    /// (needs [`F_LEASE`]).
    Return = 5,
    /// Resume: tell the device every PASID the driver holds (needs
    /// [`F_RECONCILE`]).
    Reconcile = 6,
}

impl Opcode {
    /// Every opcode, for tables and tests.
    pub const ALL: [Opcode; 6] = [
        Opcode::Alloc,
        Opcode::Free,
        Opcode::Reset,
        Opcode::Grant,
        Opcode::Return,
        Opcode::Reconcile,
    ];

    /// Decodes a wire opcode; `None` for an unknown value.
    pub fn from_wire(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|op| *op as u16 == value)
    }

    /// Name used in logs and in the C header (`VIRTIO_PASID_OP_<NAME>`).
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Alloc => "ALLOC",
            Opcode::Free => "FREE",
            Opcode::Reset => "RESET",
            Opcode::Grant => "GRANT",
            Opcode::Return => "RETURN",
            Opcode::Reconcile => "RECONCILE",
        }
    }
}

/// Response status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// The request succeeded.
    Ok = 0,
    /// No free PASID in the requested range.
    NoSpace = 1,
    /// The VM already holds its quota of PASIDs.
    QuotaExceeded = 2,
    /// Malformed request: wrong size, unknown opcode, non-zero `flags`, an
    /// ALLOC range with `min > max` or `min` beyond the space, or a FREE of
    /// PASID 0, a reserved PASID or one beyond the space.
    Invalid = 3,
    /// The PASID exists but this VM holds no reference on it.
    NotOwner = 4,
    /// The PASID is not allocated.
    NotFound = 5,
    /// The device failed for a reason that is not the driver's fault.
    Internal = 6,
    /// The VM sent requests faster than the host allows; the request had no
    /// effect and may be retried later.
    RateLimited = 7,
}

impl Status {
    /// Every status, for tables and tests.
    pub const ALL: [Status; 8] = [
        Status::Ok,
        Status::NoSpace,
        Status::QuotaExceeded,
        Status::Invalid,
        Status::NotOwner,
        Status::NotFound,
        Status::Internal,
        Status::RateLimited,
    ];

    /// Decodes a wire status; `None` for an unknown value.
    pub fn from_wire(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u16 == value)
    }

    /// Name used in logs, metrics and the C header (`VIRTIO_PASID_S_<NAME>`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoSpace => "NO_SPACE",
            Status::QuotaExceeded => "QUOTA_EXCEEDED",
            Status::Invalid => "INVALID",
            Status::NotOwner => "NOT_OWNER",
            Status::NotFound => "NOT_FOUND",
            Status::Internal => "INTERNAL",
            Status::RateLimited => "RATE_LIMITED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the device did with one PASID a RECONCILE listed: one `le32` per
/// listed PASID follows the response, in list order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ReconcileResult {
    /// The VM held it and still does.
    Kept = 0,
    /// It was free; the VM now holds it.
    Granted = 1,
    /// Someone else holds it; the VM does not.
    Conflict = 2,
    /// Not a PASID this VM may hold (0, beyond the space, host-reserved,
    /// outside the VM's range), or free while the VM is at its quota: the
    /// VM does not hold it.
    Refused = 3,
}

impl ReconcileResult {
    /// Every result, for tables and tests.
    pub const ALL: [ReconcileResult; 4] = [
        ReconcileResult::Kept,
        ReconcileResult::Granted,
        ReconcileResult::Conflict,
        ReconcileResult::Refused,
    ];

    /// Decodes a wire result; `None` for an unknown value.
    pub fn from_wire(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u32 == value)
    }

    /// Name used in logs and the C header (`VIRTIO_PASID_RECONCILE_<NAME>`).
    pub fn name(self) -> &'static str {
        match self {
            ReconcileResult::Kept => "KEPT",
            ReconcileResult::Granted => "GRANTED",
            ReconcileResult::Conflict => "CONFLICT",
            ReconcileResult::Refused => "REFUSED",
        }
    }
}

impl fmt::Display for ReconcileResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request buffer could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The opcode is not one of [`Opcode`].
    UnknownOpcode(u16),
    /// A `flags` bit the opcode does not define is set (for RECONCILE, the
    /// bits other than FIRST and LAST; the payload holds those bits only).
    NonZeroFlags(u16),
    /// A GRANT or RETURN `count` of 0 or above [`LEASE_BATCH_MAX`], or a
    /// RECONCILE `count` above it.
    BadCount(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            DecodeError::NonZeroFlags(flags) => write!(f, "reserved flags {flags:#x} not zero"),
            DecodeError::BadCount(count) => {
                write!(
                    f,
                    "count {count} out of range (batch max {LEASE_BATCH_MAX})"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Device-readable part of a request chain (`struct virtio_pasid_req`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RawRequest {
    /// One of [`Opcode`].
    pub opcode: u16,
    /// Reserved, must be zero.
    pub flags: u16,
    /// FREE: the PASID to release.
    pub pasid: u32,
    /// Driver-chosen tag, echoed in the response.
    pub tag: u64,
    /// ALLOC: lowest acceptable PASID.
    pub min: u32,
    /// ALLOC: highest acceptable PASID.
    pub max: u32,
}

/// Device-readable header of a GRANT, RETURN or RECONCILE chain
/// (`struct virtio_pasid_lease_req`): the same 24 bytes as [`RawRequest`],
/// with its `pasid` field split into `count` and `cached`. A RETURN's or
/// RECONCILE's list of `count` little-endian 32-bit PASIDs follows it in
/// the readable part; a GRANT's PASIDs, and a RECONCILE's per-PASID
/// [`ReconcileResult`]s, follow the [`Response`] in the writable part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct LeaseHeader {
    /// [`Opcode::Grant`], [`Opcode::Return`] or [`Opcode::Reconcile`].
    pub opcode: u16,
    /// RECONCILE: [`RECONCILE_F_FIRST`], [`RECONCILE_F_LAST`]; otherwise
    /// reserved, must be zero.
    pub flags: u16,
    /// GRANT: most PASIDs wanted; RETURN, RECONCILE: PASIDs in the list.
    pub count: u16,
    /// PASIDs the driver holds but has not handed out, before this request.
    pub cached: u16,
    /// Driver-chosen tag, echoed in the response.
    pub tag: u64,
    /// GRANT: lowest acceptable PASID.
    pub min: u32,
    /// GRANT: highest acceptable PASID.
    pub max: u32,
}

/// Device-writable part of a request chain (`struct virtio_pasid_resp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Response {
    /// One of [`Status`], as a wire value.
    pub status: u16,
    /// Reserved, written as zero.
    pub reserved: u16,
    /// ALLOC: the PASID; RESET: references released; GRANT and RETURN:
    /// PASIDs granted or returned; RECONCILE: references dropped (0 without
    /// [`RECONCILE_F_LAST`]); otherwise [`PASID_NONE`].
    pub pasid: u32,
    /// The request's tag (0 when the request was not 24 bytes long).
    pub tag: u64,
}

/// Device configuration space (`struct virtio_pasid_config`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Config {
    /// [`VERSION`].
    pub version: u32,
    /// Width of the host's PASID space.
    pub pasid_bits: u32,
    /// Lowest PASID this VM may be given.
    pub pasid_min: u32,
    /// Highest PASID this VM may be given.
    pub pasid_max: u32,
    /// Most PASIDs this VM may hold at once.
    pub quota: u32,
    /// Most PASIDs the driver may keep leased but not handed out; 0 unless
    /// the device offers [`F_LEASE`].
    pub lease_max: u32,
    /// Identifies the host's PASID space (stable for the space's lifetime).
    pub space_id: u64,
}

/// A decoded, well-formed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Allocate the lowest free PASID in `[min, max]`.
    Alloc {
        /// Driver tag.
        tag: u64,
        /// Lowest acceptable PASID.
        min: u32,
        /// Highest acceptable PASID.
        max: u32,
    },
    /// Drop this VM's reference on `pasid`.
    Free {
        /// Driver tag.
        tag: u64,
        /// The PASID.
        pasid: u32,
    },
    /// Drop every reference this VM holds.
    Reset {
        /// Driver tag.
        tag: u64,
    },
    /// Allocate up to `count` PASIDs in `[min, max]`.
    Grant {
        /// Driver tag.
        tag: u64,
        /// Most PASIDs wanted, 1..=[`LEASE_BATCH_MAX`].
        count: u16,
        /// PASIDs the driver holds but has not handed out.
        cached: u16,
        /// Lowest acceptable PASID.
        min: u32,
        /// Highest acceptable PASID.
        max: u32,
    },
    /// Drop this VM's reference on each of `count` PASIDs, whose list
    /// follows the header ([`decode_pasids`]).
    Return {
        /// Driver tag.
        tag: u64,
        /// PASIDs in the list, 1..=[`LEASE_BATCH_MAX`].
        count: u16,
        /// PASIDs the driver holds but has not handed out, before this
        /// request (the returned ones included).
        cached: u16,
    },
    /// Tell the device `count` PASIDs the driver holds, whose list follows
    /// the header ([`decode_pasids`]); one of a reconcile's requests.
    Reconcile {
        /// Driver tag.
        tag: u64,
        /// [`RECONCILE_F_FIRST`]: this request starts the reconcile.
        first: bool,
        /// [`RECONCILE_F_LAST`]: this request ends it.
        last: bool,
        /// PASIDs in the list, 0..=[`LEASE_BATCH_MAX`].
        count: u16,
        /// PASIDs the driver holds but has not handed out (the listed ones
        /// included).
        cached: u16,
    },
}

/// The request as `key=value` log fields: `op=ALLOC tag=0x1 min=1 max=100`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.opcode().name();
        match *self {
            Request::Alloc { tag, min, max } => {
                write!(f, "op={op} tag={tag:#x} min={min} max={max}")
            }
            Request::Free { tag, pasid } => write!(f, "op={op} tag={tag:#x} pasid={pasid}"),
            Request::Reset { tag } => write!(f, "op={op} tag={tag:#x}"),
            Request::Grant {
                tag,
                count,
                cached,
                min,
                max,
            } => write!(
                f,
                "op={op} tag={tag:#x} count={count} cached={cached} min={min} max={max}"
            ),
            Request::Return { tag, count, cached } => {
                write!(f, "op={op} tag={tag:#x} count={count} cached={cached}")
            }
            Request::Reconcile {
                tag,
                first,
                last,
                count,
                cached,
            } => write!(
                f,
                "op={op} tag={tag:#x} first={} last={} count={count} cached={cached}",
                u8::from(first),
                u8::from(last)
            ),
        }
    }
}

impl Request {
    /// The driver's tag.
    pub fn tag(&self) -> u64 {
        match *self {
            Request::Alloc { tag, .. }
            | Request::Free { tag, .. }
            | Request::Reset { tag }
            | Request::Grant { tag, .. }
            | Request::Return { tag, .. }
            | Request::Reconcile { tag, .. } => tag,
        }
    }

    /// Bytes of PASID list that follow the 24-byte header in the readable
    /// part: `4 * count` for RETURN and RECONCILE, 0 otherwise.
    pub fn list_len(&self) -> usize {
        match *self {
            Request::Return { count, .. } | Request::Reconcile { count, .. } => {
                usize::from(count) * PASID_ENTRY_SIZE
            }
            _ => 0,
        }
    }

    /// Bytes the writable part must hold: the response, plus room for
    /// `count` PASIDs for GRANT or `count` results for RECONCILE.
    pub fn writable_len(&self) -> usize {
        match *self {
            Request::Grant { count, .. } | Request::Reconcile { count, .. } => {
                RESPONSE_SIZE + usize::from(count) * PASID_ENTRY_SIZE
            }
            _ => RESPONSE_SIZE,
        }
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Alloc { .. } => Opcode::Alloc,
            Request::Free { .. } => Opcode::Free,
            Request::Reset { .. } => Opcode::Reset,
            Request::Grant { .. } => Opcode::Grant,
            Request::Return { .. } => Opcode::Return,
            Request::Reconcile { .. } => Opcode::Reconcile,
        }
    }

    /// Encodes the request's 24-byte header as the driver sends it (a
    /// RETURN's or RECONCILE's list follows it: [`encode_pasids`]).
    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut raw = RawRequest {
            opcode: self.opcode() as u16,
            tag: self.tag(),
            ..RawRequest::default()
        };
        match *self {
            Request::Alloc { min, max, .. } => {
                raw.min = min;
                raw.max = max;
            }
            Request::Free { pasid, .. } => raw.pasid = pasid,
            Request::Reset { .. } => {}
            Request::Grant {
                count,
                cached,
                min,
                max,
                ..
            } => {
                raw.pasid = lease_word(count, cached);
                raw.min = min;
                raw.max = max;
            }
            Request::Return { count, cached, .. } => raw.pasid = lease_word(count, cached),
            Request::Reconcile {
                first,
                last,
                count,
                cached,
                ..
            } => {
                raw.pasid = lease_word(count, cached);
                raw.flags = reconcile_flags(first, last);
            }
        }
        raw.encode()
    }
}

/// GRANT and RETURN carry `count` and `cached` where other requests carry
/// `pasid`: `count` in the low 16 bits (bytes 4-5), `cached` in the high.
fn lease_word(count: u16, cached: u16) -> u32 {
    u32::from(count) | u32::from(cached) << 16
}

/// The `flags` word of a RECONCILE.
fn reconcile_flags(first: bool, last: bool) -> u16 {
    let mut flags = 0;
    if first {
        flags |= RECONCILE_F_FIRST;
    }
    if last {
        flags |= RECONCILE_F_LAST;
    }
    flags
}

/// Splits the `pasid` word of a GRANT or RETURN into `(count, cached)`.
#[allow(clippy::cast_possible_truncation)]
fn split_lease_word(word: u32) -> (u16, u16) {
    (word as u16, (word >> 16) as u16)
}

/// Decodes a list of little-endian PASIDs (a RETURN's or RECONCILE's
/// list, a GRANT's answer, a RECONCILE's results). Trailing bytes that do not make a whole entry are ignored.
pub fn decode_pasids(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(PASID_ENTRY_SIZE)
        .map(|c| {
            let mut b = [0u8; PASID_ENTRY_SIZE];
            b.copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect()
}

/// Encodes PASIDs as the little-endian list GRANT answers and RETURN sends.
pub fn encode_pasids(pasids: &[u32]) -> Vec<u8> {
    pasids.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// Reads little-endian integers at fixed offsets of a fixed-size buffer.
macro_rules! le_field {
    ($buf:expr, $ty:ty, $off:expr) => {{
        let mut b = [0u8; std::mem::size_of::<$ty>()];
        b.copy_from_slice(&$buf[$off..$off + std::mem::size_of::<$ty>()]);
        <$ty>::from_le_bytes(b)
    }};
}

/// Writes little-endian integers at fixed offsets of a fixed-size buffer.
macro_rules! put_le {
    ($buf:expr, $off:expr, $val:expr) => {{
        let bytes = $val.to_le_bytes();
        $buf[$off..$off + bytes.len()].copy_from_slice(&bytes);
    }};
}

// The field offsets below are the wire layout; the C header test checks them
// against `offset_of!` on both sides.
#[allow(clippy::indexing_slicing)]
impl RawRequest {
    /// Decodes the wire bytes without interpreting them.
    pub fn decode(buf: &[u8; REQUEST_SIZE]) -> Self {
        RawRequest {
            opcode: le_field!(buf, u16, 0),
            flags: le_field!(buf, u16, 2),
            pasid: le_field!(buf, u32, 4),
            tag: le_field!(buf, u64, 8),
            min: le_field!(buf, u32, 16),
            max: le_field!(buf, u32, 20),
        }
    }

    /// Encodes to wire bytes.
    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut buf = [0u8; REQUEST_SIZE];
        put_le!(buf, 0, self.opcode);
        put_le!(buf, 2, self.flags);
        put_le!(buf, 4, self.pasid);
        put_le!(buf, 8, self.tag);
        put_le!(buf, 16, self.min);
        put_le!(buf, 20, self.max);
        buf
    }

    /// Interprets the raw fields. Range checks against the PASID space are
    /// the device's business, not the decoder's.
    pub fn parse(&self) -> Result<Request, DecodeError> {
        let op = Opcode::from_wire(self.opcode);
        let allowed_flags = if op == Some(Opcode::Reconcile) {
            RECONCILE_FLAGS
        } else {
            0
        };
        if self.flags & !allowed_flags != 0 {
            return Err(DecodeError::NonZeroFlags(self.flags & !allowed_flags));
        }
        let tag = self.tag;
        match op {
            Some(Opcode::Alloc) => Ok(Request::Alloc {
                tag,
                min: self.min,
                max: self.max,
            }),
            Some(Opcode::Free) => Ok(Request::Free {
                tag,
                pasid: self.pasid,
            }),
            Some(Opcode::Reset) => Ok(Request::Reset { tag }),
            Some(op @ (Opcode::Grant | Opcode::Return)) => {
                let (count, cached) = split_lease_word(self.pasid);
                if count == 0 || count > LEASE_BATCH_MAX {
                    return Err(DecodeError::BadCount(count));
                }
                Ok(if op == Opcode::Grant {
                    Request::Grant {
                        tag,
                        count,
                        cached,
                        min: self.min,
                        max: self.max,
                    }
                } else {
                    Request::Return { tag, count, cached }
                })
            }
            Some(Opcode::Reconcile) => {
                // A reconcile of a driver that holds nothing lists nothing.
                let (count, cached) = split_lease_word(self.pasid);
                if count > LEASE_BATCH_MAX {
                    return Err(DecodeError::BadCount(count));
                }
                Ok(Request::Reconcile {
                    tag,
                    first: self.flags & RECONCILE_F_FIRST != 0,
                    last: self.flags & RECONCILE_F_LAST != 0,
                    count,
                    cached,
                })
            }
            None => Err(DecodeError::UnknownOpcode(self.opcode)),
        }
    }
}

#[allow(clippy::indexing_slicing)]
impl Response {
    /// A response with `status`, echoing `tag`, carrying no PASID.
    pub fn new(status: Status, tag: u64) -> Self {
        Response {
            status: status as u16,
            reserved: 0,
            pasid: PASID_NONE,
            tag,
        }
    }

    /// A successful response carrying `pasid` (or a count, for RESET).
    pub fn ok(tag: u64, pasid: u32) -> Self {
        Response {
            pasid,
            ..Response::new(Status::Ok, tag)
        }
    }

    /// Encodes to wire bytes.
    pub fn encode(&self) -> [u8; RESPONSE_SIZE] {
        let mut buf = [0u8; RESPONSE_SIZE];
        put_le!(buf, 0, self.status);
        put_le!(buf, 2, self.reserved);
        put_le!(buf, 4, self.pasid);
        put_le!(buf, 8, self.tag);
        buf
    }

    /// Decodes wire bytes (used by drivers and tests).
    pub fn decode(buf: &[u8; RESPONSE_SIZE]) -> Self {
        Response {
            status: le_field!(buf, u16, 0),
            reserved: le_field!(buf, u16, 2),
            pasid: le_field!(buf, u32, 4),
            tag: le_field!(buf, u64, 8),
        }
    }
}

#[allow(clippy::indexing_slicing)]
impl Config {
    /// Encodes to wire bytes.
    pub fn encode(&self) -> [u8; CONFIG_SIZE] {
        let mut buf = [0u8; CONFIG_SIZE];
        put_le!(buf, 0, self.version);
        put_le!(buf, 4, self.pasid_bits);
        put_le!(buf, 8, self.pasid_min);
        put_le!(buf, 12, self.pasid_max);
        put_le!(buf, 16, self.quota);
        put_le!(buf, 20, self.lease_max);
        put_le!(buf, 24, self.space_id);
        buf
    }

    /// Decodes wire bytes (used by drivers and tests).
    pub fn decode(buf: &[u8; CONFIG_SIZE]) -> Self {
        Config {
            version: le_field!(buf, u32, 0),
            pasid_bits: le_field!(buf, u32, 4),
            pasid_min: le_field!(buf, u32, 8),
            pasid_max: le_field!(buf, u32, 12),
            quota: le_field!(buf, u32, 16),
            lease_max: le_field!(buf, u32, 20),
            space_id: le_field!(buf, u64, 24),
        }
    }
}

/// One entry of the C header's constants, for the drift test.
#[derive(Clone, Debug)]
pub struct CConstant {
    /// Macro name in `virtio_pasid.h`.
    pub name: String,
    /// Its value.
    pub value: u64,
}

/// Every `#define` of the C header with the value the Rust side gives it.
pub fn c_constants() -> Vec<CConstant> {
    let mut out = vec![
        CConstant {
            name: "VIRTIO_PASID_VERSION".into(),
            value: VERSION.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_DEFAULT_DEVICE_ID".into(),
            value: DEFAULT_DEVICE_ID.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_VQ_REQUEST".into(),
            value: VQ_REQUEST.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_VQ_MAX".into(),
            value: VQ_MAX as u64,
        },
        CConstant {
            name: "VIRTIO_PASID_F_RESERVED_MASK".into(),
            value: FEATURES_RESERVED_MASK,
        },
        CConstant {
            name: "VIRTIO_PASID_F_LEASE".into(),
            value: F_LEASE.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_F_RECONCILE".into(),
            value: F_RECONCILE.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_RECONCILE_F_FIRST".into(),
            value: RECONCILE_F_FIRST.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_RECONCILE_F_LAST".into(),
            value: RECONCILE_F_LAST.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_LEASE_BATCH_MAX".into(),
            value: LEASE_BATCH_MAX.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_LEASE_MAX".into(),
            value: LEASE_MAX.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_MAX_BITS".into(),
            value: MAX_PASID_BITS.into(),
        },
        CConstant {
            name: "VIRTIO_PASID_NONE".into(),
            value: PASID_NONE.into(),
        },
    ];
    for op in Opcode::ALL {
        out.push(CConstant {
            name: format!("VIRTIO_PASID_OP_{}", op.name()),
            value: op as u64,
        });
    }
    for s in Status::ALL {
        out.push(CConstant {
            name: format!("VIRTIO_PASID_S_{}", s.name()),
            value: s as u64,
        });
    }
    for r in ReconcileResult::ALL {
        out.push(CConstant {
            name: format!("VIRTIO_PASID_RECONCILE_{}", r.name()),
            value: r as u64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn struct_sizes_match_wire_sizes() {
        assert_eq!(size_of::<RawRequest>(), REQUEST_SIZE);
        assert_eq!(size_of::<Response>(), RESPONSE_SIZE);
        assert_eq!(size_of::<Config>(), CONFIG_SIZE);
        assert_eq!(size_of::<LeaseHeader>(), REQUEST_SIZE);
        assert_eq!(
            offset_of!(LeaseHeader, count),
            offset_of!(RawRequest, pasid)
        );
        assert_eq!(offset_of!(LeaseHeader, cached), 6);
        assert_eq!(offset_of!(LeaseHeader, tag), offset_of!(RawRequest, tag));
        // The encoders write fields at these offsets.
        assert_eq!(offset_of!(RawRequest, tag), 8);
        assert_eq!(offset_of!(RawRequest, max), 20);
        assert_eq!(offset_of!(Response, tag), 8);
        assert_eq!(offset_of!(Config, space_id), 24);
    }

    #[test]
    fn requests_display_as_log_fields() {
        let alloc = Request::Alloc {
            tag: 17,
            min: 1,
            max: 100,
        };
        assert_eq!(alloc.to_string(), "op=ALLOC tag=0x11 min=1 max=100");
        let free = Request::Free { tag: 2, pasid: 5 };
        assert_eq!(free.to_string(), "op=FREE tag=0x2 pasid=5");
        assert_eq!(Request::Reset { tag: 0 }.to_string(), "op=RESET tag=0x0");
    }

    #[test]
    fn request_roundtrip_is_little_endian() {
        let req = Request::Alloc {
            tag: 0x0102_0304_0506_0708,
            min: 0x10,
            max: 0xfffff,
        };
        let bytes = req.encode();
        assert_eq!(&bytes[0..2], &[1, 0]);
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..24], &[0xff, 0xff, 0x0f, 0]);
        assert_eq!(RawRequest::decode(&bytes).parse(), Ok(req));
    }

    #[test]
    fn every_opcode_roundtrips() {
        for req in [
            Request::Alloc {
                tag: 1,
                min: 2,
                max: 3,
            },
            Request::Free { tag: 4, pasid: 5 },
            Request::Reset { tag: 6 },
            Request::Grant {
                tag: 7,
                count: 32,
                cached: 3,
                min: 1,
                max: 0xfffff,
            },
            Request::Return {
                tag: 8,
                count: LEASE_BATCH_MAX,
                cached: 0xffff,
            },
            Request::Reconcile {
                tag: 9,
                first: true,
                last: false,
                count: 0,
                cached: 2,
            },
            Request::Reconcile {
                tag: 10,
                first: false,
                last: true,
                count: LEASE_BATCH_MAX,
                cached: 0,
            },
        ] {
            assert_eq!(RawRequest::decode(&req.encode()).parse(), Ok(req));
        }
    }

    #[test]
    fn unknown_opcode_and_flags_are_rejected() {
        let mut raw = RawRequest {
            opcode: 0,
            ..RawRequest::default()
        };
        assert_eq!(raw.parse(), Err(DecodeError::UnknownOpcode(0)));
        raw.opcode = 0xffff;
        assert_eq!(raw.parse(), Err(DecodeError::UnknownOpcode(0xffff)));
        raw.opcode = Opcode::Reset as u16;
        raw.flags = 0x80;
        assert_eq!(raw.parse(), Err(DecodeError::NonZeroFlags(0x80)));
    }

    #[test]
    fn response_and_config_roundtrip() {
        let resp = Response::ok(99, 42);
        assert_eq!(Response::decode(&resp.encode()), resp);
        let fail = Response::new(Status::NotOwner, 7);
        assert_eq!(fail.pasid, PASID_NONE);
        assert_eq!(Status::from_wire(fail.status), Some(Status::NotOwner));
        let cfg = Config {
            version: VERSION,
            pasid_bits: 20,
            pasid_min: 1,
            pasid_max: 0xfffff,
            quota: 1024,
            lease_max: 64,
            space_id: 0xdead_beef_cafe,
        };
        assert_eq!(Config::decode(&cfg.encode()), cfg);
    }

    #[test]
    fn lease_requests_put_count_and_cached_in_the_pasid_word() {
        let grant = Request::Grant {
            tag: 1,
            count: 0x0102,
            cached: 0x0304,
            min: 5,
            max: 6,
        };
        // count 0x0102 is out of range, but the layout is what matters here.
        let bytes = grant.encode();
        assert_eq!(&bytes[4..8], &[0x02, 0x01, 0x04, 0x03]);
        assert_eq!(
            RawRequest::decode(&bytes).parse(),
            Err(DecodeError::BadCount(0x0102))
        );
        let ret = Request::Return {
            tag: 2,
            count: 3,
            cached: 9,
        };
        assert_eq!(ret.list_len(), 12);
        assert_eq!(ret.writable_len(), RESPONSE_SIZE);
        let grant = Request::Grant {
            tag: 3,
            count: 32,
            cached: 0,
            min: 1,
            max: 9,
        };
        assert_eq!(grant.writable_len(), RESPONSE_SIZE + 128);
        assert_eq!(grant.list_len(), 0);
    }

    #[test]
    fn lease_counts_outside_the_batch_are_rejected() {
        for count in [0, LEASE_BATCH_MAX + 1, u16::MAX] {
            for opcode in [Opcode::Grant, Opcode::Return] {
                let raw = RawRequest {
                    opcode: opcode as u16,
                    pasid: u32::from(count),
                    ..RawRequest::default()
                };
                assert_eq!(raw.parse(), Err(DecodeError::BadCount(count)));
            }
        }
    }

    #[test]
    fn reconcile_carries_first_and_last_in_flags_and_a_list_both_ways() {
        let req = Request::Reconcile {
            tag: 1,
            first: true,
            last: true,
            count: 3,
            cached: 1,
        };
        let bytes = req.encode();
        assert_eq!(&bytes[0..2], &[6, 0]);
        assert_eq!(&bytes[2..4], &[3, 0]);
        assert_eq!(&bytes[4..8], &[3, 0, 1, 0]);
        assert_eq!(req.list_len(), 12);
        assert_eq!(req.writable_len(), RESPONSE_SIZE + 12);
        assert_eq!(
            req.to_string(),
            "op=RECONCILE tag=0x1 first=1 last=1 count=3 cached=1"
        );
    }

    #[test]
    fn reconcile_rejects_undefined_flags_and_oversized_lists() {
        let mut raw = RawRequest {
            opcode: Opcode::Reconcile as u16,
            flags: RECONCILE_F_FIRST | 0x8,
            ..RawRequest::default()
        };
        assert_eq!(raw.parse(), Err(DecodeError::NonZeroFlags(0x8)));
        raw.flags = RECONCILE_F_LAST;
        raw.pasid = u32::from(LEASE_BATCH_MAX + 1);
        assert_eq!(raw.parse(), Err(DecodeError::BadCount(LEASE_BATCH_MAX + 1)));
        // FIRST and LAST mean nothing to other opcodes.
        let grant = RawRequest {
            opcode: Opcode::Grant as u16,
            flags: RECONCILE_F_FIRST,
            pasid: 1,
            ..RawRequest::default()
        };
        assert_eq!(
            grant.parse(),
            Err(DecodeError::NonZeroFlags(RECONCILE_F_FIRST))
        );
    }

    #[test]
    fn reconcile_results_have_distinct_wire_values() {
        for r in ReconcileResult::ALL {
            assert_eq!(ReconcileResult::from_wire(r as u32), Some(r));
        }
        assert_eq!(ReconcileResult::from_wire(4), None);
    }

    #[test]
    fn pasid_lists_roundtrip() {
        let pasids = [1, 0xfffff, 7, u32::MAX];
        let bytes = encode_pasids(&pasids);
        assert_eq!(&bytes[4..8], &[0xff, 0xff, 0x0f, 0]);
        assert_eq!(decode_pasids(&bytes), pasids);
        assert_eq!(decode_pasids(&bytes[..7]), [1]);
    }

    #[test]
    fn wire_values_are_unique() {
        for (i, a) in Status::ALL.iter().enumerate() {
            for b in &Status::ALL[i + 1..] {
                assert_ne!(*a as u16, *b as u16);
            }
        }
        assert_eq!(Opcode::from_wire(2), Some(Opcode::Free));
        assert_eq!(Status::from_wire(7), Some(Status::RateLimited));
        assert_eq!(Status::from_wire(8), None);
    }
}
