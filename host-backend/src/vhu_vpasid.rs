// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vhost-user device of one VM session: features, config space and the
//! request queue handler.
//!
//! A fresh `PasidDevice` is made for every connection of a VM slot. It owns
//! nothing but its session's bookkeeping; PASIDs live in the shared
//! [`Registry`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use pasid_protocol::{CONFIG_SIZE, F_LEASE, F_RECONCILE, VQ_MAX};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryLoadGuard, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::rate_limit::LogThrottle;
use crate::registry::record::CommitTicket;
use crate::registry::{Registry, VmId};
use crate::request::{process_chain, ChainOutcome, Negotiated};

/// Event id of the request queue's kick.
pub const REQUEST_QUEUE_EVENT: u16 = pasid_protocol::VQ_REQUEST;

/// Largest request queue the device serves; QEMU's default `vq_size` is 64
/// and its own limit 1024.
pub const QUEUE_SIZE: usize = 1024;

/// The queue size vhost-user-backend is told the device takes: the largest
/// split virtqueue there is. virtio-queue ignores a SET_VRING_NUM that is
/// not a power of two (it logs and keeps the size it had) and
/// vhost-user-backend gives the device no say in SET_VRING_NUM, so the
/// queue starts at this size, which the device never serves: a queue still
/// this large, or any other size above [`QUEUE_SIZE`], is refused when it is
/// first used (see [`queue_size_served`]).
const UNSET_QUEUE_SIZE: usize = 32768;

/// Whether the device serves a request queue of `size` entries: a power of
/// two from 1 to [`QUEUE_SIZE`].
pub fn queue_size_served(size: u16) -> bool {
    size.is_power_of_two() && usize::from(size) <= QUEUE_SIZE
}

/// Errors of the device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An event other than the request queue's kick arrived.
    #[error("unexpected event id {0}")]
    UnknownEvent(u16),
    /// The frontend gave no memory table.
    #[error("the frontend shared no guest memory")]
    NoMemory,
    /// The request queue is broken (e.g. avail index out of range).
    #[error("request queue error: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The frontend set a queue size the device does not serve.
    #[error(
        "the request queue size is not a power of two from 1 to {QUEUE_SIZE} (the queue is {0} \
         entries, {UNSET_QUEUE_SIZE} meaning never validly set)"
    )]
    QueueSize(u16),
}

impl From<DeviceError> for io::Error {
    fn from(e: DeviceError) -> Self {
        io::Error::other(e)
    }
}

/// One VM's vpasid device for the lifetime of one vhost-user connection.
#[derive(Debug)]
pub struct PasidDevice {
    vm: VmId,
    name: String,
    registry: Arc<Mutex<Registry>>,
    mem: RwLock<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    event_idx: AtomicBool,
    /// The driver accepted VIRTIO_PASID_F_LEASE: GRANT and RETURN are
    /// served, not answered INVALID.
    lease_acked: AtomicBool,
    /// The driver accepted VIRTIO_PASID_F_RECONCILE (always offered).
    reconcile_acked: AtomicBool,
    /// VIRTIO_PASID_F_LEASE is offered: the VM's lease cap is not 0. Read
    /// once, at connection: the cap does not change during a session.
    lease_offered: bool,
    config_size_warned: AtomicBool,
    memory_warned: AtomicBool,
    queue_size_warned: AtomicBool,
    /// Budget of `event=guest-error` lines.
    warnings: Mutex<LogThrottle>,
    /// Read ends of the exit events handed to vhost-user-backend. Its
    /// `VringEpollHandler::new` (0.24.0) registers them by `into_raw_fd()`
    /// and never closes them: one descriptor per session, which a frontend
    /// reconnecting in a loop would turn into descriptor exhaustion. They
    /// are closed when the device is dropped; the handlers own an `Arc` of
    /// the device, so by then they and their epoll are gone. The workspace
    /// pins vhost-user-backend to that version for this reason.
    exit_consumers: Mutex<Vec<RawFd>>,
    /// The time slice the answering thread asks for on its first event
    /// (sched_slice.rs), and whether it has.
    request_slice: Option<Duration>,
    slice_asked: AtomicBool,
}

impl Drop for PasidDevice {
    fn drop(&mut self) {
        let suppressed = self
            .warnings
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take_suppressed();
        guest_errors_suppressed(&self.name, suppressed);
        let fds = std::mem::take(
            self.exit_consumers
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for fd in fds {
            // SAFETY: `fd` is an open eventfd that nothing owns (see
            // `exit_consumers`) and nothing uses any more: every handler
            // that registered it held an Arc of this device.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl PasidDevice {
    /// A device for slot `vm` named `name`.
    pub fn new(vm: VmId, name: &str, registry: Arc<Mutex<Registry>>) -> Self {
        let lease_offered = registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lease_cap(vm)
            > 0;
        PasidDevice {
            lease_acked: AtomicBool::new(false),
            reconcile_acked: AtomicBool::new(false),
            lease_offered,
            vm,
            name: name.to_string(),
            registry,
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            config_size_warned: AtomicBool::new(false),
            memory_warned: AtomicBool::new(false),
            queue_size_warned: AtomicBool::new(false),
            warnings: Mutex::new(LogThrottle::starting(Instant::now())),
            exit_consumers: Mutex::new(Vec::new()),
            request_slice: None,
            slice_asked: AtomicBool::new(false),
        }
    }

    /// The answering thread asks the kernel for time slices of `slice`
    /// (`--request-slice-us`), so that a request preempts the busy vCPU
    /// thread that kicked it rather than wait for the end of its slice.
    pub fn with_request_slice(mut self, slice: Option<Duration>) -> Self {
        self.request_slice = slice;
        self
    }

    /// On the answering thread's first event: ask for its time slice.
    fn take_request_slice(&self) {
        let Some(slice) = self.request_slice else {
            return;
        };
        if self.slice_asked.load(Ordering::Relaxed)
            || self.slice_asked.swap(true, Ordering::Relaxed)
        {
            return;
        }
        match crate::sched_slice::request_slice(slice) {
            Ok(true) => debug!(
                "vm={} answering thread asks for {slice:?} slices",
                self.name
            ),
            Ok(false) => debug!(
                "vm={} answering thread is not under a fair policy: its slice is left alone",
                self.name
            ),
            Err(e) => warn!(
                "vm={} event=sched-slice-failed error={}: its answers wait for a busy \
                 vCPU's time slice",
                self.name,
                crate::logfmt::Value(e)
            ),
        }
    }

    fn warn_guest(&self, args: std::fmt::Arguments<'_>) {
        let mut throttle = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if throttle.admit(Instant::now(), |n| guest_errors_suppressed(&self.name, n)) {
            warn!("vm={} event=guest-error {args}", self.name);
        }
    }

    /// The guest memory the frontend shared, if any.
    fn guest_memory(&self) -> Result<GuestMemoryLoadGuard<GuestMemoryMmap>, DeviceError> {
        self.mem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.memory())
            .ok_or(DeviceError::NoMemory)
    }

    /// Answers every available chain; returns how many were used.
    ///
    /// With durable state the answers are held back until the journal frame
    /// that records them is on disk (group commit), then put on the used
    /// ring in ring order: a frontend that re-delivers from the used index
    /// after a crash re-delivers exactly the requests whose answers the
    /// guest never saw.
    pub fn process_queue(&self, vring: &VringRwLock) -> Result<usize, DeviceError> {
        let (count, commit) = self.answer_available(vring)?;
        compact_if_due(commit);
        Ok(count)
    }

    /// [`PasidDevice::process_queue`] without the compaction that may
    /// follow, so the caller can signal the guest first.
    fn answer_available(
        &self,
        vring: &VringRwLock,
    ) -> Result<(usize, Option<CommitTicket>), DeviceError> {
        let mem = self.guest_memory()?;
        let (first_position, queue_size, chains) = {
            let mut state = vring.get_mut();
            let queue = state.get_queue_mut();
            let size = queue.size();
            if !queue_size_served(size) {
                return Err(DeviceError::QueueSize(size));
            }
            let first = queue.next_avail();
            let chains: Vec<_> = queue.iter(mem.clone())?.collect();
            (first, size, chains)
        };
        if chains.is_empty() {
            return Ok((0, None));
        }
        let mut used = Vec::with_capacity(chains.len());
        let negotiated = Negotiated {
            lease: self.lease_acked.load(Ordering::Relaxed),
            reconcile: self.reconcile_acked.load(Ordering::Relaxed),
        };
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Each chain's position in the avail ring (the replay key).
        let positions = std::iter::successors(Some(first_position), |p| Some(p.wrapping_add(1)));
        for (position, chain) in positions.zip(chains) {
            let head = chain.head_index();
            if head >= queue_size {
                // There is no chain, so nothing to return: a used element
                // names a head index of the table.
                registry.count_malformed(self.vm);
                self.warn_guest(format_args!(
                    "avail ring entry names descriptor {head}, outside the {queue_size}-entry \
                     table: skipped, nothing returned"
                ));
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = process_chain(chain, negotiated, |req, list| {
                debug!("vm={} {req}", self.name);
                registry.answer(self.vm, position, req, list)
            });
            match &outcome {
                ChainOutcome::Answered { .. } => {}
                ChainOutcome::Rejected(e) => {
                    registry.count_malformed(self.vm);
                    self.warn_guest(format_args!("malformed request answered INVALID: {e}"));
                }
                ChainOutcome::Dropped(e) => {
                    registry.count_malformed(self.vm);
                    self.warn_guest(format_args!("malformed chain returned unused: {e}"));
                }
            }
            registry.observe_latency(started.elapsed());
            used.push((head, outcome.used_len()));
        }
        let commit = registry.end_batch(self.vm);
        drop(registry);
        if let Some(point) = &commit {
            point.wait();
        }
        let count = used.len();
        for (head, len) in used {
            if let Err(e) = vring.add_used(head, len) {
                self.warn_guest(format_args!("cannot return descriptor {head}: {e}"));
            }
        }
        Ok((count, commit))
    }

    /// Whether the frontend has shared any guest memory.
    pub fn has_memory(&self) -> bool {
        self.guest_memory().is_ok()
    }

    /// Whether [`PasidDevice::memory_not_shared`] has named the fix.
    pub fn memory_misconfig_reported(&self) -> bool {
        self.memory_warned.load(Ordering::Relaxed)
    }

    /// Names the fix for QEMU started without shared memory, once.
    pub fn memory_not_shared(&self) {
        if !self.memory_warned.swap(true, Ordering::Relaxed) {
            error!(
                "vm={} event=misconfig {}: start QEMU with \
                 -object memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem",
                self.name,
                DeviceError::NoMemory
            );
        }
    }

    fn signal(&self, vring: &VringRwLock) {
        let needed = vring.needs_notification().unwrap_or(true);
        if needed {
            if let Err(e) = vring.signal_used_queue() {
                self.warn_guest(format_args!("cannot signal used queue: {e}"));
            }
        }
    }

    /// Drains the queue, re-checking after re-enabling notifications so a
    /// request that races with the re-enable is not missed (EVENT_IDX).
    fn drain(&self, vring: &VringRwLock) -> Result<(), DeviceError> {
        // Without shared memory even the notification flags are unreachable.
        self.guest_memory()?;
        if !self.event_idx.load(Ordering::Relaxed) {
            let (_, commit) = self.answer_available(vring)?;
            self.signal(vring);
            compact_if_due(commit);
            return Ok(());
        }
        loop {
            vring.disable_notification()?;
            let (_, commit) = self.answer_available(vring)?;
            self.signal(vring);
            compact_if_due(commit);
            if !vring.enable_notification()? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackend for PasidDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        VQ_MAX
    }

    fn max_queue_size(&self) -> usize {
        UNSET_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let lease = if self.lease_offered { 1 << F_LEASE } else { 0 };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | (1 << F_RECONCILE)
            | lease
    }

    /// The frontend's SET_FEATURES (what the driver accepted; vhost-user
    /// only lets it set features the device offered).
    fn acked_features(&self, features: u64) {
        let lease = self.lease_offered && features & (1 << F_LEASE) != 0;
        self.lease_acked.store(lease, Ordering::Relaxed);
        self.reconcile_acked
            .store(features & (1 << F_RECONCILE) != 0, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let end = u64::from(offset) + u64::from(size);
        if end > CONFIG_SIZE as u64 {
            error!(
                "vm={} event=misconfig QEMU asked for config bytes {offset}..{end} but the \
                 vpasid config space is {CONFIG_SIZE} bytes: set config_size={CONFIG_SIZE} \
                 on vhost-user-test-device-pci",
                self.name
            );
            return Vec::new();
        }
        if offset == 0
            && size as usize != CONFIG_SIZE
            && !self.config_size_warned.swap(true, Ordering::Relaxed)
        {
            warn!(
                "vm={} event=misconfig QEMU reads a {size}-byte config space; the vpasid \
                 config space is {CONFIG_SIZE} bytes: set config_size={CONFIG_SIZE}",
                self.name
            );
        }
        let config = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .device_config(self.vm)
            .encode();
        // `end` <= CONFIG_SIZE was checked above, so both fit in usize.
        let (Ok(start), Ok(end)) = (usize::try_from(offset), usize::try_from(end)) else {
            return Vec::new();
        };
        config
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// The config space is read-only: a write (QEMU forwards a guest's
    /// config write as SET_CONFIG) changes nothing and is reported as a
    /// guest error. It is still acknowledged as done: an error here would
    /// end the connection when REPLY_ACK is not negotiated, and with it
    /// every PASID the VM holds.
    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        self.warn_guest(format_args!(
            "config write of {} bytes at offset {offset} ignored: the config space is read-only",
            buf.len()
        ));
        Ok(())
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        let shared = mem.memory().num_regions() > 0;
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = shared.then_some(mem);
        if !shared {
            self.memory_not_shared();
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        self.exit_consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            self.warn_guest(format_args!("unexpected event set {:#x}", evset.bits()));
            return Ok(());
        }
        let vring = match (device_event, vrings.first()) {
            (REQUEST_QUEUE_EVENT, Some(vring)) => vring,
            _ => {
                self.warn_guest(format_args!("{}", DeviceError::UnknownEvent(device_event)));
                return Ok(());
            }
        };
        self.take_request_slice();
        // An Err here would end the vring worker and silently stop this VM's
        // device; log it and keep serving instead.
        match self.drain(vring) {
            Ok(()) => {}
            Err(DeviceError::NoMemory) => self.memory_not_shared(),
            Err(e @ DeviceError::QueueSize(_)) => {
                if !self.queue_size_warned.swap(true, Ordering::Relaxed) {
                    error!(
                        "vm={} event=misconfig {e}: nothing on it is served until the frontend \
                         sets it up with a valid size (QEMU: vq_size=)",
                        self.name
                    );
                }
            }
            Err(e) => self.warn_guest(format_args!("{e}")),
        }
        Ok(())
    }
}

/// Logs how many `event=guest-error` lines the throttle held back, if any.
fn guest_errors_suppressed(vm: &str, suppressed: u64) {
    if suppressed > 0 {
        warn!("vm={vm} event=guest-error suppressed={suppressed} (rate limit)");
    }
}

/// Compacts durable state if the drain just made it due, once the guest
/// has its answers.
fn compact_if_due(commit: Option<CommitTicket>) {
    if let Some(ticket) = commit {
        ticket.compact_if_due();
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
    use pasid_protocol::{Request, Response, Status, REQUEST_SIZE, RESPONSE_SIZE};
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const QSIZE: u16 = 16;

    struct Fixture {
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
        device: PasidDevice,
        vring: VringRwLock,
        registry: Arc<Mutex<Registry>>,
    }

    /// A device for VM "vm0" over 16 MiB of mock guest memory, with a
    /// request queue set up as a driver would.
    fn fixture() -> Fixture {
        lease_fixture(10, 0, false)
    }

    /// [`fixture`] with quota `quota` and lease cap `lease`; with `acked`
    /// the driver accepted VIRTIO_PASID_F_LEASE (SET_FEATURES).
    fn lease_fixture(quota: u32, lease: u32, acked: bool) -> Fixture {
        let gm = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let mem = GuestMemoryAtomic::new(gm);
        let space = PasidSpace::new(SpaceConfig {
            pasid_bits: 20,
            reserved: vec![],
        })
        .unwrap();
        let mut reg = Registry::new(space, 7);
        let vm = reg
            .add_vm(
                "vm0",
                "test",
                OwnerLimits {
                    quota,
                    range: 1..=0xfffff,
                },
            )
            .unwrap();
        reg.set_lease_cap(vm, lease);
        let registry = Arc::new(Mutex::new(reg));
        let device = PasidDevice::new(vm, "vm0", registry.clone());
        if acked {
            device.acked_features(device.features());
        }
        device.update_memory(mem.clone()).unwrap();
        let vring = VringRwLock::new(mem.clone(), QSIZE).unwrap();
        Fixture {
            mem,
            device,
            vring,
            registry,
        }
    }

    fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
        let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    /// Ring addresses of a queued mock queue.
    struct Rings {
        avail: u64,
        used: u64,
    }

    /// Queues `chains` in a mock split queue and points the vring at it.
    fn queue_chains(f: &Fixture, chains: &[Vec<RawDescriptor>]) -> Rings {
        let mem = f.mem.memory();
        let q = MockSplitQueue::new(&*mem, QSIZE);
        let mut offset = 0;
        for chain in chains {
            let mut linked = chain.clone();
            let n = linked.len();
            for (i, d) in linked.iter_mut().enumerate() {
                let sd = SplitDescriptor::from(*d);
                let (flags, next) = if i + 1 < n {
                    (sd.flags() | 1, offset + i as u16 + 1)
                } else {
                    (sd.flags(), 0)
                };
                *d = RawDescriptor::from(SplitDescriptor::new(sd.addr().0, sd.len(), flags, next));
            }
            q.add_desc_chains(&linked, offset).unwrap();
            offset += n as u16;
        }
        f.vring
            .set_queue_info(q.desc_table_addr().0, q.avail_addr().0, q.used_addr().0)
            .unwrap();
        f.vring.set_queue_size(QSIZE);
        f.vring.set_queue_ready(true);
        Rings {
            avail: q.avail_addr().0,
            used: q.used_addr().0,
        }
    }

    /// Writes ALLOC `tag` (range 1-100) at request slot `slot` and returns
    /// the well-formed chain for it: the request at `0x10_0000 + slot *
    /// 0x100`, its 16-byte response buffer at `0x20_0000 + slot * 0x100`.
    fn alloc_chain(f: &Fixture, tag: u64, slot: u64) -> Vec<RawDescriptor> {
        let req = Request::Alloc {
            tag,
            min: 1,
            max: 100,
        };
        let at = 0x10_0000 + slot * 0x100;
        f.mem
            .memory()
            .write_slice(&req.encode(), GuestAddress(at))
            .unwrap();
        vec![
            desc(at, REQUEST_SIZE as u32, false),
            desc(0x20_0000 + slot * 0x100, 16, true),
        ]
    }

    fn used_entry(f: &Fixture, rings: &Rings, slot: u64) -> (u32, u32) {
        let mem = f.mem.memory();
        let at = rings.used + 4 + slot * 8;
        let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    #[test]
    fn drains_good_and_bad_chains_in_one_pass() {
        let f = fixture();
        let mem = f.mem.memory();
        let rings = queue_chains(
            &f,
            &[
                alloc_chain(&f, 5, 0),
                vec![desc(0x10_0000, REQUEST_SIZE as u32, false)],
                vec![desc(0x10_0000, 4, false), desc(0x30_0000, 16, true)],
            ],
        );
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 3);
        assert_eq!(used_entry(&f, &rings, 0), (0, RESPONSE_SIZE as u32));
        assert_eq!(used_entry(&f, &rings, 1), (2, 0));
        assert_eq!(used_entry(&f, &rings, 2), (3, RESPONSE_SIZE as u32));
        let mut b = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut b, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(Response::decode(&b), Response::ok(5, 1));
        mem.read_slice(&mut b, GuestAddress(0x30_0000)).unwrap();
        assert_eq!(
            Status::from_wire(Response::decode(&b).status),
            Some(Status::Invalid)
        );
        let reg = f.registry.lock().unwrap();
        assert_eq!(reg.space().stats().allocated, 1);
        assert_eq!(reg.vms()[0].counters.malformed, 2);
        // An empty queue (e.g. when the vring is enabled) is fine.
        drop(reg);
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 0);
    }

    /// An avail index that runs more than a queue ahead is a broken driver;
    /// handle_event must still return Ok so the worker thread survives.
    #[test]
    fn bogus_avail_index_keeps_the_worker_alive() {
        let f = fixture();
        let rings = queue_chains(
            &f,
            &[vec![desc(0x10_0000, 24, false), desc(0x20_0000, 16, true)]],
        );
        let mem = f.mem.memory();
        mem.write_obj(QSIZE * 3, GuestAddress(rings.avail + 2))
            .unwrap();
        assert!(f.device.process_queue(&f.vring).is_err());
        let vrings = [f.vring.clone()];
        assert!(f
            .device
            .handle_event(REQUEST_QUEUE_EVENT, EventSet::IN, &vrings, 0)
            .is_ok());
        assert!(f.device.handle_event(9, EventSet::IN, &vrings, 0).is_ok());
    }

    /// 5.x.6.1: an avail ring entry naming a descriptor outside the table
    /// has no chain to return; it is skipped (nothing used for it), counted
    /// as malformed, and the entries after it are served.
    #[test]
    fn head_index_outside_the_table_is_skipped() {
        let f = fixture();
        let mem = f.mem.memory();
        let good = alloc_chain(&f, 9, 0);
        let rings = queue_chains(&f, &[good.clone(), good]);
        // The first entry names descriptor 999 of a 16-entry table.
        mem.write_obj(999u16, GuestAddress(rings.avail + 4))
            .unwrap();
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 1);
        assert_eq!(used_entry(&f, &rings, 0), (2, RESPONSE_SIZE as u32));
        let used_idx: u16 = mem.read_obj(GuestAddress(rings.used + 2)).unwrap();
        assert_eq!(used_idx, 1, "nothing is used for the skipped entry");
        let reg = f.registry.lock().unwrap();
        assert_eq!(reg.space().stats().allocated, 1);
        assert_eq!(reg.vms()[0].counters.malformed, 1);
    }

    /// 5.x.2: only powers of two from 1 to 1024 are served. A queue whose
    /// size was never validly set (virtio-queue keeps the initial 32768 when
    /// SET_VRING_NUM is not a power of two) or is above 1024 serves nothing,
    /// and the worker survives.
    #[test]
    fn queue_sizes_the_device_does_not_serve_are_refused() {
        assert!((0..=10).all(|b| queue_size_served(1 << b)));
        for size in [0, 3, 100, 1000, 2048, 32768] {
            assert!(!queue_size_served(size), "{size}");
        }
        let f = fixture();
        let vring = VringRwLock::new(f.mem.clone(), UNSET_QUEUE_SIZE as u16).unwrap();
        vring.set_queue_size(100); // ignored by virtio-queue
        vring.set_queue_ready(true);
        assert!(matches!(
            f.device.process_queue(&vring),
            Err(DeviceError::QueueSize(32768))
        ));
        vring.set_queue_size(2048);
        assert!(matches!(
            f.device.process_queue(&vring),
            Err(DeviceError::QueueSize(2048))
        ));
        let vrings = [vring];
        assert!(f
            .device
            .handle_event(REQUEST_QUEUE_EVENT, EventSet::IN, &vrings, 0)
            .is_ok());
        assert_eq!(f.device.max_queue_size(), UNSET_QUEUE_SIZE);
    }

    #[test]
    fn config_reads_are_bounded_by_the_config_size() {
        let f = fixture();
        let full = f.device.get_config(0, CONFIG_SIZE as u32);
        let cfg = pasid_protocol::Config::decode(&full.clone().try_into().unwrap());
        assert_eq!(
            (cfg.pasid_min, cfg.pasid_max, cfg.quota, cfg.space_id),
            (1, 0xfffff, 10, 7)
        );
        assert_eq!(f.device.get_config(8, 8), full[8..16].to_vec());
        // QEMU's config_size larger than ours: an empty reply fails realize.
        assert!(f.device.get_config(0, 64).is_empty());
        assert!(f.device.get_config(u32::MAX, 2).is_empty());
    }

    #[test]
    fn offers_what_the_protocol_requires() {
        let f = fixture();
        let features = f.device.features();
        assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
        assert_ne!(features & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
        assert!(f
            .device
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        assert_eq!(f.device.num_queues(), 1);
    }

    /// Requests beyond the VM's rate limit are answered RATE_LIMITED (tag
    /// echoed, no PASID, no effect) and returned as used, never dropped.
    #[test]
    fn rate_limited_requests_are_answered_not_dropped() {
        let f = fixture();
        f.registry
            .lock()
            .unwrap()
            .set_rate_limit(Some(crate::rate_limit::RateLimit {
                per_second: 1,
                burst: 2,
            }));
        let mem = f.mem.memory();
        let chains: Vec<_> = (0..4u64).map(|i| alloc_chain(&f, 100 + i, i)).collect();
        let rings = queue_chains(&f, &chains);
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 4);
        let mut statuses = Vec::new();
        for i in 0..4u64 {
            assert_eq!(used_entry(&f, &rings, i).1, RESPONSE_SIZE as u32);
            let mut b = [0u8; RESPONSE_SIZE];
            mem.read_slice(&mut b, GuestAddress(0x20_0000 + i * 0x100))
                .unwrap();
            let r = Response::decode(&b);
            assert_eq!(r.tag, 100 + i);
            statuses.push((Status::from_wire(r.status), r.pasid));
        }
        assert_eq!(
            statuses,
            [
                (Some(Status::Ok), 1),
                (Some(Status::Ok), 2),
                (Some(Status::RateLimited), pasid_protocol::PASID_NONE),
                (Some(Status::RateLimited), pasid_protocol::PASID_NONE),
            ]
        );
        let reg = f.registry.lock().unwrap();
        assert_eq!(reg.space().stats().allocated, 2, "no effect");
        assert_eq!(reg.vms()[0].counters.statuses.get("RATE_LIMITED"), Some(&2));
    }

    /// 5.x.6.11: malformed chains take no token. With a burst of 1 and no
    /// refill to speak of, three malformed chains ahead of an ALLOC leave
    /// the token for it; the next ALLOC finds none.
    #[test]
    fn malformed_chains_take_no_token() {
        let f = fixture();
        f.registry
            .lock()
            .unwrap()
            .set_rate_limit(Some(crate::rate_limit::RateLimit {
                per_second: 1,
                burst: 1,
            }));
        let mem = f.mem.memory();
        let first = alloc_chain(&f, 1, 0);
        let second = alloc_chain(&f, 2, 1);
        let short = vec![desc(0x10_0000, 4, false), desc(0x30_0000, 16, true)];
        let rings = queue_chains(&f, &[short.clone(), short.clone(), short, first, second]);
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 5);
        assert!((0..5).all(|i| used_entry(&f, &rings, i).1 == RESPONSE_SIZE as u32));
        let mut b = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut b, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(Response::decode(&b), Response::ok(1, 1));
        mem.read_slice(&mut b, GuestAddress(0x20_0100)).unwrap();
        assert_eq!(Response::decode(&b), Response::new(Status::RateLimited, 2));
    }

    /// Where lease chains of request slot `slot` live: the readable part
    /// at `0x40_0000 + slot * 0x1000`, the writable part at
    /// `0x80_0000 + slot * 0x1000` (room for a full GRANT and more).
    fn lease_at(slot: u64) -> (u64, u64) {
        (0x40_0000 + slot * 0x1000, 0x80_0000 + slot * 0x1000)
    }

    /// A GRANT chain at `slot` with `room` writable bytes, pre-filled with
    /// 0xee so that untouched bytes show.
    fn grant_chain(f: &Fixture, slot: u64, req: Request, room: u32) -> Vec<RawDescriptor> {
        let (at, out) = lease_at(slot);
        let mem = f.mem.memory();
        mem.write_slice(&req.encode(), GuestAddress(at)).unwrap();
        mem.write_slice(&vec![0xee; room as usize], GuestAddress(out))
            .unwrap();
        vec![desc(at, REQUEST_SIZE as u32, false), desc(out, room, true)]
    }

    fn grant(tag: u64, count: u16, cached: u16, min: u32, max: u32) -> Request {
        Request::Grant {
            tag,
            count,
            cached,
            min,
            max,
        }
    }

    /// A RETURN chain at `slot`: header saying `count`, then `list` (its
    /// readable part is `24 + 4 * list.len()` bytes whatever `count` says).
    fn return_chain(
        f: &Fixture,
        slot: u64,
        count: u16,
        cached: u16,
        list: &[u32],
    ) -> Vec<RawDescriptor> {
        let (at, out) = lease_at(slot);
        let req = Request::Return {
            tag: 0x700 + slot,
            count,
            cached,
        };
        let mut bytes = req.encode().to_vec();
        bytes.extend(pasid_protocol::encode_pasids(list));
        f.mem
            .memory()
            .write_slice(&bytes, GuestAddress(at))
            .unwrap();
        vec![
            desc(at, bytes.len() as u32, false),
            desc(out, RESPONSE_SIZE as u32, true),
        ]
    }

    /// The response at `slot` and the `n` PASIDs after it.
    fn lease_reply(f: &Fixture, slot: u64, n: usize) -> (Response, Vec<u32>) {
        let (_, out) = lease_at(slot);
        let mem = f.mem.memory();
        let mut b = vec![0u8; RESPONSE_SIZE + 4 * n];
        mem.read_slice(&mut b, GuestAddress(out)).unwrap();
        let resp: [u8; RESPONSE_SIZE] = b[..RESPONSE_SIZE].try_into().unwrap();
        (
            Response::decode(&resp),
            pasid_protocol::decode_pasids(&b[RESPONSE_SIZE..]),
        )
    }

    fn status(resp: &Response) -> Option<Status> {
        Status::from_wire(resp.status)
    }

    /// The VM's (held, cached) as `pasidctl vms` shows them.
    fn held_cached(f: &Fixture) -> (u32, u32) {
        let vm = &f.registry.lock().unwrap().vms()[0];
        (vm.held, vm.cached)
    }

    /// 5.x.3/5.x.4: F_LEASE is offered iff the cap is not 0, and the config
    /// space reports the cap as lease_max.
    #[test]
    fn lease_feature_and_lease_max_follow_the_cap() {
        let on = lease_fixture(100, 32, false);
        assert_ne!(on.device.features() & (1 << F_LEASE), 0);
        let lease_max =
            |f: &Fixture| u32::from_le_bytes(f.device.get_config(20, 4).try_into().unwrap());
        assert_eq!(lease_max(&on), 32);
        let off = lease_fixture(100, 0, false);
        assert_eq!(off.device.features() & (1 << F_LEASE), 0);
        assert_eq!(lease_max(&off), 0);
        // F_RECONCILE is offered whatever the lease cap; no other
        // device-type bit is.
        for f in [&on, &off] {
            let device_bits = f.device.features() & pasid_protocol::FEATURES_RESERVED_MASK;
            assert_eq!(device_bits & !(1 << F_LEASE), 1 << F_RECONCILE);
        }
    }

    /// 5.x.6.12: a GRANT gets the lowest free PASIDs in ascending order,
    /// used length 16 + 4 * granted, entries past the last granted left
    /// untouched; held and cached follow.
    #[test]
    fn grant_writes_the_lowest_pasids_after_the_response() {
        let f = lease_fixture(100, 32, true);
        let rings = queue_chains(
            &f,
            &[grant_chain(
                &f,
                0,
                grant(0x61, 32, 0, 1, 0xfffff),
                16 + 4 * 40,
            )],
        );
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 1);
        assert_eq!(used_entry(&f, &rings, 0), (0, 16 + 4 * 32));
        let (resp, pasids) = lease_reply(&f, 0, 33);
        assert_eq!(resp, Response::ok(0x61, 32));
        assert_eq!(&pasids[..32], &(1..=32).collect::<Vec<u32>>()[..]);
        assert_eq!(
            pasids[32], 0xeeee_eeee,
            "entries past the last granted are untouched"
        );
        assert_eq!(held_cached(&f), (32, 32));
        let reg = f.registry.lock().unwrap();
        assert_eq!(reg.vms()[0].counters.requests.get("GRANT"), Some(&1));
    }

    /// A GRANT is cut to the quota, then refused QUOTA_EXCEEDED; cut to
    /// the free PASIDs of its range; NO_SPACE when there is none.
    #[test]
    fn grant_is_bounded_by_quota_and_free_pasids() {
        let f = lease_fixture(10, 64, true);
        let rings = queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 3, 0, 5, 7), 16 + 4 * 3),
                grant_chain(&f, 1, grant(2, 3, 3, 5, 7), 16 + 4 * 3),
                grant_chain(&f, 2, grant(3, 64, 3, 1, 0xfffff), 16 + 4 * 64),
                grant_chain(&f, 3, grant(4, 1, 10, 1, 0xfffff), 16 + 4),
            ],
        );
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 4);
        assert_eq!(lease_reply(&f, 0, 3), (Response::ok(1, 3), vec![5, 6, 7]));
        assert_eq!(used_entry(&f, &rings, 0).1, 16 + 12);
        assert_eq!(status(&lease_reply(&f, 1, 0).0), Some(Status::NoSpace));
        assert_eq!(used_entry(&f, &rings, 1).1, 16);
        let (resp, pasids) = lease_reply(&f, 2, 7);
        assert_eq!(resp, Response::ok(3, 7), "quota 10 less the 3 held");
        assert_eq!(pasids, vec![1, 2, 3, 4, 8, 9, 10]);
        assert_eq!(
            status(&lease_reply(&f, 3, 0).0),
            Some(Status::QuotaExceeded)
        );
        assert_eq!(held_cached(&f), (10, 10));
    }

    /// The lease cap less the reported `cached` bounds a GRANT; at the cap
    /// it is QUOTA_EXCEEDED.
    #[test]
    fn grant_is_bounded_by_the_lease_cap() {
        let f = lease_fixture(1000, 8, true);
        queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 32, 0, 1, 0xfffff), 16 + 4 * 32),
                grant_chain(&f, 1, grant(2, 32, 8, 1, 0xfffff), 16 + 4 * 32),
                grant_chain(&f, 2, grant(3, 32, 5, 1, 0xfffff), 16 + 4 * 32),
            ],
        );
        f.device.process_queue(&f.vring).unwrap();
        assert_eq!(lease_reply(&f, 0, 8).0, Response::ok(1, 8));
        assert_eq!(
            status(&lease_reply(&f, 1, 0).0),
            Some(Status::QuotaExceeded)
        );
        assert_eq!(lease_reply(&f, 2, 3), (Response::ok(3, 3), vec![9, 10, 11]));
        // The driver's own figure, moved by the grant, clamped to held.
        assert_eq!(held_cached(&f), (11, 8));
    }

    /// 5.x.6.1 row 4: a count of 0 or above 64, or a writable part too
    /// short for the count, is INVALID with the tag echoed, counted as
    /// malformed, and allocates nothing.
    #[test]
    fn malformed_grants_are_invalid_and_allocate_nothing() {
        let f = lease_fixture(1000, 64, true);
        let rings = queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(0x10, 0, 0, 1, 9), 16 + 4 * 64),
                grant_chain(&f, 1, grant(0x11, 65, 0, 1, 9), 16 + 4 * 80),
                grant_chain(&f, 2, grant(0x12, 4, 0, 1, 9), 16 + 4 * 3),
                grant_chain(&f, 3, grant(0x13, 4, 0, 9, 1), 16 + 4 * 4),
            ],
        );
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 4);
        for slot in 0..3 {
            let (resp, _) = lease_reply(&f, slot, 0);
            assert_eq!(
                resp,
                Response::new(Status::Invalid, 0x10 + slot),
                "slot {slot}"
            );
            assert_eq!(used_entry(&f, &rings, slot).1, 16);
        }
        // min > max is a well-formed request with a bad range.
        assert_eq!(
            lease_reply(&f, 3, 0).0,
            Response::new(Status::Invalid, 0x13)
        );
        let reg = f.registry.lock().unwrap();
        assert_eq!(reg.space().stats().allocated, 0);
        assert_eq!(reg.vms()[0].counters.malformed, 3);
    }

    /// RETURN drops one reference per listed PASID and moves `cached`.
    #[test]
    fn return_releases_its_list() {
        let f = lease_fixture(100, 32, true);
        queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 8, 0, 1, 0xfffff), 16 + 4 * 8),
                return_chain(&f, 1, 3, 8, &[2, 7, 4]),
            ],
        );
        f.device.process_queue(&f.vring).unwrap();
        assert_eq!(lease_reply(&f, 1, 0).0, Response::ok(0x701, 3));
        assert_eq!(held_cached(&f), (5, 5));
        let reg = f.registry.lock().unwrap();
        assert_eq!(
            reg.pasids_of(Some("vm0"))
                .unwrap()
                .iter()
                .map(|p| p.pasid)
                .collect::<Vec<_>>(),
            vec![1, 3, 5, 6, 8]
        );
    }

    /// 5.x.6.1 row 4: a RETURN whose readable part is not exactly
    /// `24 + 4 * count` is INVALID with its tag; one shorter than 24 bytes
    /// is INVALID with tag 0 (row 3). Nothing is released either way, and a
    /// huge readable part is refused without reading it.
    #[test]
    fn return_of_the_wrong_length_is_invalid() {
        let f = lease_fixture(100, 32, true);
        let (at, out) = lease_at(9);
        let rings = queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 4, 0, 1, 0xfffff), 16 + 4 * 4),
                return_chain(&f, 1, 2, 4, &[1]),
                return_chain(&f, 2, 2, 4, &[1, 2, 3]),
                vec![desc(at, 0x10_0000, false), desc(out, 16, true)],
                vec![
                    desc(lease_at(1).0, 20, false),
                    desc(lease_at(3).1, 16, true),
                ],
            ],
        );
        assert_eq!(f.device.process_queue(&f.vring).unwrap(), 5);
        assert_eq!(
            lease_reply(&f, 1, 0).0,
            Response::new(Status::Invalid, 0x701)
        );
        assert_eq!(
            lease_reply(&f, 2, 0).0,
            Response::new(Status::Invalid, 0x702)
        );
        // The 1 MiB readable part at slot 9 holds zeros: opcode 0, not RETURN.
        let mut b = [0u8; RESPONSE_SIZE];
        f.mem
            .memory()
            .read_slice(&mut b, GuestAddress(out))
            .unwrap();
        assert_eq!(Response::decode(&b), Response::new(Status::Invalid, 0));
        assert_eq!(lease_reply(&f, 3, 0).0, Response::new(Status::Invalid, 0));
        assert_eq!(used_entry(&f, &rings, 4).1, 16);
        assert_eq!(held_cached(&f).0, 4);
        assert_eq!(f.registry.lock().unwrap().vms()[0].counters.malformed, 4);
    }

    /// A RETURN whose list repeats a PASID is INVALID; one listing a PASID
    /// the VM does not hold is NOT_OWNER (NOT_FOUND if unallocated), for
    /// the first failing PASID; either way nothing is released.
    #[test]
    fn return_is_all_or_nothing() {
        let f = lease_fixture(100, 32, true);
        // PASID 50 belongs to a host holder.
        {
            let mut reg = f.registry.lock().unwrap();
            let vm = reg.vm("vm0").unwrap();
            let p = reg
                .handle(
                    vm,
                    Request::Alloc {
                        tag: 0,
                        min: 50,
                        max: 50,
                    },
                )
                .pasid;
            reg.host_get("drv", p).unwrap();
            reg.handle(vm, Request::Free { tag: 0, pasid: p });
        }
        queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 4, 0, 1, 0xfffff), 16 + 4 * 4),
                return_chain(&f, 1, 3, 4, &[1, 2, 1]),
                return_chain(&f, 2, 3, 4, &[1, 50, 60]),
                return_chain(&f, 3, 3, 4, &[1, 60, 50]),
                return_chain(&f, 4, 2, 4, &[2, 0]),
            ],
        );
        f.device.process_queue(&f.vring).unwrap();
        assert_eq!(
            lease_reply(&f, 1, 0).0,
            Response::new(Status::Invalid, 0x701)
        );
        assert_eq!(
            lease_reply(&f, 2, 0).0,
            Response::new(Status::NotOwner, 0x702)
        );
        assert_eq!(
            lease_reply(&f, 3, 0).0,
            Response::new(Status::NotFound, 0x703)
        );
        assert_eq!(
            lease_reply(&f, 4, 0).0,
            Response::new(Status::Invalid, 0x704)
        );
        assert_eq!(held_cached(&f), (4, 4), "nothing released");
    }

    /// 5.x.6.12.2: GRANT and RETURN are INVALID (tag echoed, malformed)
    /// unless the driver accepted F_LEASE, and never offered at lease=0.
    #[test]
    fn lease_requests_without_the_feature_are_invalid() {
        for (lease, acked) in [(32, false), (0, true)] {
            let f = lease_fixture(100, lease, acked);
            queue_chains(
                &f,
                &[
                    grant_chain(&f, 0, grant(0x51, 4, 0, 1, 0xfffff), 16 + 4 * 4),
                    return_chain(&f, 1, 1, 0, &[1]),
                ],
            );
            assert_eq!(f.device.process_queue(&f.vring).unwrap(), 2);
            assert_eq!(
                lease_reply(&f, 0, 0).0,
                Response::new(Status::Invalid, 0x51)
            );
            assert_eq!(
                lease_reply(&f, 1, 0).0,
                Response::new(Status::Invalid, 0x701)
            );
            let reg = f.registry.lock().unwrap();
            assert_eq!(reg.space().stats().allocated, 0);
            assert_eq!(reg.vms()[0].counters.malformed, 2);
        }
    }

    /// Leased PASIDs are ordinary references: RESET releases them and the
    /// reported `cached` goes back to 0.
    #[test]
    fn reset_releases_leased_pasids_and_clears_cached() {
        let f = lease_fixture(100, 32, true);
        let reset_at = 0x10_0000;
        f.mem
            .memory()
            .write_slice(&Request::Reset { tag: 3 }.encode(), GuestAddress(reset_at))
            .unwrap();
        queue_chains(
            &f,
            &[
                grant_chain(&f, 0, grant(1, 16, 0, 1, 0xfffff), 16 + 4 * 16),
                vec![desc(reset_at, 24, false), desc(0x20_0000, 16, true)],
            ],
        );
        f.device.process_queue(&f.vring).unwrap();
        let mut b = [0u8; RESPONSE_SIZE];
        f.mem
            .memory()
            .read_slice(&mut b, GuestAddress(0x20_0000))
            .unwrap();
        assert_eq!(Response::decode(&b), Response::ok(3, 16));
        assert_eq!(held_cached(&f), (0, 0));
    }

    /// vhost-user-backend registers the exit event's read end by raw
    /// descriptor and never closes it; the device closes it when dropped,
    /// so sessions do not leak a descriptor each.
    #[test]
    fn exit_event_descriptors_are_closed_with_the_device() {
        use std::os::fd::IntoRawFd;
        let f = fixture();
        let (consumer, _notifier) = f.device.exit_event(0).unwrap();
        let fd = consumer.into_raw_fd(); // what VringEpollHandler::new does
        let inode = |fd: RawFd| {
            // What fstat(fd) would say, without borrowing a number that may
            // be closed: /proc/self/fd/N leads to the open file, if any.
            use std::os::unix::fs::MetadataExt;
            let st = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
            Some((st.dev(), st.ino()))
        };
        let before = inode(fd);
        assert!(before.is_some());
        drop(f);
        // Closed: the number is free, or already reused by something else.
        assert_ne!(inode(fd), before);
    }
}
