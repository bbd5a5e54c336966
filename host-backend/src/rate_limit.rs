// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Rate limits: log lines a guest or client can cause, and guest requests.
//!
//! A hostile guest can send a malformed chain per microsecond; logging each
//! would turn the host's log into the guest's weapon. A [`LogThrottle`]
//! logs at most [`WARN_BURST`] lines per [`WARN_WINDOW`]; the rest are
//! counted and summarised when the next window opens.
//!
//! [`TokenBucket`] caps the requests per second each VM has carried out on
//! the shared PASID space; the excess is answered `RATE_LIMITED`.

use std::time::{Duration, Instant};

/// Warnings logged per window before suppression starts.
pub const WARN_BURST: u32 = 10;
/// Length of a window.
pub const WARN_WINDOW: Duration = Duration::from_secs(5);

/// One log line's budget: at most [`WARN_BURST`] lines per [`WARN_WINDOW`];
/// the rest are counted, and the count is handed over for a summary line
/// when the next window opens. Every rate-limited log line of the daemon
/// goes through one: guest errors (per VM), rejected requests (per VM) and
/// denied control commands (all clients).
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// Start of the current window; `None` until the first line.
    window_start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle whose first window opens with its first line.
    pub const fn new() -> Self {
        LogThrottle {
            window_start: None,
            emitted: 0,
            suppressed: 0,
        }
    }

    /// A throttle whose first window opens at `start`.
    pub fn starting(start: Instant) -> Self {
        LogThrottle {
            window_start: Some(start),
            ..LogThrottle::new()
        }
    }

    /// Whether a line may be logged at `now`. When `now` opens a new
    /// window and the last one suppressed lines, `summarise` gets their
    /// count first, to log it.
    pub fn admit(&mut self, now: Instant, summarise: impl FnOnce(u64)) -> bool {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= WARN_WINDOW {
            if self.suppressed > 0 {
                summarise(self.suppressed);
            }
            *self = LogThrottle::starting(now);
        }
        if self.emitted < WARN_BURST {
            self.emitted += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines logged in the current window.
    pub fn emitted(&self) -> u32 {
        self.emitted
    }

    /// Lines suppressed in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// The lines suppressed in the current window, now counted as
    /// summarised (when the logging ends, so that no count is lost).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// A request budget: `per_second` tokens a second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Most tokens the bucket holds (and what it starts with).
    pub burst: u32,
}

/// Tokens are counted in billionths so that refills need no floating point.
const NANO: u128 = 1_000_000_000;

/// A token bucket: one token per request, refilled continuously.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Tokens held, in billionths of a token.
    nanotokens: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        TokenBucket {
            limit,
            nanotokens: u128::from(limit.burst) * NANO,
            last: Instant::now(),
        }
    }

    /// The limit this bucket enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token if there is one; `false` means the caller is over its
    /// rate.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let cap = u128::from(self.limit.burst) * NANO;
        // elapsed (ns) * tokens/s = billionths of a token; saturating keeps a
        // bucket idle for centuries full rather than wrapping.
        let refill = elapsed.saturating_mul(u128::from(self.limit.per_second));
        self.nanotokens = self.nanotokens.saturating_add(refill).min(cap);
        if self.nanotokens >= NANO {
            self.nanotokens -= NANO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full bucket grants `burst` requests at once, then one per
    /// 1/`per_second` s, and never saves more than `burst`.
    #[test]
    fn token_bucket_grants_burst_then_rate() {
        let mut b = TokenBucket::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let t0 = b.last;
        assert_eq!((0..5).filter(|_| b.take_at(t0)).count(), 3);
        assert!(!b.take_at(t0 + Duration::from_millis(99)));
        assert!(b.take_at(t0 + Duration::from_millis(100)));
        assert!(!b.take_at(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..5).filter(|_| b.take_at(later)).count(), 3);
        // A clock that seems to go backwards takes nothing extra.
        assert!(!b.take_at(t0));
    }

    /// 5.x.6.11: a refused request costs nothing. However often a VM
    /// retries while the bucket is empty, the next token arrives exactly
    /// 1/`per_second` s after the last one was taken (the refill is
    /// continuous, not in whole-second steps), and no more than that.
    #[test]
    fn refused_requests_cost_no_token() {
        let mut b = TokenBucket::new(RateLimit {
            per_second: 4,
            burst: 1,
        });
        let t0 = b.last;
        assert!(b.take_at(t0));
        for ms in (0..250).step_by(10) {
            assert!(!b.take_at(t0 + Duration::from_millis(ms)), "{ms} ms");
        }
        assert!(b.take_at(t0 + Duration::from_millis(250)));
        assert!(!b.take_at(t0 + Duration::from_millis(250)));
        // Half a token saved up by 375 ms is kept through refusals.
        assert!(!b.take_at(t0 + Duration::from_millis(375)));
        assert!(b.take_at(t0 + Duration::from_millis(500)));
    }

    /// A zero rate with a zero burst refuses everything.
    #[test]
    fn empty_bucket_refuses() {
        let mut b = TokenBucket::new(RateLimit {
            per_second: 0,
            burst: 0,
        });
        assert!(!b.take());
    }

    #[test]
    fn burst_then_suppress_then_new_window() {
        let t0 = Instant::now();
        let mut l = LogThrottle::starting(t0);
        let logged = (0..25).filter(|_| l.admit(t0, |_| {})).count();
        assert_eq!(logged, WARN_BURST as usize);
        assert_eq!(l.suppressed(), 25 - u64::from(WARN_BURST));
        let mut summarised = None;
        assert!(l.admit(t0 + WARN_WINDOW, |n| summarised = Some(n)));
        assert_eq!(summarised, Some(25 - u64::from(WARN_BURST)));
        assert_eq!(l.suppressed(), 0);
    }
}
