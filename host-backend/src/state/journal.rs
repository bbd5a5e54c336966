// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The journal writer: group commit and compaction.
//!
//! Records are appended to an in-memory frame while the registry lock is
//! held, so the journal's order is the order in which the state changed.
//! One writer thread takes whatever has been appended, by every VM and the
//! control socket, writes it as one checksummed frame and syncs it once,
//! then starts on whatever arrived meanwhile. Whoever needs its answers
//! durable calls [`Journal::commit`] after dropping the registry lock and
//! waits for the frame that holds its record (group commit). The writer
//! never waits for a waiter to wake up before starting the next frame, so
//! back-to-back syncs keep the disk busy. Because the file is sequential, a
//! durable frame implies every earlier one is durable too: no answer is
//! released before the state it depends on (another VM's FREE, say) is on
//! disk.
//!
//! When the journal passes its size limit, [`Journal::compact`] has the
//! writer write the whole state as a new snapshot into the other snapshot
//! slot, then empty the journal under a new generation. Only descriptors
//! opened at start-up are used (pwrite, ftruncate, fdatasync), so the
//! seccomp filter need not allow opening files.

use std::fmt;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{error, info};

use crate::figures::{Histogram, JournalStats};
use crate::registry::record::{Answered, ChangeLog, Record, StateImage};

use super::codec::{
    encode_journal_header, encode_snapshot, put_batch, put_record, seal_commit, COMMIT_HEADER_LEN,
};
use super::files::{StateError, StateFiles};

/// Exit status when the state cannot be written (EX_IOERR): the daemon
/// stops rather than answer from state that is not on disk.
pub const EXIT_STATE_IO: i32 = 74;

/// What appenders, committers and the writer share.
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
    /// A compaction to carry out, with the image to write.
    compact: Option<StateImage>,
    /// The journal is being dropped: write what is left and stop.
    closing: bool,
    /// Bytes in the journal file.
    journal_len: u64,
    /// Frames written since start-up.
    frames: u64,
    /// Compactions since start-up.
    compactions: u64,
    /// Time to write and sync each frame.
    sync: Histogram,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for records, a compaction or the end.
    work: Condvar,
    /// Committers wait here for their record to be durable.
    written: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What only the writer thread touches.
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
    /// The journal file is written (with zeros past `offset`) up to here.
    prepared: u64,
    /// How far ahead of `offset` zeros are written.
    chunk: u64,
}

/// Zeros written ahead of the journal's end, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// How far ahead of its end the journal is zero-filled: overwriting blocks
/// that are already written and inside the file's size makes `fdatasync`
/// a data flush alone, where an append also commits the new size to the
/// file system's journal (about 20% slower here; see docs/state.md).
fn prepare_chunk(limit: u64) -> u64 {
    (limit / 16).clamp(64 << 10, 4 << 20)
}

/// The durable log of state changes. See the module docs.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    limit: u64,
    /// Where a compaction gets the state it writes ([`ImageSource`]).
    image_source: OnceLock<ImageSource>,
}

/// How a compaction gets the state to write: called with the compaction,
/// it takes the lock of whatever holds the state, and calls it with a
/// closure that builds the image under that lock (so every record appended
/// so far is in the image, and none is appended until it is written).
pub struct ImageSource(Box<dyn Fn(Compaction<'_>) + Send + Sync>);

/// A compaction waiting for its image: call it with the closure that
/// builds the image, under the lock that keeps the state still.
pub type Compaction<'a> = &'a dyn Fn(&dyn Fn() -> StateImage);

impl ImageSource {
    /// `source` takes the state's lock and hands the compaction its image.
    pub fn new(source: impl Fn(Compaction<'_>) + Send + Sync + 'static) -> Self {
        ImageSource(Box::new(source))
    }
}

impl fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImageSource")
    }
}

fn fresh_frame(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf.resize(COMMIT_HEADER_LEN, 0);
    buf
}

/// Stops the daemon: state on disk is no longer what the answers given
/// would need. A restart recovers from the last durable frame; requests
/// whose answers were held back are re-delivered by their frontends.
fn fatal(what: &dyn std::fmt::Display) -> ! {
    error!(
        "event=state-failure {what}; stopping so that no answer is given that is not on \
         disk (restart to recover from the last durable state)"
    );
    std::process::exit(EXIT_STATE_IO)
}

impl Journal {
    /// Starts generation `generation`: writes `image` as its snapshot into
    /// `slot`, empties the journal, and starts the writer thread. `limit`
    /// is the journal size past which [`Journal::needs_compaction`] says so.
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
            prepared: 0,
            chunk: prepare_chunk(limit),
        };
        disk.write_generation(image)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                frame: fresh_frame(Vec::new()),
                spare: Vec::new(),
                appended: 0,
                durable: 0,
                compact: None,
                closing: false,
                journal_len: disk.offset,
                frames: 0,
                compactions: 0,
                sync: Histogram::default(),
            }),
            work: Condvar::new(),
            written: Condvar::new(),
        });
        let path = disk.files.journal_path();
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&for_writer, disk))
            .map_err(|source| StateError::Io {
                path,
                op: "start the writer thread for",
                source,
            })?;
        Ok(Journal {
            shared,
            writer: Some(writer),
            limit,
            image_source: OnceLock::new(),
        })
    }

    /// Appends one record, encoded by `encode`; returns its ticket for
    /// [`Journal::commit`]. Call with the registry lock held.
    pub fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut p = self.shared.lock();
        encode(&mut p.frame);
        p.appended += 1;
        self.shared.work.notify_one();
        p.appended
    }

    /// The ticket of the latest record appended.
    pub fn latest(&self) -> u64 {
        self.shared.lock().appended
    }

    /// Returns once the record of `ticket`, and every one before it, is on
    /// disk. Never called with the registry lock held.
    pub fn commit(&self, ticket: u64) {
        let mut p = self.shared.lock();
        while p.durable < ticket {
            p = self
                .shared
                .written
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Figures for the metrics.
    pub fn stats(&self) -> JournalStats {
        let p = self.shared.lock();
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
        self.shared.lock().journal_len > self.limit
    }

    /// If the journal is still past its limit, replaces it by a snapshot of
    /// the state `image` returns, and returns once that is on disk. Call
    /// with the registry lock held, `image` reading under it: every record
    /// appended so far is reflected in the image, and none can be appended
    /// meanwhile. A caller that lost the race to another compaction does
    /// not build an image at all.
    pub fn compact(&self, image: impl FnOnce() -> StateImage) {
        if self.shared.lock().journal_len <= self.limit {
            return;
        }
        // Built without the journal's lock: the writer may be finishing a
        // frame, and its waiters should not wait for the image too.
        let image = image();
        let mut p = self.shared.lock();
        let done = p.compactions + 1;
        p.compact = Some(image);
        self.shared.work.notify_one();
        while p.compactions < done {
            p = self
                .shared
                .written
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Journal {
    /// Sets where compactions get the state from; until then, and for any
    /// later call, nothing is compacted or changed.
    pub fn set_image_source(&self, source: ImageSource) {
        let _ = self.image_source.set(source);
    }
}

impl ChangeLog for Journal {
    fn record(&self, record: &Record) {
        self.append(|out| put_record(out, record));
    }

    fn batch(&self, owner: u32, answers: &[Answered]) {
        self.append(|out| put_batch(out, owner, answers));
    }

    fn latest(&self) -> u64 {
        Journal::latest(self)
    }

    fn wait(&self, position: u64) {
        self.commit(position);
    }

    fn compact_if_due(&self) {
        if !self.needs_compaction() {
            return;
        }
        if let Some(source) = self.image_source.get() {
            (source.0)(&|image| self.compact(image));
        }
    }

    fn stats(&self) -> JournalStats {
        Journal::stats(self)
    }
}

impl Drop for Journal {
    /// Writes what is still pending and stops the writer (which closes the
    /// files and so releases the directory's lock).
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: one frame after another while records come in;
/// compactions when asked.
fn write_loop(shared: &Shared, mut disk: Disk) {
    let mut p = shared.lock();
    loop {
        if let Some(image) = p.compact.take() {
            // The image holds every record appended so far: the pending
            // frame is dropped, not written.
            let covered = p.appended;
            let spare = std::mem::take(&mut p.frame);
            drop(p);
            let started = Instant::now();
            let before = disk.offset;
            disk.generation += 1;
            disk.slot ^= 1;
            if let Err(e) = disk.write_generation(&image) {
                fatal(&e);
            }
            info!(
                "event=compact generation={} journal_bytes={before} owners={} ms={}",
                disk.generation,
                image.owners.len(),
                started.elapsed().as_millis()
            );
            p = shared.lock();
            p.frame = fresh_frame(spare);
            p.durable = p.durable.max(covered);
            p.journal_len = disk.offset;
            p.compactions += 1;
            shared.written.notify_all();
            continue;
        }
        if p.frame.len() > COMMIT_HEADER_LEN {
            let target = p.appended;
            let spare = fresh_frame(std::mem::take(&mut p.spare));
            let mut frame = std::mem::replace(&mut p.frame, spare);
            drop(p);
            let started = Instant::now();
            let journal_len = disk.write_frame(&mut frame);
            let took = started.elapsed();
            p = shared.lock();
            p.durable = p.durable.max(target);
            p.journal_len = journal_len;
            p.frames += 1;
            p.sync.observe(took);
            p.spare = frame;
            shared.written.notify_all();
            continue;
        }
        if p.closing {
            return;
        }
        p = shared.work.wait(p).unwrap_or_else(|e| e.into_inner());
    }
}

impl Disk {
    /// Writes zeros into the journal from `self.prepared` to `upto` (not
    /// synced: the caller's next sync covers them).
    fn zero_fill(&mut self, upto: u64) -> std::io::Result<()> {
        while self.prepared < upto {
            let n = usize::try_from(upto - self.prepared)
                .unwrap_or(usize::MAX)
                .min(ZEROS.len());
            let piece = ZEROS.get(..n).unwrap_or_default();
            self.files.journal.write_all_at(piece, self.prepared)?;
            self.prepared += n as u64;
        }
        Ok(())
    }

    /// Writes one frame at the end of the journal and syncs it; returns the
    /// journal's new length (its end, not counting the zeros ahead of it).
    fn write_frame(&mut self, frame: &mut [u8]) -> u64 {
        self.seq += 1;
        seal_commit(frame, self.generation, self.seq);
        let end = self.offset + frame.len() as u64;
        let written = self
            .files
            .journal
            .write_all_at(frame, self.offset)
            .and_then(|()| {
                // Past the zeros: write the next stretch in the same sync.
                if end > self.prepared {
                    self.prepared = end;
                    self.zero_fill(end + self.chunk)?;
                }
                Ok(())
            });
        if let Err(e) = written {
            let path = self.files.journal_path();
            fatal(&format!("{}: cannot write: {e}", path.display()));
        }
        if let Err(e) = self.files.journal.sync_data() {
            let path = self.files.journal_path();
            fatal(&format!("{}: cannot sync: {e}", path.display()));
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
        self.seq = 0;
        self.offset = header.len() as u64;
        self.prepared = self.offset;
        self.zero_fill(self.offset + self.chunk)
            .map_err(io("write"))?;
        self.files.journal.sync_data().map_err(io("sync"))?;
        Ok(())
    }
}
