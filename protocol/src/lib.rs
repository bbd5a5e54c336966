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

use std::fmt;

/// Protocol version reported in [`Config::version`].
pub const VERSION: u32 = 1;

/// Default virtio device ID; see `docs/protocol.md` for why 37.
pub const DEFAULT_DEVICE_ID: u32 = 37;

/// Index of the request virtqueue.
pub const VQ_REQUEST: u16 = 0;
/// Number of virtqueues.
pub const VQ_MAX: usize = 1;

/// Device-specific feature bits 0..=23 are reserved; none is defined yet.
pub const FEATURES_RESERVED_MASK: u64 = 0x0000_0000_00ff_ffff;

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
}

impl Opcode {
    /// Every opcode, for tables and tests.
    pub const ALL: [Opcode; 3] = [Opcode::Alloc, Opcode::Free, Opcode::Reset];

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

/// Why a request buffer could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The opcode is not one of [`Opcode`].
    UnknownOpcode(u16),
    /// The reserved `flags` field is not zero.
    NonZeroFlags(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            DecodeError::NonZeroFlags(flags) => write!(f, "reserved flags {flags:#x} not zero"),
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

/// Device-writable part of a request chain (`struct virtio_pasid_resp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Response {
    /// One of [`Status`], as a wire value.
    pub status: u16,
    /// Reserved, written as zero.
    pub reserved: u16,
    /// ALLOC: the PASID; RESET: references released; otherwise [`PASID_NONE`].
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
    /// Reserved, zero.
    pub reserved: u32,
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
        }
    }
}

impl Request {
    /// The driver's tag.
    pub fn tag(&self) -> u64 {
        match *self {
            Request::Alloc { tag, .. } | Request::Free { tag, .. } | Request::Reset { tag } => tag,
        }
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Alloc { .. } => Opcode::Alloc,
            Request::Free { .. } => Opcode::Free,
            Request::Reset { .. } => Opcode::Reset,
        }
    }

    /// Encodes the request as the driver sends it.
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
        }
        raw.encode()
    }
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
        if self.flags != 0 {
            return Err(DecodeError::NonZeroFlags(self.flags));
        }
        let tag = self.tag;
        match Opcode::from_wire(self.opcode) {
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
        put_le!(buf, 20, self.reserved);
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
            reserved: le_field!(buf, u32, 20),
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
            reserved: 0,
            space_id: 0xdead_beef_cafe,
        };
        assert_eq!(Config::decode(&cfg.encode()), cfg);
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
