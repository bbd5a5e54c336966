// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `pasidctl`: the operator's view of a running `vhost-user-pasid`.
//!
//! Talks to the daemon's control socket. Prints tables for people and, with
//! `--json`, the daemon's JSON for machines. Any error is one line on stderr
//! and a non-zero exit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vhost_user_pasid::config::DEFAULT_CONTROL_SOCKET;
use vhost_user_pasid::control_protocol::{
    ControlReply, ControlRequest, GetResult, PutResult, ReleaseResult,
};

/// Default name of the host holder for get/put.
const DEFAULT_HOLDER: &str = "operator";

/// Inspect and manage the PASIDs of a running vhost-user-pasid.
#[derive(Parser, Debug)]
#[command(name = "pasidctl", version, about)]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, env = "PASIDCTL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET, global = true)]
    socket: PathBuf,

    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List allocated PASIDs with their holders and reference counts.
    Pasids,
    /// List VM slots with usage, quota and connection state.
    Vms,
    /// Whole-host figures.
    Stats,
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
    Release {
        /// VM name.
        #[arg(long)]
        vm: String,
    },
    /// Set a VM's quota.
    Quota {
        /// VM name.
        #[arg(long)]
        vm: String,
        /// New quota.
        quota: u32,
    },
}

fn parse_pasid(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a PASID: {e}"))
}

/// Errors of pasidctl.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("cannot connect to {path:?}: {source} (is vhost-user-pasid running? try --socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon sent an unreadable reply: {0}")]
    Reply(#[from] serde_json::Error),
    #[error("{0}")]
    Daemon(String),
}

fn call(socket: &PathBuf, request: &ControlRequest) -> Result<Value, CtlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    let reply: ControlReply = serde_json::from_str(&reply)?;
    if reply.ok {
        Ok(reply.result.unwrap_or(Value::Null))
    } else {
        Err(CtlError::Daemon(
            reply.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, CtlError> {
    Ok(serde_json::from_value(v)?)
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// A JSON value as table text: strings without quotes.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn print_pasids(v: &Value) {
    println!("{:>8}  {:>5}  HOLDERS", "PASID", "REFS");
    for p in rows(v) {
        let holders: Vec<String> = rows(field(p, "holders"))
            .iter()
            .map(|h| {
                format!(
                    "{} ({}) x{}",
                    text(field(h, "owner")),
                    text(field(h, "kind")),
                    text(field(h, "refs"))
                )
            })
            .collect();
        println!(
            "{:>8}  {:>5}  {}",
            text(field(p, "pasid")),
            text(field(p, "total_refs")),
            holders.join(", ")
        );
    }
    println!("{} PASIDs allocated", rows(v).len());
}

fn print_vms(v: &Value) {
    println!(
        "{:<16} {:<9} {:>6} {:>7} {:>15} {:>9} {:>9}  SOCKET",
        "VM", "STATE", "HELD", "QUOTA", "RANGE", "REQUESTS", "MALFORMED"
    );
    for vm in rows(v) {
        let counters = field(vm, "counters");
        let requests: u64 = field(counters, "requests")
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let state = if field(vm, "connected").as_bool() == Some(true) {
            "connected"
        } else {
            "idle"
        };
        println!(
            "{:<16} {:<9} {:>6} {:>7} {:>15} {:>9} {:>9}  {}",
            text(field(vm, "name")),
            state,
            text(field(vm, "held")),
            text(field(vm, "quota")),
            format!(
                "{}-{}",
                text(field(vm, "range_start")),
                text(field(vm, "range_end"))
            ),
            requests,
            text(field(counters, "malformed")),
            text(field(vm, "socket"))
        );
    }
}

fn print_stats(v: Value) {
    let flat = |prefix: &str, v: &Value| -> Vec<(String, String)> {
        match v.as_object() {
            Some(map) => map
                .iter()
                .filter(|(_, v)| !v.is_object())
                .map(|(k, v)| (format!("{prefix}{k}"), v.to_string()))
                .collect(),
            None => Vec::new(),
        }
    };
    let mut rows = flat("", &v);
    if let Some(space) = v.get("space") {
        rows.extend(flat("space.", space));
    }
    for (k, val) in rows {
        println!("{k:<22} {val}");
    }
}

fn run(cli: Cli) -> Result<(), CtlError> {
    let request = match &cli.command {
        Command::Pasids => ControlRequest::Pasids {},
        Command::Vms => ControlRequest::Vms {},
        Command::Stats => ControlRequest::Stats {},
        Command::Get { pasid, holder } => ControlRequest::Get {
            holder: holder.clone(),
            pasid: *pasid,
        },
        Command::Put { pasid, holder } => ControlRequest::Put {
            holder: holder.clone(),
            pasid: *pasid,
        },
        Command::Release { vm } => ControlRequest::Release { vm: vm.clone() },
        Command::Quota { vm, quota } => ControlRequest::Quota {
            vm: vm.clone(),
            quota: *quota,
        },
    };
    let result = call(&cli.socket, &request)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    match cli.command {
        Command::Pasids => print_pasids(&result),
        Command::Vms => print_vms(&result),
        Command::Stats => print_stats(result),
        Command::Get { .. } => {
            let r: GetResult = decode(result)?;
            println!("PASID {} pinned ({} references)", r.pasid, r.refs);
        }
        Command::Put { .. } => {
            let r: PutResult = decode(result)?;
            let what = if r.freed { "freed" } else { "still referenced" };
            println!("PASID {} {what}", r.pasid);
        }
        Command::Release { .. } => {
            let r: ReleaseResult = decode(result)?;
            println!("VM {}: released {} references", r.vm, r.released);
        }
        Command::Quota { vm, quota } => println!("VM {vm}: quota {quota}"),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pasidctl: {e}");
            ExitCode::FAILURE
        }
    }
}
