//! One session's run: start each agent the moment its dependencies are done, collect every
//! result, stop at the deadline (or at a decisive failure with fail-fast), decide.
//!
//! Each agent runs in its own task on a `JoinSet`, so a panic comes back as a `JoinError` for
//! that agent alone and aborting the set cancels whatever still runs. The loop itself waits on
//! the deadline, so the session completes on time even if an agent ignores its cancellation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::deadline::{Deadline, SessionClock};
use super::events::{Emitter, EventKind, TimeoutCause};
use super::{Inner, PendingCompletion, SessionContext, SessionOutcome, panic_message};
use crate::agents::{AgentContext, AgentError, Output, Report, Verdict};
use crate::domain::{CheckResult, CheckStatus, NewSession, SessionId};
use crate::store::{Completion, EventRecord};

/// Why a session stopped before every agent had finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Deadline,
    /// Fail-fast: this agent's check already declined the session.
    FailFast(usize),
}

/// What an agent's task returns.
struct AgentRun {
    index: usize,
    elapsed: Duration,
    outcome: RunOutcome,
}

enum RunOutcome {
    Finished(Box<Result<Report, AgentError>>),
    TimedOut(TimeoutCause),
}

/// A session run again after its instance stopped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    /// The last stored event's `seq`.
    pub(super) after: u64,
    pub(super) attempt: u32,
}

pub(super) struct SessionRun {
    inner: Arc<Inner>,
    resume: Option<Resume>,
    id: SessionId,
    input: Arc<NewSession>,
    clock: SessionClock,
    deadline: Deadline,
    events: Emitter,
    /// Parent of every agent's token: cancelled when the session stops.
    cancel: CancellationToken,
    checks: Vec<Option<CheckResult>>,
    outputs: Vec<Option<Output>>,
    /// Dependencies each agent still waits for.
    waiting: Vec<usize>,
    started: Vec<Option<Instant>>,
    durations: Vec<Duration>,
    tasks: JoinSet<AgentRun>,
    running: HashMap<task::Id, usize>,
    /// Some agent was stopped by the session deadline (rather than its own timeout).
    deadline_hit: bool,
    /// The admission slot, given back just before `session.completed` is published, so a client
    /// that has seen the completion can always start another session.
    permit: Option<OwnedSemaphorePermit>,
}

impl SessionRun {
    // One caller, which has each of these in hand.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        inner: Arc<Inner>,
        id: SessionId,
        input: NewSession,
        clock: SessionClock,
        deadline: Deadline,
        live: broadcast::Sender<EventRecord>,
        permit: Option<OwnedSemaphorePermit>,
        resume: Option<Resume>,
    ) -> Self {
        let n = inner.plan.len();
        let waiting = inner.plan.nodes().iter().map(|n| n.deps.len()).collect();
        let after = resume.map_or(0, |r| r.after);
        let events = Emitter::new(id, clock, Arc::clone(&inner.store), live, after);
        Self {
            inner,
            resume,
            id,
            input: Arc::new(input),
            clock,
            deadline,
            events,
            cancel: CancellationToken::new(),
            checks: vec![None; n],
            outputs: vec![None; n],
            waiting,
            started: vec![None; n],
            durations: vec![Duration::ZERO; n],
            tasks: JoinSet::new(),
            running: HashMap::new(),
            deadline_hit: false,
            permit,
        }
    }

    pub(super) async fn run(mut self) -> SessionOutcome {
        metrics::counter!("kyc_sessions_started_total").increment(1);
        let _running = RunningGauge::new();
        let agents = self
            .inner
            .plan
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let deadline_at = self.clock.wall(self.deadline.instant());
        let first = match self.resume {
            None => EventKind::SessionStarted {
                deadline_at,
                agents,
            },
            Some(resume) => EventKind::SessionResumed {
                attempt: resume.attempt,
                deadline_at,
                agents,
            },
        };
        self.events.emit(first);
        for i in 0..self.inner.plan.len() {
            if self.waiting[i] == 0 {
                self.start_agent(i);
            }
        }
        let stop = self.drive().await;
        self.wind_down(stop);
        // Boxed: the completion's state (store writes, retries) is the largest part of this
        // future, and inline it would be reserved for the session's whole life.
        Box::pin(self.complete()).await
    }

    /// Waits for agents until all are done, the deadline passes or fail-fast stops the session.
    async fn drive(&mut self) -> Option<Stop> {
        // One timer for the whole session, not one per wake-up.
        let deadline = tokio::time::sleep_until(self.deadline.instant());
        tokio::pin!(deadline);
        while !self.running.is_empty() {
            tokio::select! {
                // Results that are already in are taken before the deadline is looked at.
                biased;
                Some(joined) = self.tasks.join_next_with_id() => {
                    if let Some(stop) = self.finish(joined) {
                        return Some(stop);
                    }
                }
                () = &mut deadline => return Some(Stop::Deadline),
            }
        }
        None
    }

    fn start_agent(&mut self, index: usize) {
        let node = &self.inner.plan.nodes()[index];
        let name = node.name.clone();
        let agent_deadline = self.deadline.cap(node.timeout);
        let cause = if agent_deadline == self.deadline.instant() {
            TimeoutCause::SessionDeadline
        } else {
            TimeoutCause::AgentTimeout
        };
        let upstream: BTreeMap<String, Output> = node
            .deps
            .iter()
            .filter_map(|&d| {
                let output = self.outputs[d].clone()?;
                Some((self.inner.plan.nodes()[d].name.clone(), output))
            })
            .collect();
        let cancel = self.cancel.child_token();
        let ctx = AgentContext {
            session_id: self.id,
            input: Arc::clone(&self.input),
            upstream,
            cancel: cancel.clone(),
            cpu: self.inner.cpu.clone(),
            deadline: agent_deadline,
        };
        let agent = Arc::clone(&self.inner.agents[index]);

        self.events.emit(EventKind::AgentStarted {
            agent: name.clone(),
        });
        let started = Instant::now();
        self.started[index] = Some(started);
        let work = async move {
            // However the task ends (result, timeout, abort), blocking work is told to stop.
            let _cancel_on_exit = cancel.drop_guard();
            let result = tokio::time::timeout_at(agent_deadline, agent.run(ctx)).await;
            let finished = Instant::now();
            // A timeout wrapper reports Ok for work that became ready in the same poll as its
            // deadline passed; such a late result is a timeout, not a check.
            let outcome = match result {
                Ok(result) if finished <= agent_deadline => RunOutcome::Finished(Box::new(result)),
                _ => RunOutcome::TimedOut(cause),
            };
            AgentRun {
                index,
                elapsed: finished - started,
                outcome,
            }
        };
        let span = tracing::info_span!("agent", agent = %name);
        let handle = self.tasks.spawn(
            SessionContext {
                session_id: self.id,
            }
            .scope(work)
            .instrument(span),
        );
        self.running.insert(handle.id(), index);
    }

    /// Records one agent's end and starts or skips what depended on it.
    fn finish(&mut self, joined: Result<(task::Id, AgentRun), JoinError>) -> Option<Stop> {
        let (index, check) = match joined {
            Ok((task_id, run)) => {
                self.running.remove(&task_id);
                (run.index, self.record(run))
            }
            Err(error) => {
                let index = self
                    .running
                    .remove(&error.id())
                    .expect("every agent task is registered when spawned");
                (index, self.record_crash(index, error))
            }
        };
        let decisive = self.inner.fail_fast && self.inner.policy.is_decisive(&check);
        let has_output = check.has_output();
        self.settle(index, check);
        if decisive {
            return Some(Stop::FailFast(index));
        }
        // A result taken at the deadline starts nothing new; the loop still collects the
        // results that are already in before it looks at the deadline.
        let past_deadline = self.deadline.is_past();
        let name = self.inner.plan.nodes()[index].name.clone();
        for j in self.inner.plan.nodes()[index].dependents.clone() {
            if past_deadline && self.checks[j].is_none() {
                self.deadline_hit = true;
                self.skip(j, "not started before the session deadline".to_owned());
                continue;
            }
            if !has_output {
                self.skip(j, format!("dependency `{name}` produced no output"));
                continue;
            }
            self.waiting[j] -= 1;
            if self.waiting[j] == 0 && self.checks[j].is_none() {
                self.start_agent(j);
            }
        }
        None
    }

    fn record(&mut self, run: AgentRun) -> CheckResult {
        let agent = self.inner.plan.nodes()[run.index].name.clone();
        self.durations[run.index] = run.elapsed;
        let duration_ms = millis(run.elapsed);
        let outcome = match run.outcome {
            RunOutcome::Finished(result) => Ok(*result),
            RunOutcome::TimedOut(cause) => Err(cause),
        };
        match outcome {
            Ok(Ok(report)) => {
                self.outputs[run.index] = report.output;
                let status = match report.verdict {
                    Verdict::Passed => CheckStatus::Passed,
                    Verdict::Failed => CheckStatus::Failed,
                };
                self.events.emit(EventKind::AgentCompleted {
                    agent: agent.clone(),
                    status,
                    score: report.score,
                    reasons: report.reasons.clone(),
                    duration_ms,
                });
                CheckResult {
                    status,
                    score: report.score,
                    reasons: report.reasons,
                    detail: None,
                    duration_ms: Some(duration_ms),
                    details: report.details,
                    extracted: report.extracted,
                }
            }
            Ok(Err(error)) => {
                let detail = match &error {
                    AgentError::Panicked(message) => {
                        tracing::error!(panic = %message, "agent panicked");
                        "the agent panicked".to_owned()
                    }
                    other => {
                        tracing::warn!(error = %other, "agent failed");
                        other.to_string()
                    }
                };
                self.failed(&agent, detail, Some(duration_ms))
            }
            Err(cause) => {
                self.deadline_hit |= cause == TimeoutCause::SessionDeadline;
                self.timed_out(&agent, cause, duration_ms)
            }
        }
    }

    /// Records an agent's final check: the one place every check (and its metrics) lands.
    fn settle(&mut self, index: usize, check: CheckResult) {
        let agent = self.inner.plan.nodes()[index].name.clone();
        if let Some(ms) = check.duration_ms {
            metrics::histogram!("kyc_agent_duration_seconds", "agent" => agent.clone())
                .record(ms / 1000.0);
        }
        metrics::counter!(
            "kyc_agent_checks_total",
            "agent" => agent,
            "status" => status_label(check.status)
        )
        .increment(1);
        self.checks[index] = Some(check);
    }

    /// An agent's task ended without returning: it panicked outside any blocking job.
    fn record_crash(&mut self, index: usize, error: JoinError) -> CheckResult {
        let agent = self.inner.plan.nodes()[index].name.clone();
        let elapsed = self.started[index].map(|s| s.elapsed()).unwrap_or_default();
        self.durations[index] = elapsed;
        let detail = if error.is_panic() {
            let message = panic_message(error.into_panic());
            tracing::error!(agent = %agent, panic = %message, "agent panicked");
            "the agent panicked"
        } else {
            "the agent's task was cancelled"
        };
        self.failed(&agent, detail.to_owned(), Some(millis(elapsed)))
    }

    fn failed(&mut self, agent: &str, detail: String, duration_ms: Option<f64>) -> CheckResult {
        self.events.emit(EventKind::AgentFailed {
            agent: agent.to_owned(),
            error: detail.clone(),
            duration_ms: duration_ms.unwrap_or_default(),
        });
        CheckResult {
            status: CheckStatus::Error,
            detail: Some(detail),
            duration_ms,
            ..CheckResult::skipped("")
        }
    }

    fn timed_out(&mut self, agent: &str, cause: TimeoutCause, duration_ms: f64) -> CheckResult {
        tracing::warn!(agent = %agent, ?cause, "agent timed out");
        self.events.emit(EventKind::AgentTimedOut {
            agent: agent.to_owned(),
            cause,
            duration_ms,
        });
        let detail = match cause {
            TimeoutCause::AgentTimeout => "the agent's own timeout passed",
            TimeoutCause::SessionDeadline => "the session deadline passed",
        };
        CheckResult {
            status: CheckStatus::Timeout,
            detail: Some(detail.to_owned()),
            duration_ms: Some(duration_ms),
            ..CheckResult::skipped("")
        }
    }

    /// Skips an agent that has not started, and everything downstream of it.
    fn skip(&mut self, index: usize, reason: String) {
        let mut pending = vec![(index, reason)];
        while let Some((i, reason)) = pending.pop() {
            if self.checks[i].is_some() || self.started[i].is_some() {
                continue;
            }
            let name = self.inner.plan.nodes()[i].name.clone();
            self.events.emit(EventKind::AgentSkipped {
                agent: name.clone(),
                reason: reason.clone(),
            });
            self.settle(i, CheckResult::skipped(reason));
            for &j in &self.inner.plan.nodes()[i].dependents {
                pending.push((j, format!("dependency `{name}` was skipped")));
            }
        }
    }

    /// Cancels what still runs and accounts for every agent that has no check yet.
    fn wind_down(&mut self, stop: Option<Stop>) {
        self.cancel.cancel();
        self.tasks.abort_all();
        let mut running: Vec<usize> = self.running.drain().map(|(_, i)| i).collect();
        running.sort_unstable();
        let stopper = |stop: Stop, plan: &super::Plan| match stop {
            Stop::Deadline => None,
            Stop::FailFast(by) => Some(plan.nodes()[by].name.clone()),
        };
        for i in running {
            let agent = self.inner.plan.nodes()[i].name.clone();
            let elapsed = self.started[i].map(|s| s.elapsed()).unwrap_or_default();
            let check = match stop.and_then(|s| stopper(s, &self.inner.plan)) {
                None => {
                    self.deadline_hit = true;
                    self.durations[i] = elapsed;
                    self.timed_out(&agent, TimeoutCause::SessionDeadline, millis(elapsed))
                }
                Some(by) => {
                    let reason = format!("cancelled: `{by}` already declined the session");
                    self.events.emit(EventKind::AgentSkipped {
                        agent,
                        reason: reason.clone(),
                    });
                    CheckResult::skipped(reason)
                }
            };
            self.settle(i, check);
        }
        let reason = match stop.and_then(|s| stopper(s, &self.inner.plan)) {
            Some(by) => format!("not started: `{by}` already declined the session"),
            None => "not started before the session deadline".to_owned(),
        };
        for i in 0..self.checks.len() {
            if self.checks[i].is_none() {
                self.skip(i, reason.clone());
            }
        }
    }

    async fn complete(mut self) -> SessionOutcome {
        let plan = &self.inner.plan;
        let checks: Vec<(String, CheckResult)> = plan
            .nodes()
            .iter()
            .zip(self.checks.drain(..))
            .map(|(node, check)| {
                (
                    node.name.clone(),
                    check.expect("every agent is accounted for"),
                )
            })
            .collect();
        let verdict = self.inner.policy.decide(
            checks.iter().map(|(name, check)| (name.as_str(), check)),
            self.deadline_hit,
        );
        let elapsed = self.clock.elapsed();
        let completion = Completion {
            completed_at: self.clock.now(),
            decision: verdict.decision,
            reasons: verdict.reasons.clone(),
            checks: checks.iter().cloned().collect(),
            duration_ms: millis(elapsed),
        };
        let terminal = self.events.next(EventKind::SessionCompleted {
            decision: completion.decision,
            reasons: completion.reasons.clone(),
            checks: completion.checks.clone(),
            duration_ms: completion.duration_ms,
        });
        let stored = self.events.close().await
            && match self
                .inner
                .store
                .complete(self.id, &completion, &terminal)
                .await
            {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(%error, "could not store the session's completion");
                    false
                }
            };
        drop(self.permit.take());
        if stored {
            self.events.publish(terminal);
        } else {
            // Followers see the completion once it is stored: the retry loop writes it (and
            // any events before it) as soon as the store answers.
            self.inner.pending_completion(PendingCompletion {
                id: self.id,
                events: self.events.take_unstored(),
                completion: completion.clone(),
                terminal,
            });
        }
        self.inner.hub.close(self.id);
        let elapsed = self.clock.elapsed();

        let decision = verdict.decision.as_str();
        metrics::counter!("kyc_sessions_completed_total", "decision" => decision).increment(1);
        metrics::histogram!("kyc_session_duration_seconds").record(elapsed.as_secs_f64());
        tracing::info!(
            decision,
            reasons = %verdict.reasons.join(","),
            duration_ms = completion.duration_ms,
            "session completed"
        );
        SessionOutcome {
            id: self.id,
            decision: verdict.decision,
            reasons: verdict.reasons,
            critical_path: plan.critical_path(&self.durations),
            checks,
            elapsed,
        }
    }
}

/// Counts a session in `kyc_sessions_running` for as long as it lives, however it ends.
struct RunningGauge;

impl RunningGauge {
    fn new() -> Self {
        metrics::gauge!("kyc_sessions_running").increment(1.0);
        Self
    }
}

impl Drop for RunningGauge {
    fn drop(&mut self) {
        metrics::gauge!("kyc_sessions_running").decrement(1.0);
    }
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

fn status_label(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Passed => "passed",
        CheckStatus::Failed => "failed",
        CheckStatus::Error => "error",
        CheckStatus::Timeout => "timeout",
        CheckStatus::Skipped => "skipped",
    }
}
