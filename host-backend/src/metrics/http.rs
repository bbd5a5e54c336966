// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The loopback HTTP listener of `--metrics-listen`: `GET /metrics` and
//! nothing else.
//!
//! One thread accepts; each client is served on a short-lived thread of its
//! own, so an idle or slow client delays no scrape. At most
//! [`MAX_HTTP_CLIENTS`] are served at once; a connection beyond that is
//! answered 503 at once and closed, so a client opening connections in a
//! loop cannot exhaust threads. Each client has [`HTTP_TIMEOUT`] to send its
//! whole request head and as long again for every write of the reply.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::text::CONTENT_TYPE;

/// Errors of the metrics listener and its command line.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `--metrics-listen` is not `IP:PORT`.
    #[error("invalid --metrics-listen {0:?}: expected IP:PORT such as 127.0.0.1:9860")]
    InvalidListen(String),
    /// `--metrics-listen` names an address other hosts could reach.
    #[error(
        "--metrics-listen {0} is not a loopback address: metrics are served on \
         127.0.0.0/8 or [::1] only (put a proxy in front to export them)"
    )]
    NotLoopback(SocketAddr),
    /// The listening socket could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The listener thread could not be started.
    #[error("cannot start serving metrics: {0}")]
    Thread(std::io::Error),
}

/// What a scrape answers: the whole exposition text, rendered when asked
/// (the daemon gives `scrape::render_shared` over its registry).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Clients served at once. Far above what one Prometheus and a person with
/// curl need, and a bound on the threads a local process can make us start.
pub const MAX_HTTP_CLIENTS: usize = 16;
/// How long a client may take to send its request head (in total), and to
/// take each write of the reply.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest HTTP request head read.
const MAX_HTTP_HEAD: usize = 8192;

/// The answer to a connection beyond [`MAX_HTTP_CLIENTS`].
const BUSY_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\n\
    Retry-After: 1\r\nConnection: close\r\n\r\ntoo many metrics clients, retry\r\n";

/// What the listener answers to one request head.
fn http_reply(head: &str, render: &dyn Fn() -> String) -> (u16, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (200, "OK", render()),
        ("GET" | "HEAD", _) => (
            404,
            "Not Found",
            "vhost-user-pasid serves /metrics only\n".into(),
        ),
        _ => (405, "Method Not Allowed", "use GET /metrics\n".into()),
    }
}

/// Reads a request head (up to the blank line, at most [`MAX_HTTP_HEAD`]
/// bytes) that must be complete by `deadline`: a client sending one byte at
/// a time cannot hold its thread longer than that.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HTTP_HEAD {
            break;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request head too slow"))?;
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn serve_client(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    let head = read_head(&mut stream, Instant::now() + HTTP_TIMEOUT)?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let (code, reason, body) = http_reply(&head, render);
    let head_only = head.starts_with("HEAD ");
    let content_type = if code == 200 {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut reply = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        reply.push_str(&body);
    }
    stream.write_all(reply.as_bytes())
}

/// Answers 503 without reading the request. The reply fits any fresh
/// socket's send buffer, so the write does not wait; the timeout is there
/// in case it ever would.
fn turn_away(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(BUSY_REPLY);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Accepts scrapes forever, each on its own thread, at most
/// [`MAX_HTTP_CLIENTS`] at once.
pub fn serve_metrics(listener: TcpListener, render: Render) {
    // Every client thread holds a clone: the strong count less this one is
    // the number being served. Only this thread adds clones, so the count
    // cannot grow between the check and the clone.
    let clients = Arc::new(());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("metrics socket accept failed: {e}");
                continue;
            }
        };
        if Arc::strong_count(&clients) > MAX_HTTP_CLIENTS {
            debug!("metrics client turned away: {MAX_HTTP_CLIENTS} already connected");
            turn_away(stream);
            continue;
        }
        let client = Arc::clone(&clients);
        let render = render.clone();
        let spawned = thread::Builder::new()
            .name("metrics-client".into())
            .spawn(move || {
                let _client = client;
                if let Err(e) = serve_client(stream, &*render) {
                    debug!("metrics client ended: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start metrics client thread: {e}");
        }
    }
}

/// Binds the metrics listener at `addr`, when one was given. Call it during
/// set-up, before the sandbox forbids new sockets.
pub fn bind_listener(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, MetricsError> {
    addr.map(|addr| TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source }))
        .transpose()
}

/// Serves metrics on `listener` (from [`bind_listener`]) on a thread of its
/// own and logs the address. Returns that address (the port may have been 0).
pub fn spawn_listener(
    listener: Option<TcpListener>,
    render: Render,
) -> Result<Option<SocketAddr>, MetricsError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let addr = listener.local_addr().map_err(MetricsError::Thread)?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve_metrics(listener, render))
        .map_err(MetricsError::Thread)?;
    info!("event=metrics-listen addr={addr} path=/metrics");
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pasid_space::{PasidSpace, SpaceConfig};
    use crate::registry::Registry;
    use crate::scrape::render_shared;

    fn registry() -> Mutex<Registry> {
        let space = PasidSpace::new(SpaceConfig {
            pasid_bits: 8,
            reserved: vec![1..=15],
        })
        .unwrap();
        Mutex::new(Registry::new(space, 3))
    }

    #[test]
    fn http_answers_metrics_only() {
        let reg = registry();
        let reg = || render_shared(&reg);
        let (code, _, body) = http_reply("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &reg);
        assert_eq!(code, 200);
        assert!(body.contains("vpasid_space_capacity 240\n"));
        assert_eq!(http_reply("GET / HTTP/1.1\r\n\r\n", &reg).0, 404);
        assert_eq!(http_reply("POST /metrics HTTP/1.1\r\n\r\n", &reg).0, 405);
        assert_eq!(http_reply("", &reg).0, 405);
    }

    #[test]
    fn busy_reply_has_the_length_it_announces() {
        let text = std::str::from_utf8(BUSY_REPLY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
