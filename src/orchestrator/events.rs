//! Session events: what a client streams as NDJSON and what the store keeps.
//!
//! Each event is serialised once into an NDJSON line; the store and every follower share those
//! bytes. An event is written to the store before it is published live, so a replay never misses
//! an event a follower has seen. If the store fails, the session goes on: its events wait, in
//! order, and are written (then published) when the store answers again, so the stored history
//! never has a gap.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::deadline::SessionClock;
use crate::domain::{CheckResult, CheckStatus, Decision, SessionId};
use crate::store::{EventRecord, SessionStore};

/// One event of a session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3... within the session, without gaps.
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub session_id: SessionId,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why an agent was stopped for time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutCause {
    /// Its own `timeout_ms` passed.
    AgentTimeout,
    /// The session's deadline passed first.
    SessionDeadline,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl EventKind {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::SessionCompleted { .. })
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
            line: line.into(),
        }
    }
}

/// Numbers, stamps, stores and publishes one session's events.
pub(crate) struct Emitter {
    session_id: SessionId,
    clock: SessionClock,
    seq: u64,
    store: Arc<dyn SessionStore>,
    live: broadcast::Sender<EventRecord>,
    /// Events the store has not taken yet, oldest first.
    unstored: VecDeque<EventRecord>,
}

impl Emitter {
    /// Numbers events from `after + 1`.
    pub(crate) fn new(
        session_id: SessionId,
        clock: SessionClock,
        store: Arc<dyn SessionStore>,
        live: broadcast::Sender<EventRecord>,
        after: u64,
    ) -> Self {
        Self {
            session_id,
            clock,
            seq: after,
            store,
            live,
            unstored: VecDeque::new(),
        }
    }

    /// Stores the next event, then publishes it. Once the store has failed, events only queue
    /// (a session does not wait on a store that is down for each of them); `flush` writes them.
    pub(crate) async fn emit(&mut self, kind: EventKind) {
        let record = self.next(kind);
        let healthy = self.unstored.is_empty();
        self.unstored.push_back(record);
        if healthy {
            self.flush().await;
        }
    }

    /// Stores and publishes the waiting events in order; `false` if the store failed (the rest
    /// keep waiting).
    pub(crate) async fn flush(&mut self) -> bool {
        while let Some(record) = self.unstored.front() {
            if let Err(error) = self.store.append_event(self.session_id, record).await {
                metrics::counter!("kyc_store_write_failures_total").increment(1);
                tracing::error!(%error, seq = record.seq, "could not store a session event");
                return false;
            }
            let record = self.unstored.pop_front().expect("just looked at it");
            self.publish(record);
        }
        true
    }

    /// The events still waiting for the store, for whoever retries them.
    pub(crate) fn take_unstored(&mut self) -> Vec<EventRecord> {
        self.unstored.drain(..).collect()
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

    /// Sends an already stored event to live followers.
    pub(crate) fn publish(&self, record: EventRecord) {
        // No receiver is normal: nobody follows this session live.
        let _ = self.live.send(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
