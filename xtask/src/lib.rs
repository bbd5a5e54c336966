// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Maintainer tasks of vpasid, run as `cargo xtask TASK` (the alias is in
//! `.cargo/config.toml`). Nothing here ships: the daemon and `pasidctl` do
//! not link it.
//!
//! - [`gen_docs`]: man pages and shell completions generated from the clap
//!   definitions, committed in `host-backend/packaging/`
//!   (`cargo xtask gen-docs`).

pub mod gen_docs;
