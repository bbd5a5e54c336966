// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `pasidctl`: the operator's view of a running `vhost-user-pasid`.
//!
//! Talks to the daemon's control socket, waiting at most
//! [`DAEMON_TIMEOUT`] for an answer. Prints tables for people (one
//! [`Table`] renderer, columns sized to their content) and, with `--json`,
//! the daemon's JSON for machines. Each reply is read as the command's own
//! result type from `vhost_user_pasid::control_protocol`, the types the
//! daemon writes it from, so a reply of the wrong shape is an error, not a
//! blank cell. Any error is one line on stderr naming
//! its cause and exit status 1; a closed stdout ends quietly with status 0.
//! The command line itself is
//! `vhost_user_pasid::ctl_cli`, where the man page generator reads it too.

// It parses what the daemon sends: no unchecked indexing outside tests.
#![deny(clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vhost_user_pasid::control_protocol::{
    ConflictEntry, ControlReply, ControlRequest, DetachResult, DeviceSpec, ExportResult, GetResult,
    PasidEntry, PutResult, QuotaResult, ReleaseResult, ReserveResult, StatsResult, VmEntry,
};
use vhost_user_pasid::ctl_cli::{Cli, Command, DAEMON_TIMEOUT};
use vhost_user_pasid::qmp::{Qmp, QmpError};
use vhost_user_pasid::reattach::{
    default_device, find_device, plug, replug, unplug, PluggedDevice, ReattachError,
};
use vhost_user_pasid::socket::MAX_SOCKET_PATH;

/// Errors of pasidctl, each naming its real cause.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error(
        "no daemon is listening on {} ({why}; is vhost-user-pasid running? try \
         --socket or PASIDCTL_SOCKET)",
        path.display()
    )]
    NoDaemon { path: PathBuf, why: &'static str },
    #[error(
        "permission denied on {}: the control socket is for root and the daemon's \
         user, and for members of the group given to its --control-group (read-only \
         commands); run with sudo or join that group",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error(
        "the daemon on {} did not answer within {} s (is it stopped or overloaded?)",
        path.display(),
        timeout.as_secs_f64()
    )]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon closed {} without answering", path.display())]
    Closed { path: PathBuf },
    #[error("daemon sent an unreadable reply: {0}")]
    Reply(#[from] serde_json::Error),
    #[error("daemon sent a success without a result")]
    NoResult,
    #[error("{0}")]
    Daemon(String),
    /// The daemon refused, naming each conflict.
    #[error("{0}")]
    Conflicts(String, Vec<ConflictEntry>),
    /// Writing our own output failed; a closed pipe is not an error.
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("the daemon serves no VM named {0:?} (pasidctl vms lists them)")]
    UnknownVm(String),
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("reattach: {0}")]
    Reattach(#[from] ReattachError),
    #[error(
        "the new device was plugged, but VM {vm} did not connect to the daemon within {} s \
         (is the daemon serving its socket?)",
        timeout.as_secs_f64()
    )]
    NotReconnected { vm: String, timeout: Duration },
    #[error(
        "VM {vm} is connected and holds {held} PASID(s), and its hold-over is 0: unplugging \
         its device would release them while the guest still uses them, and the daemon could \
         give them to other VMs before the guest reconciles. Give the VM a hold-over \
         (--vm {vm}=...,holdover=SECONDS or --holdover SECONDS, then restart the daemon) \
         and reattach, or pass --force to re-plug anyway"
    )]
    LiveReplugWouldRelease { vm: String, held: u32 },
    #[error(
        "the device was plugged, but VM {vm}'s driver sent neither RECONCILE nor RESET within \
         {} s (is the driver loaded in the guest? is the daemon serving {socket}?)",
        timeout.as_secs_f64()
    )]
    NoProbe {
        vm: String,
        socket: String,
        timeout: Duration,
    },
    #[error(
        "the daemon serves VM {vm} on {socket}, which QEMU cannot connect to by path: \
         give the VM's socket with --vm-socket"
    )]
    NoSocketPath { vm: String, socket: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadInput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not {what}: {source}", path.display())]
    BadInput {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "{} names no device (\"device\": null: an export taken before the VM's device was \
         detached); give attach the output of pasidctl detach --json",
        path.display()
    )]
    NoDeviceIn { path: PathBuf },
    /// A reservation refused for conflicts: each was printed already.
    #[error("{0}")]
    ReserveRefused(String),
    /// Any other failure of `reserve` (exit status 2).
    #[error("{0}")]
    ReserveFailed(Box<CtlError>),
}

/// Whether an I/O error means the peer did not answer in time.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The error for a failed step of a control call on `path`.
fn io_error(path: &Path, source: std::io::Error) -> CtlError {
    let path = path.to_path_buf();
    if timed_out(&source) {
        return CtlError::Timeout {
            path,
            timeout: DAEMON_TIMEOUT,
        };
    }
    match source.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::UnexpectedEof => CtlError::Closed { path },
        _ => CtlError::Io { path, source },
    }
}

/// Connects to the Unix socket `path`, waiting at most `timeout`.
///
/// `UnixStream::connect` can block without bound when the daemon is stuck
/// and its accept queue full. Linux bounds a Unix-socket connect by the
/// socket's send timeout (SO_SNDTIMEO), which can only be set before the
/// connect, hence the socket is made here.
fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, CtlError> {
    let failed = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => CtlError::NoDaemon {
            path: path.to_path_buf(),
            why: "the socket does not exist",
        },
        Some(libc::ECONNREFUSED) => CtlError::NoDaemon {
            path: path.to_path_buf(),
            why: "nothing accepts connections on the socket",
        },
        Some(libc::EACCES | libc::EPERM) => CtlError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ if timed_out(&source) => CtlError::Timeout {
            path: path.to_path_buf(),
            timeout,
        },
        _ => CtlError::Connect {
            path: path.to_path_buf(),
            source,
        },
    };
    let bytes = path.as_os_str().len();
    if bytes > MAX_SOCKET_PATH {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the path is {bytes} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}"),
        )));
    }
    let address = UnixAddr::new(path).map_err(|e| failed(e.into()))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.into()))?;
    let stream = UnixStream::from(fd);
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    nix::sys::socket::connect(stream.as_raw_fd(), &address).map_err(|e| failed(e.into()))?;
    Ok(stream)
}

/// Sends one command and reads its reply, within [`DAEMON_TIMEOUT`] from
/// connect to reply; `T` is the result type of the command.
fn call<T: DeserializeOwned>(socket: &Path, request: &ControlRequest) -> Result<T, CtlError> {
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    let mut stream = connect(socket, DAEMON_TIMEOUT)?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| io_error(socket, e))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| io_error(socket, e))?;
    let mut reply = String::new();
    let n = BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| io_error(socket, e))?;
    if n == 0 {
        return Err(CtlError::Closed {
            path: socket.to_path_buf(),
        });
    }
    let reply: ControlReply<T> = serde_json::from_str(&reply)?;
    if reply.ok {
        reply.result.ok_or(CtlError::NoResult)
    } else if !reply.conflicts.is_empty() {
        Err(CtlError::Conflicts(
            reply.error.unwrap_or_else(|| "refused".into()),
            reply.conflicts,
        ))
    } else {
        Err(CtlError::Daemon(
            reply.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}

/// Writes `text` to stdout now.
fn emit(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CtlError::Output)
}

/// A result as `--json` prints it: pretty, one value, then a newline.
fn json_text<T: Serialize>(result: &T) -> Result<String, CtlError> {
    Ok(format!("{}\n", serde_json::to_string_pretty(result)?))
}

/// A reply pasidctl prints: as people read it, or (`--json`) as the
/// daemon wrote it.
trait Show: Serialize {
    /// The text for people: a table or one line.
    fn text(&self) -> String;
}

/// `result` as `--json` asks: its JSON, or its text.
fn show<T: Show>(result: &T, json: bool) -> Result<String, CtlError> {
    if json {
        json_text(result)
    } else {
        Ok(result.text())
    }
}

/// Sends `request`, reads the reply as the command's own result type `T`
/// and prints it.
fn ask<T: Show + DeserializeOwned>(
    socket: &Path,
    request: &ControlRequest,
    json: bool,
) -> Result<(), CtlError> {
    emit(&show(&call::<T>(socket, request)?, json)?)
}

impl Show for Vec<PasidEntry> {
    fn text(&self) -> String {
        render_pasids(self)
    }
}

impl Show for Vec<VmEntry> {
    fn text(&self) -> String {
        render_vms(self)
    }
}

impl Show for StatsResult {
    fn text(&self) -> String {
        render_stats(self)
    }
}

/// The OpenMetrics text, printed as it is.
impl Show for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl Show for GetResult {
    fn text(&self) -> String {
        format!("PASID {} pinned ({} references)\n", self.pasid, self.refs)
    }
}

impl Show for PutResult {
    fn text(&self) -> String {
        let what = if self.freed {
            "freed"
        } else {
            "still referenced"
        };
        format!("PASID {} {what}\n", self.pasid)
    }
}

impl Show for ReleaseResult {
    fn text(&self) -> String {
        format!("VM {}: released {} references\n", self.vm, self.released)
    }
}

impl Show for QuotaResult {
    fn text(&self) -> String {
        format!("VM {}: quota {}\n", self.vm, self.quota)
    }
}

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table whose columns are as wide as their widest cell: every listing
/// of pasidctl is drawn with it.
#[derive(Debug)]
struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, header first, columns two spaces apart, no trailing
    /// spaces.
    fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([title.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.columns.iter().map(|(t, _)| t.to_string()).collect();
        let mut out = String::new();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((_, align), width)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn render_pasids(pasids: &[PasidEntry]) -> String {
    let mut table = Table::new(&[
        ("PASID", Align::Right),
        ("REFS", Align::Right),
        ("HOLDERS", Align::Left),
    ]);
    for p in pasids {
        let holders: Vec<String> = p
            .holders
            .iter()
            .map(|h| {
                let reserved = if h.reserved { ", reserved" } else { "" };
                format!("{} ({}{reserved}) x{}", h.owner, h.kind, h.refs)
            })
            .collect();
        table.row(vec![
            p.pasid.to_string(),
            p.total_refs.to_string(),
            holders.join(", "),
        ]);
    }
    format!("{}{} PASIDs allocated\n", table.render(), pasids.len())
}

/// "connected", "resumed 42s ago" (connected, its session taken over
/// from a previous daemon through systemd's descriptor store), "held-over
/// 12s" (disconnected, PASIDs kept for 12 s more), "reserved 290s"
/// (`pasidctl reserve`: kept for a VM that has not arrived yet) or "idle".
fn vm_state(vm: &VmEntry) -> String {
    if let (false, Some(secs)) = (vm.connected, vm.reserved_secs) {
        return format!("reserved {secs}s");
    }
    match (vm.connected, vm.held_over_secs) {
        (true, _) if vm.resumed_at.is_some() => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let ago = now.saturating_sub(vm.resumed_at.unwrap_or(now));
            format!("resumed {ago}s ago")
        }
        (true, _) => "connected".into(),
        (false, Some(secs)) => format!("held-over {secs}s"),
        (false, None) => "idle".into(),
    }
}

fn render_vms(vms: &[VmEntry]) -> String {
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("STATE", Align::Left),
        ("HELD", Align::Right),
        ("IN-USE", Align::Right),
        ("CACHED", Align::Right),
        ("QUOTA", Align::Right),
        ("RANGE", Align::Right),
        ("REQUESTS", Align::Right),
        ("MALFORMED", Align::Right),
        ("SOCKET", Align::Left),
    ]);
    for vm in vms {
        table.row(vec![
            vm.name.clone(),
            vm_state(vm),
            vm.held.to_string(),
            vm.in_use.to_string(),
            vm.cached.to_string(),
            vm.quota.to_string(),
            format!("{}-{}", vm.range_start, vm.range_end),
            count_sum(&vm.counters.requests, "").to_string(),
            vm.counters.malformed.to_string(),
            vm.socket.clone(),
        ]);
    }
    table.render()
}

fn render_stats(stats: &StatsResult) -> String {
    let space = &stats.space;
    // Named as in the JSON, in its (alphabetical) order, the space last.
    let figures = [
        ("connected_vms", stats.connected_vms.to_string()),
        ("malformed", stats.malformed.to_string()),
        ("reclaimed", stats.reclaimed.to_string()),
        ("requests", stats.requests.to_string()),
        ("space_id", stats.space_id.to_string()),
        ("vms", stats.vms.to_string()),
        ("space.allocated", space.allocated.to_string()),
        ("space.capacity", space.capacity.to_string()),
        ("space.owners", space.owners.to_string()),
        ("space.pasid_bits", space.pasid_bits.to_string()),
        ("space.reserved", space.reserved.to_string()),
        ("space.total_refs", space.total_refs.to_string()),
    ];
    let mut table = Table::new(&[("FIGURE", Align::Left), ("VALUE", Align::Right)]);
    for (name, value) in figures {
        table.row(vec![name.to_string(), value]);
    }
    table.render()
}

/// ANSI escape codes: cursor to the top left, then clear the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Longest sleep between checks for Ctrl-C while `watch` waits.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// Sum of counts by name, e.g. requests by opcode, but for `skip`.
fn count_sum(counts: &std::collections::BTreeMap<String, u64>, skip: &str) -> u64 {
    counts
        .iter()
        .filter(|(name, _)| name.as_str() != skip)
        .map(|(_, n)| n)
        .sum()
}

/// Wall-clock time of day in UTC, HH:MM:SS.
fn utc_time_of_day() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Percentage `part / whole`, or 0 for an empty whole.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    // Display only: precision loss above 2^52 does not matter.
    #[allow(clippy::cast_precision_loss)]
    let p = part as f64 * 100.0 / whole as f64;
    p
}

/// Request totals per VM at one refresh, for the REQ/S column.
struct Sample {
    at: Instant,
    requests: std::collections::BTreeMap<String, u64>,
}

/// One screen of `pasidctl watch`.
fn watch_frame(
    stats: &StatsResult,
    vms: &[VmEntry],
    refresh: u64,
    count: Option<u64>,
    interval: Duration,
    previous: Option<&Sample>,
    now: Instant,
) -> String {
    let space = &stats.space;
    let (allocated, capacity) = (space.allocated, space.capacity);
    let of = count.map_or(String::new(), |c| format!(" of {c}"));
    let mut out = format!(
        "pasidctl watch: every {}s, refresh {refresh}{of}, {} UTC (Ctrl-C to quit)\n",
        interval.as_secs_f64(),
        utc_time_of_day()
    );
    out += &format!(
        "space {:#x}: {} bits, {allocated} of {capacity} PASIDs allocated ({:.1}%), {} reserved\n",
        stats.space_id,
        space.pasid_bits,
        percent(allocated, capacity),
        space.reserved,
    );
    out += &format!(
        "VMs: {} configured, {} connected; {} requests, {} malformed, {} references reclaimed\n\n",
        stats.vms, stats.connected_vms, stats.requests, stats.malformed, stats.reclaimed,
    );
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("STATE", Align::Left),
        ("HELD", Align::Right),
        ("CACHED", Align::Right),
        ("QUOTA", Align::Right),
        ("USE%", Align::Right),
        ("REQ/S", Align::Right),
        ("FAILED", Align::Right),
        ("MALFORMED", Align::Right),
        ("RECLAIMED", Align::Right),
    ]);
    for vm in vms {
        let name = vm.name.clone();
        let requests = count_sum(&vm.counters.requests, "");
        let rate = previous
            .and_then(|p| {
                let before = p.requests.get(&name)?;
                let secs = now.duration_since(p.at).as_secs_f64();
                // Display only: precision loss above 2^52 does not matter.
                #[allow(clippy::cast_precision_loss)]
                let r = requests.saturating_sub(*before) as f64 / secs;
                (secs > 0.0).then(|| format!("{r:.1}"))
            })
            .unwrap_or_else(|| "-".into());
        let (held, quota) = (u64::from(vm.held), u64::from(vm.quota));
        table.row(vec![
            name,
            vm_state(vm),
            held.to_string(),
            vm.cached.to_string(),
            quota.to_string(),
            format!("{:.1}%", percent(held, quota)),
            rate,
            count_sum(&vm.counters.statuses, "OK").to_string(),
            vm.counters.malformed.to_string(),
            vm.counters.reclaimed.to_string(),
        ]);
    }
    out + &table.render()
}

/// How `watch` shows each refresh after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    /// Clear the terminal and draw the frame in place.
    Redraw,
    /// Print the frame after the last one, a blank line between: for a pipe
    /// or a file, where escape codes would only be noise.
    Append,
}

impl Refresh {
    /// Redraw only when stdout is a terminal.
    fn for_output(is_terminal: bool) -> Self {
        if is_terminal {
            Refresh::Redraw
        } else {
            Refresh::Append
        }
    }

    /// What goes before frame number `refresh` (1 for the first).
    fn prefix(self, refresh: u64) -> &'static str {
        match self {
            Refresh::Redraw => CLEAR_SCREEN,
            Refresh::Append if refresh > 1 => "\n",
            Refresh::Append => "",
        }
    }
}

/// One refresh of `watch --json`, keys in the order they have always had.
#[derive(Serialize)]
struct WatchFrame<'a> {
    refresh: u64,
    stats: &'a StatsResult,
    vms: &'a [VmEntry],
}

/// `pasidctl watch`: shows the VM table every `interval` until Ctrl-C,
/// SIGTERM or `count` refreshes.
fn watch(
    socket: &Path,
    json: bool,
    interval: Duration,
    count: Option<u64>,
) -> Result<(), CtlError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(CtlError::Signal)?;
    }
    let refresh_mode = Refresh::for_output(std::io::stdout().is_terminal());
    let mut previous: Option<Sample> = None;
    let mut refresh = 0u64;
    loop {
        let stats: StatsResult = call(socket, &ControlRequest::Stats {})?;
        let vms: Vec<VmEntry> = call(socket, &ControlRequest::Vms {})?;
        let now = Instant::now();
        refresh += 1;
        if json {
            let frame = WatchFrame {
                refresh,
                stats: &stats,
                vms: &vms,
            };
            emit(&format!("{}\n", serde_json::to_string(&frame)?))?;
        } else {
            let frame = watch_frame(
                &stats,
                &vms,
                refresh,
                count,
                interval,
                previous.as_ref(),
                now,
            );
            emit(&format!("{}{frame}", refresh_mode.prefix(refresh)))?;
        }
        previous = Some(Sample {
            at: now,
            requests: vms
                .iter()
                .map(|vm| (vm.name.clone(), count_sum(&vm.counters.requests, "")))
                .collect(),
        });
        if count.is_some_and(|c| refresh >= c) {
            return Ok(());
        }
        // Sleep in short steps so that Ctrl-C ends the wait at once.
        let deadline = now + interval;
        loop {
            if stop.load(Ordering::Relaxed) {
                // Leave the prompt on a line of its own after "^C".
                return emit("\n");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(WATCH_TICK));
        }
    }
}

/// Bound on each QMP command's answer (device_del's effect is awaited
/// separately, for `--timeout`).
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often reattach asks the daemon whether the VM connected.
const RECONNECT_POLL: Duration = Duration::from_millis(50);

/// What `pasidctl reattach` did.
#[derive(Serialize)]
struct ReattachReport {
    vm: String,
    device: String,
    chardev: String,
    unplug_ms: u128,
    plug_ms: u128,
    connect_ms: u128,
    held_before: u32,
    held_after: u32,
    /// What the guest's driver did with the new device: "reconcile" (it
    /// resumed with its PASIDs), "reset" (it released them), or "none"
    /// (neither within the timeout).
    guest: &'static str,
    /// Milliseconds from the connection to the driver's RECONCILE (LAST)
    /// or RESET.
    guest_ms: Option<u128>,
    /// PASIDs its RECONCILE named that someone else held.
    conflicts: u64,
}

impl Show for ReattachReport {
    fn text(&self) -> String {
        let guest = match (self.guest, self.guest_ms) {
            ("reconcile", Some(ms)) => format!(
                "guest resumed (RECONCILE) after {ms} ms, {} conflicts",
                self.conflicts
            ),
            ("reset", Some(ms)) => format!("guest reset the device (RESET) after {ms} ms"),
            _ => "guest sent neither RECONCILE nor RESET in time".to_string(),
        };
        format!(
            "VM {}: device {} re-plugged on chardev {} (unplug {} ms, plug {} ms, \
             connected after {} ms); {guest}; PASIDs held {} -> {}\n",
            self.vm,
            self.device,
            self.chardev,
            self.unplug_ms,
            self.plug_ms,
            self.connect_ms,
            self.held_before,
            self.held_after
        )
    }
}

/// How the guest's driver took up a re-plugged device, seen in its
/// counters: a completed reconcile, or a RESET.
fn guest_step(before: &VmEntry, now: &VmEntry) -> Option<&'static str> {
    let resets = |v: &VmEntry| v.counters.requests.get("RESET").copied().unwrap_or(0);
    if now.counters.resumes > before.counters.resumes {
        Some("reconcile")
    } else if resets(now) > resets(before) {
        Some("reset")
    } else {
        None
    }
}

/// The VM named `name` in the daemon's listing.
fn vm_entry(socket: &Path, name: &str) -> Result<VmEntry, CtlError> {
    let vms: Vec<VmEntry> = call(socket, &ControlRequest::Vms {})?;
    vms.into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| CtlError::UnknownVm(name.to_string()))
}

/// Re-plugs the VM's device through QMP and waits for it to connect.
fn reattach(
    socket: &Path,
    json: bool,
    vm: &str,
    qmp_socket: &Path,
    (timeout, force): (Duration, bool),
) -> Result<(), CtlError> {
    let before = vm_entry(socket, vm)?;
    // A live re-plug disconnects the VM: with no hold-over its PASIDs are
    // released at that moment, while the guest still has them in use.
    if before.connected && before.held > 0 && before.holdover_secs == 0 && !force {
        return Err(CtlError::LiveReplugWouldRelease {
            vm: vm.to_string(),
            held: before.held,
        });
    }
    let vm_socket = PathBuf::from(&before.socket);
    let mut qmp = Qmp::connect(qmp_socket, QMP_TIMEOUT)?;
    let device = find_device(&mut qmp, &vm_socket)?;
    let replugged = replug(&mut qmp, &device, &vm_socket, timeout)?;
    let started = Instant::now();
    loop {
        let now = vm_entry(socket, vm)?;
        if now.connected && now.counters.connects > before.counters.connects {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(CtlError::NotReconnected {
                vm: vm.to_string(),
                timeout,
            });
        }
        std::thread::sleep(RECONNECT_POLL);
    }
    let connect_ms = started.elapsed().as_millis();
    // The driver resumes (RECONCILE) or starts afresh (RESET) as it binds
    // the device; one without either is reported, not waited for forever.
    let connected = Instant::now();
    let (after, guest, guest_ms) = loop {
        let now = vm_entry(socket, vm)?;
        if let Some(step) = guest_step(&before, &now) {
            break (now, step, Some(connected.elapsed().as_millis()));
        }
        if started.elapsed() >= timeout {
            break (now, "none", None);
        }
        std::thread::sleep(RECONNECT_POLL);
    };
    let report = ReattachReport {
        vm: vm.to_string(),
        device: replugged.device.id,
        chardev: replugged.device.chardev,
        unplug_ms: replugged.unplug.as_millis(),
        plug_ms: replugged.plug.as_millis(),
        connect_ms,
        held_before: before.held,
        held_after: after.held,
        guest,
        guest_ms,
        conflicts: after
            .counters
            .conflicts
            .saturating_sub(before.counters.conflicts),
    };
    emit(&show(&report, json)?)
}

/// What `pasidctl detach` did.
#[derive(Serialize)]
struct DetachReport {
    vm: String,
    /// The device removed, as `attach --device` takes it back.
    device: DeviceSpec,
    /// From device_del to DEVICE_DELETED.
    unplug_ms: u128,
    /// PASIDs the VM holds on this daemon.
    held: u32,
    /// Seconds they are held over after the disconnect.
    hold_secs: u64,
    /// Whether the daemon saw the disconnect within the timeout.
    disconnected: bool,
}

impl Show for DetachReport {
    fn text(&self) -> String {
        let props = &self.device.properties;
        let prop = |name: &str| props.get(name).map(ToString::to_string);
        let place = match (prop("bus"), prop("addr")) {
            (Some(bus), Some(addr)) => format!(" on bus {bus} at addr {addr}"),
            (Some(bus), None) => format!(" on bus {bus}"),
            (None, Some(addr)) => format!(" at addr {addr}"),
            (None, None) => String::new(),
        };
        let after = if self.disconnected {
            format!(
                "its {} PASID(s) are held over for {} s on this daemon",
                self.held, self.hold_secs
            )
        } else {
            format!(
                "the daemon has not seen the disconnect yet; its {} PASID(s) will be held \
                 over for {} s",
                self.held, self.hold_secs
            )
        };
        format!(
            "VM {}: device {} ({}){place} removed with chardev {} (unplug {} ms); {after}\n",
            self.vm,
            self.device.id,
            self.device.driver,
            self.device.chardev.as_deref().unwrap_or("?"),
            self.unplug_ms,
        )
    }
}

/// Waits within `timeout` until `ready` holds for the VM's listing, and
/// returns the last listing and whether it did.
fn wait_vm(
    socket: &Path,
    vm: &str,
    timeout: Duration,
    ready: impl Fn(&VmEntry) -> bool,
) -> Result<(VmEntry, bool), CtlError> {
    let started = Instant::now();
    loop {
        let now = vm_entry(socket, vm)?;
        if ready(&now) {
            return Ok((now, true));
        }
        if started.elapsed() >= timeout {
            return Ok((now, false));
        }
        std::thread::sleep(RECONNECT_POLL);
    }
}

/// `pasidctl detach`: tells the daemon, then unplugs the VM's device.
fn detach(
    socket: &Path,
    json: bool,
    vm: &str,
    qmp_socket: &Path,
    (hold, keep, timeout): (u64, bool, Duration),
) -> Result<(), CtlError> {
    let before = vm_entry(socket, vm)?;
    let vm_socket = PathBuf::from(&before.socket);
    let mut qmp = Qmp::connect(qmp_socket, QMP_TIMEOUT)?;
    let device = find_device(&mut qmp, &vm_socket)?;
    let spec = device.spec();
    // Before the unplug: the disconnect it causes must find the hold set.
    let told: DetachResult = call(
        socket,
        &ControlRequest::Detach {
            vm: vm.to_string(),
            hold_secs: Some(hold),
            keep,
            device: Some(spec.clone()),
        },
    )?;
    let unplugged = unplug(&mut qmp, &device, timeout)?;
    let (_, disconnected) = wait_vm(socket, vm, timeout, |v| !v.connected)?;
    let report = DetachReport {
        vm: vm.to_string(),
        device: spec,
        unplug_ms: unplugged.unplug.as_millis(),
        held: told.held,
        hold_secs: told.hold_secs,
        disconnected,
    };
    emit(&show(&report, json)?)
}

/// What `pasidctl attach` did.
#[derive(Serialize)]
struct AttachReport {
    vm: String,
    /// "reconcile" or "reset".
    probe: &'static str,
    /// Milliseconds from the plug to the driver's RECONCILE or RESET.
    after_ms: u128,
    kept: u64,
    regranted: u64,
    conflicts: u64,
    /// chardev-add and device_add.
    plug_ms: u128,
    /// The device plugged.
    device: String,
}

impl Show for AttachReport {
    fn text(&self) -> String {
        let outcome = if self.probe == "reconcile" {
            format!(
                "guest resumed (RECONCILE) after {} ms: {} kept, {} re-granted, {} conflicts",
                self.after_ms, self.kept, self.regranted, self.conflicts
            )
        } else {
            format!("guest reset the device (RESET) after {} ms", self.after_ms)
        };
        format!(
            "VM {}: device {} plugged ({} ms); {outcome}\n",
            self.vm, self.device, self.plug_ms
        )
    }
}

/// Reads `path` (`-`: standard input) whole.
fn read_input(path: &Path) -> Result<String, CtlError> {
    let read = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|source| CtlError::ReadInput {
        path: path.to_path_buf(),
        source,
    })
}

/// The device `--device FILE` describes: a device, or `detach --json` or
/// `export` output carrying one as "device".
fn device_from(path: &Path) -> Result<DeviceSpec, CtlError> {
    let text = read_input(path)?;
    let bad = |source| CtlError::BadInput {
        path: path.to_path_buf(),
        what: "a device (the \"device\" of detach --json or export)",
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    let device = match value.get("device") {
        Some(serde_json::Value::Null) => {
            return Err(CtlError::NoDeviceIn {
                path: path.to_path_buf(),
            })
        }
        Some(inner) if value.get("driver").is_none() => inner.clone(),
        _ => value,
    };
    serde_json::from_value(device).map_err(bad)
}

/// When the VM's driver last took up a device, in seconds since the Unix
/// epoch (0 if never).
fn probe_at(vm: &VmEntry) -> f64 {
    vm.last_probe.as_ref().map_or(0.0, |p| p.at)
}

/// `pasidctl attach`: plugs a device for the VM and waits for its driver.
fn attach(socket: &Path, json: bool, vm: &str, args: AttachArgs) -> Result<(), CtlError> {
    let entry = vm_entry(socket, vm)?;
    let vm_socket = match args.vm_socket {
        Some(path) => path,
        None if entry.socket.starts_with('/') => PathBuf::from(&entry.socket),
        None => {
            return Err(CtlError::NoSocketPath {
                vm: vm.to_string(),
                socket: entry.socket,
            })
        }
    };
    let mut spec = match &args.device {
        Some(path) => device_from(path)?,
        None => {
            let known: ExportResult = call(socket, &ControlRequest::Export { vm: vm.to_string() })?;
            known
                .device
                .unwrap_or_else(|| default_device(vm, args.bus.as_deref(), args.addr.as_deref()))
        }
    };
    for (name, value) in [("bus", &args.bus), ("addr", &args.addr)] {
        if let Some(value) = value {
            spec.properties
                .insert(name.into(), serde_json::Value::from(value.as_str()));
        }
    }
    let device = PluggedDevice::from_spec(&spec, &format!("vpasid-{vm}"));
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let before = probe_at(&entry);
    let mut qmp = Qmp::connect(&args.qmp, QMP_TIMEOUT)?;
    let (plugged, plug_took) = plug(&mut qmp, &device, &vm_socket)?;
    let (after, probed) = wait_vm(socket, vm, args.timeout, |v| {
        let at = probe_at(v);
        at > before && at >= since
    })?;
    let Some(probe) = after.last_probe.filter(|_| probed) else {
        return Err(CtlError::NoProbe {
            vm: vm.to_string(),
            socket: vm_socket.display().to_string(),
            timeout: args.timeout,
        });
    };
    let after_ms = ((probe.at - since) * 1000.0).max(0.0);
    let report = AttachReport {
        vm: vm.to_string(),
        probe: if probe.kind == "reconcile" {
            "reconcile"
        } else {
            "reset"
        },
        // Display only: milliseconds of a wait bounded by --timeout.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        after_ms: after_ms.round() as u128,
        kept: probe.kept,
        regranted: probe.regranted,
        conflicts: probe.conflicts,
        plug_ms: plug_took.as_millis(),
        device: plugged.id,
    };
    emit(&show(&report, json)?)
}

/// `pasidctl attach`'s options.
struct AttachArgs {
    qmp: PathBuf,
    vm_socket: Option<PathBuf>,
    device: Option<PathBuf>,
    bus: Option<String>,
    addr: Option<String>,
    timeout: Duration,
}

/// What `reserve --from` reads: `export` output. Only the PASIDs are
/// needed; the rest is checked or shown.
#[derive(serde::Deserialize)]
struct ReserveInput {
    pasids: Vec<u32>,
    #[serde(default)]
    vm: Option<String>,
    #[serde(default)]
    device: Option<DeviceSpec>,
}

impl Show for ReserveResult {
    fn text(&self) -> String {
        // Display only: a time of day.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let until = utc_datetime(self.until.max(0.0) as u64);
        format!(
            "VM {}: reserved {} PASID(s) ({} new) until {until} UTC ({} s), unless the VM \
             connects first\n",
            self.vm, self.reserved, self.new, self.hold_secs
        )
    }
}

/// `pasidctl reserve`: all or nothing; conflicts are printed one a line on
/// stderr.
fn reserve(
    socket: &Path,
    json: bool,
    vm: &str,
    from: &Path,
    hold: Option<u64>,
) -> Result<(), CtlError> {
    let text = read_input(from)?;
    let input: ReserveInput = serde_json::from_str(&text).map_err(|source| CtlError::BadInput {
        path: from.to_path_buf(),
        what: "pasidctl export output",
        source,
    })?;
    if let Some(exported) = input.vm.as_deref().filter(|e| *e != vm) {
        eprintln!("pasidctl: note: reserving VM {exported}'s PASIDs for VM slot {vm}");
    }
    let request = ControlRequest::Reserve {
        vm: vm.to_string(),
        pasids: input.pasids,
        hold_secs: hold,
        device: input.device,
    };
    match call::<ReserveResult>(socket, &request) {
        Ok(result) => emit(&show(&result, json)?),
        Err(CtlError::Conflicts(_, conflicts)) => {
            let mut err = std::io::stderr().lock();
            for c in &conflicts {
                let _ = writeln!(err, "{}", c.message);
            }
            if json {
                let doc = serde_json::json!({ "vm": vm, "reserved": 0, "conflicts": conflicts });
                emit(&json_text(&doc)?)?;
            }
            Err(CtlError::ReserveRefused(format!(
                "reservation for VM {vm} refused, nothing reserved: {} conflict(s)",
                conflicts.len()
            )))
        }
        Err(e) => Err(e),
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc_datetime(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn run(cli: Cli) -> Result<(), CtlError> {
    let (socket, json) = (cli.socket.as_path(), cli.json);
    // Each command reads its own result type; --json prints it as read.
    match cli.command {
        Command::Pasids { vm } => {
            ask::<Vec<PasidEntry>>(socket, &ControlRequest::Pasids { vm }, json)
        }
        Command::Vms => ask::<Vec<VmEntry>>(socket, &ControlRequest::Vms {}, json),
        Command::Stats => ask::<StatsResult>(socket, &ControlRequest::Stats {}, json),
        Command::Metrics => ask::<String>(socket, &ControlRequest::Metrics {}, json),
        Command::Get { pasid, holder } => {
            ask::<GetResult>(socket, &ControlRequest::Get { holder, pasid }, json)
        }
        Command::Put { pasid, holder } => {
            ask::<PutResult>(socket, &ControlRequest::Put { holder, pasid }, json)
        }
        Command::Release { vm, force } => {
            ask::<ReleaseResult>(socket, &ControlRequest::Release { vm, force }, json)
        }
        Command::Quota { vm, quota } => {
            ask::<QuotaResult>(socket, &ControlRequest::Quota { vm, quota }, json)
        }
        Command::Watch { interval, count } => watch(socket, json, interval, count),
        Command::Reattach {
            vm,
            qmp,
            timeout,
            force,
        } => reattach(socket, json, &vm, &qmp, (timeout, force)),
        Command::Detach {
            vm,
            qmp,
            hold,
            keep,
            timeout,
        } => detach(socket, json, &vm, &qmp, (hold, keep, timeout)),
        Command::Attach {
            vm,
            qmp,
            vm_socket,
            device,
            bus,
            addr,
            timeout,
        } => attach(
            socket,
            json,
            &vm,
            AttachArgs {
                qmp,
                vm_socket,
                device,
                bus,
                addr,
                timeout,
            },
        ),
        // JSON is what export is for: printed with or without --json.
        Command::Export { vm } => emit(&json_text(&call::<ExportResult>(
            socket,
            &ControlRequest::Export { vm },
        )?)?),
        Command::Reserve { vm, from, hold } => match reserve(socket, json, &vm, &from, hold) {
            Err(e @ (CtlError::ReserveRefused(_) | CtlError::Output(_))) => Err(e),
            Err(e) => Err(CtlError::ReserveFailed(Box::new(e))),
            Ok(()) => Ok(()),
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`pasidctl ... | head`): like other Unix
        // tools, end quietly.
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        // reserve: 1 is a refusal for conflicts, 2 anything else, so that
        // a migration script can tell "the destination is taken" from
        // "the check could not be made".
        Err(CtlError::ReserveFailed(e)) => {
            eprintln!("pasidctl: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("pasidctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_user_pasid::control_protocol::VmCountersEntry;

    #[test]
    fn tables_fit_their_widest_cell() {
        let mut t = Table::new(&[("VM", Align::Left), ("HELD", Align::Right)]);
        t.row(vec!["a-very-long-vm-name-that-is-long".into(), "7".into()]);
        t.row(vec!["b".into(), "12345".into()]);
        assert_eq!(
            t.render(),
            "VM                                 HELD\n\
             a-very-long-vm-name-that-is-long      7\n\
             b                                 12345\n"
        );
    }

    #[test]
    fn vm_listing_is_sized_to_long_names() {
        let name = "x".repeat(64);
        let vm = |name: &str, connected: bool, held: u32, socket: &str| VmEntry {
            cached: 0,
            connected,
            counters: VmCountersEntry::default(),
            held_over_secs: None,
            held,
            holdover_secs: 0,
            in_use: held,
            lease: 32,
            name: name.into(),
            quota: 2,
            range_end: 9,
            range_start: 1,
            socket: socket.into(),
            resumed_at: None,
            qemu_pid: None,
            last_probe: None,
            reserved_secs: None,
            state: String::new(),
        };
        let mut long = vm(&name, true, 1, "/s");
        long.counters.requests.insert("ALLOC".into(), 3);
        let vms = [long, vm("b", false, 0, "/t")];
        let out = render_vms(&vms);
        let lines: Vec<&str> = out.lines().collect();
        // Every column starts at the same place on each line.
        let state_at: Vec<usize> = lines
            .iter()
            .map(|l| {
                l.find("STATE")
                    .or_else(|| l.find("connected"))
                    .or_else(|| l.find("idle"))
                    .unwrap()
            })
            .collect();
        assert_eq!(state_at, vec![66, 66, 66], "{out}");
        assert!(lines[1].starts_with(&format!("{name}  connected")), "{out}");
    }

    /// reattach tells a resuming driver (its reconcile completed) from one
    /// that reset the device, and from one that did neither yet.
    #[test]
    fn reattach_sees_reconcile_or_reset() {
        let before = VmEntry {
            cached: 0,
            connected: false,
            counters: VmCountersEntry::default(),
            held_over_secs: None,
            held: 2,
            holdover_secs: 0,
            in_use: 2,
            lease: 0,
            name: "a".into(),
            quota: 9,
            range_end: 9,
            range_start: 1,
            socket: "/s".into(),
            resumed_at: None,
            qemu_pid: None,
            last_probe: None,
            reserved_secs: None,
            state: String::new(),
        };
        let mut now = before.clone();
        assert_eq!(guest_step(&before, &now), None);
        // RECONCILE requests without LAST are not a completed resume yet.
        now.counters.requests.insert("RECONCILE".into(), 1);
        assert_eq!(guest_step(&before, &now), None);
        now.counters.resumes = 1;
        assert_eq!(guest_step(&before, &now), Some("reconcile"));
        let mut reset = before.clone();
        reset.counters.requests.insert("RESET".into(), 1);
        assert_eq!(guest_step(&before, &reset), Some("reset"));
    }

    /// A disconnected VM whose PASIDs are held over shows the time left.
    #[test]
    fn held_over_vm_shows_the_time_left() {
        let mut vm = VmEntry {
            cached: 0,
            connected: false,
            counters: VmCountersEntry::default(),
            held_over_secs: Some(12),
            held: 3,
            holdover_secs: 0,
            in_use: 3,
            lease: 0,
            name: "a".into(),
            quota: 9,
            range_end: 9,
            range_start: 1,
            socket: "/s".into(),
            resumed_at: None,
            qemu_pid: None,
            last_probe: None,
            reserved_secs: None,
            state: String::new(),
        };
        assert_eq!(vm_state(&vm), "held-over 12s");
        assert!(render_vms(std::slice::from_ref(&vm)).contains("held-over 12s"));
        vm.held_over_secs = None;
        assert_eq!(vm_state(&vm), "idle");
        vm.connected = true;
        assert_eq!(vm_state(&vm), "connected");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        vm.resumed_at = Some(now - 5);
        assert!(vm_state(&vm).starts_with("resumed "), "{}", vm_state(&vm));
        vm.connected = false;
        vm.reserved_secs = Some(290);
        assert_eq!(vm_state(&vm), "reserved 290s");
    }

    /// Reservations end at dates people can read.
    #[test]
    fn deadlines_print_as_utc_dates() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_datetime(1_796_651_525), "2026-12-07 13:52:05");
    }

    /// Only a terminal gets screen-clearing codes.
    #[test]
    fn watch_redraws_only_on_a_terminal() {
        assert_eq!(Refresh::for_output(true).prefix(1), CLEAR_SCREEN);
        assert_eq!(Refresh::for_output(true).prefix(2), CLEAR_SCREEN);
        assert_eq!(Refresh::for_output(false).prefix(1), "");
        assert_eq!(Refresh::for_output(false).prefix(2), "\n");
    }
}
