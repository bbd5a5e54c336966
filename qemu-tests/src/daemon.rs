// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-user-pasid` daemon for a scenario: started from
//! `target/release/` on sockets in a fresh temporary directory, its log
//! (stderr) written to `target/qemu-tests-logs/<test>-daemon.log`, queried
//! with the real `pasidctl`, and killed when dropped.
//!
//! The binaries are built before the tests run (`cargo build --release
//! --bins`); the tests never run cargo, which holds the target directory's
//! lock while they run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::guest::unique_log_path_for;
use crate::process::{wait_for_unix_listener, ChildGuard};
use crate::setup;

/// The daemon's binary name.
pub const DAEMON_BIN: &str = "vhost-user-pasid";

/// The control client's binary name.
pub const PASIDCTL_BIN: &str = "pasidctl";

/// Overrides the directory holding both binaries (default
/// `<target>/release`).
pub const BIN_DIR_ENV: &str = "VPASID_BIN_DIR";

/// How long the daemon may take to listen on all its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one `pasidctl` call may take: `reattach`, `detach` and
/// `attach` wait for the guest (the tests give them `--timeout 60`).
const PASIDCTL_TIMEOUT: Duration = Duration::from_secs(90);

/// How long `stop` waits for the daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often log and start-up waits poll.
const POLL: Duration = Duration::from_millis(50);

/// How much of the log an error quotes.
const LOG_TAIL: usize = 1500;

/// The directory holding `vhost-user-pasid` and `pasidctl`:
/// `$VPASID_BIN_DIR`, else `<target>/release` (`$CARGO_TARGET_DIR` or
/// `<repo>/target`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    // log_dir() is `<target>/qemu-tests-logs`.
    let logs = setup::log_dir();
    logs.parent()
        .map_or_else(|| setup::repo_root().join("target"), Path::to_path_buf)
        .join("release")
}

/// The path of the built binary `name`, or [`Error::MissingBinary`].
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary { path })
    }
}

/// One `--vm NAME=PATH[,quota=N][,range=LO-HI][,lease=N][,holdover=S]` slot of the
/// daemon; the socket path is chosen by [`Daemon::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSlot {
    /// The VM's name on the host.
    pub name: String,
    /// Its quota (`None`: the daemon's default).
    pub quota: Option<u32>,
    /// The PASIDs it may be given (`None`: the daemon's default).
    pub range: Option<(u32, u32)>,
    /// Its lease cap, 0 = leases off (`None`: the daemon's `--lease`).
    pub lease: Option<u32>,
    /// Seconds its PASIDs stay reserved after it disconnects (`None`: the
    /// daemon's `--holdover`).
    pub holdover: Option<u32>,
}

impl VmSlot {
    /// A slot `name` with the daemon's default quota and range.
    pub fn new(name: impl Into<String>) -> Self {
        VmSlot {
            name: name.into(),
            quota: None,
            range: None,
            lease: None,
            holdover: None,
        }
    }

    /// Sets the slot's quota.
    pub fn quota(mut self, quota: u32) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Sets the slot's PASID range.
    pub fn range(mut self, lo: u32, hi: u32) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// Sets the slot's lease cap (`lease=N`; 0 turns leases off for it).
    pub fn lease(mut self, cap: u32) -> Self {
        self.lease = Some(cap);
        self
    }

    /// Sets the slot's hold-over period (`holdover=SECONDS`).
    pub fn holdover(mut self, seconds: u32) -> Self {
        self.holdover = Some(seconds);
        self
    }

    fn spec(&self, socket: &Path) -> String {
        let mut spec = format!("{}={}", self.name, socket.display());
        if let Some(quota) = self.quota {
            spec.push_str(&format!(",quota={quota}"));
        }
        if let Some((lo, hi)) = self.range {
            spec.push_str(&format!(",range={lo}-{hi}"));
        }
        if let Some(cap) = self.lease {
            spec.push_str(&format!(",lease={cap}"));
        }
        if let Some(seconds) = self.holdover {
            spec.push_str(&format!(",holdover={seconds}"));
        }
        spec
    }
}

/// How to start a [`Daemon`].
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// The VM slots.
    pub vms: Vec<VmSlot>,
    /// Extra daemon arguments (e.g. `--pasid-bits 16`), after the slots.
    pub extra_args: Vec<String>,
    /// Test name for the log file (default: the current thread's name).
    pub test_name: Option<String>,
    /// `--state-dir DIR` (durable PASID space); a relative path is taken
    /// inside the daemon's temporary directory (`None`: no state
    /// directory, nothing survives a restart).
    pub state_dir: Option<PathBuf>,
}

impl DaemonConfig {
    /// A daemon without slots yet.
    pub fn new() -> Self {
        DaemonConfig::default()
    }

    /// Adds a VM slot.
    pub fn vm(mut self, slot: VmSlot) -> Self {
        self.vms.push(slot);
        self
    }

    /// Sets the daemon's default lease cap (`--lease N`; 0 turns leases
    /// off for every slot without its own `lease=`).
    pub fn lease(self, cap: u32) -> Self {
        self.arg("--lease").arg(cap.to_string())
    }

    /// Sets the daemon's default hold-over period (`--holdover SECONDS`).
    pub fn holdover(self, seconds: u32) -> Self {
        self.arg("--holdover").arg(seconds.to_string())
    }

    /// Appends a daemon argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Sets the test name used for the log file.
    pub fn test_name(mut self, name: impl Into<String>) -> Self {
        self.test_name = Some(name.into());
        self
    }

    /// Makes the PASID space durable: `--state-dir DIR`, with a relative
    /// `dir` (e.g. `"state"`) inside the daemon's temporary directory, so
    /// that [`Daemon::restart`] finds it again.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

/// A holder of a PASID, as `pasidctl --json pasids` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HolderEntry {
    /// VM or host holder name.
    pub owner: String,
    /// `vm` or `host`.
    pub kind: String,
    /// References it holds.
    pub refs: u32,
}

/// One allocated PASID, as `pasidctl --json pasids` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PasidEntry {
    /// The PASID.
    pub pasid: u32,
    /// References over all holders.
    pub total_refs: u32,
    /// Who holds it.
    pub holders: Vec<HolderEntry>,
}

/// A VM slot's counters, as `pasidctl --json vms` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct VmCounters {
    /// Requests answered, by opcode (`ALLOC`, `FREE`, `RESET`, `GRANT`,
    /// `RETURN`).
    #[serde(default)]
    pub requests: BTreeMap<String, u64>,
    /// Responses sent, by status (`OK`, `QUOTA_EXCEEDED`, ...).
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
    /// Malformed chains.
    #[serde(default)]
    pub malformed: u64,
    /// References reclaimed (RESET, disconnect, operator release).
    #[serde(default)]
    pub reclaimed: u64,
    /// Times the slot was connected.
    #[serde(default)]
    pub connects: u64,
}

impl VmCounters {
    /// Requests with opcode `op` answered (0 if none).
    pub fn request(&self, op: &str) -> u64 {
        self.requests.get(op).copied().unwrap_or(0)
    }

    /// Requests answered over all opcodes.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Responses with status `status` sent (0 if none).
    pub fn status(&self, status: &str) -> u64 {
        self.statuses.get(status).copied().unwrap_or(0)
    }
}

/// One VM slot, as `pasidctl --json vms` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmEntry {
    /// Slot name.
    pub name: String,
    /// Its socket.
    pub socket: String,
    /// Whether a frontend is connected.
    pub connected: bool,
    /// PASIDs it holds (in use by the guest or cached by its driver).
    pub held: u32,
    /// Of those, the ones the driver last reported cached (not handed out).
    pub cached: u32,
    /// `held - cached`: the ones the guest has handed out.
    pub in_use: u32,
    /// Its lease cap (0: leases off).
    pub lease: u32,
    /// Its quota.
    pub quota: u32,
    /// Lowest PASID it may be given.
    pub range_start: u32,
    /// Highest PASID it may be given.
    pub range_end: u32,
    /// Its counters.
    #[serde(default)]
    pub counters: VmCounters,
}

/// A running `vhost-user-pasid`. Dropping it kills the daemon (`SIGKILL`)
/// and removes its socket directory; its log stays.
#[derive(Debug)]
pub struct Daemon {
    child: ChildGuard,
    /// Holds the sockets; removed on drop.
    dir: tempfile::TempDir,
    control: PathBuf,
    sockets: Vec<(String, PathBuf)>,
    log_path: PathBuf,
    command_line: String,
    /// The binary and its arguments, for [`Daemon::restart`].
    bin: PathBuf,
    args: Vec<String>,
    /// `--state-dir`, if given.
    state_dir: Option<PathBuf>,
    /// Times [`Daemon::restart`] started it again.
    restarts: u32,
}

impl Daemon {
    /// Starts the daemon with `config`'s slots, each on `<tmp>/<NAME>.sock`
    /// and the control socket on `<tmp>/control.sock`, and waits until all
    /// of them listen. `RUST_LOG` is passed through (default `info`).
    pub fn start(config: DaemonConfig) -> Result<Daemon> {
        let daemon_bin = binary(DAEMON_BIN)?;
        binary(PASIDCTL_BIN)?;
        let dir = tempfile::Builder::new()
            .prefix("vpasid-")
            .tempdir()
            .map_err(|e| Error::io("creating the daemon's socket directory", e))?;
        let control = dir.path().join("control.sock");
        let sockets: Vec<(String, PathBuf)> = config
            .vms
            .iter()
            .map(|vm| {
                (
                    vm.name.clone(),
                    dir.path().join(format!("{}.sock", vm.name)),
                )
            })
            .collect();

        let mut args = Vec::new();
        for (vm, (_, socket)) in config.vms.iter().zip(&sockets) {
            args.push("--vm".to_string());
            args.push(vm.spec(socket));
        }
        args.extend(config.extra_args.iter().cloned());
        args.push("--control-socket".into());
        args.push(control.display().to_string());
        let state_dir = match &config.state_dir {
            Some(state) => {
                // The daemon creates it (mode 0700) if missing.
                let state = dir.path().join(state);
                args.push("--state-dir".into());
                args.push(state.display().to_string());
                Some(state)
            }
            None => None,
        };
        let command_line = format!("{} {}", daemon_bin.display(), args.join(" "));

        let log_path = unique_log_path_for(config.test_name.as_deref(), "daemon")?;
        let log = File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let child = spawn_daemon(&daemon_bin, &args, &log_path, log)?;
        let mut daemon = Daemon {
            child,
            dir,
            control,
            sockets,
            log_path,
            command_line,
            bin: daemon_bin,
            args,
            state_dir,
            restarts: 0,
        };
        daemon.wait_listening()?;
        Ok(daemon)
    }

    /// Starts the daemon again with the same command line: the same
    /// sockets, control socket and state directory (the daemon replaces
    /// the stale socket files). A daemon that still runs is killed first
    /// (`SIGKILL`, a crash); use [`Daemon::stop`] before for a clean stop.
    /// Its log goes on in the same file after a `>>> restart N` line, so
    /// marks from [`Daemon::log_mark`] stay valid. Waits until all sockets
    /// listen.
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill()?;
        self.restarts += 1;
        let mut log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::io(format!("opening {}", self.log_path.display()), e))?;
        writeln!(log, ">>> restart {}: {}", self.restarts, self.command_line)
            .map_err(|e| Error::io(format!("writing {}", self.log_path.display()), e))?;
        self.child = spawn_daemon(&self.bin, &self.args, &self.log_path, log)?;
        self.wait_listening()
    }

    /// Times [`Daemon::restart`] started the daemon again.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The `--state-dir` directory, if the daemon has one.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Waits for every socket to listen; fails at once if the daemon exits.
    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let paths: Vec<PathBuf> = self
            .sockets
            .iter()
            .map(|(_, p)| p.clone())
            .chain(std::iter::once(self.control.clone()))
            .collect();
        for path in paths {
            loop {
                if let Some(status) = self.child.try_wait()? {
                    return Err(self.error(
                        "starting vhost-user-pasid",
                        format!(
                            "it exited ({status}) before listening on {}",
                            path.display()
                        ),
                    ));
                }
                if wait_for_unix_listener(&path, POLL).is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(self.error(
                        "starting vhost-user-pasid",
                        format!("no listener on {} after {START_TIMEOUT:?}", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The daemon's command line.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// The directory holding the sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control socket.
    pub fn control_socket(&self) -> &Path {
        &self.control
    }

    /// The vhost-user socket of VM slot `vm`.
    pub fn socket(&self, vm: &str) -> Result<PathBuf> {
        self.sockets
            .iter()
            .find(|(name, _)| name == vm)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| self.error("looking up a VM socket", format!("no VM slot {vm:?}")))
    }

    /// Where the daemon's log is.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The log's current length, to wait for lines written after now with
    /// [`Daemon::wait_log_since`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Waits up to `timeout` for a log line containing `needle` (anywhere
    /// in the log) and returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_log_since(0, needle, timeout)
    }

    /// Waits up to `timeout` for a log line containing `needle` after byte
    /// `mark` of the log (see [`Daemon::log_mark`]) and returns it.
    pub fn wait_log_since(&self, mark: usize, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let tail = log.get(mark..).unwrap_or_default();
            if let Some(line) = tail.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if Instant::now() >= deadline {
                return Err(self.error(
                    format!("waiting {timeout:?} for `{needle}` in the daemon log"),
                    "not found".into(),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Runs `pasidctl --socket CONTROL ARGS...` and returns its stdout
    /// (e.g. the human tables of `pasids`, `vms`, `stats`).
    pub fn pasidctl(&self, args: &[&str]) -> Result<String> {
        let bin = binary(PASIDCTL_BIN)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket").arg(&self.control).args(args);
        let what = format!("pasidctl {}", args.join(" "));
        let (status, stdout, stderr) = run_bounded(&what, cmd, PASIDCTL_TIMEOUT)?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(self.error(what, format!("{status}: {}", stderr.trim())))
        }
    }

    /// Runs `pasidctl --socket CONTROL ARGS...` and returns its exit code
    /// (`None`: killed by a signal), stdout and stderr, whatever the
    /// status: for the tests of a refusal's status and message.
    pub fn pasidctl_status(&self, args: &[&str]) -> Result<(Option<i32>, String, String)> {
        let bin = binary(PASIDCTL_BIN)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket").arg(&self.control).args(args);
        let what = format!("pasidctl {}", args.join(" "));
        let (status, stdout, stderr) = run_bounded(&what, cmd, PASIDCTL_TIMEOUT)?;
        Ok((status.code(), stdout, stderr))
    }

    /// Runs `pasidctl --json ARGS...` and parses its output.
    pub fn pasidctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.pasidctl(&all)?;
        serde_json::from_str(&out).map_err(|e| {
            self.error(
                format!("parsing `pasidctl {}`", all.join(" ")),
                format!("{e}: {out}"),
            )
        })
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let value = self.pasidctl_json(args)?;
        serde_json::from_value(value.clone()).map_err(|e| {
            self.error(
                format!("decoding `pasidctl --json {}`", args.join(" ")),
                format!("{e}: {value}"),
            )
        })
    }

    /// Every allocated PASID (`pasidctl --json pasids`).
    pub fn pasids(&self) -> Result<Vec<PasidEntry>> {
        self.typed(&["pasids"])
    }

    /// Every VM slot (`pasidctl --json vms`).
    pub fn vms(&self) -> Result<Vec<VmEntry>> {
        self.typed(&["vms"])
    }

    /// Slot `name` of `pasidctl --json vms`.
    pub fn vm(&self, name: &str) -> Result<VmEntry> {
        self.vms()?
            .into_iter()
            .find(|vm| vm.name == name)
            .ok_or_else(|| self.error("pasidctl vms", format!("no VM {name:?} listed")))
    }

    /// Whole-host figures (`pasidctl --json stats`).
    pub fn stats(&self) -> Result<serde_json::Value> {
        self.pasidctl_json(&["stats"])
    }

    /// The PASIDs on which VM `vm` holds a reference, per `pasidctl`.
    pub fn vm_pasids(&self, vm: &str) -> Result<BTreeSet<u32>> {
        Ok(self
            .pasids()?
            .into_iter()
            .filter(|p| p.holders.iter().any(|h| h.kind == "vm" && h.owner == vm))
            .map(|p| p.pasid)
            .collect())
    }

    /// Kills the daemon with `SIGKILL` (a crash: nothing is cleaned up).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.child.kill()
    }

    /// Stops the daemon with `SIGTERM` and checks that it exits with 0.
    pub fn stop(&mut self) -> Result<()> {
        self.child.signal(libc::SIGTERM)?;
        let status = self.child.wait_timeout(STOP_TIMEOUT)?;
        if status.success() {
            Ok(())
        } else {
            Err(self.error("stopping vhost-user-pasid with SIGTERM", status.to_string()))
        }
    }

    /// An [`Error::Daemon`] quoting the log's tail.
    fn error(&self, what: impl Into<String>, detail: String) -> Error {
        let log = self.log();
        let start = log.char_indices().rev().nth(LOG_TAIL).map_or(0, |(i, _)| i);
        let tail = log[start..].trim();
        let detail = if tail.is_empty() {
            detail
        } else {
            format!("{detail}; log tail:\n{tail}")
        };
        Error::Daemon {
            what: what.into(),
            detail,
            log: self.log_path.clone(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("vhost-user-pasid: log at {}", self.log_path.display());
        }
        // ChildGuard's drop kills and reaps it; the TempDir goes after.
    }
}

/// Spawns the daemon `bin ARGS...` with stdout and stderr going to `log`
/// (the open file at `log_path`) and `RUST_LOG` passed through (default
/// `info`).
fn spawn_daemon(bin: &Path, args: &[String], log_path: &Path, log: File) -> Result<ChildGuard> {
    let log_err = log
        .try_clone()
        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    ChildGuard::spawn(DAEMON_BIN, cmd)
}

/// Runs `cmd` for at most `timeout`; returns its status, stdout and stderr.
fn run_bounded(
    what: &str,
    mut cmd: Command,
    timeout: Duration,
) -> Result<(ExitStatus, String, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(what, cmd)?;
    let readers: Vec<_> = [
        child
            .child_mut()
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .child_mut()
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|stream| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stream) = stream {
                // A read error leaves what was read; the status tells more.
                let _ = stream.read_to_string(&mut text);
            }
            text
        })
    })
    .collect();
    // On timeout the guard's drop kills the child, which ends the readers.
    let status = child.wait_timeout(timeout);
    drop(child);
    let mut texts = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let stdout = texts.next().unwrap_or_default();
    let stderr = texts.next().unwrap_or_default();
    Ok((status?, stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_specs() {
        let sock = Path::new("/tmp/x/vm0.sock");
        assert_eq!(VmSlot::new("vm0").spec(sock), "vm0=/tmp/x/vm0.sock");
        assert_eq!(
            VmSlot::new("vm0").quota(3).range(64, 4095).spec(sock),
            "vm0=/tmp/x/vm0.sock,quota=3,range=64-4095"
        );
        assert_eq!(
            VmSlot::new("vm0").lease(0).spec(sock),
            "vm0=/tmp/x/vm0.sock,lease=0"
        );
    }

    #[test]
    fn pasidctl_json_decodes() {
        let pasids: Vec<PasidEntry> = serde_json::from_str(
            r#"[{"pasid":100,"total_refs":1,"holders":[{"owner":"vm0","kind":"vm","refs":1}]}]"#,
        )
        .unwrap();
        assert_eq!(pasids[0].holders[0].owner, "vm0");
        let vms: Vec<VmEntry> = serde_json::from_str(
            r#"[{"name":"vm0","socket":"/s","connected":true,"held":3,"cached":1,
                "in_use":2,"lease":32,"quota":3,"range_start":1,"range_end":1048575,
                "counters":{"requests":{"ALLOC":4,"GRANT":2},"statuses":{"OK":3,"QUOTA_EXCEEDED":1},
                            "malformed":0,"reclaimed":0,"connects":1}}]"#,
        )
        .unwrap();
        assert_eq!(vms[0].counters.status("QUOTA_EXCEEDED"), 1);
        assert_eq!(vms[0].counters.request("FREE"), 0);
        assert_eq!(vms[0].counters.total_requests(), 6);
        assert_eq!((vms[0].cached, vms[0].in_use, vms[0].lease), (1, 2, 32));
    }

    #[test]
    fn bounded_run_times_out() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let started = Instant::now();
        assert!(run_bounded("sleep", cmd, Duration::from_millis(100)).is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
