//! Delays between reconnect attempts: exponential, with jitter.
//!
//! The ceiling starts at `backoff_min` and doubles up to `backoff_max`.
//! Each delay is drawn uniformly from the upper half of the ceiling ("equal
//! jitter"): gateways restarted together, or cut off by the same Redis
//! outage, spread their attempts instead of reconnecting in lockstep, and
//! no delay shrinks towards zero (full jitter could retry at once, over and
//! over, against a Redis that is still down).

use std::time::Duration;

/// The delays of one connection's reconnect attempts.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// The longest the next delay may be.
    ceiling: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            ceiling: min,
        }
    }

    /// The delay before the next attempt, between half the ceiling and the
    /// ceiling; the ceiling then doubles (up to the maximum).
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = jitter(self.ceiling, rand::random::<f64>());
        self.ceiling = (self.ceiling * 2).min(self.max);
        delay
    }

    /// Back to the shortest delays, after a session that worked.
    pub(super) fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

/// Half of `ceiling` plus `unit` (in `[0, 1)`) of the other half.
fn jitter(ceiling: Duration, unit: f64) -> Duration {
    let half = ceiling / 2;
    half + (ceiling - half).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn jitter_spans_the_upper_half_of_the_ceiling() {
        let ceiling = Duration::from_millis(1000);
        assert_eq!(jitter(ceiling, 0.0), Duration::from_millis(500));
        assert_eq!(jitter(ceiling, 0.5), Duration::from_millis(750));
        assert_eq!(jitter(ceiling, 1.0), ceiling);
    }

    #[test]
    fn every_delay_lies_between_half_the_ceiling_and_the_ceiling() {
        let mut backoff = Backoff::new(MIN, MAX);
        let mut ceiling = MIN;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(MAX);
        }
        assert_eq!(ceiling, MAX, "the ceiling stops at the maximum");
    }

    #[test]
    fn delays_are_spread_not_in_lockstep() {
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(MIN, MAX).next_delay())
            .collect();
        assert!(
            delays.len() > 10,
            "50 first delays, {} distinct",
            delays.len()
        );
    }

    #[test]
    fn reset_returns_to_the_shortest_delays() {
        let mut backoff = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= MIN);
    }
}
