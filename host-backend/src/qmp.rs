// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A small client of QEMU's machine protocol (QMP), for `pasidctl reattach`.
//!
//! QMP is line-delimited JSON over a Unix socket: the server greets, the
//! client enters command mode with `qmp_capabilities`, and each command gets
//! one `return` or `error` answer. Asynchronous events may arrive between a
//! command and its answer; they are queued, so a later [`Qmp::wait_event`]
//! still sees them. Every read is bounded by a deadline: a QEMU that stops
//! answering is an error, never a hang.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached.
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP socket: {0}")]
    Io(#[from] io::Error),
    /// QEMU closed the connection.
    #[error("QEMU closed the QMP connection")]
    Closed,
    /// No answer, or not the awaited event, within the time allowed.
    #[error("no {what} from QEMU within {} s", .after.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
    },
    /// QEMU sent something that is not a QMP message.
    #[error("QEMU sent a malformed QMP message: {0}")]
    Malformed(String),
    /// QEMU refused a command.
    #[error("QEMU refused {command}: {class}: {desc}")]
    Refused {
        /// The command.
        command: String,
        /// QMP error class (`GenericError`, `DeviceNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// A QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Bytes of a line not yet complete when a read timed out.
    partial: Vec<u8>,
    /// Events that arrived while a command's answer was awaited.
    events: VecDeque<Value>,
    /// Bound on each command's answer.
    timeout: Duration,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode, waiting at most
    /// `timeout` for each step.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            events: VecDeque::new(),
            timeout,
        };
        let greeting = qmp.read_message(timeout, "QMP greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Malformed(format!("greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut message = Map::new();
        message.insert("execute".into(), Value::from(command));
        if let Some(arguments) = arguments {
            message.insert("arguments".into(), arguments);
        }
        let mut line = Value::Object(message).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let started = Instant::now();
        loop {
            let left = self.timeout.saturating_sub(started.elapsed());
            let message = self.read_message(left, &format!("answer to {command}"))?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| {
                    error
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
                continue;
            }
            return Err(QmpError::Malformed(message.to_string()));
        }
    }

    /// Waits up to `timeout` for an event named `name` whose `data` passes
    /// `wanted`, consuming it (and any other event read before it stays
    /// queued).
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        let matches = |m: &Value| {
            m.get("event").and_then(Value::as_str) == Some(name)
                && wanted(m.get("data").unwrap_or(&Value::Null))
        };
        if let Some(pos) = self.events.iter().position(matches) {
            return self
                .events
                .remove(pos)
                .ok_or_else(|| QmpError::Malformed("event queue".into()));
        }
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let message =
                self.read_message(left, &format!("{name} event"))
                    .map_err(|e| match e {
                        QmpError::Timeout { what, .. } => QmpError::Timeout {
                            what,
                            after: timeout,
                        },
                        other => other,
                    })?;
            if matches(&message) {
                return Ok(message);
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// Reads one JSON message, waiting at most `within`.
    fn read_message(&mut self, within: Duration, what: &str) -> Result<Value, QmpError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::Timeout {
                    what: what.to_string(),
                    after: within,
                });
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return serde_json::from_str(text.trim())
                        .map_err(|e| QmpError::Malformed(format!("{e}: {}", text.trim())));
                }
                // A final line without a newline: the connection ended.
                Ok(_) => return Err(QmpError::Closed),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `chardev-add` arguments for a Unix socket client chardev named `id`.
pub fn unix_socket_chardev(id: &str, path: &Path) -> Value {
    json!({
        "id": id,
        "backend": {
            "type": "socket",
            "data": {
                "addr": {"type": "unix", "data": {"path": path.to_string_lossy()}},
                "server": false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chardev_is_a_unix_socket_client() {
        let v = unix_socket_chardev("vu1", Path::new("/run/v/a.sock"));
        assert_eq!(v["id"], "vu1");
        assert_eq!(v["backend"]["type"], "socket");
        assert_eq!(v["backend"]["data"]["server"], false);
        assert_eq!(
            v["backend"]["data"]["addr"]["data"]["path"],
            "/run/v/a.sock"
        );
    }
}
