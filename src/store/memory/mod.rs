//! The in-process store: fast and simple, and gone with the process. It keeps every running
//! session and at most `capacity` completed ones, dropping the oldest completed first, so a
//! long-running instance does not grow without bound.

mod capture;
mod challenges;
mod reviews;
mod webhooks;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::erasure::{scrub_checks, scrub_line};
use super::{
    Closing, Completion, Erasure, EventRecord, Expiry, IdempotencyKey, Inserted, KeyStore,
    SessionRecord, SessionStatus, SessionStore, StoreError,
};
use crate::domain::{
    KeyHash, KeyId, KeyRecord, MessageId, OutboxMessage, Owner, ReviewStatus, SessionId,
    SessionQuery, TenantId,
};

/// The instance id of every memory store: its sessions die with it, so none is ever an orphan.
const INSTANCE: &str = "memory";

struct Entry {
    record: SessionRecord,
    events: Vec<EventRecord>,
    /// The decisions on its review case, oldest first.
    decisions: Vec<crate::domain::ReviewDecision>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Entry>,
    completed: VecDeque<SessionId>,
    /// Idempotency keys, scoped per owner.
    keys: HashMap<(Owner, String), (IdempotencyKey, SessionId)>,
}

/// Sessions in memory.
pub struct MemoryStore {
    // A std Mutex: every critical section is a map operation, never held across an await.
    inner: Mutex<Inner>,
    /// API keys, apart from the sessions: read rarely (the authenticator caches them).
    api_keys: Mutex<Vec<KeyRecord>>,
    /// Locked after `inner` when both are (a completion writes its webhook message).
    webhooks: Mutex<webhooks::Webhooks>,
    /// Liveness challenges, by id; never locked with another lock.
    challenges: Mutex<HashMap<crate::domain::ChallengeId, crate::domain::Challenge>>,
    /// Capture links, by their token's hash; never locked with another lock.
    capture_links: Mutex<HashMap<String, crate::domain::CaptureLink>>,
    capacity: usize,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            api_keys: Mutex::default(),
            webhooks: Mutex::default(),
            challenges: Mutex::default(),
            capture_links: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn webhooks(&self) -> MutexGuard<'_, webhooks::Webhooks> {
        self.webhooks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn challenges(
        &self,
    ) -> MutexGuard<'_, HashMap<crate::domain::ChallengeId, crate::domain::Challenge>> {
        self.challenges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn capture_links(&self) -> MutexGuard<'_, HashMap<String, crate::domain::CaptureLink>> {
        self.capture_links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn api_keys(&self) -> MutexGuard<'_, Vec<KeyRecord>> {
        self.api_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `record` is one `query` asks for (its position aside).
fn matches(record: &SessionRecord, query: &SessionQuery) -> bool {
    query.status.is_none_or(|status| record.status == status)
        && query.decision.is_none_or(|decision| {
            record
                .completion
                .as_ref()
                .is_some_and(|c| c.decision == decision)
        })
        && query
            .reference
            .as_ref()
            .is_none_or(|reference| record.reference.as_ref() == Some(reference))
        && query
            .created_after
            .is_none_or(|after| record.created_at >= after)
        && query
            .created_before
            .is_none_or(|before| record.created_at < before)
        && query
            .after
            .is_none_or(|p| (record.created_at, record.id) < (p.created_at, p.id))
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn instance(&self) -> &str {
        INSTANCE
    }

    async fn insert(
        &self,
        session: &SessionRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id) {
            return Err(StoreError::Duplicate(session.id));
        }
        if let Some(key) = key {
            let now = Utc::now();
            let scoped = (session.owner.clone(), key.key.clone());
            if let Some((taken, id)) = inner.keys.get(&scoped)
                && taken.expires_at >= now
            {
                return Ok(Inserted::Existing {
                    id: *id,
                    same_request: taken.fingerprint == key.fingerprint,
                });
            }
            inner.keys.insert(scoped, (key.clone(), session.id));
        }
        inner.sessions.insert(
            session.id,
            Entry {
                record: session.clone(),
                events: Vec::new(),
                decisions: Vec::new(),
            },
        );
        Ok(Inserted::New)
    }

    async fn find_key(
        &self,
        owner: &Owner,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionId, String)>, StoreError> {
        Ok(self
            .lock()
            .keys
            .get(&(owner.clone(), key.to_owned()))
            .filter(|(taken, _)| taken.expires_at >= now)
            .map(|(taken, id)| (*id, taken.fingerprint.clone())))
    }

    async fn append_events(&self, id: SessionId, events: &[EventRecord]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner
            .sessions
            .get_mut(&id)
            .ok_or(StoreError::NotFound(id))?;
        // As a database's key on (session, seq) would: an event already stored is refused, and
        // with it the whole write.
        let last = entry.events.last().map_or(0, |event| event.seq);
        if events.first().is_some_and(|event| event.seq <= last) {
            return Err(StoreError::Conflict(id));
        }
        entry.events.extend_from_slice(events);
        Ok(())
    }

    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        closing: &Closing,
    ) -> Result<(), StoreError> {
        let terminal = &closing.terminal;
        let mut inner = self.lock();
        let entry = inner
            .sessions
            .get_mut(&id)
            .filter(|entry| entry.record.status == SessionStatus::Running)
            .ok_or(StoreError::NotFound(id))?;
        // As append_events: an event already stored refuses the whole completion.
        let last = entry.events.last().map_or(0, |event| event.seq);
        if closing
            .events()
            .next()
            .is_some_and(|event| event.seq <= last)
        {
            return Err(StoreError::Conflict(id));
        }
        entry.events.extend(closing.events().cloned());
        entry.record.status = SessionStatus::Completed;
        entry.record.completion = Some(completion.clone());
        if let Some(opened) = &closing.review {
            entry.record.review = Some(crate::domain::ReviewState {
                status: crate::domain::ReviewStatus::Open,
                opened_at: completion.completed_at,
                resolved_at: None,
                automated_reasons: completion.reasons.clone(),
                opened_seq: opened.seq,
                last_seq: opened.seq,
            });
        }
        let mut webhooks = self.webhooks();
        if webhooks.listens(&entry.record.owner) {
            let message = OutboxMessage {
                id: MessageId::generate(),
                owner: entry.record.owner.clone(),
                event_type: "session.completed".to_owned(),
                session_id: id,
                seq: terminal.seq,
                created_at: completion.completed_at,
            };
            webhooks.enqueue(message, self.capacity);
        }
        drop(webhooks);
        inner.completed.push_back(id);
        while inner.completed.len() > self.capacity {
            if let Some(oldest) = inner.completed.pop_front() {
                inner.sessions.remove(&oldest);
            }
        }
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(&id).map(|e| e.record.clone()))
    }

    async fn find(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .sessions
            .get(&id)
            .filter(|e| &e.record.owner == owner)
            .map(|e| e.record.clone()))
    }

    async fn list(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<&SessionRecord> = inner
            .sessions
            .values()
            .map(|entry| &entry.record)
            .filter(|r| &r.owner == owner && matches(r, query))
            .collect();
        found.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        Ok(found.into_iter().take(query.limit).cloned().collect())
    }

    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError> {
        let inner = self.lock();
        Ok(inner.sessions.get(&id).map(|entry| {
            // seq starts at 1 and has no gaps, so `after` is the index of the first wanted event.
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(entry.events.len());
            entry.events[start..].to_vec()
        }))
    }

    async fn heartbeat(&self, _: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    /// There is one instance, this one.
    async fn forget_instances(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn orphans(&self, _: DateTime<Utc>, _: usize) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn claim(&self, _: SessionId, _: &str, _: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn erase(
        &self,
        id: SessionId,
        owner: Option<&Owner>,
        by: Option<&KeyId>,
        now: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner
            .sessions
            .get_mut(&id)
            .filter(|e| owner.is_none_or(|owner| &e.record.owner == owner))
        else {
            return Ok(Erasure::NotFound);
        };
        let Some(completion) = entry.record.completion.as_mut() else {
            return Ok(Erasure::Running);
        };
        scrub_checks(&mut completion.checks);
        let opened = entry.record.review.as_ref().map(|r| r.opened_seq);
        for event in entry
            .events
            .iter_mut()
            .filter(|e| e.terminal || opened.is_some_and(|seq| e.seq > seq))
        {
            event.line = scrub_line(&event.line);
        }
        for decision in &mut entry.decisions {
            decision.note = None;
        }
        if entry.record.erased_at.is_none() {
            entry.record.erased_at = Some(now);
            entry.record.erased_by = by.cloned();
        }
        entry.record.images_erased_at.get_or_insert(now);
        Ok(Erasure::Erased)
    }

    async fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let inner = self.lock();
        let mut due: Vec<&SessionRecord> = inner
            .sessions
            .values()
            .map(|entry| &entry.record)
            .filter(|r| r.status == SessionStatus::Completed && r.created_at < created_before)
            .filter(|r| {
                r.review.as_ref().is_none_or(|review| {
                    review.status == ReviewStatus::Resolved || review.opened_at < held_since
                })
            })
            .filter(|r| match what {
                Expiry::Images => r.images_erased_at.is_none(),
                Expiry::PersonalData => r.erased_at.is_none(),
            })
            .collect();
        due.sort_by_key(|r| r.created_at);
        Ok(due.into_iter().take(limit).map(|r| r.id).collect())
    }

    async fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in ids {
            if let Some(entry) = inner.sessions.get_mut(id) {
                entry.record.images_erased_at.get_or_insert(now);
            }
        }
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.keys.len();
        inner.keys.retain(|_, (key, _)| key.expires_at >= now);
        Ok((before - inner.keys.len()) as u64)
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let mut keys = self.api_keys();
        if keys.iter().any(|k| k.id == key.id || k.hash == key.hash) {
            return Err(StoreError::DuplicateKey(key.id.clone()));
        }
        keys.push(key.clone());
        Ok(())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.api_keys().iter().find(|k| &k.hash == hash).cloned())
    }

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.api_keys().iter().find(|k| &k.id == id).cloned())
    }

    async fn keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .api_keys()
            .iter()
            .filter(|k| tenant.is_none_or(|t| &k.owner.tenant == t))
            .cloned()
            .collect())
    }

    async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut keys = self.api_keys();
        let Some(key) = keys.iter_mut().find(|k| &k.id == id) else {
            return Ok(false);
        };
        key.revoked_at.get_or_insert(now);
        Ok(true)
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        old_expires_at: DateTime<Utc>,
        new: &KeyRecord,
    ) -> Result<bool, StoreError> {
        let mut keys = self.api_keys();
        if keys.iter().any(|k| k.id == new.id || k.hash == new.hash) {
            return Err(StoreError::DuplicateKey(new.id.clone()));
        }
        let Some(key) = keys
            .iter_mut()
            .find(|k| &k.id == old && k.revoked_at.is_none())
        else {
            return Ok(false);
        };
        key.expires_at = Some(
            key.expires_at
                .map_or(old_expires_at, |at| at.min(old_expires_at)),
        );
        keys.push(new.clone());
        Ok(true)
    }

    async fn key_used(&self, id: &KeyId, at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(key) = self.api_keys().iter_mut().find(|k| &k.id == id) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{approved, closing, event, running};

    #[tokio::test]
    async fn an_event_number_already_stored_fails_the_whole_append() {
        let store = MemoryStore::new(10);
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        store
            .append_events(id, &[event(1, false), event(2, false)])
            .await
            .unwrap();

        let again = store
            .append_events(id, &[event(2, false), event(3, false)])
            .await;

        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let seqs: Vec<u64> = store
            .events_after(id, 0)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|event| event.seq)
            .collect();
        assert_eq!(seqs, [1, 2], "nothing of the refused write was kept");
    }

    #[tokio::test]
    async fn events_are_replayed_after_a_sequence_number() {
        let store = MemoryStore::new(10);
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        for seq in 1..=4 {
            store.append_events(id, &[event(seq, false)]).await.unwrap();
        }
        let after_two = store.events_after(id, 2).await.unwrap().unwrap();
        assert_eq!(after_two.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(store.events_after(id, 9).await.unwrap().unwrap().is_empty());
        assert!(
            store
                .events_after(SessionId::new(), 0)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_oldest_completed_sessions_are_dropped_past_capacity() {
        let store = MemoryStore::new(2);
        let ids: Vec<_> = (0..3).map(|_| SessionId::new()).collect();
        let still_running = SessionId::new();
        store.insert(&running(still_running), None).await.unwrap();
        for &id in &ids {
            store.insert(&running(id), None).await.unwrap();
            store.complete(id, &approved(), &closing(1)).await.unwrap();
        }
        assert!(store.get(ids[0]).await.unwrap().is_none());
        assert!(store.get(ids[2]).await.unwrap().is_some());
        assert!(store.get(still_running).await.unwrap().is_some());
        assert!(matches!(
            store.insert(&running(ids[2]), None).await,
            Err(StoreError::Duplicate(_))
        ));
    }
}
