// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vhost-user-pasid`: command line entry point. See the library crate for
//! the module map.

#![deny(clippy::indexing_slicing)]

use std::process::ExitCode;

use clap::Parser;
use log::error;
use vhost_user_pasid::config::{Args, Config};
use vhost_user_pasid::daemon::{init_logger, start_backend};

/// What `--print-capabilities` prints (QEMU's vhost-user backend conventions).
const CAPABILITIES: &str = r#"{
  "type": "pasid",
  "features": []
}"#;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logger(args.log_level);
    if args.print_capabilities {
        println!("{CAPABILITIES}");
        return ExitCode::SUCCESS;
    }
    match Config::try_from(args)
        .map_err(|e| e.to_string())
        .and_then(|c| start_backend(c).map_err(|e| e.to_string()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
