// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Byte layout of the durable state: the snapshot, the journal header, the
//! journal's commit frames and the records inside them. docs/state.md
//! describes the same layout for readers of the files.
//!
//! Everything is little-endian. Decoding never trusts a length: every read
//! is bounds-checked, so a damaged file is an error, never a panic.

use pasid_protocol::{PasidList, LEASE_BATCH_MAX, REQUEST_SIZE, RESPONSE_SIZE};

use crate::pasid_space::{OwnerKind, OwnerLimits};
use crate::registry::record::{Answered, OwnerImage, QemuPeer, Record, Reservation, StateImage};

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VPASIDS\x01";
/// First bytes of a journal file.
pub const JOURNAL_MAGIC: [u8; 8] = *b"VPASIDJ\x01";
/// The one format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Snapshot header: magic, version, generation, body length.
pub const SNAPSHOT_HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Journal header: magic, version, generation, CRC of those.
pub const JOURNAL_HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Commit frame header: payload length, sequence number, CRC.
pub const COMMIT_HEADER_LEN: usize = 4 + 8 + 4;
/// Largest payload a commit frame may declare (a sanity bound for readers;
/// writers stay far below it).
pub const MAX_COMMIT_PAYLOAD: u32 = 1 << 30;

/// Bytes of one encoded [`Answered`] without a PASID list (the least an
/// answer takes).
pub const ANSWERED_LEN: usize = 2 + 1 + REQUEST_SIZE + RESPONSE_SIZE;

const REC_BATCH: u8 = 1;
const REC_RECLAIM: u8 = 2;
const REC_LIMITS: u8 = 3;
const REC_ADD_OWNER: u8 = 4;
const REC_GET: u8 = 5;
const REC_PUT: u8 = 6;
const REC_FORGET: u8 = 7;
const REC_PEER: u8 = 8;
const REC_RESERVE: u8 = 9;

/// Longest device description a reservation carries (JSON text).
pub const MAX_DEVICE_LEN: usize = 64 * 1024;

const KIND_VM: u8 = 1;
const KIND_HOST: u8 = 2;

/// Why bytes did not decode, and where (offset within what was decoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {what}")]
pub struct DecodeError {
    /// Offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub what: String,
}

/// A bounds-checked cursor over encoded bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from the start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// An error at the current position.
    pub fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError {
            at: self.pos,
            what: what.into(),
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(slice) = end.and_then(|e| self.buf.get(self.pos..e)) else {
            return Err(self.error(format!(
                "ends early: {n} more bytes needed, {} left",
                self.remaining()
            )));
        };
        self.pos += n;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Appends `v` little-endian.
fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_limits(out: &mut Vec<u8>, limits: &OwnerLimits) {
    put_u32(out, limits.quota);
    put_u32(out, *limits.range.start());
    put_u32(out, *limits.range.end());
}

fn get_limits(r: &mut Reader<'_>) -> Result<OwnerLimits, DecodeError> {
    let quota = r.u32()?;
    let start = r.u32()?;
    let end = r.u32()?;
    if start > end {
        return Err(r.error(format!("empty PASID range {start}-{end}")));
    }
    Ok(OwnerLimits {
        quota,
        range: start..=end,
    })
}

fn put_kind(out: &mut Vec<u8>, kind: OwnerKind) {
    out.push(match kind {
        OwnerKind::Vm => KIND_VM,
        OwnerKind::Host => KIND_HOST,
    });
}

fn get_kind(r: &mut Reader<'_>) -> Result<OwnerKind, DecodeError> {
    match r.u8()? {
        KIND_VM => Ok(OwnerKind::Vm),
        KIND_HOST => Ok(OwnerKind::Host),
        other => Err(r.error(format!("unknown owner kind {other}"))),
    }
}

/// Owner names are short (config and control socket bound them); a longer
/// one cannot be written and is refused when read.
pub const MAX_NAME_LEN: usize = 1024;

fn put_name(out: &mut Vec<u8>, name: &str) {
    let bytes = name.as_bytes();
    let bytes = bytes.get(..MAX_NAME_LEN).unwrap_or(bytes);
    put_u16(out, u16::try_from(bytes.len()).unwrap_or(0));
    out.extend_from_slice(bytes);
}

fn get_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = usize::from(r.u16()?);
    if len > MAX_NAME_LEN {
        return Err(r.error(format!("owner name of {len} bytes")));
    }
    let at = r.position();
    let bytes = r.bytes(len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError {
        at,
        what: "owner name is not UTF-8".into(),
    })
}

/// Answer flag: given again from the record of an earlier answer.
const ANSWER_REPLAYED: u8 = 1 << 0;
/// Answer flag: a PASID list follows the response (a GRANT's granted
/// PASIDs, a RETURN's list): a count byte, then that many `u32`s.
/// Journals written before leases never set it, and still load.
const ANSWER_LIST: u8 = 1 << 1;
/// Answer flag: a RECONCILE's results follow (after the list, if any): a
/// count byte, then that many `u32`s. Journals written before RECONCILE
/// never set it, and still load.
const ANSWER_RESULTS: u8 = 1 << 2;

/// Appends one answer.
fn put_answered(out: &mut Vec<u8>, a: &Answered) {
    put_u16(out, a.position);
    let list = a.list.as_slice();
    let mut flags = 0;
    if a.replayed {
        flags |= ANSWER_REPLAYED;
    }
    if !list.is_empty() {
        flags |= ANSWER_LIST;
    }
    let results = a.results.as_slice();
    if !results.is_empty() {
        flags |= ANSWER_RESULTS;
    }
    out.push(flags);
    out.extend_from_slice(&a.request);
    out.extend_from_slice(&a.response);
    for words in [list, results] {
        if !words.is_empty() {
            // A list holds at most LEASE_BATCH_MAX (64) entries.
            out.push(u8::try_from(words.len()).unwrap_or(0));
            for word in words {
                put_u32(out, *word);
            }
        }
    }
}

/// Reads a count byte and that many `u32`s (1 to [`LEASE_BATCH_MAX`]).
fn get_list(r: &mut Reader<'_>, what: &str) -> Result<PasidList, DecodeError> {
    let mut list = PasidList::default();
    let count = usize::from(r.u8()?);
    let Some(slots) = list.slots(count).filter(|s| !s.is_empty()) else {
        return Err(r.error(format!(
            "answer lists {count} {what}, expected 1 to {LEASE_BATCH_MAX}"
        )));
    };
    for slot in slots {
        *slot = r.u32()?;
    }
    Ok(list)
}

fn get_answered(r: &mut Reader<'_>) -> Result<Answered, DecodeError> {
    let position = r.u16()?;
    let flags = r.u8()?;
    if flags & !(ANSWER_REPLAYED | ANSWER_LIST | ANSWER_RESULTS) != 0 {
        return Err(r.error(format!("unknown answer flags {flags:#x}")));
    }
    let request = r.array()?;
    let response = r.array()?;
    let list = if flags & ANSWER_LIST != 0 {
        get_list(r, "PASIDs")?
    } else {
        PasidList::default()
    };
    let results = if flags & ANSWER_RESULTS != 0 {
        get_list(r, "results")?
    } else {
        PasidList::default()
    };
    Ok(Answered {
        position,
        replayed: flags & ANSWER_REPLAYED != 0,
        request,
        response,
        list,
        results,
    })
}

/// Appends a [`Record::Batch`] of `answers` (without building the record:
/// the registry encodes a drain's answers straight from its own list). At
/// most `u16::MAX` answers fit; a drain takes at most a queue's worth.
pub fn put_batch(out: &mut Vec<u8>, owner: u32, answers: &[Answered]) {
    let answers = answers.get(..usize::from(u16::MAX)).unwrap_or(answers);
    out.push(REC_BATCH);
    put_u32(out, owner);
    put_u16(out, u16::try_from(answers.len()).unwrap_or(0));
    for a in answers {
        put_answered(out, a);
    }
}

/// Appends one record.
pub fn put_record(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Batch { owner, answers } => put_batch(out, *owner, answers),
        Record::Reclaim { owner } => {
            out.push(REC_RECLAIM);
            put_u32(out, *owner);
        }
        Record::Limits { owner, limits } => {
            out.push(REC_LIMITS);
            put_u32(out, *owner);
            put_limits(out, limits);
        }
        Record::AddOwner { kind, name, limits } => {
            out.push(REC_ADD_OWNER);
            put_kind(out, *kind);
            put_name(out, name);
            put_limits(out, limits);
        }
        Record::Get { owner, pasid } => {
            out.push(REC_GET);
            put_u32(out, *owner);
            put_u32(out, *pasid);
        }
        Record::Put { owner, pasid } => {
            out.push(REC_PUT);
            put_u32(out, *owner);
            put_u32(out, *pasid);
        }
        Record::Forget { owner } => {
            out.push(REC_FORGET);
            put_u32(out, *owner);
        }
        Record::Peer { owner, peer } => {
            out.push(REC_PEER);
            put_u32(out, *owner);
            match peer {
                Some(p) => {
                    out.push(1);
                    put_u32(out, p.pid);
                    out.extend_from_slice(&p.boot_id);
                }
                None => out.push(0),
            }
        }
        Record::Reserve(reservation) => put_reservation(out, reservation),
    }
}

/// Appends a [`Record::Reserve`]: owner, deadline, the PASIDs (a `u32`
/// count, then each), and the device (a `u32` length, then that many
/// bytes of UTF-8 JSON; 0 for none).
fn put_reservation(out: &mut Vec<u8>, r: &Reservation) {
    out.push(REC_RESERVE);
    put_u32(out, r.owner);
    put_u64(out, r.deadline_ms);
    put_u32(out, u32::try_from(r.pasids.len()).unwrap_or(0));
    for pasid in r.pasids.iter().take(u32::MAX as usize) {
        put_u32(out, *pasid);
    }
    let device = r
        .device
        .as_deref()
        .filter(|d| d.len() <= MAX_DEVICE_LEN)
        .unwrap_or("");
    put_u32(out, u32::try_from(device.len()).unwrap_or(0));
    out.extend_from_slice(device.as_bytes());
}

fn get_reservation(r: &mut Reader<'_>) -> Result<Reservation, DecodeError> {
    let owner = r.u32()?;
    let deadline_ms = r.u64()?;
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count.saturating_mul(4) > r.remaining() {
        return Err(r.error(format!("reservation of {count} PASIDs overruns its record")));
    }
    let pasids = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
    let len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if len > MAX_DEVICE_LEN {
        return Err(r.error(format!("device description of {len} bytes")));
    }
    let at = r.position();
    let device = match r.bytes(len)? {
        [] => None,
        bytes => Some(String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError {
            at,
            what: "device description is not UTF-8".into(),
        })?),
    };
    if deadline_ms == 0 && (count > 0 || device.is_some()) {
        return Err(r.error("a reservation's end carries PASIDs or a device"));
    }
    Ok(Reservation {
        owner,
        deadline_ms,
        pasids,
        device,
    })
}

/// Reads one record.
pub fn get_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    let at = r.position();
    Ok(match r.u8()? {
        REC_BATCH => {
            let owner = r.u32()?;
            let count = usize::from(r.u16()?);
            if count.saturating_mul(ANSWERED_LEN) > r.remaining() {
                return Err(r.error(format!("batch of {count} answers overruns its commit")));
            }
            let answers = (0..count)
                .map(|_| get_answered(r))
                .collect::<Result<_, _>>()?;
            Record::Batch { owner, answers }
        }
        REC_RECLAIM => Record::Reclaim { owner: r.u32()? },
        REC_LIMITS => Record::Limits {
            owner: r.u32()?,
            limits: get_limits(r)?,
        },
        REC_ADD_OWNER => Record::AddOwner {
            kind: get_kind(r)?,
            name: get_name(r)?,
            limits: get_limits(r)?,
        },
        REC_GET => Record::Get {
            owner: r.u32()?,
            pasid: r.u32()?,
        },
        REC_PUT => Record::Put {
            owner: r.u32()?,
            pasid: r.u32()?,
        },
        REC_FORGET => Record::Forget { owner: r.u32()? },
        REC_PEER => Record::Peer {
            owner: r.u32()?,
            peer: match r.u8()? {
                0 => None,
                1 => Some(QemuPeer {
                    pid: r.u32()?,
                    boot_id: r.array()?,
                }),
                other => return Err(r.error(format!("bad QEMU process flag {other}"))),
            },
        },
        REC_RESERVE => Record::Reserve(get_reservation(r)?),
        other => {
            return Err(DecodeError {
                at,
                what: format!("unknown record type {other}"),
            })
        }
    })
}

/// Every record of one commit payload.
pub fn get_records(payload: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut r = Reader::new(payload);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.push(get_record(&mut r)?);
    }
    Ok(out)
}

/// Encodes a whole snapshot file of `generation`.
pub fn encode_snapshot(image: &StateImage, generation: u64) -> Vec<u8> {
    let holdings: usize = image.owners.iter().map(|o| o.holdings.len()).sum();
    let mut body = Vec::with_capacity(64 + holdings * 8 + image.owners.len() * 64);
    put_u32(&mut body, image.pasid_bits);
    put_u64(&mut body, image.space_id);
    put_u32(&mut body, u32::try_from(image.owners.len()).unwrap_or(0));
    for o in &image.owners {
        put_kind(&mut body, o.kind);
        put_name(&mut body, &o.name);
        put_limits(&mut body, &o.limits);
        match &o.configured {
            Some(c) => {
                body.push(1);
                put_limits(&mut body, c);
            }
            None => body.push(0),
        }
        let window = o.window.get(..usize::from(u16::MAX)).unwrap_or(&o.window);
        put_u16(&mut body, u16::try_from(window.len()).unwrap_or(0));
        for a in window {
            put_answered(&mut body, a);
        }
        put_u32(&mut body, u32::try_from(o.holdings.len()).unwrap_or(0));
        for (pasid, refs) in &o.holdings {
            put_u32(&mut body, *pasid);
            put_u32(&mut body, *refs);
        }
    }
    // After the owners: records that describe an owner rather than what
    // it holds, in the journal's encoding. Snapshots written before they
    // existed end at the last owner, and still load.
    for (index, o) in image.owners.iter().enumerate() {
        if let (Some(peer), Ok(owner)) = (o.peer, u32::try_from(index)) {
            put_record(
                &mut body,
                &Record::Peer {
                    owner,
                    peer: Some(peer),
                },
            );
        }
    }
    // After the owners, records of what is in force beyond holdings, in
    // the journal's encoding; a snapshot written before them ends here.
    for reservation in &image.reservations {
        put_reservation(&mut body, reservation);
    }
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + body.len() + 4);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_u64(&mut out, generation);
    put_u64(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

/// A snapshot whose header could be read, with the generation it claims.
#[derive(Debug)]
pub struct SnapshotProblem {
    /// The generation its header names, if the header is intact.
    pub generation: Option<u64>,
    /// What is wrong.
    pub error: DecodeError,
}

/// Decodes a snapshot file; returns its generation and image. Bytes after
/// the checksum are ignored (a shorter snapshot written over a longer one
/// whose truncation was lost).
pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, StateImage), SnapshotProblem> {
    let mut r = Reader::new(bytes);
    let fail = |generation, error| SnapshotProblem { generation, error };
    let magic: [u8; 8] = r.array().map_err(|e| fail(None, e))?;
    if magic != SNAPSHOT_MAGIC {
        return Err(fail(
            None,
            r.error("not a vhost-user-pasid snapshot (bad magic)"),
        ));
    }
    let version = r.u32().map_err(|e| fail(None, e))?;
    if version != FORMAT_VERSION {
        return Err(fail(
            None,
            r.error(format!(
                "format version {version}; this build reads version {FORMAT_VERSION}"
            )),
        ));
    }
    let generation = r.u64().map_err(|e| fail(None, e))?;
    let g = Some(generation);
    let body_len = r.u64().map_err(|e| fail(g, e))?;
    let body_len = usize::try_from(body_len)
        .ok()
        .filter(|n| n.saturating_add(4) <= r.remaining())
        .ok_or_else(|| {
            fail(
                g,
                r.error(format!(
                    "declares {body_len} bytes of content but the file has {} (incomplete write)",
                    r.remaining()
                )),
            )
        })?;
    let covered = SNAPSHOT_HEADER_LEN + body_len;
    let body = r.bytes(body_len).map_err(|e| fail(g, e))?;
    let stored = r.u32().map_err(|e| fail(g, e))?;
    let computed = bytes.get(..covered).map(crc32fast::hash).unwrap_or(!stored);
    if stored != computed {
        return Err(fail(
            g,
            DecodeError {
                at: covered,
                what: format!(
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            },
        ));
    }
    let image = decode_body(body).map_err(|mut e| {
        e.at += SNAPSHOT_HEADER_LEN;
        fail(g, e)
    })?;
    Ok((generation, image))
}

fn decode_body(body: &[u8]) -> Result<StateImage, DecodeError> {
    let mut r = Reader::new(body);
    let pasid_bits = r.u32()?;
    let space_id = r.u64()?;
    let count = r.u32()?;
    let mut owners = Vec::new();
    for _ in 0..count {
        let kind = get_kind(&mut r)?;
        let name = get_name(&mut r)?;
        let limits = get_limits(&mut r)?;
        let configured = match r.u8()? {
            0 => None,
            1 => Some(get_limits(&mut r)?),
            other => return Err(r.error(format!("bad configured-limits flag {other}"))),
        };
        let window_len = usize::from(r.u16()?);
        if window_len.saturating_mul(ANSWERED_LEN) > r.remaining() {
            return Err(r.error(format!("window of {window_len} answers overruns the file")));
        }
        let window = (0..window_len)
            .map(|_| get_answered(&mut r))
            .collect::<Result<_, _>>()?;
        let held = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if held.saturating_mul(8) > r.remaining() {
            return Err(r.error(format!("{held} holdings overrun the file")));
        }
        let mut holdings = Vec::with_capacity(held);
        for _ in 0..held {
            holdings.push((r.u32()?, r.u32()?));
        }
        owners.push(OwnerImage {
            kind,
            name,
            limits,
            configured,
            window,
            holdings,
            peer: None,
        });
    }
    // Records after the owners until the end: the QEMU process of a VM,
    // a reservation in force.
    let mut reservations = Vec::new();
    while r.remaining() > 0 {
        let at = r.position();
        match get_record(&mut r)? {
            Record::Peer { owner, peer } => {
                let Some(o) = usize::try_from(owner).ok().and_then(|i| owners.get_mut(i)) else {
                    return Err(DecodeError {
                        at,
                        what: format!("QEMU process of owner {owner}, which does not exist"),
                    });
                };
                o.peer = peer;
            }
            Record::Reserve(reservation) if !reservation.is_end() => {
                reservations.push(reservation);
            }
            other => {
                return Err(DecodeError {
                    at,
                    what: format!("a {other:?} record does not belong after the owners"),
                })
            }
        }
    }
    Ok(StateImage {
        pasid_bits,
        space_id,
        owners,
        reservations,
    })
}

/// Encodes a journal header of `generation`.
pub fn encode_journal_header(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOURNAL_HEADER_LEN);
    out.extend_from_slice(&JOURNAL_MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_u64(&mut out, generation);
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

/// Decodes a journal header; returns its generation.
pub fn decode_journal_header(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(bytes);
    let magic: [u8; 8] = r.array()?;
    if magic != JOURNAL_MAGIC {
        return Err(DecodeError {
            at: 0,
            what: "not a vhost-user-pasid journal (bad magic)".into(),
        });
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(r.error(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    let generation = r.u64()?;
    let stored = r.u32()?;
    let computed = bytes
        .get(..JOURNAL_HEADER_LEN - 4)
        .map(crc32fast::hash)
        .unwrap_or(!stored);
    if stored != computed {
        return Err(r.error("header checksum mismatch"));
    }
    Ok(generation)
}

/// Checksum of a commit frame: covers the journal's generation (so a frame
/// left over from another generation never validates), the frame's length
/// and sequence number, and its payload.
pub fn commit_crc(generation: u64, len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Fills in the frame header reserved at the start of `frame` (the first
/// [`COMMIT_HEADER_LEN`] bytes) for the payload after it.
pub fn seal_commit(frame: &mut [u8], generation: u64, seq: u64) {
    let Some((head, payload)) = frame.split_at_mut_checked(COMMIT_HEADER_LEN) else {
        return;
    };
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = commit_crc(generation, len, seq, payload);
    let mut h = Vec::with_capacity(COMMIT_HEADER_LEN);
    put_u32(&mut h, len);
    put_u64(&mut h, seq);
    put_u32(&mut h, crc);
    head.copy_from_slice(&h);
}

/// One commit frame read back.
#[derive(Debug)]
pub struct Commit<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// Its records, still encoded.
    pub payload: &'a [u8],
    /// Bytes the frame takes, header included.
    pub len: usize,
}

/// The header of the commit frame at the start of `bytes`: payload
/// length (at most [`MAX_COMMIT_PAYLOAD`]), sequence number and CRC, and a
/// reader positioned at the payload. `None` if it is cut short or declares
/// an impossible length. Nothing is verified yet.
fn commit_header(bytes: &[u8]) -> Option<(u32, u64, u32, Reader<'_>)> {
    let mut r = Reader::new(bytes);
    let len = r.u32().ok()?;
    let seq = r.u64().ok()?;
    let crc = r.u32().ok()?;
    (len <= MAX_COMMIT_PAYLOAD).then_some((len, seq, crc, r))
}

/// The sequence number the commit frame at the start of `bytes` claims,
/// unverified: a cheap filter before [`read_commit`].
pub fn claimed_seq(bytes: &[u8]) -> Option<u64> {
    commit_header(bytes).map(|(_, seq, _, _)| seq)
}

/// Reads the commit frame at the start of `bytes` if it is whole and its
/// checksum holds; `None` otherwise (torn, damaged or not a frame).
pub fn read_commit(bytes: &[u8], generation: u64) -> Option<Commit<'_>> {
    let (len, seq, crc, mut r) = commit_header(bytes)?;
    let payload = r.bytes(usize::try_from(len).ok()?).ok()?;
    (commit_crc(generation, len, seq, payload) == crc).then_some(Commit {
        seq,
        payload,
        len: COMMIT_HEADER_LEN + payload.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(position: u16) -> Answered {
        Answered {
            position,
            request: [position.to_le_bytes()[0]; REQUEST_SIZE],
            response: [7; RESPONSE_SIZE],
            // Every third answer carries a lease list.
            list: if position % 3 == 0 {
                PasidList::from_slice(&[u32::from(position) + 1, 0xfffff]).unwrap()
            } else {
                PasidList::default()
            },
            // Every fifth carries RECONCILE results.
            results: if position % 5 == 0 {
                PasidList::from_slice(&[0, 1, 2, 3]).unwrap()
            } else {
                PasidList::default()
            },
            replayed: position % 2 == 0,
        }
    }

    fn image() -> StateImage {
        StateImage {
            pasid_bits: 20,
            space_id: 0x1234_5678_9abc_def1,
            owners: vec![
                OwnerImage {
                    kind: OwnerKind::Vm,
                    name: "vm0".into(),
                    limits: OwnerLimits {
                        quota: 10,
                        range: 1..=100,
                    },
                    configured: Some(OwnerLimits {
                        quota: 20,
                        range: 1..=100,
                    }),
                    window: vec![answered(65535), answered(0)],
                    holdings: vec![(5, 1), (9, 3)],
                    peer: Some(QemuPeer {
                        pid: 4_194_304,
                        boot_id: *b"0123456789abcdef",
                    }),
                },
                OwnerImage {
                    kind: OwnerKind::Host,
                    name: "iommu".into(),
                    limits: OwnerLimits {
                        quota: u32::MAX,
                        range: 1..=0xfffff,
                    },
                    configured: None,
                    window: Vec::new(),
                    holdings: vec![(9, 1)],
                    peer: None,
                },
            ],
            reservations: vec![Reservation {
                owner: 0,
                deadline_ms: 1_790_000_000_000,
                pasids: vec![5, 9],
                device: Some(r#"{"driver":"vhost-user-test-device-pci"}"#.into()),
            }],
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let bytes = encode_snapshot(&image(), 42);
        let (generation, back) = decode_snapshot(&bytes).unwrap();
        assert_eq!(generation, 42);
        assert_eq!(back, image());
        // Trailing bytes from an older, longer snapshot are ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xaa; 100]);
        assert_eq!(decode_snapshot(&longer).unwrap().1, image());
    }

    /// A snapshot written before VMs had a QEMU process (it ends at the
    /// last owner) still loads, with no process bound; an owner record
    /// naming an owner that does not exist, or a holdings record after the
    /// owners, is refused.
    #[test]
    fn snapshots_without_owner_records_load() {
        let mut old = image();
        old.owners[0].peer = None;
        let bytes = encode_snapshot(&old, 9);
        let (_, back) = decode_snapshot(&bytes).unwrap();
        assert_eq!(back, old);
        for stray in [
            Record::Peer {
                owner: 5,
                peer: None,
            },
            Record::Reclaim { owner: 0 },
        ] {
            let mut body = Vec::new();
            put_u32(&mut body, old.pasid_bits);
            put_u64(&mut body, old.space_id);
            put_u32(&mut body, 0);
            put_record(&mut body, &stray);
            let mut file = SNAPSHOT_MAGIC.to_vec();
            put_u32(&mut file, FORMAT_VERSION);
            put_u64(&mut file, 1);
            put_u64(&mut file, body.len() as u64);
            file.extend_from_slice(&body);
            let crc = crc32fast::hash(&file);
            put_u32(&mut file, crc);
            assert!(decode_snapshot(&file).is_err(), "{stray:?}");
        }
    }

    #[test]
    fn every_damaged_or_short_snapshot_is_refused() {
        let bytes = encode_snapshot(&image(), 3);
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                assert!(decode_snapshot(&bad).is_err(), "flip {bit:#x} at {at}");
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record::Batch {
                owner: 3,
                answers: vec![answered(1), answered(2)],
            },
            Record::Reclaim { owner: 1 },
            Record::Limits {
                owner: 0,
                limits: OwnerLimits {
                    quota: 4,
                    range: 2..=9,
                },
            },
            Record::AddOwner {
                kind: OwnerKind::Host,
                name: "drv".into(),
                limits: OwnerLimits {
                    quota: u32::MAX,
                    range: 1..=0xfffff,
                },
            },
            Record::Get { owner: 4, pasid: 9 },
            Record::Put { owner: 4, pasid: 9 },
            Record::Forget { owner: 4 },
            Record::Peer {
                owner: 0,
                peer: Some(QemuPeer {
                    pid: 77,
                    boot_id: [0xb0; 16],
                }),
            },
            Record::Peer {
                owner: 0,
                peer: None,
            },
            Record::Reserve(Reservation {
                owner: 0,
                deadline_ms: 1_790_000_000_000,
                pasids: vec![3, 4, 0xfffff],
                device: Some("{}".into()),
            }),
            Record::Reserve(Reservation::ended(0)),
        ];
        let mut buf = Vec::new();
        for r in &records {
            put_record(&mut buf, r);
        }
        assert_eq!(get_records(&buf).unwrap(), records);
        for cut in 0..buf.len() {
            // A cut inside a record never decodes as something else silently.
            let got = get_records(&buf[..cut]);
            if let Ok(got) = got {
                assert!(records.starts_with(&got), "cut at {cut}");
            }
        }
    }

    #[test]
    fn commit_frames_validate_generation_and_content() {
        let mut frame = vec![0u8; COMMIT_HEADER_LEN];
        put_record(&mut frame, &Record::Reclaim { owner: 7 });
        seal_commit(&mut frame, 5, 1);
        let c = read_commit(&frame, 5).unwrap();
        assert_eq!((c.seq, c.len), (1, frame.len()));
        assert!(read_commit(&frame, 6).is_none(), "another generation");
        for cut in 0..frame.len() {
            assert!(read_commit(&frame[..cut], 5).is_none());
        }
        for at in 0..frame.len() {
            let mut bad = frame.clone();
            bad[at] ^= 0x10;
            assert!(read_commit(&bad, 5).is_none(), "flip at {at}");
        }
    }

    /// The fuzz seeds are written by a Python script from docs/state.md
    /// alone: that they decode checks the document against the code.
    #[test]
    fn the_documented_layout_is_the_one_decoded() {
        let seed = include_bytes!("../../fuzz/seeds/state_decode/snapshot");
        let (generation, image) = decode_snapshot(&seed[1..]).unwrap();
        assert_eq!(
            (generation, image.pasid_bits, image.space_id),
            (5, 12, 0x1234567)
        );
        let names: Vec<_> = image.owners.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["web", "db", "", "iommu"]);
        assert_eq!(image.owners[0].holdings, [(4, 1), (5, 2), (7, 1)]);
        assert_eq!(image.owners[0].window[0].position, 10);
        assert!(image.owners[2].is_vacant());
        assert_eq!(image.owners[3].kind, OwnerKind::Host);

        let seed = include_bytes!("../../fuzz/seeds/state_decode/records");
        let records = get_records(&seed[1..]).unwrap();
        assert_eq!(records.len(), 7);
        assert!(
            matches!(&records[0], Record::Batch { owner: 0, answers } if answers.len() == 3 && answers[2].replayed)
        );
        assert_eq!(records[5], Record::Put { owner: 2, pasid: 5 });
        assert_eq!(records[6], Record::Forget { owner: 2 });

        let seed = include_bytes!("../../fuzz/seeds/state_decode/frame");
        let frame = read_commit(&seed[1..], 1).unwrap();
        assert_eq!(
            (frame.seq, frame.payload.len()),
            (1, seed.len() - 1 - COMMIT_HEADER_LEN)
        );
        let header = encode_journal_header(1);
        assert_eq!(&header[..8], b"VPASIDJ\x01");
    }

    #[test]
    fn journal_header_round_trips_and_rejects_damage() {
        let h = encode_journal_header(77);
        assert_eq!(h.len(), JOURNAL_HEADER_LEN);
        assert_eq!(decode_journal_header(&h).unwrap(), 77);
        for at in 0..h.len() {
            let mut bad = h.clone();
            bad[at] ^= 1;
            assert!(decode_journal_header(&bad).is_err());
        }
    }
}
