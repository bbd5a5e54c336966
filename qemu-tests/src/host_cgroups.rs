// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The cgroup tree of one test libvirtd, so that each libvirtd is a host
//! of its own down to its cgroups.
//!
//! libvirt puts domain `NAME` with id `N` in `/machine/qemu-N-NAME.libvirt-qemu`
//! of every cgroup hierarchy. Two libvirtds on one machine (tests run side
//! by side; a migration's two hosts) both start `web` as domain 1: with one
//! shared tree they create, fill and remove the same cgroups, and a start
//! fails when one finds the other's cpuset cgroup before its CPUs are set
//! (`virsh start`: "Unable to write to .../emulator/tasks: No space left
//! on device"). [`HostCgroups::create`] makes a cgroup per hierarchy under
//! the test's own placement; `setup/libvirt-ns.sh` moves itself into them
//! and into a cgroup namespace rooted there, and mounts the hierarchies
//! anew in the chroot, so that libvirtd's `/machine` is its own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a removal waits for the killed namespace's processes to leave
/// their cgroups.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// One cgroup per mounted hierarchy, removed (with what libvirt left in
/// it) on drop.
#[derive(Debug)]
pub struct HostCgroups {
    dirs: Vec<PathBuf>,
}

/// A mounted cgroup hierarchy: where, and which of the process's cgroups
/// it shows.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    /// The process's cgroup in it: its directory.
    cgroup: PathBuf,
    /// A v1 cpuset hierarchy: a new cgroup there takes no task before its
    /// `cpuset.cpus` and `cpuset.mems` are set.
    cpuset_v1: bool,
}

impl HostCgroups {
    /// Creates `NAME` under this process's cgroup in every mounted
    /// hierarchy it may write to.
    pub fn create(name: &str) -> Result<HostCgroups> {
        let read = |path: &str| {
            fs::read_to_string(path).map_err(|e| Error::io(format!("reading {path}"), e))
        };
        let hierarchies = hierarchies(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?);
        let mut cgroups = HostCgroups { dirs: Vec::new() };
        for h in hierarchies {
            let parent = h.cgroup;
            let dir = parent.join(name);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                // A read-only or foreign hierarchy: libvirtd shares that one.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EROFS)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
            }
            cgroups.dirs.push(dir.clone());
            if h.cpuset_v1 {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = fs::read_to_string(parent.join(file)).map_err(|e| {
                        Error::io(format!("reading {file} of {}", parent.display()), e)
                    })?;
                    fs::write(dir.join(file), value.trim()).map_err(|e| {
                        Error::io(format!("writing {file} of {}", dir.display()), e)
                    })?;
                }
            }
        }
        Ok(cgroups)
    }

    /// The cgroups, one per hierarchy (`libvirt-ns.sh` moves into each).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for HostCgroups {
    fn drop(&mut self) {
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        for dir in &self.dirs {
            while let Err(e) = remove_tree(dir) {
                if Instant::now() > deadline {
                    eprintln!("leaving cgroup {}: {e}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Removes the cgroup `dir` and the cgroups under it, deepest first (a
/// cgroup's control files go with its directory).
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The cgroup hierarchies `mountinfo` (`/proc/self/mountinfo`) mounts,
/// each with the process's cgroup in it from `cgroup` (`/proc/self/cgroup`).
/// A hierarchy whose mount does not show the process's cgroup is left out.
fn hierarchies(mountinfo: &str, cgroup: &str) -> Vec<Hierarchy> {
    // By superblock (MAJ:MIN): a hierarchy mounted twice counts once.
    let mut found: Vec<(&str, Hierarchy)> = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let Some((fields, tail)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = fields.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        let (Some(device), Some(root), Some(mount_point), Some(fs_type), Some(super_opts)) = (
            fields.get(2),
            fields.get(3),
            fields.get(4),
            tail.first(),
            tail.get(2),
        ) else {
            continue;
        };
        let v1 = match *fs_type {
            "cgroup" => true,
            "cgroup2" => false,
            _ => continue,
        };
        let opts: Vec<&str> = super_opts.split(',').collect();
        // `/proc/self/cgroup`: ID:CONTROLLERS:PATH; v2 is `0::PATH`.
        let path = cgroup.lines().find_map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if v1 {
                !controllers.is_empty() && controllers.split(',').all(|c| opts.contains(&c))
            } else {
                controllers.is_empty()
            };
            matches.then_some(path)
        });
        let Some(placement) = path.and_then(|p| Path::new(p).strip_prefix(root).ok()) else {
            continue;
        };
        if found.iter().any(|(seen, _)| seen == device) {
            continue;
        }
        found.push((
            device,
            Hierarchy {
                cgroup: Path::new(mount_point)
                    .components()
                    .chain(placement.components())
                    .collect(),
                cpuset_v1: v1 && opts.contains(&"cpuset"),
            },
        ));
    }
    found.into_iter().map(|(_, h)| h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:39 /docker/abc /mnt/blkio rw - cgroup cgroup rw,blkio
51 23 0:31 / /mnt/cpuset rw - cgroup cgroup rw,cpuset
";

    const CGROUP: &str = "\
9:name=systemd:/
7:blkio:/elsewhere
4:memory:/process_api/9b2d
3:cpuset:/
2:cpu,cpuacct:/
0::/
";

    #[test]
    fn hierarchies_take_the_process_cgroup_of_each_mount() {
        let found = hierarchies(MOUNTINFO, CGROUP);
        let dirs: Vec<(String, bool)> = found
            .iter()
            .map(|h| (h.cgroup.display().to_string(), h.cpuset_v1))
            .collect();
        assert_eq!(
            dirs,
            [
                ("/sys/fs/cgroup/cpu,cpuacct".to_string(), false),
                ("/sys/fs/cgroup/cpuset".to_string(), true),
                ("/sys/fs/cgroup/memory/process_api/9b2d".to_string(), false),
                ("/sys/fs/cgroup/systemd".to_string(), false),
                ("/sys/fs/cgroup/unified".to_string(), false),
            ]
        );
    }
}
