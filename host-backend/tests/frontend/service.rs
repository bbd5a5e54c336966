// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon under [`Manager`]: started, stopped and started again as
//! systemd runs it, with the descriptor store carried across.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::manager::Manager;
use super::Daemon;

impl Manager {
    /// Starts a daemon under this manager (see [`Daemon::start`]).
    pub fn start(self: &Arc<Self>, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let control = dir.path().join("control.sock");
        let d = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        let mut full = args.clone();
        full.extend([
            "--control-socket".to_string(),
            control.display().to_string(),
        ]);
        let child = self
            .command(Path::new(env!("CARGO_BIN_EXE_vhost-user-pasid")), &full)
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            control,
            args,
        };
        daemon.wait_ready(Duration::from_secs(20));
        daemon
    }

    /// Starts `daemon` again (same arguments, same dir, log appended) with
    /// the store, as systemd does after a stop or crash of the service.
    pub fn respawn(&self, daemon: &mut Daemon, marker: &str) {
        assert!(daemon.child.is_none(), "respawn: daemon still running");
        let log_path = daemon.dir.path().join("daemon.log");
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .unwrap();
        std::io::Write::write_all(&mut log, format!("==== test: {marker} ====\n").as_bytes())
            .unwrap();
        let mut full = daemon.args.clone();
        full.extend([
            "--control-socket".to_string(),
            daemon.control.display().to_string(),
        ]);
        let child = self
            .command(Path::new(env!("CARGO_BIN_EXE_vhost-user-pasid")), &full)
            .stderr(log)
            .spawn()
            .unwrap();
        daemon.child = Some(child);
    }
}

impl Daemon {
    /// SIGTERMs the daemon and reaps it (bounded); its sockets and state
    /// stay for [`Manager::respawn`]. Returns the exit status.
    pub fn term(&mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("term: daemon not running");
        // SAFETY: plain kill(2) on our own, not yet reaped, child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        super::wait_bounded(child, Duration::from_secs(10))
    }
}
