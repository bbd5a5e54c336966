// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fuzzes the whole request path the way a hostile guest drives it: the
//! input is the guest's memory (descriptor table, avail ring, buffers,
//! indirect tables, even the used ring), and the device's real vring
//! handler (`handle_event`, as the vhost-user worker calls it) drains the
//! queue into a real `Registry`.
//!
//! Input: byte 0 = options (bits 0-2: log2 of the queue size, 1..=16;
//! bit 3: EVENT_IDX; bit 4: kick twice, the second time with the avail
//! index bumped; bit 5: a tight rate limit; bit 6: a lease cap of
//! [`LEASE`] with VIRTIO_PASID_F_LEASE negotiated, so GRANT and RETURN are
//! served; bit 7: VIRTIO_PASID_F_RECONCILE negotiated, so RECONCILE is
//! served), then the image of guest memory
//! from address 0. Guest memory is two adjacent regions, [0, 0x800) and
//! [0x800, 0x1000) (a buffer may straddle them), and a third region at
//! 0x10000 beyond a gap. The ring lives at 0x0 (descriptors), 0x100
//! (avail) and 0x200 (used).
//!
//! Checked after every kick: the handler returns Ok (an Err would end the
//! VM's vring worker); without EVENT_IDX one kick uses at most a queue's
//! worth of chains; the registry holds no more than the quota, inside the
//! VM's range; the `cached` figure the host keeps never exceeds what the
//! VM holds. (The used ring itself is not checked: it is guest memory,
//! and a hostile guest may point its own response buffers at it, which
//! the fuzzer found at once. With EVENT_IDX a guest can even make responses
//! bump its own avail index; the drain loop then goes round again, bounded
//! by the quota, the rate limit and the fuzzer's 10 s hang limit.)

#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vhost_user_pasid::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
use vhost_user_pasid::rate_limit::RateLimit;
use vhost_user_pasid::registry::Registry;
use vhost_user_pasid::vhu_vpasid::{PasidDevice, REQUEST_QUEUE_EVENT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;
const IMAGE: usize = 0x1000;
const QUOTA: u32 = 6;
const RANGE: std::ops::RangeInclusive<u32> = 2..=200;
const LEASE: u32 = 4;

/// The device's own count of used chains (not the guest's copy).
fn next_used(vring: &VringRwLock) -> u16 {
    vring.get_ref().get_queue().next_used()
}

fn check(qsize: u16, event_idx: bool, from: u16, to: u16, registry: &Mutex<Registry>) {
    let produced = to.wrapping_sub(from);
    if !event_idx {
        assert!(
            produced <= qsize,
            "{produced} chains used in a queue of {qsize}"
        );
    }
    let reg = registry.lock().unwrap();
    for vm in reg.vms() {
        assert!(vm.held <= QUOTA, "{} holds {} > quota", vm.name, vm.held);
        assert!(vm.cached <= vm.held, "{} caches {} > held {}", vm.name, vm.cached, vm.held);
    }
    for info in reg.pasids() {
        assert!(
            RANGE.contains(&info.pasid),
            "PASID {} outside the VM's range",
            info.pasid
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, image)) = data.split_first() else {
        return;
    };
    let qsize: u16 = 1 << (opts & 0x7).min(4);
    let event_idx = opts & 0x08 != 0;
    let second_kick = opts & 0x10 != 0;

    let gm = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 0x800),
        (GuestAddress(0x800), 0x800),
        (GuestAddress(0x1_0000), 0x100),
    ])
    .unwrap();
    let image = image.get(..IMAGE).unwrap_or(image);
    gm.write_slice(image, GuestAddress(0)).unwrap();
    let mem = GuestMemoryAtomic::new(gm);

    let space = PasidSpace::new(SpaceConfig {
        pasid_bits: 8,
        reserved: vec![100..=109],
    })
    .unwrap();
    let mut reg = Registry::new(space, 1);
    if opts & 0x20 != 0 {
        reg.set_rate_limit(Some(RateLimit {
            per_second: 1,
            burst: 3,
        }));
    }
    let vm = reg
        .add_vm(
            "fuzz",
            "fuzz",
            OwnerLimits {
                quota: QUOTA,
                range: RANGE,
            },
        )
        .unwrap();
    let lease = opts & 0x40 != 0;
    if lease {
        reg.set_lease_cap(vm, LEASE);
    }
    let registry = Arc::new(Mutex::new(reg));
    let device = PasidDevice::new(vm, "fuzz", registry.clone());
    let mut device_features = 0;
    if lease {
        device_features |= 1 << pasid_protocol::F_LEASE;
    }
    if opts & 0x80 != 0 {
        device_features |= 1 << pasid_protocol::F_RECONCILE;
    }
    // Everything transport-level the device offers, and the chosen
    // device-type bits.
    let offered = device.features();
    device.acked_features(offered & !pasid_protocol::FEATURES_RESERVED_MASK | offered & device_features);
    device.update_memory(mem.clone()).unwrap();
    device.set_event_idx(event_idx);

    let vring = VringRwLock::new(mem.clone(), 16).unwrap();
    if vring.set_queue_info(DESC, AVAIL, USED).is_err() {
        return;
    }
    vring.set_queue_size(qsize);
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);
    let vrings = [vring];

    let guest = mem.memory();
    let before = next_used(&vrings[0]);
    device
        .handle_event(REQUEST_QUEUE_EVENT, EventSet::IN, &vrings, 0)
        .expect("handle_event must never fail");
    let after = next_used(&vrings[0]);
    check(qsize, event_idx, before, after, &registry);

    if second_kick {
        // The guest makes one more chain available (whatever it points at).
        let idx = guest
            .read_obj::<u16>(GuestAddress(AVAIL + 2))
            .map_or(0, u16::from_le);
        let _ = guest.write_obj(idx.wrapping_add(1).to_le(), GuestAddress(AVAIL + 2));
        device
            .handle_event(REQUEST_QUEUE_EVENT, EventSet::IN, &vrings, 0)
            .expect("handle_event must never fail");
        check(qsize, event_idx, after, next_used(&vrings[0]), &registry);
    }
    // Any other event is ignored, not fatal.
    device
        .handle_event(REQUEST_QUEUE_EVENT + 1, EventSet::IN, &vrings, 0)
        .expect("unknown events must not fail");
});
