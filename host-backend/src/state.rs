// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Durable state (`--state-dir`): the PASID space, owners, references,
//! quotas and each VM's last answered batch survive any crash, so a
//! restarted daemon never hands out a PASID a running VM still holds.
//!
//! The directory holds two snapshot slots (`snapshot.0`, `snapshot.1`), a
//! journal of the changes since the newer snapshot (`journal`), and `lock`
//! (an exclusive `flock`: one daemon per directory). Start-up loads the
//! newest valid snapshot, replays the journal on top of it ([`recover`]),
//! then writes the result as the next generation's snapshot and starts an
//! empty journal. `files` holds the directory, its lock and the reads
//! of start-up; [`journal`] has the write path (group commit and
//! compaction; [`Journal`] is the registry's change log); [`codec`] the
//! byte layout, which docs/state.md documents. What is recorded (records,
//! answers, the snapshot image) is the registry's own vocabulary
//! (`registry::record`): this module takes it as values and never reaches
//! into the registry.
//!
//! Damage is refused, never papered over: the one exception is the
//! unfinished tail of the journal's last write (a crash in mid-write), which
//! by construction held nothing that was acknowledged.

pub mod codec;
mod files;
mod journal;
mod recovery;

pub use files::{Loaded, LoadedCommit, StateError, StateFiles};
pub use journal::{ImageSource, Journal, EXIT_STATE_IO};
pub use recovery::{recover, Recovery};

/// Default `--journal-limit`: compaction rewrites at most this much.
pub const DEFAULT_JOURNAL_LIMIT: u64 = 64 << 20;
