// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Rate-limited warnings about guest misbehaviour.
//!
//! A hostile guest can send a malformed chain per microsecond; logging each
//! would turn the host's log into the guest's weapon. At most
//! [`WARN_BURST`] warnings per VM are logged per [`WARN_WINDOW`]; the rest are
//! counted and summarised when the next window opens.

use std::fmt;
use std::time::{Duration, Instant};

use log::warn;

/// Warnings logged per window before suppression starts.
pub const WARN_BURST: u32 = 10;
/// Length of a window.
pub const WARN_WINDOW: Duration = Duration::from_secs(5);

/// Per-VM warning budget.
#[derive(Debug)]
pub struct WarnLimiter {
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
}

impl Default for WarnLimiter {
    fn default() -> Self {
        WarnLimiter {
            window_start: Instant::now(),
            emitted: 0,
            suppressed: 0,
        }
    }
}

impl WarnLimiter {
    /// Logs `args` as a warning about VM `vm` unless its budget is spent.
    /// Returns whether the warning was logged.
    pub fn warn(&mut self, vm: &str, args: fmt::Arguments<'_>) -> bool {
        self.warn_at(Instant::now(), vm, args)
    }

    fn warn_at(&mut self, now: Instant, vm: &str, args: fmt::Arguments<'_>) -> bool {
        if now.duration_since(self.window_start) >= WARN_WINDOW {
            if self.suppressed > 0 {
                warn!(
                    "vm={vm} event=guest-error suppressed={} (rate limit)",
                    self.suppressed
                );
            }
            self.window_start = now;
            self.emitted = 0;
            self.suppressed = 0;
        }
        if self.emitted < WARN_BURST {
            self.emitted += 1;
            warn!("vm={vm} event=guest-error {args}");
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Warnings suppressed in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_then_new_window() {
        let mut l = WarnLimiter::default();
        let t0 = l.window_start;
        let logged = (0..25)
            .filter(|i| l.warn_at(t0, "vm0", format_args!("bad {i}")))
            .count();
        assert_eq!(logged, WARN_BURST as usize);
        assert_eq!(l.suppressed(), 25 - u64::from(WARN_BURST));
        assert!(l.warn_at(t0 + WARN_WINDOW, "vm0", format_args!("again")));
        assert_eq!(l.suppressed(), 0);
    }
}
