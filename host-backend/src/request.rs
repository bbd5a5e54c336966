// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Reads one request out of a descriptor chain and writes its response.
//!
//! Guest memory is hostile: every descriptor's direction, length and address
//! is checked before a byte is read, and a chain of the wrong shape is
//! answered with `INVALID` when it has room for a response, or returned
//! unused (length 0) when it has not. Nothing here can panic on guest input.

use std::ops::Deref;

use pasid_protocol::{RawRequest, Request, Response, Status, REQUEST_SIZE, RESPONSE_SIZE};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

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
    /// The request bytes do not decode.
    #[error("malformed request: {0}")]
    Decode(#[from] pasid_protocol::DecodeError),
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
    },
    /// The chain was malformed; an `INVALID` response was written.
    Rejected(ChainError),
    /// The chain was malformed and had no room for a response: returned unused.
    Dropped(ChainError),
    /// The request was carried out but its response could not be written;
    /// the caller must undo it (the guest never learns of it).
    Unanswered {
        /// The request.
        request: Request,
        /// The response that could not be written.
        response: Response,
        /// Why it could not be written.
        error: ChainError,
    },
}

impl ChainOutcome {
    /// Bytes written into the chain, for the used ring.
    pub fn used_len(&self) -> u32 {
        match self {
            ChainOutcome::Answered { .. } | ChainOutcome::Rejected(_) => RESPONSE_SIZE as u32,
            ChainOutcome::Dropped(_) | ChainOutcome::Unanswered { .. } => 0,
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
    let descs: Vec<_> = chain.clone().collect();
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

/// Gathers exactly `REQUEST_SIZE` bytes from the readable buffers.
fn read_request<M: GuestMemory + ?Sized>(
    mem: &M,
    bufs: &[Buffer],
) -> Result<[u8; REQUEST_SIZE], ChainError> {
    let found = total_len(bufs);
    if found != REQUEST_SIZE as u64 {
        return Err(ChainError::RequestSize {
            found,
            expected: REQUEST_SIZE,
        });
    }
    let mut out = [0u8; REQUEST_SIZE];
    let mut filled = 0usize;
    for b in bufs {
        let len = b.len as usize;
        let dst = out
            .get_mut(filled..filled + len)
            .ok_or(ChainError::RequestSize {
                found,
                expected: REQUEST_SIZE,
            })?;
        mem.read_slice(dst, b.addr)
            .map_err(|_| ChainError::OutsideMemory {
                addr: b.addr.0,
                len: b.len,
            })?;
        filled += len;
    }
    Ok(out)
}

/// Scatters the response over the writable buffers.
fn write_response<M: GuestMemory + ?Sized>(
    mem: &M,
    bufs: &[Buffer],
    resp: &Response,
) -> Result<(), ChainError> {
    let bytes = resp.encode();
    let mut rest: &[u8] = &bytes;
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

/// Handles one chain: validates it, passes a well-formed request to
/// `answer`, and writes the response. Returns what happened; the caller puts
/// the chain on the used ring with [`ChainOutcome::used_len`].
pub fn process_chain<M, F>(chain: DescriptorChain<M>, answer: F) -> ChainOutcome
where
    M: Deref + Clone,
    M::Target: GuestMemory,
    F: FnOnce(Request) -> Response,
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
    let (parsed, tag) = match read_request(mem, &split.readable) {
        Ok(bytes) => {
            let raw = RawRequest::decode(&bytes);
            (raw.parse().map_err(ChainError::from), raw.tag)
        }
        Err(e) => (Err(e), 0),
    };
    let (outcome, response) = match parsed {
        Ok(request) => {
            let response = answer(request);
            (ChainOutcome::Answered { request, response }, response)
        }
        Err(e) => (ChainOutcome::Rejected(e), Response::new(Status::Invalid, tag)),
    };
    match write_response(mem, &split.writable, &response) {
        Ok(()) => outcome,
        Err(error) => match outcome {
            ChainOutcome::Answered { request, response } => ChainOutcome::Unanswered {
                request,
                response,
                error,
            },
            _ => ChainOutcome::Dropped(error),
        },
    }
}
