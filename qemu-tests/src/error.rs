// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The error type of the QEMU test harness.
//!
//! Every variant that concerns a running guest carries the path of its
//! console log, so a failing test's panic message points at it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the QEMU test harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A set-up script failed; the text holds the script and its output tail.
    #[error("qemu-tests set-up failed: {0}")]
    Setup(String),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {timeout:?} waiting for {what} (console log: {log})")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound that expired.
        timeout: Duration,
        /// Console log of the guest, if any.
        log: PathBuf,
    },
    /// A bounded wait outside a guest (a path, a socket, a process) expired.
    #[error("timed out after {timeout:?} waiting for {what}")]
    WaitTimeout {
        /// What was awaited.
        what: String,
        /// The bound that expired.
        timeout: Duration,
    },
    /// QEMU exited while the harness still expected the guest to run.
    #[error("QEMU exited ({status}) while waiting for {what} (console log: {log})")]
    GuestExited {
        /// What was awaited.
        what: String,
        /// QEMU's exit status, as text.
        status: String,
        /// Console log of the guest.
        log: PathBuf,
    },
    /// The guest kernel panicked.
    #[error("guest kernel panicked while waiting for {what} (console log: {log})")]
    GuestPanicked {
        /// What was awaited.
        what: String,
        /// Console log of the guest.
        log: PathBuf,
    },
    /// The guest's shell restarted (reboot or `exit`) while a command ran.
    #[error("guest shell restarted while running `{cmd}` (console log: {log})")]
    ShellRestarted {
        /// The command that was running.
        cmd: String,
        /// Console log of the guest.
        log: PathBuf,
    },
    /// A guest command exited with a non-zero status (from `run_ok`).
    #[error("guest command `{cmd}` exited with {exit_code}: {output} (console log: {log})")]
    CommandFailed {
        /// The command.
        cmd: String,
        /// Its exit status.
        exit_code: i32,
        /// Its combined stdout and stderr.
        output: String,
        /// Console log of the guest.
        log: PathBuf,
    },
    /// A command cannot be sent over the serial console.
    #[error("invalid guest command ({reason}): {cmd:.80}")]
    InvalidCommand {
        /// Why it was refused.
        reason: &'static str,
        /// The command (first 80 characters).
        cmd: String,
    },
    /// The guest log shows a kernel problem or a forbidden taint.
    #[error("guest {guest} is unhealthy: {} (console log: {log})", findings.join(" | "))]
    Unhealthy {
        /// The guest's name.
        guest: String,
        /// The offending lines or taint description.
        findings: Vec<String>,
        /// Console log of the guest.
        log: PathBuf,
    },
    /// `reboot_and_wait` on a guest booted with `no_reboot`.
    #[error("guest {0} was booted with -no-reboot: a reboot would stop QEMU")]
    RebootDisabled(String),
    /// A host binary the tests run is missing: it is built before the
    /// tests, never by them (cargo holds the target directory's lock).
    #[error(
        "{} is missing: build it first with `cargo build --release --bins` \
         (or run `bash qemu-tests/run test`)",
        path.display()
    )]
    MissingBinary {
        /// Where the binary was looked for.
        path: PathBuf,
    },
    /// The `vhost-user-pasid` daemon, or `pasidctl` talking to it, failed or
    /// answered something unexpected.
    #[error("{what}: {detail} (daemon log: {log})")]
    Daemon {
        /// What was being done.
        what: String,
        /// What went wrong.
        detail: String,
        /// The daemon's log.
        log: PathBuf,
    },
    /// libvirtd, or `virsh` talking to it, failed.
    #[error("{what}: {detail} (libvirtd log: {log})")]
    Libvirt {
        /// What was being done.
        what: String,
        /// What went wrong.
        detail: String,
        /// libvirtd's log.
        log: PathBuf,
    },
    /// A QMP exchange with QEMU failed, or QEMU refused a command.
    #[error("QMP {what} on {}: {detail}", socket.display())]
    Qmp {
        /// The QMP socket.
        socket: PathBuf,
        /// The command or event.
        what: String,
        /// QEMU's error, or what went wrong.
        detail: String,
    },
    /// Output from the guest could not be parsed.
    #[error("unexpected guest output for `{what}`: {output:.200}")]
    UnexpectedOutput {
        /// What was parsed.
        what: String,
        /// The output.
        output: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
