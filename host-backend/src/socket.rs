// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Binding Unix sockets the way an operator expects: a stale socket left by
//! a crash is replaced, a live one is never stolen, an over-long path is
//! refused by name, and mode and group are set before anyone connects.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::unistd::Group;

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes with NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Errors binding a socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Path longer than `sun_path`.
    #[error(
        "socket path {path:?} is {len} bytes; Unix sockets allow at most {max}: use a shorter path"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Something is listening on the path already.
    #[error("{0:?} is in use by a running process; stop it or choose another path")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0:?} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The group name is unknown.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A system call failed.
    #[error("{what} {path:?}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks the path length the kernel will accept.
pub fn check_path(path: &Path) -> Result<(), SocketError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// `__SO_ACCEPTCON` in the Flags column of /proc/net/unix: a listening socket.
const SO_ACCEPTCON_FLAG: u32 = 0x0001_0000;

/// Whether /proc/net/unix shows a listening socket bound at `path`.
/// `None` when /proc cannot be read.
fn listening_in_proc(path: &Path) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let absolute = std::path::absolute(path).ok();
    let listening = table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(bound)) = (cols.get(3), cols.get(7)) else {
            return false;
        };
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        let bound = Path::new(bound);
        flags & SO_ACCEPTCON_FLAG != 0 && (bound == path || Some(bound) == absolute.as_deref())
    });
    Some(listening)
}

/// Removes a socket file nobody listens on; refuses to touch a live one.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    // Looking the socket up in /proc does not disturb its owner; connecting
    // would look like a frontend to a running vhost-user daemon.
    let live = match listening_in_proc(path) {
        Some(live) => live,
        None => UnixStream::connect(path).is_ok(),
    };
    if live {
        return Err(SocketError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))
}

/// Resolves a group name (or number) to a gid.
pub fn group_id(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) | Err(_) => Err(SocketError::UnknownGroup(group.to_string())),
    }
}

/// Access settings applied to a freshly bound socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// File mode, e.g. 0o600.
    pub mode: Option<u32>,
    /// Group id to give the socket.
    pub gid: Option<u32>,
}

/// Binds a listening socket at `path`, replacing a stale one.
pub fn bind(path: &Path, access: &SocketAccess) -> Result<UnixListener, SocketError> {
    check_path(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create directory of", path))?;
    }
    clear_stale(path)?;
    let listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("cannot chown", path))?;
    }
    if let Some(mode) = access.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot chmod", path))?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_matches::assert_matches;

    #[test]
    fn stale_socket_is_replaced_live_one_is_not() {
        // No forked test child may keep `first` listening after its drop.
        let _no_fork = crate::sandbox::no_forks();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind(&path, &SocketAccess::default()).unwrap();
        assert_matches!(
            bind(&path, &SocketAccess::default()),
            Err(SocketError::InUse(_))
        );
        drop(first); // leaves the file behind, as a crash would
        assert!(path.exists());
        let access = SocketAccess {
            mode: Some(0o600),
            gid: None,
        };
        let _second = bind(&path, &access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn long_path_and_regular_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("x".repeat(120));
        assert_matches!(
            bind(&long, &SocketAccess::default()),
            Err(SocketError::PathTooLong {
                max: MAX_SOCKET_PATH,
                ..
            })
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"data").unwrap();
        assert_matches!(
            bind(&file, &SocketAccess::default()),
            Err(SocketError::NotASocket(_))
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    }

    #[test]
    fn missing_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/vpasid/a.sock");
        let _l = bind(&path, &SocketAccess::default()).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn groups_resolve() {
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("root").unwrap(), 0);
        assert_matches!(
            group_id("no-such-group-vpasid"),
            Err(SocketError::UnknownGroup(_))
        );
    }
}
