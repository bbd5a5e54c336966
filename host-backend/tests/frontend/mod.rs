// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A test VM: plays QEMU (the vhost-user frontend) and the guest driver
//! (the virtqueue) against a real `vhost-user-pasid` over its real Unix
//! socket, with memfd-backed guest memory and eventfd kicks and calls.
//!
//! Shared by the integration tests and the socket benchmark through
//! `#[path]`; not every user needs every helper.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use pasid_protocol::{
    Config, Request, Response, Status, CONFIG_SIZE, F_LEASE, F_RECONCILE, REQUEST_SIZE,
    RESPONSE_SIZE,
};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub mod manager;
pub mod service;

/// Size of the test VM's memory.
pub const MEM_SIZE: u64 = 1 << 20;
/// Guest-physical layout of the request queue.
pub const DESC_GPA: u64 = 0x0;
pub const AVAIL_GPA: u64 = 0x4000;
pub const USED_GPA: u64 = 0x8000;
/// Request/response buffers, one 64-byte slot per in-flight request.
pub const BUF_GPA: u64 = 0x10000;
pub const SLOT: u64 = 64;
/// Free memory for hostile tests.
pub const SCRATCH_GPA: u64 = 0x80000;
/// GRANT and RETURN chains: one 0x400-byte slot per in-flight request,
/// its readable part (up to 24 + 4 * 64 bytes) first, its writable part
/// at +0x200.
pub const LEASE_GPA: u64 = 0xc0000;
pub const LEASE_SLOT: u64 = 0x400;

/// How the test VM sets itself up.
#[derive(Clone, Debug)]
pub struct VmOptions {
    pub queue_size: u16,
    pub event_idx: bool,
    /// Give the backend the memory table (QEMU with share=on does).
    pub share_memory: bool,
    /// Accept VIRTIO_PASID_F_LEASE when the device offers it (a driver
    /// with leases); without it the VM is a v1 driver.
    pub lease: bool,
    /// Accept VIRTIO_PASID_F_RECONCILE when the device offers it (a driver
    /// that can resume on a new device).
    pub reconcile: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            queue_size: 256,
            event_idx: true,
            share_memory: true,
            lease: false,
            reconcile: false,
        }
    }
}

impl VmOptions {
    /// A driver with leases: accepts VIRTIO_PASID_F_LEASE when offered.
    pub fn lease() -> Self {
        VmOptions {
            lease: true,
            ..VmOptions::default()
        }
    }

    /// A driver that can resume: accepts VIRTIO_PASID_F_RECONCILE when
    /// offered.
    pub fn reconcile() -> Self {
        VmOptions {
            reconcile: true,
            ..VmOptions::default()
        }
    }
}

/// One descriptor as a hostile test writes it.
#[derive(Clone, Copy, Debug)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A VM connected to the daemon.
pub struct TestVm {
    pub frontend: Frontend,
    pub mem: GuestMemoryMmap,
    kick: EventFd,
    call: EventFd,
    qsize: u16,
    next_avail: u16,
    last_used: u16,
    event_idx: bool,
    /// VIRTIO_PASID_F_LEASE was negotiated.
    lease: bool,
    /// VIRTIO_PASID_F_RECONCILE was negotiated.
    reconcile: bool,
    next_tag: u64,
}

fn memfd(size: u64) -> File {
    let name = c"vpasid-test";
    // SAFETY: `name` is a valid NUL-terminated string; the returned fd is
    // checked before it is wrapped.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).unwrap();
    file
}

/// Connects to `path`, waiting up to 10 s for the daemon to listen.
pub fn connect_frontend(path: &Path) -> Frontend {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Frontend::connect(path, 1) {
            Ok(f) => return f,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to {}: {e}", path.display()),
        }
    }
}

impl TestVm {
    pub fn connect(path: &Path) -> TestVm {
        Self::connect_with(path, VmOptions::default())
    }

    /// Negotiates as QEMU does: VERSION_1, optionally EVENT_IDX and (when
    /// offered) VIRTIO_PASID_F_LEASE, and the CONFIG and MQ protocol
    /// features. The daemon must offer VERSION_1, EVENT_IDX,
    /// PROTOCOL_FEATURES and CONFIG. Says whether F_LEASE and F_RECONCILE
    /// were negotiated.
    fn negotiate(
        frontend: &mut Frontend,
        event_idx: bool,
        (lease, reconcile): (bool, bool),
    ) -> Result<(bool, bool), String> {
        frontend
            .set_owner()
            .map_err(|e| format!("SET_OWNER: {e}"))?;
        let offered = frontend
            .get_features()
            .map_err(|e| format!("GET_FEATURES: {e}"))?;
        let required = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered & required != required {
            return Err(format!(
                "features {offered:#x} do not include {required:#x} (VERSION_1, EVENT_IDX, \
                 PROTOCOL_FEATURES)"
            ));
        }
        let mut features =
            (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if event_idx {
            features |= 1 << VIRTIO_RING_F_EVENT_IDX;
        }
        let lease = lease && offered & (1 << F_LEASE) != 0;
        if lease {
            features |= 1 << F_LEASE;
        }
        let reconcile = reconcile && offered & (1 << F_RECONCILE) != 0;
        if reconcile {
            features |= 1 << F_RECONCILE;
        }
        frontend
            .set_features(features)
            .map_err(|e| format!("SET_FEATURES: {e}"))?;
        let proto = frontend
            .get_protocol_features()
            .map_err(|e| format!("GET_PROTOCOL_FEATURES: {e}"))?;
        if !proto.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(format!("protocol features {proto:?} lack CONFIG"));
        }
        frontend
            .set_protocol_features(
                VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ,
            )
            .map_err(|e| format!("SET_PROTOCOL_FEATURES: {e}"))?;
        Ok((lease, reconcile))
    }

    /// Connects to `path` and negotiates ([`TestVm::negotiate`]).
    fn handshake(path: &Path, event_idx: bool, wanted: (bool, bool)) -> (Frontend, (bool, bool)) {
        let mut frontend = connect_frontend(path);
        match Self::negotiate(&mut frontend, event_idx, wanted) {
            Ok(got) => (frontend, got),
            Err(e) => panic!("handshake with {}: {e}", path.display()),
        }
    }

    /// Sets up the request queue at the usual guest-physical layout, whose
    /// region starts at frontend address `uaddr`, starting at ring index
    /// `base`, with fresh kick and call eventfds (returned), and enables it.
    fn set_up_ring(
        frontend: &mut Frontend,
        uaddr: u64,
        qsize: u16,
        base: u16,
    ) -> Result<(EventFd, EventFd), String> {
        frontend
            .set_vring_num(0, qsize)
            .map_err(|e| format!("SET_VRING_NUM: {e}"))?;
        frontend
            .set_vring_addr(
                0,
                &VringConfigData {
                    queue_max_size: qsize,
                    queue_size: qsize,
                    flags: 0,
                    desc_table_addr: uaddr + DESC_GPA,
                    used_ring_addr: uaddr + USED_GPA,
                    avail_ring_addr: uaddr + AVAIL_GPA,
                    log_addr: None,
                },
            )
            .map_err(|e| format!("SET_VRING_ADDR: {e}"))?;
        frontend
            .set_vring_base(0, base)
            .map_err(|e| format!("SET_VRING_BASE {base}: {e}"))?;
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        frontend
            .set_vring_call(0, &call)
            .map_err(|e| format!("SET_VRING_CALL: {e}"))?;
        frontend
            .set_vring_kick(0, &kick)
            .map_err(|e| format!("SET_VRING_KICK: {e}"))?;
        frontend
            .set_vring_enable(0, true)
            .map_err(|e| format!("SET_VRING_ENABLE: {e}"))?;
        Ok((kick, call))
    }

    /// A fresh ring ([`TestVm::set_up_ring`] from index 0) on `frontend`.
    fn with_ring(
        mut frontend: Frontend,
        mem: GuestMemoryMmap,
        uaddr: u64,
        qsize: u16,
        event_idx: bool,
    ) -> TestVm {
        let (kick, call) = Self::set_up_ring(&mut frontend, uaddr, qsize, 0)
            .unwrap_or_else(|e| panic!("ring set-up: {e}"));
        TestVm {
            frontend,
            mem,
            kick,
            call,
            qsize,
            next_avail: 0,
            last_used: 0,
            event_idx,
            lease: false,
            reconcile: false,
            next_tag: 1,
        }
    }

    pub fn connect_with(path: &Path, opts: VmOptions) -> TestVm {
        let (frontend, (lease, reconcile)) =
            Self::handshake(path, opts.event_idx, (opts.lease, opts.reconcile));

        let file = memfd(MEM_SIZE);
        let fd = file.as_raw_fd();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            MEM_SIZE as usize,
            Some(FileOffset::new(file, 0)),
        )])
        .unwrap();
        let uaddr = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        if opts.share_memory {
            let region = VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: MEM_SIZE,
                userspace_addr: uaddr,
                mmap_offset: 0,
                mmap_handle: fd,
            };
            frontend.set_mem_table(&[region]).unwrap();
        }
        let mut vm = Self::with_ring(frontend, mem, uaddr, opts.queue_size, opts.event_idx);
        vm.lease = lease;
        vm.reconcile = reconcile;
        vm
    }

    /// Reads the device config space through GET_CONFIG.
    pub fn config(&mut self) -> Config {
        let buf = [0u8; CONFIG_SIZE];
        let (_, data) = self
            .frontend
            .get_config(0, CONFIG_SIZE as u32, VhostUserConfigFlags::empty(), &buf)
            .unwrap();
        Config::decode(&data.as_slice().try_into().unwrap())
    }

    pub fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    pub fn write_desc(&self, index: u16, d: RawDesc) {
        let at = GuestAddress(DESC_GPA + u64::from(index) * 16);
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        self.mem.write_slice(&b, at).unwrap();
    }

    /// Makes `head` available (without kicking).
    pub fn push_avail(&mut self, head: u16) {
        let slot = u64::from(self.next_avail % self.qsize);
        self.mem
            .write_obj(head.to_le(), GuestAddress(AVAIL_GPA + 4 + slot * 2))
            .unwrap();
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Publishes the avail index (e.g. a hostile one).
    pub fn publish_avail_idx(&self, idx: u16) {
        fence(Ordering::SeqCst);
        self.mem
            .write_obj(idx.to_le(), GuestAddress(AVAIL_GPA + 2))
            .unwrap();
        fence(Ordering::SeqCst);
    }

    pub fn publish(&mut self) {
        if self.event_idx {
            // used_event: ask to be called as soon as anything is used.
            let used_event = AVAIL_GPA + 4 + u64::from(self.qsize) * 2;
            self.mem
                .write_obj(self.last_used.to_le(), GuestAddress(used_event))
                .unwrap();
        }
        self.publish_avail_idx(self.next_avail);
    }

    pub fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        fence(Ordering::SeqCst);
        u16::from_le(self.mem.read_obj(GuestAddress(USED_GPA + 2)).unwrap())
    }

    /// Waits until `count` more chains are used; returns (head, len) of each.
    pub fn wait_used(&mut self, count: u16, timeout: Duration) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        while self.used_idx().wrapping_sub(self.last_used) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "device used {} of {count} chains within {timeout:?}",
                self.used_idx().wrapping_sub(self.last_used)
            );
            let mut pfd = libc::pollfd {
                fd: self.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(100) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            let _ = self.call.read();
        }
        let mut out = Vec::new();
        for _ in 0..count {
            let slot = u64::from(self.last_used % self.qsize);
            let at = USED_GPA + 4 + slot * 8;
            let id = u32::from_le(self.mem.read_obj(GuestAddress(at)).unwrap());
            let len = u32::from_le(self.mem.read_obj(GuestAddress(at + 4)).unwrap());
            out.push((id, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// Whether the device used anything within `timeout`.
    pub fn nothing_used_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.used_idx() != self.last_used {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn req_gpa(i: u16) -> u64 {
        BUF_GPA + u64::from(i) * SLOT
    }

    pub fn resp_gpa(i: u16) -> u64 {
        Self::req_gpa(i) + 32
    }

    /// Posts `requests` as well-formed chains without kicking; returns heads.
    pub fn post(&mut self, requests: &[Request]) -> Vec<u16> {
        assert!(requests.len() * 2 <= usize::from(self.qsize));
        let mut heads = Vec::new();
        for (i, req) in requests.iter().enumerate() {
            let i = i as u16;
            let (rd, wd) = (2 * i, 2 * i + 1);
            self.mem
                .write_slice(&req.encode(), GuestAddress(Self::req_gpa(i)))
                .unwrap();
            self.mem
                .write_slice(&[0xee; RESPONSE_SIZE], GuestAddress(Self::resp_gpa(i)))
                .unwrap();
            self.write_desc(
                rd,
                RawDesc {
                    addr: Self::req_gpa(i),
                    len: REQUEST_SIZE as u32,
                    flags: VRING_DESC_F_NEXT as u16,
                    next: wd,
                },
            );
            self.write_desc(
                wd,
                RawDesc {
                    addr: Self::resp_gpa(i),
                    len: RESPONSE_SIZE as u32,
                    flags: VRING_DESC_F_WRITE as u16,
                    next: 0,
                },
            );
            self.push_avail(rd);
            heads.push(rd);
        }
        self.publish();
        heads
    }

    pub fn write_at(&self, gpa: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(gpa)).unwrap();
    }

    pub fn read_response_at(&self, gpa: u64) -> Response {
        let mut b = [0u8; RESPONSE_SIZE];
        self.mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
        Response::decode(&b)
    }

    pub fn read_response(&self, i: u16) -> Response {
        let mut b = [0u8; RESPONSE_SIZE];
        self.mem
            .read_slice(&mut b, GuestAddress(Self::resp_gpa(i)))
            .unwrap();
        Response::decode(&b)
    }

    /// Sends `requests` with one kick and returns their responses in order.
    pub fn batch(&mut self, requests: &[Request]) -> Vec<Response> {
        self.post(requests);
        self.kick();
        let used = self.wait_used(requests.len() as u16, Duration::from_secs(10));
        for (id, len) in &used {
            assert_eq!(*len, RESPONSE_SIZE as u32, "used length of chain {id}");
        }
        (0..requests.len() as u16)
            .map(|i| self.read_response(i))
            .collect()
    }

    pub fn request(&mut self, req: Request) -> Response {
        let resp = self.batch(&[req])[0];
        assert_eq!(resp.tag, req.tag(), "tag not echoed");
        resp
    }

    pub fn alloc(&mut self, min: u32, max: u32) -> Response {
        let tag = self.tag();
        self.request(Request::Alloc { tag, min, max })
    }

    /// Allocates and insists on success.
    pub fn alloc_ok(&mut self, min: u32, max: u32) -> u32 {
        let r = self.alloc(min, max);
        assert_eq!(Status::from_wire(r.status), Some(Status::Ok), "{r:?}");
        r.pasid
    }

    pub fn free(&mut self, pasid: u32) -> Status {
        let tag = self.tag();
        Status::from_wire(self.request(Request::Free { tag, pasid }).status).unwrap()
    }

    pub fn reset(&mut self) -> Response {
        let tag = self.tag();
        self.request(Request::Reset { tag })
    }

    /// Sends 24 request bytes as they are (a request the typed
    /// [`Request`] cannot express, e.g. an unknown opcode) in one chain of
    /// a 24-byte readable and a 16-byte writable descriptor; the device
    /// must answer it with a response (used length 16), which is returned.
    pub fn raw_request(&mut self, bytes: &[u8; 24], timeout: Duration) -> Response {
        self.write_at(Self::req_gpa(0), bytes);
        self.write_desc(
            0,
            RawDesc {
                addr: Self::req_gpa(0),
                len: 24,
                flags: VRING_DESC_F_NEXT as u16,
                next: 1,
            },
        );
        self.write_desc(
            1,
            RawDesc {
                addr: Self::resp_gpa(0),
                len: 16,
                flags: VRING_DESC_F_WRITE as u16,
                next: 0,
            },
        );
        self.push_avail(0);
        self.publish();
        self.kick();
        assert_eq!(self.wait_used(1, timeout), vec![(0, 16)]);
        self.read_response(0)
    }
}

/// A running daemon, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub control: PathBuf,
    /// The arguments it was started with, for [`Daemon::restart`].
    args: Vec<String>,
}

pub fn bin(name: &str) -> PathBuf {
    // Integration tests and benches of this package get their binaries here.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    dir.join(name)
}

impl Daemon {
    /// Starts the daemon with `args` plus a control socket in a temp dir;
    /// `{dir}` in an argument is replaced by that dir.
    pub fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let d = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
            .args(&args)
            .arg("--control-socket")
            .arg(&control)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child: Some(child),
            dir,
            control,
            args,
        };
        daemon.wait_for_socket(&daemon.control);
        daemon
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn wait_for_socket(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs pasidctl against this daemon; returns (exit ok, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pasidctl"))
            .arg("--socket")
            .arg(&self.control)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `pasidctl --json ARGS`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let (ok, out, err) = self.ctl(&full);
        assert!(ok, "pasidctl {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends SIGTERM, waits (bounded) and returns the exit status and log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_bounded(child, Duration::from_secs(5));
        (status, self.log())
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the daemon to exit by itself (bounded).
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().unwrap();
        let status = wait_bounded(child, Duration::from_secs(10));
        (status, self.log())
    }
}

fn wait_bounded(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    status
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Slot `name` as `pasidctl vms --json` shows it.
pub fn vm_json(daemon: &Daemon, name: &str) -> serde_json::Value {
    daemon
        .ctl_json(&["vms"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no VM {name} in pasidctl vms"))
}

/// A test VM set up as `opts` says, connected to slot `vm`'s socket
/// (`{dir}/VM.sock`).
pub fn driver(daemon: &Daemon, vm: &str, opts: VmOptions) -> TestVm {
    TestVm::connect_with(&daemon.path(&format!("{vm}.sock")), opts)
}

/// PASIDs the daemon lists for `vm`, sorted.
pub fn held_by(daemon: &Daemon, vm: &str) -> Vec<u32> {
    let list = daemon.ctl_json(&["pasids"]);
    let mut out: Vec<u32> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["holders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["owner"] == vm)
        })
        .map(|p| p["pasid"].as_u64().unwrap() as u32)
        .collect();
    out.sort_unstable();
    out
}

/// Guest memory of [`TestVm::connect_regions`]: region A is
/// `[0, REGION_SPLIT)`, region B `[REGION_SPLIT, MEM_SIZE)` (adjacent in the
/// guest, separate memfds and mappings on the host), and region C
/// `[FAR_GPA, FAR_GPA + FAR_SIZE)` beyond a gap.
pub const REGION_SPLIT: u64 = SCRATCH_GPA;
pub const FAR_GPA: u64 = 4 * MEM_SIZE;
pub const FAR_SIZE: u64 = 0x10000;

impl TestVm {
    /// Like [`TestVm::connect`] (EVENT_IDX, queue of 256), but with guest
    /// memory in three regions, so that a hostile test can place buffers
    /// across two regions or in the gap between them. The rings stay in
    /// region A at the usual addresses.
    pub fn connect_regions(path: &Path) -> TestVm {
        let (frontend, _) = Self::handshake(path, true, (false, false));
        let layout = [
            (0, REGION_SPLIT),
            (REGION_SPLIT, MEM_SIZE - REGION_SPLIT),
            (FAR_GPA, FAR_SIZE),
        ];
        let files: Vec<File> = layout.iter().map(|(_, size)| memfd(*size)).collect();
        let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
        let ranges: Vec<_> = layout
            .iter()
            .zip(files)
            .map(|((gpa, size), file)| {
                (
                    GuestAddress(*gpa),
                    *size as usize,
                    Some(FileOffset::new(file, 0)),
                )
            })
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&ranges).unwrap();
        let regions: Vec<_> = layout
            .iter()
            .zip(&fds)
            .map(|((gpa, size), fd)| VhostUserMemoryRegionInfo {
                guest_phys_addr: *gpa,
                memory_size: *size,
                userspace_addr: mem.get_host_address(GuestAddress(*gpa)).unwrap() as u64,
                mmap_offset: 0,
                mmap_handle: *fd,
            })
            .collect();
        frontend.set_mem_table(&regions).unwrap();
        let uaddr = regions[0].userspace_addr;
        Self::with_ring(frontend, mem, uaddr, VmOptions::default().queue_size, true)
    }
}

impl TestVm {
    /// The avail index the next [`TestVm::publish`] would publish (for
    /// hostile tests that publish their own).
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }
}

/// The pid of the process that listens on the other end of the Unix socket
/// `fd` (`SO_PEERCRED`), or 0 when it cannot be read.
pub fn peer_pid_of(fd: i32) -> i32 {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the
    // size of `cred`; a bad fd only makes getsockopt fail.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        cred.pid
    } else {
        0
    }
}

/// Why [`TestVm::try_reconnect`] failed.
#[derive(Debug)]
pub struct ReconnectError {
    /// The daemon the socket was connected to, if it got that far.
    pub peer: Option<i32>,
    /// What failed.
    pub what: String,
}

impl std::fmt::Display for ReconnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(pid) => write!(f, "{} (daemon pid {pid})", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

impl TestVm {
    /// The pid of the daemon this VM's vhost-user socket is connected to.
    pub fn peer_pid(&self) -> i32 {
        peer_pid_of(self.frontend.as_raw_fd())
    }

    /// The used index up to which this VM has read the used ring.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Like [`TestVm::wait_used`], but returns `None` (consuming nothing)
    /// when fewer than `count` more chains were used within `timeout`.
    pub fn try_wait_used(&mut self, count: u16, timeout: Duration) -> Option<Vec<(u32, u32)>> {
        let deadline = Instant::now() + timeout;
        while self.used_idx().wrapping_sub(self.last_used) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 100) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            let _ = self.call.read();
        }
        Some(self.wait_used(count, Duration::ZERO))
    }

    /// The memory table as QEMU would send it: every region of this VM's
    /// memory, each backed by the memfd that the mapping keeps open.
    pub fn memory_regions(&self) -> Vec<VhostUserMemoryRegionInfo> {
        use vm_memory::GuestMemoryRegion;
        self.mem
            .iter()
            .map(|r| {
                let fo = r
                    .file_offset()
                    .expect("test VM memory is backed by a memfd");
                VhostUserMemoryRegionInfo {
                    guest_phys_addr: r.start_addr().0,
                    memory_size: r.len(),
                    userspace_addr: self.mem.get_host_address(r.start_addr()).unwrap() as u64,
                    mmap_offset: fo.start(),
                    mmap_handle: fo.file().as_raw_fd(),
                }
            })
            .collect()
    }

    /// Reconnects to `path` as QEMU does after the backend died: a new
    /// handshake, the same memory (same memfds) in SET_MEM_TABLE, the ring
    /// at the same addresses with SET_VRING_BASE = the used index now in
    /// guest memory, fresh kick and call eventfds, enable, then a kick so
    /// that the backend processes what is available but not yet used.
    /// Requests already posted stay posted; nothing in guest memory changes.
    ///
    /// Retries the connection itself until `connect_timeout`; every
    /// vhost-user reply is bounded by a 10 s socket timeout. On success
    /// returns the pid of the daemon now serving this VM. Replaces (and so
    /// closes) the old connection only on success.
    pub fn try_reconnect(
        &mut self,
        path: &Path,
        connect_timeout: Duration,
    ) -> Result<i32, ReconnectError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(ReconnectError {
                        peer: None,
                        what: format!("connect {}: {e}", path.display()),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let peer = peer_pid_of(stream.as_raw_fd());
        let fail = |what: String| ReconnectError {
            peer: Some(peer),
            what,
        };
        let limit = Some(Duration::from_secs(10));
        stream
            .set_read_timeout(limit)
            .and_then(|()| stream.set_write_timeout(limit))
            .map_err(|e| fail(format!("socket timeouts: {e}")))?;
        let mut frontend = Frontend::from_stream(stream, 1);
        (self.lease, self.reconcile) =
            Self::negotiate(&mut frontend, self.event_idx, (self.lease, self.reconcile))
                .map_err(fail)?;
        frontend
            .set_mem_table(&self.memory_regions())
            .map_err(|e| fail(format!("SET_MEM_TABLE: {e}")))?;
        let uaddr = self.mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        // The backend is dead, so the used index in guest memory is final.
        let (kick, call) =
            Self::set_up_ring(&mut frontend, uaddr, self.qsize, self.used_idx()).map_err(fail)?;
        self.frontend = frontend;
        self.kick = kick;
        self.call = call;
        self.kick();
        Ok(peer)
    }

    /// [`TestVm::try_reconnect`] that insists on success within 10 s.
    pub fn reconnect(&mut self, path: &Path) -> i32 {
        match self.try_reconnect(path, Duration::from_secs(10)) {
            Ok(pid) => pid,
            Err(e) => panic!("reconnect to {}: {e}", path.display()),
        }
    }
}

impl Daemon {
    /// SIGKILLs the daemon and reaps it (bounded). Its socket files and
    /// state stay behind for [`Daemon::restart`].
    pub fn kill9(&mut self) {
        let child = self.child.take().expect("kill9: daemon not running");
        // SAFETY: plain kill(2) on our own, not yet reaped, child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = wait_bounded(child, Duration::from_secs(5));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "daemon had exited before SIGKILL: {status}\n{}",
            self.log_tail(40)
        );
    }

    /// Starts the daemon again with the same arguments in the same dir
    /// (its log is appended to) and waits, bounded, until its control
    /// socket answers. Panics if it exits instead.
    pub fn restart(&mut self) {
        self.spawn_again("restart");
        self.wait_ready(Duration::from_secs(10));
    }

    /// Waits until the control socket answers `pasidctl stats`.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exited() {
                panic!(
                    "daemon exited while starting: {status}\n{}",
                    self.log_tail(40)
                );
            }
            if self.ctl(&["stats"]).0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not answer on its control socket within {limit:?}\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status if the daemon has exited (it is then reaped).
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Daemon {
    /// Starts the daemon again with the same arguments in the same dir,
    /// like [`Daemon::restart`], but returns as soon as the process is
    /// spawned, without waiting for it to be ready (to SIGKILL it during
    /// start-up). `marker` goes into the log first, as `==== test: MARKER
    /// ====`.
    pub fn spawn_again(&mut self, marker: &str) {
        assert!(self.child.is_none(), "spawn_again: daemon still running");
        let log_path = self.dir.path().join("daemon.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        std::io::Write::write_all(&mut log, format!("==== test: {marker} ====\n").as_bytes())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
            .args(&self.args)
            .arg("--control-socket")
            .arg(&self.control)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILLs the daemon and reaps it (bounded, polling finely), like
    /// [`Daemon::kill9`], but returns the exit status instead of insisting
    /// that the SIGKILL was what ended it.
    pub fn kill9_status(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("kill9_status: daemon not running");
        // SAFETY: plain kill(2) on our own, not yet reaped, child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not die within 5 s of SIGKILL"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The log's current length in bytes.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("daemon.log")).map_or(0, |m| m.len())
    }

    /// What the daemon has logged from byte `offset` on.
    pub fn log_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = File::open(self.dir.path().join("daemon.log")) else {
            return String::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// A vhost-user message header as it goes over the socket.
pub const VHOST_USER_HEADER_SIZE: usize = 12;
/// `flags` of a message a frontend sends: protocol version 1.
pub const VHOST_USER_VERSION: u32 = 0x1;
/// `flags` bit of a backend's reply.
pub const VHOST_USER_REPLY: u32 = 0x4;
/// `flags` bit asking for a REPLY_ACK.
pub const VHOST_USER_NEED_REPLY: u32 = 0x8;

/// One vhost-user message read off the socket: header fields and body.
#[derive(Debug, PartialEq, Eq)]
pub struct RawMessage {
    pub request: u32,
    pub flags: u32,
    pub body: Vec<u8>,
}

impl TestVm {
    /// This VM's vhost-user connection as a plain stream (a duplicate of
    /// the frontend's socket), with a 10 s read timeout.
    fn raw_socket(&self) -> std::os::unix::net::UnixStream {
        // SAFETY: the frontend's socket stays open while `self` lives, and
        // the borrow ends within this call (it is duplicated at once).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.frontend.as_raw_fd()) };
        let stream = std::os::unix::net::UnixStream::from(fd.try_clone_to_owned().unwrap());
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Writes one raw vhost-user message (`request`, `flags`, `body`) on
    /// this VM's connection, for messages the vhost crate's `Frontend`
    /// refuses to send.
    pub fn send_raw_message(&self, request: u32, flags: u32, body: &[u8]) {
        use std::io::Write;
        let mut msg = Vec::with_capacity(VHOST_USER_HEADER_SIZE + body.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        msg.extend_from_slice(body);
        self.raw_socket().write_all(&msg).unwrap();
    }

    /// Reads one vhost-user message from the daemon; `None` when the daemon
    /// closed the connection instead.
    pub fn recv_raw_message(&self) -> Option<RawMessage> {
        use std::io::Read;
        let mut sock = self.raw_socket();
        let mut hdr = [0u8; VHOST_USER_HEADER_SIZE];
        match sock.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a vhost-user reply: {e}"),
        }
        let word = |i: usize| u32::from_le_bytes(hdr[i..i + 4].try_into().unwrap());
        let mut body = vec![0u8; word(8) as usize];
        sock.read_exact(&mut body).unwrap();
        Some(RawMessage {
            request: word(0),
            flags: word(4),
            body,
        })
    }
}

/// The body of a GET_CONFIG or SET_CONFIG message: offset, size, flags,
/// then `payload`.
pub fn config_body(offset: u32, size: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for word in [offset, size, flags] {
        body.extend_from_slice(&word.to_le_bytes());
    }
    body.extend_from_slice(payload);
    body
}

/// One answered GRANT or RETURN as the test VM saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReply {
    pub response: Response,
    /// For a GRANT: the PASIDs after the response, as many as the used
    /// length covers.
    pub pasids: Vec<u32>,
    pub used_len: u32,
}

impl TestVm {
    /// Whether VIRTIO_PASID_F_LEASE was negotiated.
    pub fn lease_negotiated(&self) -> bool {
        self.lease
    }

    /// Whether VIRTIO_PASID_F_RECONCILE was negotiated.
    pub fn reconcile_negotiated(&self) -> bool {
        self.reconcile
    }

    /// One RECONCILE listing `list` with `first` and `last`; checks the
    /// tag. The reply's `pasids` are the per-PASID results.
    pub fn reconcile(&mut self, list: &[u32], first: bool, last: bool) -> LeaseReply {
        let tag = self.tag();
        let req = Request::Reconcile {
            tag,
            first,
            last,
            count: list.len() as u16,
            cached: 0,
        };
        let reply = self.lease_batch(&[(req, list.to_vec())]).remove(0);
        assert_eq!(reply.response.tag, tag, "tag not echoed");
        reply
    }

    fn lease_req_gpa(i: u16) -> u64 {
        LEASE_GPA + u64::from(i) * LEASE_SLOT
    }

    fn lease_resp_gpa(i: u16) -> u64 {
        Self::lease_req_gpa(i) + 0x200
    }

    /// Posts and kicks `requests` (each with a RETURN's list, empty for
    /// others) as chains shaped as 5.x.6.12 says, and returns their
    /// answers in order. Descriptors 2i and 2i+1 are request i's.
    pub fn lease_batch(&mut self, requests: &[(Request, Vec<u32>)]) -> Vec<LeaseReply> {
        assert!(requests.len() * 2 <= usize::from(self.qsize));
        assert!(requests.len() as u64 * LEASE_SLOT <= MEM_SIZE - LEASE_GPA);
        for (i, (req, list)) in requests.iter().enumerate() {
            let i = i as u16;
            let mut readable = req.encode().to_vec();
            readable.extend(pasid_protocol::encode_pasids(list));
            self.write_at(Self::lease_req_gpa(i), &readable);
            self.write_at(Self::lease_resp_gpa(i), &[0xee; 0x200]);
            self.write_desc(
                2 * i,
                RawDesc {
                    addr: Self::lease_req_gpa(i),
                    len: readable.len() as u32,
                    flags: VRING_DESC_F_NEXT as u16,
                    next: 2 * i + 1,
                },
            );
            self.write_desc(
                2 * i + 1,
                RawDesc {
                    addr: Self::lease_resp_gpa(i),
                    len: req.writable_len() as u32,
                    flags: VRING_DESC_F_WRITE as u16,
                    next: 0,
                },
            );
            self.push_avail(2 * i);
        }
        self.publish();
        self.kick();
        let used = self.wait_used(requests.len() as u16, Duration::from_secs(10));
        used.iter()
            .map(|&(head, used_len)| self.lease_reply_at((head / 2) as u16, used_len))
            .collect()
    }

    /// The answer in lease slot `i` whose chain came back with `used_len`.
    pub fn lease_reply_at(&self, i: u16, used_len: u32) -> LeaseReply {
        let response = self.read_response_at(Self::lease_resp_gpa(i));
        let n = (used_len as usize).saturating_sub(RESPONSE_SIZE);
        let mut list = vec![0u8; n];
        self.mem
            .read_slice(
                &mut list,
                GuestAddress(Self::lease_resp_gpa(i) + RESPONSE_SIZE as u64),
            )
            .unwrap();
        LeaseReply {
            response,
            pasids: pasid_protocol::decode_pasids(&list),
            used_len,
        }
    }

    /// One GRANT of up to `count` PASIDs in `[min, max]`, reporting
    /// `cached`; checks the tag.
    pub fn grant(&mut self, count: u16, cached: u16, min: u32, max: u32) -> LeaseReply {
        let tag = self.tag();
        let req = Request::Grant {
            tag,
            count,
            cached,
            min,
            max,
        };
        let reply = self.lease_batch(&[(req, Vec::new())]).remove(0);
        assert_eq!(reply.response.tag, tag, "tag not echoed");
        reply
    }

    /// One RETURN of `list`, reporting `cached`; checks the tag.
    pub fn give_back(&mut self, list: &[u32], cached: u16) -> Response {
        let tag = self.tag();
        let req = Request::Return {
            tag,
            count: list.len() as u16,
            cached,
        };
        let reply = self.lease_batch(&[(req, list.to_vec())]).remove(0);
        assert_eq!(reply.response.tag, tag, "tag not echoed");
        reply.response
    }

    /// Pretends the last `n` used elements never reached the guest (the
    /// device died between journaling and using them): moves the used
    /// index back, so that a reconnect re-delivers those requests.
    pub fn rewind_used(&mut self, n: u16) {
        let idx = self.used_idx().wrapping_sub(n);
        self.mem
            .write_obj(idx.to_le(), GuestAddress(USED_GPA + 2))
            .unwrap();
        fence(Ordering::SeqCst);
        self.last_used = self.last_used.wrapping_sub(n);
    }
}
