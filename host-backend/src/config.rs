// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Command line of `vhost-user-pasid` and its validation into a [`Config`].
//!
//! Every check lives in `TryFrom<Args>`, and every error names the bad
//! value, so a typo gets one clear line rather than a failure later.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::Parser;
use pasid_protocol::{LEASE_MAX, MAX_PASID_BITS};

use crate::rate_limit::RateLimit;
pub use crate::registry::valid_name;
use crate::sandbox::{lookup_user, SandboxError, SeccompMode, User};
use crate::socket::{check_path, group_id, SocketAccess, SocketError};

/// Smallest `--journal-limit`.
pub const MIN_JOURNAL_LIMIT: u64 = 64 << 10;
/// Default per-VM quota.
pub const DEFAULT_QUOTA: u32 = 4096;
/// Default lease cap: most PASIDs a VM's driver may keep cached (leased
/// from the host but not handed out). 0 turns leases off. 1024: the
/// reference driver rests at 32 and grows to the cap only when a burst of
/// allocations outruns its refills, then refills ahead of need up to the
/// cap, so the cap is how far ahead of a burst the GRANTs run: at local
/// speed (2-3 us per allocation under TCG) 768 cover a round trip of about
/// 2 ms, where 256 covered 0.5 ms and round trips here reach 1-3 ms under
/// load. It costs at most 1024 of the quota (1/4 of the default 4096) while
/// a burst lasts; the driver halves back to 32 once a second without a
/// miss (docs/operations.md, "Leases").
pub const DEFAULT_LEASE: u32 = 1024;
/// Default hold-over after a VM disconnects, in seconds: 5 minutes. A VM
/// that really exits gives its PASIDs back at once all the same (its QEMU
/// process's exit ends the hold-over), so the period only covers a device
/// unplugged from a QEMU that lives on: a re-plug, a `pasidctl
/// detach`/`attach` or a migration, the same 300 s `pasidctl detach`
/// holds for (docs/operations.md, "Hold-over").
pub const DEFAULT_HOLDOVER_SECS: u32 = 300;
/// Longest hold-over: a day.
pub const MAX_HOLDOVER_SECS: u32 = 86_400;
/// Default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/vhost-user-pasid/control.sock";
/// Default per-VM request rate limit: far above what a driver needs and
/// twice what the socket benchmark's batches of 64 reach here (about 1 M
/// requests/s), yet a bound on how busy one VM can keep the shared space.
pub const DEFAULT_RATE_LIMIT: &str = "2000000/s,burst=2000000";

/// How much the daemon logs (`--log-level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Also what a guest or operator did wrong (rejected requests, ...).
    Warn,
    /// Also connects, disconnects, reclaims and operator commands.
    #[default]
    Info,
    /// Also one line per request and per control command.
    Debug,
    /// Everything, including the vhost-user crates' chatter.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// vhost-user backend serving one global PASID space to many VMs.
///
/// Each VM slot is one vhost-user socket with a stable name; all slots share
/// one PASID space. Use --log-level debug for a line per request.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "vhost-user-pasid", version, about, long_about = None)]
pub struct Args {
    /// vhost-user socket path. With --socket-count N, the sockets are
    /// PATH0..PATH(N-1) and the VMs are named vm0..vm(N-1); alone, PATH is
    /// the socket of VM vm0.
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,

    /// Number of VM slots created from --socket-path.
    #[arg(long, value_name = "N", requires = "socket_path")]
    pub socket_count: Option<u32>,

    /// A named VM slot: NAME=PATH, then any of ,quota=N ,range=LO-HI
    /// ,lease=N ,holdover=SECONDS.
    /// Repeatable.
    #[arg(long = "vm", value_name = "SPEC")]
    pub vms: Vec<String>,

    /// Serve the vhost-user listening socket inherited as file descriptor N
    /// (VM vm0), as libvirt passes it.
    #[arg(long, value_name = "N")]
    pub fd: Option<i32>,

    /// Print the backend's capabilities as JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Width of the host PASID space in bits (1-20).
    #[arg(long, value_name = "BITS", default_value_t = MAX_PASID_BITS)]
    pub pasid_bits: u32,

    /// Reserve PASIDs LO-HI (or one PASID N) for host use. Repeatable.
    /// PASID 0 is always reserved.
    #[arg(long = "reserve", value_name = "LO-HI")]
    pub reserve: Vec<String>,

    /// Default number of PASIDs each VM may hold at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUOTA)]
    pub quota: u32,

    /// Default lease cap (0-4096): most PASIDs each VM's driver may keep
    /// cached, leased ahead of need and not yet handed out; they count
    /// against its quota. 0 turns leases off (the device does not offer
    /// VIRTIO_PASID_F_LEASE). Per VM: --vm NAME=PATH,lease=N.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LEASE)]
    pub lease: u32,

    /// Default hold-over (0-86400 s, default 300): how long a disconnected
    /// VM's PASIDs stay reserved for it, so that a re-plugged device that
    /// reconciles (RECONCILE) within that time keeps them. A new device's
    /// RESET releases them at once, and so does the exit of the QEMU
    /// process of its connection; past the period they are reclaimed. 0
    /// reclaims at disconnect. Per VM: --vm NAME=PATH,holdover=S.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HOLDOVER_SECS)]
    pub holdover: u32,

    /// Default range of PASIDs a VM may be given (LO-HI); the whole space by
    /// default.
    #[arg(long, value_name = "LO-HI")]
    pub range: Option<String>,

    /// Control socket for pasidctl (created with mode 0600).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,

    /// Mode of the vhost-user sockets, in octal (e.g. 660 so that the
    /// group given by --socket-group can connect).
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,

    /// Group owning the vhost-user sockets (name or number), e.g. the group
    /// QEMU runs as.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Once every socket is bound, run as this user (name or uid): needs
    /// root; supplementary groups are dropped and the socket files are
    /// given to the user so that it can remove them at exit.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Seccomp filter installed after set-up: kill the daemon on a system
    /// call outside its allow-list, only log such calls, or no filter
    /// (debugging).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompMode::Kill)]
    pub seccomp: SeccompMode,

    /// Time slice (100-100000 us) the thread answering each VM asks the
    /// kernel for, so that a request preempts a busy vCPU thread on its
    /// core instead of waiting for the end of its slice (Linux 6.12 and
    /// later; older kernels ignore it). 0 keeps the kernel's default.
    #[arg(long, value_name = "US", default_value_t = crate::sched_slice::DEFAULT_REQUEST_SLICE_US)]
    pub request_slice_us: u32,

    /// Requests each VM may have carried out, as RATE/s[,burst=N] (the
    /// burst defaults to one second's worth), or "off". Requests beyond it
    /// are answered RATE_LIMITED.
    #[arg(long, value_name = "RATE/s[,burst=N]", default_value = DEFAULT_RATE_LIMIT)]
    pub rate_limit: String,

    /// Let members of this group use the read-only pasidctl commands
    /// (pasids, vms, stats, metrics): the control socket becomes mode 0660
    /// with this group. Commands that change state stay limited to root
    /// and the daemon's own user.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,

    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,

    /// Log level: error, warn, info, debug (a line per request) or trace.
    /// RUST_LOG, when set, is applied on top and wins where both speak
    /// (RUST_LOG=debug overrides it; RUST_LOG=vhost_user_pasid::control=debug
    /// adds one module's debug lines).
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Keep the PASID space durable in DIR (created mode 0700 if missing):
    /// every answer is on disk before the guest sees it, and a restart
    /// (after a crash, kill -9 or upgrade) keeps every VM's PASIDs.
    /// Without it the space lives in memory only. See docs/state.md.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Rewrite the state as a new snapshot when its journal grows past
    /// this many bytes (with --state-dir; at least 65536).
    #[arg(long, value_name = "BYTES", default_value_t = crate::state::DEFAULT_JOURNAL_LIMIT, requires = "state_dir")]
    pub journal_limit: u64,
}

/// Errors in the command line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// --metrics-listen is invalid or not a loopback address.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// No socket was given.
    #[error("no VM socket given: use --socket-path PATH, --vm NAME=PATH or --fd N")]
    NoSlots,
    /// --socket-count 0.
    #[error("--socket-count must be at least 1, got {0}")]
    ZeroSocketCount(u32),
    /// A --vm spec is malformed.
    #[error("invalid --vm {spec:?}: {reason}")]
    InvalidVmSpec {
        /// The spec.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// Two slots share a name.
    #[error("VM name {0:?} is used twice")]
    DuplicateVm(String),
    /// Two slots share a socket.
    #[error("socket {0:?} is used by two VMs")]
    DuplicateSocket(PathBuf),
    /// A range is malformed.
    #[error("invalid range {0:?}: expected LO-HI or N (decimal or 0x hex) with LO <= HI")]
    InvalidRange(String),
    /// A VM's range lies outside `1..=2^pasid_bits - 1`.
    #[error(
        "VM {vm:?}: range {start}-{end} lies outside the PASID space 1-{max} (--pasid-bits): \
         the VM could never be given a PASID"
    )]
    VmRangeOutsideSpace {
        /// VM name.
        vm: String,
        /// First PASID of the range as given.
        start: u32,
        /// Last PASID of the range as given.
        end: u32,
        /// Highest PASID of the space.
        max: u32,
    },
    /// Every PASID of a VM's range is host-reserved.
    #[error(
        "VM {vm:?}: every PASID of its range {start}-{end} is reserved (--reserve): the VM could \
         never be given a PASID"
    )]
    VmRangeReserved {
        /// VM name.
        vm: String,
        /// First PASID of the range, clamped to the space.
        start: u32,
        /// Last PASID of the range, clamped to the space.
        end: u32,
    },
    /// A lease cap above [`LEASE_MAX`].
    #[error("lease cap {0} is more than {LEASE_MAX}: use 0 (leases off) to {LEASE_MAX}")]
    InvalidLease(u32),
    /// A hold-over above [`MAX_HOLDOVER_SECS`].
    #[error(
        "hold-over {0} s is more than {MAX_HOLDOVER_SECS} s (a day): use 0 (reclaim at \
         disconnect) to {MAX_HOLDOVER_SECS}"
    )]
    InvalidHoldover(u32),
    /// --pasid-bits out of range.
    #[error("--pasid-bits must be between 1 and {MAX_PASID_BITS}, got {0}")]
    InvalidPasidBits(u32),
    /// --journal-limit too small to be useful.
    #[error(
        "--journal-limit must be at least {MIN_JOURNAL_LIMIT} bytes, got {0}: a smaller \
         journal would be rewritten as a snapshot after nearly every request"
    )]
    JournalLimit(u64),
    /// --socket-mode not octal.
    #[error("invalid --socket-mode {0:?}: expected octal such as 600 or 660")]
    InvalidMode(String),
    /// --request-slice-us outside what the kernel takes.
    #[error(
        "--request-slice-us must be 0 (the kernel's default) or between 100 and 100000, got {0}"
    )]
    RequestSlice(u32),
    /// --fd is negative or a standard stream.
    #[error("invalid --fd {0}: expected an inherited descriptor number >= 3")]
    InvalidFd(i32),
    /// A socket path or group is unusable.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// --rate-limit is malformed.
    #[error("invalid --rate-limit {0:?}: expected RATE/s[,burst=N] with RATE >= 1, or off")]
    InvalidRateLimit(String),
    /// --user names no account.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Where a slot's frontend connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotSource {
    /// A socket path we bind.
    Path(PathBuf),
    /// An inherited listening socket.
    Fd(i32),
}

impl SlotSource {
    /// For log lines and listings.
    pub fn label(&self) -> String {
        match self {
            SlotSource::Path(p) => p.display().to_string(),
            SlotSource::Fd(fd) => format!("fd:{fd}"),
        }
    }
}

/// One VM slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotConfig {
    /// VM name.
    pub name: String,
    /// Its socket.
    pub source: SlotSource,
    /// Its quota.
    pub quota: u32,
    /// PASIDs it may be given.
    pub range: RangeInclusive<u32>,
    /// Lease cap: most PASIDs its driver may keep cached; 0 = leases off.
    pub lease: u32,
    /// Seconds its PASIDs stay reserved after it disconnects; 0 = none.
    pub holdover_secs: u32,
}

/// Validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// VM slots.
    pub slots: Vec<SlotConfig>,
    /// Width of the space.
    pub pasid_bits: u32,
    /// Host-reserved ranges.
    pub reserved: Vec<RangeInclusive<u32>>,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Access settings of the vhost-user sockets.
    pub access: SocketAccess,
    /// The account to switch to after set-up.
    pub user: Option<User>,
    /// Seccomp filter mode.
    pub seccomp: SeccompMode,
    /// The time slice each VM's answering thread asks for, if any.
    pub request_slice: Option<std::time::Duration>,
    /// Per-VM request rate limit; `None` for unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Group given read-only access to the control socket.
    pub control_gid: Option<u32>,
    /// Loopback address serving Prometheus metrics over HTTP.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Directory of the durable state; `None` keeps it in memory.
    pub state_dir: Option<PathBuf>,
    /// Journal size that triggers compaction.
    pub journal_limit: u64,
}

fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `--rate-limit`: `RATE[/s][,burst=N]` or `off`.
pub fn parse_rate_limit(s: &str) -> Result<Option<RateLimit>, ConfigError> {
    let bad = || ConfigError::InvalidRateLimit(s.to_string());
    if s.trim() == "off" {
        return Ok(None);
    }
    let mut parts = s.split(',');
    let rate = parts.next().unwrap_or_default();
    let rate = rate.strip_suffix("/s").unwrap_or(rate);
    let per_second = parse_number(rate).filter(|r| *r > 0).ok_or_else(bad)?;
    let mut burst = per_second;
    for opt in parts {
        match opt.split_once('=') {
            Some(("burst", v)) => burst = parse_number(v).filter(|b| *b > 0).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(Some(RateLimit { per_second, burst }))
}

/// Parses `LO-HI` or `N`.
pub fn parse_range(s: &str) -> Result<RangeInclusive<u32>, ConfigError> {
    let bad = || ConfigError::InvalidRange(s.to_string());
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (
            parse_number(lo).ok_or_else(bad)?,
            parse_number(hi).ok_or_else(bad)?,
        ),
        None => {
            let n = parse_number(s).ok_or_else(bad)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// Checks that every VM can be given some PASID: its range, clamped to
/// `1..=2^pasid_bits - 1` as the space clamps it, is not empty and not all
/// reserved. A range that only partly lies outside the space is clamped
/// (the config space reports the clamped range). `pasid_bits` is valid.
fn check_vm_ranges(
    slots: &[SlotConfig],
    pasid_bits: u32,
    reserved: &[RangeInclusive<u32>],
) -> Result<(), ConfigError> {
    let max = u32::MAX >> (32 - pasid_bits);
    for slot in slots {
        let (start, end) = ((*slot.range.start()).max(1), (*slot.range.end()).min(max));
        if start > end {
            return Err(ConfigError::VmRangeOutsideSpace {
                vm: slot.name.clone(),
                start: *slot.range.start(),
                end: *slot.range.end(),
                max,
            });
        }
        if first_unreserved(start..=end, reserved).is_none() {
            return Err(ConfigError::VmRangeReserved {
                vm: slot.name.clone(),
                start,
                end,
            });
        }
    }
    Ok(())
}

/// The lowest PASID of `range` that no `reserved` range covers.
fn first_unreserved(range: RangeInclusive<u32>, reserved: &[RangeInclusive<u32>]) -> Option<u32> {
    let mut candidate = *range.start();
    // Each step moves past the end of a reserved range holding `candidate`,
    // so no range is visited twice.
    while let Some(covering) = reserved.iter().find(|r| r.contains(&candidate)) {
        candidate = covering.end().checked_add(1)?;
    }
    range.contains(&candidate).then_some(candidate)
}

/// Checks a hold-over (`--holdover`, `holdover=`): 0 to
/// [`MAX_HOLDOVER_SECS`].
fn check_holdover(secs: u32) -> Result<u32, ConfigError> {
    if secs > MAX_HOLDOVER_SECS {
        return Err(ConfigError::InvalidHoldover(secs));
    }
    Ok(secs)
}

/// The slice --request-slice-us asks for: none for 0, else within the
/// kernel's bounds.
fn request_slice(us: u32) -> Result<Option<std::time::Duration>, ConfigError> {
    use crate::sched_slice::{DEFAULT_REQUEST_SLICE_US, MAX_REQUEST_SLICE_US};
    match us {
        0 => Ok(None),
        DEFAULT_REQUEST_SLICE_US..=MAX_REQUEST_SLICE_US => {
            Ok(Some(std::time::Duration::from_micros(u64::from(us))))
        }
        _ => Err(ConfigError::RequestSlice(us)),
    }
}

/// Checks a lease cap (`--lease`, `lease=`): 0 to [`LEASE_MAX`].
fn check_lease(lease: u32) -> Result<u32, ConfigError> {
    if lease > LEASE_MAX {
        return Err(ConfigError::InvalidLease(lease));
    }
    Ok(lease)
}

fn parse_vm_spec(spec: &str, defaults: &SlotDefaults) -> Result<SlotConfig, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidVmSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, path) = head
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=PATH"))?;
    if !valid_name(name) {
        return Err(bad(
            "NAME must be 1-64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    if path.is_empty() {
        return Err(bad("PATH is empty"));
    }
    let mut slot = SlotConfig {
        name: name.to_string(),
        source: SlotSource::Path(PathBuf::from(path)),
        quota: defaults.quota,
        range: defaults.range.clone(),
        lease: defaults.lease,
        holdover_secs: defaults.holdover_secs,
    };
    for opt in parts {
        match opt.split_once('=') {
            Some(("quota", v)) => {
                slot.quota = parse_number(v).ok_or_else(|| bad("quota must be a number"))?
            }
            Some(("range", v)) => slot.range = parse_range(v)?,
            Some(("lease", v)) => {
                slot.lease = check_lease(
                    parse_number(v).ok_or_else(|| bad("lease must be a number (0-4096)"))?,
                )?
            }
            Some(("holdover", v)) => {
                slot.holdover_secs = check_holdover(
                    parse_number(v)
                        .ok_or_else(|| bad("holdover must be a number of seconds (0-86400)"))?,
                )?
            }
            _ => {
                return Err(bad(&format!(
                    "unknown option {opt:?} (known: quota, range, lease, holdover)"
                )))
            }
        }
    }
    Ok(slot)
}

/// What a slot gets when its `--vm` spec does not say.
struct SlotDefaults {
    quota: u32,
    range: RangeInclusive<u32>,
    lease: u32,
    holdover_secs: u32,
}

impl SlotDefaults {
    /// A slot named `name` on `source` with these defaults.
    fn slot(&self, name: String, source: SlotSource) -> SlotConfig {
        SlotConfig {
            name,
            source,
            quota: self.quota,
            range: self.range.clone(),
            lease: self.lease,
            holdover_secs: self.holdover_secs,
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        if !(1..=MAX_PASID_BITS).contains(&args.pasid_bits) {
            return Err(ConfigError::InvalidPasidBits(args.pasid_bits));
        }
        if args.journal_limit < MIN_JOURNAL_LIMIT {
            return Err(ConfigError::JournalLimit(args.journal_limit));
        }
        let range = match &args.range {
            Some(r) => parse_range(r)?,
            None => 1..=u32::MAX,
        };
        let reserved = args
            .reserve
            .iter()
            .map(|r| parse_range(r))
            .collect::<Result<Vec<_>, _>>()?;
        let defaults = SlotDefaults {
            quota: args.quota,
            range,
            lease: check_lease(args.lease)?,
            holdover_secs: check_holdover(args.holdover)?,
        };

        let mut slots = Vec::new();
        if let Some(path) = &args.socket_path {
            match args.socket_count {
                Some(0) => return Err(ConfigError::ZeroSocketCount(0)),
                Some(n) => {
                    for i in 0..n {
                        let mut p = path.clone().into_os_string();
                        p.push(i.to_string());
                        slots.push(
                            defaults.slot(format!("vm{i}"), SlotSource::Path(PathBuf::from(p))),
                        );
                    }
                }
                None => slots.push(defaults.slot("vm0".into(), SlotSource::Path(path.clone()))),
            }
        }
        if let Some(fd) = args.fd {
            if fd < 3 {
                return Err(ConfigError::InvalidFd(fd));
            }
            slots.push(defaults.slot("vm0".into(), SlotSource::Fd(fd)));
        }
        for spec in &args.vms {
            slots.push(parse_vm_spec(spec, &defaults)?);
        }
        if slots.is_empty() {
            return Err(ConfigError::NoSlots);
        }
        for (i, a) in slots.iter().enumerate() {
            for b in slots.iter().skip(i + 1) {
                if a.name == b.name {
                    return Err(ConfigError::DuplicateVm(a.name.clone()));
                }
                if let (SlotSource::Path(pa), SlotSource::Path(pb)) = (&a.source, &b.source) {
                    if pa == pb {
                        return Err(ConfigError::DuplicateSocket(pa.clone()));
                    }
                }
            }
            if let SlotSource::Path(p) = &a.source {
                check_path(p)?;
            }
        }
        check_path(&args.control_socket)?;
        check_vm_ranges(&slots, args.pasid_bits, &reserved)?;

        let mode = match &args.socket_mode {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| ConfigError::InvalidMode(m.clone()))?,
            ),
            None => None,
        };
        let gid = args.socket_group.as_deref().map(group_id).transpose()?;
        let control_gid = args.control_group.as_deref().map(group_id).transpose()?;
        let user = args.user.as_deref().map(lookup_user).transpose()?;
        let rate_limit = parse_rate_limit(&args.rate_limit)?;

        Ok(Config {
            slots,
            pasid_bits: args.pasid_bits,
            reserved,
            control_socket: args.control_socket,
            access: SocketAccess { mode, gid },
            user,
            seccomp: args.seccomp,
            request_slice: request_slice(args.request_slice_us)?,
            rate_limit,
            control_gid,
            metrics_listen: args.metrics.listen_addr()?,
            state_dir: args.state_dir,
            journal_limit: args.journal_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_matches::assert_matches;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut full = vec!["vhost-user-pasid"];
        full.extend_from_slice(args);
        Config::try_from(Args::parse_from(full))
    }

    /// `--lease` sets every slot's lease cap, `lease=` one VM's; both are
    /// 0 to 4096, and a bad value names itself.
    #[test]
    fn lease_caps_are_parsed_and_bounded() {
        let cfg = parse(&["--vm", "a=/tmp/a.sock", "--vm", "b=/tmp/b.sock,lease=0"]).unwrap();
        let leases: Vec<u32> = cfg.slots.iter().map(|s| s.lease).collect();
        assert_eq!(leases, vec![DEFAULT_LEASE, 0]);
        let cfg = parse(&[
            "--lease",
            "4096",
            "--vm",
            "a=/tmp/a.sock",
            "--vm",
            "b=/tmp/b.sock,lease=7",
        ])
        .unwrap();
        let leases: Vec<u32> = cfg.slots.iter().map(|s| s.lease).collect();
        assert_eq!(leases, vec![4096, 7]);
        assert_matches!(
            parse(&["--lease", "4097", "--vm", "a=/tmp/a.sock"]),
            Err(ConfigError::InvalidLease(4097))
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,lease=5000"]),
            Err(ConfigError::InvalidLease(5000))
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,lease=lots"]),
            Err(ConfigError::InvalidVmSpec { reason, .. }) if reason.contains("lease")
        );
        assert_eq!(
            ConfigError::InvalidLease(4097).to_string(),
            "lease cap 4097 is more than 4096: use 0 (leases off) to 4096"
        );
    }

    /// `--holdover` sets every slot's hold-over, `holdover=` one VM's; the
    /// default is 0 (reclaim at disconnect), the most a day.
    #[test]
    fn holdovers_are_parsed_and_bounded() {
        let cfg = parse(&["--vm", "a=/tmp/a.sock", "--vm", "b=/tmp/b.sock,holdover=30"]).unwrap();
        let secs: Vec<u32> = cfg.slots.iter().map(|s| s.holdover_secs).collect();
        assert_eq!(secs, vec![DEFAULT_HOLDOVER_SECS, 30]);
        assert_eq!(DEFAULT_HOLDOVER_SECS, 300);
        let cfg = parse(&[
            "--holdover",
            "120",
            "--vm",
            "a=/tmp/a.sock",
            "--vm",
            "b=/tmp/b.sock,holdover=0",
        ])
        .unwrap();
        let secs: Vec<u32> = cfg.slots.iter().map(|s| s.holdover_secs).collect();
        assert_eq!(secs, vec![120, 0]);
        assert_matches!(
            parse(&["--holdover", "86401", "--vm", "a=/tmp/a.sock"]),
            Err(ConfigError::InvalidHoldover(86401))
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,holdover=1m"]),
            Err(ConfigError::InvalidVmSpec { reason, .. }) if reason.contains("holdover")
        );
        assert_eq!(
            ConfigError::InvalidHoldover(86401).to_string(),
            "hold-over 86401 s is more than 86400 s (a day): use 0 (reclaim at disconnect) \
             to 86400"
        );
    }

    /// A VM range with no PASID the VM could be given is a start-up error;
    /// one that only partly lies outside the space is clamped.
    #[test]
    fn vm_ranges_must_hold_a_grantable_pasid() {
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,range=200-300", "--pasid-bits", "7"]),
            Err(ConfigError::VmRangeOutsideSpace { vm, start: 200, end: 300, max: 127 }) if vm == "a"
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,range=0-0"]),
            Err(ConfigError::VmRangeOutsideSpace {
                start: 0,
                end: 0,
                ..
            })
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a.sock,range=10-20", "--reserve", "10-15", "--reserve", "14-20"]),
            Err(ConfigError::VmRangeReserved { vm, start: 10, end: 20 }) if vm == "a"
        );
        assert_matches!(
            parse(&[
                "--range",
                "0-127",
                "--pasid-bits",
                "7",
                "--vm",
                "b=/tmp/b.sock",
                "--reserve",
                "1-127"
            ]),
            Err(ConfigError::VmRangeReserved {
                start: 1,
                end: 127,
                ..
            })
        );
        let cfg = parse(&["--vm", "a=/tmp/a.sock,range=100-200", "--pasid-bits", "7"]).unwrap();
        assert_eq!(
            cfg.slots[0].range,
            100..=200,
            "clamped by the space, not here"
        );
        parse(&["--vm", "a=/tmp/a.sock,range=10-20", "--reserve", "10-19"]).unwrap();
        assert_eq!(first_unreserved(10..=20, &[10..=12, 13..=19]), Some(20));
        assert_eq!(first_unreserved(1..=u32::MAX, &[0..=u32::MAX]), None);
    }

    #[test]
    fn socket_count_makes_numbered_slots() {
        let cfg = parse(&["--socket-path", "/tmp/p.sock", "--socket-count", "3"]).unwrap();
        let names: Vec<_> = cfg.slots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vm0", "vm1", "vm2"]);
        assert_eq!(
            cfg.slots[2].source,
            SlotSource::Path(PathBuf::from("/tmp/p.sock2"))
        );
        assert_eq!(cfg.slots[0].quota, DEFAULT_QUOTA);
        assert_eq!(cfg.pasid_bits, 20);
    }

    #[test]
    fn named_vms_take_options() {
        let cfg = parse(&[
            "--vm",
            "web=/tmp/web.sock,quota=7,range=0x100-0x1ff",
            "--vm",
            "db=/tmp/db.sock",
            "--quota",
            "9",
            "--reserve",
            "1-15",
            "--reserve",
            "0xfffff",
        ])
        .unwrap();
        assert_eq!(cfg.slots[0].quota, 7);
        assert_eq!(cfg.slots[0].range, 0x100..=0x1ff);
        assert_eq!(cfg.slots[1].quota, 9);
        assert_eq!(cfg.reserved, vec![1..=15, 0xfffff..=0xfffff]);
    }

    #[test]
    fn bad_values_are_named() {
        assert_matches!(parse(&[]), Err(ConfigError::NoSlots));
        assert_matches!(
            parse(&["--socket-path", "/tmp/x", "--socket-count", "0"]),
            Err(ConfigError::ZeroSocketCount(0))
        );
        assert_matches!(
            parse(&["--socket-path", "/tmp/x", "--pasid-bits", "21"]),
            Err(ConfigError::InvalidPasidBits(21))
        );
        assert_matches!(
            parse(&["--socket-path", "/tmp/x", "--reserve", "9-3"]),
            Err(ConfigError::InvalidRange(r)) if r == "9-3"
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a", "--vm", "a=/tmp/b"]),
            Err(ConfigError::DuplicateVm(n)) if n == "a"
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a", "--vm", "b=/tmp/a"]),
            Err(ConfigError::DuplicateSocket(_))
        );
        assert_matches!(
            parse(&["--vm", "bad name=/tmp/a"]),
            Err(ConfigError::InvalidVmSpec { spec, .. }) if spec == "bad name=/tmp/a"
        );
        assert_matches!(
            parse(&["--vm", "a=/tmp/a,colour=red"]),
            Err(ConfigError::InvalidVmSpec { .. })
        );
        assert_matches!(parse(&["--fd", "1"]), Err(ConfigError::InvalidFd(1)));
        assert_matches!(
            parse(&["--socket-path", "/tmp/x", "--socket-mode", "9z"]),
            Err(ConfigError::InvalidMode(m)) if m == "9z"
        );
        let long = format!("/tmp/{}", "s".repeat(120));
        assert_matches!(
            parse(&["--socket-path", &long]),
            Err(ConfigError::Socket(SocketError::PathTooLong { .. }))
        );
    }

    #[test]
    fn journal_limit_has_a_floor() {
        let state = ["--socket-path", "/tmp/p.sock", "--state-dir", "/tmp/st"];
        let cfg = parse(&state).unwrap();
        assert_eq!(
            cfg.state_dir.as_deref(),
            Some(std::path::Path::new("/tmp/st"))
        );
        assert_eq!(cfg.journal_limit, crate::state::DEFAULT_JOURNAL_LIMIT);
        let small = [&state[..], &["--journal-limit", "65535"]].concat();
        assert_matches!(parse(&small), Err(ConfigError::JournalLimit(65535)));
        let ok = [&state[..], &["--journal-limit", "65536"]].concat();
        assert_eq!(parse(&ok).unwrap().journal_limit, 65536);
    }

    #[test]
    fn sandbox_and_rate_limit_options() {
        let cfg = parse(&["--socket-path", "/tmp/x"]).unwrap();
        assert_eq!(cfg.seccomp, SeccompMode::Kill, "seccomp is on by default");
        assert_eq!(
            cfg.request_slice,
            Some(std::time::Duration::from_micros(100)),
            "answering threads ask for the kernel's shortest slice by default"
        );
        let slice = |us: &str| parse(&["--socket-path", "/tmp/x", "--request-slice-us", us]);
        assert_eq!(slice("0").unwrap().request_slice, None);
        assert_eq!(
            slice("100000").unwrap().request_slice,
            Some(std::time::Duration::from_millis(100))
        );
        assert_matches!(slice("99"), Err(ConfigError::RequestSlice(99)));
        assert_matches!(slice("100001"), Err(ConfigError::RequestSlice(100001)));
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 2_000_000,
                burst: 2_000_000
            })
        );
        assert_eq!((cfg.user, cfg.control_gid), (None, None));
        let cfg = parse(&[
            "--socket-path",
            "/tmp/x",
            "--user",
            "root",
            "--seccomp",
            "log",
            "--rate-limit",
            "500/s,burst=20",
            "--control-group",
            "0",
        ])
        .unwrap();
        assert_eq!(cfg.user.map(|u| u.uid), Some(0));
        assert_eq!(cfg.seccomp, SeccompMode::Log);
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 500,
                burst: 20
            })
        );
        assert_eq!(cfg.control_gid, Some(0));
        let off = parse(&["--socket-path", "/tmp/x", "--rate-limit", "off"]).unwrap();
        assert_eq!(off.rate_limit, None);
        assert_eq!(
            parse_rate_limit("7").unwrap(),
            Some(RateLimit {
                per_second: 7,
                burst: 7
            })
        );
        for bad in ["0/s", "x/s", "10/s,burst=0", "10/s,colour=red", ""] {
            assert_matches!(
                parse(&["--socket-path", "/tmp/x", "--rate-limit", bad]),
                Err(ConfigError::InvalidRateLimit(v)) if v == bad
            );
        }
        assert_matches!(
            parse(&["--socket-path", "/tmp/x", "--user", "no-such-user-vpasid"]),
            Err(ConfigError::Sandbox(SandboxError::UnknownUser(u))) if u == "no-such-user-vpasid"
        );
        assert!(
            Args::try_parse_from(["x", "--socket-path", "/tmp/x", "--seccomp", "maybe"]).is_err()
        );
    }

    #[test]
    fn log_level_defaults_to_info_and_takes_every_level() {
        let args = |extra: &[&str]| {
            let mut full = vec!["x", "--socket-path", "/tmp/x"];
            full.extend_from_slice(extra);
            Args::try_parse_from(full)
        };
        assert_eq!(args(&[]).unwrap().log_level, LogLevel::Info);
        for (word, level) in [
            ("error", log::LevelFilter::Error),
            ("warn", log::LevelFilter::Warn),
            ("info", log::LevelFilter::Info),
            ("debug", log::LevelFilter::Debug),
            ("trace", log::LevelFilter::Trace),
        ] {
            let parsed = args(&["--log-level", word]).unwrap().log_level;
            assert_eq!(parsed.filter(), level, "{word}");
        }
        assert!(args(&["--log-level", "loud"]).is_err());
    }

    #[test]
    fn fd_and_socket_path_conflict() {
        let r = Args::try_parse_from(["x", "--fd", "3", "--socket-path", "/tmp/a"]);
        assert!(r.is_err());
    }
}
