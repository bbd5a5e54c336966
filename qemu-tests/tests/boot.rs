// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Smoke test of the QEMU harness: boots each guest kernel without the
//! vhost-user device, loads the virtio PCI stack and, when it was built, the
//! ioasid exerciser, checks the guest's health and powers it off.

mod common;

use std::time::Duration;

use common::CMD;
use qemu_tests::{Guest, GuestConfig, Kernel, Result};

fn smoke(kernel: Kernel) -> Result<()> {
    let mut guest = Guest::boot(GuestConfig::new("vm", kernel))?;

    let uname = guest.run_ok("uname -r", CMD)?;
    assert_eq!(uname.trim(), kernel.kver()?);

    guest.run_ok("modprobe virtio_pci", CMD)?;
    let lsmod = guest.run_ok("lsmod", CMD)?;
    assert!(lsmod.contains("virtio_pci"), "lsmod:\n{lsmod}");

    // Exit status and output survive the console round trip.
    let out = guest.run("echo one; echo two >&2; exit 3", CMD)?;
    assert_eq!((out.exit_code, out.output.as_str()), (3, "one\ntwo\n"));

    if kernel.has_module("ioasid_exerciser") {
        guest.run_ok("modprobe ioasid_exerciser", CMD)?;
        let result = guest.run_ok(
            "echo 'alloc 1 100 0' > /sys/kernel/debug/ioasid_exerciser/ctl; \
                 cat /sys/kernel/debug/ioasid_exerciser/ctl",
            CMD,
        )?;
        assert!(result.starts_with("ok "), "exerciser result: {result}");
        guest.run_ok("rmmod ioasid_exerciser", CMD)?;
    } else {
        eprintln!("{kernel}: ioasid_exerciser.ko not built; skipped its check");
    }

    if kernel.has_module("virtio_pasid") {
        // In the initramfs and known to modprobe's index.
        guest.run_ok("modinfo virtio_pasid", CMD)?;
    }

    guest.check_health()?;
    guest.poweroff(Duration::from_secs(60))
}

#[test]
fn boot_6_1() {
    smoke(Kernel::V6_1).unwrap();
}

#[test]
fn boot_5_10() {
    smoke(Kernel::V5_10).unwrap();
}
