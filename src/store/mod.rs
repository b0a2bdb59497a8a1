//! Where sessions and their event histories live: the `SessionStore` trait and its backends.
//!
//! The API and the orchestrator see only the trait; `store.url` picks the backend at start-up:
//! `sqlite://` (the default, one file), `postgres://` (several instances share it) or
//! `memory://` (gone with the process; for tests and benchmarks). Session inputs (images) live
//! beside the database in a blob directory (`blobs`), never in a row or a log line.

mod blobs;
#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod challenge_tests;
mod erasure;
mod error;
#[cfg(test)]
pub(crate) mod fixtures;
mod group_commit;
mod limited;
mod memory;
#[cfg(test)]
mod review_tests;
mod sql;
#[cfg(test)]
mod webhook_tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::config::StoreSettings;
use crate::domain::{
    AttemptOutcome, CaptureLink, CaptureLinkId, Challenge, ChallengeId, ChallengeRefusal, Delivery,
    DueDelivery, Endpoint, EndpointId, KeyHash, KeyId, KeyRecord, MessageId, OutboxMessage, Owner,
    Resolution, ReviewCase, ReviewDecision, ReviewQuery, ReviewStatus, SessionId, SessionQuery,
    TenantId,
};

pub use crate::domain::{Completion, Erasure, SessionRecord, SessionStatus};
pub use blobs::{BlobError, Blobs, StoredInputs};
pub use erasure::scrub_checks;
pub use error::StoreError;
pub(crate) use error::UnreadableJson;
pub use limited::Limited;
pub use memory::MemoryStore;
pub use sql::SqlStore;

/// One stored event: its NDJSON line and what the follower needs to know without parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: u64,
    /// `session.completed`: the agents are done. Only a review's events follow it.
    pub terminal: bool,
    pub line: Bytes,
}

/// The events that end a session's run, stored with its completion as one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The run's events not stored yet, in order, right before `terminal`: usually those of
    /// its last agents, which thus take no commit of their own before the completion's.
    pub before: Vec<EventRecord>,
    /// `session.completed`.
    pub terminal: EventRecord,
    /// `review.opened`, right after it, when the agents decided `review`: the session's review
    /// case opens with it.
    pub review: Option<EventRecord>,
}

impl Closing {
    /// What live followers get, in order: the events `before`, then one record of the terminal
    /// and review events' lines, under the last one's seq. A follower ends at the terminal
    /// event; in one record, `review.opened` cannot be left behind however the follower's
    /// reads and the publication interleave.
    pub fn live(self) -> impl Iterator<Item = EventRecord> {
        let last = match self.review {
            None => self.terminal,
            Some(review) => {
                let mut line = Vec::with_capacity(self.terminal.line.len() + review.line.len());
                line.extend_from_slice(&self.terminal.line);
                line.extend_from_slice(&review.line);
                EventRecord {
                    seq: review.seq,
                    terminal: true,
                    line: line.into(),
                }
            }
        };
        self.before.into_iter().chain(std::iter::once(last))
    }

    /// Every event, in order.
    pub fn events(&self) -> impl Iterator<Item = &EventRecord> {
        self.before
            .iter()
            .chain(std::iter::once(&self.terminal))
            .chain(&self.review)
    }
}

/// A client's `Idempotency-Key` with the fingerprint of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 (hex) of the request's canonical inputs.
    pub fingerprint: String,
    pub expires_at: DateTime<Utc>,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The idempotency key was already taken (and has not expired) by this session.
    Existing {
        id: SessionId,
        same_request: bool,
    },
}

/// What a retention sweep looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Completed sessions created before the cut-off whose images are still kept.
    Images,
    /// Completed sessions created before the cut-off that are not erased yet.
    PersonalData,
}

/// `call`'s answer, or [`StoreError::TimedOut`] if there is none within `limit`: on a
/// connection the network left half-open, a call would otherwise wait until TCP gives up,
/// minutes later. `what` names the call in the error.
pub(crate) async fn answered_within<T>(
    limit: Duration,
    what: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut { what, limit }))
}

/// The last event the store holds of session `id`, counting from `from` (`from - 1` if it holds
/// none of them), or `None` if that includes the session's terminal event: it is complete.
///
/// A write reported as failed may have landed all the same: when the connection drops while a
/// commit's answer is on its way, the database commits and the answer is lost. So whoever
/// writes events again after a failure asks this first and writes only the rest; the events
/// already there would fail the write on their keys, and the session would never complete.
pub(crate) async fn stored_through(
    store: &dyn SessionStore,
    id: SessionId,
    from: u64,
) -> Result<Option<u64>, StoreError> {
    let held = store
        .events_after(id, from.saturating_sub(1))
        .await?
        .ok_or(StoreError::NotFound(id))?;
    if held.iter().any(|event| event.terminal) {
        return Ok(None);
    }
    Ok(Some(
        held.last()
            .map_or(from.saturating_sub(1), |event| event.seq),
    ))
}

/// Sessions and their append-only event logs.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// This process's instance id, recorded on the sessions it runs.
    fn instance(&self) -> &str;

    /// Records a new running session, claiming its idempotency key (scoped to the session's
    /// owner) when it has one. A key that is already taken (and not expired) leaves the store
    /// unchanged.
    async fn insert(
        &self,
        session: &SessionRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError>;

    /// The session and fingerprint an unexpired idempotency key of `owner` names.
    async fn find_key(
        &self,
        owner: &Owner,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionId, String)>, StoreError>;

    /// Appends the session's next events, in order, all or none; returns once they are durable.
    /// A seq the session already has fails the whole write: nothing is stored twice.
    async fn append_events(&self, id: SessionId, events: &[EventRecord]) -> Result<(), StoreError>;

    /// Marks the session completed and appends its closing events, opening its review case
    /// when they say so, as one step: nobody can see the one without the other.
    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        closing: &Closing,
    ) -> Result<(), StoreError>;

    /// The session, whoever owns it: for the service's own work (recovery, completion), never
    /// for a client's request.
    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// The session if `owner` owns it, filtered in the query itself: another tenant's session
    /// is as absent as an unknown one.
    async fn find(&self, owner: &Owner, id: SessionId)
    -> Result<Option<SessionRecord>, StoreError>;

    /// `owner`'s sessions matching `query`, newest first, at most `query.limit`.
    async fn list(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Events with `seq > after`, in order; `None` when the session is unknown.
    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError>;

    /// Says this instance is alive (and checks that the store answers).
    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Running sessions whose instance has not sent a heartbeat since `silent_since`, oldest
    /// first.
    async fn orphans(
        &self,
        silent_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Moves a running session from the silent instance `from` to this one, with a new deadline.
    /// `false` when another instance got there first (or the session has completed).
    async fn claim(
        &self,
        id: SessionId,
        from: &str,
        deadline_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Removes every extracted personal field of a completed session (and its reviewers'
    /// notes, in their decisions and events) and stamps `erased_at`
    /// (and `erased_by`, the key that asked); the decision, reasons and timings stay.
    /// Idempotent. With an `owner`, only a session of that owner (otherwise `NotFound`);
    /// without, any (retention).
    async fn erase(
        &self,
        id: SessionId,
        owner: Option<&Owner>,
        by: Option<&KeyId>,
        now: DateTime<Utc>,
    ) -> Result<Erasure, StoreError>;

    /// Sessions a retention sweep should act on. A session waiting for a review decision whose
    /// case opened at or after `held_since` is not among them: its evidence stays until the
    /// review resolves, or the case is older than that.
    async fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Stamps `images_erased_at` once a session's images are deleted.
    async fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Deletes idempotency keys that expired before `now`; returns how many.
    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Forgets the instances silent since before `silent_before` that no running session
    /// names any more (recovery has moved them all); how many. An instance that comes back
    /// registers again with its next heartbeat.
    async fn forget_instances(&self, silent_before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// API keys: created and changed by `kyc-orchestrator keys ...`, read on every request
/// (through the authenticator's cache).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key. Its id and hash are unique.
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;

    /// The key with this hash, usable or not.
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Every key, or a tenant's, oldest first.
    async fn keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError>;

    /// Stamps `revoked_at` (once); `false` when there is no such key.
    async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Stores `new` and makes `old` expire at `old_expires_at` at the latest, as one step;
    /// `false` (and nothing stored) when `old` does not exist or is revoked.
    async fn rotate_key(
        &self,
        old: &KeyId,
        old_expires_at: DateTime<Utc>,
        new: &KeyRecord,
    ) -> Result<bool, StoreError>;

    /// Records when the key was last used.
    async fn key_used(&self, id: &KeyId, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Liveness challenges: issued, then taken by at most one session.
#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    /// Stores a new challenge (its id is fresh).
    async fn create_challenge(&self, challenge: &Challenge) -> Result<(), StoreError>;

    /// `owner`'s challenge `id`, used or not: another owner's is as absent as an unknown one.
    async fn challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
    ) -> Result<Option<Challenge>, StoreError>;

    /// Marks `owner`'s challenge `id` used by `session` at `now`, if it is unused and unexpired,
    /// as one compare-and-set: of two sessions taking it at once, on any instances, one gets it
    /// and the other is refused as [`ChallengeRefusal::Used`].
    async fn take_challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<Result<Challenge, ChallengeRefusal>, StoreError>;

    /// Deletes challenges that expired before `before`; how many.
    async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Capture links: made, looked up by their token's hash, used by at most one session.
#[async_trait]
pub trait CaptureStore: Send + Sync + 'static {
    /// Stores a new link (its id and token are fresh).
    async fn create_capture_link(&self, link: &CaptureLink) -> Result<(), StoreError>;

    /// The link whose token hashes to `token_hash`, used or not.
    async fn capture_link(&self, token_hash: &str) -> Result<Option<CaptureLink>, StoreError>;

    /// Records `challenge` as the one the unused link `id`'s page may answer.
    async fn set_capture_challenge(
        &self,
        id: &CaptureLinkId,
        challenge: &ChallengeId,
    ) -> Result<(), StoreError>;

    /// Marks link `id` used by `session` at `now` if it is unused and unexpired, and clears its
    /// reference and claim (the session has them now); `false` when it was used or expired.
    async fn use_capture_link(
        &self,
        id: &CaptureLinkId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Deletes links that expired before `before`; how many.
    async fn purge_capture_links(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Webhook messages and deliveries waiting to be sent, across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Outbox messages not routed to their endpoints yet.
    pub unrouted: u64,
    /// Deliveries waiting to go to enabled endpoints.
    pub pending: u64,
    /// When the oldest of them was created.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Webhook endpoints, the outbox and deliveries. Messages enter the outbox with the
/// completion they report ([`SessionStore::complete`] writes them, in the same transaction,
/// when the session's owner has an endpoint); everything else is here. A paused (disabled)
/// endpoint's deliveries wait: they are routed, not claimed.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;

    /// The endpoint if `owner` owns it.
    async fn endpoint(
        &self,
        owner: &Owner,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// `owner`'s endpoints, oldest first.
    async fn endpoints(&self, owner: &Owner) -> Result<Vec<Endpoint>, StoreError>;

    /// Replaces the endpoint's changeable fields (url, events, description, enabled and why
    /// not, secrets, failing streak, updated) if it was last updated at `read_at` (when it was
    /// read): `false` when `owner` has no such endpoint or it changed since, so two changes made
    /// at once never silently undo each other.
    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Deletes the endpoint and its deliveries; `false` when `owner` has no such endpoint.
    async fn delete_endpoint(&self, owner: &Owner, id: &EndpointId) -> Result<bool, StoreError>;

    /// Outbox messages not routed yet, oldest first.
    async fn unrouted(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Stores the message's body and a pending delivery to each of `endpoints`, due at `now`,
    /// and marks it routed, as one step. Routing a message again creates nothing twice.
    async fn route(
        &self,
        message: &MessageId,
        payload: &str,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` pending deliveries due at `now` to enabled endpoints not in
    /// `skip`, at most `per_endpoint` to one endpoint, the longest due first, for `claim`
    /// until `lease_until`: nobody else claims them meanwhile.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: &str,
        lease_until: DateTime<Utc>,
        skip: &[EndpointId],
        per_endpoint: usize,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// The dispatcher's record of an endpoint's health, by id: with `failing`, the failing
    /// streak starts then unless it started earlier; without, it ends; with `disable`, the
    /// endpoint is disabled for that reason (`gone`, `failing`).
    async fn endpoint_health(
        &self,
        id: &EndpointId,
        failing: Option<DateTime<Utc>>,
        disable: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Gives a claimed delivery back untried, due again at once.
    async fn release(&self, due: &DueDelivery, claim: &str) -> Result<(), StoreError>;

    /// Records an attempt of a delivery claimed by `claim` and what it leads to, and releases
    /// the claim; `false` (and nothing recorded) when the claim was lost meanwhile.
    async fn record_attempt(
        &self,
        due: &DueDelivery,
        claim: &str,
        attempt: &crate::domain::Attempt,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError>;

    /// The endpoint's deliveries with their attempts, newest first, at most `limit`.
    async fn deliveries(
        &self,
        endpoint: &EndpointId,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Makes the delivery pending again, due at `now`; `false` when there is none.
    async fn resend(
        &self,
        endpoint: &EndpointId,
        message: &MessageId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Makes every failed delivery to the endpoint created since `since` pending again, due
    /// at `now`; how many.
    async fn recover(
        &self,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// What is waiting, for the metrics.
    async fn backlog(&self) -> Result<Backlog, StoreError>;

    /// Forgets messages created before `before` that have nothing left to send (no pending
    /// delivery to an enabled endpoint), with their deliveries and attempts, at most `limit`
    /// of them; how many.
    async fn purge_webhooks(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError>;
}

/// A reviewer's decision as the store records it, with where it leaves the case.
#[derive(Debug, Clone)]
pub struct ReviewWrite {
    /// The case's `last_seq` when the decision was made on it: the decision is stored only if
    /// it still is.
    pub read_seq: u64,
    pub decision: ReviewDecision,
    /// The case's status after it.
    pub status: ReviewStatus,
    /// Set when it resolves the case: the session's decision and reasons from now on.
    pub resolution: Option<Resolution>,
    /// `review.decided`, then `review.resolved` when it resolves the case; the first's seq is
    /// `read_seq + 1`.
    pub events: Vec<EventRecord>,
}

/// What the store did with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Stored,
    /// Nothing: the case's `last_seq` moved on (somebody decided meanwhile), or `owner` has no
    /// such case.
    Moved,
    /// Nothing: the decision carries a note and the session's personal data is erased.
    Erased,
}

/// Unresolved review cases across tenants, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewBacklog {
    pub open: u64,
    pub pending_second: u64,
    /// When the oldest unresolved case opened.
    pub oldest: Option<DateTime<Utc>>,
}

/// Review cases and reviewers' decisions. A case opens with its session's completion
/// ([`SessionStore::complete`]); decisions are appended, never changed or removed (an erasure
/// clears their notes, see [`SessionStore::erase`]).
#[async_trait]
pub trait ReviewStore: Send + Sync + 'static {
    /// The decisions on session `id`'s case, oldest first.
    async fn review_decisions(&self, id: SessionId) -> Result<Vec<ReviewDecision>, StoreError>;

    /// `owner`'s cases matching `query`, oldest opened first, with their decisions.
    async fn reviews(
        &self,
        owner: &Owner,
        query: &ReviewQuery,
    ) -> Result<Vec<ReviewCase>, StoreError>;

    /// Records a decision on `owner`'s session `id` and appends its events, as one step; with a
    /// resolution, also sets the session's decision and reasons and writes a `session.reviewed`
    /// webhook message when the owner has an endpoint. Stored only while the case's `last_seq`
    /// is `write.read_seq` and, for a decision with a note, while the session is not erased:
    /// an erasure and a decision made at once never leave a note behind.
    async fn decide(
        &self,
        owner: &Owner,
        id: SessionId,
        write: &ReviewWrite,
    ) -> Result<Decided, StoreError>;

    async fn review_backlog(&self) -> Result<ReviewBacklog, StoreError>;

    /// Opens the missing case of every session decided `review` without one (completed by an
    /// instance of a version before reviews, during a rolling upgrade), as
    /// `open` with no `review.opened` event; how many.
    async fn open_missing_cases(&self) -> Result<u64, StoreError>;
}

/// The stores of one backend.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn SessionStore>,
    pub keys: Arc<dyn KeyStore>,
    pub webhooks: Arc<dyn WebhookStore>,
    pub reviews: Arc<dyn ReviewStore>,
    pub challenges: Arc<dyn ChallengeStore>,
    pub capture: Arc<dyn CaptureStore>,
}

/// Opens the backend that `store.url` names, running migrations for a database, and registers
/// this instance (its heartbeat).
pub async fn open(settings: &StoreSettings) -> Result<Stores, StoreError> {
    match settings.url.split_once("://") {
        Some(("memory", _)) => {
            let store = Arc::new(MemoryStore::new(settings.memory_capacity));
            Ok(Stores {
                sessions: store.clone(),
                keys: store.clone(),
                webhooks: store.clone(),
                reviews: store.clone(),
                challenges: store.clone(),
                capture: store,
            })
        }
        Some(("sqlite" | "postgres" | "postgresql", _)) => {
            let store = Arc::new(Limited::new(
                SqlStore::open(settings).await?,
                Duration::from_millis(settings.read_timeout_ms),
            ));
            Ok(Stores {
                sessions: store.clone(),
                keys: store.clone(),
                webhooks: store.clone(),
                reviews: store.clone(),
                challenges: store.clone(),
                capture: store,
            })
        }
        _ => Err(StoreError::UnsupportedUrl(redact_url(&settings.url))),
    }
}

/// The key store alone, for the `keys` commands: migrations run, but no instance registers.
/// `memory://` keeps nothing between processes, so it has no key store to manage.
pub async fn open_keys(settings: &StoreSettings) -> Result<Arc<dyn KeyStore>, StoreError> {
    match settings.url.split_once("://") {
        Some(("sqlite" | "postgres" | "postgresql", _)) => Ok(Arc::new(Limited::new(
            SqlStore::connect(settings).await?,
            Duration::from_millis(settings.read_timeout_ms),
        ))),
        Some(("memory", _)) => Err(StoreError::UnsupportedUrl(
            "memory:// (it keeps nothing between processes: keys for it come from \
             auth.bootstrap_key)"
                .to_owned(),
        )),
        _ => Err(StoreError::UnsupportedUrl(redact_url(&settings.url))),
    }
}

/// A store URL fit for a log line or an error: any password replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            if user_info.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}
