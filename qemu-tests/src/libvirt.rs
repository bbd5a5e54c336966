// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A real libvirt (12.9 from trixie-backports) for the tests, without
//! systemd: [`Libvirtd::start`] runs libvirtd and virtlogd from the cached
//! chroot `.cache/libvirt-root` (built by `setup/libvirt.sh`) in mount, PID
//! and network namespaces of their own (`setup/libvirt-ns.sh`), with a
//! fresh `/etc/libvirt`, `/var/lib/libvirt` and `/var/log/libvirt` in a
//! temporary directory. [`Libvirtd::virsh`] runs the chroot's `virsh`
//! against it; [`Libvirtd::start_guest`] starts a defined domain and gives
//! back a [`Guest`] driven over the domain's serial console.
//!
//! The host's `/tmp` is the chroot's `/tmp`, so sockets, images and
//! kernels under `/tmp` have the same path for the test, the daemon and
//! QEMU. QEMU runs as Debian's `libvirt-qemu` (group `kvm` of the chroot):
//! what it opens must be reachable for that user, as on a real host.
//! Dropping the [`Libvirtd`] kills every process in its namespaces (QEMU
//! included). Each libvirtd has cgroups of its own
//! ([`crate::host_cgroups`]), as a host would.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::GuestConfig;
use crate::daemon::binary;
use crate::error::{Error, Result};
use crate::guest::{unique_log_path_for, Guest};
use crate::host_cgroups::HostCgroups;
use crate::process::{spawn_tied, wait_for_unix_listener, ChildGuard};
use crate::setup;

/// The console relay's binary name (`src/bin/vpasid-console-relay.rs`).
pub const CONSOLE_RELAY_BIN: &str = "vpasid-console-relay";

/// How long libvirtd may take to answer after its start (about a second
/// here; generous for a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound on one `virsh` call.
const VIRSH_TIMEOUT_S: u32 = 120;

/// How long the console relay may take to listen.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// The chroot holding libvirt and QEMU, `<repo>/.cache/libvirt-root`.
pub fn libvirt_root() -> PathBuf {
    setup::cache_dir().join("libvirt-root")
}

/// Runs, once per process, [`setup::ensure_setup`] and then
/// `setup/libvirt.sh` (the libvirt chroot and its capabilities cache).
pub fn ensure_libvirt_setup() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    setup::ensure_setup()?;
    DONE.get_or_init(|| {
        let script = setup::repo_root().join("qemu-tests/setup/libvirt.sh");
        setup::run_script(&script, &[])
    })
    .clone()
    .map_err(Error::Setup)
}

/// The id of group `name` in the libvirt chroot's `/etc/group` (e.g.
/// `kvm`, QEMU's group there, which the host may not have).
pub fn chroot_group_id(name: &str) -> Result<u32> {
    let path = libvirt_root().join("etc/group");
    let text = fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    group_id_in(&text, name).ok_or_else(|| Error::UnexpectedOutput {
        what: format!("group {name} in {}", path.display()),
        output: text.clone(),
    })
}

/// The id of group `name` in `group`, the text of an `/etc/group`.
fn group_id_in(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let mut fields = line.split(':');
        let group = fields.next()?;
        let gid = fields.nth(1)?;
        (group == name).then(|| gid.parse().ok()).flatten()
    })
}

/// A running libvirtd. Dropping it kills it, its virtlogd and its QEMUs.
#[derive(Debug)]
pub struct Libvirtd {
    child: ChildGuard,
    /// Unshare's child: PID 1 of the namespaces, whose mount namespace
    /// `virsh` enters.
    ns_pid: u32,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    /// The URI `virsh` connects with (`qemu:///system`, or with the
    /// socket of a second host's libvirtd).
    uri: String,
    /// Its cgroups, removed after its namespaces are killed (last field).
    _cgroups: HostCgroups,
}

/// libvirtd's settings that make it a host of its own next to another
/// libvirtd on the machine (see [`Libvirtd::start_other_host`]).
#[derive(Debug, Clone)]
struct OtherHost {
    /// `host_uuid`: libvirt refuses a migration to a host with its own.
    host_uuid: String,
}

impl Libvirtd {
    /// Runs the set-up ([`ensure_libvirt_setup`]), starts libvirtd and
    /// waits until `virsh` reaches it. Its state and the test's files go
    /// in a fresh `/tmp/vpasid-libvirt-*` directory ([`Libvirtd::dir`],
    /// mode 0711 so that QEMU reaches what the test opens up in it).
    pub fn start() -> Result<Libvirtd> {
        Libvirtd::start_as(None)
    }

    /// Like [`Libvirtd::start`], for a second libvirtd standing for
    /// another host (a migration's destination): its own `host_uuid`
    /// (libvirt refuses to migrate to a host with the source's), and its
    /// sockets in `DIR/run` instead of its namespace's `/run`, so that the
    /// first libvirtd reaches it at [`Libvirtd::uri`] (`virsh migrate
    /// --p2p`). `virsh` and [`Libvirtd::sh`] use that URI.
    pub fn start_other_host() -> Result<Libvirtd> {
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|e| Error::io("reading a random UUID", e))?;
        Libvirtd::start_as(Some(OtherHost {
            host_uuid: uuid.trim().to_string(),
        }))
    }

    fn start_as(other: Option<OtherHost>) -> Result<Libvirtd> {
        ensure_libvirt_setup()?;
        let dir = tempfile::Builder::new()
            .prefix("vpasid-libvirt-")
            .tempdir_in("/tmp")
            .map_err(|e| Error::io("creating libvirtd's directory", e))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(format!("chmod {}", dir.path().display()), e))?;
        let state = dir.path().join("libvirt");
        fs::create_dir(&state)
            .map_err(|e| Error::io(format!("creating {}", state.display()), e))?;

        let mut uri = "qemu:///system".to_string();
        let mut conf = None;
        if let Some(other) = &other {
            let run = dir.path().join("run");
            fs::create_dir(&run)
                .map_err(|e| Error::io(format!("creating {}", run.display()), e))?;
            fs::set_permissions(&run, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("chmod {}", run.display()), e))?;
            let path = dir.path().join("libvirtd.conf.extra");
            fs::write(
                &path,
                format!(
                    "host_uuid = \"{}\"\nunix_sock_dir = \"{}\"\n",
                    other.host_uuid,
                    run.display()
                ),
            )
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            uri = format!("qemu:///system?socket={}/libvirt-sock", run.display());
            conf = Some(path);
        }

        let log_path = unique_log_path_for(None, "libvirtd")?;
        let log = File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let cgroups =
            HostCgroups::create(&dir.path().file_name().unwrap_or_default().to_string_lossy())?;
        let cgroup_dirs: Vec<String> = cgroups
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "-p",
            "-n",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "sh",
        ])
        .arg(setup::repo_root().join("qemu-tests/setup/libvirt-ns.sh"))
        .arg(libvirt_root())
        .arg(&state)
        .args(conf.iter())
        .env("VPASID_CGROUPS", cgroup_dirs.join(" "))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
        let mut child = ChildGuard::spawn("libvirtd", cmd)?;
        let unshare = child.id();
        let started = Instant::now();
        let ns_pid = loop {
            let children = format!("/proc/{unshare}/task/{unshare}/children");
            let found = fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            if let Some(pid) = found {
                break pid;
            }
            if !child.is_running() || started.elapsed() > START_TIMEOUT {
                return Err(Error::Libvirt {
                    what: "starting libvirtd".into(),
                    detail: "its namespace never came up".into(),
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let libvirtd = Libvirtd {
            child,
            ns_pid,
            dir,
            log_path,
            uri,
            _cgroups: cgroups,
        };
        libvirtd.wait_answering(started)?;
        Ok(libvirtd)
    }

    fn wait_answering(&self, started: Instant) -> Result<()> {
        loop {
            match self.virsh(&["version"]) {
                Ok(out) if out.contains("Running hypervisor: QEMU") => return Ok(()),
                Ok(out) => {
                    return Err(self.error("virsh version", format!("no QEMU driver: {out}")))
                }
                Err(e) if started.elapsed() > START_TIMEOUT => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The directory of this instance's state (`libvirt/`) and of the
    /// test's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URI `virsh` reaches this libvirtd with: `qemu:///system`, or,
    /// for [`Libvirtd::start_other_host`], with its socket under `/tmp`
    /// (`qemu+unix:///system?socket=...` from another libvirtd).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// libvirtd's own log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// What libvirt logged for domain `name` (QEMU's command line and
    /// stderr): `/var/log/libvirt/qemu/NAME.log`.
    pub fn qemu_log(&self, name: &str) -> String {
        fs::read_to_string(self.dir().join(format!("libvirt/log/qemu/{name}.log")))
            .unwrap_or_default()
    }

    /// `virsh -c URI ARGS` (see [`Libvirtd::uri`]) in libvirtd's namespace, as a
    /// command to spawn (e.g. `qemu-monitor-event --loop`).
    pub fn virsh_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.ns_pid.to_string())
            .args(["-m", "--", "chroot"])
            .arg(libvirt_root())
            .args(["virsh", "-c", &self.uri])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `virsh ARGS` (bounded by 120 s) and returns its stdout; a
    /// failure is an error with virsh's message.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let what = format!("virsh {}", args.join(" "));
        let mut cmd = Command::new("timeout");
        let virsh = self.virsh_command(args);
        cmd.arg(VIRSH_TIMEOUT_S.to_string())
            .arg(virsh.get_program())
            .args(virsh.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = spawn_tied(cmd)
            .and_then(|child| child.wait_with_output())
            .map_err(|e| Error::io(format!("running {what}"), e))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = format!("{} without a message", out.status);
        }
        Err(self.error(&what, detail))
    }

    /// Runs the shell script `script` with `sh -c` in the chroot, in
    /// libvirtd's namespace, as root there (`virsh` then reaches this
    /// libvirtd by default: `LIBVIRT_DEFAULT_URI` is [`Libvirtd::uri`]), bounded by 120 s; returns its stdout, or an
    /// error with its status and stderr.
    pub fn sh(&self, script: &str) -> Result<String> {
        let mut cmd = Command::new("timeout");
        cmd.arg(VIRSH_TIMEOUT_S.to_string())
            .arg("nsenter")
            .arg("-t")
            .arg(self.ns_pid.to_string())
            .args(["-m", "--", "chroot"])
            .arg(libvirt_root())
            .args(["sh", "-c", script])
            .env("LIBVIRT_DEFAULT_URI", &self.uri)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = spawn_tied(cmd)
            .and_then(|child| child.wait_with_output())
            .map_err(|e| Error::io("running a shell script in the libvirt chroot", e))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        Err(self.error(
            &format!("sh -c {script:?}"),
            format!(
                "{}: {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }

    /// Runs `qemu-img ARGS` from the chroot in libvirtd's namespace (for
    /// the domain's disk image).
    pub fn qemu_img(&self, args: &[&str]) -> Result<()> {
        let what = format!("qemu-img {}", args.join(" "));
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.ns_pid.to_string())
            .args(["-m", "--", "chroot"])
            .arg(libvirt_root())
            .arg("qemu-img")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {what}"), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.error(&what, String::from_utf8_lossy(&out.stderr).trim().into()))
        }
    }

    /// Starts the defined domain `domain` (`virsh start`), whose serial
    /// console is `<serial type='unix'><source mode='connect'
    /// path='CONSOLE'/>`, and returns it as a [`Guest`] once its shell is
    /// ready. The guest's console log has the relay's notes; QEMU's own
    /// messages are in [`Libvirtd::qemu_log`]. The console follows the
    /// domain across `virsh save` and `virsh restore`, so the relay, which
    /// [`Guest`] sees as its QEMU, runs until the guest is dropped: end the
    /// domain with `virsh destroy` (or `shutdown`), not
    /// [`Guest::poweroff`]. Dropping the guest ends the relay, not the
    /// domain.
    pub fn start_guest(&self, config: GuestConfig, domain: &str, console: &Path) -> Result<Guest> {
        let relay = binary(CONSOLE_RELAY_BIN)?;
        let mut cmd = Command::new(&relay);
        cmd.arg(console);
        let note = format!(
            "guest {} ({}): libvirt domain {domain}, console {} via {}",
            config.name,
            config.kernel,
            console.display(),
            relay.display()
        );
        let result = Guest::spawn(config, cmd, &note, || {
            wait_for_unix_listener(console, RELAY_TIMEOUT)?;
            self.virsh(&["start", domain]).map(drop)
        });
        result.map_err(|e| match e {
            Error::GuestExited { what, status, log } => Error::GuestExited {
                what,
                status: format!("{status}; libvirt's log: {}", self.qemu_log_tail(domain)),
                log,
            },
            other => other,
        })
    }

    fn qemu_log_tail(&self, domain: &str) -> String {
        let log = self.qemu_log(domain);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn error(&self, what: &str, detail: String) -> Error {
        Error::Libvirt {
            what: what.to_string(),
            detail,
            log: self.log_path.clone(),
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // unshare --kill-child: its death kills the namespace's PID 1, and
        // with it every process in the namespace.
        let _ = self.child.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_come_from_the_named_line() {
        let group = "root:x:0:\nkvm:x:993:libvirt-qemu\nkvmx:x:5:\nbad:x:no:\n";
        assert_eq!(group_id_in(group, "kvm"), Some(993));
        assert_eq!(group_id_in(group, "root"), Some(0));
        assert_eq!(group_id_in(group, "kv"), None);
        assert_eq!(group_id_in(group, "bad"), None);
        assert_eq!(group_id_in(group, "libvirt-qemu"), None);
    }
}
