// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `pasidctl`: the operator's view of a running `vhost-user-pasid`.
//!
//! Talks to the daemon's control socket. Prints tables for people and, with
//! `--json`, the daemon's JSON for machines. Any error is one line on stderr
//! and a non-zero exit. The command line itself is
//! `vhost_user_pasid::ctl_cli`, where the man page generator reads it too.

// It parses what the daemon sends: no unchecked indexing outside tests.
#![deny(clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vhost_user_pasid::control_protocol::{
    ControlReply, ControlRequest, GetResult, PutResult, ReleaseResult,
};
use vhost_user_pasid::ctl_cli::{Cli, Command};

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

/// ANSI escape codes: cursor to the top left, then clear the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Longest sleep between checks for Ctrl-C while `watch` waits.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// Sum of the numbers in a JSON object, e.g. requests by opcode.
fn object_sum(v: &Value, skip: &str) -> u64 {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != skip)
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Wall-clock time of day in UTC, HH:MM:SS.
fn utc_time_of_day() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Percentage `part / whole`, or 0 for an empty whole.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    // Display only: precision loss above 2^52 does not matter.
    #[allow(clippy::cast_precision_loss)]
    let p = part as f64 * 100.0 / whole as f64;
    p
}

/// Request totals per VM at one refresh, for the REQ/S column.
struct Sample {
    at: Instant,
    requests: std::collections::BTreeMap<String, u64>,
}

/// One screen of `pasidctl watch`.
fn watch_frame(
    stats: &Value,
    vms: &Value,
    refresh: u64,
    count: Option<u64>,
    interval: Duration,
    previous: Option<&Sample>,
    now: Instant,
) -> String {
    let space = field(stats, "space");
    let allocated = field(space, "allocated").as_u64().unwrap_or(0);
    let capacity = field(space, "capacity").as_u64().unwrap_or(0);
    let of = count.map_or(String::new(), |c| format!(" of {c}"));
    let mut out = format!(
        "pasidctl watch: every {}s, refresh {refresh}{of}, {} UTC (Ctrl-C to quit)\n",
        interval.as_secs_f64(),
        utc_time_of_day()
    );
    out += &format!(
        "space {:#x}: {} bits, {allocated} of {capacity} PASIDs allocated ({:.1}%), {} reserved\n",
        field(stats, "space_id").as_u64().unwrap_or(0),
        text(field(space, "pasid_bits")),
        percent(allocated, capacity),
        text(field(space, "reserved")),
    );
    out += &format!(
        "VMs: {} configured, {} connected; {} requests, {} malformed, {} references reclaimed\n\n",
        text(field(stats, "vms")),
        text(field(stats, "connected_vms")),
        text(field(stats, "requests")),
        text(field(stats, "malformed")),
        text(field(stats, "reclaimed")),
    );
    out += &format!(
        "{:<16} {:<9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>9} {:>9}\n",
        "VM", "STATE", "HELD", "QUOTA", "USE%", "REQ/S", "FAILED", "MALFORMED", "RECLAIMED"
    );
    for vm in rows(vms) {
        let name = text(field(vm, "name"));
        let counters = field(vm, "counters");
        let requests = object_sum(field(counters, "requests"), "");
        let rate = previous
            .and_then(|p| {
                let before = p.requests.get(&name)?;
                let secs = now.duration_since(p.at).as_secs_f64();
                // Display only: precision loss above 2^52 does not matter.
                #[allow(clippy::cast_precision_loss)]
                let r = requests.saturating_sub(*before) as f64 / secs;
                (secs > 0.0).then(|| format!("{r:.1}"))
            })
            .unwrap_or_else(|| "-".into());
        let held = field(vm, "held").as_u64().unwrap_or(0);
        let quota = field(vm, "quota").as_u64().unwrap_or(0);
        let state = if field(vm, "connected").as_bool() == Some(true) {
            "connected"
        } else {
            "idle"
        };
        out += &format!(
            "{:<16} {:<9} {:>7} {:>7} {:>5.1}% {:>8} {:>7} {:>9} {:>9}\n",
            name,
            state,
            held,
            quota,
            percent(held, quota),
            rate,
            object_sum(field(counters, "statuses"), "OK"),
            text(field(counters, "malformed")),
            text(field(counters, "reclaimed")),
        );
    }
    out
}

/// `pasidctl watch`: redraws the VM table every `interval` until Ctrl-C,
/// SIGTERM or `count` refreshes.
fn watch(
    socket: &PathBuf,
    json: bool,
    interval: Duration,
    count: Option<u64>,
) -> Result<(), CtlError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mut previous: Option<Sample> = None;
    let mut refresh = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let stats = call(socket, &ControlRequest::Stats {})?;
        let vms = call(socket, &ControlRequest::Vms {})?;
        let now = Instant::now();
        refresh += 1;
        if json {
            let line = serde_json::json!({ "refresh": refresh, "stats": stats, "vms": vms });
            writeln!(stdout, "{line}")?;
        } else {
            let frame = watch_frame(
                &stats,
                &vms,
                refresh,
                count,
                interval,
                previous.as_ref(),
                now,
            );
            write!(stdout, "{CLEAR_SCREEN}{frame}")?;
        }
        stdout.flush()?;
        previous = Some(Sample {
            at: now,
            requests: rows(&vms)
                .iter()
                .map(|vm| {
                    (
                        text(field(vm, "name")),
                        object_sum(field(field(vm, "counters"), "requests"), ""),
                    )
                })
                .collect(),
        });
        if count.is_some_and(|c| refresh >= c) {
            return Ok(());
        }
        // Sleep in short steps so that Ctrl-C ends the wait at once.
        let deadline = now + interval;
        loop {
            if stop.load(Ordering::Relaxed) {
                // Leave the prompt on a line of its own after "^C".
                writeln!(stdout)?;
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(WATCH_TICK));
        }
    }
}

fn run(cli: Cli) -> Result<(), CtlError> {
    let request = match &cli.command {
        Command::Pasids => ControlRequest::Pasids {},
        Command::Vms => ControlRequest::Vms {},
        Command::Stats => ControlRequest::Stats {},
        Command::Metrics => ControlRequest::Metrics {},
        Command::Watch { interval, count } => {
            return watch(&cli.socket, cli.json, *interval, *count);
        }
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
        Command::Metrics => print!("{}", text(&result)),
        Command::Watch { .. } => {}
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
