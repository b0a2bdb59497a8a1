//! Manual review: a compliance officer decides a session its agents sent to `review`.
//!
//! The case opens with the session's completion (the store's `complete`, with the
//! `review.opened` event). A decision here is checked (verdict, reason codes from the
//! vocabulary, note), placed by [`crate::domain::step`] (four-eyes or not), and stored with its
//! `review.decided` (and `review.resolved`) events as one compare-and-set on the case's last
//! event: of two decisions made at once on any instances, exactly one is stored, and the other
//! is told that the case changed. The reviewer is the calling key, never a name from the request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::ReviewSettings;
use crate::domain::{
    KeyId, KeyRecord, MAX_REVIEW_REASONS, NoteError, Owner, Refusal, ReviewCase, ReviewDecision,
    ReviewQuery, ReviewStatus, Reviewer, SessionId, SessionRecord, Verdict, check_note,
    is_reason_code, step,
};
use crate::orchestrator::{Event, EventKind};
use crate::store::{Decided, KeyStore, ReviewStore, ReviewWrite, SessionStore, StoreError};
use crate::telemetry::ErrorChain;

/// Keys followed back through rotations at most, when telling whether two keys are one
/// reviewer's.
const MAX_LINEAGE: usize = 64;
/// How often the queue's size and age are sampled for the metrics.
const METRICS_INTERVAL: Duration = Duration::from_secs(15);
/// Every how many samples the service looks for sessions without their case (once a minute).
const MISSING_CASES_EVERY: u64 = 4;

/// `review.*`, checked.
#[derive(Debug, Clone)]
pub struct ReviewPolicy {
    pub four_eyes: bool,
    /// Every reason code a reviewer may give.
    pub vocabulary: BTreeSet<String>,
    /// The vocabulary in the order people are offered it: `review.reasons` as configured, then
    /// the agents' codes.
    pub offered: Vec<String>,
}

impl ReviewPolicy {
    /// `settings`' codes and the agents' own.
    pub fn new(
        settings: &ReviewSettings,
        agent_reasons: &BTreeSet<String>,
    ) -> Result<Self, String> {
        if let Some(bad) = settings.reasons.iter().find(|r| !is_reason_code(r)) {
            return Err(format!(
                "review.reasons: `{bad}` is not a reason code (1 to 64 of a-z, 0-9, `_`, `:`)"
            ));
        }
        let mut offered = settings.reasons.clone();
        offered.extend(
            agent_reasons
                .iter()
                .filter(|code| !settings.reasons.contains(code))
                .cloned(),
        );
        Ok(Self {
            four_eyes: settings.four_eyes,
            vocabulary: offered.iter().cloned().collect(),
            offered,
        })
    }
}

/// A reviewer's request, unchecked.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub note: Option<String>,
}

/// Why a decision cannot be made; the API maps each to a problem.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{field}: {detail}")]
    Invalid {
        field: &'static str,
        code: &'static str,
        detail: String,
    },
    #[error("no such session")]
    NotFound,
    #[error("the session is not in review: its agents did not decide `review`, or it is running")]
    NotInReview,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("another decision on this session was stored meanwhile; read it again and decide")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReviewError {
    fn invalid(field: &'static str, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            code,
            detail: detail.into(),
        }
    }
}

fn erased() -> ReviewError {
    ReviewError::invalid(
        "note",
        "session_erased",
        "the session's personal data is erased, so a decision on it takes no note",
    )
}

/// A session with its review's decisions, as the API shows it.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub session: SessionRecord,
    pub decisions: Vec<ReviewDecision>,
}

/// Review cases and decisions, as the API manages them. Every call is scoped to one owner.
#[derive(Clone)]
pub struct Reviews {
    store: Arc<dyn ReviewStore>,
    sessions: Arc<dyn SessionStore>,
    keys: Arc<dyn KeyStore>,
    policy: Arc<ReviewPolicy>,
}

impl Reviews {
    pub fn new(
        store: Arc<dyn ReviewStore>,
        sessions: Arc<dyn SessionStore>,
        keys: Arc<dyn KeyStore>,
        policy: ReviewPolicy,
    ) -> Self {
        Self {
            store,
            sessions,
            keys,
            policy: Arc::new(policy),
        }
    }

    /// The reason codes a reviewer may give, in the order to offer them.
    pub fn reasons(&self) -> &[String] {
        &self.policy.offered
    }

    /// The decisions on a session's review, oldest first; none when it has no review.
    pub async fn decisions(
        &self,
        session: &SessionRecord,
    ) -> Result<Vec<ReviewDecision>, StoreError> {
        if session.review.is_none() {
            return Ok(Vec::new());
        }
        self.store.review_decisions(session.id).await
    }

    /// A page of `owner`'s queue.
    pub async fn queue(
        &self,
        owner: &Owner,
        query: &ReviewQuery,
    ) -> Result<Vec<ReviewCase>, StoreError> {
        self.store.reviews(owner, query).await
    }

    /// Records `caller`'s decision on `owner`'s session `id`; the session as it stands after it.
    pub async fn decide(
        &self,
        caller: &KeyRecord,
        id: SessionId,
        request: NewDecision,
    ) -> Result<Reviewed, ReviewError> {
        let owner = &caller.owner;
        let reasons = self.check_reasons(request.reasons)?;
        let note = check_note(request.note).map_err(|error| match error {
            NoteError::TooLong => ReviewError::invalid("note", "too_long", error.to_string()),
            NoteError::ControlCharacters => {
                ReviewError::invalid("note", "control_characters", error.to_string())
            }
        })?;
        let session = self
            .sessions
            .find(owner, id)
            .await?
            .ok_or(ReviewError::NotFound)?;
        let Some(state) = session.review.clone() else {
            return Err(ReviewError::NotInReview);
        };
        let decisions = self.store.review_decisions(id).await?;
        let now = Utc::now();
        let decision = ReviewDecision {
            seq: state.last_seq + 1,
            reviewer: Reviewer {
                key_id: caller.id.clone(),
                label: caller.label.clone(),
            },
            decided_at: now,
            verdict: request.verdict,
            reasons,
            note,
        };
        // Only a second decision under four-eyes asks whose the first was.
        let first = decisions
            .last()
            .filter(|_| self.policy.four_eyes && state.status == ReviewStatus::PendingSecond);
        let same = match first {
            Some(first) => {
                let ours = self.lineage(&caller.id).await?;
                let theirs = self.lineage(&first.reviewer.key_id).await?;
                ours.iter().any(|key| theirs.contains(key))
            }
            None => false,
        };
        let step = step(&state, &decisions, &decision, self.policy.four_eyes, |_| {
            same
        })?;
        if decision.note.is_some() && session.erased_at.is_some() {
            return Err(erased());
        }

        let event = |seq: u64, kind: EventKind| {
            Event {
                seq,
                ts: now,
                session_id: id,
                kind,
            }
            .to_record()
        };
        let mut events = vec![event(
            decision.seq,
            EventKind::ReviewDecided {
                reviewer: decision.reviewer.clone(),
                decision: decision.verdict,
                reasons: decision.reasons.clone(),
                note: decision.note.clone(),
                status: step.status,
            },
        )];
        if let Some(resolution) = &step.resolution {
            events.push(event(
                decision.seq + 1,
                EventKind::ReviewResolved {
                    decision: resolution.verdict,
                    reasons: resolution.reasons.clone(),
                },
            ));
        }
        let write = ReviewWrite {
            read_seq: state.last_seq,
            decision,
            status: step.status,
            resolution: step.resolution,
            events,
        };
        match self.store.decide(owner, id, &write).await? {
            Decided::Stored => {}
            Decided::Moved => return Err(ReviewError::Conflict),
            // Erased after it was read: the note is not kept, and neither is the decision.
            Decided::Erased => return Err(erased()),
        }
        metrics::counter!("kyc_review_decisions_total", "decision" => write.decision.verdict.as_str())
            .increment(1);
        if let Some(resolution) = &write.resolution {
            metrics::counter!("kyc_reviews_resolved_total", "decision" => resolution.verdict.as_str())
                .increment(1);
        }
        tracing::info!(
            session_id = %id,
            decision = write.decision.verdict.as_str(),
            reasons = %write.decision.reasons.join(","),
            status = write.status.as_str(),
            "review decided"
        );
        let session = self
            .sessions
            .find(owner, id)
            .await?
            .ok_or(ReviewError::NotFound)?;
        let decisions = self.store.review_decisions(id).await?;
        Ok(Reviewed { session, decisions })
    }

    /// One to [`MAX_REVIEW_REASONS`] codes of the vocabulary, each once, in the order given.
    fn check_reasons(&self, reasons: Vec<String>) -> Result<Vec<String>, ReviewError> {
        if reasons.is_empty() {
            return Err(ReviewError::invalid(
                "reasons",
                "missing",
                "a decision gives at least one reason code",
            ));
        }
        let mut kept: Vec<String> = Vec::with_capacity(reasons.len());
        for reason in reasons {
            if !self.policy.vocabulary.contains(&reason) {
                // The code is not echoed: it is the client's text.
                return Err(ReviewError::invalid(
                    "reasons",
                    "unknown_reason",
                    "a reason is not one of the service's reason codes (review.reasons and the \
                     agents' codes; README, \"Manual review\")",
                ));
            }
            if !kept.contains(&reason) {
                kept.push(reason);
            }
        }
        if kept.len() > MAX_REVIEW_REASONS {
            return Err(ReviewError::invalid(
                "reasons",
                "too_many",
                format!("at most {MAX_REVIEW_REASONS} reason codes"),
            ));
        }
        Ok(kept)
    }

    /// `key` and the keys it replaced by rotation, newest first: one reviewer's keys.
    async fn lineage(&self, key: &KeyId) -> Result<Vec<KeyId>, StoreError> {
        let mut lineage = vec![key.clone()];
        let mut next = key.clone();
        while lineage.len() < MAX_LINEAGE {
            let Some(replaced) = self.keys.key(&next).await?.and_then(|k| k.replaces) else {
                break;
            };
            if lineage.contains(&replaced) {
                break;
            }
            lineage.push(replaced.clone());
            next = replaced;
        }
        Ok(lineage)
    }

    /// Until `stop`: samples the unresolved cases across tenants into the metrics, and opens
    /// the cases an instance of an earlier version left out.
    pub async fn watch(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(METRICS_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0_u64.. {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if tick % MISSING_CASES_EVERY == 0 {
                match self.store.open_missing_cases().await {
                    Ok(0) => {}
                    Ok(opened) => tracing::info!(
                        opened,
                        "opened the review cases of sessions an earlier version completed"
                    ),
                    Err(error) => tracing::warn!(
                        error = %ErrorChain(&error),
                        "could not look for sessions without their review case"
                    ),
                }
            }
            match self.store.review_backlog().await {
                Ok(backlog) => {
                    metrics::gauge!("kyc_reviews_open", "status" => "open")
                        .set(backlog.open as f64);
                    metrics::gauge!("kyc_reviews_open", "status" => "pending_second")
                        .set(backlog.pending_second as f64);
                    let age = backlog.oldest.map_or(0.0, |oldest| {
                        (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
                    });
                    metrics::gauge!("kyc_reviews_oldest_age_seconds").set(age);
                }
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "could not count open reviews");
                }
            }
        }
    }
}
