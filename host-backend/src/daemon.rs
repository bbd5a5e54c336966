// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Start-up and shutdown: sets up logging, builds the space, binds every
//! socket, tells systemd it is ready (`Type=notify`), starts a thread per VM
//! slot and one for the control socket, then waits for SIGTERM/SIGINT or a
//! slot failure.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt::AcceptConn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, LogLevel, SlotSource};
use crate::control::serve_control;
use crate::fdstore::{take_inherited, Inherited, Notifier};
use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig, SpaceError};
use crate::qemu_watch::QemuWatch;
use crate::registry::{Registry, RegistryError};
use crate::sandbox::{drop_privileges, hand_over, install_seccomp, SandboxError};
use crate::slot::{serve_slot, SlotError, VmSlot};
use crate::socket::{bind, SocketAccess, SocketError};
use crate::state::{recover, ImageSource, Journal, StateError, StateFiles};
use crate::takeover::{adopt, Adopted, Fit, Internal, Sessions, Stopper, Stored, STOP_WAIT};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The metrics listener could not be started.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The PASID space configuration is invalid.
    #[error("invalid PASID space: {0}")]
    Space(#[from] SpaceError),
    /// A VM slot could not be registered.
    #[error("cannot register VM: {0}")]
    Registry(#[from] RegistryError),
    /// A socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The inherited descriptor is not a listening Unix socket.
    #[error("--fd {fd}: {reason}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        reason: String,
    },
    /// The control socket's directory could not be created.
    #[error("cannot create {path:?}: {source}")]
    ControlDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A thread could not be started.
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
    /// The QEMU process watcher could not be set up.
    #[error("cannot set up the QEMU process watcher: {0}")]
    QemuWatch(std::io::Error),
    /// A VM slot stopped serving.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// Privileges could not be dropped or the seccomp filter installed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The durable state could not be opened, read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The sd-daemon(3) priority prefix (`<N>`) journald reads for `level`:
/// error 3, warning 4, info 6, debug 7 (trace too: syslog has nothing
/// below debug).
pub fn journal_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether `journal_stream` (the `JOURNAL_STREAM` variable systemd sets,
/// "DEV:INO" in decimal) names the file standard error is now. The
/// variable is inherited by whatever the service starts, stderr redirected
/// or not, so only a match means the lines go to journald; priority
/// prefixes written into a log file would be noise.
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata())
        .is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino))
}

/// Installs the logger: `level` (`--log-level`), with `RUST_LOG`'s
/// directives, when set, applied on top (so `RUST_LOG` wins where both
/// speak). When standard error is the journal, each line is the message
/// alone behind its sd-daemon priority prefix, so `journalctl -p warning`
/// works and journald's own timestamp is the only one.
pub fn init_logger(level: LogLevel) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level.filter());
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if std::env::var("JOURNAL_STREAM").is_ok_and(|v| stderr_is(&v)) {
        builder.format(|out, record| {
            writeln!(
                out,
                "<{}>{}",
                journal_priority(record.level()),
                record.args()
            )
        });
    }
    builder.init();
}

/// Opens the notify socket (`NOTIFY_SOCKET`, `Type=notify`), before the
/// seccomp filter, which forbids creating it later. A failure is logged
/// and the daemon goes on without it: it serves either way, and systemd
/// then fails the start by its own timeout, which the log line explains.
fn open_notifier() -> Option<Arc<Notifier>> {
    match Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            warn!(
                "event=notify socket={} error={} (systemd will time the start out; \
                 the socket must be a path socket the daemon's user can write)",
                crate::logfmt::Value(
                    std::env::var_os("NOTIFY_SOCKET")
                        .unwrap_or_default()
                        .to_string_lossy()
                ),
                crate::logfmt::Value(e)
            );
            None
        }
    }
}

/// Tells the service manager the daemon is ready, when it asked.
fn notify_ready(notifier: Option<&Notifier>) {
    let Some(n) = notifier else {
        return;
    };
    let socket = crate::logfmt::Value(n.target());
    match n.ready() {
        Ok(()) => info!("event=notify state=READY socket={socket}"),
        Err(e) => warn!(
            "event=notify socket={socket} error={} (systemd will time the start out; \
             the socket must be a path socket the daemon's user can write)",
            crate::logfmt::Value(e)
        ),
    }
}

/// What ends the daemon's wait.
enum Event {
    Signal(i32),
    SlotFailed(SlotError),
}

/// Takes ownership of an inherited listening socket.
fn inherited_listener(fd: RawFd) -> Result<UnixListener, DaemonError> {
    let bad = |reason: &str| DaemonError::BadFd {
        fd,
        reason: reason.to_string(),
    };
    // Only an open descriptor may be owned; /proc/self/fd lists them.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(bad("not a socket (not an open descriptor)"));
    }
    // SAFETY: the descriptor is open (checked above) and was inherited for
    // this purpose (--fd): nothing else in the process owns it. No crate
    // can make adopting a descriptor number safe.
    let inherited = unsafe { OwnedFd::from_raw_fd(fd) };
    let refusal = match getsockopt(&inherited, AcceptConn) {
        Ok(true) => None,
        Ok(false) => Some(
            "is a connected socket; vhost-user-pasid needs a listening Unix socket \
             (bind and listen, then pass it, as libvirt does for virtiofsd)"
                .to_string(),
        ),
        Err(e) => Some(format!("not a socket ({})", std::io::Error::from(e))),
    };
    if let Some(reason) = refusal {
        // Refused: left open, as found (it may be standard error).
        let _ = inherited.into_raw_fd();
        return Err(bad(&reason));
    }
    let _ = fcntl(&inherited, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Ok(UnixListener::from(inherited))
}

fn space_id() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1
}

fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // After --user, a directory that user cannot write keeps the file;
        // the next start replaces the stale socket.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => warn!(
            "cannot remove {}: {e}; it is replaced at the next start (give the --user \
             account write access to its directory to have it removed at exit)",
            path.display()
        ),
        Err(e) => error!("cannot remove {}: {e}", path.display()),
    }
}

/// Where compactions get the state they write: the registry's image,
/// built and written under its lock. Weak: the registry holds the journal.
fn image_source(registry: &Arc<Mutex<Registry>>) -> ImageSource {
    let registry = Arc::downgrade(registry);
    ImageSource::new(move |compact| {
        if let Some(registry) = registry.upgrade() {
            let reg = registry.lock().unwrap_or_else(|p| p.into_inner());
            compact(&|| reg.image());
        }
    })
}

/// Durable state as loaded, before its journal starts.
type LoadedState = Option<(StateFiles, crate::state::Loaded)>;

/// Phase 1: the PASID space and the registry, from durable state when
/// `--state-dir` is given. Returns the time the state work took.
fn load_state(config: &Config) -> Result<(Registry, LoadedState, Duration), DaemonError> {
    let space = PasidSpace::new(SpaceConfig {
        pasid_bits: config.pasid_bits,
        reserved: config.reserved.clone(),
    })?;
    let loading = Instant::now();
    let state = match &config.state_dir {
        Some(dir) => {
            let files = StateFiles::open(dir)?;
            let loaded = files.load()?;
            Some((files, loaded))
        }
        None => None,
    };
    let mut registry = match &state {
        Some((files, loaded)) => {
            let (space, space_id, vms) = recover(space, space_id(), files, loaded)?.into_parts();
            Registry::restored(space, space_id, vms)
        }
        None => Registry::new(space, space_id()),
    };
    registry.set_rate_limit(config.rate_limit);
    Ok((registry, state, loading.elapsed()))
}

/// Every socket the daemon listens on, bound before the sandbox.
struct Bound {
    slots: Vec<VmSlot>,
    control: UnixListener,
    /// Socket files to remove at exit.
    paths: Vec<PathBuf>,
    /// Directories created for them.
    created_dirs: Vec<PathBuf>,
}

/// The internal listener's path: beside the control socket, so that it
/// lives wherever the operator keeps the daemon's private sockets.
fn internal_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".internal");
    PathBuf::from(p)
}

/// Phase 2: configures each VM slot in the registry and binds its socket,
/// the control socket and the internal listener of the per-session
/// daemons.
fn bind_sockets(
    config: &Config,
    registry: &mut Registry,
) -> Result<(Bound, Internal), DaemonError> {
    let mut slots = Vec::new();
    let mut paths = Vec::new();
    for slot in &config.slots {
        let limits = OwnerLimits {
            quota: slot.quota,
            range: slot.range.clone(),
        };
        let vm = registry.configure_vm(&slot.name, &slot.source.label(), limits)?;
        registry.set_lease_cap(vm, slot.lease);
        registry.set_holdover(vm, Duration::from_secs(slot.holdover_secs.into()));
        let listener = match &slot.source {
            SlotSource::Path(p) => {
                let l = bind(p, &config.access)?;
                paths.push(p.clone());
                l
            }
            SlotSource::Fd(fd) => inherited_listener(*fd)?,
        };
        slots.push(VmSlot {
            name: slot.name.clone(),
            vm,
            socket: slot.source.label(),
            listener,
            request_slice: config.request_slice,
        });
    }

    let mut created_dirs = Vec::new();
    if let Some(dir) = config.control_socket.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::ControlDir {
                path: dir.to_path_buf(),
                source,
            })?;
            created_dirs.push(dir.to_path_buf());
        }
    }
    // Owner only, unless a group is given read-only access (control.rs
    // checks each peer's credentials before changing anything).
    let control = bind(
        &config.control_socket,
        &SocketAccess {
            mode: Some(if config.control_gid.is_some() {
                0o660
            } else {
                0o600
            }),
            gid: config.control_gid,
        },
    )?;
    paths.push(config.control_socket.clone());
    // The daemon's own user only: whoever connects here is served as the
    // VM the next session belongs to.
    let internal = internal_path(&config.control_socket);
    let listener = bind(
        &internal,
        &SocketAccess {
            mode: Some(0o600),
            gid: None,
        },
    )?;
    paths.push(internal.clone());
    let bound = Bound {
        slots,
        control,
        paths,
        created_dirs,
    };
    Ok((bound, Internal::new(listener, internal)))
}

/// Phase 3: with durable state, starts the journal on the loaded state and
/// logs what was loaded.
fn start_journal(
    config: &Config,
    registry: &mut Registry,
    state: LoadedState,
    mut state_time: Duration,
) -> Result<Option<Arc<Journal>>, DaemonError> {
    let Some((files, loaded)) = state else {
        return Ok(None);
    };
    let dir = files.dir().display().to_string();
    let records: usize = loaded.commits.iter().map(|c| c.records.len()).sum();
    let frames = loaded.commits.len();
    let starting = Instant::now();
    let started = Arc::new(Journal::start(
        files,
        &registry.image(),
        loaded.generation + 1,
        loaded.slot ^ usize::from(loaded.generation > 0),
        config.journal_limit,
    )?);
    registry.attach_change_log(started.clone());
    state_time += starting.elapsed();
    registry.warn_unconfigured();
    let stats = registry.stats();
    info!(
        "event=state-loaded dir={} generation={} frames={frames} records={records} \
         owners={} pasids={} references={} ms={}",
        crate::logfmt::Value(&dir),
        loaded.generation + 1,
        stats.space.owners,
        stats.space.allocated,
        stats.space.total_refs,
        state_time.as_millis()
    );
    Ok(Some(started))
}

/// Phase 4: sorts the sessions a previous daemon left in the descriptor
/// store by VM slot; drops, with a log line each, those this daemon cannot
/// take over.
fn take_over_sessions(
    inherited: Inherited,
    config: &Config,
    registry: &mut Registry,
    notifier: Option<&Notifier>,
) -> BTreeMap<String, Stored> {
    if inherited.is_empty() {
        return BTreeMap::new();
    }
    let slots: Vec<String> = config.slots.iter().map(|s| s.name.clone()).collect();
    let fit = Fit {
        slots: &slots,
        state_space: config.state_dir.as_ref().map(|_| registry.stats().space_id),
    };
    let found = inherited.len();
    let Adopted { sessions, ended } = adopt(inherited, &fit, notifier);
    info!(
        "event=takeover descriptors={found} sessions={} started={}",
        sessions.len(),
        sessions.values().filter(|s| s.started()).count()
    );
    // Those connections ended while no daemon ran: their end is handled
    // now, as the old daemon would have (reclaim, or hold-over).
    for name in ended {
        if let Ok(vm) = registry.vm(&name) {
            info!("vm={name} event=session-ended-while-down");
            registry.end_connection(vm, Instant::now());
        }
    }
    if let Some(point) = registry.commit_point() {
        point.settle();
    }
    sessions
}

/// What the serving threads take, made before the sandbox.
struct Serving {
    bound: Bound,
    stored: BTreeMap<String, Stored>,
    metrics: Option<std::net::TcpListener>,
    signals: Signals,
}

/// Phase 5: the threads that serve: signals, one per VM slot, hold-overs,
/// QEMU exits, control, metrics.
fn spawn_threads(
    serving: Serving,
    registry: &Arc<Mutex<Registry>>,
    (sessions, watch): (&Arc<Sessions>, &Arc<QemuWatch>),
    tx: &mpsc::Sender<Event>,
) -> Result<(), DaemonError> {
    let Serving {
        bound,
        mut stored,
        metrics,
        mut signals,
    } = serving;
    let sig_tx = tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = sig_tx.send(Event::Signal(sig));
            }
        })
        .map_err(DaemonError::Thread)?;

    for slot in bound.slots {
        info!(
            "vm={} event=listen socket={}",
            slot.name,
            crate::logfmt::Value(&slot.socket)
        );
        let registry = registry.clone();
        let shared = (sessions.clone(), watch.clone());
        let resume = stored.remove(&slot.name);
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("slot-{}", slot.name))
            .spawn(move || {
                if let Err(e) = serve_slot(slot, registry, shared, resume) {
                    let _ = tx.send(Event::SlotFailed(e));
                }
            })
            .map_err(DaemonError::Thread)?;
    }
    // Always: `pasidctl detach` and `reserve` hold PASIDs over for VMs
    // whose own hold-over is 0.
    let held = registry.clone();
    thread::Builder::new()
        .name("holdover".into())
        .spawn(move || expire_holdovers(&held))
        .map_err(DaemonError::Thread)?;
    let (watched, watching) = (watch.clone(), registry.clone());
    thread::Builder::new()
        .name("qemu-exit".into())
        .spawn(move || watched.run(watching))
        .map_err(DaemonError::Thread)?;
    let control_registry = registry.clone();
    let control = bound.control;
    thread::Builder::new()
        .name("control".into())
        .spawn(move || serve_control(control, control_registry))
        .map_err(DaemonError::Thread)?;
    let scraped = registry.clone();
    crate::metrics::spawn_listener(
        metrics,
        Arc::new(move || crate::scrape::render_shared(&scraped)),
    )?;
    Ok(())
}

/// Which build this is, for the start line: `VPASID_BUILD_ID` at build
/// time (a packager's build number; the upgrade test builds a second
/// daemon with it set), else the crate version.
const BUILD: &str = match option_env!("VPASID_BUILD_ID") {
    Some(id) => id,
    None => env!("CARGO_PKG_VERSION"),
};

/// Runs the daemon until SIGTERM/SIGINT (Ok) or a failure (Err).
pub fn start_backend(config: Config) -> Result<(), DaemonError> {
    // Before any thread: adopting descriptors changes the environment.
    let inherited = take_inherited();
    let (mut registry, state, state_time) = load_state(&config)?;
    let (bound, internal) = bind_sockets(&config, &mut registry)?;
    let journal = start_journal(&config, &mut registry, state, state_time)?;
    // Opened before the filter, which forbids creating it.
    let notifier = open_notifier();
    let stored = take_over_sessions(inherited, &config, &mut registry, notifier.as_deref());
    // VMs bound to a QEMU process that exited while no daemon ran are
    // released; live ones are watched from now on.
    let watch = Arc::new(QemuWatch::new().map_err(DaemonError::QemuWatch)?);
    let resumed: Vec<&str> = stored.keys().map(String::as_str).collect();
    watch.check_at_start(&mut registry, &resumed);
    if let Some(point) = registry.commit_point() {
        point.settle();
    }
    // VMs that held PASIDs at the restart and whose session did not come
    // back through the store: their hold-over runs from now, and ends when
    // their QEMU, if it lives, exits (hold-over 0: kept until then, or
    // until a re-attach).
    let now = Instant::now();
    for slot in &config.slots {
        if let (false, Ok(vm)) = (stored.contains_key(&slot.name), registry.vm(&slot.name)) {
            registry.hold_over_after_restart(vm, now);
        }
    }

    let stats = registry.stats();
    info!(
        "event=start pasid_bits={} capacity={} reserved={} vms={} control={} build={}",
        stats.space.pasid_bits,
        stats.space.capacity,
        stats.space.reserved,
        stats.vms,
        crate::logfmt::Value(config.control_socket.display()),
        crate::logfmt::Value(BUILD)
    );
    let space_id = stats.space_id;
    let registry = Arc::new(Mutex::new(registry));
    if let Some(journal) = journal {
        journal.set_image_source(image_source(&registry));
    }
    let paths = bound.paths.clone();
    let sessions = Arc::new(Sessions {
        notifier: notifier.clone(),
        internal,
        stopper: Stopper::new().map_err(DaemonError::Signals)?,
        space_id,
    });

    let (tx, rx) = mpsc::channel();
    // Before the filter: signal-hook makes a socket pair.
    let signals = Signals::new([SIGTERM, SIGINT]).map_err(DaemonError::Signals)?;
    let metrics = crate::metrics::bind_listener(config.metrics_listen)?;

    // Every socket is bound: give up what serving does not need, before
    // any thread starts (threads inherit the filter). Bind every listener
    // (VM slots, control, internal, metrics) above this point: after it
    // the seccomp filter refuses bind() and listen() (docs/security.md).
    if let Some(user) = &config.user {
        hand_over(&paths, &bound.created_dirs, user)?;
        drop_privileges(user)?;
    }
    // Ready: every listener is bound and listening (a client connecting
    // now waits in its backlog until the threads below accept), and the
    // privileges are gone, so a failed drop is a failed start, not a
    // failure after READY.
    notify_ready(notifier.as_deref());
    install_seccomp(config.seccomp)?;
    info!(
        "event=sandbox user={} seccomp={} rate_limit={}",
        config
            .user
            .as_ref()
            .map_or("(unchanged)", |u| u.name.as_str()),
        config.seccomp,
        config.rate_limit.map_or_else(
            || "off".to_string(),
            |r| format!("{}/s,burst={}", r.per_second, r.burst)
        ),
    );
    let serving = Serving {
        bound,
        stored,
        metrics,
        signals,
    };
    spawn_threads(serving, &registry, (&sessions, &watch), &tx)?;

    let result = match rx.recv() {
        Ok(Event::Signal(sig)) => {
            info!("event=stop signal={sig}");
            Ok(())
        }
        Ok(Event::SlotFailed(e)) => Err(e.into()),
        Err(_) => Ok(()),
    };
    // Each session stops at a message boundary and stays in the store
    // (when there is one) for the next start.
    if !sessions.stopper.stop(STOP_WAIT) {
        warn!(
            "event=stop-timeout a session did not reach a message boundary within {} ms",
            STOP_WAIT.as_millis()
        );
    }
    for path in &paths {
        remove_socket(path);
    }
    result
}

/// Longest the hold-over thread sleeps: a hold-over that begins while it
/// sleeps is reclaimed at most this late.
const HOLDOVER_TICK: Duration = Duration::from_secs(1);

/// Reclaims the PASIDs of VMs whose hold-over or reservation ran out,
/// waking at the next expiry or after [`HOLDOVER_TICK`], whichever comes
/// first.
fn expire_holdovers(registry: &Mutex<Registry>) {
    loop {
        let (next, commit) = {
            let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
            let next = reg.expire_holdovers(Instant::now());
            (next, reg.commit_point())
        };
        if let Some(point) = commit {
            point.settle();
        }
        let now = Instant::now();
        let wait = next.map_or(HOLDOVER_TICK, |t| t.saturating_duration_since(now));
        thread::sleep(wait.min(HOLDOVER_TICK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities_follow_sd_daemon() {
        use log::Level;
        let got: Vec<u8> = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ]
        .into_iter()
        .map(journal_priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn malformed_journal_stream_is_not_stderr() {
        for bad in ["", "12", "a:b", "1:", ":2", "1:2:3", "-1:5"] {
            assert!(!stderr_is(bad), "{bad:?}");
        }
        // The test harness's stderr, named right, is recognised.
        let meta = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| std::fs::File::from(fd).metadata())
            .unwrap();
        assert!(stderr_is(&format!("{}:{}", meta.dev(), meta.ino())));
        assert!(!stderr_is(&format!("{}:{}", meta.dev(), meta.ino() + 1)));
    }
}
