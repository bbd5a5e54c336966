// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The state directory: its files, its lock, and what start-up reads
//! from it (the newest valid snapshot and the journal's commits).

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::{info, warn};
use rustix::fs::{flock, FlockOperation};

use super::codec::{
    claimed_seq, decode_journal_header, decode_snapshot, get_records, read_commit, SnapshotProblem,
    JOURNAL_HEADER_LEN,
};
use crate::registry::record::{Record, StateImage};

/// Why the state could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created or opened.
    #[error("state directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another daemon holds the directory.
    #[error(
        "state directory {} is in use by another vhost-user-pasid (it holds the lock on {}); \
         two daemons on one state would hand out the same PASIDs",
        dir.display(), dir.join("lock").display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file could not be opened, read, written or synced.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The state is damaged or inconsistent.
    #[error(
        "{}: {problem}; refusing to start rather than risk handing out a PASID twice \
         (docs/state.md, \"Damaged state\")",
        path.display()
    )]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// The open files of a state directory.
#[derive(Debug)]
pub struct StateFiles {
    dir: PathBuf,
    /// Held for the life of the process: the `flock` is the lock.
    _lock: File,
    snapshots: [File; 2],
    pub(super) journal: File,
}

/// A journal frame read back at start-up.
#[derive(Debug)]
pub struct LoadedCommit {
    /// Its sequence number within the generation.
    pub seq: u64,
    /// Its offset in the journal file.
    pub offset: u64,
    /// Its records.
    pub records: Vec<Record>,
}

/// What start-up found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest valid snapshot (empty for a new directory).
    pub image: StateImage,
    /// Its generation; 0 for a new directory.
    pub generation: u64,
    /// The slot it was read from.
    pub slot: usize,
    /// Journal frames to replay on top of it, in order.
    pub commits: Vec<LoadedCommit>,
}

fn open_rw(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            op: "open",
            source,
        })
}

fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, 0).map_err(io)?;
    Ok(buf)
}

impl StateFiles {
    /// Creates (mode 0700) or opens the directory, takes its lock and opens
    /// its files, creating the missing ones.
    pub fn open(dir: &Path) -> Result<StateFiles, StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        let lock = open_rw(&dir.join("lock"))?;
        // Held until the descriptor closes. (rustix, not nix: nix's flock
        // is a guard that unlocks on drop with a system call the seccomp
        // filter does not allow.)
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StateError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(StateError::Io {
                    path: dir.join("lock"),
                    op: "lock",
                    source: e.into(),
                })
            }
        }
        let files = StateFiles {
            dir: dir.to_path_buf(),
            snapshots: [
                open_rw(&dir.join("snapshot.0"))?,
                open_rw(&dir.join("snapshot.1"))?,
            ],
            journal: open_rw(&dir.join("journal"))?,
            _lock: lock,
        };
        // Make the new names themselves durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StateError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(files)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of snapshot slot `slot` (0 or 1).
    pub fn snapshot_path(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("snapshot.{}", slot & 1))
    }

    pub(super) fn snapshot(&self, slot: usize) -> &File {
        match slot & 1 {
            0 => &self.snapshots[0],
            _ => &self.snapshots[1],
        }
    }

    /// Path of the journal.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal")
    }

    fn corrupt(path: PathBuf, problem: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path,
            problem: problem.into(),
        }
    }

    /// Reads the newest valid snapshot and the journal frames that follow
    /// it. A journal tail cut short by a crash is left out (with a warning;
    /// the next generation's start empties the journal); anything else
    /// that does not check out is an error.
    pub fn load(&self) -> Result<Loaded, StateError> {
        let mut valid: Option<(usize, u64, StateImage)> = None;
        let mut damaged: Vec<(usize, SnapshotProblem)> = Vec::new();
        for slot in 0..2 {
            let path = self.snapshot_path(slot);
            let bytes = read_all(self.snapshot(slot), &path)?;
            if bytes.is_empty() {
                continue;
            }
            match decode_snapshot(&bytes) {
                Ok((generation, image)) => {
                    if valid.as_ref().is_none_or(|(_, g, _)| generation > *g) {
                        valid = Some((slot, generation, image));
                    }
                }
                Err(problem) => damaged.push((slot, problem)),
            }
        }
        let journal = read_all(&self.journal, &self.journal_path())?;
        let journal_generation = if journal.len() >= JOURNAL_HEADER_LEN {
            Some(
                decode_journal_header(&journal)
                    .map_err(|e| Self::corrupt(self.journal_path(), e.to_string()))?,
            )
        } else {
            None
        };

        let Some((slot, generation, image)) = valid else {
            if let Some((slot, problem)) = damaged.into_iter().next() {
                return Err(Self::corrupt(
                    self.snapshot_path(slot),
                    format!("no valid snapshot: {}", problem.error),
                ));
            }
            if let Some(g) = journal_generation {
                return Err(Self::corrupt(
                    self.journal_path(),
                    format!(
                        "journal of generation {g} but no snapshot (were snapshot files deleted?)"
                    ),
                ));
            }
            return Ok(Loaded::default());
        };

        for (bad, problem) in &damaged {
            let path = self.snapshot_path(*bad);
            match problem.generation {
                // Compaction writes the newer generation's snapshot before
                // the journal moves on: if the journal is still at ours,
                // that write never finished.
                Some(g) if g > generation && journal_generation == Some(generation) => warn!(
                    "event=state-repair {} is an unfinished snapshot of generation {g} ({}); \
                     using {} (generation {generation}) and its journal",
                    path.display(),
                    problem.error,
                    self.snapshot_path(slot).display()
                ),
                Some(g) if g > generation => {
                    return Err(Self::corrupt(
                        path,
                        format!("snapshot of generation {g} is damaged: {}", problem.error),
                    ))
                }
                _ => warn!(
                    "event=state-repair {} is damaged ({}) but older than {} (generation \
                     {generation}); it will be overwritten",
                    path.display(),
                    problem.error,
                    self.snapshot_path(slot).display()
                ),
            }
        }

        let commits = match journal_generation {
            None if !journal.is_empty() => {
                warn!(
                    "event=state-repair {} has an unfinished header ({} bytes) from an \
                     interrupted compaction; it holds no records",
                    self.journal_path().display(),
                    journal.len()
                );
                Vec::new()
            }
            None => Vec::new(),
            Some(g) if g < generation => {
                info!(
                    "event=state {} is of generation {g}, older than the snapshot's \
                     {generation}: its records are in the snapshot",
                    self.journal_path().display()
                );
                Vec::new()
            }
            Some(g) if g > generation => {
                return Err(Self::corrupt(
                    self.journal_path(),
                    format!(
                        "journal of generation {g} is newer than the newest valid snapshot \
                         ({}, generation {generation}); the snapshot it follows is missing \
                         or damaged",
                        self.snapshot_path(slot).display()
                    ),
                ))
            }
            Some(_) => self.read_frames(&journal, generation)?,
        };
        Ok(Loaded {
            image,
            generation,
            slot,
            commits,
        })
    }

    /// Reads the journal's frames after the header, in sequence.
    fn read_frames(
        &self,
        journal: &[u8],
        generation: u64,
    ) -> Result<Vec<LoadedCommit>, StateError> {
        let path = self.journal_path();
        let mut commits = Vec::new();
        let mut offset = JOURNAL_HEADER_LEN;
        let mut expected = 1u64;
        while let Some(rest) = journal.get(offset..).filter(|r| !r.is_empty()) {
            let Some(commit) = read_commit(rest, generation) else {
                // The writer keeps zeros ahead of the last frame: all zeros
                // from here on is the clean end.
                let Some(last) = rest.iter().rposition(|&b| b != 0) else {
                    break;
                };
                // Torn or damaged. Only the last write may be torn: any
                // whole frame after this point means damage in the middle.
                if let Some(at) = later_frame(journal, offset + 1, generation, expected) {
                    return Err(Self::corrupt(
                        path,
                        format!(
                            "damaged frame at byte {offset} is followed by a valid frame at \
                             byte {at}: the journal was damaged after it was written"
                        ),
                    ));
                }
                warn!(
                    "event=state-repair {}: dropping {} bytes at byte {offset}: the unfinished \
                     last write of a crash (never acknowledged to any guest)",
                    path.display(),
                    last + 1
                );
                break;
            };
            if commit.seq != expected {
                return Err(Self::corrupt(
                    path,
                    format!(
                        "frame at byte {offset} has sequence number {}, expected {expected}",
                        commit.seq
                    ),
                ));
            }
            let records = get_records(commit.payload).map_err(|e| {
                Self::corrupt(
                    path.clone(),
                    format!("frame {} at byte {offset}: {e}", commit.seq),
                )
            })?;
            commits.push(LoadedCommit {
                seq: commit.seq,
                offset: offset as u64,
                records,
            });
            offset += commit.len;
            expected += 1;
        }
        Ok(commits)
    }
}

/// The offset of a whole, valid frame of `generation` with a sequence
/// number of at least `min_seq` starting at or after `from`, if any.
fn later_frame(journal: &[u8], from: usize, generation: u64, min_seq: u64) -> Option<usize> {
    (from..journal.len()).find(|&at| {
        let Some(rest) = journal.get(at..) else {
            return false;
        };
        // A plausible sequence number first (cheap); the checksum decides.
        claimed_seq(rest).is_some_and(|seq| seq >= min_seq && seq - min_seq < journal.len() as u64)
            && read_commit(rest, generation).is_some()
    })
}
