// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How to boot a guest: [`GuestConfig`] and the vhost-user devices it
//! attaches. Plain values: `guest` boots from them, `qemu` turns them into
//! QEMU's arguments, and neither needs the other for it.

use std::path::PathBuf;
use std::time::Duration;

use crate::setup::Kernel;

/// The virtio device ID the test device uses by default: QEMU accepts it and
/// no in-tree guest driver binds to it.
pub const DEFAULT_VIRTIO_ID: u32 = 37;

/// The default config space size of the test device, in bytes.
pub const DEFAULT_CONFIG_SIZE: u32 = 32;

/// A `vhost-user-test-device-pci` attached to a vhost-user backend socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserDevice {
    /// The backend's listening socket (it must exist when the guest boots).
    pub socket: PathBuf,
    /// The virtio device ID the guest sees.
    pub virtio_id: u32,
    /// Number of virtqueues.
    pub num_vqs: u32,
    /// Virtqueue size; `None` keeps QEMU's default (64).
    pub vq_size: Option<u32>,
    /// Config space size (<= 256; > 0 needs the backend's CONFIG feature).
    pub config_size: u32,
}

impl VhostUserDevice {
    /// A device with ID 37, one queue and a 32-byte config space.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        VhostUserDevice {
            socket: socket.into(),
            virtio_id: DEFAULT_VIRTIO_ID,
            num_vqs: 1,
            vq_size: None,
            config_size: DEFAULT_CONFIG_SIZE,
        }
    }
}

/// The QEMU machine a guest runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Machine {
    /// `pc` (i440FX): devices on the root bus `pci.0`, which supports
    /// hot-plug (ACPI).
    #[default]
    Pc,
    /// `q35` (PCIe): each vhost-user device on a `pcie-root-port` of its
    /// own, named `vpasid-port{N}` for device N, as docs/operations.md
    /// plugs it: the root bus `pcie.0` refuses hot-plug, a root port
    /// takes it.
    Q35,
}

impl Machine {
    /// QEMU's `-machine` type.
    pub fn qemu_type(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }

    /// The bus device `index` goes on, `None` for the root bus; QEMU's
    /// arguments add a root port of that id first.
    pub fn root_port(self, index: usize) -> Option<String> {
        match self {
            Machine::Pc => None,
            Machine::Q35 => Some(format!("vpasid-port{index}")),
        }
    }
}

/// How to boot a [`Guest`](crate::Guest).
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Name of the guest in logs and messages, e.g. `vm1`.
    pub name: String,
    /// The guest kernel.
    pub kernel: Kernel,
    /// The QEMU machine (default `pc`).
    pub machine: Machine,
    /// Guest memory in MiB (default 256).
    pub memory_mib: u32,
    /// Virtual CPUs (`-smp`, default 1). TCG runs each vCPU in a host
    /// thread of its own; on a busy 2-core host more than 2 only queue.
    pub vcpus: u32,
    /// vhost-user devices to attach (default none).
    pub devices: Vec<VhostUserDevice>,
    /// Extra kernel command line, appended to the harness's own.
    pub cmdline: String,
    /// Pass `-no-reboot` so a guest reboot or panic ends QEMU (default
    /// true). Set false for guests that must survive `reboot`.
    pub no_reboot: bool,
    /// Bound on reaching the shell at boot and after a reboot (default 120 s).
    pub boot_timeout: Duration,
    /// Console log level once userspace runs (default 5: warnings and
    /// worse, so driver chatter stays out of command output; `dmesg` has
    /// everything). Use 8 to see every message on the console.
    pub console_loglevel: u8,
    /// Log lines containing any of these substrings are exempt from the
    /// health checks (for scenarios that provoke a warning on purpose).
    pub allow_in_log: Vec<String>,
    /// Extra QEMU arguments, appended last.
    pub extra_qemu_args: Vec<String>,
    /// Extra host directories QEMU must see (bind-mounted at the same path).
    pub bind_dirs: Vec<PathBuf>,
    /// Test name for the log file; default: the current thread's name,
    /// which the test harness sets to the test's name.
    pub test_name: Option<String>,
}

impl GuestConfig {
    /// A guest `name` running `kernel`, without devices.
    pub fn new(name: impl Into<String>, kernel: Kernel) -> Self {
        GuestConfig {
            name: name.into(),
            kernel,
            machine: Machine::Pc,
            memory_mib: 256,
            vcpus: 1,
            devices: Vec::new(),
            cmdline: String::new(),
            no_reboot: true,
            boot_timeout: Duration::from_secs(120),
            console_loglevel: 5,
            allow_in_log: Vec::new(),
            extra_qemu_args: Vec::new(),
            bind_dirs: Vec::new(),
            test_name: None,
        }
    }

    /// Attaches a default [`VhostUserDevice`] on `socket`.
    pub fn vhost_user(self, socket: impl Into<PathBuf>) -> Self {
        self.device(VhostUserDevice::new(socket))
    }

    /// Attaches `device`.
    pub fn device(mut self, device: VhostUserDevice) -> Self {
        self.devices.push(device);
        self
    }

    /// Sets the QEMU machine.
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// Sets the guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the number of virtual CPUs.
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// Appends `args` to the kernel command line.
    pub fn cmdline(mut self, args: &str) -> Self {
        if !self.cmdline.is_empty() {
            self.cmdline.push(' ');
        }
        self.cmdline.push_str(args);
        self
    }

    /// Lets `reboot` restart the guest instead of ending QEMU.
    pub fn allow_reboot(mut self) -> Self {
        self.no_reboot = false;
        self
    }

    /// Exempts log lines containing `substring` from the health checks.
    pub fn allow_in_log(mut self, substring: impl Into<String>) -> Self {
        self.allow_in_log.push(substring.into());
        self
    }
}
