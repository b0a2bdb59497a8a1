//! The service's wall clock, which tests with paused tokio time can move.

use chrono::{DateTime, Utc};

/// The time that webhooks are scheduled and challenges expire by: the wall clock, plus however
/// far tokio's clock has run ahead of the real one since the start. In a running service the two run together, so
/// this is the wall clock, NTP corrections included; in a test with paused time it moves with
/// the test's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    tokio: tokio::time::Instant,
    real: std::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            tokio: tokio::time::Instant::now(),
            real: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let virtual_elapsed = self.tokio.elapsed();
        let real_elapsed = self.real.elapsed();
        let ahead = virtual_elapsed.saturating_sub(real_elapsed);
        Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default()
    }
}
