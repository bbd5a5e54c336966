// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Durable state (`--state-dir`) through the real daemon: restarts after
//! SIGKILL keep every holding, damaged state is refused with a message that
//! names the file, a torn last write is dropped, one daemon per directory.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod frontend;

use std::path::{Path, PathBuf};
use std::process::Command;

use frontend::{held_by, vm_json, Daemon, TestVm};
use pasid_protocol::Status;

/// Daemon arguments for VMs `a` and `b` over the state in `state`.
fn args(state: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock,quota=50",
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(state.display().to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(state: &Path, extra: &[&str]) -> Daemon {
    let a = args(state, extra);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    Daemon::start(&refs)
}

fn kill9(d: Daemon) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(d.pid(), libc::SIGKILL) };
    drop(d); // reaps it
}

/// Runs the daemon expecting it to refuse to start; returns its stderr.
/// A daemon that starts after all is killed after 10 s and fails the test
/// with its log, instead of hanging it.
fn refused(state: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"))
        .args(["--vm", &format!("a={}/a.sock", dir.path().display())])
        .args(["--state-dir", &state.display().to_string()])
        .args([
            "--control-socket",
            &format!("{}/c.sock", dir.path().display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon started:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "the daemon started and exited 0:\n{stderr}"
    );
    stderr
}

#[test]
fn sigkill_and_restart_keep_every_holding() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let d = start(&state, &[]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let space_id = a.config().space_id;
    let mine: Vec<u32> = (0..6).map(|_| a.alloc_ok(1, 0xfffff)).collect();
    assert_eq!(a.free(mine[0]), Status::Ok);
    let (ok, _, err) = d.ctl(&["get", &mine[1].to_string(), "--holder", "drv"]);
    assert!(ok, "{err}");
    let (ok, _, err) = d.ctl(&["quota", "--vm", "a", "9"]);
    assert!(ok, "{err}");
    let before = held_by(&d, "a");
    assert_eq!(before, mine[1..].to_vec());
    kill9(d);

    let d = start(&state, &[]);
    d.wait_log("event=state-loaded");
    assert_eq!(held_by(&d, "a"), before, "a's PASIDs after the restart");
    assert_eq!(held_by(&d, "drv"), vec![mine[1]], "the host reference");
    let va = vm_json(&d, "a");
    assert_eq!(va["connected"], false);
    assert_eq!(va["quota"], 9, "pasidctl quota survives a restart");

    // A second VM never gets what a still holds.
    let mut b = TestVm::connect(&d.path("b.sock"));
    assert_eq!(b.config().space_id, space_id, "the same space keeps its ID");
    let theirs: Vec<u32> = (0..10).map(|_| b.alloc_ok(1, 0xfffff)).collect();
    for p in &theirs {
        assert!(!before.contains(p), "b was given {p}, which a holds");
    }
    // b got the lowest free numbers: mine[0] was freed before the crash.
    assert!(theirs.contains(&mine[0]));

    // Releasing a frees what only it held; the host reference stays.
    let (ok, _, err) = d.ctl(&["release", "--vm", "a"]);
    assert!(ok, "{err}");
    assert!(held_by(&d, "a").is_empty());
    assert_eq!(held_by(&d, "drv"), vec![mine[1]]);
    let again = b.alloc_ok(1, 0xfffff);
    assert!(before.contains(&again), "released PASIDs are free again");

    // All of that is durable too, and a clean stop (SIGTERM) reclaims
    // nothing: a's slot was never connected, b's frontend still is.
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let d = start(&state, &[]);
    assert!(held_by(&d, "a").is_empty());
    assert_eq!(held_by(&d, "b").len(), 11);
    assert_eq!(held_by(&d, "drv"), vec![mine[1]]);
}

#[test]
fn changed_command_line_limits_apply_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let d = start(&state, &[]);
    assert_eq!(vm_json(&d, "b")["quota"], 50);
    let (ok, _, err) = d.ctl(&["quota", "--vm", "b", "3"]);
    assert!(ok, "{err}");
    kill9(d);
    // Same command line: the operator's quota stands.
    let d = start(&state, &[]);
    assert_eq!(vm_json(&d, "b")["quota"], 3);
    kill9(d);
    // Edited command line: it wins.
    let tmp2 = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock",
        "--vm",
        "b={dir}/b.sock,quota=70",
        "--state-dir",
        &state.display().to_string(),
    ]);
    drop(tmp2);
    assert_eq!(vm_json(&d, "b")["quota"], 70);
    d.wait_log("vm=b event=limits quota=70");
}

#[test]
fn a_vm_dropped_from_the_command_line_keeps_its_pasids_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let d = start(&state, &[]);
    let mut b = TestVm::connect(&d.path("b.sock"));
    let held: Vec<u32> = (0..3).map(|_| b.alloc_ok(1, 0xfffff)).collect();
    kill9(d);
    let d = Daemon::start(&[
        "--vm",
        "a={dir}/a.sock",
        "--state-dir",
        &state.display().to_string(),
    ]);
    d.wait_log("vm=b event=unconfigured held=3");
    assert_eq!(held_by(&d, "b"), held);
    assert_eq!(vm_json(&d, "b")["socket"], "(not configured)");
    let mut a = TestVm::connect(&d.path("a.sock"));
    let got = a.alloc_ok(1, 0xfffff);
    assert!(!held.contains(&got));
    let (ok, _, err) = d.ctl(&["release", "--vm", "b"]);
    assert!(ok, "{err}");
    assert!(held_by(&d, "b").is_empty());
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _d = start(&state, &[]);
    let err = refused(&state);
    assert!(
        err.contains("is in use by another vhost-user-pasid"),
        "{err}"
    );
    assert!(err.contains(&state.display().to_string()), "{err}");
}

/// The snapshot slot of the newest generation (header bytes 12..20, as
/// docs/state.md lays them out), not the newest mtime: two writes within
/// one timer tick share an mtime.
fn newest_snapshot(state: &Path) -> PathBuf {
    (0..2)
        .map(|i| state.join(format!("snapshot.{i}")))
        .filter_map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let generation = u64::from_le_bytes(bytes.get(12..20)?.try_into().unwrap());
            Some((generation, p))
        })
        .max()
        .unwrap()
        .1
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// A state with allocations in its snapshot and several journal frames.
fn state_with_frames() -> (tempfile::TempDir, PathBuf, Vec<u32>) {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let d = start(&state, &[]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    let held: Vec<u32> = (0..4).map(|_| a.alloc_ok(1, 0xfffff)).collect();
    kill9(d);
    (tmp, state, held)
}

#[test]
fn a_damaged_snapshot_is_refused_naming_the_file() {
    let (_tmp, state, _) = state_with_frames();
    // Start once more so the allocations are in a snapshot. The control
    // socket is bound before the new generation is written: wait for it,
    // or the kill can land inside that write, and the damaged newer
    // snapshot is then rightly taken for an unfinished compaction.
    let d = start(&state, &[]);
    d.wait_log("event=state-loaded");
    kill9(d);
    let snap = newest_snapshot(&state);
    flip(&snap, 40);
    let err = refused(&state);
    assert!(err.contains(&snap.display().to_string()), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn damage_inside_the_journal_is_refused() {
    let (_tmp, state, _) = state_with_frames();
    let journal = state.join("journal");
    let len = std::fs::metadata(&journal).unwrap().len();
    assert!(len > 100, "expected several frames, journal is {len} bytes");
    // Inside the first frame's payload (header 24 + frame header 16).
    flip(&journal, 24 + 16 + 3);
    let err = refused(&state);
    assert!(err.contains(&journal.display().to_string()), "{err}");
    assert!(err.contains("followed by a valid frame"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["snapshot.0", "snapshot.1", "journal"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn a_torn_last_write_is_dropped_and_nothing_acknowledged_is_lost() {
    let (tmp, state, held) = state_with_frames();
    let pristine = tmp.path().join("pristine");
    copy_dir(&state, &pristine);
    let bytes = std::fs::read(state.join("journal")).unwrap();
    // Header, then the frame of the connection's QEMU process (frame
    // header 16, record 26: type, owner, flag, pid, boot id), then one
    // frame per ALLOC: frame header 16, batch header 7, one answer 43;
    // then the zeros the writer keeps ahead of its end.
    let peer = 16 + 26;
    let frame = 16 + 7 + 43;
    let last_frame = 24 + peer + 3 * frame;
    let end = last_frame + frame;
    assert_eq!(
        journal_end(&state.join("journal")),
        end as u64,
        "the QEMU process, then 4 frames of one answer each"
    );
    assert!(bytes.len() > end, "zeros are written ahead of the end");
    assert!(bytes[end..].iter().all(|&b| b == 0));

    // A crash in mid-write leaves the last frame cut short: over the zeros
    // written ahead, or (a file system that lost them) at the file's end.
    // The frame is dropped, the ones before it stay. Garbage after the
    // last frame is dropped the same way.
    let mut cases: Vec<(Vec<u8>, &[u32])> = Vec::new();
    // (The frame's last 12 bytes hold the PASID's high bytes and the tag's,
    // zero here: cutting there would leave the frame whole.)
    for cut in [last_frame + 1, last_frame + 16, end - 12] {
        let mut over_zeros = bytes.clone();
        over_zeros[cut..end].fill(0);
        cases.push((over_zeros, &held[..3]));
        cases.push((bytes[..cut].to_vec(), &held[..3]));
    }
    let mut garbage = bytes.clone();
    garbage[end..end + 40].fill(0x5a);
    cases.push((garbage, &held[..]));
    for (i, (journal, expect)) in cases.iter().enumerate() {
        copy_dir(&pristine, &state);
        std::fs::write(state.join("journal"), journal).unwrap();
        let d = start(&state, &[]);
        assert_eq!(held_by(&d, "a"), expect.to_vec(), "case {i}");
        d.wait_log("event=state-repair");
        kill9(d);
    }

    // The untouched journal: zeros after the last frame are its clean end.
    copy_dir(&pristine, &state);
    let d = start(&state, &[]);
    assert_eq!(held_by(&d, "a"), held);
    let log = d.wait_log("event=state-loaded");
    assert!(!log.contains("state-repair"), "{log}");
}

/// Where the frames of the journal at `path` end (the writer keeps zeros
/// written beyond).
fn journal_end(path: &Path) -> u64 {
    use vhost_user_pasid::state::codec::{decode_journal_header, read_commit, JOURNAL_HEADER_LEN};
    let bytes = std::fs::read(path).unwrap();
    let generation = decode_journal_header(&bytes).unwrap();
    let mut at = JOURNAL_HEADER_LEN;
    while let Some(c) = read_commit(&bytes[at..], generation) {
        at += c.len;
    }
    at as u64
}

#[test]
fn unknown_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("snapshot.0"), b"this is not a snapshot at all").unwrap();
    let err = refused(&state);
    assert!(err.contains("bad magic"), "{err}");
    assert!(err.contains("snapshot.0"), "{err}");
}

/// The value of the sample `name` (no labels) in `pasidctl metrics`.
fn metric(d: &Daemon, name: &str) -> Option<f64> {
    let (ok, out, err) = d.ctl(&["metrics"]);
    assert!(ok, "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_frames_records_and_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let d = start(&state, &[]);
    let mut a = TestVm::connect(&d.path("a.sock"));
    for _ in 0..5 {
        a.alloc_ok(1, 0xfffff);
    }
    let (ok, _, err) = d.ctl(&["quota", "--vm", "a", "9"]);
    assert!(ok, "{err}");
    // The connection's QEMU process, one drain per ALLOC (one request per
    // kick), one quota change: one record and one frame each, nothing
    // else waited.
    assert_eq!(metric(&d, "vpasid_state_records_total"), Some(7.0));
    assert_eq!(metric(&d, "vpasid_state_frames_total"), Some(7.0));
    assert_eq!(
        metric(&d, "vpasid_state_sync_duration_seconds_count"),
        Some(7.0)
    );
    assert_eq!(metric(&d, "vpasid_state_compactions_total"), Some(0.0));
    let journal = journal_end(&state.join("journal"));
    assert_eq!(
        metric(&d, "vpasid_state_journal_bytes"),
        Some(journal as f64)
    );

    // Without --state-dir there is no state to report on.
    let mem = Daemon::start(&["--vm", "a={dir}/a.sock"]);
    assert_eq!(metric(&mem, "vpasid_state_frames_total"), None);
}

/// The state in `state`, loaded as the daemon would (snapshot plus
/// journal), as a snapshot image.
fn loaded_image(state: &Path) -> vhost_user_pasid::registry::record::StateImage {
    use vhost_user_pasid::pasid_space::{PasidSpace, SpaceConfig};
    use vhost_user_pasid::registry::Registry;
    let files = vhost_user_pasid::state::StateFiles::open(state).unwrap();
    let loaded = files.load().unwrap();
    let space = PasidSpace::new(SpaceConfig::default()).unwrap();
    let (space, space_id, vms) = vhost_user_pasid::state::recover(space, 1, &files, &loaded)
        .unwrap()
        .into_parts();
    Registry::restored(space, space_id, vms).image()
}

#[test]
fn a_crash_inside_compaction_loses_nothing() {
    use vhost_user_pasid::state::codec::encode_snapshot;
    // state_with_frames leaves generation 1: snapshot.0 and a journal of 4
    // frames. Compaction to generation 2 writes snapshot.1, then empties
    // the journal.
    let (tmp, state, held) = state_with_frames();
    let pristine = tmp.path().join("pristine");
    copy_dir(&state, &pristine);
    let next = encode_snapshot(&loaded_image(&state), 2);

    // Killed while writing snapshot.1: the torn newer snapshot is ignored,
    // generation 1 and its journal are used.
    std::fs::write(state.join("snapshot.1"), &next[..next.len() / 2]).unwrap();
    let d = start(&state, &[]);
    d.wait_log("is an unfinished snapshot of generation 2");
    assert_eq!(held_by(&d, "a"), held);
    kill9(d);

    // Killed after snapshot.1, before the journal was emptied: the journal
    // (generation 1) is older than the snapshot and must not be replayed
    // on top of it, which would allocate its PASIDs a second time.
    copy_dir(&pristine, &state);
    std::fs::write(state.join("snapshot.1"), &next).unwrap();
    let d = start(&state, &[]);
    d.wait_log("older than the snapshot's 2");
    assert_eq!(held_by(&d, "a"), held);
    kill9(d);

    // The journal moved on to generation 2, so snapshot.1 had been
    // complete: damage to it now is real, and refused.
    copy_dir(&pristine, &state);
    let mut damaged = next.clone();
    damaged[40] ^= 1;
    std::fs::write(state.join("snapshot.1"), &damaged).unwrap();
    let mut journal = std::fs::read(state.join("journal")).unwrap();
    journal.truncate(24);
    let header = vhost_user_pasid::state::codec::encode_journal_header(2);
    journal.copy_from_slice(&header);
    std::fs::write(state.join("journal"), &journal).unwrap();
    let err = refused(&state);
    assert!(err.contains("snapshot.1"), "{err}");
    assert!(err.contains("generation 2 is damaged"), "{err}");
}

/// A disk that fails a write (here: the file size limit, `RLIMIT_FSIZE`,
/// with SIGXFSZ ignored, so `pwrite` fails with EFBIG) stops the daemon
/// with status 74 before any answer it could not make durable is released,
/// and what it did acknowledge survives.
#[test]
fn a_failed_write_stops_the_daemon_and_loses_nothing_acknowledged() {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use pasid_protocol::Request;

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let sock = tmp.path().join("a.sock");
    let log = tmp.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vhost-user-pasid"));
    cmd.args(["--vm", &format!("a={},quota=100000", sock.display())])
        .args(["--state-dir", &state.display().to_string()])
        .args(["--journal-limit", "1048576"])
        .args([
            "--control-socket",
            &tmp.path().join("c.sock").display().to_string(),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (signal, setrlimit), on no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 128 << 10,
                rlim_max: 128 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();

    // One ALLOC per kick until the daemon stops answering: the journal
    // (64 KiB of zeros ahead, 66 bytes a frame) needs to grow past the
    // 128 KiB limit after about 1,000.
    let mut vm = TestVm::connect(&sock);
    let mut answered = Vec::new();
    let mut tag = 1u64;
    loop {
        vm.post(&[Request::Alloc {
            tag,
            min: 1,
            max: 0xfffff,
        }]);
        vm.kick();
        tag += 1;
        if vm.try_wait_used(1, Duration::from_secs(3)).is_none() {
            break;
        }
        let r = vm.read_response(0);
        assert_eq!(Status::from_wire(r.status), Some(Status::Ok), "{r:?}");
        answered.push(r.pasid);
        assert!(answered.len() < 100_000, "the write never failed");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(74), "{text}");
    assert!(text.contains("event=state-failure"), "{text}");
    assert!(text.contains("File too large"), "{text}");
    assert!(answered.len() > 500, "{} answered", answered.len());

    // Restarted without the limit: everything acknowledged is still a's;
    // at most the one request in flight was recorded besides.
    drop(vm);
    let d = start(&state, &[]);
    let held = held_by(&d, "a");
    answered.sort_unstable();
    assert!(
        held.len() == answered.len() || held.len() == answered.len() + 1,
        "{} held, {} answered",
        held.len(),
        answered.len()
    );
    assert!(answered.iter().all(|p| held.binary_search(p).is_ok()));
}
