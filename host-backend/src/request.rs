// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Reads one request out of a descriptor chain and writes its response.
//!
//! Guest memory is hostile: every descriptor's direction, length and address
//! is checked before a byte is read. A chain whose descriptors are out of
//! order or outside guest memory, that cannot be walked to its end (a bad
//! `next`, a loop, a bad indirect table), or that has no room for a
//! response, is returned unused (length 0). A chain of the right shape whose request is
//! the wrong size or does not decode is answered `INVALID`. Nothing here can
//! panic on guest input.

use std::ops::Deref;

use pasid_protocol::{
    Answer, Opcode, PasidList, RawRequest, Request, Response, Status, LEASE_BATCH_MAX,
    PASID_ENTRY_SIZE, REQUEST_SIZE, RESPONSE_SIZE,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Used length of an answered chain (16 fits in u32).
#[allow(clippy::cast_possible_truncation)]
const RESPONSE_LEN: u32 = RESPONSE_SIZE as u32;

/// Most PASIDs one GRANT or RETURN carries.
const BATCH_MAX: usize = LEASE_BATCH_MAX as usize;

/// Most bytes read from a chain's readable part: a RETURN with a full list.
/// Nothing past it is ever read, whatever the descriptors claim.
pub const READABLE_MAX: usize = REQUEST_SIZE + BATCH_MAX * PASID_ENTRY_SIZE;

/// Most bytes written into a chain's writable part: a GRANT's response
/// with a full list.
const WRITTEN_MAX: usize = RESPONSE_SIZE + BATCH_MAX * PASID_ENTRY_SIZE;

/// Why a chain could not be turned into a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one.
    #[error("readable descriptor {index} after a writable one")]
    ReadableAfterWritable {
        /// Position of the offending descriptor in the chain.
        index: usize,
    },
    /// The readable part is not exactly one request.
    #[error("request is {found} bytes, expected {expected}")]
    RequestSize {
        /// Bytes found.
        found: u64,
        /// Bytes expected.
        expected: usize,
    },
    /// The writable part cannot hold a response.
    #[error("response buffer is {found} bytes, need {expected}")]
    ResponseSize {
        /// Bytes found.
        found: u64,
        /// Bytes expected.
        expected: usize,
    },
    /// A descriptor points outside guest memory.
    #[error("descriptor at {addr:#x}+{len} is outside guest memory")]
    OutsideMemory {
        /// Guest-physical address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
    /// The chain could not be walked to its end: a `next` index outside its
    /// table, a loop, a nested or misaligned indirect table, or buffers
    /// adding up to 4 GiB or more. virtio-queue stops walking such a chain
    /// quietly; the last descriptor it yielded still says "next".
    #[error(
        "chain breaks off after {walked} descriptors (bad next index, loop or bad indirect table)"
    )]
    Unterminated {
        /// Descriptors walked before the chain broke off.
        walked: usize,
    },
    /// The request bytes do not decode.
    #[error("malformed request: {0}")]
    Decode(#[from] pasid_protocol::DecodeError),
    /// GRANT or RETURN on a device where VIRTIO_PASID_F_LEASE was not
    /// negotiated.
    #[error("{} without VIRTIO_PASID_F_LEASE negotiated", .0.name())]
    LeaseNotNegotiated(Opcode),
    /// RECONCILE on a device where VIRTIO_PASID_F_RECONCILE was not
    /// negotiated.
    #[error("RECONCILE without VIRTIO_PASID_F_RECONCILE negotiated")]
    ReconcileNotNegotiated,
}

/// The device-type features the driver accepted: the requests they add
/// are malformed without them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// VIRTIO_PASID_F_LEASE: GRANT and RETURN.
    pub lease: bool,
    /// VIRTIO_PASID_F_RECONCILE: RECONCILE.
    pub reconcile: bool,
}

/// What happened to one chain, for logging and counters.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainOutcome {
    /// A well-formed request was answered.
    Answered {
        /// The request.
        request: Request,
        /// The response written.
        response: Response,
        /// PASIDs written after the response (a GRANT answered OK).
        granted: usize,
    },
    /// The chain was malformed; an `INVALID` response was written.
    Rejected(ChainError),
    /// The chain was malformed and had no room for a response: returned unused.
    Dropped(ChainError),
}

impl ChainOutcome {
    /// Bytes written into the chain, for the used ring: the response, and
    /// the PASIDs a GRANT answered OK carries.
    pub fn used_len(&self) -> u32 {
        match self {
            ChainOutcome::Answered { granted, .. } => {
                // At most 16 + 4 * 64.
                u32::try_from(RESPONSE_SIZE + granted * PASID_ENTRY_SIZE).unwrap_or(0)
            }
            ChainOutcome::Rejected(_) => RESPONSE_LEN,
            ChainOutcome::Dropped(_) => 0,
        }
    }
}

/// A guest buffer: one descriptor's address and length.
#[derive(Clone, Copy, Debug)]
struct Buffer {
    addr: GuestAddress,
    len: u32,
}

/// The readable and writable halves of a chain, in order.
#[derive(Debug, Default)]
struct Split {
    readable: Vec<Buffer>,
    writable: Vec<Buffer>,
}

/// Separates the chain into its halves, checking order and bounds.
fn split_chain<M>(chain: DescriptorChain<M>) -> Result<Split, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut split = Split::default();
    let mut errors = None;
    // Collect first so that `mem` (borrowed from the chain) stays usable.
    // The walk is bounded by the queue (or indirect table) size.
    let descs: Vec<_> = chain.clone().collect();
    if descs.last().is_some_and(|d| d.has_next()) {
        return Err(ChainError::Unterminated {
            walked: descs.len(),
        });
    }
    for (index, desc) in descs.iter().enumerate() {
        let buf = Buffer {
            addr: desc.addr(),
            len: desc.len(),
        };
        let access = if desc.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !mem.check_range(buf.addr, buf.len as usize, access) {
            errors.get_or_insert(ChainError::OutsideMemory {
                addr: buf.addr.0,
                len: buf.len,
            });
        }
        if desc.is_write_only() {
            split.writable.push(buf);
        } else if split.writable.is_empty() {
            split.readable.push(buf);
        } else {
            errors.get_or_insert(ChainError::ReadableAfterWritable { index });
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(split),
    }
}

fn total_len(bufs: &[Buffer]) -> u64 {
    bufs.iter().map(|b| u64::from(b.len)).sum()
}

/// Gathers `out.len()` bytes from the buffers, starting `skip` bytes into
/// them. The caller has checked that the buffers hold that many.
fn gather<M: GuestMemory + ?Sized>(
    mem: &M,
    bufs: &[Buffer],
    mut skip: usize,
    out: &mut [u8],
) -> Result<(), ChainError> {
    let mut filled = 0usize;
    for b in bufs {
        if filled == out.len() {
            break;
        }
        let len = b.len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - filled);
        let outside = ChainError::OutsideMemory {
            addr: b.addr.0,
            len: b.len,
        };
        let dst = out.get_mut(filled..filled + n).ok_or(outside)?;
        let at = b.addr.checked_add(skip as u64).ok_or(outside)?;
        mem.read_slice(dst, at).map_err(|_| outside)?;
        filled += n;
        skip = 0;
    }
    Ok(())
}

/// Scatters `bytes` over the writable buffers, from their start.
fn scatter<M: GuestMemory + ?Sized>(
    mem: &M,
    bufs: &[Buffer],
    bytes: &[u8],
) -> Result<(), ChainError> {
    let mut rest = bytes;
    for b in bufs {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(b.len as usize);
        let (now, later) = rest.split_at(n);
        mem.write_slice(now, b.addr)
            .map_err(|_| ChainError::OutsideMemory {
                addr: b.addr.0,
                len: b.len,
            })?;
        rest = later;
    }
    Ok(())
}

/// A request read from a chain: the request and, for RETURN, its list.
type ReadRequest = (Request, PasidList);

/// Reads and checks the request of a chain whose halves passed
/// [`split_chain`] and whose writable part holds `room` bytes, per rows 3
/// and 4 of the validation table (docs/protocol.md 5.x.6.1). On error,
/// returns the tag to echo (0 when the request was not read).
fn read_request<M: GuestMemory + ?Sized>(
    mem: &M,
    split: &Split,
    room: u64,
    negotiated: Negotiated,
) -> Result<ReadRequest, (ChainError, u64)> {
    let found = total_len(&split.readable);
    let wrong_size = ChainError::RequestSize {
        found,
        expected: REQUEST_SIZE,
    };
    if found < REQUEST_SIZE as u64 {
        return Err((wrong_size, 0));
    }
    let mut header = [0u8; REQUEST_SIZE];
    gather(mem, &split.readable, 0, &mut header).map_err(|e| (e, 0))?;
    let raw = RawRequest::decode(&header);
    let with_list = [Opcode::Return as u16, Opcode::Reconcile as u16];
    if found != REQUEST_SIZE as u64 && !with_list.contains(&raw.opcode) {
        return Err((wrong_size, 0));
    }
    let tag = raw.tag;
    let request = raw.parse().map_err(|e| (ChainError::from(e), tag))?;
    if matches!(request, Request::Grant { .. } | Request::Return { .. }) && !negotiated.lease {
        return Err((ChainError::LeaseNotNegotiated(request.opcode()), tag));
    }
    if matches!(request, Request::Reconcile { .. }) && !negotiated.reconcile {
        return Err((ChainError::ReconcileNotNegotiated, tag));
    }
    let mut list = PasidList::default();
    let expected = REQUEST_SIZE + request.list_len();
    if found != expected as u64 {
        return Err((ChainError::RequestSize { found, expected }, tag));
    }
    if room < request.writable_len() as u64 {
        return Err((
            ChainError::ResponseSize {
                found: room,
                expected: request.writable_len(),
            },
            tag,
        ));
    }
    if let Request::Return { count, .. } | Request::Reconcile { count, .. } = request {
        let mut bytes = [0u8; READABLE_MAX - REQUEST_SIZE];
        let bytes = bytes
            .get_mut(..request.list_len())
            .ok_or((wrong_size, tag))?;
        gather(mem, &split.readable, REQUEST_SIZE, bytes).map_err(|e| (e, tag))?;
        let slots = list.slots(usize::from(count)).ok_or((wrong_size, tag))?;
        for (slot, entry) in slots.iter_mut().zip(bytes.chunks_exact(PASID_ENTRY_SIZE)) {
            let mut le = [0u8; PASID_ENTRY_SIZE];
            le.copy_from_slice(entry);
            *slot = u32::from_le_bytes(le);
        }
    }
    Ok((request, list))
}

/// The bytes an answer puts in the writable part: the response, then the
/// PASIDs a GRANT granted or a RECONCILE's results. Returns the buffer and
/// how much of it to write.
fn answer_bytes(answer: &Answer) -> ([u8; WRITTEN_MAX], usize) {
    let mut out = [0u8; WRITTEN_MAX];
    let (response, list) = out.split_at_mut(RESPONSE_SIZE);
    response.copy_from_slice(&answer.response.encode());
    for (slot, pasid) in list
        .chunks_exact_mut(PASID_ENTRY_SIZE)
        .zip(answer.granted.as_slice())
    {
        slot.copy_from_slice(&pasid.to_le_bytes());
    }
    (out, RESPONSE_SIZE + answer.granted.len() * PASID_ENTRY_SIZE)
}

/// Handles one chain: validates it, passes a well-formed request (with a
/// RETURN's or RECONCILE's list) to `answer`, and writes the response (with
/// a GRANT's PASIDs or a RECONCILE's results). GRANT and RETURN are
/// malformed unless the driver accepted VIRTIO_PASID_F_LEASE, RECONCILE
/// unless it accepted VIRTIO_PASID_F_RECONCILE (`negotiated`). Returns what
/// happened; the caller puts the chain on the used ring with
/// [`ChainOutcome::used_len`].
pub fn process_chain<M, F>(
    chain: DescriptorChain<M>,
    negotiated: Negotiated,
    answer: F,
) -> ChainOutcome
where
    M: Deref + Clone,
    M::Target: GuestMemory,
    F: FnOnce(Request, &PasidList) -> Answer,
{
    let mem = chain.memory();
    let split = match split_chain(chain.clone()) {
        Ok(split) => split,
        Err(e) => return ChainOutcome::Dropped(e),
    };
    let room = total_len(&split.writable);
    if room < RESPONSE_SIZE as u64 {
        return ChainOutcome::Dropped(ChainError::ResponseSize {
            found: room,
            expected: RESPONSE_SIZE,
        });
    }
    let (outcome, reply) = match read_request(mem, &split, room, negotiated) {
        Ok((request, list)) => {
            let reply = answer(request, &list);
            let outcome = ChainOutcome::Answered {
                request,
                response: reply.response,
                granted: reply.granted.len(),
            };
            (outcome, reply)
        }
        Err((e, tag)) => (
            ChainOutcome::Rejected(e),
            Answer::from(Response::new(Status::Invalid, tag)),
        ),
    };
    let (bytes, len) = answer_bytes(&reply);
    // Cannot fail: `split_chain` checked every writable buffer against this
    // chain's memory snapshot for its whole length, and `read_request`
    // that they hold the whole answer. So no request is ever carried out
    // without its answer reaching the guest, and nothing needs undoing.
    match scatter(mem, &split.writable, bytes.get(..len).unwrap_or_default()) {
        Ok(()) => outcome,
        Err(error) => ChainOutcome::Dropped(error),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use pasid_protocol::RawRequest;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const REQ_AT: u64 = 0x10_0000;
    /// Every device-type feature accepted.
    const ALL_FEATURES: Negotiated = Negotiated {
        lease: true,
        reconcile: true,
    };
    const RESP_AT: u64 = 0x20_0000;
    const MEM_END: u64 = 0x100_0000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_END as usize)]).unwrap()
    }

    fn readable(addr: u64, len: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, 0, 0))
    }

    fn writable(addr: u64, len: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(
            addr,
            len,
            VRING_DESC_F_WRITE as u16,
            0,
        ))
    }

    /// Builds `descs` as one chain in mock guest memory (with the request
    /// bytes at REQ_AT) and runs it through `process_chain`, answering every
    /// well-formed request with OK/42. Returns the outcome and the response
    /// bytes found at RESP_AT.
    fn run(request: &[u8], descs: &[RawDescriptor]) -> (ChainOutcome, Response, bool) {
        run_with(request, descs, false)
    }

    /// As [`run`]; with `as_linked` the descriptors' own NEXT flags and
    /// `next` indices are kept instead of being chained in order.
    fn run_with(
        request: &[u8],
        descs: &[RawDescriptor],
        as_linked: bool,
    ) -> (ChainOutcome, Response, bool) {
        let mem = memory();
        mem.write_slice(request, GuestAddress(REQ_AT)).unwrap();
        mem.write_slice(&[0xee; RESPONSE_SIZE], GuestAddress(RESP_AT))
            .unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        let chain = if as_linked {
            queue.build_multiple_desc_chains(descs).unwrap()
        } else {
            queue.build_desc_chain(descs).unwrap()
        };
        let mut called = false;
        let outcome = process_chain(chain, ALL_FEATURES, |req, _| {
            called = true;
            Response::ok(req.tag(), 42).into()
        });
        let mut out = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut out, GuestAddress(RESP_AT)).unwrap();
        (outcome, Response::decode(&out), called)
    }

    fn alloc_bytes() -> [u8; REQUEST_SIZE] {
        Request::Alloc {
            tag: 0xabc,
            min: 1,
            max: 100,
        }
        .encode()
    }

    #[test]
    fn well_formed_chain_is_answered() {
        let (outcome, resp, called) = run(
            &alloc_bytes(),
            &[readable(REQ_AT, 24), writable(RESP_AT, 16)],
        );
        assert!(called);
        assert_eq!(outcome.used_len(), 16);
        assert_eq!(resp, Response::ok(0xabc, 42));
        assert!(matches!(
            outcome,
            ChainOutcome::Answered {
                request: Request::Alloc {
                    min: 1,
                    max: 100,
                    ..
                },
                ..
            }
        ));
    }

    /// The virtio spec forbids devices to assume message framing: a request
    /// split over descriptors must work, and so must a split response.
    #[test]
    fn split_buffers_are_gathered_and_scattered() {
        let (outcome, resp, called) = run(
            &alloc_bytes(),
            &[
                readable(REQ_AT, 10),
                readable(REQ_AT + 10, 14),
                writable(RESP_AT, 5),
                writable(RESP_AT + 5, 100),
            ],
        );
        assert!(called);
        assert_eq!(outcome.used_len(), 16);
        assert_eq!(resp, Response::ok(0xabc, 42));
    }

    /// A short request is answered INVALID without reaching the registry.
    #[test]
    fn short_request_is_invalid() {
        let (outcome, resp, called) = run(
            &alloc_bytes(),
            &[readable(REQ_AT, 20), writable(RESP_AT, 16)],
        );
        assert!(!called);
        assert_eq!(
            outcome,
            ChainOutcome::Rejected(ChainError::RequestSize {
                found: 20,
                expected: 24
            })
        );
        assert_eq!(Status::from_wire(resp.status), Some(Status::Invalid));
        assert_eq!(resp.pasid, pasid_protocol::PASID_NONE);
    }

    /// An oversized request is INVALID too, not truncated.
    #[test]
    fn long_request_is_invalid() {
        let (outcome, _, called) = run(
            &alloc_bytes(),
            &[readable(REQ_AT, 25), writable(RESP_AT, 16)],
        );
        assert!(!called);
        assert!(matches!(
            outcome,
            ChainOutcome::Rejected(ChainError::RequestSize { found: 25, .. })
        ));
    }

    /// An unknown opcode is INVALID and the tag is still echoed.
    #[test]
    fn unknown_opcode_echoes_tag() {
        let mut raw = RawRequest::decode(&alloc_bytes());
        raw.opcode = 77;
        let (outcome, resp, called) = run(
            &raw.encode(),
            &[readable(REQ_AT, 24), writable(RESP_AT, 16)],
        );
        assert!(!called);
        assert!(matches!(
            outcome,
            ChainOutcome::Rejected(ChainError::Decode(_))
        ));
        assert_eq!(
            (Status::from_wire(resp.status), resp.tag),
            (Some(Status::Invalid), 0xabc)
        );
    }

    /// No room for a response: returned unused, nothing written.
    #[test]
    fn missing_or_short_response_buffer_drops_the_chain() {
        for descs in [
            vec![readable(REQ_AT, 24)],
            vec![readable(REQ_AT, 24), writable(RESP_AT, 15)],
        ] {
            let (outcome, resp, called) = run(&alloc_bytes(), &descs);
            assert!(!called);
            assert_eq!(outcome.used_len(), 0);
            assert!(matches!(
                outcome,
                ChainOutcome::Dropped(ChainError::ResponseSize { .. })
            ));
            assert_eq!(resp.encode(), [0xee; RESPONSE_SIZE], "nothing written");
        }
    }

    /// Device-readable data after device-writable data breaks the virtio
    /// rules; the chain is dropped rather than guessed at.
    #[test]
    fn readable_after_writable_is_dropped() {
        let (outcome, _, called) = run(
            &alloc_bytes(),
            &[writable(RESP_AT, 16), readable(REQ_AT, 24)],
        );
        assert!(!called);
        assert_eq!(
            outcome,
            ChainOutcome::Dropped(ChainError::ReadableAfterWritable { index: 1 })
        );
    }

    /// Addresses outside guest memory (or wrapping the address space) are
    /// refused before any access. So is a writable part that memory does
    /// not wholly hold (running past its end, or a second buffer outside
    /// it): a request is only carried out when its answer can be written,
    /// which is why nothing is ever undone.
    #[test]
    fn buffers_outside_memory_are_dropped() {
        for descs in [
            vec![readable(MEM_END - 8, 24), writable(RESP_AT, 16)],
            vec![readable(REQ_AT, 24), writable(MEM_END, 16)],
            vec![readable(u64::MAX - 4, 24), writable(RESP_AT, 16)],
            vec![readable(REQ_AT, 24), writable(MEM_END - 8, 16)],
            vec![
                readable(REQ_AT, 24),
                writable(RESP_AT, 8),
                writable(MEM_END - 4, 8),
            ],
        ] {
            let (outcome, resp, called) = run(&alloc_bytes(), &descs);
            assert!(!called);
            assert!(
                matches!(
                    outcome,
                    ChainOutcome::Dropped(ChainError::OutsideMemory { .. })
                ),
                "{outcome:?}"
            );
            assert_eq!(resp.encode(), [0xee; RESPONSE_SIZE]);
        }
    }

    /// A chain whose `next` links loop, or point outside the descriptor
    /// table, is returned unused even when the descriptors walked so far
    /// would make a valid request: virtio-queue stops walking it silently.
    #[test]
    fn unterminated_chains_are_dropped() {
        let linked = |addr: u64, len: u32, flags: u16, next: u16| {
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags | 1, next))
        };
        for (name, next) in [("loop", 1u16), ("outside the table", 200)] {
            let (outcome, resp, called) = run_with(
                &alloc_bytes(),
                &[
                    linked(REQ_AT, 24, 0, 1),
                    linked(RESP_AT, 16, VRING_DESC_F_WRITE as u16, next),
                ],
                true,
            );
            assert!(!called, "{name}");
            assert!(
                matches!(
                    outcome,
                    ChainOutcome::Dropped(ChainError::Unterminated { .. })
                ),
                "{name}: {outcome:?}"
            );
            assert_eq!(resp.encode(), [0xee; RESPONSE_SIZE], "{name}");
        }
    }

    /// Runs `descs` (request bytes at REQ_AT) with F_LEASE negotiated,
    /// answering every request with OK and the PASIDs `granted`; returns
    /// the outcome, the list the answer saw, and the 16 + 4 * 8 bytes at
    /// RESP_AT.
    fn run_lease(
        request: &[u8],
        descs: &[RawDescriptor],
        granted: &[u32],
    ) -> (ChainOutcome, Vec<u32>, Vec<u8>) {
        let mem = memory();
        mem.write_slice(request, GuestAddress(REQ_AT)).unwrap();
        mem.write_slice(&[0xee; 48], GuestAddress(RESP_AT)).unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        let chain = queue.build_desc_chain(descs).unwrap();
        let mut seen = Vec::new();
        let outcome = process_chain(chain, ALL_FEATURES, |req, list| {
            seen = list.as_slice().to_vec();
            Answer {
                response: Response::ok(req.tag(), granted.len() as u32),
                granted: PasidList::from_slice(granted).unwrap(),
            }
        });
        let mut out = vec![0u8; 48];
        mem.read_slice(&mut out, GuestAddress(RESP_AT)).unwrap();
        (outcome, seen, out)
    }

    /// A GRANT's PASIDs follow the response, scattered over a writable
    /// part split anywhere (here inside the response and inside an entry);
    /// the used length covers exactly what was written.
    #[test]
    fn grant_list_is_scattered_after_the_response() {
        let grant = Request::Grant {
            tag: 0x77,
            count: 4,
            cached: 0,
            min: 1,
            max: 100,
        };
        let (outcome, _, out) = run_lease(
            &grant.encode(),
            &[
                readable(REQ_AT, 24),
                writable(RESP_AT, 10),
                writable(RESP_AT + 10, 8),
                writable(RESP_AT + 18, 14),
            ],
            &[7, 8, 0x1_0203],
        );
        assert_eq!(outcome.used_len(), 16 + 12);
        let mut resp = [0u8; RESPONSE_SIZE];
        resp.copy_from_slice(&out[..16]);
        assert_eq!(Response::decode(&resp), Response::ok(0x77, 3));
        assert_eq!(
            pasid_protocol::decode_pasids(&out[16..28]),
            vec![7, 8, 0x1_0203]
        );
        assert_eq!(&out[28..32], &[0xee; 4], "the fourth entry is untouched");
    }

    /// A RETURN's list is gathered from a readable part split anywhere,
    /// also inside the header and inside an entry.
    #[test]
    fn return_list_is_gathered_across_descriptors() {
        let ret = Request::Return {
            tag: 0x78,
            count: 3,
            cached: 9,
        };
        let mut bytes = ret.encode().to_vec();
        bytes.extend(pasid_protocol::encode_pasids(&[5, 0xfffff, 6]));
        let (outcome, seen, _) = run_lease(
            &bytes,
            &[
                readable(REQ_AT, 20),
                readable(REQ_AT + 20, 6),
                readable(REQ_AT + 26, 0),
                readable(REQ_AT + 26, 10),
                writable(RESP_AT, 16),
            ],
            &[],
        );
        assert_eq!(seen, vec![5, 0xfffff, 6]);
        assert!(matches!(
            outcome,
            ChainOutcome::Answered {
                request: Request::Return {
                    count: 3,
                    cached: 9,
                    ..
                },
                granted: 0,
                ..
            }
        ));
        assert_eq!(outcome.used_len(), 16);
    }

    /// Without F_LEASE negotiated a well-formed GRANT is INVALID with its
    /// tag, and never reaches the answer.
    #[test]
    fn lease_requests_need_the_feature() {
        let grant = Request::Grant {
            tag: 0x79,
            count: 1,
            cached: 0,
            min: 1,
            max: 100,
        };
        let mem = memory();
        mem.write_slice(&grant.encode(), GuestAddress(REQ_AT))
            .unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        let chain = queue
            .build_desc_chain(&[readable(REQ_AT, 24), writable(RESP_AT, 20)])
            .unwrap();
        let outcome = process_chain(chain, Negotiated::default(), |_, _| panic!("answered"));
        assert_eq!(
            outcome,
            ChainOutcome::Rejected(ChainError::LeaseNotNegotiated(Opcode::Grant))
        );
        let mut b = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut b, GuestAddress(RESP_AT)).unwrap();
        assert_eq!(Response::decode(&b), Response::new(Status::Invalid, 0x79));
    }
    /// A RECONCILE's list is gathered like a RETURN's, and its results
    /// follow the response like a GRANT's PASIDs; the used length covers
    /// them.
    #[test]
    fn reconcile_list_is_gathered_and_results_scattered() {
        let rec = Request::Reconcile {
            tag: 0x7a,
            first: true,
            last: true,
            count: 2,
            cached: 0,
        };
        let mut bytes = rec.encode().to_vec();
        bytes.extend(pasid_protocol::encode_pasids(&[3, 4]));
        let (outcome, seen, out) = run_lease(
            &bytes,
            &[
                readable(REQ_AT, 28),
                readable(REQ_AT + 28, 4),
                writable(RESP_AT, 24),
            ],
            &[2, 0],
        );
        assert_eq!(seen, vec![3, 4]);
        assert_eq!(outcome.used_len(), 16 + 8);
        assert_eq!(pasid_protocol::decode_pasids(&out[16..24]), vec![2, 0]);
    }

    /// A RECONCILE whose writable part has no room for a result per
    /// listed PASID, or whose list is not `count` entries long, is INVALID.
    #[test]
    fn reconcile_sizes_are_checked() {
        let rec = Request::Reconcile {
            tag: 0x7b,
            first: true,
            last: true,
            count: 2,
            cached: 0,
        };
        let mut bytes = rec.encode().to_vec();
        bytes.extend(pasid_protocol::encode_pasids(&[3, 4]));
        let (outcome, ..) = run_lease(&bytes, &[readable(REQ_AT, 32), writable(RESP_AT, 20)], &[]);
        assert_eq!(
            outcome,
            ChainOutcome::Rejected(ChainError::ResponseSize {
                found: 20,
                expected: 24
            })
        );
        let (outcome, ..) = run_lease(&bytes, &[readable(REQ_AT, 28), writable(RESP_AT, 24)], &[]);
        assert_eq!(
            outcome,
            ChainOutcome::Rejected(ChainError::RequestSize {
                found: 28,
                expected: 32
            })
        );
    }

    /// Without F_RECONCILE negotiated a RECONCILE is INVALID with its tag.
    #[test]
    fn reconcile_needs_the_feature() {
        let rec = Request::Reconcile {
            tag: 0x7c,
            first: true,
            last: true,
            count: 0,
            cached: 0,
        };
        let mem = memory();
        mem.write_slice(&rec.encode(), GuestAddress(REQ_AT))
            .unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        let chain = queue
            .build_desc_chain(&[readable(REQ_AT, 24), writable(RESP_AT, 16)])
            .unwrap();
        let lease_only = Negotiated {
            lease: true,
            reconcile: false,
        };
        let outcome = process_chain(chain, lease_only, |_, _| panic!("answered"));
        assert_eq!(
            outcome,
            ChainOutcome::Rejected(ChainError::ReconcileNotNegotiated)
        );
        let mut b = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut b, GuestAddress(RESP_AT)).unwrap();
        assert_eq!(Response::decode(&b), Response::new(Status::Invalid, 0x7c));
    }
}
