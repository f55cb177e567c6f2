//! Per-key rate limits for sans-IO cores: governor's keyed GCRA on a clock the core moves to
//! the monotonic time it is given, so the same limiter runs under tokio, in the browser and in
//! the simulator's virtual time.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

type Inner<K> = RateLimiter<K, HashMapStateStore<K>, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// A keyed rate limiter on a hand-driven clock.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: Inner<K>,
    clock: FakeRelativeClock,
    at: Duration,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("tracked", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_minute` cells per key and minute (at least 1), with a burst of as many.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = FakeRelativeClock::default();
        Self {
            limiter: RateLimiter::hashmap_with_clock(Quota::per_minute(n), clock.clone()),
            clock,
            at: Duration::ZERO,
        }
    }

    /// Moves the clock to `monotonic` (a time before the last one leaves it where it is).
    pub fn advance(&mut self, monotonic: Duration) {
        let step = monotonic.saturating_sub(self.at);
        if !step.is_zero() {
            self.clock.advance(step);
            self.at = monotonic;
        }
    }

    /// Takes one cell for `key`; `false` if it has none left.
    pub fn check(&self, key: &K) -> bool {
        self.limiter.check_key(key).is_ok()
    }

    /// Takes `n` cells for `key` at once; `false` (and nothing taken) if it has fewer, or if
    /// `n` is more than a whole minute's worth.
    pub fn check_n(&self, key: &K, n: u32) -> bool {
        NonZeroU32::new(n).is_none_or(|n| matches!(self.limiter.check_key_n(key, n), Ok(Ok(()))))
    }

    /// Forgets keys whose cells are all back (idle for a minute or more), and gives their
    /// memory back.
    pub fn reclaim_idle(&mut self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_recover_with_the_hand_driven_clock_and_idle_keys_are_forgotten() {
        let mut l = KeyedLimiter::per_minute(3);
        assert!((0..3).all(|_| l.check(&1u8)));
        assert!(!l.check(&1u8), "the fourth in the minute");
        assert!(l.check(&2u8), "another key has its own");
        l.advance(Duration::from_secs(20));
        assert!(l.check(&1u8), "a cell back after a third of a minute");
        // Key 2 spent one, and one came back: 3 again, all taken at once; then none.
        assert!(l.check_n(&2u8, 3));
        assert!(!l.check_n(&2u8, 1));
        assert!(
            !l.check_n(&3u8, 4),
            "more than a minute's worth never passes"
        );
        assert_eq!(l.len(), 2, "a request that can never pass leaves no state");
        l.advance(Duration::from_secs(200));
        l.reclaim_idle();
        assert!(l.is_empty());
        // Time never runs backwards.
        l.advance(Duration::from_secs(100));
        assert!(l.check(&1u8));
    }
}
