// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The daemon's module graph has no cycle: each module of `src/`,
//! submodules included, may use the modules below it, never one that uses
//! it back.
//!
//! The graph is read from the source itself (see `graph/mod.rs` for what
//! counts as an edge). `cargo test --test module_graph -- --nocapture`
//! prints it.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod graph;

use std::collections::BTreeSet;
use std::path::Path;

use graph::{all_cycles, assert_acyclic, find_cycle, named_paths, top_level, without_tests, Graph};

fn src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph::graph(src());
    assert!(graph.len() > 5, "too few modules found: {graph:?}");
    assert!(
        graph.contains_key("pasid_space::holders") && graph.contains_key("registry::record"),
        "submodules are not in the graph: {graph:?}"
    );
    assert_acyclic("host-backend's modules", &graph);
}

/// The top-level modules, each with its submodules folded in, import one
/// way too: a submodule of `a` never uses `b` while `b` uses `a`.
#[test]
fn the_top_level_graph_has_no_cycle() {
    let graph = top_level(&graph::graph(src()));
    assert!(graph.len() > 5, "too few modules found: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

/// The checker itself finds a cycle, through a brace group too, and
/// ignores test-only code.
#[test]
fn the_checker_sees_cycles_and_skips_tests() {
    let text = "use crate::{a, b::c};\nfn f() { crate::d::e(); }\n\
                #[cfg(test)]\nmod tests { use crate::z; }\n";
    let names: BTreeSet<String> = named_paths(&without_tests(text), &[], &BTreeSet::new())
        .into_iter()
        .map(|p| p[0].clone())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a", "b", "d"].map(String::from)
    );
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
    assert_eq!(all_cycles(&graph).len(), 1);
}

/// Submodule paths resolve from the file's place: `super::`, `self::`,
/// nested groups, and a path through one of the file's own submodules;
/// `#[cfg(doc)]` imports are no edges.
#[test]
fn the_checker_resolves_submodule_paths() {
    let me = ["p".to_string(), "types".to_string()];
    let text = "use super::holders::{Slot, deep::{X, Y}};\nuse super::Space;\n\
                #[cfg(doc)]\nuse super::doc_only::Z;\n\
                fn f() { self::inner::g(); sub::h(); other::k(); a::sub::m(); }\n";
    let children: BTreeSet<String> = ["sub".to_string()].into();
    let paths: Vec<String> = named_paths(&without_tests(text), &me, &children)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "p::holders::Slot",
            "p::holders::deep::X",
            "p::holders::deep::Y",
            "p::Space",
            "p::types::inner::g",
            "p::types::sub::h",
        ]
        .map(String::from)
    );
}
