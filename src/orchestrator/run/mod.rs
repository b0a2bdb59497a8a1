//! One session's run: start each agent the moment its dependencies are done, collect every
//! result, stop at the deadline (or at a decisive failure with fail-fast), decide.
//!
//! Each agent runs in its own task on a `JoinSet`, so a panic comes back as a `JoinError` for
//! that agent alone and aborting the set cancels whatever still runs. The loop itself waits on
//! the deadline, so the session completes on time even if an agent ignores its cancellation.
//!
//! Here: the schedule (what starts, what is skipped, what is stopped). `checks`: how an agent's
//! end becomes its check. `complete`: the decision and its storage.

mod checks;
mod complete;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use checks::millis;

use super::deadline::{Deadline, SessionClock};
use super::events::{Emitter, EventKind, TimeoutCause};
use super::{Inner, SessionContext, SessionOutcome};
use crate::agents::{AgentContext, AgentError, Output, Report};
use crate::domain::{CheckResult, NewSession, SessionId};
use crate::store::EventRecord;

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

/// Where one agent of the session stands.
#[derive(Default)]
struct Slot {
    /// Dependencies it still waits for.
    waiting: usize,
    /// When its task started, once it has.
    started: Option<Instant>,
    /// How long it ran, once it ended.
    duration: Duration,
    /// Its check, once it is settled: its own result, or why it has none.
    check: Option<CheckResult>,
    /// What it handed its dependents.
    output: Option<Output>,
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
    /// Each agent's state, indexed like the plan's nodes.
    slots: Vec<Slot>,
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
        let slots = inner
            .plan
            .nodes()
            .iter()
            .map(|node| Slot {
                waiting: node.deps.len(),
                ..Slot::default()
            })
            .collect();
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
            slots,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            deadline_hit: false,
            permit,
        }
    }

    /// What resolves once this session's event writer has stored what it was handed.
    pub(super) fn writer_ended(&self) -> super::events::WriterEnded {
        self.events.writer_ended()
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
            if self.slots[i].waiting == 0 {
                self.start_agent(i);
            }
        }
        let stop = self.drive().await;
        // A fail point for the orchestrator's tests: the runner itself panics with its events
        // still on their way to the store.
        #[cfg(test)]
        if self
            .input
            .reference
            .as_ref()
            .is_some_and(|r| r.as_str() == super::PANIC_IN_RUNNER)
        {
            panic!("the runner panics, as a test asked");
        }
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
                let output = self.slots[d].output.clone()?;
                Some((self.inner.plan.nodes()[d].name.clone(), output))
            })
            .collect();
        let cancel = self.cancel.child_token();
        let ctx = AgentContext::new(
            self.id,
            Arc::clone(&self.input),
            upstream,
            cancel.clone(),
            self.inner.cpu.clone(),
            agent_deadline,
        );
        let agent = Arc::clone(&self.inner.agents[index]);

        self.events.emit(EventKind::AgentStarted {
            agent: name.clone(),
        });
        let started = Instant::now();
        self.slots[index].started = Some(started);
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
            if past_deadline && self.slots[j].check.is_none() {
                self.deadline_hit = true;
                self.skip(j, "not started before the session deadline".to_owned());
                continue;
            }
            if !has_output {
                self.skip(j, format!("dependency `{name}` produced no output"));
                continue;
            }
            self.slots[j].waiting -= 1;
            if self.slots[j].waiting == 0 && self.slots[j].check.is_none() {
                self.start_agent(j);
            }
        }
        None
    }

    /// Skips an agent that has not started, and everything downstream of it.
    fn skip(&mut self, index: usize, reason: String) {
        let mut pending = vec![(index, reason)];
        while let Some((i, reason)) = pending.pop() {
            if self.slots[i].check.is_some() || self.slots[i].started.is_some() {
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
            let elapsed = self.slots[i]
                .started
                .map(|s| s.elapsed())
                .unwrap_or_default();
            let check = match stop.and_then(|s| stopper(s, &self.inner.plan)) {
                None => {
                    self.deadline_hit = true;
                    self.slots[i].duration = elapsed;
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
        for i in 0..self.slots.len() {
            if self.slots[i].check.is_none() {
                self.skip(i, reason.clone());
            }
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
