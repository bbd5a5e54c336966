// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fuzzes the durable state's decoders (`state::codec`) and recovery
//! (`state::Recovery`, `Registry::restored`) with arbitrary bytes, as a
//! damaged or hostile state directory would present them. Nothing may
//! panic; whatever decodes must encode back to the same thing; and any
//! state recovery reaches must snapshot and restore again.
//!
//! Records include batches whose answers carry lease lists (GRANT,
//! RETURN), which recovery applies to the registry's VMs.
//!
//! Input: byte 0 selects what the rest is: 0 a snapshot file, 1 a journal
//! frame's payload (records), 2 a commit frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_user_pasid::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
use vhost_user_pasid::registry::record::StateImage;
use vhost_user_pasid::registry::Registry;
use pasid_protocol::PasidList;
use vhost_user_pasid::state::Recovery;
use vhost_user_pasid::state::codec::{
    decode_snapshot, encode_snapshot, get_records, put_record, read_commit,
};

fn space() -> PasidSpace {
    PasidSpace::new(SpaceConfig {
        pasid_bits: 12,
        reserved: vec![1..=3],
    })
    .unwrap()
}

/// Two VMs holding a few PASIDs, for records to apply to.
fn registry() -> Registry {
    let mut reg = Registry::new(space(), 9);
    for (i, name) in ["web", "db"].into_iter().enumerate() {
        let vm = reg
            .configure_vm(
                name,
                name,
                OwnerLimits {
                    quota: 16,
                    range: 4..=4095,
                },
            )
            .unwrap();
        for tag in 0..4u16 {
            let req = pasid_protocol::Request::Alloc {
                tag: u64::from(tag),
                min: 0,
                max: 4095,
            };
            reg.answer(vm, tag + 10 * i as u16, req, &PasidList::default());
        }
        // And a lease: a GRANT's answer carries its PASID list.
        reg.set_lease_cap(vm, 8);
        let grant = pasid_protocol::Request::Grant {
            tag: 9,
            count: 4,
            cached: 0,
            min: 0,
            max: 4095,
        };
        reg.answer(vm, 5 + 10 * i as u16, grant, &PasidList::default());
    }
    reg
}

/// The registry `image` recovers into, if it can be recovered.
fn restored(image: &StateImage) -> Option<Registry> {
    let (space, space_id, vms) = Recovery::from_image(space(), 1, image).ok()?.into_parts();
    Some(Registry::restored(space, space_id, vms))
}

/// A registry's image must restore into an equal registry.
fn restores_again(reg: &Registry) {
    let image = reg.image();
    let again = restored(&image).unwrap();
    assert_eq!(again.image().owners.len(), image.owners.len());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok((generation, image)) = decode_snapshot(rest) {
                let bytes = encode_snapshot(&image, generation);
                let (g, back) = decode_snapshot(&bytes).unwrap();
                assert_eq!((g, &back), (generation, &image));
                if let Some(reg) = restored(&image) {
                    restores_again(&reg);
                }
            }
        }
        1 => {
            if let Ok(records) = get_records(rest) {
                let mut bytes = Vec::new();
                for r in &records {
                    put_record(&mut bytes, r);
                }
                assert_eq!(get_records(&bytes).unwrap(), records);
                let mut recovery = Recovery::from_image(space(), 1, &registry().image()).unwrap();
                for r in &records {
                    // Recovery refuses a record that cannot follow; it must
                    // never panic, and what it accepted must stay restorable.
                    let _ = recovery.apply(r);
                }
                let (space, space_id, vms) = recovery.into_parts();
                restores_again(&Registry::restored(space, space_id, vms));
            }
        }
        _ => {
            if let Some(commit) = read_commit(rest, 1) {
                let _ = get_records(commit.payload);
            }
        }
    }
});
