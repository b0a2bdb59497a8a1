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
    Backlog, Closing, Completion, Decided, Erasure, EventRecord, Expiry, IdempotencyKey, Inserted,
    KeyStore, ReviewBacklog, ReviewStore, ReviewWrite, SessionRecord, SessionStore, StoreError,
    WebhookStore, answered_within,
};
use crate::domain::{
    Attempt, AttemptOutcome, Delivery, DueDelivery, Endpoint, EndpointId, KeyHash, KeyId,
    KeyRecord, MessageId, OutboxMessage, Owner, ReviewCase, ReviewDecision, ReviewQuery, SessionId,
    SessionQuery, TenantId,
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

/// Forwards each listed method to the inner store, within the limit; the method's name is the
/// error's `what`.
macro_rules! forward {
    ($trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;)* }) => {
        #[async_trait]
        impl<S: $trait> $trait for Limited<S> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    answered_within(self.limit, stringify!($name), self.inner.$name($($arg),*))
                        .await
                }
            )*
        }
    };
}

#[async_trait]
impl<S: SessionStore> SessionStore for Limited<S> {
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
            Some(_) => answered_within(self.limit, "insert", self.inner.insert(session, key)).await,
        }
    }

    async fn append_events(&self, id: SessionId, events: &[EventRecord]) -> Result<(), StoreError> {
        self.inner.append_events(id, events).await
    }

    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        closing: &Closing,
    ) -> Result<(), StoreError> {
        self.inner.complete(id, completion, closing).await
    }

    async fn find_key(
        &self,
        owner: &Owner,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionId, String)>, StoreError> {
        answered_within(self.limit, "find_key", self.inner.find_key(owner, key, now)).await
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        answered_within(self.limit, "get", self.inner.get(id)).await
    }

    async fn find(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        answered_within(self.limit, "find", self.inner.find(owner, id)).await
    }

    async fn list(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        answered_within(self.limit, "list", self.inner.list(owner, query)).await
    }

    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError> {
        answered_within(
            self.limit,
            "events_after",
            self.inner.events_after(id, after),
        )
        .await
    }

    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        answered_within(self.limit, "heartbeat", self.inner.heartbeat(now)).await
    }

    async fn orphans(
        &self,
        silent_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        answered_within(
            self.limit,
            "orphans",
            self.inner.orphans(silent_since, limit),
        )
        .await
    }

    async fn claim(
        &self,
        id: SessionId,
        from: &str,
        deadline_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        answered_within(self.limit, "claim", self.inner.claim(id, from, deadline_at)).await
    }

    async fn erase(
        &self,
        id: SessionId,
        owner: Option<&Owner>,
        by: Option<&KeyId>,
        now: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        answered_within(self.limit, "erase", self.inner.erase(id, owner, by, now)).await
    }

    async fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let call = self.inner.expired(what, created_before, held_since, limit);
        answered_within(self.limit, "expired", call).await
    }

    async fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> Result<(), StoreError> {
        answered_within(
            self.limit,
            "images_erased",
            self.inner.images_erased(ids, now),
        )
        .await
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        answered_within(self.limit, "purge_keys", self.inner.purge_keys(now)).await
    }

    async fn forget_instances(&self, silent_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let call = self.inner.forget_instances(silent_before);
        answered_within(self.limit, "forget_instances", call).await
    }
}

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
