// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest driver's DKMS packaging (`guest-driver/dkms.conf`, `make
//! dkms-src`) builds and installs `virtio_pasid.ko` for each tested guest
//! kernel against its headers, with the real `dkms` tool, as docs/guest.md
//! tells a guest admin to.
//!
//! Also against the oldest and the newest point release Debian still serves
//! of each supported series (headers only, from
//! `qemu-tests/setup/build-kernels.sh headers`), and for a kernel without
//! `CONFIG_IOASID`, which DKMS must skip with its reason and a direct build
//! must refuse with one.
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
    dkms_cycle_for(
        &kernel.kver().unwrap(),
        &kernel.dir().join("headers"),
        device_id,
    );
}

/// Temporary DKMS source, build and install trees, and `dkms` run on them.
struct DkmsTrees {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    tree: std::path::PathBuf,
    install: std::path::PathBuf,
}

impl DkmsTrees {
    fn new(kver: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (src, tree, install) = (t.join("src"), t.join("dkms"), t.join("modules"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(install.join(kver)).unwrap();
        DkmsTrees {
            _tmp: tmp,
            src,
            tree,
            install,
        }
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        let s = |p: &Path| p.to_str().unwrap().to_string();
        args.iter()
            .map(|a| a.to_string())
            .chain([
                format!("--sourcetree={}", s(&self.src)),
                format!("--dkmstree={}", s(&self.tree)),
                format!("--installtree={}", s(&self.install)),
            ])
            .collect()
    }

    /// `dkms ARGS` on these trees; it must succeed.
    fn dkms(&self, args: &[&str]) -> String {
        let full = self.args(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        ok("dkms", "dkms", &full)
    }

    /// `dkms ARGS` on these trees, whatever its outcome.
    fn dkms_output(&self, args: &[&str]) -> Output {
        let full = self.args(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        run("dkms", "dkms", &full)
    }

    /// `make -C guest-driver dkms-src DESTDIR=...` (with `extra` make
    /// arguments): the DKMS source tree.
    fn make_source(&self, extra: &[String]) {
        let driver = repo_root().join("guest-driver");
        let mut args = vec![
            "-s".to_string(),
            "-C".to_string(),
            driver.to_str().unwrap().to_string(),
            "dkms-src".to_string(),
            format!("DESTDIR={}", self.src.to_str().unwrap()),
        ];
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok("make", "make", &args);
    }
}

/// A DKMS cycle (source, add, build, install, check the module, uninstall,
/// remove) for the kernel `kver` whose headers are `headers`.
fn dkms_cycle_for(kver: &str, headers: &Path, device_id: Option<u32>) {
    let kver = kver.to_string();
    let headers = headers.to_path_buf();
    assert!(headers.join("Makefile").is_file(), "{headers:?}");
    let version = package_version();
    let trees = DkmsTrees::new(&kver);
    let (src, tree, install) = (&trees.src, &trees.tree, &trees.install);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let dkms = |args: &[&str]| trees.dkms(args);

    // make -C guest-driver dkms-src DESTDIR=... [VPASID_DEVICE_ID=N]
    let extra: Vec<String> = device_id
        .map(|id| format!("VPASID_DEVICE_ID={id}"))
        .into_iter()
        .collect();
    trees.make_source(&extra);
    let tree_src = src.join(format!("{MODULE}-{version}"));
    for f in [
        "dkms.conf",
        "vpasid.h",
        "vpasid_device.c",
        "vpasid_debugfs.c",
        "vpasid_reconcile.c",
        "vpasid_register.c",
        "vpasid_ioasid.c",
        "vpasid_held.c",
        "vpasid_alloc.c",
        "vpasid_lease.c",
        "vpasid_wait.c",
        "vpasid_transport.c",
        "vpasid_ids.c",
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
    assert!(!walk_has(install, "ioasid_exerciser.ko"));

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

/// The headers of a build-check kernel (`NAME` is `5.10-oldest`,
/// `5.10-newest`, `6.1-oldest` or `6.1-newest`): fetched by
/// `qemu-tests/setup/build-kernels.sh headers NAME` (cached), which finds
/// the ABI in Debian's package indexes. Returns its `uname -r` and headers.
fn build_kernel(name: &str) -> (String, std::path::PathBuf) {
    let script = repo_root().join("qemu-tests/setup/build-kernels.sh");
    ok("bash", "bash", &[script.to_str().unwrap(), "headers", name]);
    let dir = repo_root().join(".cache/build-kernels").join(name);
    let kver = std::fs::read_to_string(dir.join("kver")).unwrap();
    let kver = kver.trim().to_string();
    assert!(
        kver.starts_with(name.split('-').next().unwrap()) && kver.ends_with("-cloud-amd64"),
        "{name}: {kver}"
    );
    (kver, dir.join("headers"))
}

#[test]
fn dkms_builds_for_the_oldest_5_10_point_release() {
    let (kver, headers) = build_kernel("5.10-oldest");
    dkms_cycle_for(&kver, &headers, None);
}

#[test]
fn dkms_builds_for_the_newest_5_10_point_release() {
    let (kver, headers) = build_kernel("5.10-newest");
    dkms_cycle_for(&kver, &headers, None);
}

#[test]
fn dkms_builds_for_the_oldest_6_1_point_release() {
    let (kver, headers) = build_kernel("6.1-oldest");
    dkms_cycle_for(&kver, &headers, None);
}

#[test]
fn dkms_builds_for_the_newest_6_1_point_release() {
    let (kver, headers) = build_kernel("6.1-newest");
    dkms_cycle_for(&kver, &headers, None);
}

/// Copies the tree `from` to `to`; a symbolic link becomes one to what the
/// original resolves to, so that relative links keep working.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let target = std::fs::canonicalize(&src).unwrap();
            std::os::unix::fs::symlink(target, &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Drops every line of `path` that contains `needle`; at least one must.
fn drop_lines(path: &Path, needle: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(needle)).collect();
    assert!(
        kept.len() < text.lines().count(),
        "{path:?} has no {needle}"
    );
    std::fs::write(path, kept.join("\n") + "\n").unwrap();
}

/// A kernel without `CONFIG_IOASID` (as Debian's arm64 kernels, or any
/// kernel from 6.4 on): the 6.1 test kernel's headers with the option
/// taken out of `.config`, `auto.conf` and `autoconf.h`. `dkms build`
/// skips it, naming the BUILD_EXCLUSIVE directive (exit 77, what `dkms
/// autoinstall` takes as "not for this kernel"), and builds nothing; a
/// direct `make` fails with the one-line reason.
#[test]
fn a_kernel_without_ioasid_is_skipped_with_its_reason() {
    ensure_setup().unwrap();
    let kernel = Kernel::V6_1;
    let kver = kernel.kver().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let headers = tmp.path().join("headers");
    // The flavour's tree is small (its Makefile includes the -common tree).
    copy_tree(
        &std::fs::canonicalize(kernel.dir().join("headers")).unwrap(),
        &headers,
    );
    drop_lines(&headers.join(".config"), "CONFIG_IOASID=");
    drop_lines(&headers.join("include/config/auto.conf"), "CONFIG_IOASID=");
    drop_lines(
        &headers.join("include/generated/autoconf.h"),
        "#define CONFIG_IOASID ",
    );

    let version = package_version();
    let trees = DkmsTrees::new(&kver);
    trees.make_source(&[]);
    trees.dkms(&["add", "-m", MODULE, "-v", &version]);
    let kdir = format!("--kernelsourcedir={}", headers.to_str().unwrap());
    let out = trees.dkms_output(&["build", "-m", MODULE, "-v", &version, "-k", &kver, &kdir]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(77), "{text}");
    assert!(
        text.contains("BUILD_EXCLUSIVE directive which does not match this kernel/arch/config"),
        "{text}"
    );
    assert!(!walk_has(&trees.tree, "virtio_pasid.ko"), "{text}");
    assert!(!walk_has(&trees.install, "virtio_pasid.ko"), "{text}");
    // What dkms.conf names as the reason.
    let conf = std::fs::read_to_string(repo_root().join("guest-driver/dkms.conf")).unwrap();
    assert!(
        conf.lines()
            .any(|l| l.trim() == "BUILD_EXCLUSIVE_CONFIG=\"CONFIG_IOASID\""),
        "{conf}"
    );

    // A direct build of the same source tree stops with the reason.
    let src = trees.src.join(format!("{MODULE}-{version}"));
    let out = run(
        "make",
        "make",
        &[
            "-C",
            src.to_str().unwrap(),
            &format!("KDIR={}", headers.to_str().unwrap()),
            "VPASID_EXERCISER=n",
            "all",
        ],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "#error \"virtio_pasid needs CONFIG_IOASID=y (INTEL_IOMMU_SVM or ARM_SMMU_V3_SVA): docs/guest.md\""
        ),
        "{text}"
    );
    assert!(!walk_has(&src, "virtio_pasid.ko"));
}
