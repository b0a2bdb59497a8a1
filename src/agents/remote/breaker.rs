//! A circuit breaker for one remote agent: after enough failures it opens, and calls fail at
//! once instead of spending the session's budget on a remote that is down; after a cool-down
//! one call goes through as a probe, and its outcome closes the breaker or opens it again.
//!
//! It opens on either of two signs: `consecutive_failures` in a row (a remote that is down), or
//! a share of failures of at least `failure_ratio` among the last `window` calls once
//! `min_calls` have been seen (a remote failing one call in two never makes a long run). Time is
//! tokio's, so tests drive it with paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// `settings.breaker` of an `http` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failures in a row that open it; 0 never opens on a run of failures.
    pub consecutive_failures: u32,
    /// The share of failures among the last `window` calls that opens it; 0 never does.
    pub failure_ratio: f64,
    pub window: usize,
    /// Calls in the window before the ratio counts.
    pub min_calls: usize,
    /// How long it stays open before a probe may go through.
    pub open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: 20,
            min_calls: 10,
            open_ms: 10_000,
        }
    }
}

impl BreakerSettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.failure_ratio) {
            return Err("breaker.failure_ratio must be between 0 and 1".into());
        }
        if self.failure_ratio > 0.0 && (self.window == 0 || self.min_calls > self.window) {
            return Err("breaker.min_calls must be between 1 and breaker.window".into());
        }
        if self.min_calls == 0 && self.failure_ratio > 0.0 {
            return Err("breaker.min_calls must be at least 1".into());
        }
        if self.open_ms == 0 || self.open_ms > 3_600_000 {
            return Err("breaker.open_ms must be between 1 and 3600000".into());
        }
        Ok(())
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The cool-down has passed; one probe is (or may be) in flight.
    HalfOpen,
}

impl BreakerState {
    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
        /// The last `window` outcomes, `true` for a failure.
        recent: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

/// One remote agent's breaker. It logs its changes of state and keeps the gauge
/// `kyc_remote_breaker_state{agent}` (0 closed, 1 half-open, 2 open) up to date.
#[derive(Debug)]
pub struct Breaker {
    agent: String,
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// A call the breaker let through. Report its outcome with [`Call::succeeded`] or
/// [`Call::failed`]. A call dropped without either at or after its deadline ([`Call::until`])
/// ran out of time: a failure. A probe dropped earlier (its session ended for another reason)
/// proves nothing: the breaker stays half-open for the next one, and cannot be held by it.
#[must_use]
pub struct Call<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
    deadline: Option<Instant>,
}

/// A change of state, for the log and the gauge.
pub type Transition = Option<BreakerState>;

impl Breaker {
    pub fn new(agent: &str, settings: BreakerSettings) -> Self {
        metrics::gauge!("kyc_remote_breaker_state", "agent" => agent.to_owned())
            .set(BreakerState::Closed.gauge());
        Self {
            agent: agent.to_owned(),
            settings,
            state: Mutex::new(State::Closed {
                consecutive: 0,
                recent: VecDeque::new(),
            }),
        }
    }

    /// Where it is now (an open breaker whose cool-down has passed reads half-open, and the
    /// gauge says so from then on).
    pub fn state(&self) -> BreakerState {
        let mut state = self.lock();
        match &*state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < *until => BreakerState::Open,
            State::Open { .. } => {
                *state = State::HalfOpen { probing: false };
                drop(state);
                self.changed(BreakerState::HalfOpen);
                BreakerState::HalfOpen
            }
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A call may go through now, or `None`: the breaker is open, or its probe is in flight.
    pub fn call(&self) -> Option<Call<'_>> {
        let mut state = self.lock();
        let probe = match &mut *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() < *until => return None,
            State::Open { .. } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return None,
            State::HalfOpen { probing } => {
                *probing = true;
                true
            }
        };
        if probe {
            self.changed(BreakerState::HalfOpen);
        }
        Some(Call {
            breaker: self,
            probe,
            reported: false,
            deadline: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters, valid after any panic between two of its writes.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, state: BreakerState) {
        metrics::gauge!("kyc_remote_breaker_state", "agent" => self.agent.clone())
            .set(state.gauge());
        match state {
            BreakerState::Open => tracing::warn!(
                agent = %self.agent,
                open_ms = self.settings.open_ms,
                "circuit breaker open: calls fail at once until a probe succeeds"
            ),
            BreakerState::HalfOpen => {
                tracing::info!(agent = %self.agent, "circuit breaker half-open: probing")
            }
            BreakerState::Closed => tracing::info!(agent = %self.agent, "circuit breaker closed"),
        }
    }

    fn record(&self, probe: bool, failed: bool) -> Transition {
        let transition = self.step(probe, failed);
        if let Some(state) = transition {
            self.changed(state);
        }
        transition
    }

    fn step(&self, probe: bool, failed: bool) -> Transition {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + Duration::from_millis(self.settings.open_ms),
        };
        match &mut *state {
            State::HalfOpen { .. } if probe => {
                if failed {
                    *state = open;
                    Some(BreakerState::Open)
                } else {
                    *state = State::Closed {
                        consecutive: 0,
                        recent: VecDeque::new(),
                    };
                    Some(BreakerState::Closed)
                }
            }
            State::Closed {
                consecutive,
                recent,
            } => {
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let s = &self.settings;
                if s.failure_ratio > 0.0 {
                    if recent.len() == s.window {
                        recent.pop_front();
                    }
                    recent.push_back(failed);
                }
                let failures = recent.iter().filter(|&&f| f).count();
                let by_run = s.consecutive_failures > 0 && *consecutive >= s.consecutive_failures;
                let by_ratio = s.failure_ratio > 0.0
                    && recent.len() >= s.min_calls
                    && failures as f64 >= s.failure_ratio * recent.len() as f64;
                if failed && (by_run || by_ratio) {
                    *state = open;
                    Some(BreakerState::Open)
                } else {
                    None
                }
            }
            // A call let through while closed, ending after the breaker opened: already counted.
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }
}

impl Call<'_> {
    /// A call dropped unreported at or after `deadline` ran out of time: a failure.
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The remote answered (a report, or a refusal that is the request's fault).
    pub fn succeeded(mut self) -> Transition {
        self.reported = true;
        self.breaker.record(self.probe, false)
    }

    /// The remote could not be reached, timed out, or failed.
    pub fn failed(mut self) -> Transition {
        self.reported = true;
        self.breaker.record(self.probe, true)
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
        if timed_out {
            self.breaker.record(self.probe, true);
        } else if self.probe {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { probing } = &mut *state {
                *probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive_failures: u32, failure_ratio: f64) -> Breaker {
        Breaker::new(
            "remote",
            BreakerSettings {
                consecutive_failures,
                failure_ratio,
                window: 10,
                min_calls: 4,
                open_ms: 1_000,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_failures_opens_it_and_a_probe_after_the_cool_down_closes_it() {
        let breaker = breaker(3, 0.0);
        for _ in 0..2 {
            assert_eq!(breaker.call().unwrap().failed(), None);
        }
        assert_eq!(breaker.call().unwrap().failed(), Some(BreakerState::Open));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.call().is_none(), "open: calls fail at once");

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(breaker.call().is_none(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = breaker.call().expect("one probe goes through");
        assert!(breaker.call().is_none(), "only one probe at a time");
        assert_eq!(probe.succeeded(), Some(BreakerState::Closed));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(
            breaker.call().unwrap().failed(),
            None,
            "the run starts again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_timed_out_probe_opens_it_again() {
        let breaker = breaker(1, 0.0);
        assert_eq!(breaker.call().unwrap().failed(), Some(BreakerState::Open));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.call().unwrap().failed(), Some(BreakerState::Open));
        assert!(breaker.call().is_none());

        tokio::time::advance(Duration::from_secs(1)).await;
        drop(breaker.call().expect("the next probe"));
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "abandoned early: proves nothing, the next call probes"
        );
        let deadline = Instant::now() + Duration::from_millis(5);
        let probe = breaker.call().expect("another probe").until(deadline);
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(probe);
        assert_eq!(breaker.state(), BreakerState::Open, "timed out: open again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_at_its_deadline_is_a_failure_and_one_cancelled_before_is_not() {
        let breaker = breaker(2, 0.0);
        let deadline = Instant::now() + Duration::from_millis(100);
        drop(breaker.call().unwrap().until(deadline));
        drop(breaker.call().unwrap().until(deadline));
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "cancelled early: not counted"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(breaker.call().unwrap().until(deadline));
        drop(breaker.call().unwrap().until(deadline));
        assert_eq!(breaker.state(), BreakerState::Open, "two hung calls");
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_share_of_failures_opens_it_without_a_run() {
        let breaker = breaker(0, 0.5);
        // Alternating: never two failures in a row, but half of every window.
        let mut opened = None;
        for i in 0..8 {
            let call = breaker.call().expect("closed");
            let transition = if i % 2 == 0 {
                call.failed()
            } else {
                call.succeeded()
            };
            if transition.is_some() {
                opened = Some(i);
                break;
            }
        }
        // Calls 0..=4 hold three failures of five: the first window at least `min_calls` long
        // with half of it failed, ending on a failure.
        assert_eq!(opened, Some(4));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed() {
        let breaker = breaker(2, 0.5);
        for _ in 0..50 {
            assert_eq!(breaker.call().unwrap().succeeded(), None);
        }
        assert_eq!(breaker.call().unwrap().failed(), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
