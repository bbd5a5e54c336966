// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A QEMU guest (TCG, one vCPU) booted from a cached kernel and initramfs,
//! driven through a shell on its serial console.
//!
//! QEMU runs from the trixie chroot `.cache/qemu-root` (see `qemu.rs`). The
//! console is streamed to `target/qemu-tests-logs/<test>-<guest>.log` as it
//! arrives, with the harness's notes (`>>> ...`: QEMU's command line, each
//! command run and its exit status, QEMU's stderr) in between.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::GuestConfig;
use crate::console::{self, Decoder, MAX_COMMAND_LEN, PANIC_MARKER, READY_MARKER};
use crate::error::{Error, Result};
use crate::health;
use crate::process::ChildGuard;
use crate::qemu;
use crate::setup;

/// How long `check_health` lets each of its guest commands run.
const HEALTH_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `wait_for_dmesg` looks.
const DMESG_POLL: Duration = Duration::from_millis(250);

/// How long a shell reset after a command timeout may take.
const SHELL_RESET_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait for QEMU to go after it closed its console.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// How much of QEMU's stderr an error message quotes.
const STDERR_TAIL: usize = 2000;

/// Which console position a wait starts from.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The shell protocol's (commands, readiness).
    Shell,
    /// `wait_for`'s.
    Watch,
}

/// Quotes `s` as one word for the guest's shell, e.g. to build commands
/// from arbitrary strings: `it's` becomes `'it'\''s'`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a guest command printed (stdout and stderr) and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit status of the command.
    pub exit_code: i32,
    /// The output, one `\n`-terminated line per output line, without kernel
    /// messages that interleaved on the console.
    pub output: String,
}

impl CmdOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The output without leading and trailing whitespace.
    pub fn trimmed(&self) -> &str {
        self.output.trim()
    }
}

/// Console text and QEMU's stderr, filled by the reader threads.
#[derive(Debug, Default)]
struct State {
    console: String,
    stderr: String,
    eof: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log file, shared by the reader threads and the harness's notes.
#[derive(Debug)]
struct LogFile(Mutex<File>);

impl LogFile {
    fn write(&self, text: &str) {
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A failing log write must not fail the test; the text stays in memory.
        let _ = file.write_all(text.as_bytes());
    }

    /// A harness note on its own line.
    fn note(&self, text: &str) {
        self.write(&format!("\n>>> {text}\n"));
    }
}

/// A running QEMU guest. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Guest {
    config: GuestConfig,
    qemu: ChildGuard,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    log: Arc<LogFile>,
    log_path: PathBuf,
    readers: Vec<JoinHandle<()>>,
    /// Start of the console text the shell protocol has not consumed.
    shell_cursor: usize,
    /// Start of the console text `wait_for` has not consumed. Separate, so
    /// that a message printed while a command ran is still found.
    watch_cursor: usize,
    next_id: u64,
}

impl Guest {
    /// Runs the set-up ([`setup::ensure_setup`]), boots a guest and waits
    /// until its shell is ready.
    pub fn boot(config: GuestConfig) -> Result<Guest> {
        setup::ensure_setup()?;
        let kernel = config.kernel.vmlinuz();
        let initramfs = config.kernel.initramfs();
        for path in [&kernel, &initramfs] {
            if !path.is_file() {
                return Err(Error::Setup(format!(
                    "{} is missing after set-up",
                    path.display()
                )));
            }
        }
        // QEMU sees only the bind-mounted directories, at their canonical
        // paths (qemu::command): a cache reached through a symlink (a
        // worktree's `.cache/kernels`) must be named by its real path.
        let real = |p: &Path| {
            fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
        };
        let (kernel, initramfs) = (real(&kernel)?, real(&initramfs)?);
        let args = qemu::qemu_args(&config, &kernel, &initramfs);
        let note = format!(
            "guest {} ({}): qemu-system-x86_64 {}",
            config.name,
            config.kernel,
            args.join(" ")
        );
        let cmd = qemu::command(&setup::qemu_root(), &config, &kernel, &initramfs, &args)?;
        Guest::spawn(config, cmd, &note, || Ok(()))
    }

    /// Starts the destination QEMU of a live migration: `config`'s
    /// arguments without its vhost-user chardevs and devices (the source
    /// unplugs its device before it migrates, and the device cannot be
    /// migrated), plus `-incoming URI`. `config` should be the source's,
    /// renamed, with its own `-qmp` socket and with the directories of the
    /// migration socket and of the destination daemon's sockets in
    /// [`GuestConfig::bind_dirs`]. Returns at once: the guest runs in it
    /// only once a migration completes, and then [`Guest::adopt`] moves the
    /// source's [`Guest`] onto it.
    pub fn start_incoming(config: GuestConfig, uri: &str) -> Result<Guest> {
        setup::ensure_setup()?;
        let real = |p: &Path| {
            fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
        };
        let kernel = real(&config.kernel.vmlinuz())?;
        let initramfs = real(&config.kernel.initramfs())?;
        let args = qemu::incoming_args(&config, &kernel, &initramfs, uri);
        let note = format!(
            "incoming QEMU {} ({}): qemu-system-x86_64 {}",
            config.name,
            config.kernel,
            args.join(" ")
        );
        let cmd = qemu::command(&setup::qemu_root(), &config, &kernel, &initramfs, &args)?;
        Guest::start(config, cmd, &note)
    }

    /// After a completed migration to `incoming` (from
    /// [`Guest::start_incoming`]): this guest's console, input and process
    /// become `incoming`'s QEMU, where the guest now runs, and its shell
    /// goes on where it was (command ids carry on; the console log goes on
    /// in `incoming`'s file). Returns the source QEMU, paused after the
    /// migration, as a guest without a shell: quit it over QMP or
    /// [`Guest::kill`] it, and [`Guest::wait_exit`] for it.
    pub fn adopt(&mut self, mut incoming: Guest) -> Guest {
        self.log.note(&format!(
            "migrated to {} (pid {}), console log {}",
            incoming.config.name,
            incoming.qemu.id(),
            incoming.log_path.display()
        ));
        incoming.log.note(&format!(
            "guest {} migrated in; its shell goes on here",
            self.config.name
        ));
        std::mem::swap(&mut self.qemu, &mut incoming.qemu);
        std::mem::swap(&mut self.stdin, &mut incoming.stdin);
        std::mem::swap(&mut self.shared, &mut incoming.shared);
        std::mem::swap(&mut self.log, &mut incoming.log);
        std::mem::swap(&mut self.log_path, &mut incoming.log_path);
        std::mem::swap(&mut self.readers, &mut incoming.readers);
        std::mem::swap(&mut self.shell_cursor, &mut incoming.shell_cursor);
        std::mem::swap(&mut self.watch_cursor, &mut incoming.watch_cursor);
        // The source keeps its name in messages, as "NAME (source)".
        incoming.config = self.config.clone();
        incoming.config.name = format!("{} (source)", self.config.name);
        incoming
    }

    /// Waits up to `timeout` for QEMU to exit by itself and returns its
    /// status (e.g. a migration's source after `quit`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = self.qemu.wait_timeout(timeout)?;
        self.join_readers();
        Ok(status)
    }

    /// Runs `cmd`, whose stdin and stdout are the guest's serial console
    /// (QEMU itself, or a relay to the console of a QEMU that someone else
    /// starts), calls `started` once it runs, then waits until the guest's
    /// shell is ready. `note` heads the console log.
    pub(crate) fn spawn(
        config: GuestConfig,
        cmd: std::process::Command,
        note: &str,
        started: impl FnOnce() -> Result<()>,
    ) -> Result<Guest> {
        let mut guest = Guest::start(config, cmd, note)?;
        if let Err(e) = started() {
            guest.log.note(&format!("start failed: {e}"));
            return Err(e);
        }
        guest.wait_ready("the guest shell after boot")?;
        Ok(guest)
    }

    /// Runs `cmd` as [`Guest::spawn`] does, without waiting for a shell.
    fn start(config: GuestConfig, mut cmd: std::process::Command, note: &str) -> Result<Guest> {
        let log_path = unique_log_path(&config)?;
        let log_file = File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let log = Arc::new(LogFile(Mutex::new(log_file)));
        log.note(note);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut qemu = ChildGuard::spawn(format!("QEMU of guest {}", config.name), cmd)?;

        let shared = Arc::new(Shared::default());
        let child = qemu.child_mut();
        let stdin = child.stdin.take();
        if let Some(stdin) = &stdin {
            set_nonblocking(stdin)?;
        }
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(spawn_reader(&config.name, "console", {
                let (shared, log) = (Arc::clone(&shared), Arc::clone(&log));
                move || read_console(stdout, &shared, &log)
            })?);
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(spawn_reader(&config.name, "stderr", {
                let (shared, log) = (Arc::clone(&shared), Arc::clone(&log));
                move || read_stderr(stderr, &shared, &log)
            })?);
        }

        Ok(Guest {
            config,
            qemu,
            stdin,
            shared,
            log,
            log_path,
            readers,
            shell_cursor: 0,
            watch_cursor: 0,
            next_id: 1,
        })
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The guest's configuration.
    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// Where the console log is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.qemu.id()
    }

    /// Whether QEMU still runs.
    pub fn is_running(&mut self) -> bool {
        self.qemu.is_running()
    }

    /// Everything the console printed so far (all boots), `\r` removed.
    pub fn console_log(&self) -> String {
        self.shared.lock().console.clone()
    }

    /// Everything QEMU wrote to its stderr so far.
    pub fn qemu_stderr(&self) -> String {
        self.shared.lock().stderr.clone()
    }

    /// Runs `cmd` in the guest's shell (in a subshell, stdin from
    /// `/dev/null`, stderr merged into stdout) and waits up to `timeout`
    /// for it to finish. `cmd` may span several lines but must be complete
    /// shell syntax and at most 3000 bytes.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<CmdOutput> {
        if cmd.len() > MAX_COMMAND_LEN {
            return Err(Error::InvalidCommand {
                reason: "longer than 3000 bytes",
                cmd: cmd.to_string(),
            });
        }
        if cmd.contains('\0') || cmd.contains('\x03') || cmd.contains('\x04') {
            return Err(Error::InvalidCommand {
                reason: "contains a NUL or control character",
                cmd: cmd.to_string(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.log.note(&format!("run #{id}: {cmd}"));
        self.send(&console::command_payload(id, cmd))?;
        let what = format!("guest command `{cmd}`");
        let log_path = self.log_path.clone();
        let result = self.wait_console(Cursor::Shell, &what, timeout, |text| {
            if let Some(done) = console::parse_finished(text, id) {
                let output = CmdOutput {
                    exit_code: done.exit_code,
                    output: done.output,
                };
                return Some(Ok((output, done.consumed)));
            }
            text.contains(READY_MARKER).then(|| {
                Err(Error::ShellRestarted {
                    cmd: cmd.to_string(),
                    log: log_path.clone(),
                })
            })
        });
        match &result {
            Ok(out) => self.log.note(&format!("run #{id}: exit {}", out.exit_code)),
            Err(e) => {
                self.log.note(&format!("run #{id}: {e}"));
                if matches!(e, Error::Timeout { .. }) {
                    self.reset_shell();
                }
            }
        }
        result
    }

    /// Like [`Guest::run`], but a non-zero exit status is an error; returns
    /// the output.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let out = self.run(cmd, timeout)?;
        if out.success() {
            Ok(out.output)
        } else {
            Err(Error::CommandFailed {
                cmd: cmd.to_string(),
                exit_code: out.exit_code,
                output: out.output,
                log: self.log_path.clone(),
            })
        }
    }

    /// Waits up to `timeout` for `pattern` to appear on the console after
    /// the previous `wait_for` match (from boot on for the first call), and
    /// returns the line holding it. Commands run meanwhile do not consume
    /// console text for this. Kernel messages less severe than the console
    /// log level ([`GuestConfig::console_loglevel`]) never reach the
    /// console: use [`Guest::wait_for_dmesg`] for those.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let what = format!("`{pattern}` on the console");
        self.wait_console(Cursor::Watch, &what, timeout, |text| {
            let at = text.find(pattern)?;
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            Some(Ok((text[start..end].to_string(), at + pattern.len())))
        })
    }

    /// Polls the guest's `dmesg` (every 250 ms) until a line contains
    /// `pattern` (a fixed string), for up to `timeout`; returns that line.
    pub fn wait_for_dmesg(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let cmd = format!("dmesg | grep -F -e {} | tail -n 1", shell_quote(pattern));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self.run(&cmd, left.max(Duration::from_secs(5)))?;
            if let Some(line) = out.output.lines().find(|l| l.contains(pattern)) {
                return Ok(line.to_string());
            }
            if Instant::now() + DMESG_POLL >= deadline {
                return Err(Error::Timeout {
                    what: format!("`{pattern}` in dmesg"),
                    timeout,
                    log: self.log_path.clone(),
                });
            }
            thread::sleep(DMESG_POLL);
        }
    }

    /// Writes `text` to the console as is (for interactive programs). Fails
    /// rather than blocks when QEMU does not take the input (about 64 KiB
    /// unread).
    pub fn send(&mut self, text: &str) -> Result<()> {
        let name = &self.config.name;
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            Error::io(
                format!("writing to the console of {name}"),
                io::Error::from(io::ErrorKind::BrokenPipe),
            )
        })?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::io(format!("writing to the console of {name}"), e))
    }

    /// Fails when `dmesg` shows a warning, bug, oops, lockup, RCU stall or
    /// call trace, when the kernel carries a taint other than O and E, or
    /// when the console log so far shows any of those.
    pub fn check_health(&mut self) -> Result<()> {
        let mut findings = Vec::new();
        let dmesg = self.run("dmesg", HEALTH_CMD_TIMEOUT)?;
        findings.extend(health::scan_log(&dmesg.output, &self.config.allow_in_log));
        let tainted = self.run_ok("cat /proc/sys/kernel/tainted", HEALTH_CMD_TIMEOUT)?;
        let value: u64 = tainted
            .trim()
            .parse()
            .map_err(|_| Error::UnexpectedOutput {
                what: "/proc/sys/kernel/tainted".into(),
                output: tainted.clone(),
            })?;
        findings.extend(health::check_taint(value));
        findings.extend(health::scan_log(
            &self.console_log(),
            &self.config.allow_in_log,
        ));
        self.verdict(findings)
    }

    /// Fails when the console log shows a kernel problem (see
    /// [`Guest::check_health`]); works on a guest that has stopped too.
    pub fn check_console_health(&self) -> Result<()> {
        let findings = health::scan_log(&self.console_log(), &self.config.allow_in_log);
        self.verdict(findings)
    }

    fn verdict(&self, mut findings: Vec<String>) -> Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        findings.dedup();
        self.log
            .note(&format!("unhealthy: {}", findings.join(" | ")));
        Err(Error::Unhealthy {
            guest: self.config.name.clone(),
            findings,
            log: self.log_path.clone(),
        })
    }

    /// Powers the guest off (`poweroff -f`), waits up to `timeout` for QEMU
    /// to exit, then checks the whole console log's health.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<()> {
        if let Some(status) = self.qemu.try_wait()? {
            return Err(self.exited_error("poweroff", status));
        }
        self.log.note("poweroff -f");
        self.send("poweroff -f\n")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.qemu.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill()?;
                return Err(Error::Timeout {
                    what: "QEMU to exit after poweroff".into(),
                    timeout,
                    log: self.log_path.clone(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        if !status.success() {
            return Err(self.exited_error("a clean poweroff", status));
        }
        self.check_console_health()
    }

    /// Kills QEMU (`SIGKILL`) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.log.note("killing QEMU");
        self.qemu.kill()?;
        self.join_readers();
        Ok(())
    }

    /// Reboots the guest (`reboot -f`) and waits up to `timeout` for its
    /// shell. Needs a guest booted with `no_reboot` false.
    pub fn reboot_and_wait(&mut self, timeout: Duration) -> Result<()> {
        if self.config.no_reboot {
            return Err(Error::RebootDisabled(self.config.name.clone()));
        }
        self.log.note("reboot -f");
        self.send("reboot -f\n")?;
        let saved = std::mem::replace(&mut self.config.boot_timeout, timeout);
        let result = self.wait_ready("the guest shell after reboot");
        self.config.boot_timeout = saved;
        result
    }

    /// After a command timed out: interrupts it (^C) and ends the shell
    /// (^D, which also ends an unterminated quote or heredoc), so that
    /// `/init` starts a fresh one. Best effort: a command stuck in the
    /// kernel keeps the shell busy, and later commands time out too.
    fn reset_shell(&mut self) {
        self.log.note("resetting the guest shell (^C, ^D)");
        if self.send("\x03").is_err() {
            return;
        }
        // Let the interrupt land before the shell reads the end of input.
        thread::sleep(Duration::from_millis(200));
        if self.send("\x04").is_err() {
            return;
        }
        if let Err(e) = self.wait_console(
            Cursor::Shell,
            "a fresh guest shell",
            SHELL_RESET_TIMEOUT,
            |text| {
                let at = text.find(READY_MARKER)?;
                Some(Ok(((), at + READY_MARKER.len())))
            },
        ) {
            self.log.note(&format!("shell reset failed: {e}"));
        }
    }

    fn wait_ready(&mut self, what: &str) -> Result<()> {
        let timeout = self.config.boot_timeout;
        self.wait_console(Cursor::Shell, what, timeout, |text| {
            let at = text.find(READY_MARKER)?;
            Some(Ok(((), at + READY_MARKER.len())))
        })
    }

    /// Waits until `check` finds what it looks for in the console text from
    /// `cursor` on, returning its value and advancing that cursor by the
    /// consumed length. Fails on timeout, QEMU exit or a guest kernel panic.
    fn wait_console<T>(
        &mut self,
        cursor: Cursor,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&str) -> Option<Result<(T, usize)>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        loop {
            let start = match cursor {
                Cursor::Shell => self.shell_cursor,
                Cursor::Watch => self.watch_cursor,
            };
            let text = state.console.get(start..).unwrap_or_default();
            match check(text) {
                Some(Ok((value, consumed))) => {
                    match cursor {
                        Cursor::Shell => self.shell_cursor += consumed,
                        Cursor::Watch => self.watch_cursor += consumed,
                    }
                    return Ok(value);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if text.contains(PANIC_MARKER) {
                return Err(Error::GuestPanicked {
                    what: what.to_string(),
                    log: self.log_path.clone(),
                });
            }
            if state.eof {
                drop(state);
                let status = self.qemu.wait_timeout(EXIT_GRACE).map_or_else(
                    |_| "still running with its console closed".to_string(),
                    |s| s.to_string(),
                );
                return Err(self.exited_error_text(what, status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    timeout,
                    log: self.log_path.clone(),
                });
            }
            state = shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn exited_error(&self, what: &str, status: ExitStatus) -> Error {
        self.exited_error_text(what, status.to_string())
    }

    fn exited_error_text(&self, what: &str, status: String) -> Error {
        let stderr = self.qemu_stderr();
        let tail_start = stderr
            .char_indices()
            .rev()
            .nth(STDERR_TAIL)
            .map_or(0, |(i, _)| i);
        let status = if stderr.is_empty() {
            status
        } else {
            format!("{status}; stderr: {}", stderr[tail_start..].trim())
        };
        Error::GuestExited {
            what: what.to_string(),
            status,
            log: self.log_path.clone(),
        }
    }

    fn join_readers(&mut self) {
        self.stdin = None;
        for reader in self.readers.drain(..) {
            // A reader that panicked has nothing left to report.
            let _ = reader.join();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if thread::panicking() {
            // Shown with the failing test's output.
            eprintln!(
                "guest {}: console log at {}",
                self.config.name,
                self.log_path.display()
            );
        }
        if self.qemu.is_running() {
            self.log.note("guest dropped while running: killing QEMU");
        }
        let _ = self.qemu.kill();
        self.join_readers();
    }
}

/// `target/qemu-tests-logs/<test>-<guest>.log`, unique within the process.
fn unique_log_path(config: &GuestConfig) -> Result<PathBuf> {
    unique_log_path_for(config.test_name.as_deref(), &config.name)
}

/// `target/qemu-tests-logs/<test>-<name>.log`, unique within the process
/// (shared by guests' console logs and daemons' logs). `test` defaults to
/// the current thread's name, which the test harness sets to the test's.
pub(crate) fn unique_log_path_for(test: Option<&str>, name: &str) -> Result<PathBuf> {
    static USED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let dir = setup::log_dir();
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let test = test
        .map(str::to_string)
        .or_else(|| thread::current().name().map(str::to_string))
        .filter(|t| t != "main")
        .unwrap_or_else(|| "test".into());
    let base = format!("{}-{}", sanitize(&test), sanitize(name));
    let mut used = USED.lock().unwrap_or_else(PoisonError::into_inner);
    let used = used.get_or_insert_with(HashSet::new);
    let mut path = dir.join(format!("{base}.log"));
    let mut n = 2;
    while !used.insert(path.clone()) {
        path = dir.join(format!("{base}-{n}.log"));
        n += 1;
    }
    Ok(path)
}

fn sanitize(s: &str) -> String {
    let s = s.replace("::", ".");
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Makes writes to QEMU's console input fail instead of blocking when the
/// guest stops reading (a hung guest must not hang the test).
fn set_nonblocking(stdin: &ChildStdin) -> Result<()> {
    let fd = stdin.as_raw_fd();
    // SAFETY: fcntl(2) on a file descriptor owned by `stdin`, which stays
    // open for the duration of both calls; F_GETFL/F_SETFL touch no memory.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(Error::io(
            "making the console input non-blocking",
            io::Error::last_os_error(),
        ))
    }
}

fn spawn_reader(
    guest: &str,
    what: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("{guest}-{what}"))
        .spawn(body)
        .map_err(|e| Error::io(format!("starting the {what} reader of {guest}"), e))
}

fn read_console(mut stdout: impl Read, shared: &Shared, log: &LogFile) {
    let mut decoder = Decoder::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let text = decoder.push(&buf[..n]);
        log.write(&text);
        shared.lock().console.push_str(&text);
        shared.changed.notify_all();
    }
    shared.lock().eof = true;
    shared.changed.notify_all();
}

fn read_stderr(stderr: impl Read, shared: &Shared, log: &LogFile) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        log.note(&format!("qemu stderr: {line}"));
        let mut state = shared.lock();
        state.stderr.push_str(&line);
        state.stderr.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn log_names_are_sanitized() {
        assert_eq!(sanitize("boot::boots_6_1"), "boot.boots_6_1");
        assert_eq!(sanitize("a b/c"), "a_b_c");
    }
}
