// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `cargo xtask gen-docs [--check] [DIR]`: writes the man pages and shell
//! completions generated from the clap definitions into DIR (default:
//! `host-backend/packaging/`), or with `--check` only reports the files that
//! are stale there and exits 1 if there are any.
//!
//! A maintainer's tool: run it after changing a command-line option and
//! commit the result (host-backend's `tests/packaging.rs` fails until then).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use xtask::gen_docs::{stale_in, write_to};

/// Maintainer tasks of vpasid.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
enum Task {
    /// Generate the man pages and shell completions from the clap definitions.
    GenDocs {
        /// Only list the files that are missing or stale; exit 1 if any.
        #[arg(long)]
        check: bool,
        /// Where to write (default: host-backend/packaging).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Task::GenDocs { check, dir } = Task::parse();
    let dir = dir.unwrap_or_else(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new(".."));
        workspace.join("host-backend/packaging")
    });
    let result = if check {
        stale_in(&dir).map(|stale| {
            for p in &stale {
                println!("stale: {}", dir.join(p).display());
            }
            stale.is_empty()
        })
    } else {
        write_to(&dir).map(|written| {
            for p in &written {
                println!("wrote {}", p.display());
            }
            true
        })
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cargo xtask gen-docs: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
