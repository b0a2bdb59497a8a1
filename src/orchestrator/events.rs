//! Session events: what a client streams as NDJSON and what the store keeps.
//!
//! Each event is serialised once into an NDJSON line; the store and every follower share those
//! bytes. An event is written to the store before it is published live, so a replay never misses
//! an event a follower has seen. If the store fails, the session goes on: its events wait, in
//! order, and are written (then published) when the store answers again, so the stored history
//! never has a gap.
//!
//! The session does not wait for each write: a writer task of its own stores its events one
//! after another and publishes each once it is stored, while the agents go on. Only the
//! completion waits, for the write in progress; the events queued behind it (those of the last
//! agents, typically) are stored with the completion, in its write. Waiting for each commit
//! would put a database's commit latency on the session's path once per event (README,
//! Performance, has the figures).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::SessionContext;
use super::deadline::SessionClock;
use crate::domain::{
    CheckResult, CheckStatus, Completion, Decision, ReviewStatus, Reviewer, SessionId, Verdict,
};
use crate::store::{EventRecord, SessionStore, StoreError, stored_through};
use crate::telemetry::ErrorChain;

/// One event of a session's history: one line of the NDJSON stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// 1, 2, 3... within the session, without gaps.
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub session_id: SessionId,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why an agent was stopped for time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutCause {
    /// Its own `timeout_ms` passed.
    AgentTimeout,
    /// The session's deadline passed first.
    SessionDeadline,
}

/// What happened, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum EventKind {
    #[serde(rename = "session.started")]
    SessionStarted {
        deadline_at: DateTime<Utc>,
        agents: Vec<String>,
    },
    /// The session's instance stopped; this one runs it again from its stored inputs, with a
    /// new deadline. Checks from the earlier attempt are superseded.
    #[serde(rename = "session.resumed")]
    SessionResumed {
        attempt: u32,
        deadline_at: DateTime<Utc>,
        agents: Vec<String>,
    },
    /// The session's instance stopped and the session cannot be run again; it completes as
    /// `review` with reason `interrupted`.
    #[serde(rename = "session.interrupted")]
    SessionInterrupted { reason: String },
    #[serde(rename = "agent.started")]
    AgentStarted { agent: String },
    #[serde(rename = "agent.completed")]
    AgentCompleted {
        agent: String,
        status: CheckStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasons: Vec<String>,
        duration_ms: f64,
    },
    #[serde(rename = "agent.failed")]
    AgentFailed {
        agent: String,
        error: String,
        duration_ms: f64,
    },
    #[serde(rename = "agent.timed_out")]
    AgentTimedOut {
        agent: String,
        cause: TimeoutCause,
        duration_ms: f64,
    },
    #[serde(rename = "agent.skipped")]
    AgentSkipped { agent: String, reason: String },
    #[serde(rename = "session.completed")]
    SessionCompleted {
        decision: Decision,
        reasons: Vec<String>,
        checks: BTreeMap<String, CheckResult>,
        duration_ms: f64,
    },
    /// Right after `session.completed` with decision `review`: the session waits for a
    /// reviewer. `reasons` are the agents'.
    #[serde(rename = "review.opened")]
    ReviewOpened { reasons: Vec<String> },
    /// A reviewer decided. `note` is the reviewer's text, cleared by an erasure.
    #[serde(rename = "review.decided")]
    ReviewDecided {
        reviewer: Reviewer,
        decision: Verdict,
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// The case's status after this decision.
        status: ReviewStatus,
    },
    /// The review is over: the session's decision and reasons from now on.
    #[serde(rename = "review.resolved")]
    ReviewResolved {
        decision: Verdict,
        reasons: Vec<String>,
    },
}

impl EventKind {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::SessionCompleted { .. })
    }

    /// The event that opens a review case after `completion`'s `session.completed`, when the
    /// agents decided `review`.
    pub(crate) fn review_opening(completion: &Completion) -> Option<Self> {
        (completion.decision == Decision::Review).then(|| Self::ReviewOpened {
            reasons: completion.reasons.clone(),
        })
    }
}

impl Event {
    /// The NDJSON line (with its newline) that the store keeps and followers receive.
    pub fn to_record(&self) -> EventRecord {
        let mut line = serde_json::to_vec(self).expect("events always serialise");
        line.push(b'\n');
        EventRecord {
            seq: self.seq,
            terminal: self.kind.is_terminal(),
            // Trimmed to its length: the line lives as long as the session, and the spare
            // capacity serialising leaves behind would be up to half of it.
            line: bytes::Bytes::from(line.into_boxed_slice()),
        }
    }
}

/// Numbers and stamps one session's events and hands them to its writer.
pub(crate) struct Emitter {
    session_id: SessionId,
    clock: SessionClock,
    seq: u64,
    writer: WriterState,
    /// Closes when the writer's task ends, however the emitter went.
    writer_ended: watch::Receiver<()>,
}

/// Resolves once a session's writer task has ended: every event it was handed is stored (or
/// given up on). A runner that panicked drops its emitter; whoever completes the session in
/// its place waits for this before counting the stored events, or its terminal event would
/// take a number a queued event still holds.
pub(crate) struct WriterEnded(watch::Receiver<()>);

impl WriterEnded {
    pub(crate) async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

/// What the emitter hands its writer.
enum Outgoing {
    Event(EventRecord),
    /// The run is over: what is still queued is stored with the completion, not by the writer.
    /// A writer whose emitter is dropped without this (a runner that panicked) stores it all.
    Close,
}

enum WriterState {
    /// Events go through `outbox` to the writer's task.
    Open {
        outbox: mpsc::UnboundedSender<Outgoing>,
        task: JoinHandle<Writer>,
    },
    /// The writer is back from its task, with what it could not store.
    Closed(Writer),
    /// Its task was cancelled with the runtime: nothing more is stored.
    Lost,
}

impl Emitter {
    /// Numbers events from `after + 1`. Starts the session's writer task, which carries the
    /// session's context and span for what it logs.
    pub(crate) fn new(
        session_id: SessionId,
        clock: SessionClock,
        store: Arc<dyn SessionStore>,
        live: broadcast::Sender<EventRecord>,
        after: u64,
    ) -> Self {
        let (outbox, queued) = mpsc::unbounded_channel();
        let (ended, writer_ended) = watch::channel(());
        let writer = Writer {
            session_id,
            store,
            live,
            unstored: VecDeque::new(),
            failed: false,
        };
        let run = async move {
            let writer = writer.run(queued).await;
            drop(ended);
            writer
        };
        let task = tokio::spawn(SessionContext { session_id }.scope(run).in_current_span());
        Self {
            session_id,
            clock,
            seq: after,
            writer: WriterState::Open { outbox, task },
            writer_ended,
        }
    }

    /// What resolves once the writer's task has ended, for whoever outlives this emitter.
    pub(crate) fn writer_ended(&self) -> WriterEnded {
        WriterEnded(self.writer_ended.clone())
    }

    /// Queues the next event for the store; it is published once stored.
    pub(crate) fn emit(&mut self, kind: EventKind) {
        let record = self.next(kind);
        let WriterState::Open { outbox, .. } = &self.writer else {
            unreachable!("no event is emitted after close");
        };
        // The writer ends only at `Close` or when the outbox closes, so this cannot fail.
        let _ = outbox.send(Outgoing::Event(record));
    }

    /// Ends the writer: waits for the write in progress, if any. The events emitted since are
    /// left unstored, for `take_unstored` and the completion's write. `false` if the store
    /// failed and still fails (those events keep waiting too). No event is stored after this.
    pub(crate) async fn close(&mut self) -> bool {
        if let WriterState::Open { outbox, task } =
            std::mem::replace(&mut self.writer, WriterState::Lost)
        {
            let _ = outbox.send(Outgoing::Close);
            match task.await {
                Ok(writer) => self.writer = WriterState::Closed(writer),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => {}
            }
        }
        match &mut self.writer {
            // One more try for events the store refused earlier: it may hold some of them.
            WriterState::Closed(writer) if writer.failed => writer.flush().await,
            WriterState::Closed(_) => true,
            WriterState::Open { .. } | WriterState::Lost => false,
        }
    }

    /// The events not stored after `close`, in order, for the completion's write (or whoever
    /// retries it).
    pub(crate) fn take_unstored(&mut self) -> Vec<EventRecord> {
        match &mut self.writer {
            WriterState::Closed(writer) => writer.unstored.drain(..).collect(),
            _ => Vec::new(),
        }
    }

    /// Numbers and stamps the next event without storing it: for the terminal event, which the
    /// store writes together with the session's completion.
    pub(crate) fn next(&mut self, kind: EventKind) -> EventRecord {
        self.seq += 1;
        Event {
            seq: self.seq,
            ts: self.clock.now(),
            session_id: self.session_id,
            kind,
        }
        .to_record()
    }

    /// Sends an event the completion's write stored (after `close`) to live followers.
    pub(crate) fn publish(&self, record: EventRecord) {
        let WriterState::Closed(writer) = &self.writer else {
            unreachable!("the closing events are published only after a successful close");
        };
        writer.publish(record);
    }
}

/// Stores one session's events in order and publishes each once stored.
struct Writer {
    session_id: SessionId,
    store: Arc<dyn SessionStore>,
    live: broadcast::Sender<EventRecord>,
    /// Events the store has not taken yet, oldest first.
    unstored: VecDeque<EventRecord>,
    /// The last write failed: the store may hold some of `unstored` all the same.
    failed: bool,
}

impl Writer {
    /// Until `Close`, or the outbox closes. Once the store has failed, events only queue (a
    /// store that is down is not asked again for each of them); `close` tries once more.
    async fn run(mut self, mut queued: mpsc::UnboundedReceiver<Outgoing>) -> Self {
        let mut batch = Vec::new();
        while queued.recv_many(&mut batch, usize::MAX).await > 0 {
            let mut closed = false;
            for outgoing in batch.drain(..) {
                match outgoing {
                    Outgoing::Event(record) => self.unstored.push_back(record),
                    Outgoing::Close => closed = true,
                }
            }
            if closed {
                break;
            }
            if !self.failed {
                self.flush().await;
            }
        }
        self
    }

    /// Stores and publishes the waiting events in order, those that queued while an earlier
    /// write committed in one write; `false` if the store failed (the rest keep waiting). After
    /// a failure it first asks the store what it holds, and publishes those without writing
    /// them again.
    async fn flush(&mut self) -> bool {
        if self.failed
            && let Some(first) = self.unstored.front()
        {
            match stored_through(&*self.store, self.session_id, first.seq).await {
                // `None`: the terminal event is stored, which only comes after this writer.
                Ok(through) => {
                    let through = through.unwrap_or(u64::MAX);
                    while let Some(record) = self.unstored.pop_front_if(|r| r.seq <= through) {
                        self.publish(record);
                    }
                }
                Err(error) => return self.failure(&error),
            }
        }
        if self.unstored.is_empty() {
            self.failed = false;
            return true;
        }
        let events = self.unstored.make_contiguous();
        if let Err(error) = self.store.append_events(self.session_id, events).await {
            return self.failure(&error);
        }
        self.failed = false;
        for record in std::mem::take(&mut self.unstored) {
            self.publish(record);
        }
        true
    }

    fn failure(&mut self, error: &StoreError) -> bool {
        metrics::counter!("kyc_store_write_failures_total").increment(1);
        let first_seq = self.unstored.front().map(|record| record.seq);
        tracing::error!(error = %ErrorChain(&error), ?first_seq, "could not store session events");
        self.failed = true;
        false
    }

    fn publish(&self, record: EventRecord) {
        // No receiver is normal: nobody follows this session live.
        let _ = self.live.send(record);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::store::fixtures::{TestStore, running};

    fn started(agent: &str) -> EventKind {
        EventKind::AgentStarted {
            agent: agent.into(),
        }
    }

    /// A session's emitter on a store whose event writes take 20 ms, with its first event's
    /// write in progress and two more events queued behind it.
    async fn behind_a_write() -> (Arc<TestStore>, SessionId, Emitter) {
        let mut store = TestStore::new();
        store.append_delay = Duration::from_millis(20);
        let store = Arc::new(store);
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        let (live, _) = broadcast::channel(16);
        let mut emitter = Emitter::new(id, SessionClock::start(), store.clone(), live, 0);
        emitter.emit(started("liveness"));
        // The writer takes the first event and starts its write.
        tokio::task::yield_now().await;
        emitter.emit(started("ocr"));
        emitter.emit(started("face_match"));
        (store, id, emitter)
    }

    async fn stored(store: &TestStore, id: SessionId) -> Vec<u64> {
        let events = store.inner.events_after(id, 0).await.unwrap().unwrap();
        events.iter().map(|event| event.seq).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_the_write_in_progress_and_hands_back_what_queued_behind_it() {
        let (store, id, mut emitter) = behind_a_write().await;

        assert!(emitter.close().await);

        assert_eq!(stored(&store, id).await, [1]);
        assert_eq!(store.writes.load(Ordering::SeqCst), 1);
        let rest: Vec<u64> = emitter.take_unstored().iter().map(|e| e.seq).collect();
        assert_eq!(rest, [2, 3], "for the completion's write");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_emitter_leaves_its_writer_to_store_everything() {
        let (store, id, emitter) = behind_a_write().await;
        let ended = emitter.writer_ended();

        // As when a runner panics: nobody will complete with these events.
        drop(emitter);
        ended.wait().await;

        assert_eq!(stored(&store, id).await, [1, 2, 3]);
    }

    #[test]
    fn events_serialise_flat_with_their_type() {
        let event = Event {
            seq: 3,
            ts: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
                .unwrap()
                .to_utc(),
            session_id: "0190d7a4-7a7b-7cc0-8000-000000000001".parse().unwrap(),
            kind: EventKind::AgentStarted {
                agent: "ocr".into(),
            },
        };
        let record = event.to_record();
        assert_eq!(
            std::str::from_utf8(&record.line).unwrap(),
            "{\"seq\":3,\"ts\":\"2026-01-02T03:04:05.678Z\",\
             \"session_id\":\"0190d7a4-7a7b-7cc0-8000-000000000001\",\
             \"type\":\"agent.started\",\"agent\":\"ocr\"}\n"
        );
        assert!(!record.terminal);
        let back: Event = serde_json::from_slice(&record.line).unwrap();
        assert_eq!(back, event);
    }
}
