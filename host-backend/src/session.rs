// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A vhost-user session as a new daemon needs it to take the session over:
//! the messages' framing on the wire, and the image of the set-up the
//! frontend sent (features, memory table, each vring's size, addresses,
//! base, kick/call/err eventfds and enable state), kept in systemd's file
//! descriptor store with every descriptor it names.
//!
//! The image is rebuilt from messages, never from the vhost-user-backend
//! crate, which keeps its session state private. [`Image::replay`] turns it
//! back into the messages that set a fresh daemon up the same way.
//!
//! Only the control plane passes here: the vrings live in guest memory and
//! the eventfds go to the daemon as they are, so serving costs nothing more.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

/// vhost-user requests (QEMU docs/interop/vhost-user.rst) the image follows.
pub mod req {
    /// GET_FEATURES.
    pub const GET_FEATURES: u32 = 1;
    /// SET_FEATURES.
    pub const SET_FEATURES: u32 = 2;
    /// SET_OWNER.
    pub const SET_OWNER: u32 = 3;
    /// RESET_OWNER.
    pub const RESET_OWNER: u32 = 4;
    /// SET_MEM_TABLE.
    pub const SET_MEM_TABLE: u32 = 5;
    /// SET_VRING_NUM.
    pub const SET_VRING_NUM: u32 = 8;
    /// SET_VRING_ADDR.
    pub const SET_VRING_ADDR: u32 = 9;
    /// SET_VRING_BASE.
    pub const SET_VRING_BASE: u32 = 10;
    /// GET_VRING_BASE.
    pub const GET_VRING_BASE: u32 = 11;
    /// SET_VRING_KICK.
    pub const SET_VRING_KICK: u32 = 12;
    /// SET_VRING_CALL.
    pub const SET_VRING_CALL: u32 = 13;
    /// SET_VRING_ERR.
    pub const SET_VRING_ERR: u32 = 14;
    /// GET_PROTOCOL_FEATURES.
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    /// SET_PROTOCOL_FEATURES.
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    /// GET_QUEUE_NUM.
    pub const GET_QUEUE_NUM: u32 = 17;
    /// SET_VRING_ENABLE.
    pub const SET_VRING_ENABLE: u32 = 18;
    /// SET_BACKEND_REQ_FD.
    pub const SET_BACKEND_REQ_FD: u32 = 21;
    /// GET_CONFIG.
    pub const GET_CONFIG: u32 = 24;
    /// GET_INFLIGHT_FD.
    pub const GET_INFLIGHT_FD: u32 = 31;
    /// RESET_DEVICE.
    pub const RESET_DEVICE: u32 = 34;
    /// GET_MAX_MEM_SLOTS.
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    /// GET_STATUS.
    pub const GET_STATUS: u32 = 40;
}

/// Header flags: protocol version 1.
pub const VERSION: u32 = 0x1;
/// Header flags: this message is a reply.
pub const REPLY: u32 = 0x4;
/// Header flags: the frontend wants an acknowledgement (REPLY_ACK).
pub const NEED_REPLY: u32 = 0x8;
/// VHOST_USER_PROTOCOL_F_REPLY_ACK.
const PROTOCOL_REPLY_ACK: u64 = 1 << 3;
/// VHOST_USER_F_PROTOCOL_FEATURES (a virtio feature bit).
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// SET_VRING_KICK/CALL/ERR payload: no descriptor attached.
const VRING_NOFD: u64 = 0x100;
/// SET_VRING_KICK/CALL/ERR payload: the vring index.
const VRING_IDX_MASK: u64 = 0xff;
/// Header bytes: request, flags, size.
pub const HEADER_LEN: usize = 12;
/// Largest payload the vhost crate accepts (`MAX_MSG_SIZE`).
pub const MAX_PAYLOAD: usize = 0x1000;
/// Most descriptors one message carries (`MAX_ATTACHED_FD_ENTRIES`).
pub const MAX_FDS: usize = 32;
/// Vrings an image records; the device has fewer, and the crate refuses
/// a higher index.
pub const MAX_VRINGS: usize = 8;
/// One memory region of SET_MEM_TABLE: gpa, size, uaddr, mmap offset.
const REGION_LEN: usize = 32;

/// A framing error: the session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A header announces more than the protocol allows.
    #[error("message of {0} bytes exceeds the vhost-user limit")]
    TooLong(usize),
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<nix::errno::Errno> for WireError {
    fn from(e: nix::errno::Errno) -> Self {
        WireError::Io(e.into())
    }
}

/// One vhost-user message.
#[derive(Debug)]
pub struct Message {
    /// The request code.
    pub request: u32,
    /// The header flags.
    pub flags: u32,
    /// The payload.
    pub payload: Vec<u8>,
    /// Descriptors attached.
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// A request without descriptors.
    pub fn new(request: u32, payload: Vec<u8>) -> Self {
        Message {
            request,
            flags: VERSION,
            payload,
            fds: Vec::new(),
        }
    }

    /// The payload's first 8 bytes as a little-endian u64.
    pub fn u64_payload(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.payload.get(..8)?.try_into().ok()?))
    }

    /// The payload as vhost-user's `{u32 index, u32 num}`.
    pub fn vring_state(&self) -> Option<(u32, u32)> {
        Some((le32(&self.payload, 0)?, le32(&self.payload, 4)?))
    }

    /// Whether the frontend waits for an answer to this request.
    pub fn wants_reply(&self, protocol_features: u64) -> bool {
        use req::*;
        matches!(
            self.request,
            GET_FEATURES
                | GET_VRING_BASE
                | GET_PROTOCOL_FEATURES
                | GET_QUEUE_NUM
                | GET_CONFIG
                | GET_INFLIGHT_FD
                | GET_MAX_MEM_SLOTS
                | GET_STATUS
        ) || (self.flags & NEED_REPLY != 0 && protocol_features & PROTOCOL_REPLY_ACK != 0)
    }

    /// Writes the message, descriptors attached.
    pub fn send(&self, stream: &UnixStream) -> Result<(), WireError> {
        let len = u32::try_from(self.payload.len()).map_err(|_| WireError::TooLong(usize::MAX))?;
        let header = [
            self.request.to_le_bytes(),
            self.flags.to_le_bytes(),
            len.to_le_bytes(),
        ]
        .concat();
        send_all(stream, &[&header, &self.payload], &self.fds)
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn send_all(stream: &UnixStream, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<(), WireError> {
    let mut bytes: Vec<u8> = parts.concat();
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut first = true;
    while !bytes.is_empty() {
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if first && !raw.is_empty() { &cmsg } else { &[] };
        let sent = match sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        first = false;
        bytes.drain(..sent);
    }
    Ok(())
}

/// Receives into `buf`, all of it unless the peer closes, collecting the
/// descriptors that come with it. Never with MSG_PEEK: a peek at a Unix
/// stream socket reports the descriptors of a later message (seen on
/// Linux 6.18: peeking a message without descriptors returned those of
/// the next one), so only a real read says which message carried which.
fn recv_exact(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<(), WireError> {
    let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL;
    let len = buf.len();
    let mut got = 0;
    while got < len {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let Some(target) = buf.get_mut(got..) else {
            break;
        };
        let mut iov = [IoSliceMut::new(target)];
        let bytes = {
            let msg =
                match recvmsg::<UnixAddr>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                };
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: the kernel installed this descriptor for
                        // this process just now; nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            msg.bytes
        };
        if bytes == 0 {
            return Err(WireError::Closed);
        }
        got += bytes;
    }
    Ok(())
}

/// Reads one message.
pub fn receive(stream: &UnixStream) -> Result<Message, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut fds = Vec::new();
    recv_exact(stream, &mut header, &mut fds)?;
    let size = le32(&header, 8).unwrap_or(0) as usize;
    if size > MAX_PAYLOAD {
        return Err(WireError::TooLong(size));
    }
    let mut payload = vec![0u8; size];
    recv_exact(stream, &mut payload, &mut fds)?;
    Ok(Message {
        request: le32(&header, 0).unwrap_or(0),
        flags: le32(&header, 4).unwrap_or(0),
        payload,
        fds,
    })
}

/// One memory region as SET_MEM_TABLE gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Guest physical address.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// The frontend's virtual address of the region.
    pub uaddr: u64,
    /// Offset into the descriptor's file.
    pub offset: u64,
    /// Stored name of its descriptor.
    pub fd: String,
}

/// SET_VRING_ADDR's payload after the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    /// Flags (log).
    pub flags: u32,
    /// Descriptor table (frontend virtual address).
    pub desc: u64,
    /// Used ring.
    pub used: u64,
    /// Available ring.
    pub avail: u64,
    /// Log address.
    pub log: u64,
}

/// One vring as the frontend set it up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vring {
    /// SET_VRING_NUM.
    pub num: Option<u32>,
    /// SET_VRING_ADDR.
    pub addr: Option<Addr>,
    /// SET_VRING_BASE.
    pub base: Option<u32>,
    /// Stored name of the kick eventfd.
    pub kick: Option<String>,
    /// Stored name of the call eventfd.
    pub call: Option<String>,
    /// Stored name of the error eventfd.
    pub err: Option<String>,
    /// SET_VRING_ENABLE.
    pub enabled: bool,
}

/// The image of a session: what a new daemon replays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The VM slot.
    pub vm: String,
    /// The PASID space whose durable state vouches for the session (its
    /// `space_id`).
    pub space_id: u64,
    /// Stored name of the frontend's connection.
    pub conn: String,
    /// SET_FEATURES.
    pub features: Option<u64>,
    /// SET_PROTOCOL_FEATURES.
    pub protocol_features: Option<u64>,
    /// SET_OWNER seen.
    pub owner: bool,
    /// SET_MEM_TABLE.
    pub mem: Vec<Region>,
    /// Vrings by index.
    pub vrings: Vec<Vring>,
    /// Stored name of SET_BACKEND_REQ_FD's socket.
    pub backend_req: Option<String>,
}

/// Image bytes: magic, length, CRC-32 of the body, then the body (JSON).
const IMAGE_MAGIC: &[u8; 4] = b"VPSI";

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// Not an image, torn, or from an unknown version.
    #[error("session image unreadable: {0}")]
    Unreadable(&'static str),
}

impl Image {
    /// The image as stored.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(IMAGE_MAGIC);
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a stored image.
    pub fn decode(bytes: &[u8]) -> Result<Image, ImageError> {
        if bytes.get(..4) != Some(IMAGE_MAGIC) {
            return Err(ImageError::Unreadable("bad magic"));
        }
        let len = le32(bytes, 4).ok_or(ImageError::Unreadable("short"))? as usize;
        let crc = le32(bytes, 8).ok_or(ImageError::Unreadable("short"))?;
        let body = bytes
            .get(12..12 + len)
            .ok_or(ImageError::Unreadable("short"))?;
        if crc32fast::hash(body) != crc {
            return Err(ImageError::Unreadable("checksum"));
        }
        serde_json::from_slice(body).map_err(|_| ImageError::Unreadable("body"))
    }

    /// Every stored name the image refers to.
    pub fn names(&self) -> Vec<&str> {
        let mut names = vec![self.conn.as_str()];
        names.extend(self.mem.iter().map(|r| r.fd.as_str()));
        for v in &self.vrings {
            names.extend(
                [&v.kick, &v.call, &v.err]
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
        }
        names.extend(self.backend_req.as_deref());
        names
    }

    fn protocol_acked(&self) -> bool {
        self.features.unwrap_or(0) & F_PROTOCOL_FEATURES != 0
    }

    /// Whether vring `v` runs: set up, kicked, and enabled (or enabled by
    /// default without protocol features).
    pub fn vring_started(&self, v: &Vring) -> bool {
        v.kick.is_some() && v.addr.is_some() && (v.enabled || !self.protocol_acked())
    }

    /// Whether the device is started (QEMU's `vhost_dev.started`, as far
    /// as the backend can see it): some vring runs. Closing a session whose
    /// device is not started makes QEMU 11.1 abort (docs/operations.md).
    pub fn started(&self) -> bool {
        self.vrings.iter().any(|v| self.vring_started(v))
    }

    fn vring_mut(&mut self, index: u32) -> Option<&mut Vring> {
        let i = usize::try_from(index).ok().filter(|i| *i < MAX_VRINGS)?;
        if self.vrings.len() <= i {
            self.vrings.resize(i + 1, Vring::default());
        }
        self.vrings.get_mut(i)
    }

    /// Translates a frontend virtual address to (region, file offset).
    pub fn file_offset(&self, uaddr: u64) -> Option<(&Region, u64)> {
        self.mem.iter().find_map(|r| {
            let off = uaddr.checked_sub(r.uaddr).filter(|o| *o < r.size)?;
            Some((r, r.offset.checked_add(off)?))
        })
    }

    /// The messages that set a fresh daemon up as this image says, each
    /// with the stored names of the descriptors it carries. `used_idx`
    /// gives a running vring's used index, read from guest memory: the
    /// daemon goes on from there (a request taken but not yet used is
    /// delivered again; durable state answers it as before).
    pub fn replay(&self, used_idx: impl Fn(&Vring) -> Option<u16>) -> Vec<(Message, Vec<String>)> {
        use req::*;
        let mut out = Vec::new();
        let plain = |r, p: Vec<u8>| (Message::new(r, p), Vec::new());
        out.push(plain(GET_FEATURES, Vec::new()));
        if let Some(pf) = self.protocol_features {
            out.push(plain(GET_PROTOCOL_FEATURES, Vec::new()));
            out.push(plain(SET_PROTOCOL_FEATURES, pf.to_le_bytes().to_vec()));
        }
        if self.owner {
            out.push(plain(SET_OWNER, Vec::new()));
        }
        if let Some(f) = self.features {
            out.push(plain(SET_FEATURES, f.to_le_bytes().to_vec()));
        }
        if !self.mem.is_empty() {
            let mut p = Vec::with_capacity(8 + REGION_LEN * self.mem.len());
            p.extend_from_slice(&u32::try_from(self.mem.len()).unwrap_or(0).to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for r in &self.mem {
                for v in [r.gpa, r.size, r.uaddr, r.offset] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
            }
            let names = self.mem.iter().map(|r| r.fd.clone()).collect();
            out.push((Message::new(SET_MEM_TABLE, p), names));
        }
        for (i, v) in self.vrings.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(0);
            let state = |n: u32| [index.to_le_bytes(), n.to_le_bytes()].concat();
            if let Some(num) = v.num {
                out.push(plain(SET_VRING_NUM, state(num)));
            }
            let base = if self.vring_started(v) {
                used_idx(v).map(u32::from).or(v.base)
            } else {
                v.base
            };
            if let Some(base) = base {
                out.push(plain(SET_VRING_BASE, state(base)));
            }
            if let Some(a) = v.addr {
                let mut p = state(a.flags);
                for x in [a.desc, a.used, a.avail, a.log] {
                    p.extend_from_slice(&x.to_le_bytes());
                }
                out.push(plain(SET_VRING_ADDR, p));
            }
            for (request, name) in [
                (SET_VRING_CALL, &v.call),
                (SET_VRING_ERR, &v.err),
                (SET_VRING_KICK, &v.kick),
            ] {
                if let Some(name) = name {
                    let p = u64::from(index).to_le_bytes().to_vec();
                    out.push((Message::new(request, p), vec![name.clone()]));
                }
            }
            if self.protocol_acked() {
                out.push(plain(SET_VRING_ENABLE, state(u32::from(v.enabled))));
            }
        }
        if let Some(name) = &self.backend_req {
            out.push((
                Message::new(SET_BACKEND_REQ_FD, Vec::new()),
                vec![name.clone()],
            ));
        }
        out
    }
}

/// What a frontend message changes in the store.
#[derive(Debug, Default)]
pub struct Change {
    /// Descriptors to store, with their new names.
    pub store: Vec<(String, OwnedFd)>,
    /// Names no longer referred to, to remove once the image is written.
    pub remove: Vec<String>,
    /// Whether the image changed.
    pub image: bool,
}

/// Whether two descriptors are one open file (kcmp(2) KCMP_FILE): systemd
/// keeps one copy of such descriptors in its store, whatever their names.
/// `false` when the kernel cannot tell.
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = libc::c_long::from(nix::unistd::getpid().as_raw());
    // SAFETY: kcmp only compares two of this process's descriptors; it
    // touches no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            libc::c_long::from(a.as_raw_fd()),
            libc::c_long::from(b.as_raw_fd()),
        )
    };
    r == 0
}

/// Records a session: the image and the descriptors it names.
#[derive(Debug)]
pub struct Recorder {
    /// The image so far.
    pub image: Image,
    /// Stored descriptors, by name.
    pub fds: BTreeMap<String, OwnedFd>,
    prefix: String,
    next: u64,
}

impl Recorder {
    /// A recorder whose names start with `prefix` (`vpasid.VM.SESSION.`).
    pub fn new(prefix: String, image: Image, fds: BTreeMap<String, OwnedFd>) -> Self {
        // New names never repeat a stored one.
        let next = fds
            .keys()
            .filter_map(|n| {
                let digits = n.len() - n.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                n.get(n.len() - digits..)?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        Recorder {
            image,
            fds,
            prefix,
            next,
        }
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A fresh name for a descriptor: `PREFIX` + `what` + counter (no `.`
    /// after the prefix: see [`member_of`]).
    pub fn name(&mut self, what: &str) -> String {
        let n = self.next;
        self.next += 1;
        format!("{}{what}{n}", self.prefix)
    }

    /// A stored descriptor.
    pub fn fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.fds.get(name).map(AsFd::as_fd)
    }

    /// The stored name for `fd` in role `what`: the name already in use
    /// when it is the same open file as `current` (systemd would drop the
    /// copy), else a new one, queued for storing.
    fn adopt(
        &mut self,
        what: &str,
        fd: BorrowedFd<'_>,
        current: Option<&str>,
        change: &mut Change,
    ) -> io::Result<String> {
        if let Some(cur) = current {
            if self.fd(cur).is_some_and(|c| same_file(c, fd)) {
                return Ok(cur.to_string());
            }
            change.remove.push(cur.to_string());
        }
        // Any other stored descriptor that is this file (a memfd shared by
        // two regions) is named once.
        let known = self
            .fds
            .iter()
            .chain(change.store.iter().map(|(n, f)| (n, f)))
            .find(|(_, f)| same_file(f.as_fd(), fd))
            .map(|(n, _)| n.clone());
        if let Some(name) = known {
            return Ok(name);
        }
        let name = self.name(what);
        change.store.push((name.clone(), fd.try_clone_to_owned()?));
        Ok(name)
    }

    /// Applies a message from the frontend to the image. The descriptors
    /// the image keeps are duplicated into [`Change::store`]; the message
    /// keeps its own, to be forwarded.
    pub fn record(&mut self, msg: &Message) -> io::Result<Change> {
        use req::*;
        let mut change = Change::default();
        let before = self.image.clone();
        let mut fds = msg.fds.iter().map(AsFd::as_fd);
        match msg.request {
            SET_FEATURES => self.image.features = msg.u64_payload(),
            SET_PROTOCOL_FEATURES => self.image.protocol_features = msg.u64_payload(),
            SET_OWNER => self.image.owner = true,
            RESET_OWNER | RESET_DEVICE => {
                for v in std::mem::take(&mut self.image.vrings) {
                    change
                        .remove
                        .extend([v.kick, v.call, v.err].into_iter().flatten());
                }
                if msg.request == RESET_OWNER {
                    self.image.owner = false;
                }
            }
            SET_MEM_TABLE => {
                let n = le32(&msg.payload, 0).unwrap_or(0) as usize;
                let old: Vec<String> = self.image.mem.iter().map(|r| r.fd.clone()).collect();
                let mut regions = Vec::new();
                for i in 0..n.min(MAX_FDS) {
                    let at = 8 + i * REGION_LEN;
                    let (Some(gpa), Some(size), Some(uaddr), Some(offset), Some(fd)) = (
                        le64(&msg.payload, at),
                        le64(&msg.payload, at + 8),
                        le64(&msg.payload, at + 16),
                        le64(&msg.payload, at + 24),
                        fds.next(),
                    ) else {
                        break;
                    };
                    let fd = self.adopt("mem", fd, None, &mut change)?;
                    regions.push(Region {
                        gpa,
                        size,
                        uaddr,
                        offset,
                        fd,
                    });
                }
                self.image.mem = regions;
                let kept: Vec<&str> = self.image.mem.iter().map(|r| r.fd.as_str()).collect();
                change
                    .remove
                    .extend(old.into_iter().filter(|o| !kept.contains(&o.as_str())));
            }
            SET_VRING_NUM | SET_VRING_BASE | SET_VRING_ENABLE => {
                if let Some((index, num)) = msg.vring_state() {
                    if let Some(v) = self.image.vring_mut(index) {
                        match msg.request {
                            SET_VRING_NUM => v.num = Some(num),
                            SET_VRING_BASE => v.base = Some(num),
                            _ => v.enabled = num != 0,
                        }
                    }
                }
            }
            SET_VRING_ADDR => {
                let p = &msg.payload;
                if let (Some(index), Some(flags), Some(desc), Some(used), Some(avail), Some(log)) = (
                    le32(p, 0),
                    le32(p, 4),
                    le64(p, 8),
                    le64(p, 16),
                    le64(p, 24),
                    le64(p, 32),
                ) {
                    if let Some(v) = self.image.vring_mut(index) {
                        v.addr = Some(Addr {
                            flags,
                            desc,
                            used,
                            avail,
                            log,
                        });
                    }
                }
            }
            GET_VRING_BASE => {
                // The ring stops; the daemon drops its kick and call.
                if let Some(index) = le32(&msg.payload, 0) {
                    if let Some(v) = self.image.vring_mut(index) {
                        change
                            .remove
                            .extend([v.kick.take(), v.call.take()].into_iter().flatten());
                    }
                }
            }
            SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR => {
                let value = msg.u64_payload().unwrap_or(0);
                let index = u32::try_from(value & VRING_IDX_MASK).unwrap_or(0);
                let fd = if value & VRING_NOFD == 0 {
                    fds.next()
                } else {
                    None
                };
                let what = match msg.request {
                    SET_VRING_KICK => "kick",
                    SET_VRING_CALL => "call",
                    _ => "err",
                };
                let current = self.image.vring_mut(index).and_then(|v| match msg.request {
                    SET_VRING_KICK => v.kick.take(),
                    SET_VRING_CALL => v.call.take(),
                    _ => v.err.take(),
                });
                let name = match fd {
                    Some(fd) if usize::try_from(index).is_ok_and(|i| i < MAX_VRINGS) => {
                        Some(self.adopt(
                            &format!("{what}{index}-"),
                            fd,
                            current.as_deref(),
                            &mut change,
                        )?)
                    }
                    _ => {
                        change.remove.extend(current);
                        None
                    }
                };
                if let Some(v) = self.image.vring_mut(index) {
                    match msg.request {
                        SET_VRING_KICK => v.kick = name,
                        SET_VRING_CALL => v.call = name,
                        _ => v.err = name,
                    }
                }
            }
            SET_BACKEND_REQ_FD => {
                let current = self.image.backend_req.take();
                self.image.backend_req = match fds.next() {
                    Some(fd) => Some(self.adopt("breq", fd, current.as_deref(), &mut change)?),
                    None => {
                        change.remove.extend(current);
                        None
                    }
                };
            }
            _ => {}
        }
        change
            .remove
            .retain(|r| !self.image.names().contains(&r.as_str()));
        change.remove.sort();
        change.remove.dedup();
        change.image = self.image != before;
        Ok(change)
    }

    /// Takes in the descriptors a [`Change`] stored.
    pub fn keep(&mut self, stored: Vec<(String, OwnedFd)>) {
        self.fds.extend(stored);
    }

    /// Forgets removed descriptors (closing them).
    pub fn forget(&mut self, names: &[String]) {
        for n in names {
            self.fds.remove(n);
        }
    }
}

/// Whether stored name `name` belongs to the session named by `prefix`
/// (`vpasid.VM.SESSION.`): VM names may hold dots, session ids and roles
/// never do.
pub fn member_of(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|role| !role.is_empty() && !role.contains('.'))
}

/// The image's memfd: rewritten whole at every change (one `pwrite`), so
/// the store always holds the latest image; the CRC rejects a torn one.
#[derive(Debug)]
pub struct ImageFile(File);

impl ImageFile {
    /// A new, empty image file.
    pub fn create() -> io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            c"vpasid-session",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        Ok(ImageFile(File::from(fd)))
    }

    /// Adopts a stored image file.
    pub fn from_fd(fd: OwnedFd) -> Self {
        ImageFile(File::from(fd))
    }

    /// Writes `image`.
    pub fn write(&self, image: &Image) -> io::Result<()> {
        let bytes = image.encode();
        self.0.write_all_at(&bytes, 0)?;
        self.0.set_len(bytes.len() as u64)
    }

    /// Reads the image.
    pub fn read(&self) -> io::Result<Result<Image, ImageError>> {
        let len = self.0.metadata()?.len();
        let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(0)];
        self.0.read_exact_at(&mut buf, 0)?;
        Ok(Image::decode(&buf))
    }

    /// The descriptor, to store.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Reads a running vring's used index (`used->idx`, at byte 2 of the used
/// ring) from guest memory through the region's descriptor.
pub fn read_used_idx(image: &Image, fds: &BTreeMap<String, OwnedFd>, v: &Vring) -> Option<u16> {
    let addr = v.addr?;
    let (region, offset) = image.file_offset(addr.used.checked_add(2)?)?;
    let fd = fds.get(&region.fd)?;
    let file = File::from(fd.try_clone().ok()?);
    let mut b = [0u8; 2];
    file.read_exact_at(&mut b, offset).ok()?;
    Some(u16::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::EventFd;

    fn efd() -> OwnedFd {
        OwnedFd::from(EventFd::new().unwrap())
    }

    fn msg(request: u32, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Message {
        Message {
            request,
            flags: VERSION,
            payload,
            fds,
        }
    }

    fn state(i: u32, n: u32) -> Vec<u8> {
        [i.to_le_bytes(), n.to_le_bytes()].concat()
    }

    /// Builds the image QEMU's set-up gives, then replays it.
    #[test]
    fn records_set_up_and_replays_it() {
        let mut r = Recorder::new("vpasid.a.1.".into(), Image::default(), BTreeMap::new());
        let features = F_PROTOCOL_FEATURES | 1 << 32;
        let stored = std::cell::RefCell::new(Vec::new());
        let apply = |r: &mut Recorder, m: Message| {
            let c = r.record(&m).unwrap();
            stored
                .borrow_mut()
                .extend(c.store.iter().map(|(n, _)| n.clone()));
            r.keep(c.store);
            r.forget(&c.remove);
            c.remove
        };
        apply(
            &mut r,
            msg(
                req::SET_PROTOCOL_FEATURES,
                0x200u64.to_le_bytes().to_vec(),
                vec![],
            ),
        );
        apply(&mut r, msg(req::SET_OWNER, vec![], vec![]));
        apply(
            &mut r,
            msg(req::SET_FEATURES, features.to_le_bytes().to_vec(), vec![]),
        );
        let mem = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let dup = mem.try_clone().unwrap();
        let mut table = vec![2, 0, 0, 0, 0, 0, 0, 0];
        for (gpa, size, uaddr, off) in [
            (0u64, 0xa0000u64, 0x7000_0000u64, 0u64),
            (0x100000, 0x1000, 0x7010_0000, 0x100000),
        ] {
            for v in [gpa, size, uaddr, off] {
                table.extend_from_slice(&v.to_le_bytes());
            }
        }
        apply(&mut r, msg(req::SET_MEM_TABLE, table, vec![mem, dup]));
        // One memfd for two regions: stored once.
        assert_eq!(r.image.mem.len(), 2);
        assert_eq!(r.image.mem[0].fd, r.image.mem[1].fd);
        assert!(!r.image.started());
        apply(&mut r, msg(req::SET_VRING_NUM, state(0, 64), vec![]));
        apply(&mut r, msg(req::SET_VRING_BASE, state(0, 0), vec![]));
        let mut addr = state(0, 0);
        for v in [0x7000_1000u64, 0x7000_2000, 0x7000_1400, 0] {
            addr.extend_from_slice(&v.to_le_bytes());
        }
        apply(&mut r, msg(req::SET_VRING_ADDR, addr, vec![]));
        let call = efd();
        let call_again = call.try_clone().unwrap();
        apply(
            &mut r,
            msg(req::SET_VRING_CALL, 0u64.to_le_bytes().to_vec(), vec![call]),
        );
        apply(
            &mut r,
            msg(
                req::SET_VRING_KICK,
                0u64.to_le_bytes().to_vec(),
                vec![efd()],
            ),
        );
        assert!(
            !r.image.started(),
            "not enabled yet (protocol features acked)"
        );
        apply(&mut r, msg(req::SET_VRING_ENABLE, state(0, 1), vec![]));
        assert!(r.image.started());
        // The same call eventfd again keeps its name: nothing stored, nothing removed.
        let before = stored.borrow().len();
        let removed = apply(
            &mut r,
            msg(
                req::SET_VRING_CALL,
                0u64.to_le_bytes().to_vec(),
                vec![call_again],
            ),
        );
        assert_eq!(stored.borrow().len(), before);
        assert!(removed.is_empty());
        // A new call eventfd replaces the old one.
        let old = r.image.vrings[0].call.clone().unwrap();
        let removed = apply(
            &mut r,
            msg(
                req::SET_VRING_CALL,
                0u64.to_le_bytes().to_vec(),
                vec![efd()],
            ),
        );
        assert_eq!(removed, vec![old]);
        assert_eq!(r.fds.len(), 3, "mem, kick, call: {:?}", r.fds.keys());
        let mut names: Vec<&str> = r.image.names().into_iter().skip(1).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3);

        let image = Image::decode(&r.image.encode()).unwrap();
        assert_eq!(image, r.image);
        let replay = image.replay(|_| Some(7));
        let kinds: Vec<u32> = replay.iter().map(|(m, _)| m.request).collect();
        assert_eq!(
            kinds,
            [
                req::GET_FEATURES,
                req::GET_PROTOCOL_FEATURES,
                req::SET_PROTOCOL_FEATURES,
                req::SET_OWNER,
                req::SET_FEATURES,
                req::SET_MEM_TABLE,
                req::SET_VRING_NUM,
                req::SET_VRING_BASE,
                req::SET_VRING_ADDR,
                req::SET_VRING_CALL,
                req::SET_VRING_KICK,
                req::SET_VRING_ENABLE,
            ]
        );
        // The running ring goes on from the used index given.
        let base = replay
            .iter()
            .find(|(m, _)| m.request == req::SET_VRING_BASE)
            .unwrap();
        assert_eq!(base.0.vring_state(), Some((0, 7)));
        // GET_VRING_BASE stops it and lets go of kick and call.
        let removed = apply(&mut r, msg(req::GET_VRING_BASE, state(0, 0), vec![]));
        assert_eq!(removed.len(), 2);
        assert!(!r.image.started());
    }

    #[test]
    fn torn_or_foreign_images_are_refused() {
        let image = Image {
            vm: "a".into(),
            conn: "vpasid.a.1.conn".into(),
            ..Image::default()
        };
        let mut bytes = image.encode();
        assert_eq!(Image::decode(&bytes).unwrap(), image);
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert_eq!(
            Image::decode(&bytes),
            Err(ImageError::Unreadable("checksum"))
        );
        assert!(Image::decode(&bytes[..10]).is_err());
        assert!(Image::decode(b"nope").is_err());
    }

    /// Framing over a real socket pair: each message gets exactly the
    /// descriptors sent with it, also when the next one carries some.
    #[test]
    fn messages_cross_a_socket_with_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        Message::new(req::SET_VRING_NUM, state(0, 64))
            .send(&a)
            .unwrap();
        let mut m = Message::new(req::SET_VRING_KICK, 0u64.to_le_bytes().to_vec());
        m.fds.push(efd());
        m.send(&a).unwrap();
        Message::new(req::GET_FEATURES, vec![]).send(&a).unwrap();
        let num = receive(&b).unwrap();
        assert_eq!(num.request, req::SET_VRING_NUM);
        assert!(num.fds.is_empty());
        let kick = receive(&b).unwrap();
        assert_eq!(kick.request, req::SET_VRING_KICK);
        assert_eq!(kick.fds.len(), 1);
        let next = receive(&b).unwrap();
        assert_eq!(next.request, req::GET_FEATURES);
        assert!(next.wants_reply(0));
        drop(a);
        assert!(matches!(receive(&b), Err(WireError::Closed)));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        Message::new(req::SET_FEATURES, vec![0; MAX_PAYLOAD + 1])
            .send(&a)
            .unwrap();
        assert!(matches!(receive(&b), Err(WireError::TooLong(_))));
    }

    #[test]
    fn used_index_is_read_from_guest_memory() {
        let mem = nix::sys::memfd::memfd_create(c"g", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let file = File::from(mem);
        file.set_len(0x4000).unwrap();
        file.write_all_at(&513u16.to_le_bytes(), 0x2000 + 0x100 + 2)
            .unwrap();
        let mut fds = BTreeMap::new();
        fds.insert("m".to_string(), OwnedFd::from(file));
        let image = Image {
            mem: vec![Region {
                gpa: 0,
                size: 0x3000,
                uaddr: 0x10_0000,
                offset: 0x1000,
                fd: "m".into(),
            }],
            ..Image::default()
        };
        let v = Vring {
            addr: Some(Addr {
                used: 0x10_1100,
                ..Addr::default()
            }),
            ..Vring::default()
        };
        assert_eq!(read_used_idx(&image, &fds, &v), Some(513));
        let outside = Vring {
            addr: Some(Addr {
                used: 0x20_0000,
                ..Addr::default()
            }),
            ..Vring::default()
        };
        assert_eq!(read_used_idx(&image, &fds, &outside), None);
    }
}
