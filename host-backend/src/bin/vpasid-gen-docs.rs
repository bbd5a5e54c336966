// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vpasid-gen-docs [--check] [DIR]`: writes the man pages and shell
//! completions generated from the clap definitions into DIR (default: this
//! package's `packaging/` directory), or with `--check` only reports the
//! files that are stale there and exits 1 if there are any.
//!
//! A maintainer's tool: run it after changing a command-line option and
//! commit the result (`tests/packaging.rs` fails until then).

use std::path::PathBuf;
use std::process::ExitCode;

use vhost_user_pasid::gen_docs::{stale_in, write_to};

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: vpasid-gen-docs [--check] [DIR]");
                return ExitCode::SUCCESS;
            }
            _ => dir = PathBuf::from(arg),
        }
    }
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
            eprintln!("vpasid-gen-docs: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
