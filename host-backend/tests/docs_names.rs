// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The docs name only what exists, and name everything an operator types:
//! - every `pasidctl` subcommand appears as `pasidctl NAME` in README.md or
//!   docs/operations.md;
//! - every option of the daemon appears in README.md or docs/operations.md;
//! - every code name docs/architecture.md cites in backticks (a source file,
//!   a module path, a function or a type) exists in the project's sources.
//!
//! Both lists come from the clap definitions the binaries use, so a new
//! subcommand or option fails this test until the docs mention it.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use vhost_user_pasid::config::Args;
use vhost_user_pasid::ctl_cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// README.md and docs/operations.md: where an operator looks.
fn operator_docs() -> String {
    read("README.md") + &read("docs/operations.md")
}

#[test]
fn every_pasidctl_subcommand_is_documented() {
    let docs = operator_docs();
    let missing: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| name != "help" && !docs.contains(&format!("pasidctl {name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "pasidctl subcommands that neither README.md nor docs/operations.md shows as \
         `pasidctl NAME`: {missing:?}"
    );
}

#[test]
fn every_daemon_option_is_documented() {
    let docs = operator_docs();
    let options: Vec<String> = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|o| o != "--help" && o != "--version")
        .collect();
    assert!(options.len() > 10, "the daemon's options: {options:?}");
    let missing: Vec<&String> = options.iter().filter(|o| !docs.contains(*o)).collect();
    assert!(
        missing.is_empty(),
        "daemon options that neither README.md nor docs/operations.md mentions: {missing:?}"
    );
}

/// Every file of the project's sources whose text a cited name may live in.
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "fuzz" {
                source_files(&path, out);
            }
        } else if ["rs", "c", "h", "sh"]
            .iter()
            .any(|e| path.extension().is_some_and(|x| x == *e))
            || name == "Kbuild"
            || name == "run"
        {
            out.push(path);
        }
    }
}

/// Whether `c`, next to a match, ends it as a word (no identifier
/// character).
fn boundary(c: Option<char>) -> bool {
    !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `word` is defined in one of `texts` (path, text): a Rust item
/// (`fn`, `struct`, `enum`, `trait`, `type`, `mod`, `const`, `static`,
/// `macro_rules!`) or module file, an enum variant, or a C function,
/// struct or macro (kernel style: a definition starts its line).
fn defined(word: &str, texts: &[(String, String)]) -> bool {
    let item = |line: &str| {
        let line = line.trim_start();
        let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
        let line = line.strip_prefix("pub ").unwrap_or(line);
        [
            "fn ",
            "struct ",
            "enum ",
            "trait ",
            "type ",
            "mod ",
            "const ",
            "static ",
            "macro_rules! ",
            "#define ",
            "",
        ]
        .iter()
        .any(|kw| {
            line.strip_prefix(kw)
                .and_then(|rest| rest.strip_prefix(word))
                .is_some_and(|rest| {
                    let next = rest.chars().next();
                    if kw.is_empty() {
                        // An enum variant.
                        matches!(next, Some(',' | '(' | ' ' | '{')) && !rest.contains(';')
                    } else {
                        boundary(next)
                    }
                })
        })
    };
    let c_definition = |line: &str| {
        // `static int vpasid_probe(struct ...` or `int vpasid_probe(`.
        !line.starts_with(char::is_whitespace)
            && line.match_indices(word).any(|(at, _)| {
                boundary(line[..at].chars().next_back()) && line[at + word.len()..].starts_with('(')
            })
    };
    texts.iter().any(|(path, text)| {
        let file = Path::new(path).file_stem().is_some_and(|s| s == word);
        let c = path.ends_with(".c") || path.ends_with(".h");
        file || text.lines().any(|l| {
            item(l) || (c && (c_definition(l) || l.starts_with(&format!("struct {word} {{"))))
        })
    })
}

/// Names architecture.md explains that the project neither defines nor
/// calls: the IOASID framework's own internals, the API of kernels the
/// driver does not target (5.11-5.17 had `ioasid_get`/`ioasid_put`), and
/// vhost-user-backend's private session handler (why the daemon proxies).
const OUTSIDE_APIS: [&str; 4] = ["in_atomic", "ioasid_get", "ioasid_put", "VhostUserHandler"];

/// Whether `word` appears in a line of code (not a comment) of `texts`.
fn used_in_code(word: &str, texts: &[(String, String)]) -> bool {
    texts.iter().any(|(_, text)| {
        text.lines().any(|line| {
            let t = line.trim_start();
            !(t.starts_with("//") || t.starts_with('*') || t.starts_with("/*"))
                && line.match_indices(word).any(|(at, _)| {
                    boundary(line[..at].chars().next_back())
                        && boundary(line[at + word.len()..].chars().next())
                })
        })
    })
}

/// Backticked spans of `text` that look like code names: a file name with
/// a source extension, or an identifier path with `::`, `_` or `()`, or a
/// CamelCase identifier. Command lines, options and values are skipped.
fn cited_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 || span.is_empty() {
            continue;
        }
        let ident = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let bare = span.trim_end_matches("()");
        let is_file = [".rs", ".c", ".h"].iter().any(|e| bare.ends_with(e))
            && bare.split('/').all(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            });
        let parts: Vec<&str> = bare.split("::").collect();
        let is_path = parts.iter().all(|p| ident(p))
            && (parts.len() > 1
                || span.ends_with("()")
                || (bare.contains('_') && bare.chars().any(|c| c.is_ascii_lowercase()))
                || (bare.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && bare.chars().any(|c| c.is_ascii_lowercase())));
        if is_file || is_path {
            names.insert(bare.to_string());
        }
    }
    names
}

#[test]
fn architecture_names_exist_in_the_sources() {
    let mut files = Vec::new();
    for dir in [
        "host-backend",
        "guest-driver",
        "protocol",
        "qemu-tests",
        "xtask",
    ] {
        source_files(&repo().join(dir), &mut files);
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.strip_prefix(repo()).unwrap().display().to_string(),
                std::fs::read_to_string(f).unwrap_or_default(),
            )
        })
        .collect();
    let names = cited_names(&read("docs/architecture.md"));
    assert!(names.len() > 20, "names cited: {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            if [".rs", ".c", ".h"].iter().any(|e| name.ends_with(e)) {
                // A file: some source path ends with it.
                !texts.iter().any(|(path, _)| path.ends_with(name.as_str()))
            } else {
                // An item path: every segment is defined, or used in code
                // (a crate's or the kernel's API the project calls).
                !name
                    .split("::")
                    .all(|part| defined(part, &texts) || used_in_code(part, &texts))
                    && !OUTSIDE_APIS.contains(&name.as_str())
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md cites names no source defines or uses: {missing:?}"
    );
}
