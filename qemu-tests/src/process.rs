// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Child processes that cannot outlive the test, and bounded waits for the
//! files and sockets they create.
//!
//! Every child is forked by one long-lived spawner thread with
//! `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when the test process
//! dies, even by `SIGKILL` where no `Drop` runs. (The death signal follows
//! the *thread* that forked, hence the dedicated thread that never exits.)

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often bounded waits poll.
const POLL: Duration = Duration::from_millis(20);

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it receives `SIGKILL` when the test process exits.
pub fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // Never joined: this thread must live as long as the process.
        let spawned = thread::Builder::new()
            .name("qemu-tests-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The requester may have gone; nothing to do then.
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            // Without the thread every request fails with this error below.
            eprintln!("qemu-tests: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("qemu-tests spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("qemu-tests spawner thread is gone"))?
}

/// A child process that is killed (`SIGKILL`) and reaped when dropped, and
/// when the test process dies. Use it for daemons such as `vhost-user-pasid`.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`; `name` is used in error messages.
    pub fn spawn(name: impl Into<String>, cmd: Command) -> Result<Self> {
        let name = name.into();
        let child = spawn_tied(cmd).map_err(|e| Error::io(format!("spawning {name}"), e))?;
        Ok(ChildGuard {
            child,
            name,
            status: None,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take its piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for {}", self.name), e))?;
        }
        Ok(self.status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) if the process still runs.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| Error::io(self.name.clone(), io::Error::other("pid out of range")))?;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (so
        // it cannot have been reused), and a caller-chosen signal number.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(Error::io(
                format!("signalling {}", self.name),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::WaitTimeout {
                    what: format!("{} to exit", self.name),
                    timeout,
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Kills the process (`SIGKILL`) and reaps it; returns its exit status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // Fails only if it already exited: the wait below then reaps it.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("reaping {}", self.name), e))?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Waits up to `timeout` for `path` to exist.
pub fn wait_for_path(path: &Path, timeout: Duration) -> Result<()> {
    poll_until(timeout, &format!("{} to exist", path.display()), || {
        path.exists()
    })
}

/// Waits up to `timeout` until a Unix socket bound at `path` is listening,
/// read from `/proc/net/unix` without connecting (a vhost-user backend
/// serves the first connection it gets, so a probe must not connect).
pub fn wait_for_unix_listener(path: &Path, timeout: Duration) -> Result<()> {
    poll_until(
        timeout,
        &format!("a listening socket at {}", path.display()),
        || is_unix_listener(path),
    )
}

/// `__SO_ACCEPTCON`, the "listening" bit of `/proc/net/unix`'s Flags.
const SO_ACCEPTCON: u32 = 0x0001_0000;

fn is_unix_listener(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    // The table names sockets as they were bound, maybe relative: accept an
    // exact match, or a relative name that resolves to `path` here.
    let wanted = fs::canonicalize(path).ok();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(bound)) = (fields.get(3), fields.get(7)) else {
            return false;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        listening
            && (Path::new(bound) == path
                || fs::canonicalize(bound)
                    .ok()
                    .is_some_and(|b| Some(b) == wanted))
    })
}

fn poll_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::WaitTimeout {
                what: what.to_string(),
                timeout,
            });
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn child_guard_kills_on_drop() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let guard = ChildGuard::spawn("sleep", cmd).unwrap();
        let pid = guard.id();
        drop(guard);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn child_guard_wait_timeout_is_bounded() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut guard = ChildGuard::spawn("sleep", cmd).unwrap();
        let err = guard.wait_timeout(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, Error::WaitTimeout { .. }), "{err}");
        guard.signal(libc::SIGTERM).unwrap();
        assert!(!guard
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .success());
    }

    #[test]
    fn listener_detected_without_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(wait_for_unix_listener(&path, Duration::from_millis(50)).is_err());
        let listener = UnixListener::bind(&path).unwrap();
        wait_for_unix_listener(&path, Duration::from_secs(5)).unwrap();
        wait_for_path(&path, Duration::from_secs(1)).unwrap();
        listener.set_nonblocking(true).unwrap();
        // The probe must not have connected.
        assert!(listener.accept().is_err());
    }
}
