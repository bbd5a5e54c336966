// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vhost-user-pasid: one global PASID space served to many VMs.
//!
//! Module map:
//! - [`pasid_space`]: the allocator: lowest-free search, references, owners,
//!   quotas.
//! - [`registry`]: the space plus per-VM records; guest requests and operator
//!   commands both land here.
//! - [`request`]: turns one descriptor chain into a request and writes its
//!   response, validating everything the guest wrote.
//! - [`vhu_vpasid`]: the `VhostUserBackend` of one VM session.
//! - [`slot`]: a VM slot's socket served in a loop, one session after another.
//! - [`control`], [`control_protocol`]: the operator's control socket.
//! - [`config`]: the command line; [`daemon`]: start-up and shutdown.
//! - [`socket`], [`rate_limit`]: small helpers.

pub mod config;
pub mod control;
pub mod control_protocol;
pub mod daemon;
pub mod pasid_space;
pub mod rate_limit;
pub mod registry;
pub mod request;
pub mod slot;
pub mod socket;
pub mod vhu_vpasid;
