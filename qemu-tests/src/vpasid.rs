// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest side of vpasid, driven over a [`Guest`]'s shell: loading
//! `virtio_pasid`, reading its sysfs state, its debugfs counters and the
//! device's config space, and calling the IOASID framework through the test-only
//! `ioasid_exerciser` (see `guest-driver/README.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, VmEntry};
use crate::error::{Error, Result};
use crate::guest::{shell_quote, Guest};

/// The exerciser's command file: write a command, read the result.
pub const EXERCISER_CTL: &str = "/sys/kernel/debug/ioasid_exerciser/ctl";

/// The driver's sysfs directory (`state` and `backend`).
pub const DRIVER_DIR: &str = "/sys/bus/virtio/drivers/virtio_pasid";

/// The driver's debugfs directory: one counters file per device, named
/// after it (`virtio0`).
pub const DEBUGFS_DIR: &str = "/sys/kernel/debug/virtio_pasid";

/// The driver's module parameter directory.
pub const PARAMS_DIR: &str = "/sys/module/virtio_pasid/parameters";

/// The counters in the device's file under [`DEBUGFS_DIR`] that
/// `guest-driver/README.md` documents; [`VpasidGuest::driver_status`]
/// requires them and reads every other line there too.
pub const DRIVER_COUNTERS: &[&str] = &[
    "register_attempts",
    "outstanding",
    "allocs",
    "frees",
    "unsent_frees",
    "timeouts",
    "late_completions",
    "no_slot",
    "out_of_range",
    "protocol_errors",
    "rejected",
    "last_rtt_ns",
    "max_rtt_ns",
    "failures/no_space",
    "failures/quota_exceeded",
    "failures/invalid",
    "failures/not_owner",
    "failures/not_found",
    "failures/internal",
    "failures/rate_limited",
    "failures/unknown",
];

/// The lease counters in the same debugfs file (the driver prints them
/// whether or not leases are on; `lease_cap` 0 means off).
/// [`VpasidGuest::driver_status`] requires them too.
pub const LEASE_COUNTERS: &[&str] = &[
    "lease_cap",
    "cached",
    "lease_hits",
    "lease_misses",
    "refills",
    "returns",
    "unresponsive",
    "fast_fails",
];

/// The resume counters in the same debugfs file (RECONCILE results, and
/// frees of PASIDs it found lost). [`VpasidGuest::driver_status`] requires
/// them too; the list of lost PASIDs is the `lost_pasids` line.
pub const RECONCILE_COUNTERS: &[&str] = &[
    "reconcile_kept",
    "reconcile_granted",
    "reconcile_conflicts",
    "reconcile_refused",
    "reconcile_dropped",
    "lost_frees",
];

/// The device config attributes under `/sys/bus/virtio/devices/virtioN/`.
pub const CONFIG_ATTRS: &[&str] = &[
    "version",
    "pasid_bits",
    "pasid_min",
    "pasid_max",
    "quota",
    "space_id",
];

/// How long one guest helper command may run.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `wait_driver_state` looks.
const STATE_POLL: Duration = Duration::from_millis(100);

/// Most IDs one `find_many` command carries (the console's line limit).
const FIND_CHUNK: usize = 150;

/// What `alloc_n` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocN {
    /// IDs allocated.
    pub count: u32,
    /// The first ID, if any.
    pub first: Option<u32>,
    /// The last ID, if any.
    pub last: Option<u32>,
}

/// What `alloc_timed` did: the ID (`None`: INVALID_IOASID) and how long
/// `ioasid_alloc()` took inside the guest kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedAlloc {
    /// The ID, or `None` when the allocation failed.
    pub id: Option<u32>,
    /// Time spent in `ioasid_alloc()`, in guest nanoseconds.
    pub took: Duration,
}

/// What the exerciser's `stress` command counted over all its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stress {
    /// Allocations that succeeded.
    pub done: u64,
    /// Allocations that returned INVALID_IOASID.
    pub failed: u64,
    /// IDs handed out while another thread held them.
    pub duplicate: u64,
    /// IDs outside the requested range.
    pub out_of_range: u64,
    /// IDs `ioasid_find()` did not map to their private data.
    pub lookup: u64,
}

/// What `find` said about an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Known in the exerciser's set, with this private data.
    Private(u64),
    /// Unknown ID (`-ENOENT`).
    NotFound,
    /// ID of another set (`-EACCES`).
    OtherSet,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Private(p) => write!(f, "ok {p}"),
            Found::NotFound => f.write_str("err ENOENT"),
            Found::OtherSet => f.write_str("err EACCES"),
        }
    }
}

/// The driver's sysfs state and debugfs counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    /// `state`: unregistered, waiting-for-default-ids, active, suspended,
    /// draining or resuming.
    pub state: String,
    /// `backend`: the backing device (`virtio0`) or `none`.
    pub backend: String,
    /// Every counter by name (at least [`DRIVER_COUNTERS`]).
    pub counters: BTreeMap<String, u64>,
}

impl DriverStatus {
    /// Counter `name` (e.g. `allocs`, `failures/no_space`); 0 if unknown.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The `failures/*` counters that are not zero.
    pub fn failures(&self) -> Vec<(&str, u64)> {
        self.counters
            .iter()
            .filter(|(name, &n)| name.starts_with("failures/") && n != 0)
            .map(|(name, &n)| (name.as_str(), n))
            .collect()
    }
}

/// The device's config space as the guest driver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The virtio device's name, e.g. `virtio0`.
    pub device: String,
    /// Protocol version.
    pub version: u32,
    /// Width of the host's PASID space.
    pub pasid_bits: u32,
    /// Lowest PASID the VM may be given.
    pub pasid_min: u32,
    /// Highest PASID the VM may be given.
    pub pasid_max: u32,
    /// Most PASIDs the VM may hold at once.
    pub quota: u32,
    /// Host PASID space identifier, as printed (hex).
    pub space_id: String,
}

fn unexpected(what: impl Into<String>, output: impl Into<String>) -> Error {
    Error::UnexpectedOutput {
        what: what.into(),
        output: output.into(),
    }
}

fn parse_u32(what: &str, text: &str) -> Result<u32> {
    text.trim().parse().map_err(|_| unexpected(what, text))
}

/// Parses `key value` (or `key: value`) lines into a map.
fn key_values(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.trim_end_matches(':').to_string(), v.trim().to_string()))
        .collect()
}

/// Parses an exerciser `alloc` result: `ok ID` or `err INVALID`.
pub fn parse_alloc(result: &str) -> Result<Option<u32>> {
    let words: Vec<&str> = result.split_whitespace().collect();
    match words.as_slice() {
        ["ok", id] => Ok(Some(parse_u32("exerciser alloc", id)?)),
        ["err", "INVALID"] => Ok(None),
        _ => Err(unexpected("exerciser alloc", result)),
    }
}

/// Parses an exerciser `alloc_n` result: `ok COUNT FIRST LAST`.
pub fn parse_alloc_n(result: &str) -> Result<AllocN> {
    let words: Vec<&str> = result.split_whitespace().collect();
    let id = |w: &str| -> Result<Option<u32>> {
        if w == "-" {
            Ok(None)
        } else {
            parse_u32("exerciser alloc_n", w).map(Some)
        }
    };
    match words.as_slice() {
        ["ok", count, first, last] => Ok(AllocN {
            count: parse_u32("exerciser alloc_n", count)?,
            first: id(first)?,
            last: id(last)?,
        }),
        _ => Err(unexpected("exerciser alloc_n", result)),
    }
}

/// Parses an exerciser `find` result.
pub fn parse_find(result: &str) -> Result<Found> {
    let words: Vec<&str> = result.split_whitespace().collect();
    match words.as_slice() {
        ["ok", private] => private
            .parse()
            .map(Found::Private)
            .map_err(|_| unexpected("exerciser find", result)),
        ["err", "ENOENT"] => Ok(Found::NotFound),
        ["err", "EACCES"] => Ok(Found::OtherSet),
        _ => Err(unexpected("exerciser find", result)),
    }
}

/// Parses an exerciser `alloc_timed` result: `ok ID NS` or
/// `err INVALID NS`.
pub fn parse_alloc_timed(result: &str) -> Result<TimedAlloc> {
    let words: Vec<&str> = result.split_whitespace().collect();
    let what = "exerciser alloc_timed";
    let ns = |w: &str| -> Result<Duration> {
        w.parse()
            .map(Duration::from_nanos)
            .map_err(|_| unexpected(what, result))
    };
    match words.as_slice() {
        ["ok", id, took] => Ok(TimedAlloc {
            id: Some(parse_u32(what, id)?),
            took: ns(took)?,
        }),
        ["err", "INVALID", took] => Ok(TimedAlloc {
            id: None,
            took: ns(took)?,
        }),
        _ => Err(unexpected(what, result)),
    }
}

/// Parses an exerciser `stress` result:
/// `ok DONE FAILED DUPLICATE OUT_OF_RANGE LOOKUP`.
pub fn parse_stress(result: &str) -> Result<Stress> {
    let words: Vec<&str> = result.split_whitespace().collect();
    let counts: Vec<u64> = match words.as_slice() {
        ["ok", rest @ ..] if rest.len() == 5 => rest
            .iter()
            .map(|w| {
                w.parse()
                    .map_err(|_| unexpected("exerciser stress", result))
            })
            .collect::<Result<_>>()?,
        _ => return Err(unexpected("exerciser stress", result)),
    };
    match counts.as_slice() {
        &[done, failed, duplicate, out_of_range, lookup] => Ok(Stress {
            done,
            failed,
            duplicate,
            out_of_range,
            lookup,
        }),
        _ => Err(unexpected("exerciser stress", result)),
    }
}

/// An exerciser `held` result: N allocations in a row, kept, then all
/// freed in a row (guest-driver/README.md, "held").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Allocations before the first failure (all N if none failed).
    pub done: u64,
    /// ns per allocation, over the `done` allocations in a row.
    pub alloc_ns: u64,
    /// ns per free, freeing all `done` in a row.
    pub free_ns: u64,
    /// IDs handed out twice.
    pub duplicate: u64,
    /// IDs outside the requested range.
    pub out_of_range: u64,
    /// IDs `ioasid_find()` did not map to their private data.
    pub lookup: u64,
}

/// Parses an exerciser `held` result
/// `ok DONE ALLOC_NS FREE_NS DUPLICATE OUT_OF_RANGE LOOKUP`.
pub fn parse_held(result: &str) -> Result<Held> {
    let words: Vec<&str> = result.split_whitespace().collect();
    let n: Vec<u64> = match words.as_slice() {
        ["ok", rest @ ..] if rest.len() == 6 => rest
            .iter()
            .map(|w| w.parse().map_err(|_| unexpected("exerciser held", result)))
            .collect::<Result<_>>()?,
        _ => return Err(unexpected("exerciser held", result)),
    };
    match n.as_slice() {
        &[done, alloc_ns, free_ns, duplicate, out_of_range, lookup] => Ok(Held {
            done,
            alloc_ns,
            free_ns,
            duplicate,
            out_of_range,
            lookup,
        }),
        _ => Err(unexpected("exerciser held", result)),
    }
}

/// Parses an exerciser `bench` result `ok N NS_PER_PAIR` into ns per pair.
pub fn parse_bench(result: &str) -> Result<u64> {
    let words: Vec<&str> = result.split_whitespace().collect();
    match words.as_slice() {
        ["ok", _, ns] => ns
            .parse()
            .map_err(|_| unexpected("exerciser bench", result)),
        _ => Err(unexpected("exerciser bench", result)),
    }
}

/// vpasid operations on a guest.
pub trait VpasidGuest {
    /// `modprobe virtio_pasid PARAMS` (e.g. `timeout_ms=500`).
    fn load_driver(&mut self, params: &str) -> Result<()>;
    /// `modprobe ioasid_exerciser`.
    fn load_exerciser(&mut self) -> Result<()>;
    /// Writes `command` to the exerciser and returns its result line.
    fn exerciser(&mut self, command: &str) -> Result<String>;
    /// `alloc MIN MAX PRIVATE`: `Some(id)`, or `None` for `err INVALID`.
    fn alloc(&mut self, min: u32, max: u32, private: u64) -> Result<Option<u32>>;
    /// `alloc_n N MIN MAX`.
    fn alloc_n(&mut self, n: u32, min: u32, max: u32) -> Result<AllocN>;
    /// `alloc_timed MIN MAX`: one allocation timed inside the guest kernel.
    fn alloc_timed(&mut self, min: u32, max: u32) -> Result<TimedAlloc>;
    /// `stress THREADS PAIRS MIN MAX`: allocations and frees from
    /// `threads` kernel threads at once; bounded by `timeout`.
    fn stress(
        &mut self,
        threads: u32,
        pairs: u32,
        range: (u32, u32),
        timeout: Duration,
    ) -> Result<Stress>;
    /// `held N MIN MAX`: N allocations in a row, kept, then all freed
    /// (bounded by `timeout`).
    fn held(&mut self, n: u32, range: (u32, u32), timeout: Duration) -> Result<Held>;
    /// `free ID`, which must answer `ok`.
    fn free(&mut self, id: u32) -> Result<()>;
    /// `free_all`: the number of IDs freed.
    fn free_all(&mut self) -> Result<u64>;
    /// `find ID`.
    fn find(&mut self, id: u32) -> Result<Found>;
    /// `find` for each of `ids`, in as few commands as the console allows.
    fn find_many(&mut self, ids: &[u32]) -> Result<Vec<(u32, Found)>>;
    /// The driver's `state`, `backend` and every counter of the backing
    /// device, in one command.
    fn driver_status(&mut self) -> Result<DriverStatus>;
    /// The driver's `state`.
    fn driver_state(&mut self) -> Result<String>;
    /// Polls `state` until it reads `state`, for at most `timeout`; returns
    /// how long that took.
    fn wait_driver_state(&mut self, state: &str, timeout: Duration) -> Result<Duration>;
    /// The bound device's config space attributes.
    fn device_config(&mut self) -> Result<DeviceConfig>;
    /// Whether module `name` is loaded (`/sys/module/NAME` exists).
    fn module_loaded(&mut self, name: &str) -> Result<bool>;
}

/// Sends one command to the exerciser's control file and returns its
/// answer, trimmed, waiting at most `timeout`.
fn run_exerciser(guest: &mut Guest, command: &str, timeout: Duration) -> Result<String> {
    let out = guest.run_ok(
        &format!(
            "echo {} > {EXERCISER_CTL} && cat {EXERCISER_CTL}",
            shell_quote(command)
        ),
        timeout,
    )?;
    Ok(out.trim().to_string())
}

impl VpasidGuest for Guest {
    fn load_driver(&mut self, params: &str) -> Result<()> {
        self.run_ok(&format!("modprobe virtio_pasid {params}"), CMD_TIMEOUT)
            .map(drop)
    }

    fn load_exerciser(&mut self) -> Result<()> {
        self.run_ok("modprobe ioasid_exerciser", CMD_TIMEOUT)
            .map(drop)
    }

    fn exerciser(&mut self, command: &str) -> Result<String> {
        run_exerciser(self, command, CMD_TIMEOUT)
    }

    fn alloc(&mut self, min: u32, max: u32, private: u64) -> Result<Option<u32>> {
        let result = self.exerciser(&format!("alloc {min} {max} {private}"))?;
        parse_alloc(&result)
    }

    fn alloc_n(&mut self, n: u32, min: u32, max: u32) -> Result<AllocN> {
        let result = self.exerciser(&format!("alloc_n {n} {min} {max}"))?;
        parse_alloc_n(&result)
    }

    fn alloc_timed(&mut self, min: u32, max: u32) -> Result<TimedAlloc> {
        let result = self.exerciser(&format!("alloc_timed {min} {max}"))?;
        parse_alloc_timed(&result)
    }

    fn stress(
        &mut self,
        threads: u32,
        pairs: u32,
        (min, max): (u32, u32),
        timeout: Duration,
    ) -> Result<Stress> {
        let command = format!("stress {threads} {pairs} {min} {max}");
        parse_stress(&run_exerciser(self, &command, timeout)?)
    }

    fn held(&mut self, n: u32, (min, max): (u32, u32), timeout: Duration) -> Result<Held> {
        let command = format!("held {n} {min} {max}");
        parse_held(&run_exerciser(self, &command, timeout)?)
    }

    fn free(&mut self, id: u32) -> Result<()> {
        let result = self.exerciser(&format!("free {id}"))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(unexpected(format!("exerciser free {id}"), result))
        }
    }

    fn free_all(&mut self) -> Result<u64> {
        let result = self.exerciser("free_all")?;
        match result.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["ok", n] => n
                .parse()
                .map_err(|_| unexpected("exerciser free_all", &result)),
            _ => Err(unexpected("exerciser free_all", result)),
        }
    }

    fn find(&mut self, id: u32) -> Result<Found> {
        let result = self.exerciser(&format!("find {id}"))?;
        parse_find(&result)
    }

    fn find_many(&mut self, ids: &[u32]) -> Result<Vec<(u32, Found)>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FIND_CHUNK) {
            let list: Vec<String> = chunk.iter().map(u32::to_string).collect();
            let out = self.run_ok(
                &format!(
                    "for id in {}; do echo \"find $id\" > {EXERCISER_CTL} && \
                     echo \"$id $(cat {EXERCISER_CTL})\" || exit 1; done",
                    list.join(" ")
                ),
                CMD_TIMEOUT,
            )?;
            let lines: Vec<&str> = out.lines().collect();
            if lines.len() != chunk.len() {
                return Err(unexpected("exerciser find loop", out));
            }
            for (id, line) in chunk.iter().zip(lines) {
                let (echoed, result) = line
                    .split_once(' ')
                    .ok_or_else(|| unexpected("exerciser find loop", line))?;
                if echoed != id.to_string() {
                    return Err(unexpected("exerciser find loop", line));
                }
                found.push((*id, parse_find(result)?));
            }
        }
        Ok(found)
    }

    fn driver_status(&mut self) -> Result<DriverStatus> {
        // sysfs: state and the backing device; debugfs: its counters.
        let out = self.run_ok(
            &format!(
                "s=$(cat {DRIVER_DIR}/state) && b=$(cat {DRIVER_DIR}/backend) || exit 1; \
                 echo \"state $s\"; echo \"backend $b\"; cat \"{DEBUGFS_DIR}/$b\""
            ),
            CMD_TIMEOUT,
        )?;
        let mut values = key_values(&out);
        let mut take = |key: &str| {
            values
                .remove(key)
                .ok_or_else(|| unexpected(format!("{DRIVER_DIR}/{key}"), &out))
        };
        let state = take("state")?;
        let backend = take("backend")?;
        for name in DRIVER_COUNTERS
            .iter()
            .chain(LEASE_COUNTERS)
            .chain(RECONCILE_COUNTERS)
        {
            if !values.contains_key(*name) {
                return Err(unexpected(format!("counter {name} in {DEBUGFS_DIR}"), &out));
            }
        }
        let counters = values
            .into_iter()
            .filter_map(|(name, value)| value.parse().ok().map(|v| (name, v)))
            .collect();
        Ok(DriverStatus {
            state,
            backend,
            counters,
        })
    }

    fn driver_state(&mut self) -> Result<String> {
        let out = self.run_ok(&format!("cat {DRIVER_DIR}/state"), CMD_TIMEOUT)?;
        Ok(out.trim().to_string())
    }

    fn wait_driver_state(&mut self, state: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let now = self.driver_state()?;
            if now == state {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("virtio_pasid state {state:?} (still {now:?})"),
                    timeout,
                    log: self.log_path().to_path_buf(),
                });
            }
            thread::sleep(STATE_POLL);
        }
    }

    fn device_config(&mut self) -> Result<DeviceConfig> {
        let out = self.run_ok(
            &format!(
                "cd {DRIVER_DIR}/virtio* && echo \"device $(basename $(pwd -P))\" && \
                 for f in {}; do echo \"$f $(cat $f)\"; done",
                CONFIG_ATTRS.join(" ")
            ),
            CMD_TIMEOUT,
        )?;
        let values = key_values(&out);
        let get = |key: &str| {
            values
                .get(key)
                .cloned()
                .ok_or_else(|| unexpected(format!("config attribute {key}"), &out))
        };
        let num = |key: &str| get(key).and_then(|v| parse_u32(key, &v));
        Ok(DeviceConfig {
            device: get("device")?,
            version: num("version")?,
            pasid_bits: num("pasid_bits")?,
            pasid_min: num("pasid_min")?,
            pasid_max: num("pasid_max")?,
            quota: num("quota")?,
            space_id: get("space_id")?,
        })
    }

    fn module_loaded(&mut self, name: &str) -> Result<bool> {
        let out = self.run(&format!("test -d /sys/module/{name}"), CMD_TIMEOUT)?;
        Ok(out.success())
    }
}

/// Waits until a leasing driver's refill and return work is idle and both
/// sides agree: the host's `held` for VM `vm` equals the guest's
/// `outstanding` (handed out) plus `cached`, and the guest's counters did
/// not move while the host was read. Returns both views.
///
/// Only `held` is exact on the host: its `cached` is the figure the driver
/// reported in its last GRANT or RETURN, and allocations served by the
/// cache send nothing.
pub fn wait_lease_settled(
    guest: &mut Guest,
    daemon: &Daemon,
    vm: &str,
    timeout: Duration,
) -> Result<(DriverStatus, VmEntry)> {
    let started = Instant::now();
    loop {
        let status = guest.driver_status()?;
        let host = daemon.vm(vm)?;
        let again = guest.driver_status()?;
        let guest_holds = status.counter("outstanding") + status.counter("cached");
        if u64::from(host.held) == guest_holds && again.counters == status.counters {
            return Ok((status, host));
        }
        if started.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!(
                    "{vm}: host held {} = guest outstanding {} + cached {}",
                    host.held,
                    status.counter("outstanding"),
                    status.counter("cached")
                ),
                timeout,
                log: guest.log_path().to_path_buf(),
            });
        }
        thread::sleep(STATE_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exerciser_results_parse() {
        assert_eq!(parse_alloc("ok 100").unwrap(), Some(100));
        assert_eq!(parse_alloc("err INVALID").unwrap(), None);
        assert!(parse_alloc("err EINVAL").is_err());
        assert_eq!(
            parse_alloc_n("ok 8 64 71").unwrap(),
            AllocN {
                count: 8,
                first: Some(64),
                last: Some(71)
            }
        );
        assert_eq!(
            parse_alloc_n("ok 0 - -").unwrap(),
            AllocN {
                count: 0,
                first: None,
                last: None
            }
        );
        assert_eq!(parse_find("ok 4660").unwrap(), Found::Private(0x1234));
        assert_eq!(parse_find("err ENOENT").unwrap(), Found::NotFound);
        assert_eq!(parse_find("err EACCES").unwrap(), Found::OtherSet);
        assert_eq!(parse_bench("ok 1000 2345").unwrap(), 2345);
        assert_eq!(
            parse_alloc_timed("ok 7 1500").unwrap(),
            TimedAlloc {
                id: Some(7),
                took: Duration::from_nanos(1500)
            }
        );
        assert_eq!(parse_alloc_timed("err INVALID 9").unwrap().id, None);
        assert!(parse_alloc_timed("ok 7").is_err());
        assert_eq!(
            parse_stress("ok 8000 0 1 2 3").unwrap(),
            Stress {
                done: 8000,
                failed: 0,
                duplicate: 1,
                out_of_range: 2,
                lookup: 3
            }
        );
        assert!(parse_stress("ok 8000 0 1 2").is_err());
        assert_eq!(
            parse_held("ok 2000 3100 1200 0 1 2").unwrap(),
            Held {
                done: 2000,
                alloc_ns: 3100,
                free_ns: 1200,
                duplicate: 0,
                out_of_range: 1,
                lookup: 2
            }
        );
        assert!(parse_held("ok 2000 3100 1200 0 1").is_err());
        assert!(parse_held("err EINVAL").is_err());
        assert!(parse_stress("err EINVAL").is_err());
        assert!(parse_bench("err INVALID").is_err());
    }

    #[test]
    fn key_value_lines() {
        let map = key_values("state active\nfailures/no_space 2\n");
        assert_eq!(map["state"], "active");
        assert_eq!(map["failures/no_space"], "2");
        assert_eq!(key_values("lease_cap: 32\n")["lease_cap"], "32");
    }
}
