//! When a failed delivery is tried again: the configured delays, each with jitter so that the
//! retries of a burst of messages to an endpoint that was down do not all arrive at once, and
//! never earlier than a `Retry-After` the endpoint sent.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The delay before each attempt, the first one's included (usually `0s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Vec<Duration>);

/// Jitter added to a delay: up to this fraction of it.
const JITTER: f64 = 0.2;

/// The longest delay a schedule may have between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

impl Schedule {
    /// `0s,5s,5m,...`: humantime durations separated by commas, at least one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(|part| {
                humantime::parse_duration(part.trim())
                    .map_err(|e| format!("`{}` in the retry schedule: {e}", part.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the retry schedule needs at least one attempt".to_owned());
        }
        if let Some(long) = delays.iter().find(|d| **d > MAX_DELAY) {
            return Err(format!(
                "{} in the retry schedule: at most 30 days between attempts",
                humantime::format_duration(*long)
            ));
        }
        Ok(Self(delays))
    }

    /// How many attempts a message gets.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// After attempt `made` (1 for the first) failed at `now`: when to try again, or `None`
    /// when the schedule is spent. `jitter` is a random number in [0, 1); `retry_after` what
    /// the endpoint asked for.
    pub fn next(
        &self,
        made: u32,
        now: DateTime<Utc>,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<DateTime<Utc>> {
        let delay = *self.0.get(usize::try_from(made).ok()?)?;
        let jittered = delay.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0));
        // An endpoint's Retry-After is honoured up to a day: beyond that it is a mistake or an
        // attempt to park the delivery for ever.
        let asked = retry_after.map(|asked| asked.min(MAX_RETRY_AFTER));
        let wait = asked.map_or(jittered, |asked| asked.max(jittered));
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        Some(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

/// A random number in [0, 1) for the jitter.
pub fn jitter() -> f64 {
    let bytes = crate::domain::random_bytes::<4>();
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// A `Retry-After` header: seconds, or an HTTP date (RFC 9110 10.2.3), as a wait from `now`.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn the_default_schedule_parses_and_bad_ones_say_why() {
        let schedule = Schedule::parse("0s,5s,5m,30m,2h,5h,10h,14h,20h,24h").unwrap();

        assert_eq!(schedule.attempts(), 10);
        assert!(Schedule::parse("0s, 1s ,2s").is_ok());
        assert!(Schedule::parse("0s,soon").unwrap_err().contains("`soon`"));
        assert!(Schedule::parse("").is_err());
        assert!(
            Schedule::parse("0s,1000y")
                .unwrap_err()
                .contains("at most 30 days")
        );
    }

    #[test]
    fn each_retry_waits_its_delay_plus_jitter_until_the_schedule_is_spent() {
        let schedule = Schedule::parse("0s,10s,1m").unwrap();
        let now = at(1_000);

        assert_eq!(schedule.next(1, now, 0.0, None), Some(at(1_010)));
        assert_eq!(schedule.next(1, now, 0.5, None), Some(at(1_011)));
        assert_eq!(
            schedule
                .next(2, now, 0.999_999, None)
                .map(|t| t.timestamp()),
            Some(1_071)
        );
        assert_eq!(
            schedule.next(3, now, 0.0, None),
            None,
            "three attempts in all"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_never_shortens_the_wait() {
        let schedule = Schedule::parse("0s,10s,1m").unwrap();
        let now = at(1_000);

        assert_eq!(
            schedule.next(1, now, 0.0, Some(Duration::from_secs(120))),
            Some(at(1_120))
        );
        assert_eq!(
            schedule.next(1, now, 0.0, Some(Duration::from_secs(1))),
            Some(at(1_010))
        );
        assert_eq!(retry_after(" 30 ", now), Some(Duration::from_secs(30)));
        let date = (now + chrono::Duration::seconds(90)).to_rfc2822();
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(retry_after("later", now), None);
        let forever = retry_after("99999999999999", now);
        assert_eq!(
            schedule.next(1, now, 0.0, forever),
            Some(at(1_000 + 86_400)),
            "a day at most"
        );
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..1_000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
