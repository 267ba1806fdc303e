//! When to try a window again: exponential backoff with jitter, bounded,
//! and a server's `Retry-After` honoured.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

/// How the exporter retries a window the backend could not take (down,
/// slow, or answering "try later": connection errors, timeouts, gRPC
/// `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `ABORTED`,
/// `CANCELLED`, `OUT_OF_RANGE`, `DATA_LOSS`, HTTP 429, 502, 503, 504).
///
/// Before retry `n` (1 for the second attempt) the exporter waits
/// `initial_backoff * 2^(n-1)`, capped at `max_backoff`, times a random
/// factor in `[0.5, 1]` so that a fleet does not retry in step; a
/// `Retry-After` of N seconds (HTTP) makes the wait at least N seconds,
/// still capped at `max_backoff`. After `max_attempts` attempts the window
/// is given up and counted ([`PushStats::dropped_gave_up`](super::PushStats)).
///
/// ```
/// use std::time::Duration;
/// use rover_core::push::Retry;
/// let retry = Retry { max_attempts: 4, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1) };
/// assert_eq!(retry.backoff(1), Duration::from_millis(100));
/// assert_eq!(retry.backoff(3), Duration::from_millis(400));
/// assert_eq!(retry.backoff(9), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per window, the first included (1: never retry). At least 1.
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// 5 attempts, waiting 0.5 s, 1 s, 2 s, 4 s (before jitter), at most 30 s.
    fn default() -> Self {
        Retry {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// No retries: one attempt per window.
    pub fn none() -> Self {
        Retry {
            max_attempts: 1,
            ..Retry::default()
        }
    }

    /// The wait before retry `retry` (1-based), before jitter:
    /// `initial_backoff * 2^(retry-1)`, at most `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// The wait before retry `retry`, with `jitter` in `[0, 1)` scaling the
    /// backoff into `[0.5, 1]` of itself and the server's `retry_after` as
    /// a floor; never above `max_backoff`.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let jittered = self
            .backoff(retry)
            .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        jittered
            .max(retry_after.unwrap_or(Duration::ZERO))
            .min(self.max_backoff)
    }
}

/// A random number in `[0, 1)` from the standard library's per-process
/// random keys: enough to spread retries, no dependency.
pub(crate) fn jitter() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A `Retry-After` header's delay: a number of seconds. (The HTTP-date
/// form is not read: the backoff applies then.)
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let retry = Retry {
            max_attempts: 10,
            initial_backoff: ms(100),
            max_backoff: ms(1000),
        };
        let schedule: Vec<Duration> = (1..=6).map(|n| retry.backoff(n)).collect();
        assert_eq!(
            schedule,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Far retries neither overflow nor pass the bound.
        assert_eq!(retry.backoff(u32::MAX), ms(1000));
        assert_eq!(Retry::default().backoff(1), ms(500));
        assert_eq!(Retry::default().backoff(4), ms(4000));
    }

    #[test]
    fn jitter_keeps_the_delay_between_half_and_all_of_the_backoff() {
        let retry = Retry {
            max_attempts: 10,
            initial_backoff: ms(100),
            max_backoff: ms(1000),
        };
        assert_eq!(retry.delay(2, None, 0.0), ms(100));
        assert_eq!(retry.delay(2, None, 1.0), ms(200));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
            let d = retry.delay(3, None, j);
            assert!(d >= ms(200) && d <= ms(400), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_under_the_bound() {
        let retry = Retry {
            max_attempts: 10,
            initial_backoff: ms(100),
            max_backoff: ms(5000),
        };
        assert_eq!(retry.delay(1, Some(Duration::from_secs(2)), 0.5), ms(2000));
        assert_eq!(retry.delay(1, Some(Duration::from_secs(60)), 0.5), ms(5000));
        assert_eq!(retry.delay(1, Some(Duration::ZERO), 1.0), ms(100));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
