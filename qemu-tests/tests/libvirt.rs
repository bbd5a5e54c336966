// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! docs/operations.md's "Attaching a VM with libvirt", done with a real
//! libvirt (12.9, from the cached chroot `.cache/libvirt-root`, see
//! `qemu_tests::libvirt`), so that the documentation cannot drift from what
//! works.
//!
//! `documented_domain_keeps_every_pasid` takes the domain XML and the
//! `virsh` re-plug lines from the docs themselves, and changes only what a
//! test must ([`test_domain_xml`]: TCG, a kernel to boot, less memory, its
//! own paths, a serial console). The re-plug lines run as written, by `sh`
//! in the libvirt chroot ([`VirshReplug`]). The daemon runs as the docs say
//! (`--socket-mode 660 --socket-group kvm`, a hold-over, `--state-dir`),
//! and QEMU runs as libvirt's `libvirt-qemu` with Debian's `qemu.conf`.
//!
//! 1. `virsh define`, `virsh start`; the guest binds the driver and
//!    allocates; `pasidctl vms` shows the VM connected with those PASIDs.
//! 2. `virsh save` is refused while the device is plugged, as documented.
//! 3. Re-plug with the documented `virsh` lines, then with `pasidctl
//!    reattach` on the second QMP socket, each live and after a daemon
//!    restart: every time the guest resumes (RECONCILE) with every PASID,
//!    and host and guest agree.
//! 4. Save and restore with the documented steps (`pasidctl detach
//!    --keep`, `virsh save`, `virsh restore --xml` without the device,
//!    plug): every PASID kept. A restore with the device still in the XML
//!    is refused, as documented.
//! 5. `virsh destroy`: the QEMU process's exit releases the VM's PASIDs at
//!    once, although the slot has a hold-over.
//! 6. A domain destroyed before its guest's driver started the device:
//!    the daemon says so, and logs no `event=misconfig`.
//!
//! Figures, printed: `virsh start` to the guest's shell and to its first
//! allocation; each re-plug (the `virsh` lines from `device_del` to the
//! driver active again; pasidctl's report); save and restore.
//!
//! Each kernel runs as `<scenario>::linux_<kernel>`. Logs:
//! `target/qemu-tests-logs/<scenario>.linux_<kernel>-{web,daemon,libvirtd}.log`,
//! and libvirt's QEMU log in the test's `/tmp/vpasid-libvirt-*/libvirt/log/`.

// The scenario bodies are ordinary functions called from the generated
// `#[test]`s: in them, as in any test, a failed step is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_guest_knows, detach, load_v1_driver, sole_holdings, v1_daemon_config};
use qemu_tests::libvirt::chroot_group_id;
use qemu_tests::{Daemon, DaemonConfig, Guest, GuestConfig, Kernel, Libvirtd, VmSlot, VpasidGuest};

/// The operator's guide, read at build time.
const DOCS: &str = include_str!("../../docs/operations.md");

/// The section whose XML and commands the test runs.
const SECTION: &str = "## Attaching a VM with libvirt";

/// The domain and slot name the docs use.
const VM: &str = "web";

/// Guest memory: the docs' 4 GiB is more than a TCG test needs.
const MEMORY_MIB: u32 = 256;

/// Bound on one guest command.
const CMD: Duration = Duration::from_secs(60);

/// The driver's request timeout: requests to a dead device end quickly.
const TIMEOUT_MS: u32 = 500;

/// The PASIDs the guest holds throughout.
const HELD: u32 = 3;

/// The range every allocation asks for.
const MIN: u32 = 100;
/// See [`MIN`].
const MAX: u32 = 10_000;

/// The slot's hold-over: it covers each re-plug and the saved time.
const HOLDOVER_S: u32 = 300;

qemu_tests::per_kernel!(documented_domain_keeps_every_pasid);

/// `SECTION` of the docs: from its heading to the next `## `.
fn section() -> &'static str {
    let start = DOCS
        .find(SECTION)
        .unwrap_or_else(|| panic!("docs/operations.md has no {SECTION:?}"));
    let rest = &DOCS[start + SECTION.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The bodies of the section's fenced blocks of language `lang`.
fn fenced(lang: &str) -> Vec<&'static str> {
    let open = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = section();
    while let Some(at) = rest.find(&open) {
        let body = &rest[at + open.len()..];
        let end = body.find("```").expect("an unterminated fenced block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

/// `text` with the only occurrence of `from` replaced by `to`; a docs
/// change that removes or repeats `from` fails here, by name.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the documented libvirt XML/commands should hold {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

/// Where the test's domain keeps what the docs put under `/run` and
/// `/var/lib`.
struct Paths {
    /// The daemon's socket for the VM (docs: `/run/vhost-user-pasid/web.sock`).
    socket: PathBuf,
    /// The second QMP socket (docs: `/run/vpasid/web.qmp`).
    qmp: PathBuf,
    /// The disk image (docs: `/var/lib/libvirt/images/web.qcow2`).
    disk: PathBuf,
    /// The serial console the test drives the guest through.
    console: PathBuf,
    /// Copies of the guest kernel and initramfs (libvirt relabels them).
    kernel: PathBuf,
    initrd: PathBuf,
}

/// The documented domain XML for a test: TCG (`type='qemu'`: no KVM
/// here), a kernel and initramfs to boot, [`MEMORY_MIB`], the test's
/// paths, and a serial console. Everything else as documented.
fn test_domain_xml(documented: &str, paths: &Paths) -> String {
    let xml = replace_once(documented, "<domain type='kvm'", "<domain type='qemu'");
    let mem_start = xml.find("<memory").expect("no <memory>");
    let mem_end = xml[mem_start..].find("</memory>").expect("no </memory>") + mem_start;
    let xml = format!(
        "{}<memory unit='MiB'>{MEMORY_MIB}</memory>{}",
        &xml[..mem_start],
        &xml[mem_end + "</memory>".len()..]
    );
    let boot = format!(
        "hvm</type>\n    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    \
         <cmdline>console=ttyS0 panic=-1 printk.time=1 no_timer_check vpasid.loglevel=5</cmdline>",
        paths.kernel.display(),
        paths.initrd.display()
    );
    let xml = replace_once(&xml, "hvm</type>", &boot);
    let xml = replace_once(
        &xml,
        "/var/lib/libvirt/images/web.qcow2",
        &paths.disk.to_string_lossy(),
    );
    let xml = replace_once(
        &xml,
        "/run/vhost-user-pasid/web.sock",
        &paths.socket.to_string_lossy(),
    );
    let xml = replace_once(&xml, "/run/vpasid/web.qmp", &paths.qmp.to_string_lossy());
    let console = format!(
        "  <serial type='unix'><source mode='connect' path='{}'/></serial>\n  </devices>",
        paths.console.display()
    );
    replace_once(&xml, "  </devices>", &console)
}

/// The documented `virsh` re-plug: the docs' shell lines, run as they
/// are (with the test's paths) by `sh` in the libvirt chroot.
struct VirshReplug {
    /// From the `DEVICE_DELETED` listener to `chardev-remove`.
    unplug: String,
    /// `chardev-add` and `device_add`.
    plug: String,
}

impl VirshReplug {
    /// The docs' block, with the test's socket and a scratch file in `dir`
    /// for the events (two tests at once must not share `/tmp/web.events`).
    fn from_docs(socket: &Path, dir: &Path) -> VirshReplug {
        let block = fenced("sh")
            .into_iter()
            .find(|b| b.contains("virsh qemu-monitor-event"))
            .expect("no documented virsh re-plug block");
        let block = replace_once(
            block,
            "/run/vhost-user-pasid/web.sock",
            &socket.to_string_lossy(),
        );
        let events = dir.join("web.events");
        assert_eq!(block.matches("/tmp/web.events").count(), 2, "{block}");
        let block = block.replace("/tmp/web.events", &events.to_string_lossy());
        let split = block
            .find("virsh qemu-monitor-command web '{\"execute\":\"chardev-add\"")
            .expect("no documented chardev-add");
        let (unplug, plug) = block.split_at(split);
        let order = ["device_del", "chardev-remove", "chardev-add", "device_add"];
        let at: Vec<usize> = order
            .iter()
            .map(|name| {
                block
                    .find(&format!("{{\"execute\":\"{name}\""))
                    .unwrap_or_else(|| panic!("no documented {name}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{block}");
        VirshReplug {
            unplug: unplug.to_string(),
            plug: plug.to_string(),
        }
    }

    /// Runs the documented unplug lines; returns how long they took.
    fn unplug(&self, lv: &Libvirtd) -> Duration {
        let at = Instant::now();
        let out = lv.sh(&format!("set -e\n{}", self.unplug)).unwrap();
        assert_eq!(out.matches("\"return\"").count(), 2, "{out}");
        at.elapsed()
    }

    /// Runs the documented plug lines.
    fn plug(&self, lv: &Libvirtd) {
        let out = lv.sh(&format!("set -e\n{}", self.plug)).unwrap();
        assert_eq!(out.matches("\"return\"").count(), 2, "{out}");
    }
}

/// After the `n`th re-plug: the guest resumed with every PASID of `held`,
/// the host holds exactly those for the VM, `pasidctl vms` shows it
/// connected with `n` resumes.
fn assert_kept(guest: &mut Guest, daemon: &Daemon, held: &BTreeSet<u32>, n: usize) -> String {
    let reconciled = common::wait_resumes(guest, n);
    assert!(
        reconciled.contains(&format!(
            "RECONCILE: {HELD} kept, 0 re-granted, 0 conflict(s)"
        )),
        "re-plug {n}: {reconciled}"
    );
    assert_eq!(&sole_holdings(daemon, VM), held, "re-plug {n}");
    assert_guest_knows(guest, held, &BTreeSet::new());
    let vms = daemon.pasidctl_json(&["vms"]).unwrap();
    let web = &vms.as_array().unwrap()[0];
    assert_eq!(web["name"], VM, "{vms}");
    assert_eq!(web["connected"], true, "{vms}");
    assert_eq!(web["held"].as_u64(), Some(u64::from(HELD)), "{vms}");
    assert!(web["counters"]["resumes"].as_u64() >= Some(1), "{vms}");
    reconciled
}

/// Runs `pasidctl --json reattach` on the second QMP socket.
fn reattach(daemon: &Daemon, qmp: &Path) -> serde_json::Value {
    let qmp = qmp.to_string_lossy();
    let report = daemon
        .pasidctl_json(&["reattach", "--vm", VM, "--qmp", &qmp, "--timeout", "60"])
        .unwrap();
    assert_eq!(report["guest"], "reconcile", "{report}");
    assert_eq!(
        (
            report["held_before"].as_u64(),
            report["held_after"].as_u64()
        ),
        (Some(u64::from(HELD)), Some(u64::from(HELD))),
        "{report}"
    );
    report
}

/// Makes `path` a directory that QEMU (group `group` of the chroot) may
/// create sockets in, as the docs' `install -d ... /run/vpasid` does.
fn qemu_writable_dir(path: &Path, group: u32) {
    fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, None, Some(group)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o770)).unwrap();
}

fn documented_domain_keeps_every_pasid(kernel: Kernel) {
    let lv = Libvirtd::start().unwrap();
    // The docs' daemon options for libvirt; the host may have no group
    // `kvm`, so its id is the chroot's.
    let kvm = chroot_group_id("kvm").unwrap();
    let mut daemon = Daemon::start(v1_daemon_config(
        kernel,
        DaemonConfig::new()
            .vm(VmSlot::new(VM).holdover(HOLDOVER_S))
            .state_dir("state")
            .arg("--socket-mode")
            .arg("660")
            .arg("--socket-group")
            .arg(kvm.to_string()),
    ))
    .unwrap();
    // QEMU sees the host's /tmp only (qemu_tests::libvirt).
    assert!(
        daemon.dir().starts_with("/tmp"),
        "the daemon's sockets are in {}: unset TMPDIR",
        daemon.dir().display()
    );
    // Like /run/vhost-user-pasid: QEMU may pass through to the socket.
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711)).unwrap();

    let vpasid_dir = lv.dir().join("vpasid");
    qemu_writable_dir(&vpasid_dir, chroot_group_id("libvirt-qemu").unwrap());
    let paths = Paths {
        socket: daemon.socket(VM).unwrap(),
        qmp: vpasid_dir.join("web.qmp"),
        disk: lv.dir().join("web.qcow2"),
        console: lv.dir().join("web.console"),
        kernel: lv.dir().join("vmlinuz"),
        initrd: lv.dir().join("initrd.cpio.gz"),
    };
    fs::copy(kernel.vmlinuz(), &paths.kernel).unwrap();
    fs::copy(kernel.initramfs(), &paths.initrd).unwrap();
    lv.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        &paths.disk.to_string_lossy(),
        "64M",
    ])
    .unwrap();

    let documented = fenced("xml");
    assert_eq!(documented.len(), 1, "one domain XML in {SECTION:?}");
    let xml = test_domain_xml(documented[0], &paths);
    let xml_path = lv.dir().join("web.xml");
    fs::write(&xml_path, &xml).unwrap();
    lv.virsh(&["define", &xml_path.to_string_lossy()]).unwrap();
    let replug = VirshReplug::from_docs(&paths.socket, lv.dir());

    // 1. Start; the guest binds the driver and allocates.
    let started = Instant::now();
    let mut guest = lv
        .start_guest(GuestConfig::new(VM, kernel), VM, &paths.console)
        .unwrap();
    let to_shell = started.elapsed();
    load_v1_driver(&mut guest, &format!("timeout_ms={TIMEOUT_MS}")).unwrap();
    guest.load_exerciser().unwrap();
    // Bound to the device: without <acpi/> the guest ignores it.
    guest.wait_driver_state("active", CMD).unwrap();
    let first = guest.alloc(MIN, MAX, 0).unwrap().expect("first alloc");
    let to_first_alloc = started.elapsed();
    let mut held: BTreeSet<u32> = [first].into();
    while held.len() < HELD as usize {
        held.insert(guest.alloc(MIN, MAX, 0).unwrap().expect("alloc"));
    }
    assert_eq!(sole_holdings(&daemon, VM), held);
    assert_guest_knows(&mut guest, &held, &BTreeSet::new());
    let host = daemon.vm(VM).unwrap();
    assert!(host.connected, "{host:?}");
    assert_eq!(host.held, HELD, "{host:?}");
    assert!(
        !lv.qemu_log(VM).contains("acpi=off"),
        "libvirt turned ACPI off: {}",
        lv.qemu_log(VM)
    );

    // 2. Saving is refused with the device plugged.
    let save = lv.dir().join("web.save");
    let refused = lv
        .virsh(&["save", VM, &save.to_string_lossy()])
        .expect_err("virsh save with the device plugged");
    assert!(
        refused.to_string().contains("non-migratable device"),
        "{refused}"
    );
    let save_refused = refused.to_string().replace('\n', " | ");

    // 3. Re-plugs: virsh, pasidctl; live, then after a daemon restart.
    let mut replugs = 0;
    let mut figures = Vec::new();
    for restart in [false, true] {
        if restart {
            daemon.kill().unwrap();
            daemon.restart().unwrap();
        }
        let at = Instant::now();
        let unplugged = replug.unplug(&lv);
        replug.plug(&lv);
        replugs += 1;
        assert_kept(&mut guest, &daemon, &held, replugs);
        figures.push(format!(
            "virsh lines{}: unplug {unplugged:?} (1 s of it the documented sleep), driver \
             active {:?} after the start",
            if restart { " after a restart" } else { "" },
            at.elapsed()
        ));

        if restart {
            daemon.kill().unwrap();
            daemon.restart().unwrap();
        }
        let report = reattach(&daemon, &paths.qmp);
        replugs += 1;
        assert_kept(&mut guest, &daemon, &held, replugs);
        figures.push(format!(
            "pasidctl reattach{}: {report}",
            if restart { " after a restart" } else { "" }
        ));
    }
    assert_eq!(daemon.vm(VM).unwrap().counters.request("RESET"), 0);

    // 4. Save and restore, as documented: `virsh save` ends the QEMU
    // process, so the unplug is `pasidctl detach --keep` (its exit must
    // not end the hold-over).
    let at = Instant::now();
    detach(&daemon, VM, &paths.qmp, &["--keep"]);
    lv.virsh(&["save", VM, &save.to_string_lossy()]).unwrap();
    let saved = at.elapsed();
    // As the docs warn: the saved XML still has the device, and QEMU
    // refuses the saved state into a VM that has it.
    let refused = lv
        .virsh(&["restore", &save.to_string_lossy()])
        .expect_err("virsh restore with the device in the XML");
    assert!(
        refused.to_string().contains("non-migratable device"),
        "{refused}"
    );
    let dumped = lv
        .virsh(&["save-image-dumpxml", &save.to_string_lossy()])
        .unwrap();
    let without = remove_device_args(&dumped);
    let restore_xml = lv.dir().join("web-restore.xml");
    fs::write(&restore_xml, without).unwrap();
    let at = Instant::now();
    lv.virsh(&[
        "restore",
        &save.to_string_lossy(),
        "--xml",
        &restore_xml.to_string_lossy(),
    ])
    .unwrap();
    replug.plug(&lv);
    replugs += 1;
    assert_kept(&mut guest, &daemon, &held, replugs);
    let restored = at.elapsed();
    // The guest goes on.
    let more = guest
        .alloc(MIN, MAX, 0)
        .unwrap()
        .expect("alloc after restore");
    assert!(!held.contains(&more), "{more}");
    guest.free(more).unwrap();
    assert_eq!(sole_holdings(&daemon, VM), held);
    guest.check_health().unwrap();

    // 5. Destroy: the QEMU process exits, and its exit releases the VM's
    // PASIDs at once, hold-over or not.
    let mark = daemon.log_mark();
    lv.virsh(&["destroy", VM]).unwrap();
    drop(guest);
    let deadline = Instant::now() + CMD;
    let vm = loop {
        let vms = daemon.pasidctl_json(&["vms"]).unwrap();
        let vm = vms.as_array().unwrap()[0].clone();
        if vm["connected"] == false && vm["held"] == 0 {
            break vm;
        }
        assert!(Instant::now() < deadline, "{vms}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(vm["held_over_secs"].is_null(), "{vm}");
    assert!(daemon.vm_pasids(VM).unwrap().is_empty());
    daemon
        .wait_log_since(mark, "vm=web event=qemu-exited", CMD)
        .unwrap();

    // 6. Destroyed before the guest's driver started the device: no
    // misconfiguration.
    let mark = daemon.log_mark();
    let guest = lv
        .start_guest(GuestConfig::new(VM, kernel), VM, &paths.console)
        .unwrap();
    assert!(daemon.vm(VM).unwrap().connected);
    lv.virsh(&["destroy", VM]).unwrap();
    daemon
        .wait_log_since(
            mark,
            "vm=web event=disconnect reason=\"the frontend left before the guest started the device\"",
            CMD,
        )
        .unwrap();
    let log = daemon.log();
    assert!(!log[mark..].contains("misconfig"), "{}", &log[mark..]);
    guest.check_console_health().unwrap();
    drop(guest);

    // What the docs say about libvirt's view: the taints, and libvirtd's
    // complaint at each unplug (four re-plugs and the save).
    let qemu_log = lv.qemu_log(VM);
    for taint in ["tainted: custom-argv", "tainted: custom-monitor"] {
        assert!(qemu_log.contains(taint), "{taint}: {qemu_log}");
    }
    let libvirtd_log = fs::read_to_string(lv.log_path()).unwrap_or_default();
    assert_eq!(
        libvirtd_log
            .matches("no device found with alias vp0")
            .count(),
        replugs,
        "{libvirtd_log}"
    );
    eprintln!(
        "{kernel}: virsh start to the shell {to_shell:?}, to the first allocation \
         {to_first_alloc:?}; {}; save (unplug + virsh save) {saved:?}, restore (virsh \
         restore + plug + resume) {restored:?}; save with the device: {save_refused}",
        figures.join("; ")
    );
}

/// The saved domain's XML without the vpasid chardev and device (the two
/// `<qemu:arg>` pairs), as the docs' restore step says.
fn remove_device_args(xml: &str) -> String {
    let lines: Vec<&str> = xml.lines().collect();
    let mut out = Vec::new();
    let mut removed = 0;
    let mut i = 0;
    while i < lines.len() {
        let is_pair = lines[i].contains("<qemu:arg value='-chardev'/>")
            || (lines[i].contains("<qemu:arg value='-device'/>")
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.contains("vhost-user-test-device-pci")));
        if is_pair {
            removed += 1;
            i += 2;
            continue;
        }
        out.push(lines[i]);
        i += 1;
    }
    assert_eq!(removed, 2, "{xml}");
    out.join("\n")
}

/// `virsh migrate` between two libvirt daemons standing for two hosts,
/// each with a vhost-user-pasid of its own (issue 22), the way
/// docs/operations.md "Migrating a VM" gives it for libvirt:
///
/// 1. The documented domain runs on host A; its guest holds [`HELD`]
///    PASIDs and a lease cache.
/// 2. `pasidctl detach` on A, `pasidctl export` on A, `pasidctl reserve`
///    on B: every PASID reserved there.
/// 3. `virsh migrate --live --p2p --persistent --undefinesource --xml
///    LIVE --persistent-xml PERSISTENT` to B's libvirtd: LIVE is the
///    running domain's XML without the vpasid chardev and device (and with
///    a QMP socket of its own), PERSISTENT the definition with them (B's
///    socket). The migration stream goes over a Unix socket
///    (`--migrateuri unix://...`): the two daemons have no network.
/// 4. `pasidctl attach` on B: every PASID KEPT, nothing re-granted; the
///    guest resolves each and goes on allocating. libvirt A ended the
///    source QEMU, and A holds nothing for the VM, with no operator step.
/// 5. B's definition keeps the device for the next start; A has none.
///
/// Figures, printed: detach, `virsh migrate`'s wall time, attach's report,
/// and `virsh migrate`'s return to A holding nothing (an upper bound of
/// the source QEMU's exit to its release). One kernel (6.1): the guest
/// side is the same as in `tests/migration.rs`, which runs both; this test
/// is about libvirt's part.
#[test]
fn virsh_migrate_between_two_hosts_keeps_every_pasid() {
    let kernel = Kernel::V6_1;
    let lv_a = Libvirtd::start().unwrap();
    let lv_b = Libvirtd::start_other_host().unwrap();
    let kvm = chroot_group_id("kvm").unwrap();
    let host_daemon = || {
        let daemon = Daemon::start(
            DaemonConfig::new()
                .vm(VmSlot::new(VM))
                .state_dir("state")
                .arg("--socket-mode")
                .arg("660")
                .arg("--socket-group")
                .arg(kvm.to_string()),
        )
        .unwrap();
        assert!(daemon.dir().starts_with("/tmp"), "unset TMPDIR");
        fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711)).unwrap();
        daemon
    };
    let a = host_daemon();
    let b = host_daemon();

    // Both hosts see /tmp: the files the domain uses are shared storage.
    let vpasid_dir = lv_a.dir().join("vpasid");
    qemu_writable_dir(&vpasid_dir, chroot_group_id("libvirt-qemu").unwrap());
    let paths = Paths {
        socket: a.socket(VM).unwrap(),
        qmp: vpasid_dir.join("web.qmp"),
        disk: lv_a.dir().join("web.qcow2"),
        console: lv_a.dir().join("web.console"),
        kernel: lv_a.dir().join("vmlinuz"),
        initrd: lv_a.dir().join("initrd.cpio.gz"),
    };
    let qmp_b = vpasid_dir.join("web-b.qmp");
    fs::copy(kernel.vmlinuz(), &paths.kernel).unwrap();
    fs::copy(kernel.initramfs(), &paths.initrd).unwrap();
    lv_a.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        &paths.disk.to_string_lossy(),
        "64M",
    ])
    .unwrap();
    let xml = test_domain_xml(fenced("xml")[0], &paths);
    let xml_path = lv_a.dir().join("web.xml");
    fs::write(&xml_path, &xml).unwrap();
    lv_a.virsh(&["define", &xml_path.to_string_lossy()])
        .unwrap();

    // 1. The guest runs on A with PASIDs in use and a lease cache.
    let mut guest = lv_a
        .start_guest(GuestConfig::new(VM, kernel), VM, &paths.console)
        .unwrap();
    guest
        .load_driver(&format!("timeout_ms={TIMEOUT_MS}"))
        .unwrap();
    guest.load_exerciser().unwrap();
    guest.wait_driver_state("active", CMD).unwrap();
    let in_use: BTreeSet<u32> = (0..HELD)
        .map(|_| guest.alloc(MIN, MAX, 0).unwrap().expect("alloc"))
        .collect();
    qemu_tests::vpasid::wait_lease_settled(&mut guest, &a, VM, CMD).unwrap();

    // 2. Detach on A, reserve on B.
    let (detached, detach_took) = detach(&a, VM, &paths.qmp, &[]);
    let export = a.pasidctl_json(&["export", "--vm", VM]).unwrap();
    let held = a.vm_pasids(VM).unwrap();
    assert!(
        held.is_superset(&in_use) && held.len() > in_use.len(),
        "{held:?}"
    );
    let export_path = b.dir().join("web.export.json");
    fs::write(&export_path, export.to_string()).unwrap();
    b.pasidctl(&[
        "reserve",
        "--vm",
        VM,
        "--from",
        &export_path.to_string_lossy(),
    ])
    .unwrap();
    assert_eq!(b.vm_pasids(VM).unwrap(), held);

    // 3. virsh migrate: the live XML without the device, the persistent
    // one with it.
    let live = lv_a.virsh(&["dumpxml", "--migratable", VM]).unwrap();
    let live = remove_device_args(&live).replace(
        &paths.qmp.to_string_lossy().to_string(),
        &qmp_b.to_string_lossy(),
    );
    let live_path = lv_a.dir().join("web-live.xml");
    fs::write(&live_path, live).unwrap();
    let persistent = lv_a
        .virsh(&["dumpxml", "--inactive", "--migratable", VM])
        .unwrap();
    let persistent = replace_once(
        &persistent,
        &paths.socket.to_string_lossy(),
        &b.socket(VM).unwrap().to_string_lossy(),
    );
    let persistent_path = lv_a.dir().join("web-persistent.xml");
    fs::write(&persistent_path, persistent).unwrap();
    let migration_socket = vpasid_dir.join("web.migrate");
    let dest_uri = lv_b.uri().replacen("qemu://", "qemu+unix://", 1);
    let at = Instant::now();
    lv_a.virsh(&[
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        "--unsafe",
        "--xml",
        &live_path.to_string_lossy(),
        "--persistent-xml",
        &persistent_path.to_string_lossy(),
        "--migrateuri",
        &format!("unix://{}", migration_socket.display()),
        VM,
        &dest_uri,
    ])
    .unwrap();
    let migrate_took = at.elapsed();
    let released = loop {
        if a.vm(VM).unwrap().held == 0 {
            break at.elapsed() - migrate_took;
        }
        assert!(at.elapsed() < migrate_took + CMD, "A still holds");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(a.pasids().unwrap().is_empty());
    assert!(lv_b.virsh(&["list", "--name"]).unwrap().contains(VM));
    assert!(!lv_a
        .virsh(&["list", "--all", "--name"])
        .unwrap()
        .contains(VM));

    // 4. Attach on B: every PASID kept.
    let attached = b
        .pasidctl_json(&[
            "attach",
            "--vm",
            VM,
            "--qmp",
            &qmp_b.to_string_lossy(),
            "--timeout",
            "60",
        ])
        .unwrap();
    assert_eq!(attached["probe"], "reconcile", "{attached}");
    assert_eq!(
        (
            attached["kept"].as_u64(),
            attached["regranted"].as_u64(),
            attached["conflicts"].as_u64()
        ),
        (Some(held.len() as u64), Some(0), Some(0)),
        "{attached}"
    );
    guest.wait_driver_state("active", CMD).unwrap();
    let reconciled = guest.wait_for_dmesg("RECONCILE:", CMD).unwrap();
    assert!(
        reconciled.contains(&format!("{} kept, 0 re-granted, 0 conflict(s)", held.len())),
        "{reconciled}"
    );
    assert_guest_knows(&mut guest, &in_use, &BTreeSet::new());
    let more = guest.alloc(MIN, MAX, 0).unwrap().expect("alloc on B");
    assert!(!in_use.contains(&more), "{more}");
    guest.free(more).unwrap();
    qemu_tests::vpasid::wait_lease_settled(&mut guest, &b, VM, CMD).unwrap();
    assert!(b.vm_pasids(VM).unwrap().is_superset(&in_use));
    guest.check_health().unwrap();

    // 5. B's definition keeps the device for the next start.
    let defined = lv_b.virsh(&["dumpxml", "--inactive", VM]).unwrap();
    assert!(defined.contains("vhost-user-test-device-pci"), "{defined}");
    lv_b.virsh(&["destroy", VM]).unwrap();
    drop(guest);
    eprintln!(
        "{kernel}: libvirt migration: detach {detach_took:?} ({}), virsh migrate \
         {migrate_took:?}, attach on B {attached}; A held nothing {released:?} after \
         virsh migrate returned",
        detached["unplug_ms"]
    );
}
