//! The pipeline: runs each session's plan of agents under the session's deadline, records its
//! events, and decides.
//!
//! - `plan` checks the agents' dependency graph once at start-up;
//! - `run` executes one session: each agent starts as soon as its own dependencies are done,
//!   every agent runs in its own task (a panic is a failed check, not a lost session), and at the
//!   deadline whatever still runs is cancelled and the session completes with what it has;
//! - `context` carries the session id into every task and onto the blocking pool;
//! - `events` and `hub` record and publish the session's history;
//! - `policy` turns the checks into a decision.

mod context;
mod deadline;
mod events;
mod hub;
mod plan;
mod policy;
mod run;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt, Stream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agents::{Agent, AgentRegistry};
use crate::config::OrchestratorSettings;
use crate::domain::{CheckResult, Decision, NewSession, SessionId};
use crate::store::{Completion, SessionRecord, SessionStatus, SessionStore, StoreError};

pub use context::{CpuPool, SessionContext, panic_message, spawn_blocking_in_session};
pub use deadline::{Deadline, SessionClock};
pub use events::{Event, EventKind, TimeoutCause};
pub use plan::{Plan, PlanError, PlanNode};
pub use policy::{Policy, Verdict};

use hub::Hub;

/// Why the orchestrator could not start or read a session.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the orchestrator has drained for shutdown")]
    Drained,
}

/// A session that has been accepted and is running.
pub struct Started {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// Resolves when the session completes; dropping it does not cancel the session.
    pub outcome: JoinHandle<SessionOutcome>,
}

/// How a session ended, with the timings the benchmarks need.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub id: SessionId,
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// In plan order.
    pub checks: Vec<(String, CheckResult)>,
    /// From the session's start (before it was stored) to its `session.completed` event being
    /// published.
    pub elapsed: Duration,
    /// The longest dependency chain of the agents' measured run times: the part of `elapsed`
    /// that was the agents' own work rather than orchestration.
    pub critical_path: Duration,
}

struct Inner {
    plan: Plan,
    agents: Vec<Arc<dyn Agent>>,
    sandbox_agents: Vec<String>,
    session_deadline: Duration,
    fail_fast: bool,
    policy: Policy,
    store: Arc<dyn SessionStore>,
    hub: Hub,
    cpu: CpuPool,
    sessions: TaskTracker,
}

/// Runs sessions. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl Orchestrator {
    pub fn new(
        registry: AgentRegistry,
        settings: &OrchestratorSettings,
        policy: Policy,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                plan: registry.plan().clone(),
                agents: registry.agents().to_vec(),
                sandbox_agents: registry.sandbox_agents().to_vec(),
                session_deadline: settings.session_deadline(),
                fail_fast: settings.fail_fast,
                policy,
                store,
                hub: Hub::default(),
                cpu: CpuPool::new(settings.cpu_slots()),
                sessions: TaskTracker::new(),
            }),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// The agents a request's `sandbox` object may script.
    pub fn sandbox_agents(&self) -> &[String] {
        &self.inner.sandbox_agents
    }

    pub fn cpu_pool(&self) -> &CpuPool {
        &self.inner.cpu
    }

    /// Sessions running in this process.
    pub fn running(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Records the session and starts it. `permit` (the admission slot) is held until the
    /// session completes.
    pub async fn start(
        &self,
        request: NewSession,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Started, OrchestratorError> {
        let inner = &self.inner;
        if inner.sessions.is_closed() {
            // A request admitted before draining began, whose body arrived after the running
            // sessions were drained: nothing would wait for its session any more.
            return Err(OrchestratorError::Drained);
        }
        let id = SessionId::new();
        let clock = SessionClock::start();
        let deadline = clock.deadline(inner.session_deadline);
        let record = SessionRecord {
            id,
            reference: request.reference.as_ref().map(|r| r.as_str().to_owned()),
            status: SessionStatus::Running,
            created_at: clock.started_at(),
            deadline_at: clock.wall(deadline.instant()),
            completion: None,
        };
        let live = inner.hub.open(id);
        if let Err(error) = inner.store.insert(&record).await {
            inner.hub.close(id);
            return Err(error.into());
        }
        let span = tracing::info_span!("session", session_id = %id);
        let session = run::SessionRun::new(
            Arc::clone(&self.inner),
            id,
            request,
            clock,
            deadline,
            live,
            permit,
        );
        let guarded = Self::run_guarded(Arc::clone(inner), id, clock, session);
        let outcome = inner.sessions.spawn(
            SessionContext { session_id: id }
                .scope(guarded)
                .instrument(span),
        );
        Ok(Started {
            id,
            created_at: record.created_at,
            deadline_at: record.deadline_at,
            outcome,
        })
    }

    /// Runs the session; should the runner itself panic (a bug, never an agent's panic, which is
    /// a failed check), the session still ends: it is completed as `review` with reason
    /// `internal_error` and a terminal event, so followers finish and nothing stays `running`.
    async fn run_guarded(
        inner: Arc<Inner>,
        id: SessionId,
        clock: SessionClock,
        session: run::SessionRun,
    ) -> SessionOutcome {
        let panic = match AssertUnwindSafe(session.run()).catch_unwind().await {
            Ok(outcome) => return outcome,
            Err(panic) => panic,
        };
        tracing::error!(panic = %panic_message(panic), "session runner panicked");
        let completed = inner.store.get(id).await.ok().flatten();
        if completed.is_some_and(|s| s.status == SessionStatus::Completed) {
            // It panicked after its completion was stored: the record and history stand.
            inner.hub.close(id);
            return SessionOutcome {
                id,
                decision: Decision::Review,
                reasons: vec!["internal_error".to_owned()],
                checks: Vec::new(),
                elapsed: clock.elapsed(),
                critical_path: Duration::ZERO,
            };
        }
        let reasons = vec!["internal_error".to_owned()];
        let completion = Completion {
            completed_at: clock.now(),
            decision: Decision::Review,
            reasons: reasons.clone(),
            checks: BTreeMap::new(),
            duration_ms: clock.elapsed().as_secs_f64() * 1000.0,
        };
        let stored = inner.store.events_after(id, 0).await;
        let seq = stored
            .ok()
            .flatten()
            .map_or(0, |events| events.len() as u64)
            + 1;
        let terminal = Event {
            seq,
            ts: completion.completed_at,
            session_id: id,
            kind: EventKind::SessionCompleted {
                decision: completion.decision,
                reasons: completion.reasons.clone(),
                checks: BTreeMap::new(),
                duration_ms: completion.duration_ms,
            },
        }
        .to_record();
        if let Err(error) = inner.store.complete(id, &completion, &terminal).await {
            tracing::error!(%error, "could not store the session's completion");
        }
        // The runner's sender died with it; closing the hub's copy ends every follower, which
        // then reads the terminal event from the store.
        inner.hub.close(id);
        SessionOutcome {
            id,
            decision: Decision::Review,
            reasons,
            checks: Vec::new(),
            elapsed: clock.elapsed(),
            critical_path: Duration::ZERO,
        }
    }

    pub async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, OrchestratorError> {
        Ok(self.inner.store.get(id).await?)
    }

    /// The session's events after `after` as NDJSON lines: the history, then live events until
    /// `session.completed`. `None` when the session is unknown.
    pub async fn follow(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<impl Stream<Item = Bytes> + Send + 'static>, OrchestratorError> {
        Ok(hub::follow(&self.inner.hub, Arc::clone(&self.inner.store), id, after).await?)
    }

    /// Waits for every running session to complete (each is bounded by its deadline).
    pub async fn drain(&self) {
        self.inner.sessions.close();
        self.inner.sessions.wait().await;
    }
}
