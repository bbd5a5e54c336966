// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The files in `host-backend/packaging/`: generated man pages and
//! completions are current, the example QEMU backend descriptor
//! (docs/examples) agrees with `--print-capabilities`, `make install` stages
//! everything and nothing in QEMU's descriptor directory, the systemd
//! unit passes `systemd-analyze verify` and its command line runs a working
//! daemon.
//!
//! Needs `make` and `systemd-analyze` (Debian: `apt-get install make
//! systemd`; `bash qemu-tests/run test` installs both). Nothing is skipped:
//! a missing tool fails its test with the install command.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use frontend::{Daemon, TestVm};
use serde_json::Value;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

/// Where cargo put the binaries this test runs against.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `program`, failing with the install hint when it is missing.
fn run(program: &str, package: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: apt-get install {package} \
             (bash qemu-tests/run test installs it)"
        ),
        Err(e) => panic!("{program}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `make -C packaging install` with `vars`.
fn make_install(vars: &[String]) {
    let dir = packaging().display().to_string();
    let target = format!("TARGET_DIR={}", target_dir().display());
    let mut args = vec!["-s", "-C", &dir, "install", &target];
    args.extend(vars.iter().map(String::as_str));
    let out = run("make", "make", &args, &[]);
    assert!(out.status.success(), "make install failed: {}", text(&out));
}

/// Installs with every path under `root` itself (no DESTDIR), so the
/// installed unit names binaries that exist: what `systemd-analyze verify`
/// needs to check the unit offline.
fn install_under(root: &Path) {
    let r = root.display();
    make_install(&[format!("PREFIX={r}/usr"), format!("SYSCONFDIR={r}/etc")]);
}

/// The committed man pages and completions are what the clap definitions
/// generate today.
#[test]
fn committed_man_pages_and_completions_are_current() {
    let stale = xtask::gen_docs::stale_in(&packaging()).unwrap();
    assert!(
        stale.is_empty(),
        "stale in host-backend/packaging: {stale:?}; regenerate with \
         `make -C host-backend/packaging regenerate` (or cargo xtask gen-docs) and commit \
         the result"
    );
    // And nothing is committed there that the generator no longer makes.
    let generated: Vec<PathBuf> = xtask::gen_docs::generate()
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    for sub in ["man", "completions"] {
        for entry in std::fs::read_dir(packaging().join(sub)).unwrap() {
            let rel = Path::new(sub).join(entry.unwrap().file_name());
            assert!(generated.contains(&rel), "{rel:?} is not generated");
        }
    }
}

/// The man pages render without warnings (when `man` is there to render).
#[test]
fn man_pages_render_cleanly() {
    for page in ["vhost-user-pasid.8", "pasidctl.8", "pasidctl-watch.8"] {
        let path = packaging().join("man").join(page);
        let out = run(
            "groff",
            "groff-base",
            &["-man", "-Tutf8", "-ww", "-z", path.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            text(&out)
        );
    }
}

/// The example descriptor (docs/examples/50-vpasid.json, not installed)
/// follows QEMU's docs/interop/vhost-user.json (`VhostUserBackend`:
/// description, type, binary, optional tags) and says what
/// `--print-capabilities` says.
#[test]
fn qemu_descriptor_matches_print_capabilities() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/50-vpasid.json");
    let raw = std::fs::read_to_string(example).unwrap();
    let desc: Value = serde_json::from_str(&raw).unwrap();
    let obj = desc.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["binary", "description", "tags", "type"]);
    assert!(!desc["description"].as_str().unwrap().is_empty());
    let binary = desc["binary"].as_str().unwrap();
    assert_eq!(binary, "/usr/libexec/vhost-user-pasid");
    assert!(desc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_string));
    let tags: Vec<&str> = desc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tags.contains(&"virtio-id=37"), "{tags:?}");
    assert!(tags.contains(&"config_size=32"), "{tags:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let caps: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(caps["type"], desc["type"]);
    assert_eq!(caps["type"], "pasid");
    assert!(caps["features"].as_array().is_some(), "{caps}");
}

/// Every file under `dir` (recursively); none when it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// QEMU's vhost-user descriptor directory under `root`/`prefix` holds
/// nothing: libvirt fails its whole scan on a descriptor whose type it does
/// not know, which would break virtiofsd and vhost-user-gpu discovery.
fn assert_no_qemu_descriptor(root: &Path, prefix: &str) {
    let dir = root.join(prefix).join("share/qemu/vhost-user");
    let found = files_under(&dir);
    assert!(
        found.is_empty(),
        "installed into {}: {found:?}",
        dir.display()
    );
}

/// `make install DESTDIR=...` stages every file with sane modes, rewrites
/// the binary path for another prefix, keeps an operator's defaults file,
/// installs nothing into QEMU's vhost-user descriptor directory (and
/// removes the descriptor older versions put there), and `make uninstall`
/// removes what it installed but that file.
#[test]
fn install_target_stages_every_file() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().display().to_string();
    // What an older version installed: an upgrade removes it.
    let legacy = dest.path().join("usr/share/qemu/vhost-user/50-vpasid.json");
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    std::fs::write(&legacy, "{\"type\": \"pasid\"}\n").unwrap();
    make_install(&[format!("DESTDIR={d}")]);
    assert!(!legacy.exists(), "the old descriptor was left behind");
    assert_no_qemu_descriptor(dest.path(), "usr");
    let expect = [
        ("usr/libexec/vhost-user-pasid", 0o755),
        ("usr/bin/pasidctl", 0o755),
        ("usr/lib/systemd/system/vhost-user-pasid.service", 0o644),
        ("etc/default/vhost-user-pasid", 0o644),
        ("usr/share/man/man8/vhost-user-pasid.8", 0o644),
        ("usr/share/man/man8/pasidctl.8", 0o644),
        ("usr/share/man/man8/pasidctl-watch.8", 0o644),
        ("usr/share/bash-completion/completions/pasidctl", 0o644),
        ("usr/share/zsh/vendor-completions/_pasidctl", 0o644),
        ("usr/share/fish/vendor_completions.d/pasidctl.fish", 0o644),
        ("usr/share/doc/vhost-user-pasid/metrics-listen.conf", 0o644),
    ];
    for (path, mode) in expect {
        let meta = std::fs::metadata(dest.path().join(path))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    let unit = std::fs::read_to_string(
        dest.path()
            .join("usr/lib/systemd/system/vhost-user-pasid.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/libexec/vhost-user-pasid "));

    // An operator's edits survive a reinstall.
    let defaults = dest.path().join("etc/default/vhost-user-pasid");
    std::fs::write(
        &defaults,
        "VPASID_ARGS=\"--vm mine=/run/vhost-user-pasid/m.sock\"\n",
    )
    .unwrap();
    make_install(&[format!("DESTDIR={d}")]);
    assert!(std::fs::read_to_string(&defaults).unwrap().contains("mine"));

    // Another prefix: the unit names the binary where it went.
    make_install(&[format!("DESTDIR={d}"), "PREFIX=/opt/vpasid".into()]);
    let unit = std::fs::read_to_string(
        dest.path()
            .join("opt/vpasid/lib/systemd/system/vhost-user-pasid.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/opt/vpasid/libexec/vhost-user-pasid "));
    assert!(dest
        .path()
        .join("opt/vpasid/libexec/vhost-user-pasid")
        .exists());
    assert_no_qemu_descriptor(dest.path(), "opt/vpasid");

    let out = run(
        "make",
        "make",
        &[
            "-s",
            "-C",
            packaging().to_str().unwrap(),
            "uninstall",
            &format!("DESTDIR={d}"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    for (path, _) in expect {
        let exists = dest.path().join(path).exists();
        assert_eq!(exists, path == "etc/default/vhost-user-pasid", "{path}");
    }
}

/// The shipped unit carries the hardening the operations guide promises.
#[test]
fn unit_is_hardened() {
    let unit =
        std::fs::read_to_string(packaging().join("systemd/vhost-user-pasid.service")).unwrap();
    for line in [
        "Restart=on-failure",
        "RuntimeDirectory=vhost-user-pasid",
        "DynamicUser=yes",
        "SupplementaryGroups=kvm",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service seccomp",
        "LockPersonality=yes",
        "RestrictNamespaces=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "vhost-user-pasid.service lacks {line:?}"
        );
    }
    // The daemon's own seccomp filter needs the seccomp() call; without it
    // in the allow-list the service would fail at start-up.
    assert!(!unit.contains("SystemCallFilter=@system-service\n"));
}

/// `systemd-analyze verify` of `unit` (and drop-ins beside it): must
/// succeed and print nothing. Man pages are looked up in `mandir`.
fn verify(unit: &Path, mandir: &Path) {
    let out = run(
        "systemd-analyze",
        "systemd",
        &["verify", unit.to_str().unwrap()],
        &[("MANPATH", mandir)],
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
}

/// The overall exposure `systemd-analyze security --offline` gives `unit`.
fn exposure(unit: &Path) -> f64 {
    let out = run(
        "systemd-analyze",
        "systemd",
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().unwrap(),
        ],
        &[],
    );
    let report = text(&out);
    report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vhost-user-pasid.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {report}"))
}

/// `systemd-analyze verify` accepts the unit as installed (offline: no
/// systemd needs to be running), finds its man pages, and prints nothing;
/// `systemd-analyze security --offline` rates it safe. The same holds with
/// the metrics-listen drop-in beside it.
#[test]
fn systemd_unit_verifies_offline() {
    let root = tempfile::tempdir().unwrap();
    install_under(root.path());
    let units = root.path().join("usr/lib/systemd/system");
    let unit = units.join("vhost-user-pasid.service");
    let mandir = root.path().join("usr/share/man");
    verify(&unit, &mandir);
    let plain = exposure(&unit);
    assert!(plain <= 1.0, "exposure {plain} > 1.0");

    let dropins = units.join("vhost-user-pasid.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::copy(
        root.path()
            .join("usr/share/doc/vhost-user-pasid/metrics-listen.conf"),
        dropins.join("metrics-listen.conf"),
    )
    .unwrap();
    verify(&unit, &mandir);
    let with_metrics = exposure(&unit);
    assert!(
        with_metrics > plain && with_metrics <= 2.0,
        "exposure with the drop-in {with_metrics} (without {plain})"
    );
}

/// A unit file whose [Service] section has a typo fails the same check, so
/// the check above would catch one.
#[test]
fn systemd_analyze_catches_a_broken_unit() {
    let dir = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(packaging().join("systemd/vhost-user-pasid.service")).unwrap();
    let broken = unit
        .replace(
            "ExecStart=/usr/libexec/vhost-user-pasid",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_vhost-user-pasid")),
        )
        .replace("Restart=on-failure", "Restart=on-falure");
    let path = dir.path().join("vhost-user-pasid.service");
    std::fs::write(&path, broken).unwrap();
    let out = run(
        "systemd-analyze",
        "systemd",
        &["verify", "--man=no", path.to_str().unwrap()],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("on-falure"),
        "{}",
        text(&out)
    );
}

/// The unit's ExecStart with the shipped defaults file, as systemd would
/// expand it, runs a daemon that QEMU's group can reach: sockets 0660 in
/// the runtime directory, control socket 0600, a VM served.
///
/// Substituted: the runtime directory (a temp dir), the binary (this
/// build), and group `kvm` (this machine may have none) by our own gid.
#[test]
fn unit_command_line_runs_a_working_daemon() {
    let unit =
        std::fs::read_to_string(packaging().join("systemd/vhost-user-pasid.service")).unwrap();
    let defaults = std::fs::read_to_string(packaging().join("default/vhost-user-pasid")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let vars = defaults
        .lines()
        .find_map(|l| l.strip_prefix("VPASID_ARGS="))
        .unwrap()
        .trim_matches('"');
    // systemd splits an unbraced $VAR at whitespace.
    let expanded = exec.replace("$VPASID_ARGS", vars);
    let runtime = tempfile::tempdir().unwrap();
    let rt = runtime.path().display().to_string();
    // SAFETY: getgid cannot fail.
    let gid = unsafe { libc::getgid() };
    // The unit's StateDirectory= likewise becomes a temp dir.
    let state = runtime.path().join("state");
    let st = state.display().to_string();
    let mut words = expanded.split_whitespace().map(|w| {
        w.replace("/run/vhost-user-pasid", &rt)
            .replace("/var/lib/vhost-user-pasid", &st)
            .replace("kvm", &gid.to_string())
    });
    assert_eq!(
        words.next().as_deref(),
        Some("/usr/libexec/vhost-user-pasid")
    );
    let args: Vec<String> = words.collect();
    assert!(args.contains(&"--socket-group".to_string()), "{args:?}");
    assert!(args.contains(&st), "the unit keeps durable state: {args:?}");

    // Daemon::start adds a --control-socket of its own; drop the unit's.
    let pos = args.iter().position(|a| a == "--control-socket").unwrap();
    let mut rest = args.clone();
    rest.drain(pos..pos + 2);
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let d = Daemon::start(&rest);
    let sock = runtime.path().join("vm0.sock");
    d.wait_for_socket(&sock);
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    let control = std::fs::metadata(&d.control).unwrap();
    assert_eq!(control.permissions().mode() & 0o777, 0o600);

    let mut vm = TestVm::connect(&sock);
    let pasid = vm.alloc_ok(1, 0xfffff);
    assert_eq!(pasid, 1);
    let vms = d.ctl_json(&["vms"]);
    assert_eq!(vms[0]["name"], "vm0");
    assert_eq!(vms[0]["held"], 1);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "state directory mode");
    assert!(std::fs::metadata(state.join("journal")).unwrap().len() > 24);
}

/// Every `event=NAME` the daemon's sources log, by name.
fn logged_events() -> std::collections::BTreeSet<String> {
    let mut events = std::collections::BTreeSet::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("event=") {
                let name: String = text[i + "event=".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                if !name.is_empty() {
                    events.insert(name);
                }
            }
        }
    }
    events
}

/// The log events table of docs/operations.md lists exactly the events the
/// daemon logs: a new `event=` needs a row there.
#[test]
fn operations_guide_lists_every_log_event() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let guide = std::fs::read_to_string(guide).unwrap();
    let table = guide
        .split("## Log events")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            documented.insert(name.to_string());
        }
    }
    let logged = logged_events();
    let missing: Vec<_> = logged.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&logged).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/operations.md \"Log events\": add rows for {missing:?}, remove rows for {stale:?}"
    );
}
