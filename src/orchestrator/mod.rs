//! The pipeline: runs each session's plan of agents under the session's deadline, records its
//! events, and decides.
//!
//! - `plan` checks the agents' dependency graph once at start-up;
//! - `run` executes one session: each agent starts as soon as its own dependencies are done,
//!   every agent runs in its own task (a panic is a failed check, not a lost session), and at the
//!   deadline whatever still runs is cancelled and the session completes with what it has;
//! - `events` and `hub` record and publish the session's history;
//! - `policy` turns the checks into a decision;
//! - `durability` keeps sessions alive across crashes: stored inputs, recovery of the sessions of
//!   a stopped instance, retried completions, erasure and retention.

mod capture;
mod deadline;
mod durability;
mod events;
mod hub;
mod images;
mod plan;
mod policy;
mod run;
#[cfg(test)]
mod tests;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt, Stream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agents::{Agent, AgentRegistry};
use crate::capture::CaptureLinks;
use crate::challenges::Challenges;
use crate::config::OrchestratorSettings;
use crate::cpu::{CpuPool, SessionContext, panic_message};
use crate::domain::{
    ChallengeRefusal, CheckResult, Decision, NewSession, Owner, Principal, SessionId, SessionQuery,
};
use crate::store::{
    BlobError, Closing, Completion, EventRecord, IdempotencyKey, Inserted, SessionRecord,
    SessionStatus, SessionStore, StoreError, StoredInputs,
};
use crate::telemetry::ErrorChain;

pub use deadline::{Deadline, SessionClock};
pub use durability::{Durability, Maintenance, Sweep};
pub use events::{Event, EventKind, TimeoutCause};
pub use images::{ImagePart, SessionImages};
pub use plan::{Plan, PlanError, PlanNode};
pub use policy::{Policy, Verdict};

use hub::Hub;

/// Why the orchestrator could not start or read a session.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot store the session's inputs")]
    Inputs(#[from] BlobError),
    #[error("the orchestrator has drained for shutdown")]
    Drained,
    #[error("an agent's models are still loading")]
    NotReady,
    /// The selfie names a challenge it may not answer.
    #[error(transparent)]
    Challenge(#[from] ChallengeRefusal),
    /// A capture link may start no more sessions.
    #[error(transparent)]
    Capture(#[from] crate::domain::CaptureRefusal),
}

/// What starting a session with an idempotency key did.
pub enum Start {
    New(Started),
    /// The key already names a session: the same request (`same_request`) or another one.
    Existing {
        id: SessionId,
        same_request: bool,
    },
}

/// A completion the store did not take, with the events before it (`closing.before`): retried
/// until it does.
pub(crate) struct PendingCompletion {
    pub(crate) id: SessionId,
    pub(crate) completion: Completion,
    pub(crate) closing: Closing,
}

/// A session that has been accepted and is running.
pub struct Started {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// Resolves when the session completes; dropping it does not cancel the session.
    pub outcome: JoinHandle<SessionOutcome>,
    /// The session's events from its first one, for [`Orchestrator::follow_new`].
    pub events: Subscription,
}

/// A subscription to a new session's live events, taken before it could publish any: its
/// follower reads them all from memory, and the store only if it falls behind.
pub struct Subscription {
    id: SessionId,
    live: tokio::sync::broadcast::Receiver<EventRecord>,
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

/// The reference that makes a session's runner panic, in the orchestrator's own tests.
#[cfg(test)]
const PANIC_IN_RUNNER: &str = "panic-in-runner";

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
    durability: Durability,
    recovery_window: Duration,
    /// Fingerprint of the plan, recorded on every session.
    plan_version: String,
    pending: Mutex<Vec<PendingCompletion>>,
    /// Sessions whose insert failed without saying whether it committed (a timeout, a
    /// connection lost on the commit's way back): the client was told 503, and a row that did
    /// commit would stay `running` with no runner on a live instance. Settled by maintenance.
    /// Each with the number of times the store has said it holds no such session (a commit
    /// still on its way may land after the first look). At most `MAX_DOUBTFUL`.
    doubtful: Mutex<Vec<(SessionId, u8)>>,
    /// The store answered the last heartbeat.
    store_ok: AtomicBool,
    /// Where a selfie's challenge is taken; without, a selfie naming one is refused.
    challenges: Option<Arc<Challenges>>,
    /// Capture links, which start sessions of their own; purged by the retention sweep.
    capture: Option<Arc<CaptureLinks>>,
}

impl Inner {
    fn doubtful(&self, id: SessionId) {
        let mut doubtful = self
            .doubtful
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A store down for long refuses thousands of sessions; past this many, the oldest
        // doubts are let go (their rows, if any, are completed when this instance next starts,
        // as a stopped instance's orphans).
        if doubtful.len() >= durability::MAX_DOUBTFUL {
            doubtful.remove(0);
        }
        doubtful.push((id, 0));
    }

    fn pending_completion(&self, pending: PendingCompletion) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(pending);
    }
}

/// Runs sessions. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl Orchestrator {
    /// The orchestrator of `registry`'s agents, once their dependencies make a plan: every
    /// dependency configured, listed once, and no cycle. `durability` says where inputs are
    /// kept and how long idempotency keys last.
    pub fn new(
        registry: AgentRegistry,
        settings: &OrchestratorSettings,
        policy: Policy,
        store: Arc<dyn SessionStore>,
        durability: Durability,
    ) -> Result<Self, PlanError> {
        let sandbox = registry.sandbox_agents().to_vec();
        let (plan, agents) = Plan::of(registry.into_entries())?;
        // In the plan's order, as errors and readiness list agents.
        let sandbox_agents = plan
            .nodes()
            .iter()
            .filter(|node| sandbox.contains(&node.name))
            .map(|node| node.name.clone())
            .collect();
        let plan_version = plan.version();
        Ok(Self {
            inner: Arc::new(Inner {
                plan,
                agents,
                sandbox_agents,
                session_deadline: settings.session_deadline(),
                fail_fast: settings.fail_fast,
                policy,
                store,
                hub: Hub::default(),
                cpu: CpuPool::new(settings.cpu_slots()),
                sessions: TaskTracker::new(),
                durability,
                recovery_window: Duration::from_millis(settings.recovery_window_ms),
                plan_version,
                pending: Mutex::default(),
                doubtful: Mutex::default(),
                store_ok: AtomicBool::new(true),
                challenges: None,
                capture: None,
            }),
        })
    }

    /// Sessions take their selfie's challenge from `challenges`.
    pub fn with_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("challenges are set before the orchestrator is shared")
            .challenges = Some(challenges);
        self
    }

    /// Where liveness challenges are issued, when they are.
    pub fn challenges(&self) -> Option<&Arc<Challenges>> {
        self.inner.challenges.as_ref()
    }

    /// The challenge the selfie names, taken for session `id`: its steps go with the session.
    async fn take_challenge(
        &self,
        owner: &Owner,
        id: SessionId,
        request: &mut NewSession,
    ) -> Result<(), OrchestratorError> {
        let Some(challenge) = request.selfie.challenge.as_mut() else {
            return Ok(());
        };
        let challenges = self
            .inner
            .challenges
            .as_ref()
            .ok_or(ChallengeRefusal::Unknown)?;
        challenge.steps = challenges.take(owner, &challenge.id, id).await??;
        Ok(())
    }

    /// The steps of the challenge the selfie names, read without taking it: a repeated
    /// request is compared with the first as that one was stored.
    async fn read_challenge(
        &self,
        owner: &Owner,
        request: &mut NewSession,
    ) -> Result<(), OrchestratorError> {
        if let (Some(challenge), Some(challenges)) = (
            request.selfie.challenge.as_mut(),
            self.inner.challenges.as_ref(),
        ) {
            challenge.steps = challenges
                .steps(owner, &challenge.id)
                .await?
                .unwrap_or_default();
        }
        Ok(())
    }

    /// Whether the store answered this instance's last heartbeat.
    pub fn store_available(&self) -> bool {
        self.inner.store_ok.load(Ordering::Relaxed)
    }

    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Whether every agent can run: false while models are loading after start-up.
    pub fn agents_ready(&self) -> bool {
        self.inner.agents.iter().all(|agent| agent.ready())
    }

    /// Whether an agent's models failed to load: this instance will never be ready.
    pub fn agents_failed(&self) -> bool {
        self.inner.agents.iter().any(|agent| agent.failed())
    }

    /// The agents that run degraded, each with why (a remote agent's open circuit breaker).
    pub fn degraded_agents(&self) -> Vec<(&str, &'static str)> {
        self.inner
            .plan
            .nodes()
            .iter()
            .zip(&self.inner.agents)
            .filter_map(|(node, agent)| Some((node.name.as_str(), agent.degraded()?)))
            .collect()
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

    /// Records the session (its inputs first, when they are kept) and starts it. `permit` (the
    /// admission slot) is held until the session completes.
    pub async fn start(
        &self,
        request: NewSession,
        by: &Principal,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Started, OrchestratorError> {
        match self.start_once(request, by, permit, None).await? {
            Start::New(started) => Ok(started),
            Start::Existing { .. } => unreachable!("only a keyed start finds an existing session"),
        }
    }

    /// As `start`, but a `key` already used by the same owner within the idempotency window
    /// names its session instead of starting another.
    pub async fn start_once(
        &self,
        mut request: NewSession,
        by: &Principal,
        permit: Option<OwnedSemaphorePermit>,
        key: Option<String>,
    ) -> Result<Start, OrchestratorError> {
        let inner = &self.inner;
        if inner.sessions.is_closed() {
            // A request admitted before draining began, whose body arrived after the running
            // sessions were drained: nothing would wait for its session any more.
            return Err(OrchestratorError::Drained);
        }
        if !self.agents_ready() {
            return Err(OrchestratorError::NotReady);
        }
        if let Some(key) = &key
            && let Some((id, fingerprint)) = inner
                .store
                .find_key(&by.owner, key, chrono::Utc::now())
                .await?
        {
            self.read_challenge(&by.owner, &mut request).await?;
            let request = Arc::new(request);
            let ours =
                tokio::task::spawn_blocking(move || StoredInputs::encode(&request).fingerprint())
                    .await
                    .expect("encoding does not panic");
            return Ok(Start::Existing {
                id,
                same_request: fingerprint == ours,
            });
        }
        let id = SessionId::new();
        self.take_challenge(&by.owner, id, &mut request).await?;
        let request = Arc::new(request);
        let fingerprint = self.keep_inputs(id, &request, key.is_some()).await?;
        let clock = SessionClock::start();
        let deadline = clock.deadline(inner.session_deadline);
        let record = SessionRecord {
            id,
            owner: by.owner.clone(),
            created_by: Some(by.key_id.clone()),
            reference: request.reference.as_ref().map(|r| r.as_str().to_owned()),
            status: SessionStatus::Running,
            created_at: clock.started_at(),
            deadline_at: clock.wall(deadline.instant()),
            plan_version: inner.plan_version.clone(),
            instance: inner.store.instance().to_owned(),
            attempts: 0,
            completion: None,
            images_erased_at: None,
            erased_at: None,
            erased_by: None,
            review: None,
        };
        let key = key
            .zip(fingerprint)
            .map(|(key, fingerprint)| IdempotencyKey {
                key,
                fingerprint,
                expires_at: record.created_at + inner.durability.idempotency_ttl,
            });
        let live = inner.hub.open(id);
        let inserted = inner.store.insert(&record, key.as_ref()).await;
        if !matches!(inserted, Ok(Inserted::New)) {
            inner.hub.close(id);
            self.forget_inputs(id).await;
        }
        if let Err(error) = &inserted
            && error.is_unavailable()
        {
            inner.doubtful(id);
        }
        if let Inserted::Existing { id, same_request } = inserted? {
            return Ok(Start::Existing { id, same_request });
        }
        let request = Arc::try_unwrap(request).unwrap_or_else(|shared| (*shared).clone());
        let started = self.spawn_run(record, request, clock, deadline, live, permit, None);
        Ok(Start::New(started))
    }

    /// Writes the request's inputs to the blob directory (when one is configured) and returns
    /// their fingerprint when asked for it.
    async fn keep_inputs(
        &self,
        id: SessionId,
        request: &Arc<NewSession>,
        fingerprint: bool,
    ) -> Result<Option<String>, OrchestratorError> {
        let blobs = self.inner.durability.blobs.clone();
        if blobs.is_none() && !fingerprint {
            return Ok(None);
        }
        let request = Arc::clone(request);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let inputs = StoredInputs::encode(&request);
            if let Some(blobs) = blobs {
                blobs.save(id, &inputs)?;
            }
            Ok::<_, BlobError>(fingerprint.then(|| inputs.fingerprint()))
        })
        .await
        .expect("storing inputs does not panic")
        .map_err(OrchestratorError::from)
    }

    async fn forget_inputs(&self, id: SessionId) {
        let Some(blobs) = self.inner.durability.blobs.clone() else {
            return;
        };
        let deleted = tokio::task::spawn_blocking(move || blobs.delete(id)).await;
        if let Ok(Err(error)) = deleted {
            tracing::warn!(session_id = %id, error = %ErrorChain(&error), "could not delete unused session inputs");
        }
    }

    /// Runs a recorded session in its own task.
    #[allow(clippy::too_many_arguments)]
    fn spawn_run(
        &self,
        record: SessionRecord,
        request: NewSession,
        clock: SessionClock,
        deadline: Deadline,
        live: tokio::sync::broadcast::Sender<EventRecord>,
        permit: Option<OwnedSemaphorePermit>,
        resume: Option<run::Resume>,
    ) -> Started {
        let inner = &self.inner;
        let id = record.id;
        let span = tracing::info_span!("session", session_id = %id);
        let events = Subscription {
            id,
            live: live.subscribe(),
        };
        let session = run::SessionRun::new(
            Arc::clone(inner),
            id,
            request,
            clock,
            deadline,
            live,
            permit,
            resume,
        );
        let guarded = Self::run_guarded(Arc::clone(inner), id, clock, session);
        let outcome = inner.sessions.spawn(
            SessionContext { session_id: id }
                .scope(guarded)
                .instrument(span),
        );
        Started {
            id,
            created_at: record.created_at,
            deadline_at: clock.wall(deadline.instant()),
            outcome,
            events,
        }
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
        let writer_ended = session.writer_ended();
        let panic = match AssertUnwindSafe(session.run()).catch_unwind().await {
            Ok(outcome) => return outcome,
            Err(panic) => panic,
        };
        tracing::error!(panic = %panic_message(panic), "session runner panicked");
        // Boxed: inline, this rare path's state would be reserved in every session's task.
        Box::pin(Self::conclude_panicked(inner, id, clock, writer_ended)).await
    }

    async fn conclude_panicked(
        inner: Arc<Inner>,
        id: SessionId,
        clock: SessionClock,
        writer_ended: events::WriterEnded,
    ) -> SessionOutcome {
        // The runner's emitter went with the panic, which closed its writer's queue: the writer
        // stores what was queued and ends. Only then does the store hold every event numbered,
        // and the conclusion's terminal event take the next number.
        writer_ended.wait().await;
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
        // The runner's sender died with it; closing the hub's copy ends every follower, which
        // then reads the terminal event from the store.
        durability::conclude(inner, id, clock, "internal_error", Vec::new()).await
    }

    /// The session, if `owner` owns it.
    pub async fn session(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, OrchestratorError> {
        Ok(self.inner.store.find(owner, id).await?)
    }

    /// `owner`'s sessions that `query` asks for, newest first.
    pub async fn sessions(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, OrchestratorError> {
        Ok(self.inner.store.list(owner, query).await?)
    }

    /// The events after `after` of a session of `owner`, as NDJSON lines: the history, then
    /// live events until `session.completed`. `None` when `owner` has no such session.
    pub async fn follow(
        &self,
        owner: &Owner,
        id: SessionId,
        after: u64,
    ) -> Result<Option<impl Stream<Item = Bytes> + Send + 'static>, OrchestratorError> {
        if self.inner.store.find(owner, id).await?.is_none() {
            return Ok(None);
        }
        self.follow_started(id, after).await
    }

    /// As [`Orchestrator::follow`], for the caller of the `start` that returned `id` (its
    /// session, or the one its own idempotency key named): it is the caller's, so no store
    /// query asks again whose it is.
    pub async fn follow_started(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<impl Stream<Item = Bytes> + Send + 'static>, OrchestratorError> {
        Ok(hub::follow(
            &self.inner.hub,
            Arc::clone(&self.inner.store),
            id,
            after,
            self.inner.durability.poll_interval,
        )
        .await?)
    }

    /// The NDJSON lines of a session this instance has just started (`start_once` gave
    /// `Start::New`), from its first event, by its `events`. It cannot fail: the events come
    /// from memory, and should the follower fall behind, a store that does not answer is asked
    /// again while the session runs, so an accepted session is never reported refused.
    pub fn follow_new(&self, events: Subscription) -> impl Stream<Item = Bytes> + Send + 'static {
        hub::follow_new(
            Arc::clone(&self.inner.store),
            events.id,
            events.live,
            self.inner.durability.poll_interval,
        )
    }

    /// Waits for every running session to complete (each is bounded by its deadline).
    pub async fn drain(&self) {
        self.inner.sessions.close();
        self.inner.sessions.wait().await;
    }
}
