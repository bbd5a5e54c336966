// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The control socket: `pasidctl`'s window onto the registry.
//!
//! The socket is created with mode 0600. Each connection is served on its own
//! short-lived thread with a read timeout, so a stuck client holds up no one.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use log::{debug, warn};
use serde::Serialize;

use crate::control_protocol::{
    ControlReply, ControlRequest, GetResult, PutResult, ReleaseResult, MAX_REQUEST_LINE,
};
use crate::registry::Registry;

/// How long a client may take to send a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn to_value<T: Serialize>(v: T) -> ControlReply {
    match serde_json::to_value(v) {
        Ok(v) => ControlReply::success(v),
        Err(e) => ControlReply::failure(format!("internal error: {e}")),
    }
}

/// Carries out one control command.
pub fn execute(registry: &Mutex<Registry>, request: ControlRequest) -> ControlReply {
    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    match request {
        ControlRequest::Pasids {} => to_value(reg.pasids()),
        ControlRequest::Vms {} => to_value(reg.vms()),
        ControlRequest::Stats {} => to_value(reg.stats()),
        ControlRequest::Get { holder, pasid } => match reg.host_get(&holder, pasid) {
            Ok(refs) => to_value(GetResult { pasid, refs }),
            Err(e) => ControlReply::failure(e),
        },
        ControlRequest::Put { holder, pasid } => match reg.host_put(&holder, pasid) {
            Ok(freed) => to_value(PutResult { pasid, freed }),
            Err(e) => ControlReply::failure(e),
        },
        ControlRequest::Release { vm } => match reg.release_vm(&vm) {
            Ok(released) => to_value(ReleaseResult { vm, released }),
            Err(e) => ControlReply::failure(e),
        },
        ControlRequest::Quota { vm, quota } => match reg.set_quota(&vm, quota) {
            Ok(()) => to_value(serde_json::json!({ "vm": vm, "quota": quota })),
            Err(e) => ControlReply::failure(e),
        },
    }
}

/// Parses one request line and answers it.
pub fn answer_line(registry: &Mutex<Registry>, line: &str) -> ControlReply {
    match serde_json::from_str::<ControlRequest>(line) {
        Ok(request) => {
            debug!("control request {request:?}");
            execute(registry, request)
        }
        Err(e) => ControlReply::failure(format!("bad request: {e}")),
    }
}

fn serve_client(stream: UnixStream, registry: &Mutex<Registry>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    // The limit keeps a client from growing a line without end.
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_LINE as u64 * 64));
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_REQUEST_LINE {
            ControlReply::failure(format!("request longer than {MAX_REQUEST_LINE} bytes"))
        } else {
            answer_line(registry, line.trim())
        };
        let mut text = serde_json::to_string(&reply)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error"}"#.to_string());
        text.push('\n');
        writer.write_all(text.as_bytes())?;
    }
}

/// Accepts control clients forever.
pub fn serve_control(listener: UnixListener, registry: Arc<Mutex<Registry>>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                continue;
            }
        };
        let registry = registry.clone();
        let spawned = thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &registry) {
                    debug!("control client ended: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start control client thread: {e}");
        }
    }
}
