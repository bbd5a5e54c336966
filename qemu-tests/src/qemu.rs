// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How QEMU is started: its arguments for a [`GuestConfig`], and the
//! `unshare -m` + `chroot` wrapper that runs the chroot's QEMU with the
//! directories it needs bind-mounted at their host paths. The mounts live
//! in the QEMU process's own mount namespace and vanish with it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::config::GuestConfig;
use crate::error::{Error, Result};

/// A command that runs `qemu-system-x86_64 ARGS` from the chroot `root`,
/// seeing the directories `config` needs (see [`bind_dirs`]).
pub(crate) fn command(
    root: &Path,
    config: &GuestConfig,
    kernel: &Path,
    initramfs: &Path,
    args: &[String],
) -> Result<Command> {
    let binds = bind_dirs(config, kernel, initramfs)?;
    let tmpfs = tmpfs_tops(root, &binds);
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        NS_SCRIPT,
        "sh",
    ])
    .arg(root)
    .arg(tmpfs.len().to_string())
    .args(&tmpfs)
    .arg(binds.len().to_string())
    .args(&binds)
    .arg("qemu-system-x86_64")
    .args(args);
    Ok(cmd)
}

/// Runs in the new mount namespace: `ROOT NTMPFS TMPFS... NBIND BIND...
/// QEMU ARGS...`. Mounts a tmpfs on each TMPFS path and bind-mounts each
/// BIND dir at the same path, both under ROOT, so the chroot's tree on disk
/// gains nothing but top-level mount points; then mounts /proc and execs
/// QEMU in the chroot.
const NS_SCRIPT: &str = r#"set -e
root=$1; shift
n=$1; shift
while [ "$n" -gt 0 ]; do
    mkdir -p "$root$1"; mount -t tmpfs -o mode=0755 tmpfs "$root$1"; shift; n=$((n - 1))
done
n=$1; shift
while [ "$n" -gt 0 ]; do
    mkdir -p "$root$1"; mount --rbind "$1" "$root$1"; shift; n=$((n - 1))
done
mount -t proc proc "$root/proc"
exec chroot "$root" "$@"
"#;

/// QEMU's arguments for `config`.
pub(crate) fn qemu_args(config: &GuestConfig, kernel: &Path, initramfs: &Path) -> Vec<String> {
    let mem = format!("{}M", config.memory_mib);
    // no_timer_check: under TCG on a loaded host the early IO-APIC timer
    // check can miss its ticks and panic the guest ("IO-APIC + timer
    // doesn't work!", seen on 5.10 with four guests on two cores).
    let mut append = format!(
        "console=ttyS0 panic=-1 printk.time=1 no_timer_check vpasid.loglevel={}",
        config.console_loglevel
    );
    if !config.cmdline.is_empty() {
        append.push(' ');
        append.push_str(&config.cmdline);
    }
    let vcpus = config.vcpus.max(1).to_string();
    let mut args: Vec<String> = [
        "-name",
        &config.name,
        "-nodefaults",
        "-no-user-config",
        "-machine",
        config.machine.qemu_type(),
        "-accel",
        "tcg",
        "-smp",
        &vcpus,
        "-m",
        &mem,
        "-display",
        "none",
        "-monitor",
        "none",
        "-chardev",
        "stdio,id=con,signal=off",
        "-serial",
        "chardev:con",
        "-kernel",
        &kernel.to_string_lossy(),
        "-initrd",
        &initramfs.to_string_lossy(),
        "-append",
        &append,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if config.no_reboot {
        args.push("-no-reboot".into());
    }
    if !config.devices.is_empty() {
        args.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-numa".into(),
            "node,memdev=mem".into(),
        ]);
    }
    for (i, dev) in config.devices.iter().enumerate() {
        let mut device = format!(
            "vhost-user-test-device-pci,chardev=vu{i},virtio-id={},num_vqs={},config_size={}",
            dev.virtio_id, dev.num_vqs, dev.config_size
        );
        if let Some(size) = dev.vq_size {
            device.push_str(&format!(",vq_size={size}"));
        }
        if let Some(port) = config.machine.root_port(i) {
            // Chassis numbers must differ between root ports; 0 is invalid.
            args.extend([
                "-device".into(),
                format!("pcie-root-port,id={port},chassis={}", i + 1),
            ]);
            device.push_str(&format!(",bus={port}"));
        }
        args.extend([
            "-chardev".into(),
            format!("socket,id=vu{i},path={}", dev.socket.display()),
            "-device".into(),
            device,
        ]);
    }
    args.extend(config.extra_qemu_args.iter().cloned());
    args
}

/// The arguments of a live migration's destination for `config`:
/// [`qemu_args`] without the vhost-user chardevs and devices (`-chardev
/// socket,id=vuN,...` and the `-device` after it), plus `-incoming URI`.
/// The shared memory backend and any root ports stay: the machine must be
/// the source's, less the device the source unplugged.
pub(crate) fn incoming_args(
    config: &GuestConfig,
    kernel: &Path,
    initramfs: &Path,
    uri: &str,
) -> Vec<String> {
    let all = qemu_args(config, kernel, initramfs);
    let mut args = Vec::with_capacity(all.len() + 2);
    let mut i = 0;
    while i < all.len() {
        let value = all.get(i + 1).map_or("", String::as_str);
        let vhost_chardev = all[i] == "-chardev" && value.starts_with("socket,id=vu");
        let vhost_device = all[i] == "-device" && value.starts_with("vhost-user-test-device-pci,");
        if vhost_chardev || vhost_device {
            i += 2;
            continue;
        }
        args.push(all[i].clone());
        i += 1;
    }
    args.extend(["-incoming".to_string(), uri.to_string()]);
    args
}

/// The host directories QEMU must see: those of the kernel, the initramfs,
/// each socket and `config.bind_dirs`, canonical, without any that lies
/// below another (`--rbind` covers it).
fn bind_dirs(config: &GuestConfig, kernel: &Path, initramfs: &Path) -> Result<Vec<PathBuf>> {
    let mut wanted: Vec<PathBuf> = vec![parent(kernel), parent(initramfs)];
    wanted.extend(config.devices.iter().map(|d| parent(&d.socket)));
    wanted.extend(config.bind_dirs.iter().cloned());
    let mut dirs = BTreeSet::new();
    for dir in wanted {
        let canon = fs::canonicalize(&dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        dirs.insert(canon);
    }
    Ok(minimal_dirs(dirs))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `dirs` without those below another entry; sorted order puts ancestors first.
fn minimal_dirs(dirs: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !out.iter().any(|kept| dir.starts_with(kept)) {
            out.push(dir);
        }
    }
    out
}

/// The top-level directories (such as `/work` or `/tmp`) under which the
/// bind mounts go, where the chroot has nothing: a tmpfs there keeps the
/// mount points off the chroot's disk tree.
fn tmpfs_tops(root: &Path, binds: &[PathBuf]) -> Vec<PathBuf> {
    let mut tops = BTreeSet::new();
    for dir in binds {
        let Some(Component::Normal(first)) = dir.components().nth(1) else {
            continue;
        };
        let top = Path::new("/").join(first);
        let inside = root.join(first);
        let empty = fs::read_dir(&inside).map_or(!inside.exists(), |mut d| d.next().is_none());
        if empty {
            tops.insert(top);
        }
    }
    tops.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Machine;
    use crate::setup::Kernel;

    #[test]
    fn qemu_args_attach_devices_with_shared_memory() {
        let config = GuestConfig::new("vm1", Kernel::V6_1)
            .vhost_user("/tmp/x/a.sock")
            .memory_mib(512);
        let args = qemu_args(
            &config,
            Path::new("/k/vmlinuz"),
            Path::new("/i/6.1.cpio.gz"),
        );
        let joined = args.join(" ");
        assert!(joined.contains("-object memory-backend-memfd,id=mem,size=512M,share=on"));
        assert!(joined.contains("-numa node,memdev=mem"));
        assert!(joined.contains("-chardev socket,id=vu0,path=/tmp/x/a.sock"));
        assert!(joined.contains(
            "-device vhost-user-test-device-pci,chardev=vu0,virtio-id=37,num_vqs=1,config_size=32"
        ));
        assert!(joined.contains("-accel tcg") && joined.contains("-no-reboot"));
    }

    /// `pc` puts devices on its root bus; `q35` puts each on a root port
    /// of its own, declared before it.
    #[test]
    fn q35_puts_each_device_on_a_root_port() {
        let pc = GuestConfig::new("vm1", Kernel::V6_1).vhost_user("/tmp/x/a.sock");
        let args = qemu_args(&pc, Path::new("/k"), Path::new("/i")).join(" ");
        assert!(args.contains("-machine pc "), "{args}");
        assert!(!args.contains("pcie-root-port") && !args.contains(",bus="));
        let q35 = GuestConfig::new("vm1", Kernel::V6_1)
            .machine(Machine::Q35)
            .vhost_user("/tmp/x/a.sock")
            .vhost_user("/tmp/x/b.sock");
        let args = qemu_args(&q35, Path::new("/k"), Path::new("/i")).join(" ");
        assert!(args.contains("-machine q35 "), "{args}");
        for (i, chassis) in [(0, 1), (1, 2)] {
            let port = format!("-device pcie-root-port,id=vpasid-port{i},chassis={chassis}");
            let device = format!(
                "-device vhost-user-test-device-pci,chardev=vu{i},virtio-id=37,num_vqs=1,\
                 config_size=32,bus=vpasid-port{i}"
            );
            let (p, d) = (args.find(&port), args.find(&device));
            assert!(p.is_some() && d.is_some() && p < d, "{args}");
        }
    }

    /// The destination has the source's machine and shared memory, and no
    /// vhost-user chardev or device (on q35 the root port stays).
    #[test]
    fn incoming_args_drop_the_vhost_user_device() {
        let config = GuestConfig::new("vm1", Kernel::V6_1)
            .machine(Machine::Q35)
            .vhost_user("/tmp/x/a.sock");
        let args =
            incoming_args(&config, Path::new("/k"), Path::new("/i"), "unix:/tmp/m").join(" ");
        assert!(args.contains("memory-backend-memfd") && args.contains("share=on"));
        assert!(args.contains("-device pcie-root-port,id=vpasid-port0,chassis=1"));
        assert!(args.ends_with("-incoming unix:/tmp/m"), "{args}");
        assert!(!args.contains("vhost-user-test-device") && !args.contains("id=vu0"));
        assert!(args.contains("-chardev stdio,id=con"), "{args}");
    }

    #[test]
    fn qemu_args_without_devices_or_reboot_guard() {
        let config = GuestConfig::new("vm1", Kernel::V5_10)
            .allow_reboot()
            .cmdline("foo=1");
        let args = qemu_args(&config, Path::new("/k"), Path::new("/i"));
        assert!(!args.iter().any(|a| a == "-no-reboot" || a == "-numa"));
        assert!(args.iter().any(|a| a.ends_with("vpasid.loglevel=5 foo=1")));
    }

    #[test]
    fn nested_bind_dirs_collapse() {
        let dirs: BTreeSet<PathBuf> = ["/a/b", "/a", "/c/d", "/c/de", "/c/d/e"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            minimal_dirs(dirs),
            ["/a", "/c/d", "/c/de"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn tmpfs_only_where_the_chroot_has_nothing() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("tmp")).unwrap();
        fs::create_dir_all(root.path().join("var/lib")).unwrap();
        let binds: Vec<PathBuf> = ["/tmp/s", "/var/x", "/work/repo/.cache"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            tmpfs_tops(root.path(), &binds),
            ["/tmp", "/work"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }
}
