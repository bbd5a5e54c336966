// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Self-tests of the guest harness that scenario tests rely on: the console
//! command protocol and its recovery from a stuck command, console and dmesg
//! waits, reboot, and the detection of a guest kernel panic.

use std::time::{Duration, Instant};

use qemu_tests::{shell_quote, Error, Guest, GuestConfig, Kernel};

const CMD: Duration = Duration::from_secs(60);

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
