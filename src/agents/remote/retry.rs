//! When a remote agent's call is tried again, and after how long: exponential backoff with full
//! jitter, inside the session's budget, and only for failures that are safe to retry.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

/// `settings.retry` of an `http` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// The first retry waits up to this; each next one up to twice the last, at most `max_ms`.
    pub base_ms: u64,
    pub max_ms: u64,
    /// An attempt starts only with at least this much of the agent's time left: one that could
    /// not finish would only add load to a remote that is already struggling.
    pub min_attempt_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_ms: 50,
            max_ms: 1_000,
            min_attempt_ms: 100,
        }
    }
}

impl RetrySettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.max_attempts) {
            return Err("retry.max_attempts must be between 1 and 10".into());
        }
        if self.base_ms == 0 || self.base_ms > self.max_ms {
            return Err("retry.base_ms must be at least 1 and at most retry.max_ms".into());
        }
        if self.max_ms > 60_000 {
            return Err("retry.max_ms must be at most 60000".into());
        }
        Ok(())
    }

    /// The wait before attempt `attempt` (2 for the first retry): uniform between zero and
    /// `min(max_ms, base_ms * 2^(attempt - 2))`, `unit` being a uniform draw from [0, 1). Full
    /// jitter spreads the retries of many sessions that failed together, so they do not hit a
    /// recovering remote in one wave.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(2).min(20);
        let cap = self.base_ms.saturating_mul(1 << exponent).min(self.max_ms);
        Duration::from_secs_f64(cap as f64 / 1000.0 * unit.clamp(0.0, 1.0))
    }
}

/// A uniform draw from [0, 1) from the OS's random source; only retries draw, so its cost is no
/// matter.
pub fn unit_draw() -> f64 {
    let bits = u64::from_le_bytes(crate::domain::random_bytes::<8>()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// What the remote's answer (or its absence) means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again: after the backoff, or after the remote's `Retry-After` when it gave one.
    Retry(Option<Duration>),
    /// Do not: the answer is final.
    Stop,
}

/// Whether a status is worth another attempt: `502`, `503` and `504` (a proxy or a worker that
/// is starting, stopping or overloaded) and `429`; any other `4xx` is the request's fault and
/// would fail the same way, and a `500` is the agent's own failure, which it would repeat.
pub fn after_status(status: StatusCode, retry_after: Option<&str>) -> Next {
    match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Next::Retry(retry_after.and_then(parse_retry_after)),
        _ => Next::Stop,
    }
}

/// `Retry-After` in seconds. The HTTP-date form is not read: an agent server asks for seconds,
/// and a wrong clock on either side would turn a date into nonsense.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitters_below_it() {
        let retry = RetrySettings {
            max_attempts: 6,
            base_ms: 50,
            max_ms: 300,
            min_attempt_ms: 100,
        };
        let top = |attempt| retry.backoff(attempt, 1.0).as_millis();
        assert_eq!([top(2), top(3), top(4), top(5)], [50, 100, 200, 300]);
        assert_eq!(retry.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(retry.backoff(3, 0.5).as_millis(), 50);
        for _ in 0..100 {
            let draw = unit_draw();
            assert!((0.0..1.0).contains(&draw));
        }
    }

    #[test]
    fn only_overload_and_gateway_failures_are_retried() {
        assert_eq!(
            after_status(StatusCode::SERVICE_UNAVAILABLE, Some("2")),
            Next::Retry(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            after_status(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Wed, 21 Oct 2026 07:28:00 GMT")
            ),
            Next::Retry(None)
        );
        assert_eq!(
            after_status(StatusCode::BAD_GATEWAY, None),
            Next::Retry(None)
        );
        for final_status in [400, 401, 404, 413, 422, 500] {
            let status = StatusCode::from_u16(final_status).unwrap();
            assert_eq!(after_status(status, None), Next::Stop, "{status}");
        }
    }
}
