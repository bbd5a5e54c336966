// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Compiles `include/virtio_pasid.h` with the system C compiler and checks
//! that every size, offset and constant equals the Rust definition, and that
//! the header defines nothing the Rust side does not know.
// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use pasid_protocol::*;

fn header_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/virtio_pasid.h")
}

/// What Rust says each C expression must evaluate to.
fn expected() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: usize| {
        m.insert(k.to_string(), v as u64);
    };
    put("sizeof(struct virtio_pasid_req)", REQUEST_SIZE);
    put("sizeof(struct virtio_pasid_resp)", RESPONSE_SIZE);
    put("sizeof(struct virtio_pasid_config)", CONFIG_SIZE);
    put(
        "offsetof(struct virtio_pasid_req, opcode)",
        offset_of!(RawRequest, opcode),
    );
    put(
        "offsetof(struct virtio_pasid_req, flags)",
        offset_of!(RawRequest, flags),
    );
    put(
        "offsetof(struct virtio_pasid_req, pasid)",
        offset_of!(RawRequest, pasid),
    );
    put(
        "offsetof(struct virtio_pasid_req, tag)",
        offset_of!(RawRequest, tag),
    );
    put(
        "offsetof(struct virtio_pasid_req, min)",
        offset_of!(RawRequest, min),
    );
    put(
        "offsetof(struct virtio_pasid_req, max)",
        offset_of!(RawRequest, max),
    );
    put(
        "offsetof(struct virtio_pasid_resp, status)",
        offset_of!(Response, status),
    );
    put(
        "offsetof(struct virtio_pasid_resp, reserved)",
        offset_of!(Response, reserved),
    );
    put(
        "offsetof(struct virtio_pasid_resp, pasid)",
        offset_of!(Response, pasid),
    );
    put(
        "offsetof(struct virtio_pasid_resp, tag)",
        offset_of!(Response, tag),
    );
    for (field, off) in [
        ("version", offset_of!(Config, version)),
        ("pasid_bits", offset_of!(Config, pasid_bits)),
        ("pasid_min", offset_of!(Config, pasid_min)),
        ("pasid_max", offset_of!(Config, pasid_max)),
        ("quota", offset_of!(Config, quota)),
        ("lease_max", offset_of!(Config, lease_max)),
        ("space_id", offset_of!(Config, space_id)),
    ] {
        put(
            &format!("offsetof(struct virtio_pasid_config, {field})"),
            off,
        );
    }
    put(
        "sizeof(struct virtio_pasid_lease_req)",
        size_of::<LeaseHeader>(),
    );
    for (field, off) in [
        ("opcode", offset_of!(LeaseHeader, opcode)),
        ("flags", offset_of!(LeaseHeader, flags)),
        ("count", offset_of!(LeaseHeader, count)),
        ("cached", offset_of!(LeaseHeader, cached)),
        ("tag", offset_of!(LeaseHeader, tag)),
        ("min", offset_of!(LeaseHeader, min)),
        ("max", offset_of!(LeaseHeader, max)),
    ] {
        put(
            &format!("offsetof(struct virtio_pasid_lease_req, {field})"),
            off,
        );
    }
    // Field widths: sizeof of each member.
    for (expr, size) in [
        ("sizeof(((struct virtio_pasid_req *)0)->opcode)", 2),
        ("sizeof(((struct virtio_pasid_req *)0)->tag)", 8),
        ("sizeof(((struct virtio_pasid_req *)0)->max)", 4),
        ("sizeof(((struct virtio_pasid_resp *)0)->status)", 2),
        ("sizeof(((struct virtio_pasid_config *)0)->space_id)", 8),
        ("sizeof(((struct virtio_pasid_lease_req *)0)->count)", 2),
        ("sizeof(((struct virtio_pasid_lease_req *)0)->cached)", 2),
    ] {
        put(expr, size);
    }
    // Rust struct sizes equal the wire sizes, so the C sizes equal both.
    assert_eq!(size_of::<RawRequest>(), REQUEST_SIZE);
    for c in c_constants() {
        m.insert(c.name, c.value);
    }
    m
}

/// Names of every `#define` in the header except the include guard.
fn header_defines() -> Vec<String> {
    let text = std::fs::read_to_string(header_path()).unwrap();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("#define"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| *name != "_VIRTIO_PASID_H")
        .map(str::to_string)
        .collect()
}

#[test]
fn c_header_matches_rust() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("check.c");
    let bin = dir.path().join("check");
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"virtio_pasid.h\"\nint main(void)\n{\n",
    );
    for expr in expected.keys() {
        c.push_str(&format!(
            "\tprintf(\"%s=%llu\\n\", \"{expr}\", (unsigned long long)({expr}));\n"
        ));
    }
    c.push_str("\treturn 0;\n}\n");
    std::fs::write(&src, c).unwrap();

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let include = header_path().parent().unwrap().to_path_buf();
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap_or_else(|e| panic!("cannot run C compiler {cc}: {e}"));
    assert!(
        out.status.success(),
        "header does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&bin).output().unwrap();
    assert!(run.status.success());
    let mut seen = BTreeMap::new();
    for line in String::from_utf8(run.stdout).unwrap().lines() {
        let (k, v) = line.rsplit_once('=').unwrap();
        seen.insert(k.to_string(), v.parse::<u64>().unwrap());
    }
    assert_eq!(seen, expected, "C header and Rust definitions differ");

    for name in header_defines() {
        assert!(
            expected.contains_key(&name),
            "header defines {name}, which the Rust side does not check"
        );
    }
}
