// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Observability of the real daemon: OpenMetrics text after known traffic,
//! scraped through `pasidctl metrics` and through `--metrics-listen` (served
//! concurrently, with bounded threads and per-client timeouts), the
//! `process_*` metrics, and a real Prometheus server scraping the daemon
//! and answering queries about what it stored (`pasidctl watch` is tested
//! in tests/pasidctl.rs).
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use frontend::{Daemon, TestVm};
use pasid_protocol::{Request, Status};

const LONG: Duration = Duration::from_secs(10);

/// One sample: metric name and its labels, sorted.
type Key = (String, Vec<(String, String)>);

/// A parsed exposition: samples, and each family's TYPE (keyed by the
/// family's name, which for a counter lacks the samples' `_total`).
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<Key, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        *self
            .samples
            .get(&(name.to_string(), l))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }
}

/// Parses `name{a="x",b="y"}` label sets (values may hold escaped quotes).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label without =\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '\\' => match chars.next().expect("dangling escape").1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    out.sort();
    out
}

/// The sample suffixes each OpenMetrics type allows.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total"],
        "histogram" => &["_bucket", "_sum", "_count"],
        "info" => &["_info"],
        _ => &[""],
    }
}

/// Parses the OpenMetrics text strictly: it ends with `# EOF`, every
/// sample's family must have been announced by HELP and TYPE (and a UNIT
/// its name ends with) before it, with the suffix its type asks for (a
/// counter's samples end in `_total`), names must carry the `vpasid_`
/// prefix (or be a standard `process_` metric), and histograms must be
/// cumulative with `+Inf` equal to `_count`.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut helped = BTreeMap::new();
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("exposition must end with # EOF:\n{text}"));
    assert!(!body.contains("# EOF"), "{text}");
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string(), ()).is_none(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains_key(name), "TYPE before HELP: {line}");
            assert!(
                ["counter", "gauge", "histogram", "info"].contains(&kind),
                "{line}"
            );
            scrape.types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap();
            assert!(scrape.types.contains_key(name), "UNIT before TYPE: {line}");
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap())),
            None => (series, Vec::new()),
        };
        assert!(
            name.starts_with("vpasid_") || name.starts_with("process_"),
            "{name}"
        );
        let family = scrape.types.iter().find(|(family, kind)| {
            suffixes(kind)
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family.as_str()))
        });
        assert!(family.is_some(), "no TYPE for {line}");
        let key = (name.to_string(), labels);
        assert!(
            scrape.samples.insert(key, value).is_none(),
            "duplicate {line}"
        );
    }
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<(f64, f64)> = scrape
            .samples
            .iter()
            .filter(|((n, _), _)| *n == format!("{family}_bucket"))
            .map(|((_, l), v)| {
                let le = &l.iter().find(|(k, _)| k == "le").unwrap().1;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, *v)
            })
            .collect();
        let mut sorted = buckets.clone();
        sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].1), "{sorted:?}");
        let inf = sorted.last().unwrap();
        assert_eq!(inf.0, f64::INFINITY);
        assert_eq!(inf.1, scrape.get(&format!("{family}_count"), &[]));
    }
    scrape
}

/// GET `path` over HTTP/1.1; returns (status line, headers, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_string(), headers.to_string(), body.to_string())
}

/// The lines of an exposition that are about the daemon's own figures,
/// sorted (a family lists its series in no set order).
fn vpasid_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().filter(|l| l.contains("vpasid_")).collect();
    lines.sort_unstable();
    lines
}

/// The address the daemon logged for `--metrics-listen ...:0`.
fn metrics_addr(d: &Daemon) -> SocketAddr {
    let log = d.wait_log("event=metrics-listen addr=");
    let at = log.find("event=metrics-listen addr=").unwrap();
    let addr = log[at..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches("addr=");
    addr.parse().unwrap()
}

/// A chain of the right shape whose opcode does not exist: INVALID.
fn unknown_opcode(vm: &mut TestVm) {
    let mut bytes = [0u8; 24];
    bytes[0] = 9;
    assert_eq!(
        Status::from_wire(vm.raw_request(&bytes, LONG).status),
        Some(Status::Invalid)
    );
}

/// Known traffic from two VMs, an operator release and a disconnect, then
/// every metric checked by exact value, through pasidctl and over HTTP.
#[test]
fn metrics_count_known_traffic_exactly() {
    let d = Daemon::start(&[
        "--vm",
        "web={dir}/web.sock,quota=3",
        "--vm",
        "db={dir}/db.sock",
        "--pasid-bits",
        "8",
        "--reserve",
        "1-15",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&d);

    let mut web = TestVm::connect(&d.path("web.sock"));
    let held: Vec<u32> = (0..3).map(|_| web.alloc_ok(1, 255)).collect();
    assert_eq!(held, [16, 17, 18]);
    assert_eq!(
        Status::from_wire(web.alloc(1, 255).status),
        Some(Status::QuotaExceeded)
    );
    assert_eq!(web.free(17), Status::Ok);
    assert_eq!(web.free(200), Status::NotFound);
    assert_eq!(web.free(0), Status::Invalid);
    unknown_opcode(&mut web);

    let mut db = TestVm::connect(&d.path("db.sock"));
    db.alloc_ok(1, 255);
    db.alloc_ok(1, 255);
    assert_eq!(db.reset().pasid, 2);
    drop(db);
    d.wait_log(r#"vm=db event=reclaim reason="disconnect""#);

    let (ok, out, err) = d.ctl(&["release", "--vm", "web", "--force"]);
    assert!(ok, "{err}");
    assert!(out.contains("released 2 references"), "{out}");

    let (ok, text, err) = d.ctl(&["metrics"]);
    assert!(ok, "{err}");
    let m = parse(&text);
    fn web_l(status: &str) -> [(&str, &str); 2] {
        [("vm", "web"), ("status", status)]
    }
    assert_eq!(m.get("vpasid_space_pasid_width", &[]), 8.0);
    assert_eq!(m.get("vpasid_space_capacity", &[]), 240.0);
    assert_eq!(m.get("vpasid_space_reserved", &[]), 16.0);
    assert_eq!(m.get("vpasid_vms", &[]), 2.0);
    assert_eq!(m.get("vpasid_connected_vms", &[]), 1.0);
    assert_eq!(m.get("vpasid_vm_connected", &[("vm", "web")]), 1.0);
    assert_eq!(m.get("vpasid_vm_connected", &[("vm", "db")]), 0.0);
    assert_eq!(m.get("vpasid_outstanding_pasids", &[]), 0.0);
    assert_eq!(m.get("vpasid_vm_outstanding_pasids", &[("vm", "web")]), 0.0);
    assert_eq!(m.get("vpasid_vm_quota", &[("vm", "web")]), 3.0);
    assert_eq!(m.get("vpasid_vm_quota", &[("vm", "db")]), 4096.0);
    assert_eq!(m.get("vpasid_vm_connects_total", &[("vm", "db")]), 1.0);
    assert_eq!(m.get("vpasid_allocations_total", &web_l("ok")), 3.0);
    assert_eq!(
        m.get("vpasid_allocations_total", &web_l("quota_exceeded")),
        1.0
    );
    assert_eq!(m.get("vpasid_allocations_total", &web_l("no_space")), 0.0);
    assert_eq!(m.get("vpasid_frees_total", &web_l("ok")), 1.0);
    assert_eq!(m.get("vpasid_frees_total", &web_l("not_found")), 1.0);
    assert_eq!(m.get("vpasid_frees_total", &web_l("invalid")), 1.0);
    assert_eq!(m.get("vpasid_frees_total", &web_l("not_owner")), 0.0);
    assert_eq!(
        m.get(
            "vpasid_allocations_total",
            &[("vm", "db"), ("status", "ok")]
        ),
        2.0
    );
    assert_eq!(
        m.get("vpasid_resets_total", &[("vm", "db"), ("status", "ok")]),
        1.0
    );
    assert_eq!(
        m.get("vpasid_resets_total", &[("vm", "web"), ("status", "ok")]),
        0.0
    );
    assert_eq!(
        m.get("vpasid_quota_rejections_total", &[("vm", "web")]),
        1.0
    );
    assert_eq!(m.get("vpasid_quota_rejections_total", &[("vm", "db")]), 0.0);
    assert_eq!(
        m.get("vpasid_malformed_chains_total", &[("vm", "web")]),
        1.0
    );
    let reclaim = |vm: &str, reason: &str| {
        (
            m.get("vpasid_reclaims_total", &[("vm", vm), ("reason", reason)]),
            m.get(
                "vpasid_reclaimed_references_total",
                &[("vm", vm), ("reason", reason)],
            ),
        )
    };
    assert_eq!(reclaim("db", "driver_reset"), (1.0, 2.0));
    assert_eq!(reclaim("db", "disconnect"), (1.0, 0.0));
    assert_eq!(reclaim("web", "operator"), (1.0, 2.0));
    assert_eq!(reclaim("web", "disconnect"), (0.0, 0.0));
    // Every chain the daemon handled: web 4 ALLOC + 3 FREE + 1 malformed,
    // db 2 ALLOC + 1 RESET.
    assert_eq!(m.get("vpasid_request_duration_seconds_count", &[]), 11.0);
    assert_eq!(
        m.get("vpasid_request_duration_seconds_bucket", &[("le", "+Inf")]),
        11.0
    );
    let sum = m.get("vpasid_request_duration_seconds_sum", &[]);
    assert!(sum > 0.0 && sum < 11.0, "{sum}");
    assert_eq!(m.types["vpasid_request_duration_seconds"], "histogram");
    assert_eq!(m.types["vpasid_allocations"], "counter");
    assert_eq!(m.types["vpasid_outstanding_pasids"], "gauge");
    assert_eq!(m.types["vpasid_build"], "info");
    assert_eq!(
        m.get(
            "vpasid_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // The same figures over HTTP (nothing happened in between; the
    // process's own figures move by themselves).
    let (status, headers, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ),
        "{headers}"
    );
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert_eq!(vpasid_lines(&body), vpasid_lines(&text));
    assert!(body.contains("\nprocess_open_fds "), "{body}");
    let (status, _, _) = http_get(addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The JSON form is the same text (the process's own figures aside:
    // its resident memory moves between two calls).
    let json = d.ctl_json(&["metrics"]);
    assert_eq!(json.as_str().map(vpasid_lines), Some(vpasid_lines(&text)));

    // Rejected requests were logged, one line each, within the budget.
    let log = d.log();
    assert!(
        log.contains("vm=web event=rejected op=alloc status=quota_exceeded"),
        "{log}"
    );
    assert!(
        log.contains("vm=web event=rejected op=free status=not_found"),
        "{log}"
    );
    assert!(log.contains("held=3 quota=3"), "{log}");
    // And the VM life-cycle events docs/operations.md lists, one line each.
    for line in [
        "vm=web event=connect socket=",
        "vm=db event=connect socket=",
        "vm=db event=disconnect",
        r#"vm=db event=reclaim reason="driver reset" references=2 pasids_freed=2"#,
        r#"vm=db event=reclaim reason="disconnect" references=0 pasids_freed=0"#,
        r#"vm=web event=reclaim reason="operator release" references=2 pasids_freed=2"#,
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} in\n{log}");
    }
}

/// A metrics address other hosts could reach is refused at start-up with
/// one line naming it.
#[test]
fn metrics_listen_must_be_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for (addr, says) in [
        ("0.0.0.0:9860", "not a loopback address"),
        ("[::]:9860", "not a loopback address"),
        ("localhost:9860", "expected IP:PORT"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
            .arg("--vm")
            .arg(format!("a={}", dir.path().join("a.sock").display()))
            .arg("--control-socket")
            .arg(dir.path().join("c.sock"))
            .args(["--metrics-listen", addr])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{addr}: {err}");
        assert!(err.contains(says) && err.contains(addr), "{addr}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Requests a VM makes with its quota at zero are counted and logged, and
/// the log stays within its rate limit however many there are.
#[test]
fn rejected_requests_are_logged_within_a_budget() {
    let d = Daemon::start(&["--vm", "web={dir}/web.sock,quota=0"]);
    let mut vm = TestVm::connect(&d.path("web.sock"));
    let reqs: Vec<Request> = (0..50)
        .map(|tag| Request::Alloc {
            tag,
            min: 1,
            max: 100,
        })
        .collect();
    for r in vm.batch(&reqs) {
        assert_eq!(Status::from_wire(r.status), Some(Status::QuotaExceeded));
    }
    let (ok, text, err) = d.ctl(&["metrics"]);
    assert!(ok, "{err}");
    let m = parse(&text);
    assert_eq!(
        m.get("vpasid_quota_rejections_total", &[("vm", "web")]),
        50.0
    );
    let log = d.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("vm=web event=rejected op=alloc"))
        .count();
    assert_eq!(lines, 10, "{log}");
}

/// A daemon serving metrics on an ephemeral loopback port, and that port.
fn metrics_daemon() -> (Daemon, SocketAddr) {
    let d = Daemon::start(&[
        "--vm",
        "web={dir}/web.sock",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&d);
    (d, addr)
}

/// `n` connections that send nothing; each is being served (or turned
/// away) once its `connect` returned, as the daemon accepts in order.
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

/// With 10 idle connections open (each holds a client thread until it
/// times out), a scrape is still answered in under 100 ms: clients are
/// served concurrently. (Before, one idle connection delayed every scrape
/// by 2 s.)
#[test]
fn scrape_is_answered_while_idle_connections_are_open() {
    let (d, addr) = metrics_daemon();
    let idle = idle_connections(addr, 10);
    // Accepted in order: a scrape on an 11th connection proves the ten
    // before it were accepted; this one is not timed.
    let (status, _, _) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (status, _, body) = http_get(addr, "/metrics");
        let took = started.elapsed();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("vpasid_vms 1\n"), "{body}");
        assert!(took < Duration::from_millis(100), "scrape took {took:?}");
    }
    drop(idle);
    drop(d);
}

/// Beyond MAX_HTTP_CLIENTS connections, the next one is answered 503 at
/// once rather than queued; once the idle clients go, scrapes are served
/// again.
#[test]
fn connections_beyond_the_bound_get_503_at_once() {
    let (_d, addr) = metrics_daemon();
    let max = vhost_user_pasid::metrics::MAX_HTTP_CLIENTS;
    let idle = idle_connections(addr, max);
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(LONG)).unwrap();
    let started = std::time::Instant::now();
    let mut reply = String::new();
    extra.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{reply:?}"
    );
    assert!(reply.contains("Retry-After: 1\r\n"), "{reply:?}");
    assert!(
        started.elapsed() < vhost_user_pasid::metrics::HTTP_TIMEOUT,
        "turned away only after {:?}",
        started.elapsed()
    );
    // The idle clients hang up: their threads end and a scrape is served
    // (the daemon notices the hang-ups asynchronously, hence the retries).
    drop(idle);
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (status, _, _) = http_get(addr, "/metrics");
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client that never finishes its request is dropped after
/// HTTP_TIMEOUT, not kept forever; one dripping a byte at a time gets no
/// longer.
#[test]
fn slow_clients_are_dropped_after_the_timeout() {
    let (_d, addr) = metrics_daemon();
    let timeout = vhost_user_pasid::metrics::HTTP_TIMEOUT;
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut drip = TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    let dripper = std::thread::spawn(move || {
        // Never reaches the blank line; stops when the daemon hangs up.
        while drip.write_all(b"X").is_ok() && started.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    });
    idle.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = Vec::new();
    // EOF (or a reset) when the daemon gives up on the client.
    let _ = idle.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(buf.is_empty(), "{buf:?}");
    assert!(
        took >= timeout && took < LONG,
        "idle client dropped after {took:?}"
    );
    let dripped = dripper.join().unwrap();
    assert!(
        dripped >= timeout && dripped < LONG,
        "dripping client dropped after {dripped:?}"
    );
}

/// Checks the `process_*` figures of a scrape for sanity.
fn assert_process_metrics_sane(m: &Scrape, body: &str) {
    assert_eq!(m.types["process_cpu_seconds"], "counter");
    let fds = m.get("process_open_fds", &[]);
    // stdin/out/err, the VM socket, control socket, metrics listener, ...
    assert!(fds >= 6.0, "process_open_fds {fds}");
    assert!(m.get("process_max_fds", &[]) >= fds);
    let rss = m.get("process_resident_memory_bytes", &[]);
    assert!(rss > 0.0, "{rss}");
    assert!(m.get("process_virtual_memory_bytes", &[]) >= rss);
    assert!(m.get("process_threads", &[]) >= 4.0, "{body}");
    assert!(m.get("process_cpu_seconds_total", &[]) >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = m.get("process_start_time_seconds", &[]);
    assert!(start <= now + 1.0 && start > now - 60.0, "{start} vs {now}");
}

/// The standard process metrics are there, read from /proc/self inside
/// the daemon's sandbox (seccomp `kill`, the default), and sane, over HTTP
/// and through the control socket.
#[test]
fn process_metrics_are_sane() {
    let (d, addr) = metrics_daemon();
    let (_, _, body) = http_get(addr, "/metrics");
    let m = parse(&body);
    assert_process_metrics_sane(&m, &body);
    let (ok, text, err) = d.ctl(&["metrics"]);
    assert!(ok, "{err}");
    assert_process_metrics_sane(&parse(&text), &text);
}

/// After `--user nobody` the process is no longer dumpable and its
/// /proc/self/fd belongs to root; the figures are still all there.
#[test]
fn process_metrics_survive_the_privilege_drop() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let d = Daemon::start(&[
        "--vm",
        "web={dir}/web.sock",
        "--metrics-listen",
        "127.0.0.1:0",
        "--user",
        "nobody",
    ]);
    let addr = metrics_addr(&d);
    d.wait_log("event=sandbox user=nobody");
    let (_, _, body) = http_get(addr, "/metrics");
    assert_process_metrics_sane(&parse(&body), &body);
}

/// The address of a loopback TCP port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The Prometheus server of Debian's `prometheus` package, scraping one
/// target every second with its database in a temporary directory;
/// killed on drop.
struct PrometheusServer {
    child: Child,
    web: SocketAddr,
    dir: tempfile::TempDir,
}

/// Where Debian installs the server.
const PROMETHEUS: &str = "/usr/bin/prometheus";

impl PrometheusServer {
    fn start(target: SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: vpasid\n    static_configs:\n\
                 \x20     - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let web = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        PrometheusServer { child, web, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API; `None` until the server listens and is
    /// ready (503 before). HTTP/1.0, so that the reply is neither chunked
    /// nor kept alive.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let mut s = TcpStream::connect(self.web).ok()?;
        s.set_read_timeout(Some(LONG)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).ok()?;
        let (head, body) = reply.split_once("\r\n\r\n")?;
        if head.starts_with("HTTP/1.0 503 ") {
            return None;
        }
        assert!(head.starts_with("HTTP/1.0 200 "), "{path}: {reply}");
        Some(serde_json::from_str(body).unwrap())
    }

    /// The value of the one series an instant query returns, if it returns
    /// one.
    fn query(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        let answer = self.api(&format!("/api/v1/query?query={encoded}"))?;
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        let result = answer["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "{query}: {answer}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until the server has scraped `job`'s target, and returns the
    /// health the server gives it then, with its last error.
    fn first_scrape(&self, deadline: Instant) -> (String, String) {
        loop {
            let scraped = self.api("/api/v1/targets").and_then(|t| {
                let target = t["data"]["activeTargets"].get(0)?.clone();
                (target["health"] != "unknown").then_some(target)
            });
            if let Some(t) = scraped {
                let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                return (text("health"), text("lastError"));
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus scraped nothing in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus server (Debian package `prometheus`) scrapes the
/// daemon, with traffic and durable state, over `--metrics-listen`: it
/// negotiates OpenMetrics (the text declares an `info` family, which only
/// its OpenMetrics parser accepts), finds nothing to reject, and its
/// queries return the daemon's figures. (`promtool check metrics` lints
/// the older Prometheus text format only.) Skipped, saying so, only
/// where the server is not installed.
#[test]
fn prometheus_scrapes_and_stores_the_metrics() {
    if !Path::new(PROMETHEUS).exists() {
        eprintln!(
            "skipped: {PROMETHEUS} is not installed (apt-get install prometheus; \
             bash qemu-tests/run test installs it)"
        );
        return;
    }
    let d = Daemon::start(&[
        "--holdover",
        "0",
        "--vm",
        "web={dir}/web.sock,quota=1",
        "--state-dir",
        "{dir}/state",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&d);
    let mut vm = TestVm::connect(&d.path("web.sock"));
    vm.alloc_ok(1, 100);
    assert_eq!(
        Status::from_wire(vm.alloc(1, 100).status),
        Some(Status::QuotaExceeded)
    );

    let server = PrometheusServer::start(addr);
    // Its scrape manager starts the first scrape about 5 s after start-up.
    let (health, error) = server.first_scrape(Instant::now() + Duration::from_secs(30));
    assert_eq!(
        (health.as_str(), error.as_str()),
        ("up", ""),
        "{}",
        server.log()
    );
    assert_eq!(server.query("up"), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    for (query, value) in [
        (format!("vpasid_build_info{{version=\"{version}\"}}"), 1.0),
        (
            r#"vpasid_allocations_total{vm="web",status="ok"}"#.into(),
            1.0,
        ),
        (
            r#"vpasid_allocations_total{vm="web",status="quota_exceeded"}"#.into(),
            1.0,
        ),
        (r#"vpasid_quota_rejections_total{vm="web"}"#.into(), 1.0),
        (r#"vpasid_vm_outstanding_pasids{vm="web"}"#.into(), 1.0),
        (r#"vpasid_vm_connected{vm="web"}"#.into(), 1.0),
        ("vpasid_space_capacity".into(), 1_048_575.0),
        (
            r#"vpasid_request_duration_seconds_bucket{le="+Inf"}"#.into(),
            2.0,
        ),
        ("vpasid_request_duration_seconds_count".into(), 2.0),
        // The connection's QEMU process, then two ALLOCs in two drains:
        // three records, one frame each.
        ("vpasid_state_records_total".into(), 3.0),
        ("vpasid_state_frames_total".into(), 3.0),
    ] {
        assert_eq!(server.query(&query), Some(value), "{query}");
    }
    let fds = server.query("process_open_fds").unwrap();
    assert!(fds >= 6.0, "process_open_fds {fds}");
}
