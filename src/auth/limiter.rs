//! A token bucket per key: `per_minute` requests a minute on average, and as many at once after
//! a quiet minute. Per instance: behind a load balancer, N instances allow N times the limit
//! (a shared counter would put a store write on every request).
//!
//! Kept as GCRA (the generic cell rate algorithm, the token bucket written as one instant per
//! key, the "theoretical arrival time"): integer durations, so no rounding ever refuses a
//! request the bucket has room for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::KeyId;

/// Requests allowed per key.
pub struct RateLimiter {
    /// Time one request uses up; `None`: unlimited.
    interval: Option<Duration>,
    /// How far ahead of now a key's arrival time may run: the burst.
    burst: Duration,
    // A std Mutex: each use is a map lookup and some arithmetic, never held across an await.
    arrivals: Mutex<HashMap<KeyId, Instant>>,
}

impl RateLimiter {
    /// `per_minute` 0 allows everything.
    pub fn new(per_minute: u32) -> Self {
        let interval = (per_minute > 0).then(|| Duration::from_secs(60) / per_minute);
        Self {
            interval,
            burst: interval.map_or(Duration::ZERO, |i| i * per_minute),
            arrivals: Mutex::default(),
        }
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn check(&self, key: &KeyId) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let now = Instant::now();
        let mut arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let arrival = arrivals.entry(key.clone()).or_insert(now);
        let next = (*arrival).max(now) + interval;
        let ahead = next - now;
        if ahead > self.burst {
            return Err(ahead - self.burst);
        }
        *arrival = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> KeyId {
        format!("key_{name}").parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_gets_its_burst_then_one_token_per_interval() {
        let limiter = RateLimiter::new(60);
        for _ in 0..60 {
            assert!(limiter.check(&key("a")).is_ok());
        }
        let wait = limiter.check(&key("a")).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(
            limiter.check(&key("b")).is_ok(),
            "each key has its own bucket"
        );

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(limiter.check(&key("a")).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check(&key("a")).is_ok());
        assert!(limiter.check(&key("a")).is_err());

        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..60 {
            assert!(
                limiter.check(&key("a")).is_ok(),
                "refilled, up to the burst"
            );
        }
        assert!(limiter.check(&key("a")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let limiter = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(limiter.check(&key("a")).is_ok());
        }
    }
}
