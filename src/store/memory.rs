//! The in-process store: fast and simple, and gone with the process. It keeps every running
//! session and at most `capacity` completed ones, dropping the oldest completed first, so a
//! long-running instance does not grow without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Completion, EventRecord, SessionRecord, SessionStatus, SessionStore, StoreError};
use crate::domain::SessionId;

struct Entry {
    record: SessionRecord,
    events: Vec<EventRecord>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Entry>,
    completed: VecDeque<SessionId>,
}

/// Sessions in memory.
pub struct MemoryStore {
    // A std Mutex: every critical section is a map operation, never held across an await.
    inner: Mutex<Inner>,
    capacity: usize,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id) {
            return Err(StoreError::Duplicate(session.id));
        }
        inner.sessions.insert(
            session.id,
            Entry {
                record: session.clone(),
                events: Vec::new(),
            },
        );
        Ok(())
    }

    async fn append_event(&self, id: SessionId, event: &EventRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner
            .sessions
            .get_mut(&id)
            .ok_or(StoreError::NotFound(id))?;
        entry.events.push(event.clone());
        Ok(())
    }

    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        terminal: &EventRecord,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner
            .sessions
            .get_mut(&id)
            .ok_or(StoreError::NotFound(id))?;
        entry.events.push(terminal.clone());
        entry.record.status = SessionStatus::Completed;
        entry.record.completion = Some(completion.clone());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{approved, event, running};

    #[tokio::test]
    async fn events_are_replayed_after_a_sequence_number() {
        let store = MemoryStore::new(10);
        let id = SessionId::new();
        store.insert(&running(id)).await.unwrap();
        for seq in 1..=4 {
            store.append_event(id, &event(seq, false)).await.unwrap();
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
        store.insert(&running(still_running)).await.unwrap();
        for &id in &ids {
            store.insert(&running(id)).await.unwrap();
            store
                .complete(id, &approved(), &event(1, true))
                .await
                .unwrap();
        }
        assert!(store.get(ids[0]).await.unwrap().is_none());
        assert!(store.get(ids[2]).await.unwrap().is_some());
        assert!(store.get(still_running).await.unwrap().is_some());
        assert!(matches!(
            store.insert(&running(ids[2])).await,
            Err(StoreError::Duplicate(_))
        ));
    }
}
