// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! qemu-tests' module graph has no cycle: each module of `src/` may use
//! the modules below it, never one that uses it back. The checker is
//! host-backend's (`host-backend/tests/graph/mod.rs`), one for the whole
//! workspace; `-- --nocapture` prints the graph. Needs no guest.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, clippy::string_slice)]

// Only part of the checker is needed here.
#[allow(dead_code)]
#[path = "../../host-backend/tests/graph/mod.rs"]
mod graph;

use std::path::Path;

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph::graph(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")));
    for module in ["guest", "qemu", "config", "daemon", "vpasid"] {
        assert!(graph.contains_key(module), "{module} missing: {graph:?}");
    }
    graph::assert_acyclic("qemu-tests' modules", &graph);
}
