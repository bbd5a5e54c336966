// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The standard Prometheus `process_*` metrics (the names every client
//! library exports), read from `/proc/self` at scrape time and encoded by
//! their [`Collector`].
//!
//! Works inside the sandbox: the files are opened read-only (allowed by the
//! seccomp filter) and listing `/proc/self/fd` needs `getdents64`, which the
//! allow-list has for this. After `--user` the process is no longer
//! dumpable and `/proc/self/fd` belongs to root, but the kernel lets a
//! process list its own descriptors regardless. A file that cannot be read
//! leaves its metrics out of the scrape rather than failing it.

use std::fs;

use std::fmt;

use log::debug;
use nix::unistd::SysconfVar;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::text::encode_family;

/// One sample of the process's figures; `None` where /proc did not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: Option<f64>,
    /// Threads in the process.
    pub threads: Option<u64>,
}

/// The fields of `/proc/self/stat` used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// Start after boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest starts with field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The soft "Max open files" limit from `/proc/PID/limits`; `None` when
/// unlimited.
fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time since the epoch, in seconds, from `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A `sysconf` value that glibc answers from the auxiliary vector (no
/// system call, so nothing the seccomp filter sees).
fn sysconf(name: SysconfVar) -> Option<u64> {
    let v = nix::unistd::sysconf(name).ok().flatten()?;
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .map_err(|e| debug!("metrics: cannot read {path}: {e}"))
        .ok()
}

// Ticks and byte counts far below 2^52: f64 holds them exactly enough.
#[allow(clippy::cast_precision_loss)]
fn ticks_to_seconds(ticks: u64, per_second: u64) -> f64 {
    ticks as f64 / per_second as f64
}

/// Reads the process's figures now.
pub fn sample() -> ProcessStats {
    let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
    let ticks = sysconf(SysconfVar::CLK_TCK);
    let page = sysconf(SysconfVar::PAGE_SIZE);
    let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
    let open_fds = fs::read_dir("/proc/self/fd")
        .map_err(|e| debug!("metrics: cannot list /proc/self/fd: {e}"))
        .ok()
        // The listing's own descriptor is among the entries: not counted.
        .map(|dir| dir.count().saturating_sub(1))
        .and_then(|n| u64::try_from(n).ok());
    ProcessStats {
        cpu_seconds: stat
            .zip(ticks)
            .map(|(s, t)| ticks_to_seconds(s.cpu_ticks, t)),
        resident_bytes: stat
            .zip(page)
            .and_then(|(s, p)| s.resident_pages.checked_mul(p)),
        virtual_bytes: stat.map(|s| s.virtual_bytes),
        open_fds,
        max_fds: read("/proc/self/limits").as_deref().and_then(parse_max_fds),
        start_time_seconds: stat.zip(ticks).zip(boot).map(|((s, t), b)| {
            ticks_to_seconds(b.saturating_mul(t).saturating_add(s.start_ticks), t)
        }),
        threads: stat.map(|s| s.threads),
    }
}

impl Collector for ProcessStats {
    /// The `process_*` families with a value; the others are left out.
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(v) = self.cpu_seconds {
            let help = "Total user and system CPU time spent in seconds";
            let cpu = ConstCounter::new(v);
            encode_family(
                &mut encoder,
                "process_cpu",
                help,
                Some(&Unit::Seconds),
                &cpu,
            )?;
        }
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                self.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                self.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                self.threads,
            ),
        ] {
            if let Some(v) = value {
                encode_family(&mut encoder, name, help, unit.as_ref(), &ConstGauge::new(v))?;
            }
        }
        if let Some(v) = self.start_time_seconds {
            let help = "Start time of the process since unix epoch in seconds";
            let name = "process_start_time";
            encode_family(
                &mut encoder,
                name,
                help,
                Some(&Unit::Seconds),
                &ConstGauge::new(v),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line's shape, with a command name that holds `) (` and spaces.
    const STAT: &str = "4242 (vhost (user) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                        250 50 0 0 20 0 7 0 123456 99999744 1234 18446744073709551615 1 1 0 0 0 0 \
                        0 4096 17440 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 300,
                threads: 7,
                start_ticks: 123_456,
                virtual_bytes: 99_999_744,
                resident_pages: 1234,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn limits_and_boot_time_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1764460800\nprocesses 9\n"),
            Some(1_764_460_800)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_samples_sane_figures() {
        let p = sample();
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.resident_bytes.unwrap() > 0, "{p:?}");
        assert!(
            p.virtual_bytes.unwrap() >= p.resident_bytes.unwrap(),
            "{p:?}"
        );
        assert!(p.threads.unwrap() >= 1, "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn missing_figures_are_left_out() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessStats {
            open_fds: Some(9),
            cpu_seconds: Some(1.5),
            ..ProcessStats::default()
        }));
        assert_eq!(
            super::super::text::encode(&registry),
            "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds counter\n\
             # UNIT process_cpu_seconds seconds\n\
             process_cpu_seconds_total 1.5\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 9\n# EOF\n"
        );
    }
}
