// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Self-tests of the guest harness that scenario tests rely on: the console
//! command protocol and its recovery from a stuck command, console and dmesg
//! waits, reboot, the detection of a guest kernel panic, and the
//! exerciser's multi-threaded `stress` and `alloc_timed` on the guest's own
//! allocator, on two vCPUs.

mod common;

use std::time::{Duration, Instant};

use common::CMD;
use qemu_tests::{shell_quote, Error, Guest, GuestConfig, Kernel, VpasidGuest};

#[test]
fn shell_protocol_reboot_and_waits_6_1() {
    let mut guest = Guest::boot(GuestConfig::new("vm", Kernel::V6_1).allow_reboot()).unwrap();

    // Multi-line commands, heredocs, stderr, exit codes, quoting.
    let out = guest
        .run(
            "if true; then\n  echo multi\nfi\ncat <<EOF\nheredoc\nEOF\n",
            CMD,
        )
        .unwrap();
    assert_eq!(out.output, "multi\nheredoc\n");
    let out = guest.run("echo out; echo err >&2; false", CMD).unwrap();
    assert_eq!((out.exit_code, out.output.as_str()), (1, "out\nerr\n"));
    let word = "it's \"quoted\" $HOME";
    let echoed = guest
        .run_ok(&format!("echo {}", shell_quote(word)), CMD)
        .unwrap();
    assert_eq!(echoed.trim(), word);
    let long = guest
        .run_ok("seq 1 5000 | tail -n 1; seq 1 300", CMD)
        .unwrap();
    assert_eq!(long.lines().count(), 301);

    // A command that outlives its timeout is interrupted, and so is a
    // command the shell cannot parse; the next command works.
    let started = Instant::now();
    let err = guest.run("sleep 600", Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(guest.run_ok("echo after", CMD).unwrap(), "after\n");
    let err = guest
        .run("echo 'unterminated", Duration::from_secs(2))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(guest.run_ok("echo again", CMD).unwrap(), "again\n");

    // Console and dmesg waits see messages printed while a command ran.
    guest
        .run_ok("echo harness-console-mark > /dev/kmsg", CMD)
        .unwrap();
    let line = guest.wait_for("harness-console-mark", CMD).unwrap();
    assert!(line.contains("harness-console-mark"), "{line}");
    guest
        .run_ok("echo '<6>harness-info-mark' > /dev/kmsg", CMD)
        .unwrap();
    guest.wait_for_dmesg("harness-info-mark", CMD).unwrap();
    let err = guest
        .wait_for("harness-never-printed", Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    // Reboot: a fresh kernel, and the shell is back.
    guest
        .run_ok("echo before-reboot > /tmp/state", CMD)
        .unwrap();
    guest.reboot_and_wait(Duration::from_secs(120)).unwrap();
    let out = guest.run("cat /tmp/state", CMD).unwrap();
    assert_ne!(out.exit_code, 0, "tmpfs survived a reboot: {out:?}");
    assert_eq!(guest.console_log().matches("Linux version").count(), 2);

    guest.check_health().unwrap();
    guest.poweroff(CMD).unwrap();
}

#[test]
fn panic_is_detected_5_10() {
    let mut guest = Guest::boot(GuestConfig::new("vm", Kernel::V5_10)).unwrap();
    let started = Instant::now();
    let err = guest.run("echo c > /proc/sysrq-trigger", CMD).unwrap_err();
    assert!(matches!(err, Error::GuestPanicked { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = guest.check_console_health().unwrap_err();
    assert!(matches!(err, Error::Unhealthy { .. }), "{err}");
    // -no-reboot: the panic (panic=-1) ends QEMU.
    let deadline = Instant::now() + CMD;
    while guest.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!guest.is_running());
}

/// The exerciser's `stress` (kernel threads on two vCPUs) and
/// `alloc_timed` against the guest's default allocator: clean counts over a
/// wide range, and failures counted (not hidden) when the range is smaller
/// than what the threads hold at once.
#[test]
fn exerciser_stress_on_two_vcpus_5_10() {
    let mut guest = Guest::boot(GuestConfig::new("vm", Kernel::V5_10).vcpus(2)).unwrap();
    let cpus = guest
        .run_ok("grep -c ^processor /proc/cpuinfo", CMD)
        .unwrap();
    assert_eq!(cpus.trim(), "2");
    guest.load_exerciser().unwrap();

    let wide = guest
        .stress(4, 1000, (1, 0xfffff), Duration::from_secs(300))
        .unwrap();
    assert_eq!(
        (
            wide.done,
            wide.failed,
            wide.duplicate,
            wide.out_of_range,
            wide.lookup
        ),
        (4000, 0, 0, 0, 0),
        "{wide:?}"
    );
    // 4 threads keep up to 16 IDs each: 8 IDs cannot serve them all.
    let narrow = guest
        .stress(4, 100, (1, 8), Duration::from_secs(300))
        .unwrap();
    assert!(narrow.failed > 0, "{narrow:?}");
    assert_eq!(narrow.done + narrow.failed, 400, "{narrow:?}");
    assert_eq!(
        (narrow.duplicate, narrow.out_of_range, narrow.lookup),
        (0, 0, 0),
        "{narrow:?}"
    );
    // Every stress ID was freed: the whole narrow range is free again.
    assert_eq!(guest.alloc_n(16, 1, 8).unwrap().count, 8);
    assert_eq!(guest.free_all().unwrap(), 8);

    let timed = guest.alloc_timed(1, 0xfffff).unwrap();
    assert!(timed.id.is_some(), "{timed:?}");
    assert!(timed.took > Duration::ZERO && timed.took < CMD, "{timed:?}");
    assert_eq!(guest.free_all().unwrap(), 1);

    guest.check_health().unwrap();
    guest.poweroff(CMD).unwrap();
}
