// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Re-plugging a VM's vpasid device through QMP (`pasidctl reattach`),
//! and the two halves of it on their own (`pasidctl detach`, `attach`).
//!
//! QEMU's generic vhost-user device does not reconnect to a backend that
//! restarted. Unplugging it and plugging a new one on a new chardev does:
//! [`unplug`] (`device_del`, wait for `DEVICE_DELETED`, `chardev-remove`),
//! then [`plug`] (`chardev-add`, `device_add` with the same properties,
//! `bus` and `addr` included). The device to re-plug is found from the
//! VM's socket path: the chardev connected to it, and the device using
//! that chardev. A live migration unplugs on the source QEMU and plugs on
//! the destination, the device carried between them as a
//! [`DeviceSpec`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::control_protocol::DeviceSpec;
use crate::qmp::{unix_socket_chardev, Qmp, QmpError};

/// QOM containers of user-created devices: with and without an `id`.
const PERIPHERAL_CONTAINERS: [&str; 2] = ["/machine/peripheral", "/machine/peripheral-anon"];

/// Device properties copied to the new device when the old one has them.
const COPIED_PROPERTIES: [&str; 4] = ["virtio-id", "num_vqs", "config_size", "vq_size"];

/// Why a re-plug failed.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    /// QMP failed at one step.
    #[error("{step}: {source}")]
    Qmp {
        /// The step that failed.
        step: &'static str,
        /// The cause.
        source: QmpError,
    },
    /// No chardev of the VM is connected to the socket.
    #[error("no QEMU chardev is a client of {0} (is this the VM's QMP socket?)")]
    NoChardev(String),
    /// No device uses the chardev.
    #[error("no QEMU device uses chardev {0}")]
    NoDevice(String),
}

fn at(step: &'static str) -> impl FnOnce(QmpError) -> ReattachError {
    move |source| ReattachError::Qmp { step, source }
}

/// The device to re-plug, as QEMU knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PluggedDevice {
    /// `id` for device_add, or the QOM path of a device created without one.
    pub id: String,
    /// Whether `id` is a QOM path (a device created without an id).
    pub anonymous: bool,
    /// QOM type, e.g. `vhost-user-test-device-pci`.
    pub driver: String,
    /// Label of the chardev it uses.
    pub chardev: String,
    /// Properties to give the new device (`virtio-id`, `addr`, ...).
    pub properties: Map<String, Value>,
}

/// What a re-plug did, and how long each half took.
#[derive(Clone, Debug)]
pub struct Replugged {
    /// The device that was re-plugged.
    pub device: PluggedDevice,
    /// From `device_del` to `DEVICE_DELETED`.
    pub unplug: Duration,
    /// From `chardev-add` to `device_add` answered.
    pub plug: Duration,
}

/// Whether `filename` (from `query-chardev`) names a connection to `socket`.
/// QEMU reports a client socket as `unix:PATH` (`disconnected:unix:PATH`
/// once the backend has gone), possibly followed by `,option`.
pub fn chardev_names_socket(filename: &str, socket: &Path) -> bool {
    let filename = filename.strip_prefix("disconnected:").unwrap_or(filename);
    let Some(rest) = filename.strip_prefix("unix:") else {
        return false;
    };
    let path = socket.to_string_lossy();
    rest.strip_prefix(path.as_ref())
        .is_some_and(|tail| tail.is_empty() || tail.starts_with(',') || tail.starts_with(' '))
}

/// Finds the device connected to the backend socket `socket`.
pub fn find_device(qmp: &mut Qmp, socket: &Path) -> Result<PluggedDevice, ReattachError> {
    let chardevs = qmp
        .execute("query-chardev", None)
        .map_err(at("query-chardev"))?;
    let chardev = chardevs
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c.get("filename")
                .and_then(Value::as_str)
                .is_some_and(|f| chardev_names_socket(f, socket))
        })
        .and_then(|c| c.get("label").and_then(Value::as_str))
        .ok_or_else(|| ReattachError::NoChardev(socket.display().to_string()))?
        .to_string();
    for container in PERIPHERAL_CONTAINERS {
        // A machine with no anonymous device has no peripheral-anon.
        let Ok(children) = qmp.execute("qom-list", Some(json!({ "path": container }))) else {
            continue;
        };
        for child in children.as_array().into_iter().flatten() {
            let (Some(name), Some(kind)) = (
                child.get("name").and_then(Value::as_str),
                child.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Some(driver) = kind
                .strip_prefix("child<")
                .and_then(|k| k.strip_suffix('>'))
            else {
                continue;
            };
            let path = format!("{container}/{name}");
            let uses = qmp
                .execute(
                    "qom-get",
                    Some(json!({ "path": path, "property": "chardev" })),
                )
                .ok();
            if uses.as_ref().and_then(Value::as_str) != Some(chardev.as_str()) {
                continue;
            }
            let mut properties = Map::new();
            for prop in COPIED_PROPERTIES.into_iter().chain(["addr"]) {
                if let Ok(value) =
                    qmp.execute("qom-get", Some(json!({ "path": path, "property": prop })))
                {
                    properties.insert(prop.to_string(), value);
                }
            }
            // The same bus: on q35 the device sits on a pcie-root-port, and
            // device_add would otherwise pick pcie.0, which has no hotplug.
            // parent_bus is a QOM path; device_add wants the bus's name, its
            // last element (a root port's bus is named after the port's id).
            if let Ok(bus) = qmp.execute(
                "qom-get",
                Some(json!({ "path": path, "property": "parent_bus" })),
            ) {
                if let Some(name) = bus.as_str().and_then(bus_name) {
                    properties.insert("bus".to_string(), Value::from(name));
                }
            }
            let anonymous = container.ends_with("-anon");
            return Ok(PluggedDevice {
                id: if anonymous { path } else { name.to_string() },
                anonymous,
                driver: driver.to_string(),
                chardev,
                properties,
            });
        }
    }
    Err(ReattachError::NoDevice(chardev))
}

/// The name of the bus at QOM path `path` (its last element), as
/// `device_add` takes it.
pub fn bus_name(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|name| !name.is_empty())
}

/// `device_add` arguments for the new device.
pub fn device_add_arguments(device: &PluggedDevice, chardev: &str, id: &str) -> Value {
    let mut args = device.properties.clone();
    args.insert("driver".into(), Value::from(device.driver.as_str()));
    args.insert("id".into(), Value::from(id));
    args.insert("chardev".into(), Value::from(chardev));
    Value::Object(args)
}

/// What unplugging a device took.
#[derive(Clone, Copy, Debug)]
pub struct Unplugged {
    /// From `device_del` to `DEVICE_DELETED`.
    pub unplug: Duration,
    /// `chardev-remove` (the backend sees the disconnect).
    pub remove: Duration,
}

/// Unplugs `device` (`device_del`), waits up to `unplug_timeout` for the
/// guest to let go of it (`DEVICE_DELETED`), and removes its chardev: the
/// first half of a re-plug, and `pasidctl detach`.
pub fn unplug(
    qmp: &mut Qmp,
    device: &PluggedDevice,
    unplug_timeout: Duration,
) -> Result<Unplugged, ReattachError> {
    let started = Instant::now();
    qmp.execute("device_del", Some(json!({ "id": device.id })))
        .map_err(at("device_del"))?;
    let (id, anonymous) = (device.id.clone(), device.anonymous);
    qmp.wait_event("DEVICE_DELETED", unplug_timeout, |data| {
        let field = |name| data.get(name).and_then(Value::as_str);
        if anonymous {
            field("path") == Some(id.as_str())
        } else {
            field("device") == Some(id.as_str())
        }
    })
    .map_err(at("waiting for the guest to release the device"))?;
    let unplug = started.elapsed();
    let started = Instant::now();
    qmp.execute("chardev-remove", Some(json!({ "id": device.chardev })))
        .map_err(at("chardev-remove"))?;
    Ok(Unplugged {
        unplug,
        remove: started.elapsed(),
    })
}

/// The id a device gets when it is plugged again: its own, or for a
/// device created without one `vpasid-<chardev>`.
pub fn replug_id(device: &PluggedDevice) -> String {
    if device.anonymous {
        format!("vpasid-{}", device.chardev)
    } else {
        device.id.clone()
    }
}

/// Plugs `device` on a new chardev (labelled `device.chardev`) connected
/// to the backend socket `socket`: `chardev-add`, then `device_add` with
/// its properties (`bus` and `addr` included). The second half of a
/// re-plug, and `pasidctl attach`. Returns the device as plugged and how
/// long that took.
pub fn plug(
    qmp: &mut Qmp,
    device: &PluggedDevice,
    socket: &Path,
) -> Result<(PluggedDevice, Duration), ReattachError> {
    let started = Instant::now();
    qmp.execute(
        "chardev-add",
        Some(unix_socket_chardev(&device.chardev, socket)),
    )
    .map_err(at("chardev-add"))?;
    let id = replug_id(device);
    if let Err(e) = qmp.execute(
        "device_add",
        Some(device_add_arguments(device, &device.chardev, &id)),
    ) {
        // Leave the VM's QEMU as it was: without a chardev nobody uses.
        let _ = qmp.execute("chardev-remove", Some(json!({ "id": device.chardev })));
        return Err(at("device_add")(e));
    }
    Ok((
        PluggedDevice {
            id,
            anonymous: false,
            ..device.clone()
        },
        started.elapsed(),
    ))
}

/// Unplugs `device`, waits up to `unplug_timeout` for the guest to let go
/// of it, and plugs a new one on a fresh chardev to `socket`: [`unplug`]
/// then [`plug`]. The new device keeps the old `id` (a device created
/// without one gets `vpasid-<chardev>`).
pub fn replug(
    qmp: &mut Qmp,
    device: &PluggedDevice,
    socket: &Path,
    unplug_timeout: Duration,
) -> Result<Replugged, ReattachError> {
    let unplugged = unplug(qmp, device, unplug_timeout)?;
    let (device, plugged) = plug(qmp, device, socket)?;
    Ok(Replugged {
        device,
        unplug: unplugged.unplug,
        plug: unplugged.remove + plugged,
    })
}

impl PluggedDevice {
    /// The device as `pasidctl detach` prints it and the daemon keeps it:
    /// what [`PluggedDevice::from_spec`] plugs again.
    pub fn spec(&self) -> DeviceSpec {
        DeviceSpec {
            chardev: Some(self.chardev.clone()),
            driver: self.driver.clone(),
            id: replug_id(self),
            properties: self.properties.clone(),
        }
    }

    /// The device `spec` describes, on a chardev labelled `spec.chardev`
    /// or else `default_chardev`. Properties `pasidctl attach` sets itself
    /// (`driver`, `id`, `chardev`) are not taken from `properties`.
    pub fn from_spec(spec: &DeviceSpec, default_chardev: &str) -> Self {
        let mut properties = spec.properties.clone();
        for own in ["driver", "id", "chardev"] {
            properties.remove(own);
        }
        PluggedDevice {
            id: spec.id.clone(),
            anonymous: false,
            driver: spec.driver.clone(),
            chardev: spec
                .chardev
                .clone()
                .unwrap_or_else(|| default_chardev.to_string()),
            properties,
        }
    }
}

/// The device `pasidctl attach` plugs when it knows none: QEMU's generic
/// vhost-user device with the protocol's ID, queue count and config size,
/// on `bus` at `addr` if given.
pub fn default_device(vm: &str, bus: Option<&str>, addr: Option<&str>) -> DeviceSpec {
    let mut properties = Map::new();
    properties.insert(
        "virtio-id".into(),
        Value::from(pasid_protocol::DEFAULT_DEVICE_ID),
    );
    properties.insert("num_vqs".into(), Value::from(pasid_protocol::VQ_MAX));
    properties.insert(
        "config_size".into(),
        Value::from(pasid_protocol::CONFIG_SIZE),
    );
    if let Some(bus) = bus {
        properties.insert("bus".into(), Value::from(bus));
    }
    if let Some(addr) = addr {
        properties.insert("addr".into(), Value::from(addr));
    }
    DeviceSpec {
        chardev: Some(format!("vpasid-{vm}")),
        driver: DEFAULT_DRIVER.into(),
        id: format!("vpasid-{vm}"),
        properties,
    }
}

/// QEMU's generic vhost-user PCI device, the one vpasid is served through.
pub const DEFAULT_DRIVER: &str = "vhost-user-test-device-pci";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chardev_filenames_match_the_socket_exactly() {
        let sock = Path::new("/run/v/a.sock");
        assert!(chardev_names_socket("unix:/run/v/a.sock", sock));
        assert!(chardev_names_socket("unix:/run/v/a.sock,server=on", sock));
        assert!(chardev_names_socket(
            "disconnected:unix:/run/v/a.sock",
            sock
        ));
        assert!(!chardev_names_socket("unix:/run/v/a.sock2", sock));
        assert!(!chardev_names_socket("unix:/run/v/a", sock));
        assert!(!chardev_names_socket("file:/run/v/a.sock", sock));
        assert!(!chardev_names_socket("stdio", sock));
    }

    #[test]
    fn buses_are_named_by_the_last_element_of_their_path() {
        assert_eq!(
            bus_name("/machine/peripheral/vpasid-port/vpasid-port"),
            Some("vpasid-port")
        );
        assert_eq!(bus_name("/machine/i440fx/pci.0"), Some("pci.0"));
        assert_eq!(bus_name(""), None);
        assert_eq!(bus_name("/machine/"), None);
    }

    #[test]
    fn the_new_device_copies_the_old_properties() {
        let mut properties = Map::new();
        properties.insert("virtio-id".into(), json!(37));
        properties.insert("addr".into(), json!(32));
        let dev = PluggedDevice {
            id: "vp0".into(),
            anonymous: false,
            driver: "vhost-user-test-device-pci".into(),
            chardev: "vu0".into(),
            properties,
        };
        let args = device_add_arguments(&dev, "vu0", "vp0");
        assert_eq!(
            args,
            json!({"driver": "vhost-user-test-device-pci", "id": "vp0", "chardev": "vu0",
                   "virtio-id": 37, "addr": 32})
        );
    }
}
