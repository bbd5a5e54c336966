// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vpasid-console-relay SOCKET`: the serial console of a guest that
//! libvirt starts, on this program's stdin and stdout, for the test
//! harness's `Guest` (which drives a console through a child process).
//!
//! Listens on the Unix socket `SOCKET` (mode 0666: QEMU runs as libvirt's
//! `libvirt-qemu`) for QEMU's connection, from a domain's `<serial
//! type='unix'><source mode='connect' .../>`, then copies stdin to the
//! socket and the socket to stdout. Listening before QEMU starts keeps the
//! boot messages: nothing is lost before a reader connects. When QEMU
//! closes the console (it exited, e.g. for `virsh save`), the next QEMU of
//! the domain (`virsh restore`) connects again and the console goes on.
//! Runs until killed or its stdin ends; an error ends it with status 1 and
//! one line on stderr.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

/// The connection console input goes to (none between two QEMUs).
type Current = Arc<Mutex<Option<UnixStream>>>;

fn relay(socket: &Path) -> io::Result<()> {
    // A socket file left by an earlier relay on the same path.
    match fs::remove_file(socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o666))?;
    let current: Current = Arc::new(Mutex::new(None));
    {
        let current = Arc::clone(&current);
        // Console input; typed while no QEMU is connected, it is dropped.
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = io::stdin().lock();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                let mut conn = current.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(stream) = conn.as_mut() {
                    if stream.write_all(&buf[..n]).is_err() {
                        *conn = None;
                    }
                }
            }
            std::process::exit(0);
        });
    }
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        let (stream, _) = listener.accept()?;
        let mut from_guest = stream.try_clone()?;
        *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(stream);
        loop {
            let n = match from_guest.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
        *current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), None) = (args.next(), args.next()) else {
        eprintln!("usage: vpasid-console-relay SOCKET");
        return ExitCode::from(2);
    };
    let socket = Path::new(&socket);
    match relay(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpasid-console-relay: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
