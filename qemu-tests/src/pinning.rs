//! Keeping a guest's vCPU threads and the host threads that serve it on
//! separate cores, as docs/operations.md ("Answer latency") recommends for
//! a deployment (libvirt `<vcpupin>` and `<emulatorpin>`, the daemon's
//! systemd `CPUAffinity=`): the benchmarks measure the driver as deployed
//! that way. Unpinned, Linux wakes the daemon's answering thread and
//! QEMU's main loop (which injects the answer's interrupt) onto the core
//! of the vCPU that kicked them, and each answer takes that vCPU's time.

use std::fs;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Where [`pin_apart`] put the threads, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    /// The cores of the vCPU threads.
    pub vcpu_cpus: Vec<usize>,
    /// The cores of every other thread of QEMU and of the daemon.
    pub other_cpus: Vec<usize>,
    /// How many vCPU threads there were.
    pub vcpus: usize,
}

impl std::fmt::Display for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vCPU thread(s) on host CPU(s) {:?}; QEMU's other threads and the daemon on {:?}",
            self.vcpus, self.vcpu_cpus, self.other_cpus
        )
    }
}

/// The threads of process `pid`: (thread id, name).
fn threads(pid: u32) -> Result<Vec<(i32, String)>> {
    let dir = format!("/proc/{pid}/task");
    let entries = fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {dir}"), e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended meanwhile has no name: skip it.
        if let Ok(name) = fs::read_to_string(entry.path().join("comm")) {
            out.push((tid, name.trim().to_string()));
        }
    }
    Ok(out)
}

/// QEMU names a vCPU thread "CPU N/ACCEL" (e.g. "CPU 0/TCG").
fn is_vcpu(name: &str) -> bool {
    name.starts_with("CPU ") && name.contains('/')
}

fn set(tid: i32, cpus: &[usize]) -> Result<()> {
    let mut mask = CpuSet::new();
    for &cpu in cpus {
        mask.set(cpu)
            .map_err(|e| Error::Setup(format!("CPU {cpu}: {e}")))?;
    }
    sched_setaffinity(Pid::from_raw(tid), &mask)
        .map_err(|e| Error::Setup(format!("sched_setaffinity({tid}): {e}")))
}

/// Puts QEMU `qemu_pid`'s vCPU threads on the last `vcpus` host CPUs this
/// process may use (at least one), and every other thread of QEMU and of
/// the daemon `daemon_pid` on the rest. Threads started later inherit the
/// mask of the thread that starts them. `None` (nothing changed) when
/// fewer than two CPUs are usable or QEMU has no named vCPU thread.
pub fn pin_apart(qemu_pid: u32, daemon_pid: u32) -> Result<Option<Pinned>> {
    let mask = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| Error::Setup(format!("sched_getaffinity: {e}")))?;
    let usable: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| mask.is_set(c).unwrap_or(false))
        .collect();
    let qemu = threads(qemu_pid)?;
    let vcpus = qemu.iter().filter(|(_, name)| is_vcpu(name)).count();
    if usable.len() < 2 || vcpus == 0 {
        return Ok(None);
    }
    let split = usable.len() - vcpus.clamp(1, usable.len() - 1);
    let (other_cpus, vcpu_cpus) = usable.split_at(split);
    for (tid, name) in &qemu {
        set(*tid, if is_vcpu(name) { vcpu_cpus } else { other_cpus })?;
    }
    for (tid, _) in threads(daemon_pid)? {
        set(tid, other_cpus)?;
    }
    Ok(Some(Pinned {
        vcpu_cpus: vcpu_cpus.to_vec(),
        other_cpus: other_cpus.to_vec(),
        vcpus,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_are_known_by_name() {
        assert!(is_vcpu("CPU 0/TCG"));
        assert!(is_vcpu("CPU 12/KVM"));
        assert!(!is_vcpu("qemu-system-x86"));
        assert!(!is_vcpu("call_rcu"));
        assert!(!is_vcpu("CPUfreq"));
    }
}
