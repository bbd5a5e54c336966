// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fuzzes the control socket's command parser (`control::answer_line_as`)
//! with arbitrary lines against a registry that holds VM and host
//! references. Every reply must serialise and be consistent (`ok` exactly
//! when there is no error), and a read-only client (byte 0 odd) must leave
//! the registry exactly as it found it.
//!
//! Input: byte 0 = access, then up to 8 newline-separated request lines.

#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use pasid_protocol::Request;
use vhost_user_pasid::control::{answer_line_as, Access};
use vhost_user_pasid::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};
use vhost_user_pasid::registry::Registry;

fn registry() -> Mutex<Registry> {
    let space = PasidSpace::new(SpaceConfig {
        pasid_bits: 10,
        reserved: vec![1..=3],
    })
    .unwrap();
    let mut reg = Registry::new(space, 0x77);
    for (name, range) in [("web", 4..=500), ("db", 501..=1023)] {
        let vm = reg
            .add_vm(name, name, OwnerLimits { quota: 8, range })
            .unwrap();
        for tag in 0..3 {
            reg.handle(
                vm,
                Request::Alloc {
                    tag,
                    min: 0,
                    max: 1023,
                },
            );
        }
    }
    reg.host_get("iommu", 4).unwrap();
    Mutex::new(reg)
}

/// Everything a command could change, as text.
fn snapshot(reg: &Mutex<Registry>) -> String {
    let reg = reg.lock().unwrap();
    let quotas: Vec<_> = reg
        .vms()
        .iter()
        .map(|v| (v.name.clone(), v.held, v.quota))
        .collect();
    format!("{:?}|{quotas:?}", reg.pasids())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let access = if sel & 1 == 0 {
        Access::Full
    } else {
        Access::ReadOnly
    };
    let reg = registry();
    let before = snapshot(&reg);
    for line in text.lines().take(8) {
        let reply = answer_line_as(&reg, line, access);
        assert_eq!(reply.ok, reply.error.is_none(), "{reply:?}");
        assert_eq!(reply.ok, reply.result.is_some(), "{reply:?}");
        serde_json::to_string(&reply).unwrap();
    }
    if access == Access::ReadOnly {
        assert_eq!(snapshot(&reg), before, "a read-only client changed state");
    }
});
