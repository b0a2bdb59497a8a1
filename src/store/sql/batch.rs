//! The hot path's writes (new sessions, events, completions with their webhook messages and
//! review cases): what a batch holds, the statements that store it and their parameters.
//!
//! Two writers use them. On SQLite, [`super::sqlite_writer`] runs the one-row form of these
//! statements, prepared once, on a connection and thread of its own. On PostgreSQL,
//! [`super::pg_writer`] binds the same rows as one array per column. Both take the values from
//! the same `*_params` functions, so the two cannot store different things. The multi-row
//! forms here also serve the rarer writes that bypass group commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Transaction};

use super::{ROWS_PER_STATEMENT, db_error, line_text, placeholders, seq_param, timestamp};
use crate::domain::{Completion, MessageId, SessionId};
use crate::store::{Closing, EventRecord, SessionRecord, StoreError};

/// A write that goes through group commit. Cheap to clone: SQLite's writer takes its own copy
/// of a batch to its thread.
#[derive(Clone)]
pub(super) enum Write {
    Insert(Arc<SessionRecord>),
    Events(SessionId, Arc<[EventRecord]>),
    Complete(SessionId, Arc<Completion>, Arc<Closing>),
}

/// One parameter of these statements, bound the same way by both writers.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(String),
    Null,
    Int(i64),
    Real(f64),
}

impl From<Option<String>> for Param {
    fn from(text: Option<String>) -> Self {
        text.map_or(Self::Null, Self::Text)
    }
}

/// `query` with `params` bound in order.
fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    params: impl IntoIterator<Item = Param>,
) -> Query<'q, Any, AnyArguments> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Null => query.bind(None::<String>),
            Param::Int(n) => query.bind(n),
            Param::Real(x) => query.bind(x),
        };
    }
    query
}

pub(super) fn insert_sessions_sql(rows: usize) -> String {
    format!(
        "INSERT INTO sessions (id, tenant, mode, created_by, reference, status, created_at, \
         deadline_at, plan_version, instance) VALUES {}",
        placeholders(rows, 10)
    )
}

pub(super) fn session_params(s: &SessionRecord) -> [Param; 10] {
    [
        Param::Text(s.id.to_string()),
        Param::Text(s.owner.tenant.as_str().to_owned()),
        Param::Text(s.owner.mode.as_str().to_owned()),
        s.created_by
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .into(),
        s.reference.clone().into(),
        Param::Text(s.status.as_str().to_owned()),
        Param::Text(timestamp(s.created_at)),
        Param::Text(timestamp(s.deadline_at)),
        Param::Text(s.plan_version.clone()),
        Param::Text(s.instance.clone()),
    ]
}

pub(super) fn insert_events_sql(rows: usize) -> String {
    format!(
        "INSERT INTO events (session_id, seq, terminal, line) VALUES {}",
        placeholders(rows, 4)
    )
}

pub(super) fn event_params(id: SessionId, event: &EventRecord) -> Result<[Param; 4], StoreError> {
    Ok([
        Param::Text(id.to_string()),
        Param::Int(seq_param(event.seq)),
        Param::Int(i64::from(event.terminal)),
        Param::Text(line_text(event)?),
    ])
}

/// Marks a running session completed; no row changed means it is unknown or already completed.
pub(super) const COMPLETE_SESSION: &str = "UPDATE sessions SET status = 'completed', \
     completed_at = $1, decision = $2, reasons = $3, checks = $4, duration_ms = $5 \
     WHERE id = $6 AND status = 'running'";

pub(super) fn completion_params(id: SessionId, completion: &Completion) -> [Param; 6] {
    [
        Param::Text(timestamp(completion.completed_at)),
        Param::Text(completion.decision.as_str().to_owned()),
        Param::Text(serde_json::to_string(&completion.reasons).expect("reasons serialise")),
        Param::Text(serde_json::to_string(&completion.checks).expect("checks serialise")),
        Param::Real(completion.duration_ms),
        Param::Text(id.to_string()),
    ]
}

/// The condition on a session `s` for its completion to be a webhook message: its owner has
/// an endpoint (enabled or paused: a paused one gets its messages when enabled again).
pub(super) const HAS_ENDPOINT: &str = "WHERE EXISTS (SELECT 1 FROM webhook_endpoints e \
     WHERE e.tenant = s.tenant AND e.mode = s.mode)";

/// Puts a `session.completed` message for each row (message id, session, the terminal event's
/// seq, completion time) whose owner has a webhook endpoint ([`HAS_ENDPOINT`]) into the
/// outbox, in the completion's transaction, so a
/// completion is never without its message nor a message without it. A VALUES list's columns
/// are `column1`, `column2`, ... in both databases.
pub(super) fn enqueue_completed_sql(rows: usize) -> String {
    format!(
        "INSERT INTO webhook_messages (id, tenant, mode, type, session_id, seq, created_at) \
         SELECT v.column1, s.tenant, s.mode, 'session.completed', s.id, v.column3, \
         v.column4 FROM (VALUES {}) AS v JOIN sessions s ON s.id = v.column2 {HAS_ENDPOINT}",
        placeholders(rows, 4)
    )
}

pub(super) fn message_params(id: SessionId, seq: u64, at: DateTime<Utc>) -> [Param; 4] {
    [
        Param::Text(MessageId::generate().as_str().to_owned()),
        Param::Text(id.to_string()),
        Param::Int(seq_param(seq)),
        Param::Text(timestamp(at)),
    ]
}

/// Opens a review case for each row (session, opened at, the automated reasons, the
/// `review.opened` event's seq).
pub(super) fn open_cases_sql(rows: usize) -> String {
    format!(
        "INSERT INTO reviews (session_id, tenant, mode, status, opened_at, \
         automated_reasons, opened_seq, last_seq) \
         SELECT s.id, s.tenant, s.mode, 'open', v.column2, v.column3, v.column4, v.column4 \
         FROM (VALUES {}) AS v JOIN sessions s ON s.id = v.column1",
        placeholders(rows, 4)
    )
}

pub(super) fn case_params(id: SessionId, completion: &Completion, seq: u64) -> [Param; 4] {
    [
        Param::Text(id.to_string()),
        Param::Text(timestamp(completion.completed_at)),
        Param::Text(serde_json::to_string(&completion.reasons).expect("reasons serialise")),
        Param::Int(seq_param(seq)),
    ]
}

/// A batch's writes by kind, in the order they are stored: a session's insert is acknowledged
/// before its first event is queued, so inserts, then events, then completions respects every
/// session's order.
#[derive(Default)]
pub(super) struct Sorted<'a> {
    pub sessions: Vec<&'a SessionRecord>,
    pub events: Vec<(SessionId, &'a EventRecord)>,
    /// Each completion with its terminal event's seq.
    pub completions: Vec<(SessionId, &'a Completion, u64)>,
    /// Review cases to open, with their `review.opened` event's seq.
    pub opened: Vec<(SessionId, &'a Completion, u64)>,
}

impl<'a> Sorted<'a> {
    pub(super) fn new(batch: &'a [Write]) -> Self {
        let mut sorted = Self::default();
        for write in batch {
            match write {
                Write::Insert(record) => sorted.sessions.push(record),
                Write::Events(id, list) => {
                    sorted.events.extend(list.iter().map(|event| (*id, event)))
                }
                Write::Complete(id, completion, closing) => {
                    sorted
                        .events
                        .extend(closing.events().map(|event| (*id, event)));
                    if let Some(review) = &closing.review {
                        sorted.opened.push((*id, completion, review.seq));
                    }
                    sorted
                        .completions
                        .push((*id, completion, closing.terminal.seq));
                }
            }
        }
        sorted
    }
}

/// Runs `sql(rows)` once per chunk of `rows`, each row's parameters from `params`.
async fn insert_chunked<T, P: IntoIterator<Item = Param>>(
    tx: &mut Transaction<'static, Any>,
    rows: &[T],
    sql: fn(usize) -> String,
    mut params: impl FnMut(&T) -> Result<P, StoreError>,
    what: &'static str,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::query(AssertSqlSafe(sql(chunk.len())));
        for row in chunk {
            query = bind_all(query, params(row)?);
        }
        query.execute(&mut **tx).await.map_err(db_error(what))?;
    }
    Ok(())
}

/// Appends events in the caller's transaction.
pub(super) async fn insert_events(
    tx: &mut Transaction<'static, Any>,
    events: &[(SessionId, &EventRecord)],
) -> Result<(), StoreError> {
    insert_chunked(
        tx,
        events,
        insert_events_sql,
        |(id, event)| event_params(*id, event),
        "appending events",
    )
    .await
}

/// Inserts new sessions in the caller's transaction.
pub(super) async fn insert_sessions(
    tx: &mut Transaction<'static, Any>,
    sessions: &[&SessionRecord],
) -> Result<(), StoreError> {
    insert_chunked(
        tx,
        sessions,
        insert_sessions_sql,
        |s| Ok(session_params(s)),
        "inserting sessions",
    )
    .await
}
