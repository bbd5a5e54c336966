// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest driver's DKMS packaging (`guest-driver/dkms.conf`, `make
//! dkms-src`) builds and installs `virtio_pasid.ko` for each tested guest
//! kernel against its headers, with the real `dkms` tool, as docs/guest.md
//! tells a guest admin to.
//!
//! The DKMS source, build and install trees live in a temporary directory
//! (`--sourcetree`, `--dkmstree`, `--installtree`) and the kernel is named
//! with `-k KVER --kernelsourcedir .cache/kernels/NAME/headers`, so the host's
//! `/usr/src`, `/var/lib/dkms` and `/lib/modules` are never touched. Needs
//! `dkms` and `kmod` (`apt-get install dkms kmod`; `bash qemu-tests/run test`
//! installs them): a missing tool fails the test, nothing is skipped.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use qemu_tests::{ensure_setup, Kernel};

/// The module's DKMS name and version, as dkms.conf declares them.
const MODULE: &str = "virtio_pasid";

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests has a parent")
        .to_path_buf()
}

fn run(program: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: apt-get install {package} \
             (bash qemu-tests/run test installs it)"
        ),
        Err(e) => panic!("{program}: {e}"),
    }
}

fn ok(program: &str, package: &str, args: &[&str]) -> String {
    let out = run(program, package, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {}: exit {:?}\n{text}",
        args.join(" "),
        out.status.code()
    );
    text
}

/// `PACKAGE_VERSION` from guest-driver/dkms.conf.
fn package_version() -> String {
    let conf = std::fs::read_to_string(repo_root().join("guest-driver/dkms.conf"))
        .expect("guest-driver/dkms.conf");
    conf.lines()
        .find_map(|l| l.strip_prefix("PACKAGE_VERSION="))
        .expect("PACKAGE_VERSION in dkms.conf")
        .trim_matches('"')
        .to_string()
}

/// The protocol's default virtio device ID (VIRTIO_PASID_DEFAULT_DEVICE_ID).
const DEFAULT_DEVICE_ID: u32 = 37;

/// A DKMS cycle for `kernel`; `device_id` is given to `make dkms-src
/// VPASID_DEVICE_ID=N` when set, and the module must bind that ID (by
/// default, 37).
fn dkms_cycle(kernel: Kernel, device_id: Option<u32>) {
    ensure_setup().unwrap();
    let kver = kernel.kver().unwrap();
    let headers = kernel.dir().join("headers");
    assert!(headers.join("Makefile").is_file(), "{headers:?}");
    let version = package_version();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, tree, install) = (t.join("src"), t.join("dkms"), t.join("modules"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::create_dir_all(install.join(&kver)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let trees = [
        format!("--sourcetree={}", s(&src)),
        format!("--dkmstree={}", s(&tree)),
        format!("--installtree={}", s(&install)),
    ];
    let with_trees = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(trees.iter().cloned())
            .collect()
    };
    let dkms = |args: &[&str]| -> String {
        let full = with_trees(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        ok("dkms", "dkms", &full)
    };

    // make -C guest-driver dkms-src DESTDIR=... [VPASID_DEVICE_ID=N]
    let driver = repo_root().join("guest-driver");
    let mut make_args = vec![
        "-s".to_string(),
        "-C".to_string(),
        s(&driver),
        "dkms-src".to_string(),
        format!("DESTDIR={}", s(&src)),
    ];
    if let Some(id) = device_id {
        make_args.push(format!("VPASID_DEVICE_ID={id}"));
    }
    let make_args: Vec<&str> = make_args.iter().map(String::as_str).collect();
    ok("make", "make", &make_args);
    let tree_src = src.join(format!("{MODULE}-{version}"));
    for f in [
        "dkms.conf",
        "vpasid.h",
        "vpasid_device.c",
        "vpasid_transport.c",
        "vpasid_lease.c",
        "vpasid_reconcile.c",
        "vpasid_ioasid.c",
        "vpasid_debugfs.c",
        "Kbuild",
        "include/virtio_pasid.h",
    ] {
        assert!(tree_src.join(f).is_file(), "dkms-src left out {f}");
    }

    let kdir = format!("--kernelsourcedir={}", s(&headers));
    dkms(&["add", "-m", MODULE, "-v", &version]);
    dkms(&["build", "-m", MODULE, "-v", &version, "-k", &kver, &kdir]);
    dkms(&[
        "install",
        "-m",
        MODULE,
        "-v",
        &version,
        "-k",
        &kver,
        &kdir,
        "--no-depmod",
    ]);
    let status = dkms(&["status", "-m", MODULE]);
    assert!(
        status.contains(&format!("{MODULE}/{version}, {kver}, x86_64: installed")),
        "{status}"
    );

    // The installed module is the driver, built for this kernel.
    let ko = install.join(&kver).join("updates/dkms/virtio_pasid.ko");
    assert!(ko.is_file(), "{ko:?} not installed");
    let info = ok("modinfo", "kmod", &[ko.to_str().unwrap()]);
    let field = |name: &str| -> Vec<String> {
        info.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .collect()
    };
    assert_eq!(field("name"), ["virtio_pasid"], "{info}");
    assert_eq!(field("version"), [version.as_str()], "{info}");
    assert!(
        field("vermagic")
            .first()
            .is_some_and(|v| v.starts_with(&format!("{kver} "))),
        "{info}"
    );
    // Autoloads for exactly the device ID it was built for (37 = 0x25).
    let id = device_id.unwrap_or(DEFAULT_DEVICE_ID);
    assert_eq!(field("alias"), [format!("virtio:d{id:08X}v*")], "{info}");
    // The device ID is no module parameter.
    let parms = field("parm").join("\n");
    assert!(
        parms.contains("timeout_ms:") && !parms.contains("device_id"),
        "{info}"
    );
    // The test-only exerciser is neither built nor installed.
    let built = tree.join(MODULE).join(&version).join(&kver);
    assert!(!walk_has(&built, "ioasid_exerciser.ko"));
    assert!(!walk_has(&install, "ioasid_exerciser.ko"));

    dkms(&[
        "uninstall",
        "-m",
        MODULE,
        "-v",
        &version,
        "-k",
        &kver,
        "--no-depmod",
    ]);
    assert!(!ko.exists(), "dkms uninstall left {ko:?}");
    dkms(&[
        "remove",
        "-m",
        MODULE,
        "-v",
        &version,
        "--all",
        "--no-depmod",
    ]);
    let status = dkms(&["status", "-m", MODULE]);
    assert!(status.trim().is_empty(), "{status}");
}

fn walk_has(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        p.file_name().is_some_and(|n| n == name) || (p.is_dir() && walk_has(&p, name))
    })
}

#[test]
fn dkms_builds_and_installs_the_driver_for_6_1() {
    dkms_cycle(Kernel::V6_1, None);
}

#[test]
fn dkms_builds_and_installs_the_driver_for_5_10() {
    dkms_cycle(Kernel::V5_10, None);
}

/// `make dkms-src VPASID_DEVICE_ID=40` makes every DKMS build of the tree
/// (also the automatic ones after a kernel upgrade) bind ID 40 (0x28).
#[test]
fn dkms_builds_for_another_device_id() {
    dkms_cycle(Kernel::V6_1, Some(40));
}
