// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vhost-user device of one VM session: features, config space and the
//! request queue handler.
//!
//! A fresh `PasidDevice` is made for every connection of a VM slot. It owns
//! nothing but its session's bookkeeping; PASIDs live in the shared
//! [`Registry`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use log::{debug, error, warn};
use pasid_protocol::{CONFIG_SIZE, VQ_MAX};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueOwnedT;
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryLoadGuard, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

use crate::rate_limit::WarnLimiter;
use crate::registry::{Registry, VmId};
use crate::request::{process_chain, ChainOutcome};

/// Event id of the request queue's kick.
pub const REQUEST_QUEUE_EVENT: u16 = pasid_protocol::VQ_REQUEST;

/// Queue size the device offers; QEMU's default `vq_size` is 64.
pub const QUEUE_SIZE: usize = 1024;

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
    config_size_warned: AtomicBool,
    memory_warned: AtomicBool,
    warnings: Mutex<WarnLimiter>,
}

impl PasidDevice {
    /// A device for slot `vm` named `name`.
    pub fn new(vm: VmId, name: &str, registry: Arc<Mutex<Registry>>) -> Self {
        PasidDevice {
            vm,
            name: name.to_string(),
            registry,
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            config_size_warned: AtomicBool::new(false),
            memory_warned: AtomicBool::new(false),
            warnings: Mutex::new(WarnLimiter::default()),
        }
    }

    fn warn_guest(&self, args: std::fmt::Arguments<'_>) {
        let mut limiter = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        limiter.warn(&self.name, args);
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
    pub fn process_queue(&self, vring: &VringRwLock) -> Result<usize, DeviceError> {
        let mem = self.guest_memory()?;
        let chains: Vec<_> = vring.get_mut().get_queue_mut().iter(mem.clone())?.collect();
        if chains.is_empty() {
            return Ok(0);
        }
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let count = chains.len();
        for chain in chains {
            let head = chain.head_index();
            let outcome = process_chain(chain, |req| {
                debug!("vm={} request={:?}", self.name, req);
                registry.handle(self.vm, req)
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
                ChainOutcome::Unanswered {
                    request,
                    response,
                    error,
                } => {
                    registry.count_malformed(self.vm);
                    registry.undo(self.vm, *request, *response);
                    self.warn_guest(format_args!("response not writable, request undone: {error}"));
                }
            }
            if let Err(e) = vring.add_used(head, outcome.used_len()) {
                self.warn_guest(format_args!("cannot return descriptor {head}: {e}"));
            }
        }
        Ok(count)
    }

    /// Whether the frontend has shared any guest memory.
    pub fn has_memory(&self) -> bool {
        self.guest_memory().is_ok()
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
            self.process_queue(vring)?;
            self.signal(vring);
            return Ok(());
        }
        loop {
            vring.disable_notification()?;
            self.process_queue(vring)?;
            self.signal(vring);
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
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
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
        config
            .get(offset as usize..end as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
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
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            self.warn_guest(format_args!("unexpected event set {evset:?}"));
            return Ok(());
        }
        let vring = match (device_event, vrings.first()) {
            (REQUEST_QUEUE_EVENT, Some(vring)) => vring,
            _ => {
                self.warn_guest(format_args!("{}", DeviceError::UnknownEvent(device_event)));
                return Ok(());
            }
        };
        // An Err here would end the vring worker and silently stop this VM's
        // device; log it and keep serving instead.
        match self.drain(vring) {
            Ok(()) => {}
            Err(DeviceError::NoMemory) => self.memory_not_shared(),
            Err(e) => self.warn_guest(format_args!("{e}")),
        }
        Ok(())
    }
}
