//! Deadlines are values: a session's deadline is fixed when it starts and handed down, and each
//! agent gets `min(own timeout, time left)` from it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A point on tokio's clock (so paused-time tests control it) with its wall-clock equivalent.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self::at(Instant::now() + budget)
    }

    pub fn at(at: Instant) -> Self {
        Self { at }
    }

    pub fn instant(self) -> Instant {
        self.at
    }

    /// The earlier of this deadline and `timeout` from now: what an agent is given.
    pub fn cap(self, timeout: Duration) -> Instant {
        (Instant::now() + timeout).min(self.at)
    }

    pub fn is_past(self) -> bool {
        Instant::now() >= self.at
    }
}

/// A session's clock: wall time read once at the start, then advanced by tokio's monotonic clock.
///
/// Every timestamp of a session comes from here, so event times are monotonic, agree with the
/// durations measured on tokio's clock, and follow paused time in tests. Over a session of seconds
/// the drift from the system clock is negligible.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    wall: DateTime<Utc>,
    start: Instant,
}

impl SessionClock {
    pub fn start() -> Self {
        Self {
            wall: Utc::now(),
            start: Instant::now(),
        }
    }

    /// The deadline `budget` after this clock's start.
    pub fn deadline(&self, budget: Duration) -> Deadline {
        Deadline::at(self.start + budget)
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.wall
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The wall-clock time of a tokio instant at or after the start.
    pub fn wall(&self, at: Instant) -> DateTime<Utc> {
        self.wall + at.saturating_duration_since(self.start)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.wall(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_agent_gets_the_earlier_of_its_timeout_and_the_deadline() {
        let deadline = Deadline::after(Duration::from_secs(8));
        let now = Instant::now();
        assert_eq!(
            deadline.cap(Duration::from_secs(2)),
            now + Duration::from_secs(2)
        );
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(deadline.cap(Duration::from_secs(2)), deadline.instant());
        assert!(!deadline.is_past());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(deadline.is_past());
    }

    #[tokio::test(start_paused = true)]
    async fn session_time_follows_tokio_time() {
        let clock = SessionClock::start();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            clock.now() - clock.started_at(),
            chrono::Duration::milliseconds(1500)
        );
    }
}
