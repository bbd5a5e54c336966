// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A crate's module graph, read from its source, and a cycle finder.
//!
//! Used by `host-backend/tests/module_graph.rs` and, through `#[path]`,
//! by `qemu-tests/tests/module_graph.rs`: one checker for every crate.
//!
//! Every module is a node, submodules included (`src/a/b.rs` is `a::b`).
//! Every path a file names, outside comments and `#[cfg(test)]` or
//! `#[cfg(doc)]` items, is an edge from the file's module to the deepest
//! module the path reaches: `crate::a::b::Item`, `super::b::Item` and
//! `self::b` resolve from the file's place, and a path that starts with
//! the name of one of the file's own submodules (`b::Item` in `a.rs`)
//! reaches that submodule. `mod b;` itself is no edge: declaring a child
//! is not using it. The crate roots (`lib.rs`, `main.rs`) and `bin/` sit
//! above every module and are not nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`a::b`) to the module paths it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src` holds, as segments, or `None` for the
/// crate roots and the binaries.
pub fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap().to_string())
        .collect();
    if matches!(parts.first().map(String::as_str), Some("bin")) {
        return None;
    }
    let last = parts.pop()?.trim_end_matches(".rs").to_string();
    if parts.is_empty() && (last == "lib" || last == "main") {
        return None;
    }
    if last != "mod" {
        parts.push(last);
    }
    Some(parts)
}

/// The source without its line comments (doc links are not imports).
pub fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The source without its `#[cfg(test)]` and `#[cfg(doc)]` items: the
/// attribute and the item after it, up to its closing brace (or
/// semicolon, for `mod x;` and `use x;`).
pub fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = ["#[cfg(test)]", "#[cfg(doc)]"]
            .iter()
            .filter_map(|a| rest.find(a))
            .min();
        let Some(at) = next else { break };
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths of a use tree at the start of `text`: `a::b::{c, d::e}`
/// gives `a::b::c` and `a::b::d::e`.
fn use_tree(text: &str) -> Vec<Vec<String>> {
    /// Parses one tree under `prefix`; returns the bytes it used.
    fn tree(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
        let skip = |at: usize| at + (text[at..].len() - text[at..].trim_start().len());
        let mut path = prefix.to_vec();
        let mut at = 0;
        loop {
            at = skip(at);
            if text[at..].starts_with('{') {
                at += 1;
                loop {
                    at = skip(at);
                    if text[at..].starts_with('}') {
                        return at + 1;
                    }
                    at += tree(&text[at..], &path, out);
                    at = skip(at);
                    if text[at..].starts_with(',') {
                        at += 1;
                    } else {
                        return at + usize::from(text[at..].starts_with('}'));
                    }
                }
            }
            let name: String = text[at..].chars().take_while(|c| is_ident(*c)).collect();
            if name.is_empty() {
                break;
            }
            at += name.len();
            path.push(name);
            if text[at..].starts_with("::") {
                at += 2;
            } else {
                break;
            }
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
        at
    }
    let mut out = Vec::new();
    tree(text, &[], &mut out);
    out
}

/// The paths `text` (the source of module `me`) names, resolved to
/// absolute segment lists: `crate::`, `super::`, `self::` and paths
/// that start with one of `children` (the names of `me`'s submodules).
pub fn named_paths(text: &str, me: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    while i < chars.len() {
        let (at, c) = chars[i];
        let starts_word =
            is_ident(c) && (i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':'));
        if !starts_word {
            i += 1;
            continue;
        }
        let word: String = text[at..].chars().take_while(|c| is_ident(*c)).collect();
        let after = &text[at + word.len()..];
        i += word.chars().count();
        if !after.starts_with("::") {
            continue;
        }
        let (base, tail): (Vec<String>, &str) = match word.as_str() {
            "crate" => (Vec::new(), &after[2..]),
            "self" => (me.to_vec(), &after[2..]),
            "super" => {
                let mut base = me.to_vec();
                base.pop();
                let mut tail = &after[2..];
                while let Some(more) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = more;
                }
                (base, tail)
            }
            name if children.contains(name) => (me.to_vec(), &text[at..]),
            _ => continue,
        };
        for path in use_tree(tail) {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
    }
    out
}

/// The module graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let files: Vec<(Vec<String>, PathBuf)> = files
        .into_iter()
        .filter_map(|f| Some((module_of(src, &f)?, f)))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (me, file) in &files {
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == me.len() + 1 && m.starts_with(me))
            .filter_map(|m| m.last().cloned())
            .collect();
        let text = without_tests(&without_comments(&std::fs::read_to_string(file).unwrap()));
        let edges = graph.entry(me.join("::")).or_default();
        for path in named_paths(&text, me, &children) {
            // The deepest module the path reaches.
            let Some(target) = (1..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|p| modules.contains(*p))
            else {
                continue;
            };
            if target != me.as_slice() {
                edges.insert(target.join("::"));
            }
        }
    }
    graph
}

/// The graph with every module folded into its top-level module.
pub fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut out = Graph::new();
    for (module, uses) in graph {
        let edges = out.entry(top(module)).or_default();
        edges.extend(uses.iter().map(|u| top(u)).filter(|u| *u != top(module)));
    }
    out
}

/// A cycle in the graph, if it has one.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

/// Every cycle's first sighting, one per strongly-connected knot, for a
/// failure message that lists them all rather than the first alone.
pub fn all_cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut graph = graph.clone();
    let mut cycles = Vec::new();
    while let Some(cycle) = find_cycle(&graph) {
        // Cut the cycle's last edge and look again.
        let (from, to) = (&cycle[cycle.len() - 2], &cycle[cycle.len() - 1]);
        graph.get_mut(from).unwrap().remove(to);
        cycles.push(cycle);
    }
    cycles
}

/// Prints the graph (`-- --nocapture` shows it) and panics on a cycle,
/// naming each one found.
pub fn assert_acyclic(what: &str, graph: &Graph) {
    for (module, uses) in graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    let cycles = all_cycles(graph);
    assert!(
        cycles.is_empty(),
        "import cycles among {what}:\n{}",
        cycles
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
