// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A short scheduler time slice for the threads that answer guests.
//!
//! A request costs the daemon microseconds, but the thread that answers it
//! is woken by the vCPU thread that kicked it, and Linux places it on that
//! vCPU's core. Under the EEVDF scheduler (Linux 6.6 and later) a vCPU that
//! keeps its core busy (a guest allocating in a loop, TCG, an overcommitted
//! host) then runs to the end of its slice before the answer is made: on a
//! 2-core 6.18 host, 0.5-3 ms per request group instead of about 50 us
//! (perf sched timehist, docs/operations.md "Answer latency"). Since Linux 6.12 a thread
//! may ask for a shorter slice (sched_setattr()'s sched_runtime for
//! SCHED_OTHER, which the kernel clamps to 0.1-100 ms), and a waking thread
//! with a shorter slice than the running one preempts it. Older kernels
//! accept the request and ignore it. The answering thread asks for its
//! slice once, on its first request (`--request-slice-us`).

use std::io;
use std::time::Duration;

/// `--request-slice-us` by default: the kernel's shortest.
pub const DEFAULT_REQUEST_SLICE_US: u32 = 100;
/// The longest slice the kernel takes (it clamps to 0.1-100 ms).
pub const MAX_REQUEST_SLICE_US: u32 = 100_000;

/// `struct sched_attr` as of Linux 3.14 (SCHED_ATTR_SIZE_VER0).
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
/// The one flag a fair thread's attributes carry that must survive.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// SCHED_ATTR_SIZE_VER0: the length of [`SchedAttr`].
const ATTR_SIZE: u32 = 48;
const _: () = assert!(std::mem::size_of::<SchedAttr>() == ATTR_SIZE as usize);

/// The calling thread's scheduling attributes.
fn get_attr() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr(2) on the calling thread (pid 0) writes at most
    // `size` bytes, the length of `attr`, which lives for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            ATTR_SIZE,
            0,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to give the calling thread time slices of `slice`,
/// keeping its policy and nice value. True when asked; false when the
/// thread is not under a fair policy (real-time or SCHED_IDLE, set by the
/// operator), which is left alone.
pub fn request_slice(slice: Duration) -> io::Result<bool> {
    let mut attr = get_attr()?;
    if attr.policy != SCHED_OTHER && attr.policy != SCHED_BATCH {
        return Ok(false);
    }
    attr.size = ATTR_SIZE;
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: sched_setattr(2) on the calling thread (pid 0) reads `size`
    // bytes of `attr`, which lives for the call.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's time slice, as the kernel reports it (the one it
/// asked for, or the default); `None` before Linux 6.12, which reports
/// none.
pub fn current_slice() -> io::Result<Option<Duration>> {
    let attr = get_attr()?;
    Ok((attr.runtime > 0).then(|| Duration::from_nanos(attr.runtime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this kernel keeps a fair thread's own slice (6.12 and later).
    fn kernel_keeps_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        matches!((parts.next(), parts.next()), (Some(Some(major)), Some(Some(minor)))
            if (major, minor) >= (6, 12))
    }

    #[test]
    fn the_thread_gets_the_slice_it_asked_for() {
        let asked = std::thread::spawn(|| {
            assert!(request_slice(Duration::from_micros(250)).expect("sched_setattr"));
            current_slice().expect("sched_getattr")
        })
        .join()
        .unwrap();
        if kernel_keeps_slices() {
            assert_eq!(asked, Some(Duration::from_micros(250)));
        } else {
            assert_eq!(asked, None, "a kernel before 6.12 reports no slice");
        }
        // Only the thread that asked: this one keeps the default.
        assert_ne!(
            current_slice().expect("sched_getattr"),
            Some(Duration::from_micros(250))
        );
    }

    #[test]
    fn a_slice_keeps_the_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: setpriority(2) on the calling thread only.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            assert!(request_slice(Duration::from_micros(100)).expect("sched_setattr"));
            assert_eq!(get_attr().expect("sched_getattr").nice, 5);
        })
        .join()
        .unwrap();
    }
}
