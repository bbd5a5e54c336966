// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Command line of `pasidctl`, the operator's client of the control socket.
//!
//! It lives in the library so that the man page and shell completions can be
//! generated from it (`cargo xtask gen-docs`, outside this crate);
//! `src/bin/pasidctl.rs` carries the commands out.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONTROL_SOCKET;

/// Default name of the host holder for get/put.
pub const DEFAULT_HOLDER: &str = "operator";

/// Shortest refresh interval of `pasidctl watch`.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Longest `--hold` of `detach` and `reserve` (a week).
pub const MAX_HOLD_SECS: u64 = crate::registry::MAX_HOLD.as_secs();

/// How long pasidctl waits for the daemon to accept and answer a command.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(2);

/// Inspect and manage the PASIDs of a running vhost-user-pasid.
///
/// Talks to the daemon's control socket (mode 0600: run as the daemon's
/// user or root; 0660 with the daemon's --control-group, whose members may
/// run the read-only commands). Prints tables for people and, with --json,
/// the daemon's JSON for machines. A daemon that does not answer within
/// 2 seconds is an error. Errors are one line on stderr and exit status 1;
/// output cut short by a closed pipe (`| head`) ends quietly with status 0.
#[derive(Parser, Debug)]
#[command(name = "pasidctl", version)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, env = "PASIDCTL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET, global = true)]
    pub socket: PathBuf,

    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `pasidctl`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List allocated PASIDs with their holders and reference counts.
    Pasids {
        /// Only the PASIDs this VM holds a reference on.
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,
    },
    /// List VM slots with usage, quota and connection state.
    Vms,
    /// Whole-host figures.
    Stats,
    /// Print every metric in the OpenMetrics text format.
    Metrics,
    /// Live view of the VMs and their usage, refreshed until Ctrl-C.
    ///
    /// On a terminal, each refresh clears the screen (ANSI escape codes) and
    /// redraws it. Otherwise (a pipe or a file) each refresh is printed after
    /// the last, separated by a blank line, with no escape codes. With
    /// --json, prints one JSON object per refresh instead.
    Watch {
        /// Seconds between refreshes (fractions allowed, at least 0.1).
        #[arg(long, short = 'i', value_name = "SECONDS", default_value = "2", value_parser = parse_interval)]
        interval: Duration,
        /// Stop after N refreshes (default: run until Ctrl-C).
        #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Take a host reference on a PASID (pins it until put).
    Get {
        /// The PASID (decimal or 0x hex).
        #[arg(value_parser = parse_pasid)]
        pasid: u32,
        /// Host holder name.
        #[arg(long, default_value = DEFAULT_HOLDER)]
        holder: String,
    },
    /// Drop a host reference on a PASID; says whether it was freed.
    Put {
        /// The PASID (decimal or 0x hex).
        #[arg(value_parser = parse_pasid)]
        pasid: u32,
        /// Host holder name.
        #[arg(long, default_value = DEFAULT_HOLDER)]
        holder: String,
    },
    /// Release every PASID reference a VM holds.
    ///
    /// Only for a VM that is shut down: while it runs, its devices may still
    /// use the PASIDs, which can then be handed to another VM. A VM whose
    /// frontend is connected is refused unless --force is given.
    Release {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// Release even while the VM is connected: strips every PASID from
        /// the running guest, whose devices may still have them programmed.
        #[arg(long)]
        force: bool,
    },
    /// Re-plug a running VM's vpasid device through QEMU's QMP socket.
    ///
    /// QEMU does not reconnect a vhost-user device to a backend that
    /// restarted. This finds the device connected to the VM's socket,
    /// unplugs it (device_del, waiting for the guest to release it),
    /// replaces its chardev (chardev-remove, chardev-add) and plugs a new one
    /// with the same properties (device_add), then waits for the daemon to
    /// see the VM connect. The device must sit in a slot that supports PCI
    /// hotplug (the pc machine's root bus, or a pcie-root-port on q35).
    Reattach {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// The VM's QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`).
        #[arg(long, value_name = "PATH")]
        qmp: PathBuf,
        /// Seconds to wait for the guest to release the old device and for
        /// the new one to connect.
        #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_timeout)]
        timeout: Duration,
        /// Re-plug a connected VM that holds PASIDs although its hold-over
        /// is 0: the unplug then releases every PASID the guest still uses,
        /// and the daemon may give them to other VMs before the guest
        /// reconciles.
        #[arg(long)]
        force: bool,
    },
    /// Unplug a VM's vpasid device through QMP, keeping its PASIDs here.
    ///
    /// The first half of `reattach`, for live migration: tells the daemon
    /// first that the coming disconnect is to be held over for at least
    /// --hold seconds (whatever the VM's own hold-over), then finds the
    /// device connected to the VM's socket, unplugs it (device_del,
    /// waiting for the guest to release it) and removes its chardev. The
    /// daemon remembers the device (driver and properties, bus and addr
    /// included) for `attach` and `export`; --json prints it too.
    Detach {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// The VM's QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`).
        #[arg(long, value_name = "PATH")]
        qmp: PathBuf,
        /// Least hold-over after the disconnect, in seconds.
        #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = clap::value_parser!(u64).range(..=MAX_HOLD_SECS))]
        hold: u64,
        /// Keep the hold-over when the VM's QEMU process exits (same-host
        /// migration, where the source QEMU exits before the destination
        /// attaches). Without it, the source QEMU's exit releases the
        /// PASIDs at once.
        #[arg(long)]
        keep: bool,
        /// Seconds to wait for the guest to release the device.
        #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Plug a vpasid device for a VM through QMP and wait for its driver.
    ///
    /// The second half of `reattach`, for live migration: adds a chardev
    /// connected to the VM's socket on this daemon and plugs the device:
    /// the one --device describes (the "device" of `detach --json` or
    /// `export`), else the one this daemon remembers for the VM (detached
    /// here, or brought by `reserve`), else QEMU's generic device with the
    /// protocol's defaults on --bus at --addr. Then waits within --timeout
    /// for the guest's driver to RECONCILE or RESET, and reports which,
    /// after how long, with how many PASIDs kept, re-granted and in
    /// conflict. A timeout or a QMP failure is an error.
    Attach {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// The VM's QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`).
        #[arg(long, value_name = "PATH")]
        qmp: PathBuf,
        /// The VM's backend socket, if not the one the daemon lists for it
        /// (`--socket` is the control socket's option).
        #[arg(long, value_name = "PATH")]
        vm_socket: Option<PathBuf>,
        /// The device to plug as JSON (`detach --json` or `export`
        /// output, or its "device"); `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        device: Option<PathBuf>,
        /// PCI bus to plug on (q35: the pcie-root-port's id).
        #[arg(long, value_name = "BUS")]
        bus: Option<String>,
        /// PCI address on that bus (e.g. `4` or `04.0`).
        #[arg(long, value_name = "ADDR")]
        addr: Option<String>,
        /// Seconds to wait for the driver's RECONCILE or RESET.
        #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Print what a VM holds as JSON, for `reserve` on another host.
    ///
    /// Its PASIDs, quota, range, lease cap, this daemon's space id, and
    /// the device last detached from it (or null).
    Export {
        /// VM name.
        #[arg(long)]
        vm: String,
    },
    /// Reserve a VM's PASIDs before it arrives (migration pre-flight).
    ///
    /// Reads `export` output from another daemon and reserves exactly
    /// those PASIDs for the VM's slot here, all or nothing, durably, until
    /// the VM connects (its RECONCILE then keeps every one) or --hold
    /// runs out. On any conflict nothing is reserved, each conflicting
    /// PASID is printed on stderr with its holder (`PASID N is held by
    /// NAME`) and the exit status is 1; any other failure exits 2.
    Reserve {
        /// VM name (its slot must exist on this daemon).
        #[arg(long)]
        vm: String,
        /// `export` output; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Seconds to keep the reservation (default: the VM's hold-over on
        /// this daemon if it has one, else 300).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_HOLD_SECS))]
        hold: Option<u64>,
    },
    /// Set a VM's quota.
    ///
    /// A quota above the number of PASIDs the VM's range holds (reserved ones
    /// excluded) is refused, with that maximum in the message.
    Quota {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// New quota.
        quota: u32,
    },
}

/// Parses a PASID in decimal or `0x` hex.
pub fn parse_pasid(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a PASID: {e}"))
}

/// Parses a timeout in whole or fractional seconds, at least 1 s.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!("timeout {s} s is shorter than 1 s")),
        Err(e) => Err(format!("{s:?} is not a number of seconds: {e}")),
    }
}

/// Parses a refresh interval in seconds, at least [`MIN_WATCH_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if d < MIN_WATCH_INTERVAL {
        return Err(format!(
            "interval {s} s is shorter than {} s",
            MIN_WATCH_INTERVAL.as_secs_f64()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_matches::assert_matches;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_takes_interval_and_count() {
        let cli = Cli::parse_from(["pasidctl", "watch", "--interval", "0.5", "--count", "2"]);
        assert_matches!(
            cli.command,
            Command::Watch { interval, count: Some(2) } if interval == Duration::from_millis(500)
        );
        let cli = Cli::parse_from(["pasidctl", "watch"]);
        assert_matches!(
            cli.command,
            Command::Watch { interval, count: None } if interval == Duration::from_secs(2)
        );
        assert!(Cli::try_parse_from(["pasidctl", "watch", "--count", "0"]).is_err());
        assert!(Cli::try_parse_from(["pasidctl", "watch", "--interval", "0.01"]).is_err());
        assert!(Cli::try_parse_from(["pasidctl", "watch", "--interval", "-1"]).is_err());
    }

    #[test]
    fn release_force_and_pasids_vm_filter() {
        let cli = Cli::parse_from(["pasidctl", "release", "--vm", "web"]);
        assert_matches!(cli.command, Command::Release { vm, force: false } if vm == "web");
        let cli = Cli::parse_from(["pasidctl", "release", "--vm", "web", "--force"]);
        assert_matches!(cli.command, Command::Release { force: true, .. });
        let cli = Cli::parse_from(["pasidctl", "pasids", "--vm", "db"]);
        assert_matches!(cli.command, Command::Pasids { vm: Some(vm) } if vm == "db");
        let cli = Cli::parse_from(["pasidctl", "pasids"]);
        assert_matches!(cli.command, Command::Pasids { vm: None });
    }

    #[test]
    fn reattach_takes_a_vm_a_qmp_socket_and_a_timeout() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["pasidctl", "reattach", "--vm", "a", "--qmp", "/run/q.sock"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| cli.command)
        };
        assert_matches!(
            parse(&[]),
            Ok(Command::Reattach { vm, qmp, timeout, force: false })
                if vm == "a" && qmp == Path::new("/run/q.sock") && timeout == Duration::from_secs(30)
        );
        assert_matches!(
            parse(&["--force"]),
            Ok(Command::Reattach { force: true, .. })
        );
        assert_matches!(
            parse(&["--timeout", "2.5"]),
            Ok(Command::Reattach { timeout, .. }) if timeout == Duration::from_millis(2500)
        );
        assert!(parse(&["--timeout", "0.5"]).is_err());
        assert!(Cli::try_parse_from(["pasidctl", "reattach", "--vm", "a"]).is_err());
    }

    #[test]
    fn migration_commands_take_their_options() {
        let cli = Cli::parse_from(["pasidctl", "detach", "--vm", "a", "--qmp", "/q"]);
        assert_matches!(
            cli.command,
            Command::Detach { vm, hold: 300, keep: false, timeout, .. }
                if vm == "a" && timeout == Duration::from_secs(30)
        );
        let cli = Cli::parse_from([
            "pasidctl", "detach", "--vm", "a", "--qmp", "/q", "--hold", "0", "--keep",
        ]);
        assert_matches!(
            cli.command,
            Command::Detach {
                hold: 0,
                keep: true,
                ..
            }
        );
        assert!(Cli::try_parse_from([
            "pasidctl", "detach", "--vm", "a", "--qmp", "/q", "--hold", "604801"
        ])
        .is_err());
        let cli = Cli::parse_from([
            "pasidctl",
            "--socket",
            "/ctl",
            "attach",
            "--vm",
            "a",
            "--qmp",
            "/q",
            "--vm-socket",
            "/a.sock",
            "--device",
            "-",
            "--bus",
            "port0",
            "--addr",
            "0",
        ]);
        assert_eq!(cli.socket, Path::new("/ctl"));
        assert_matches!(
            cli.command,
            Command::Attach { vm_socket: Some(s), device: Some(d), bus: Some(b), addr: Some(a), .. }
                if s == Path::new("/a.sock") && d == Path::new("-") && b == "port0" && a == "0"
        );
        let cli = Cli::parse_from(["pasidctl", "reserve", "--vm", "a", "--from", "-"]);
        assert_matches!(cli.command, Command::Reserve { hold: None, .. });
        assert!(Cli::try_parse_from([
            "pasidctl", "reserve", "--vm", "a", "--from", "-", "--hold", "0"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["pasidctl", "reserve", "--vm", "a"]).is_err());
        let cli = Cli::parse_from(["pasidctl", "export", "--vm", "a"]);
        assert_matches!(cli.command, Command::Export { vm } if vm == "a");
    }

    #[test]
    fn pasids_parse_in_decimal_and_hex() {
        assert_eq!(parse_pasid("17"), Ok(17));
        assert_eq!(parse_pasid("0x11"), Ok(17));
        assert!(parse_pasid("seventeen").is_err());
    }
}
