// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vhost-user-pasid: one global PASID space served to many VMs.
//!
//! Module map:
//! - [`pasid_space`]: the allocator: lowest-free search, references, owners,
//!   quotas.
//! - [`registry`]: the space plus per-VM records; guest requests
//!   (`registry::guest`) and operator commands (`registry::operator`) both
//!   land here, listings and figures are read from `registry::views` (the
//!   values they show in `registry::view`), and replayed requests get
//!   their first answer.
//! - [`request`]: turns one descriptor chain into a request and writes its
//!   response, validating everything the guest wrote; the PASID lists and
//!   answers it carries are `pasid_protocol::{PasidList, Answer}`, which
//!   the registry, its records and the state codec share.
//! - [`vhu_vpasid`]: the `VhostUserBackend` of one VM session.
//! - [`slot`]: a VM slot's socket served in a loop, one session after another.
//! - [`control`], [`control_protocol`]: the operator's control socket;
//!   [`ctl_cli`]: the command line of `pasidctl`, its client;
//!   [`qmp`], [`reattach`]: `pasidctl reattach`'s QMP client and the
//!   re-plug of a VM's device through it.
//! - [`metrics`]: OpenMetrics text through `prometheus-client`
//!   (`metrics::text`), the optional loopback HTTP listener
//!   (`metrics::http`) and the `process_*` metrics;
//!   [`scrape`]: one scrape (control command `metrics`, HTTP), the
//!   registry's metric families plus a collector over its figures at
//!   scrape time; [`figures`]: the duration histogram, the journal's
//!   figures and labels, so the registry never imports `metrics`.
//! - [`state`]: durable state (`--state-dir`): the directory and its
//!   start-up reads (`state::files`), snapshot, journal with group commit
//!   and compaction, recovery. It records the registry's
//!   changes ([`registry::record`]) as values handed to it through
//!   [`registry::record::ChangeLog`]; the registry never imports it.
//! - [`config`]: the command line; [`daemon`]: start-up and shutdown.
//! - [`sandbox`]: containment after set-up: socket hand-over, privilege
//!   drop (`--user`), seccomp allow-list (`--seccomp`); see docs/security.md.
//! - [`logfmt`]: free-form values in log lines, quoted when they need it.
//! - [`qemu_watch`]: the QEMU process of each connection (peer
//!   credentials), bound to the VM's PASIDs in the registry, and a thread
//!   polling their pidfds: an exit ends the VM's hold-over at once.
//! - [`takeover`]: every session through a proxy that keeps it in
//!   systemd's descriptor store, and the take-over of stored sessions at
//!   start; [`session`]: vhost-user framing and the session image;
//!   [`fdstore`]: the notify socket and the descriptors passed at start.
//! - [`socket`], [`rate_limit`]: small helpers (the latter also holds the
//!   per-VM request token bucket, `--rate-limit`).
//!
//! No module imports one that imports it back, submodules included
//! (`tests/module_graph.rs`).
//!
//! Nothing here may panic on guest or operator input: `unwrap`, `expect`,
//! `panic!` and unchecked indexing are denied outside tests.

#![deny(clippy::indexing_slicing)]

pub mod config;
pub mod control;
pub mod control_protocol;
pub mod ctl_cli;
pub mod daemon;
pub mod fdstore;
pub mod figures;
pub mod logfmt;
pub mod metrics;
pub mod pasid_space;
pub mod qemu_watch;
pub mod qmp;
pub mod rate_limit;
pub mod reattach;
pub mod registry;
pub mod request;
pub mod sandbox;
pub mod sched_slice;
pub mod scrape;
pub mod session;
pub mod slot;
pub mod socket;
pub mod state;
pub mod takeover;
pub mod vhu_vpasid;
