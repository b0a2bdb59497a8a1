//! Nothing accepted is lost: what keeps sessions alive across a crash, an outage of the store
//! or the end of an instance, and what erases them when their time is up.
//!
//! - Inputs are written to the blob directory before a session is accepted (`Orchestrator::start`).
//! - Every instance heartbeats; the sessions of an instance silent for the lease are claimed by
//!   one survivor (or by the same service restarted) and re-run from their inputs, or, past the
//!   recovery window or without inputs, completed as `review` with reason `interrupted`.
//! - A completion the store refused is kept and retried, with the events before it, until the
//!   store takes it.
//! - A session whose insert failed without an answer (the client was told 503) is looked up
//!   once the store answers: a row that committed all the same is completed as `interrupted`,
//!   since its inputs were let go with the refusal.
//! - Erasure and retention delete images and extracted personal data, keeping the decision.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::time::MissedTickBehavior;

use super::events::{Event, EventKind};
use super::run::Resume;
use super::{
    Inner, Orchestrator, OrchestratorError, PendingCompletion, SessionClock, SessionOutcome,
};
use crate::config::RetentionSettings;
use crate::domain::{Decision, ImageLimits, Principal, SessionId};
use crate::store::{
    Blobs, Closing, Completion, Erasure, Expiry, SessionRecord, StoreError, StoredInputs,
    answered_within, stored_through,
};
use crate::telemetry::ErrorChain;

/// What the orchestrator keeps and how it reads it back.
#[derive(Debug, Clone)]
pub struct Durability {
    /// Where inputs are kept; `None` keeps none (nothing can be re-run).
    pub blobs: Option<Blobs>,
    /// Limits stored inputs are checked against again when a session is re-run.
    pub input_limits: ImageLimits,
    /// How often a follower of a session running elsewhere reads the store.
    pub poll_interval: Duration,
    pub idempotency_ttl: chrono::Duration,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            blobs: None,
            input_limits: ImageLimits {
                max_bytes: usize::MAX,
                max_pixels: u64::MAX,
                max_side: u32::MAX,
            },
            poll_interval: Duration::from_millis(100),
            idempotency_ttl: chrono::Duration::hours(24),
        }
    }
}

/// The schedule of the background upkeep.
#[derive(Debug, Clone)]
pub struct Maintenance {
    pub heartbeat: Duration,
    /// An instance silent this long has stopped.
    pub lease: Duration,
    pub retention: RetentionSettings,
}

/// What one retention sweep erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub images: usize,
    pub personal_data: usize,
    pub keys: u64,
    /// Expired liveness challenges.
    pub challenges: u64,
    /// Expired capture links.
    pub capture_links: u64,
    /// Rows of instances gone for a day (`FORGET_INSTANCES_AFTER`).
    pub instances: u64,
}

/// How long an instance stays registered after its last heartbeat (once recovery has moved its
/// sessions): far beyond any lease, so that a paused machine coming back is still known, and
/// short enough that a fleet replaced daily keeps a table of a few rows.
pub(crate) const FORGET_INSTANCES_AFTER: chrono::Duration = chrono::Duration::days(1);

/// Store calls per retention pass at most, so one pass always ends.
const MAX_SWEEP_BATCHES: usize = 1000;
/// Orphans claimed per recovery pass.
const RECOVERY_BATCH: usize = 64;
/// Sessions whose insert had no answer that an instance keeps looking up.
pub(super) const MAX_DOUBTFUL: usize = 10_000;
/// How many times the store must say it holds no such session before the doubt is let go.
const NOT_FOUND_LOOKS: u8 = 3;

impl Orchestrator {
    /// Heartbeats, recovers, retries and sweeps on `schedule` until dropped.
    pub async fn maintain(self, schedule: Maintenance) {
        let every = |period: Duration| {
            let mut interval = tokio::time::interval(period.max(Duration::from_millis(10)));
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        };
        let heartbeat = async {
            let mut tick = every(schedule.heartbeat);
            loop {
                tick.tick().await;
                if self.heartbeat(schedule.heartbeat).await {
                    self.retry_pending().await;
                }
            }
        };
        let recovery = async {
            let mut tick = every(schedule.lease / 2);
            loop {
                tick.tick().await;
                self.settle_doubtful().await;
                if let Err(error) = self.recover(schedule.lease).await {
                    tracing::warn!(error = %ErrorChain(&error), "could not look for sessions to recover");
                }
            }
        };
        let retention = async {
            let mut tick = every(Duration::from_secs(schedule.retention.sweep_interval_s));
            loop {
                tick.tick().await;
                match self.sweep(&schedule.retention, Utc::now()).await {
                    Ok(sweep) if sweep != Sweep::default() => {
                        tracing::info!(
                            images = sweep.images,
                            personal_data = sweep.personal_data,
                            idempotency_keys = sweep.keys,
                            challenges = sweep.challenges,
                            capture_links = sweep.capture_links,
                            instances = sweep.instances,
                            "retention sweep erased expired data"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "retention sweep failed")
                    }
                }
            }
        };
        futures::join!(heartbeat, recovery, retention);
    }

    /// Tells the store this instance is alive; `false` when the store did not answer.
    /// A store that has not answered `within` counts as not answering, so that readiness does
    /// not say 200 while the call waits on a half-open connection.
    pub async fn heartbeat(&self, within: Duration) -> bool {
        let result = answered_within(
            within,
            "the heartbeat",
            self.inner.store.heartbeat(Utc::now()),
        )
        .await;
        let ok = result.is_ok();
        let was = self.inner.store_ok.swap(ok, Ordering::Relaxed);
        metrics::gauge!("kyc_store_up").set(if ok { 1.0 } else { 0.0 });
        match result {
            Err(error) if was => {
                tracing::error!(error = %ErrorChain(&error), "the session store stopped answering; readiness is 503");
            }
            Ok(()) if !was => tracing::info!("the session store answers again"),
            _ => {}
        }
        ok
    }

    /// Claims and resumes the running sessions of instances silent for `lease`; returns how
    /// many it claimed.
    pub async fn recover(&self, lease: Duration) -> Result<usize, StoreError> {
        let inner = &self.inner;
        // Not while the models load either: a claimed session would run at once and fail on
        // every agent that is not ready. Another instance, or this one a moment later, takes it.
        if inner.sessions.is_closed() || !self.agents_ready() {
            return Ok(0);
        }
        let now = Utc::now();
        let silent_since = now - chrono::Duration::from_std(lease).unwrap_or_default();
        let orphans = inner.store.orphans(silent_since, RECOVERY_BATCH).await?;
        let mut claimed = 0;
        for record in orphans {
            let clock = SessionClock::start();
            let deadline = clock.deadline(inner.session_deadline);
            let claim = inner
                .store
                .claim(record.id, &record.instance, clock.wall(deadline.instant()))
                .await?;
            if !claim {
                continue;
            }
            claimed += 1;
            let id = record.id;
            let span = tracing::info_span!("session", session_id = %id);
            span.in_scope(|| {
                tracing::warn!(
                    stopped_instance = %record.instance,
                    attempt = record.attempts + 1,
                    "recovering a session of a stopped instance"
                );
            });
            let after = match inner.store.events_after(id, 0).await {
                Ok(events) => events.map_or(0, |events| events.len() as u64),
                Err(error) => {
                    tracing::warn!(session_id = %id, error = %ErrorChain(&error), "cannot read the session's events");
                    continue;
                }
            };
            match self.stored_inputs(&record, now).await {
                Ok(request) => {
                    metrics::counter!("kyc_sessions_recovered_total", "outcome" => "resumed")
                        .increment(1);
                    let live = inner.hub.open(id);
                    let resume = Resume {
                        after,
                        attempt: record.attempts + 1,
                    };
                    self.spawn_run(record, request, clock, deadline, live, None, Some(resume));
                }
                Err(reason) => {
                    metrics::counter!("kyc_sessions_recovered_total", "outcome" => "interrupted")
                        .increment(1);
                    let inner = Arc::clone(inner);
                    let interrupted = EventKind::SessionInterrupted { reason };
                    inner.sessions.spawn(
                        conclude(
                            Arc::clone(&inner),
                            id,
                            clock,
                            "interrupted",
                            vec![interrupted],
                        )
                        .instrument_session(id),
                    );
                }
            }
        }
        Ok(claimed)
    }

    /// Looks up the sessions whose insert had no answer. One the store holds, still `running`
    /// and this instance's, has no runner (the client was told 503 and its inputs were let go):
    /// it is completed as `review` with reason `interrupted`, so nothing stays running. One the
    /// store has not held at three looks never was. When the store does not answer, the rest
    /// wait for the next round.
    pub async fn settle_doubtful(&self) {
        let inner = &self.inner;
        let doubtful = std::mem::take(
            &mut *inner
                .doubtful
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let mut unsettled = Vec::new();
        let mut doubtful = doubtful.into_iter();
        for (id, looks) in doubtful.by_ref() {
            let record = match inner.store.get(id).await {
                Ok(record) => record,
                Err(error) => {
                    // The store is not answering: every other look would fail the same way.
                    tracing::warn!(session_id = %id, error = %ErrorChain(&error), "cannot look up a session whose insert had no answer");
                    unsettled.push((id, looks));
                    break;
                }
            };
            let Some(record) = record else {
                if looks + 1 < NOT_FOUND_LOOKS {
                    unsettled.push((id, looks + 1));
                }
                continue;
            };
            if record.status != crate::domain::SessionStatus::Running
                || record.instance != inner.store.instance()
            {
                continue;
            }
            tracing::warn!(
                session_id = %id,
                "a session whose insert had no answer was stored all the same; completing it as interrupted"
            );
            metrics::counter!("kyc_sessions_recovered_total", "outcome" => "interrupted")
                .increment(1);
            let interrupted = EventKind::SessionInterrupted {
                reason: "its creation was refused (503) when the store's answer was lost".into(),
            };
            let clock = SessionClock::start();
            inner.sessions.spawn(
                conclude(
                    Arc::clone(inner),
                    id,
                    clock,
                    "interrupted",
                    vec![interrupted],
                )
                .instrument_session(id),
            );
        }
        unsettled.extend(doubtful);
        let mut kept = inner
            .doubtful
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.extend(unsettled);
        let excess = kept.len().saturating_sub(MAX_DOUBTFUL);
        kept.drain(..excess);
    }

    /// The inputs to re-run `record` with, or why it cannot be re-run.
    async fn stored_inputs(
        &self,
        record: &SessionRecord,
        now: chrono::DateTime<Utc>,
    ) -> Result<crate::domain::NewSession, String> {
        let age = (now - record.created_at).to_std().unwrap_or_default();
        if age > self.inner.recovery_window {
            return Err(format!(
                "created {} s ago, past the recovery window of {} s",
                age.as_secs(),
                self.inner.recovery_window.as_secs()
            ));
        }
        let Some(blobs) = self.inner.durability.blobs.clone() else {
            return Err("this store keeps no session inputs".into());
        };
        let limits = self.inner.durability.input_limits;
        let id = record.id;
        tokio::task::spawn_blocking(move || match blobs.load(id) {
            Ok(Some(bytes)) => {
                StoredInputs::decode(bytes, &limits).map_err(|e| ErrorChain(&e).to_string())
            }
            Ok(None) => Err("the session's inputs are gone".into()),
            Err(error) => Err(ErrorChain(&error).to_string()),
        })
        .await
        .unwrap_or_else(|_| Err("reading the session's inputs panicked".into()))
    }

    /// Writes the completions (and the events before them) that the store refused earlier.
    pub async fn retry_pending(&self) {
        let pending: Vec<PendingCompletion> = std::mem::take(
            &mut *self
                .inner
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for mut completion in pending {
            match store_completion(&self.inner, &mut completion).await {
                Ok(()) => {
                    tracing::info!(session_id = %completion.id, "stored a delayed completion");
                }
                Err(error) if error.is_unavailable() => self.inner.pending_completion(completion),
                Err(error) => tracing::error!(
                    session_id = %completion.id,
                    error = %ErrorChain(&error),
                    "giving up on a delayed completion"
                ),
            }
        }
    }

    /// Deletes the images and extracted personal data of a completed session of `by`'s owner,
    /// recording `by`'s key as the eraser.
    pub async fn erase(&self, by: &Principal, id: SessionId) -> Result<Erasure, OrchestratorError> {
        let Some(record) = self.inner.store.find(&by.owner, id).await? else {
            return Ok(Erasure::NotFound);
        };
        if record.completion.is_none() {
            return Ok(Erasure::Running);
        }
        self.delete_inputs(vec![id]).await?;
        let erased = self
            .inner
            .store
            .erase(id, Some(&by.owner), Some(&by.key_id), Utc::now())
            .await?;
        if erased == Erasure::Erased {
            metrics::counter!("kyc_sessions_erased_total", "by" => "request").increment(1);
        }
        Ok(erased)
    }

    async fn delete_inputs(&self, ids: Vec<SessionId>) -> Result<(), OrchestratorError> {
        let Some(blobs) = self.inner.durability.blobs.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || ids.iter().try_for_each(|&id| blobs.delete(id)))
            .await
            .expect("deleting files does not panic")?;
        Ok(())
    }

    /// Erases what `retention` says has expired by `now`, in batches.
    pub async fn sweep(
        &self,
        retention: &RetentionSettings,
        now: chrono::DateTime<Utc>,
    ) -> Result<Sweep, OrchestratorError> {
        let store = &self.inner.store;
        let batch = retention.batch_size.max(1);
        let cutoff = |days: u64| {
            now - chrono::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400_000))
        };
        // A case waiting longer than this no longer holds its session's data back.
        let held_since = match retention.review_hold_days {
            0 => chrono::DateTime::<Utc>::MAX_UTC,
            days => cutoff(days),
        };
        let mut sweep = Sweep::default();
        if retention.images_days > 0 {
            for _ in 0..MAX_SWEEP_BATCHES {
                let ids = store
                    .expired(
                        Expiry::Images,
                        cutoff(retention.images_days),
                        held_since,
                        batch,
                    )
                    .await?;
                self.delete_inputs(ids.clone()).await?;
                store.images_erased(&ids, now).await?;
                sweep.images += ids.len();
                if ids.len() < batch {
                    break;
                }
            }
        }
        if retention.personal_data_days > 0 {
            for _ in 0..MAX_SWEEP_BATCHES {
                let ids = store
                    .expired(
                        Expiry::PersonalData,
                        cutoff(retention.personal_data_days),
                        held_since,
                        batch,
                    )
                    .await?;
                self.delete_inputs(ids.clone()).await?;
                for &id in &ids {
                    store.erase(id, None, None, now).await?;
                }
                sweep.personal_data += ids.len();
                if ids.len() < batch {
                    break;
                }
            }
        }
        metrics::counter!("kyc_sessions_erased_total", "by" => "retention")
            .increment(sweep.personal_data as u64);
        sweep.keys = store.purge_keys(now).await?;
        if let Some(challenges) = &self.inner.challenges {
            sweep.challenges = challenges.purge().await?;
        }
        if let Some(capture) = &self.inner.capture {
            sweep.capture_links = capture.purge().await?;
        }
        sweep.instances = store.forget_instances(now - FORGET_INSTANCES_AFTER).await?;
        Ok(sweep)
    }
}

/// Writes a pending completion with the events before it that the store does not hold yet,
/// since an earlier attempt may have landed (see [`stored_through`]). A stored terminal event
/// means the session is complete; it is not compared with this one, as an erasure may have
/// scrubbed it since.
async fn store_completion(
    inner: &Inner,
    pending: &mut PendingCompletion,
) -> Result<(), StoreError> {
    let closing = &pending.closing;
    let from = closing.before.first().unwrap_or(&closing.terminal).seq;
    let Some(through) = stored_through(&*inner.store, pending.id, from).await? else {
        return Ok(());
    };
    pending.closing.before.retain(|event| event.seq > through);
    inner
        .store
        .complete(pending.id, &pending.completion, &pending.closing)
        .await
}

/// Completes, as `review` with `reason`, a session that will not run (again): after the events
/// of `prelude`, in one go with nothing else running for it. Used when a session cannot be
/// recovered and when its runner itself panicked.
pub(super) async fn conclude(
    inner: Arc<Inner>,
    id: SessionId,
    clock: SessionClock,
    reason: &str,
    prelude: Vec<EventKind>,
) -> SessionOutcome {
    let reasons = vec![reason.to_owned()];
    let mut seq = match inner.store.events_after(id, 0).await {
        Ok(events) => events.map_or(0, |events| events.len() as u64),
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot read the session's events to complete it");
            0
        }
    };
    let mut record = |kind: EventKind| {
        seq += 1;
        Event {
            seq,
            ts: clock.now(),
            session_id: id,
            kind,
        }
        .to_record()
    };
    let events: Vec<_> = prelude.into_iter().map(&mut record).collect();
    let completion = Completion {
        completed_at: clock.now(),
        decision: Decision::Review,
        reasons: reasons.clone(),
        checks: Default::default(),
        duration_ms: clock.elapsed().as_secs_f64() * 1000.0,
    };
    let terminal = record(EventKind::SessionCompleted {
        decision: completion.decision,
        reasons: completion.reasons.clone(),
        checks: Default::default(),
        duration_ms: completion.duration_ms,
    });
    let closing = Closing {
        before: events,
        terminal,
        review: EventKind::review_opening(&completion).map(&mut record),
    };
    let mut pending = PendingCompletion {
        id,
        completion,
        closing,
    };
    match store_completion(&inner, &mut pending).await {
        Ok(()) => {}
        Err(error) if error.is_unavailable() => {
            tracing::error!(error = %ErrorChain(&error), "could not store the session's completion; will retry");
            inner.pending_completion(pending);
        }
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "could not store the session's completion")
        }
    }
    // Followers end when the hub closes, reading the terminal event from the store.
    inner.hub.close(id);
    metrics::counter!("kyc_sessions_completed_total", "decision" => "review").increment(1);
    tracing::info!(decision = "review", reasons = reason, "session completed");
    SessionOutcome {
        id,
        decision: Decision::Review,
        reasons,
        checks: Vec::new(),
        elapsed: clock.elapsed(),
        critical_path: Duration::ZERO,
    }
}

/// Runs a future inside a session's span and task-local context.
trait InSession: std::future::Future + Sized {
    fn instrument_session(self, id: SessionId) -> impl std::future::Future<Output = Self::Output> {
        use tracing::Instrument;
        super::SessionContext { session_id: id }
            .scope(self)
            .instrument(tracing::info_span!("session", session_id = %id))
    }
}

impl<F: std::future::Future> InSession for F {}
