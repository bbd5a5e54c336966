// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest driver's files form layers: `guest-driver/check-layers.sh`
//! (which `guest-driver/build.sh` runs before every build) passes on the
//! driver as it is, and fails, naming the circle, on a tree whose files
//! call each other in one, so that the check can fail at all. Needs only
//! bash and perl.
// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests has a parent")
        .join("guest-driver")
}

fn check_layers(dir: &Path) -> (Output, String) {
    let out = Command::new("bash")
        .arg(driver().join("check-layers.sh"))
        .arg(dir)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Every file of `virtio_pasid-y` in the Kbuild, in the order
/// check-layers.sh prints them (top layer first).
fn printed_files(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_driver_has_no_call_circle() {
    let (out, text) = check_layers(&driver());
    assert!(out.status.success(), "{text}");
    let files = printed_files(&text);
    assert!(files.len() >= 10, "{text}");
    // The transport and the array helpers are leaves, the device on top.
    assert_eq!(
        files.first().map(String::as_str),
        Some("vpasid_device.c"),
        "{text}"
    );
    for leaf in ["vpasid_transport.c", "vpasid_ids.c"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(leaf)
                && l.trim_end().ends_with("-> (nothing)")),
            "{leaf} calls into another file:\n{text}"
        );
    }
    // Each file calls only files printed after it.
    for line in text.lines().skip(1) {
        let (from, to) = line.split_once("->").unwrap();
        let at = files.iter().position(|f| f == from.trim()).unwrap();
        for callee in to.split_whitespace().filter(|c| *c != "(nothing)") {
            let below = files.iter().position(|f| f == callee).unwrap();
            assert!(
                below > at,
                "{} calls {callee} above it:\n{text}",
                from.trim()
            );
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Three files calling round: a -> b -> c -> a. A pointer to a function
/// (a completion) and a name in a comment or string are no calls.
#[test]
fn a_call_circle_fails_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    write(t, "Kbuild", "obj-m += m.o\nm-y := a.o b.o \\\n\tc.o\n");
    write(
        t,
        "a.c",
        "int a_top(void)\n{\n\treturn b_mid();\n}\n\nvoid a_cb(void)\n{\n}\n",
    );
    write(t, "b.c", "int b_mid(void)\n{\n\treturn c_low();\n}\n");
    write(
        t,
        "c.c",
        "static void (*cb)(void) = a_cb;\n/* a_top() */\nint c_low(void)\n{\n\tcb();\n\treturn 0;\n}\n",
    );
    // No circle yet: c only takes a's address.
    let kbuild = std::fs::read_to_string(t.join("Kbuild")).unwrap();
    write(t, "Kbuild", &kbuild.replace("m-y", "virtio_pasid-y"));
    let (out, text) = check_layers(t);
    assert!(out.status.success(), "{text}");
    assert_eq!(printed_files(&text), ["a.c", "b.c", "c.c"], "{text}");

    // c calls a: the circle closes.
    write(
        t,
        "c.c",
        "int c_low(void)\n{\n\tconst char *s = \"b_mid()\";\n\n\treturn a_top() + !s;\n}\n",
    );
    let (out, text) = check_layers(t);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("call circle: a.c -> b.c -> c.c -> a.c"),
        "{text}"
    );
}
