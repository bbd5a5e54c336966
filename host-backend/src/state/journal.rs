// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The journal writer: group commit and compaction.
//!
//! Records are appended to an in-memory frame while the registry lock is
//! held, so the journal's order is the order in which the state changed.
//! Whoever needs its answers durable calls [`Journal::commit`] after
//! dropping that lock: the first caller becomes the leader, writes every
//! record appended so far as one checksummed frame and syncs it once; the
//! callers that arrive meanwhile wait, and the next of them leads the next
//! frame. One sync thus covers every VM's requests since the last one, and
//! because the file is sequential, a durable frame implies every earlier
//! one is durable too: no answer is released before the state it depends on
//! (another VM's FREE, say) is on disk.
//!
//! When the journal passes its size limit, [`Journal::compact`] writes the
//! whole state as a new snapshot into the other snapshot slot, then empties
//! the journal under a new generation. Only descriptors opened at start-up
//! are used (pwrite, ftruncate, fdatasync), so the seccomp filter need not
//! allow opening files.

use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use log::{error, info};

use crate::metrics::Histogram;

use super::codec::{
    encode_journal_header, encode_snapshot, seal_commit, StateImage, COMMIT_HEADER_LEN,
};
use super::{StateError, StateFiles};

/// Exit status when the state cannot be written (EX_IOERR): the daemon
/// stops rather than answer from state that is not on disk.
pub const EXIT_STATE_IO: i32 = 74;

/// Records appended but not yet written.
#[derive(Debug)]
struct Pending {
    /// The next frame: a header placeholder, then records.
    frame: Vec<u8>,
    /// A cleared buffer to swap in, so steady state allocates nothing.
    spare: Vec<u8>,
    /// Records appended since start-up.
    appended: u64,
    /// Records known to be on disk.
    durable: u64,
    /// A leader is writing a frame.
    syncing: bool,
    /// Bytes in the journal file.
    journal_len: u64,
    /// Frames written since start-up.
    frames: u64,
    /// Compactions since start-up.
    compactions: u64,
    /// Time to write and sync each frame.
    sync: Histogram,
}

/// Figures for the metrics.
#[derive(Clone, Debug)]
pub struct JournalStats {
    /// Frames written and synced since start-up.
    pub frames: u64,
    /// Records appended since start-up.
    pub records: u64,
    /// Compactions since start-up.
    pub compactions: u64,
    /// Current journal size.
    pub journal_bytes: u64,
    /// Write-and-sync time per frame.
    pub sync: Histogram,
}

/// What only the leader (or the compactor) touches.
#[derive(Debug)]
struct Disk {
    files: StateFiles,
    generation: u64,
    /// Sequence number of the last frame written in this generation.
    seq: u64,
    /// Slot of the snapshot of this generation.
    slot: usize,
    /// Where the next frame goes.
    offset: u64,
}

/// The durable log of state changes. See the module docs.
#[derive(Debug)]
pub struct Journal {
    pending: Mutex<Pending>,
    written: Condvar,
    disk: Mutex<Disk>,
    limit: u64,
}

fn fresh_frame(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf.resize(COMMIT_HEADER_LEN, 0);
    buf
}

/// Stops the daemon: state on disk is no longer what the answers given
/// would need. A restart recovers from the last durable frame; requests
/// whose answers were held back are re-delivered by their frontends.
fn fatal(what: &str, e: &std::io::Error) -> ! {
    error!(
        "event=state-failure {what}: {e}; stopping so that no answer is given that is not on \
         disk (restart to recover from the last durable state)"
    );
    std::process::exit(EXIT_STATE_IO)
}

impl Journal {
    /// Starts generation `generation`: writes `image` as its snapshot into
    /// `slot` and empties the journal. `limit` is the journal size past
    /// which [`Journal::needs_compaction`] says so.
    pub fn start(
        files: StateFiles,
        image: &StateImage,
        generation: u64,
        slot: usize,
        limit: u64,
    ) -> Result<Journal, StateError> {
        let mut disk = Disk {
            files,
            generation,
            seq: 0,
            slot,
            offset: 0,
        };
        disk.write_generation(image)?;
        Ok(Journal {
            pending: Mutex::new(Pending {
                frame: fresh_frame(Vec::new()),
                spare: Vec::new(),
                appended: 0,
                durable: 0,
                syncing: false,
                journal_len: disk.offset,
                frames: 0,
                compactions: 0,
                sync: Histogram::default(),
            }),
            written: Condvar::new(),
            disk: Mutex::new(disk),
            limit,
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
        self.written.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record, encoded by `encode`; returns its ticket for
    /// [`Journal::commit`]. Call with the registry lock held.
    pub fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut p = self.pending();
        encode(&mut p.frame);
        p.appended += 1;
        p.appended
    }

    /// The ticket of the latest record appended.
    pub fn latest(&self) -> u64 {
        self.pending().appended
    }

    /// Returns once the record of `ticket`, and every one before it, is on
    /// disk. Never called with the registry lock held.
    pub fn commit(&self, ticket: u64) {
        let mut p = self.pending();
        loop {
            if p.durable >= ticket {
                return;
            }
            if p.syncing {
                p = self.wait(p);
                continue;
            }
            // Lead: take everything appended so far.
            p.syncing = true;
            let target = p.appended;
            let spare = fresh_frame(std::mem::take(&mut p.spare));
            let mut frame = std::mem::replace(&mut p.frame, spare);
            drop(p);
            let started = Instant::now();
            let written = frame.len() > COMMIT_HEADER_LEN;
            let journal_len = if written {
                self.disk().write_frame(&mut frame)
            } else {
                self.disk().offset
            };
            let took = started.elapsed();
            p = self.pending();
            if written {
                p.frames += 1;
                p.sync.observe(took);
            }
            p.syncing = false;
            p.durable = p.durable.max(target);
            p.journal_len = journal_len;
            p.spare = frame;
            self.written.notify_all();
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Figures for the metrics.
    pub fn stats(&self) -> JournalStats {
        let p = self.pending();
        JournalStats {
            frames: p.frames,
            records: p.appended,
            compactions: p.compactions,
            journal_bytes: p.journal_len,
            sync: p.sync.clone(),
        }
    }

    /// Whether the journal has grown past its limit.
    pub fn needs_compaction(&self) -> bool {
        self.pending().journal_len > self.limit
    }

    /// Replaces the journal by a snapshot of `image`. Call with the registry
    /// lock held, `image` taken under it: every record appended so far is
    /// reflected in it, and none can be appended meanwhile.
    pub fn compact(&self, image: &StateImage) {
        let mut p = self.pending();
        while p.syncing {
            p = self.wait(p);
        }
        let mut disk = self.disk();
        if disk.offset <= self.limit {
            return;
        }
        let started = Instant::now();
        let before = disk.offset;
        disk.generation += 1;
        disk.slot ^= 1;
        if let Err(e) = disk.write_generation(image) {
            error!("event=state-failure {e}");
            std::process::exit(EXIT_STATE_IO);
        }
        p.frame = fresh_frame(std::mem::take(&mut p.frame));
        p.durable = p.appended;
        p.journal_len = disk.offset;
        p.compactions += 1;
        self.written.notify_all();
        info!(
            "event=compact generation={} journal_bytes={before} owners={} ms={}",
            disk.generation,
            image.owners.len(),
            started.elapsed().as_millis()
        );
    }
}

impl Disk {
    /// Writes one frame at the end of the journal and syncs it; returns the
    /// journal's new length.
    fn write_frame(&mut self, frame: &mut [u8]) -> u64 {
        self.seq += 1;
        seal_commit(frame, self.generation, self.seq);
        let file = &self.files.journal;
        if let Err(e) = file.write_all_at(frame, self.offset) {
            fatal(
                &format!("cannot write {}", self.files.journal_path().display()),
                &e,
            );
        }
        if let Err(e) = file.sync_data() {
            fatal(
                &format!("cannot sync {}", self.files.journal_path().display()),
                &e,
            );
        }
        self.offset += frame.len() as u64;
        self.offset
    }

    /// Makes `image` the snapshot of `self.generation` in `self.slot`, then
    /// empties the journal under that generation. A crash at any point
    /// leaves either the old snapshot with its journal, or the new one with
    /// an empty (or old-generation, hence ignored) journal.
    fn write_generation(&mut self, image: &StateImage) -> Result<(), StateError> {
        let snapshot = encode_snapshot(image, self.generation);
        let path = self.files.snapshot_path(self.slot);
        let file = self.files.snapshot(self.slot);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| StateError::Io { path, op, source }
        };
        file.write_all_at(&snapshot, 0).map_err(io("write"))?;
        file.set_len(snapshot.len() as u64)
            .map_err(io("truncate"))?;
        file.sync_data().map_err(io("sync"))?;
        let path = self.files.journal_path();
        let journal = &self.files.journal;
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| StateError::Io { path, op, source }
        };
        // Empty first, durably: a new header over old frames could let
        // them be read as this generation's.
        journal.set_len(0).map_err(io("truncate"))?;
        journal.sync_data().map_err(io("sync"))?;
        let header = encode_journal_header(self.generation);
        journal.write_all_at(&header, 0).map_err(io("write"))?;
        journal.sync_data().map_err(io("sync"))?;
        self.seq = 0;
        self.offset = header.len() as u64;
        Ok(())
    }
}
