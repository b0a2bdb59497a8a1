//! Records and a test store for tests of the store and of what reads it.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

use super::{
    Closing, Completion, Erasure, EventRecord, Expiry, IdempotencyKey, Inserted, MemoryStore,
    SessionRecord, SessionStatus, SessionStore, StoreError,
};
use crate::domain::{
    Decision, Endpoint, EndpointId, KeyId, Mode, Owner, Principal, SessionId, SessionQuery,
    SigningSecret,
};

pub(crate) fn running(id: SessionId) -> SessionRecord {
    SessionRecord {
        id,
        owner: owner(),
        created_by: None,
        reference: None,
        status: SessionStatus::Running,
        created_at: Utc::now(),
        deadline_at: Utc::now(),
        plan_version: "test".into(),
        instance: "memory".into(),
        attempts: 0,
        completion: None,
        images_erased_at: None,
        erased_at: None,
        erased_by: None,
        review: None,
    }
}

/// Store settings for a SQLite file in `dir`.
pub(crate) fn sqlite_in(dir: &tempfile::TempDir) -> crate::config::StoreSettings {
    let mut settings = crate::config::Settings::defaults().store;
    settings.url = format!("sqlite://{}", dir.path().join("kyc.db").display());
    settings
}

/// An enabled endpoint of [`owner`] for messages of `event_type`.
pub(crate) fn endpoint(event_type: &str) -> Endpoint {
    // Microseconds, as the SQL store keeps them.
    let now = Utc::now().trunc_subsecs(6);
    Endpoint {
        id: EndpointId::generate(),
        owner: owner(),
        url: "https://example.com/hook".into(),
        events: vec![event_type.to_owned()],
        description: String::new(),
        enabled: true,
        disabled_reason: None,
        secret: SigningSecret::new("whsec_c2VjcmV0".into()),
        previous_secret: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    }
}

/// Who starts the fixture sessions.
pub(crate) fn principal() -> Principal {
    Principal {
        owner: owner(),
        key_id: "key_fixture".parse().unwrap(),
    }
}

/// The tenant every fixture session belongs to.
pub(crate) fn owner() -> Owner {
    Owner {
        tenant: "acme".parse().unwrap(),
        mode: Mode::Test,
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
    /// The write (event batches and completions, counted from 1) whose answer is lost: it is
    /// applied, then reported `Unavailable`, as when the connection drops while the commit's
    /// answer is on its way. 0 loses none.
    pub(crate) lose_answer_to: usize,
    /// Event batches and completions written so far.
    pub(crate) writes: std::sync::atomic::AtomicUsize,
    /// Heartbeats never answer, as on a connection the network left half-open.
    pub(crate) heartbeat_hangs: bool,
    /// Inserts are applied, then reported `Unavailable`: the commit's answer lost.
    pub(crate) lose_insert_answers: bool,
    /// The sessions inserted, in order.
    pub(crate) inserted: std::sync::Mutex<Vec<SessionId>>,
    /// This many reads of events fail as `Unavailable` before they are answered again.
    pub(crate) failing_reads: std::sync::atomic::AtomicUsize,
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
            lose_answer_to: 0,
            writes: Default::default(),
            heartbeat_hangs: false,
            lose_insert_answers: false,
            inserted: Default::default(),
            failing_reads: Default::default(),
        }
    }

    /// `result`, or `Unavailable` in its place if this is the write whose answer is lost.
    fn answer(&self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        let write = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if result.is_ok() && write == self.lose_answer_to {
            return Err(StoreError::Unavailable {
                what: "committing",
                source: sqlx::Error::Io(std::io::ErrorKind::ConnectionAborted.into()).into(),
            });
        }
        result
    }
}

#[async_trait]
impl SessionStore for TestStore {
    fn instance(&self) -> &str {
        self.inner.instance()
    }
    async fn insert(
        &self,
        session: &SessionRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError> {
        let inserted = self.inner.insert(session, key).await?;
        self.inserted.lock().unwrap().push(session.id);
        if self.lose_insert_answers {
            return Err(StoreError::Unavailable {
                what: "committing",
                source: sqlx::Error::Io(std::io::ErrorKind::ConnectionAborted.into()).into(),
            });
        }
        Ok(inserted)
    }
    async fn find_key(
        &self,
        owner: &Owner,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionId, String)>, StoreError> {
        self.inner.find_key(owner, key, now).await
    }
    async fn append_events(&self, id: SessionId, events: &[EventRecord]) -> Result<(), StoreError> {
        tokio::time::sleep(self.append_delay).await;
        self.answer(self.inner.append_events(id, events).await)
    }
    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        closing: &Closing,
    ) -> Result<(), StoreError> {
        self.answer(self.inner.complete(id, completion, closing).await)
    }
    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn find(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.find(owner, id).await
    }
    async fn list(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list(owner, query).await
    }
    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError> {
        let failing = &self.failing_reads;
        if failing
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(StoreError::Unavailable {
                what: "reading events",
                source: sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()).into(),
            });
        }
        let snapshot = self.inner.events_after(id, after).await;
        if let Some(gate) = &self.replay_gate
            && !gate.used.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            gate.reached.notify_one();
            gate.gate.notified().await;
        }
        snapshot
    }
    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.heartbeat_hangs {
            std::future::pending::<()>().await;
        }
        self.inner.heartbeat(now).await
    }
    async fn orphans(
        &self,
        silent_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.orphans(silent_since, limit).await
    }
    async fn claim(
        &self,
        id: SessionId,
        from: &str,
        deadline_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.claim(id, from, deadline_at).await
    }
    async fn erase(
        &self,
        id: SessionId,
        owner: Option<&Owner>,
        by: Option<&KeyId>,
        now: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        self.inner.erase(id, owner, by, now).await
    }
    async fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.inner
            .expired(what, created_before, held_since, limit)
            .await
    }
    async fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.images_erased(ids, now).await
    }
    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_keys(now).await
    }
    async fn forget_instances(&self, silent_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.forget_instances(silent_before).await
    }
}

/// A run's end without a review: `session.completed` alone, at `seq`.
pub(crate) fn closing(seq: u64) -> Closing {
    Closing {
        before: Vec::new(),
        terminal: event(seq, true),
        review: None,
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
