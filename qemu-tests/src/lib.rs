// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end test harness: boots real guests in real QEMU (TCG) with the
//! real `vhost-user-pasid` backend.
//!
//! - [`setup`]: guest kernels, cache paths and [`ensure_setup`], which runs
//!   the idempotent scripts in `qemu-tests/setup/` once per process.
//! - [`config`]: [`GuestConfig`], how to boot a guest, and its devices.
//! - [`guest`]: [`Guest::boot`] from a [`GuestConfig`], shell commands over
//!   the serial console ([`Guest::run`]), console waits, health checks,
//!   reboot and poweroff.
//! - [`process`]: [`ChildGuard`] and bounded waits for daemons' sockets.
//! - [`daemon`]: the real `vhost-user-pasid` on sockets in a temporary
//!   directory ([`Daemon`]), queried with the real `pasidctl`.
//! - [`libvirt`]: a real libvirtd from a cached chroot ([`Libvirtd`]),
//!   `virsh` against it, and its domains as [`Guest`]s.
//! - [`vpasid`]: the guest side: the `virtio_pasid` driver's sysfs, debugfs and the
//!   test-only `ioasid_exerciser` ([`VpasidGuest`]).
//! - [`qmp`]: the harness's own QMP client ([`Qmp`]: `migrate`,
//!   `query-migrate`, events) for migrations between two QEMUs.
//! - `qemu`: QEMU's arguments and its chroot/mount-namespace wrapper.
//! - `console` and `health`: the console protocol and the log checks.
//!
//! See `qemu-tests/README.md` for what is cached where and how to read logs.

pub mod config;
mod console;
pub mod daemon;
pub mod error;
pub mod guest;
mod health;
mod host_cgroups;
pub mod libvirt;
pub mod pinning;
pub mod process;
mod qemu;
pub mod qmp;
pub mod setup;
pub mod vpasid;

pub use config::{GuestConfig, Machine, VhostUserDevice};
pub use daemon::{Daemon, DaemonConfig, VmSlot};
pub use error::{Error, Result};
pub use guest::{shell_quote, CmdOutput, Guest};
pub use health::{ALLOWED_TAINT, BAD_PATTERNS};
pub use libvirt::Libvirtd;
pub use process::{spawn_tied, wait_for_path, wait_for_unix_listener, ChildGuard};
pub use qmp::Qmp;
pub use setup::{ensure_setup, Kernel};
pub use vpasid::VpasidGuest;

/// One `#[test]` per guest kernel for each scenario function `name(Kernel)`:
/// `name::linux_6_1` and `name::linux_5_10`, so that `cargo test NAME` or
/// `cargo test linux_5_10` picks a scenario or a kernel.
#[macro_export]
macro_rules! per_kernel {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::Kernel;

            #[test]
            fn linux_6_1() {
                super::$name(Kernel::V6_1);
            }

            #[test]
            fn linux_5_10() {
                super::$name(Kernel::V5_10);
            }
        }
    )*};
}
