//! Where sessions and their event histories live: the `SessionStore` trait and its backends.
//!
//! The API and the orchestrator see only the trait; `store.url` picks the backend at start-up.

mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::StoreSettings;
use crate::domain::{CheckResult, Decision, SessionId};

pub use memory::MemoryStore;

/// Whether a session is still being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Running,
    Completed,
}

/// A session as stored. Its `Debug` leaves out the client's reference.
#[derive(Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub reference: Option<String>,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub completion: Option<Completion>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("completion", &self.completion)
            .finish_non_exhaustive()
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub completed_at: DateTime<Utc>,
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub checks: BTreeMap<String, CheckResult>,
    pub duration_ms: f64,
}

/// One stored event: its NDJSON line and what the follower needs to know without parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: u64,
    /// `session.completed`: nothing follows it.
    pub terminal: bool,
    pub line: Bytes,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} is not in the store")]
    NotFound(SessionId),
    #[error("session {0} is already in the store")]
    Duplicate(SessionId),
    #[error("unsupported store url `{0}`: this build supports memory://")]
    UnsupportedUrl(String),
}

/// Sessions and their append-only event logs.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records a new running session.
    async fn insert(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// Appends the session's next event.
    async fn append_event(&self, id: SessionId, event: &EventRecord) -> Result<(), StoreError>;

    /// Marks the session completed and appends its terminal event, as one step: nobody can see
    /// the one without the other.
    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        terminal: &EventRecord,
    ) -> Result<(), StoreError>;

    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Events with `seq > after`, in order; `None` when the session is unknown.
    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError>;
}

/// Opens the backend that `store.url` names.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn SessionStore>, StoreError> {
    match settings.url.split_once("://") {
        Some(("memory", _)) => Ok(Arc::new(MemoryStore::new(settings.memory_capacity))),
        _ => Err(StoreError::UnsupportedUrl(settings.url.clone())),
    }
}

/// Records for tests of the store and of what reads it.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn running(id: SessionId) -> SessionRecord {
        SessionRecord {
            id,
            reference: None,
            status: SessionStatus::Running,
            created_at: Utc::now(),
            deadline_at: Utc::now(),
            completion: None,
        }
    }

    pub(crate) fn approved() -> Completion {
        Completion {
            completed_at: Utc::now(),
            decision: Decision::Approved,
            reasons: vec![],
            checks: Default::default(),
            duration_ms: 1.0,
        }
    }

    /// A memory store that can be slowed or held at chosen points, to open the windows that a
    /// real backend's latency opens.
    pub(crate) struct TestStore {
        pub(crate) inner: MemoryStore,
        /// How long every event write takes (tokio time).
        pub(crate) append_delay: std::time::Duration,
        /// If set, the first replay reads its snapshot, notifies `reached`, then waits for `gate`.
        pub(crate) replay_gate: Option<ReplayGate>,
    }

    #[derive(Default)]
    pub(crate) struct ReplayGate {
        pub(crate) reached: tokio::sync::Notify,
        pub(crate) gate: tokio::sync::Notify,
        used: std::sync::atomic::AtomicBool,
    }

    impl TestStore {
        pub(crate) fn new() -> Self {
            Self {
                inner: MemoryStore::new(100),
                append_delay: std::time::Duration::ZERO,
                replay_gate: None,
            }
        }
    }

    #[async_trait]
    impl SessionStore for TestStore {
        async fn insert(&self, session: &SessionRecord) -> Result<(), StoreError> {
            self.inner.insert(session).await
        }
        async fn append_event(&self, id: SessionId, event: &EventRecord) -> Result<(), StoreError> {
            tokio::time::sleep(self.append_delay).await;
            self.inner.append_event(id, event).await
        }
        async fn complete(
            &self,
            id: SessionId,
            completion: &Completion,
            terminal: &EventRecord,
        ) -> Result<(), StoreError> {
            self.inner.complete(id, completion, terminal).await
        }
        async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
            self.inner.get(id).await
        }
        async fn events_after(
            &self,
            id: SessionId,
            after: u64,
        ) -> Result<Option<Vec<EventRecord>>, StoreError> {
            let snapshot = self.inner.events_after(id, after).await;
            if let Some(gate) = &self.replay_gate
                && !gate.used.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                gate.reached.notify_one();
                gate.gate.notified().await;
            }
            snapshot
        }
    }

    /// An event whose line is its number.
    pub(crate) fn event(seq: u64, terminal: bool) -> EventRecord {
        EventRecord {
            seq,
            terminal,
            line: format!("{seq}\n").into(),
        }
    }
}
