// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Containment: what the daemon gives up once its sockets are bound.
//!
//! 1. [`hand_over`] gives the socket files it bound (and the control
//!    socket's directory, if it created it) to the `--user` account, so the
//!    unprivileged process can still remove them at exit.
//! 2. [`drop_privileges`] switches to that account for good: supplementary
//!    groups cleared, real/effective/saved gid and uid set, so no capability
//!    survives and `setuid(0)` fails.
//! 3. [`install_seccomp`] installs a seccomp-bpf allow-list on every thread
//!    (`--seccomp kill`, the default): the system calls the daemon makes
//!    while serving VM sessions, control clients and shutdown, and nothing
//!    else. No `execve`, `fork`, `open` for writing, `socket`, `ptrace`,
//!    `mount`, no executable mappings. Threads created later inherit it.
//!
//! See docs/security.md for the threat model. Set-up (parsing, binding,
//! reading `/proc/net/unix`, name lookups) happens before any of this.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use nix::errno::Errno;
use nix::sys::prctl::set_no_new_privs;
use nix::unistd::{geteuid, getuid, setgroups, setresgid, setresuid, setuid, Gid, Uid};
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};

/// What the seccomp filter does with a system call outside the allow-list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SeccompMode {
    /// Kill the daemon with SIGSYS (the kernel logs the system call number
    /// as an audit record, `type=1326 ... syscall=N`).
    #[default]
    Kill,
    /// Allow the call but have the kernel log it: for finding a call the
    /// allow-list lacks.
    Log,
    /// No filter (debugging only).
    Off,
}

/// The mode as `--seccomp` spells it, for log lines.
impl std::fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => Ok(()),
        }
    }
}

/// The account `--user` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Its name (or the number given).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Errors of the sandbox set-up; each stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `--user` names no account.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// `--user` needs root.
    #[error("--user {user}: switching users needs root, but the daemon runs as uid {uid}")]
    NotRoot {
        /// The account asked for.
        user: String,
        /// The uid the daemon runs as.
        uid: u32,
    },
    /// A socket file or directory could not be given to the user.
    #[error("cannot give {path:?} to user {user}: {source}")]
    Chown {
        /// The file.
        path: PathBuf,
        /// The account.
        user: String,
        /// Cause.
        source: io::Error,
    },
    /// A step of the privilege drop failed.
    #[error("cannot switch to user {user} ({step}): {source}")]
    Drop {
        /// The account.
        user: String,
        /// The failing call.
        step: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// After the drop, root could be regained: refuse to run.
    #[error("privileges of user {0} are not dropped for good: setuid(0) still works")]
    NotDropped(String),
    /// The filter could not be compiled.
    #[error("cannot build the seccomp filter: {0}")]
    Filter(#[from] BackendError),
    /// The filter could not be installed.
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// Looks up `--user` (a name, or a number) in the password database.
pub fn lookup_user(user: &str) -> Result<User, SandboxError> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        Ok(Some(account)) => Ok(User {
            name: user.to_string(),
            uid: account.uid.as_raw(),
            gid: account.gid.as_raw(),
        }),
        Ok(None) | Err(_) => Err(SandboxError::UnknownUser(user.to_string())),
    }
}

fn chown(path: &Path, uid: u32, gid: Option<u32>, user: &User) -> Result<(), SandboxError> {
    std::os::unix::fs::chown(path, Some(uid), gid).map_err(|source| SandboxError::Chown {
        path: path.to_path_buf(),
        user: user.name.clone(),
        source,
    })
}

/// Gives the bound socket files to `user` (their group is left as set), and
/// the directories the daemon created for them (owner and group), so that
/// the unprivileged daemon can remove the sockets at exit. Directories the
/// operator made are left alone: sockets in a directory `user` cannot write
/// stay behind at exit and are replaced at the next start.
pub fn hand_over(
    sockets: &[PathBuf],
    created_dirs: &[PathBuf],
    user: &User,
) -> Result<(), SandboxError> {
    for dir in created_dirs {
        chown(dir, user.uid, Some(user.gid), user)?;
    }
    for path in sockets {
        chown(path, user.uid, None, user)?;
    }
    Ok(())
}

/// Maps a failed step of the privilege drop to its error.
fn drop_step<'a>(user: &'a User, step: &'static str) -> impl FnOnce(Errno) -> SandboxError + 'a {
    move |errno| SandboxError::Drop {
        user: user.name.clone(),
        step,
        source: errno.into(),
    }
}

/// Switches the whole process to `user` for good. Call it before starting
/// threads where possible; the journal writer may already run, so each id
/// change goes through the C library, which applies it to every thread of
/// the process (the bare system calls change only the calling thread).
pub fn drop_privileges(user: &User) -> Result<(), SandboxError> {
    let (uid, euid) = (getuid().as_raw(), geteuid().as_raw());
    if euid != 0 {
        if uid == user.uid && euid == user.uid {
            return Ok(()); // already that user: nothing to drop
        }
        return Err(SandboxError::NotRoot {
            user: user.name.clone(),
            uid: euid,
        });
    }
    let (new_uid, new_gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    // Order matters: groups and gid while still root, uid last.
    setgroups(&[]).map_err(drop_step(user, "setgroups"))?;
    setresgid(new_gid, new_gid, new_gid).map_err(drop_step(user, "setresgid"))?;
    setresuid(new_uid, new_uid, new_uid).map_err(drop_step(user, "setresuid"))?;
    set_no_new_privs().map_err(drop_step(user, "prctl(PR_SET_NO_NEW_PRIVS)"))?;
    if user.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(SandboxError::NotDropped(user.name.clone()));
    }
    Ok(())
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// One rule: every condition must hold.
fn all(conds: Vec<SeccompCondition>) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(conds)
}

/// Rules allowing argument `arg` to be any of `values`.
fn arg_in(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, BackendError> {
    values
        .iter()
        .map(|v| all(vec![cond(arg, SeccompCmpOp::Eq, *v)?]))
        .collect()
}

/// A rule: argument `arg` has none of the bits of `mask` set.
fn lacks(arg: u8, mask: u64) -> Result<Vec<SeccompRule>, BackendError> {
    Ok(vec![all(vec![cond(
        arg,
        SeccompCmpOp::MaskedEq(mask),
        0,
    )?])?])
}

/// The allow-list: system call number to the rules that allow it (an empty
/// list allows any arguments).
pub fn allowed_syscalls() -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let any = Vec::new;
    let mut m: Vec<(libc::c_long, Vec<SeccompRule>)> = vec![
        // Memory: the allocator, thread stacks and guard pages, guest memory
        // (the frontend's memfds mapped MAP_SHARED). Never executable.
        (libc::SYS_brk, any()),
        (libc::SYS_mmap, lacks(2, libc::PROT_EXEC as u64)?),
        (libc::SYS_mprotect, lacks(2, libc::PROT_EXEC as u64)?),
        (libc::SYS_munmap, any()),
        (libc::SYS_mremap, any()),
        (libc::SYS_madvise, any()),
        // Threads (vring workers, control clients): clone only with
        // CLONE_THREAD, so never a new process. clone3 hides its flags in
        // memory; it gets ENOSYS from a second filter and glibc falls back
        // to clone.
        (
            libc::SYS_clone,
            vec![all(vec![cond(
                0,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )?])?],
        ),
        (libc::SYS_clone3, any()),
        (libc::SYS_set_robust_list, any()),
        (libc::SYS_rseq, any()),
        (libc::SYS_futex, any()),
        (libc::SYS_sched_yield, any()),
        (libc::SYS_sched_getaffinity, any()),
        (libc::SYS_gettid, any()),
        (libc::SYS_getpid, any()),
        // The control socket compares a client's uid with the daemon's.
        (libc::SYS_getuid, any()),
        (libc::SYS_geteuid, any()),
        (libc::SYS_getgid, any()),
        (libc::SYS_getegid, any()),
        (
            libc::SYS_prctl,
            arg_in(0, &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64])?,
        ),
        (libc::SYS_exit, any()),
        (libc::SYS_exit_group, any()),
        // Signals: SIGTERM/SIGINT handling, per-thread alternate stacks.
        (libc::SYS_rt_sigaction, any()),
        (libc::SYS_rt_sigprocmask, any()),
        (libc::SYS_rt_sigreturn, any()),
        (libc::SYS_sigaltstack, any()),
        (libc::SYS_restart_syscall, any()),
        // Descriptors already open: sockets, eventfds, memfds, logs.
        (libc::SYS_read, any()),
        (libc::SYS_readv, any()),
        (libc::SYS_write, any()),
        (libc::SYS_writev, any()),
        (libc::SYS_close, any()),
        (libc::SYS_lseek, any()),
        (libc::SYS_fstat, any()),
        (libc::SYS_newfstatat, any()),
        (libc::SYS_statx, any()),
        (
            libc::SYS_fcntl,
            arg_in(
                1,
                &[
                    libc::F_GETFD as u64,
                    libc::F_SETFD as u64,
                    libc::F_GETFL as u64,
                    libc::F_SETFL as u64,
                    libc::F_DUPFD_CLOEXEC as u64,
                    libc::F_GET_SEALS as u64,
                ],
            )?,
        ),
        // Ioctl numbers are c_ulong on glibc, c_int on musl.
        #[allow(clippy::unnecessary_cast)]
        (
            libc::SYS_ioctl,
            arg_in(1, &[libc::FIONBIO as u64, libc::FIOCLEX as u64])?,
        ),
        // Read-only opens (e.g. /proc/self for metrics or a backtrace);
        // nothing is created, truncated or opened for writing. Listing a
        // directory opened so: process_open_fds counts /proc/self/fd.
        (
            libc::SYS_openat,
            lacks(
                2,
                (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND)
                    as u64,
            )?,
        ),
        (libc::SYS_getdents64, any()),
        // Durable state (--state-dir): its files are opened at start-up;
        // serving writes, truncates and syncs them through those descriptors.
        (libc::SYS_pwrite64, any()),
        (libc::SYS_ftruncate, any()),
        (libc::SYS_fdatasync, any()),
        (libc::SYS_fsync, any()),
        // Removing our own socket files at exit.
        (libc::SYS_unlinkat, any()),
        // Sockets already bound: vhost-user (with SCM_RIGHTS), control and
        // metrics clients. No new sockets, no bind, no connect.
        (libc::SYS_accept4, any()),
        (libc::SYS_recvfrom, any()),
        (libc::SYS_recvmsg, any()),
        (libc::SYS_sendto, any()),
        (libc::SYS_sendmsg, any()),
        (libc::SYS_shutdown, any()),
        (libc::SYS_getsockopt, any()),
        (libc::SYS_setsockopt, any()),
        (libc::SYS_getsockname, any()),
        (libc::SYS_getpeername, any()),
        // Session proxies (takeover.rs): each session's daemon is served
        // on a new connection to the internal listener, a Unix stream
        // socket bound before this filter. Only Unix stream sockets can be
        // made; connect(2)'s address cannot be checked here, so the file
        // modes of the sockets a compromised daemon could reach are what
        // guard them (docs/security.md).
        (
            libc::SYS_socket,
            vec![all(vec![
                cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                cond(
                    1,
                    SeccompCmpOp::Eq,
                    (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                )?,
            ])?],
        ),
        (libc::SYS_connect, any()),
        // Each session's image: a memfd (no executable seals or mappings:
        // mmap is checked above), rewritten with pwrite.
        (
            libc::SYS_memfd_create,
            arg_in(1, &[libc::MFD_CLOEXEC as u64])?,
        ),
        // A running vring's used index, read from guest memory at a
        // take-over.
        (libc::SYS_pread64, any()),
        // Whether two descriptors are one open file (KCMP_FILE only), as
        // systemd's store tells them apart.
        (libc::SYS_kcmp, arg_in(2, &[0])?),
        // The QEMU process of each new connection, watched through a pidfd
        // (qemu_watch.rs); no flags (PIDFD_NONBLOCK and any later ones are
        // not needed). pidfd_open needs no permission over the process and
        // does not go through /proc, so ProtectProc= does not hide it.
        (libc::SYS_pidfd_open, arg_in(1, &[0])?),
        // The answering threads' time slice (sched_slice.rs), each its own
        // (pid 0) only.
        (libc::SYS_sched_getattr, arg_in(0, &[0])?),
        (libc::SYS_sched_setattr, arg_in(0, &[0])?),
        // Waiting: vring epoll loops, eventfd kicks and calls, poll loops.
        (libc::SYS_epoll_create1, any()),
        (libc::SYS_epoll_ctl, any()),
        (libc::SYS_epoll_pwait, any()),
        (libc::SYS_eventfd2, any()),
        (libc::SYS_ppoll, any()),
        // Time and randomness (hash map keys).
        (libc::SYS_clock_gettime, any()),
        (libc::SYS_clock_nanosleep, any()),
        (libc::SYS_nanosleep, any()),
        (libc::SYS_getrandom, any()),
    ];
    #[cfg(target_arch = "x86_64")]
    m.extend([
        (libc::SYS_poll, any()),
        (libc::SYS_epoll_wait, any()),
        (libc::SYS_unlink, any()),
        (libc::SYS_accept, any()),
    ]);
    Ok(m.into_iter().collect())
}

fn target_arch() -> Result<seccompiler::TargetArch, BackendError> {
    std::env::consts::ARCH.try_into()
}

/// The filters for `mode`, in installation order; empty for
/// [`SeccompMode::Off`].
pub fn filters(mode: SeccompMode) -> Result<Vec<BpfProgram>, BackendError> {
    let mismatch = match mode {
        SeccompMode::Off => return Ok(Vec::new()),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let allow = SeccompFilter::new(
        allowed_syscalls()?,
        mismatch,
        SeccompAction::Allow,
        target_arch()?,
    )?;
    // Filters stack and the strictest answer wins, so this one turns the
    // allowed clone3 into ENOSYS. It goes first: once the allow-list is in,
    // no further filter can be installed (prctl and seccomp are not in it).
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        target_arch()?,
    )?;
    Ok(vec![no_clone3.try_into()?, allow.try_into()?])
}

/// Installs the filters of `mode` on every thread of the process; threads
/// started afterwards inherit them. Returns whether a filter was installed.
pub fn install_seccomp(mode: SeccompMode) -> Result<bool, SandboxError> {
    let programs = filters(mode)?;
    for program in &programs {
        seccompiler::apply_filter_all_threads(program)?;
    }
    Ok(!programs.is_empty())
}

/// Held for writing by a test while it forks; for reading by a test that
/// needs what it dropped to be closed (a socket that must stop listening,
/// a state directory's `flock`): a forked child holds copies of every
/// descriptor of the test process until it exits.
#[cfg(test)]
static FORKING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Keeps forked test children away while held, so a descriptor the test
/// closes is closed (tests holding it still run side by side).
#[cfg(test)]
pub(crate) fn no_forks() -> std::sync::RwLockReadGuard<'static, ()> {
    FORKING
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{open, OFlag};
    use nix::mount::{mount, MsFlags};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use nix::sys::stat::Mode;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, getpid, ForkResult};
    use std::sync::PoisonError;

    /// What a forked child reported back.
    #[derive(Debug, PartialEq, Eq)]
    enum ChildEnd {
        Exited(i32),
        Signalled(i32),
    }

    /// Runs `body` in a forked child after installing the filters of
    /// `mode`; the child exits with `body`'s return value. Only
    /// async-signal-safe calls happen in the child: the filters are built
    /// before the fork.
    fn in_filtered_child(mode: SeccompMode, body: fn() -> i32) -> ChildEnd {
        let programs = filters(mode).unwrap();
        let _forking = FORKING.write().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the child runs only `apply_filter` (prctl + seccomp on a
        // prepared program), `body` (system calls that do not allocate)
        // and `_exit`, all async-signal-safe.
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Parent { child } => child,
            ForkResult::Child => {
                let code = if programs
                    .iter()
                    .all(|p| seccompiler::apply_filter(p).is_ok())
                {
                    body()
                } else {
                    100
                };
                // SAFETY: _exit is async-signal-safe; no crate wraps it
                // (std's exit runs atexit handlers, unsafe in a forked child).
                unsafe { libc::_exit(code) };
            }
        };
        match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => ChildEnd::Exited(code),
            WaitStatus::Signaled(_, signal, _) => ChildEnd::Signalled(signal as i32),
            other => panic!("child neither exited nor was killed: {other:?}"),
        }
    }

    fn errno() -> i32 {
        Errno::last_raw()
    }

    /// pidfd_open of a process (here the child itself) works under the
    /// filter: the QEMU watcher opens one per connection after the
    /// sandbox is in place.
    #[test]
    fn pidfd_open_is_allowed() {
        let end = in_filtered_child(SeccompMode::Kill, || {
            // SAFETY: pidfd_open takes two integers; no crate wraps it
            // without allocating (the forked child must not).
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, getpid().as_raw(), 0) };
            i32::from(fd >= 0)
        });
        assert_eq!(end, ChildEnd::Exited(1));
    }

    /// Allowed calls work under the filter.
    #[test]
    fn allowed_calls_pass() {
        let end = in_filtered_child(SeccompMode::Kill, || {
            let pid = getpid();
            let wrote = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).and_then(|fd| fd.write(1));
            i32::from(pid.as_raw() > 0 && wrote == Ok(8))
        });
        assert_eq!(end, ChildEnd::Exited(1));
    }

    /// System calls outside the allow-list kill the process with SIGSYS:
    /// `execve`, `ptrace`, `mount`, `socket`, `fork`, an executable
    /// mapping, a file opened for writing.
    #[test]
    fn forbidden_calls_kill_with_sigsys() {
        type Case = (&'static str, fn() -> i32);
        let cases: [Case; 7] = [
            ("execve", || {
                let path = c"/bin/true";
                let argv = [path.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: NUL-terminated path and null-terminated arrays.
                // Not nix's execve: it builds its arrays on the heap, and
                // the forked child of a threaded process must not allocate.
                unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                0
            }),
            ("ptrace", || {
                let _ = nix::sys::ptrace::traceme();
                0
            }),
            ("mount", || {
                let none: Option<&str> = None;
                let _ = mount(Some("none"), "/tmp", Some("tmpfs"), MsFlags::empty(), none);
                0
            }),
            ("socket", || {
                let _ = socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::empty(),
                    None,
                );
                0
            }),
            ("fork", || {
                // SAFETY: raw clone without CLONE_THREAD (a fork); no
                // pointers. Raw on purpose: the filter must see these flags.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
                0
            }),
            ("mmap PROT_EXEC", || {
                // SAFETY: an anonymous mapping the kernel places (nix's
                // mmap is unsafe too: a mapping can alias memory).
                unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                0
            }),
            ("openat for writing", || {
                let _ = open(
                    "/tmp/vpasid-seccomp-test",
                    OFlag::O_WRONLY | OFlag::O_CREAT,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                );
                0
            }),
        ];
        for (name, body) in cases {
            assert_eq!(
                in_filtered_child(SeccompMode::Kill, body),
                ChildEnd::Signalled(libc::SIGSYS),
                "{name}"
            );
        }
    }

    /// clone3 is refused with ENOSYS (glibc then uses clone, whose flags
    /// the filter can see) rather than killing.
    #[test]
    fn clone3_is_refused_with_enosys() {
        let end = in_filtered_child(SeccompMode::Kill, || {
            // SAFETY: a null clone_args with size 0 is rejected before use.
            // No crate wraps clone3; the filter's answer is what is tested.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            i32::from(rc == -1 && errno() == libc::ENOSYS)
        });
        assert_eq!(end, ChildEnd::Exited(1));
    }

    /// `log` mode lets a forbidden call through (the kernel logs it).
    #[test]
    fn log_mode_does_not_kill() {
        let end = in_filtered_child(SeccompMode::Log, || {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::empty(),
                None,
            );
            i32::from(fd.is_ok())
        });
        assert_eq!(end, ChildEnd::Exited(1));
    }

    #[test]
    fn off_mode_has_no_filter() {
        assert!(filters(SeccompMode::Off).unwrap().is_empty());
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("0").unwrap().uid, 0);
        assert!(matches!(
            lookup_user("no-such-user-vpasid"),
            Err(SandboxError::UnknownUser(u)) if u == "no-such-user-vpasid"
        ));
    }
}
