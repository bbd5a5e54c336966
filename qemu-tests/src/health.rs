// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What makes a guest unhealthy: kernel log lines that report a bug, and
//! taint flags other than the expected out-of-tree/unsigned module ones.

/// Substrings of kernel log lines that fail a test.
pub const BAD_PATTERNS: &[&str] = &[
    "WARNING:",
    "------------[ cut here ]",
    "BUG:",
    "kernel BUG",
    "Oops",
    "general protection fault",
    "Kernel panic",
    "soft lockup",
    "hard LOCKUP",
    "self-detected stall",
    "RCU stall",
    "rcu: INFO",
    "blocked for more than",
    "Call Trace",
    "UBSAN:",
    "KASAN:",
    "list_add corruption",
    "list_del corruption",
];

/// `TAINT_OOT_MODULE` (O): an out-of-tree module was loaded.
pub const TAINT_OOT_MODULE: u64 = 1 << 12;
/// `TAINT_UNSIGNED_MODULE` (E): an unsigned module was loaded.
pub const TAINT_UNSIGNED_MODULE: u64 = 1 << 13;
/// The taint bits our own modules cause and tests therefore accept.
pub const ALLOWED_TAINT: u64 = TAINT_OOT_MODULE | TAINT_UNSIGNED_MODULE;

/// The letters of `/proc/sys/kernel/tainted` bits, from bit 0
/// (Documentation/admin-guide/tainted-kernels.rst).
const TAINT_LETTERS: &[u8] = b"PFSRMBUDAWCIOELKXTN";

/// The lines of `log` that contain a [`BAD_PATTERNS`] entry and none of the
/// `allow` substrings.
pub fn scan_log<S: AsRef<str>>(log: &str, allow: &[S]) -> Vec<String> {
    log.lines()
        .filter(|line| BAD_PATTERNS.iter().any(|p| line.contains(p)))
        .filter(|line| !allow.iter().any(|a| line.contains(a.as_ref())))
        .map(|line| line.trim().to_string())
        .collect()
}

/// Describes the taint bits in `value` outside [`ALLOWED_TAINT`], if any.
pub fn check_taint(value: u64) -> Option<String> {
    let bad = value & !ALLOWED_TAINT;
    if bad == 0 {
        return None;
    }
    let letters: String = (0..64u32)
        .filter(|bit| bad & (1u64 << bit) != 0)
        .map(|bit| {
            usize::try_from(bit)
                .ok()
                .and_then(|b| TAINT_LETTERS.get(b))
                .map_or('?', |&c| char::from(c))
        })
        .collect();
    Some(format!(
        "kernel tainted {value} (unexpected bits {bad:#x}: {letters})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bad_lines_and_honours_allow_list() {
        let log = "[ 1.0] fine\n[ 2.0] WARNING: CPU: 0 PID: 1 at x.c:1\n[ 3.0] BUG: oops\n";
        assert_eq!(scan_log::<&str>(log, &[]).len(), 2);
        assert_eq!(scan_log(log, &["x.c:1"]), vec!["[ 3.0] BUG: oops"]);
        assert!(scan_log::<&str>("rcu: INFO: rcu_sched self-detected stall", &[]).len() == 1);
    }

    #[test]
    fn taint() {
        assert_eq!(check_taint(0), None);
        assert_eq!(check_taint(4096), None);
        assert_eq!(check_taint(4096 | 8192), None);
        let w = check_taint(4096 | 512).unwrap();
        assert!(w.contains("0x200") && w.contains('W'), "{w}");
        assert!(check_taint(1).unwrap().contains('P'));
    }
}
