//! A time limit on every call of a database store: without one, a call on a connection the
//! network left half-open waits until TCP gives up, minutes later, and so does the request
//! behind it. A call with no answer within `store.read_timeout_ms` fails with
//! [`StoreError::TimedOut`], which counts as the store being unavailable (`503`, and readiness
//! `503` through the heartbeat). The group-committed writes (`insert` without an idempotency
//! key, `append_events`, `complete`) already wait at most `store.write_timeout_ms`, which allows
//! for SQLite's lock wait: they pass through as they are.
//!
//! The signatures are the traits' own, listed once for the macro that writes each forwarding
//! method; the traits' documentation is where each call is described.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Backlog, CaptureStore, ChallengeStore, Closing, Completion, Decided, Erasure, EventRecord,
    Expiry, IdempotencyKey, Inserted, KeyStore, ReviewBacklog, ReviewStore, ReviewWrite,
    SessionRecord, SessionStore, StoreError, WebhookStore, answered_within,
};
use crate::domain::{
    Attempt, AttemptOutcome, CaptureLink, CaptureLinkId, Challenge, ChallengeId, ChallengeRefusal,
    Delivery, DueDelivery, Endpoint, EndpointId, KeyHash, KeyId, KeyRecord, MessageId,
    OutboxMessage, Owner, ReviewCase, ReviewDecision, ReviewQuery, SessionId, SessionQuery,
    TenantId,
};

/// A store whose calls each answer within `limit`.
pub struct Limited<S> {
    inner: S,
    limit: Duration,
}

impl<S> Limited<S> {
    /// `limit` zero: no limit.
    pub fn new(inner: S, limit: Duration) -> Self {
        let limit = if limit.is_zero() {
            Duration::MAX
        } else {
            limit
        };
        Self { inner, limit }
    }
}

/// Implements `$trait` for `Limited<S>`: the `as_is` block's methods written out, the `pass`
/// methods forwarded as they are, the rest forwarded within the limit (the method's name is
/// the error's `what`).
macro_rules! forward {
    ($trait:ident {
        $(as_is { $($as_is:tt)* })?
        $(pass fn $pname:ident(&self $(, $parg:ident: $pty:ty)* $(,)?) -> $pret:ty;)*
        $(fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;)*
    }) => {
        #[async_trait]
        impl<S: $trait> $trait for Limited<S> {
            $($($as_is)*)?
            $(
                async fn $pname(&self $(, $parg: $pty)*) -> Result<$pret, StoreError> {
                    self.inner.$pname($($parg),*).await
                }
            )*
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    answered_within(self.limit, stringify!($name), self.inner.$name($($arg),*))
                        .await
                }
            )*
        }
    };
}

forward!(SessionStore {
    as_is {
        fn instance(&self) -> &str {
            self.inner.instance()
        }

        async fn insert(
            &self,
            session: &SessionRecord,
            key: Option<&IdempotencyKey>,
        ) -> Result<Inserted, StoreError> {
            match key {
                // Group commit, with its own limit.
                None => self.inner.insert(session, None).await,
                Some(_) => {
                    answered_within(self.limit, "insert", self.inner.insert(session, key)).await
                }
            }
        }
    }
    // Group commit, with its own limit.
    pass fn append_events(&self, id: SessionId, events: &[EventRecord]) -> ();
    pass fn complete(&self, id: SessionId, completion: &Completion, closing: &Closing) -> ();
    fn find_key(&self, owner: &Owner, key: &str, now: DateTime<Utc>) -> Option<(SessionId, String)>;
    fn get(&self, id: SessionId) -> Option<SessionRecord>;
    fn find(&self, owner: &Owner, id: SessionId) -> Option<SessionRecord>;
    fn list(&self, owner: &Owner, query: &SessionQuery) -> Vec<SessionRecord>;
    fn events_after(&self, id: SessionId, after: u64) -> Option<Vec<EventRecord>>;
    fn heartbeat(&self, now: DateTime<Utc>) -> ();
    fn orphans(&self, silent_since: DateTime<Utc>, limit: usize) -> Vec<SessionRecord>;
    fn claim(&self, id: SessionId, from: &str, deadline_at: DateTime<Utc>) -> bool;
    fn erase(
        &self, id: SessionId, owner: Option<&Owner>, by: Option<&KeyId>, now: DateTime<Utc>
    ) -> Erasure;
    fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize
    ) -> Vec<SessionId>;
    fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> ();
    fn purge_keys(&self, now: DateTime<Utc>) -> u64;
    fn forget_instances(&self, silent_before: DateTime<Utc>) -> u64;
});

forward!(KeyStore {
    fn create_key(&self, key: &KeyRecord) -> ();
    fn key_by_hash(&self, hash: &KeyHash) -> Option<KeyRecord>;
    fn key(&self, id: &KeyId) -> Option<KeyRecord>;
    fn keys(&self, tenant: Option<&TenantId>) -> Vec<KeyRecord>;
    fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>) -> bool;
    fn rotate_key(
        &self, old: &KeyId, old_expires_at: DateTime<Utc>, new: &KeyRecord
    ) -> bool;
    fn key_used(&self, id: &KeyId, at: DateTime<Utc>) -> ();
});

forward!(WebhookStore {
    fn create_endpoint(&self, endpoint: &Endpoint) -> ();
    fn endpoint(&self, owner: &Owner, id: &EndpointId) -> Option<Endpoint>;
    fn endpoints(&self, owner: &Owner) -> Vec<Endpoint>;
    fn update_endpoint(&self, endpoint: &Endpoint, read_at: DateTime<Utc>) -> bool;
    fn delete_endpoint(&self, owner: &Owner, id: &EndpointId) -> bool;
    fn unrouted(&self, limit: usize) -> Vec<OutboxMessage>;
    fn route(
        &self, message: &MessageId, payload: &str, endpoints: &[EndpointId], now: DateTime<Utc>
    ) -> ();
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: &str,
        lease_until: DateTime<Utc>,
        skip: &[EndpointId],
        per_endpoint: usize,
        limit: usize
    ) -> Vec<DueDelivery>;
    fn endpoint_health(
        &self,
        id: &EndpointId,
        failing: Option<DateTime<Utc>>,
        disable: Option<&str>,
        now: DateTime<Utc>
    ) -> ();
    fn release(&self, due: &DueDelivery, claim: &str) -> ();
    fn record_attempt(
        &self, due: &DueDelivery, claim: &str, attempt: &Attempt, outcome: &AttemptOutcome
    ) -> bool;
    fn deliveries(&self, endpoint: &EndpointId, limit: usize) -> Vec<Delivery>;
    fn resend(&self, endpoint: &EndpointId, message: &MessageId, now: DateTime<Utc>) -> bool;
    fn recover(
        &self, endpoint: &EndpointId, since: DateTime<Utc>, now: DateTime<Utc>
    ) -> u64;
    fn backlog(&self) -> Backlog;
    fn purge_webhooks(&self, before: DateTime<Utc>, limit: usize) -> u64;
});

forward!(ReviewStore {
    fn review_decisions(&self, id: SessionId) -> Vec<ReviewDecision>;
    fn reviews(&self, owner: &Owner, query: &ReviewQuery) -> Vec<ReviewCase>;
    fn decide(&self, owner: &Owner, id: SessionId, write: &ReviewWrite) -> Decided;
    fn review_backlog(&self) -> ReviewBacklog;
    fn open_missing_cases(&self) -> u64;
});

forward!(ChallengeStore {
    fn create_challenge(&self, challenge: &Challenge) -> ();
    fn challenge(&self, owner: &Owner, id: &ChallengeId) -> Option<Challenge>;
    fn take_challenge(
        &self, owner: &Owner, id: &ChallengeId, session: SessionId, now: DateTime<Utc>
    ) -> Result<Challenge, ChallengeRefusal>;
    fn purge_challenges(&self, before: DateTime<Utc>) -> u64;
});

forward!(CaptureStore {
    fn create_capture_link(&self, link: &CaptureLink) -> ();
    fn capture_link(&self, token_hash: &str) -> Option<CaptureLink>;
    fn set_capture_challenge(&self, id: &CaptureLinkId, challenge: &ChallengeId) -> ();
    fn use_capture_link(&self, id: &CaptureLinkId, session: SessionId, now: DateTime<Utc>) -> bool;
    fn purge_capture_links(&self, before: DateTime<Utc>) -> u64;
});
