// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The harness's own QMP client, for what the tests do to QEMU themselves
//! (`migrate`, `query-migrate`, `quit`) and to watch what `pasidctl` does
//! to it. Deliberately not the daemon's `pasidctl` client: a test observes
//! QEMU through code that is not under test.
//!
//! QMP is line-delimited JSON over a Unix socket: a greeting, then
//! `qmp_capabilities`, then one `return` or `error` per command, with
//! asynchronous events in between (kept for [`Qmp::wait_event`]). Every
//! read is bounded.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::process::wait_for_unix_listener;

/// A QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    partial: Vec<u8>,
    events: VecDeque<Value>,
    timeout: Duration,
}

impl Qmp {
    /// Waits up to `timeout` for QEMU to listen on `path`, connects and
    /// enters command mode; each later command's answer is bounded by
    /// `timeout` too.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        wait_for_unix_listener(path, timeout)?;
        let stream = UnixStream::connect(path)
            .map_err(|e| Error::io(format!("connecting to QMP {}", path.display()), e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the QMP socket", e))?;
        let mut qmp = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            events: VecDeque::new(),
            timeout,
        };
        let greeting = qmp.read_message(timeout, "the QMP greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.unexpected("the QMP greeting", &greeting));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; a QMP `error` answer
    /// is [`Error::Qmp`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut message = Map::new();
        message.insert("execute".into(), Value::from(command));
        if let Some(arguments) = arguments {
            message.insert("arguments".into(), arguments);
        }
        let mut line = Value::Object(message).to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(format!("sending QMP {command}"), e))?;
        let started = Instant::now();
        loop {
            let left = self.timeout.saturating_sub(started.elapsed());
            let message = self.read_message(left, &format!("the answer to {command}"))?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(Error::Qmp {
                    socket: self.path.clone(),
                    what: command.to_string(),
                    detail: error.to_string(),
                });
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
                continue;
            }
            return Err(self.unexpected(command, &message));
        }
    }

    /// Waits up to `timeout` for event `name` whose `data` passes `wanted`
    /// and returns its `data`; other events stay queued.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let matches = |m: &Value| {
            m.get("event").and_then(Value::as_str) == Some(name)
                && wanted(m.get("data").unwrap_or(&Value::Null))
        };
        if let Some(pos) = self.events.iter().position(matches) {
            let event = self.events.remove(pos).unwrap_or_default();
            return Ok(event.get("data").cloned().unwrap_or_default());
        }
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let message = self.read_message(left, &format!("event {name}"))?;
            if matches(&message) {
                return Ok(message.get("data").cloned().unwrap_or_default());
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
            }
        }
    }

    fn unexpected(&self, what: &str, message: &Value) -> Error {
        Error::Qmp {
            socket: self.path.clone(),
            what: what.to_string(),
            detail: format!("unexpected message {message}"),
        }
    }

    fn read_message(&mut self, within: Duration, what: &str) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::WaitTimeout {
                    what: format!("{what} on QMP {}", self.path.display()),
                    timeout: within,
                });
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| Error::io("setting the QMP read timeout", e))?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return serde_json::from_str(text.trim()).map_err(|e| Error::Qmp {
                        socket: self.path.clone(),
                        what: what.to_string(),
                        detail: format!("{e}: {}", text.trim()),
                    });
                }
                Ok(_) => {
                    return Err(Error::Qmp {
                        socket: self.path.clone(),
                        what: what.to_string(),
                        detail: "QEMU closed the connection".into(),
                    })
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Error::io(format!("reading QMP {}", self.path.display()), e)),
            }
        }
    }
}

/// What `query-migrate` said when a migration ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `total-time` in ms (from `migrate` to the end), when QEMU gave it.
    pub total_ms: Option<u64>,
    /// `downtime` in ms (the guest paused), when QEMU gave it.
    pub downtime_ms: Option<u64>,
    /// RAM bytes transferred.
    pub transferred: u64,
    /// QEMU's `error-desc` of a failed migration.
    pub error: Option<String>,
}

impl Migration {
    /// Reads a `query-migrate` answer; `None` while it is still running.
    pub fn from_query(answer: &Value) -> Option<Migration> {
        let status = answer.get("status").and_then(Value::as_str)?;
        if !matches!(status, "completed" | "failed" | "cancelled") {
            return None;
        }
        let num = |key: &str| answer.get(key).and_then(Value::as_u64);
        Some(Migration {
            status: status.to_string(),
            total_ms: num("total-time"),
            downtime_ms: num("downtime"),
            transferred: answer
                .get("ram")
                .and_then(|r| r.get("transferred"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            error: answer
                .get("error-desc")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

impl Qmp {
    /// Polls `query-migrate` every 50 ms until the migration has ended or
    /// `timeout` has passed; `on_poll` sees each answer while it runs
    /// (e.g. to kill the destination half-way).
    pub fn wait_migration(
        &mut self,
        timeout: Duration,
        mut on_poll: impl FnMut(&Value),
    ) -> Result<Migration> {
        let started = Instant::now();
        loop {
            let answer = self.execute("query-migrate", None)?;
            if let Some(done) = Migration::from_query(&answer) {
                return Ok(done);
            }
            on_poll(&answer);
            if started.elapsed() >= timeout {
                return Err(Error::WaitTimeout {
                    what: format!("the migration to end (last {answer})"),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_results_parse() {
        let running = serde_json::json!({"status": "active", "ram": {"transferred": 5}});
        assert_eq!(Migration::from_query(&running), None);
        let done = serde_json::json!({
            "status": "completed", "total-time": 3400, "downtime": 12,
            "ram": {"transferred": 123}
        });
        assert_eq!(
            Migration::from_query(&done),
            Some(Migration {
                status: "completed".into(),
                total_ms: Some(3400),
                downtime_ms: Some(12),
                transferred: 123,
                error: None
            })
        );
        let failed = serde_json::json!({"status": "failed", "error-desc": "x"});
        assert_eq!(
            Migration::from_query(&failed).and_then(|m| m.error),
            Some("x".into())
        );
    }
}
