//! The group-commit writer on SQLite: a connection of its own, on a thread of its own, with
//! the one-row form of each statement prepared once.
//!
//! Through sqlx every statement is a round trip to its connection's worker thread (and on a
//! cache miss, a prepare: a multi-row statement's text changes with the batch's size). Here a
//! whole batch is one hand-off: the thread takes it, runs one transaction and answers. SQLite
//! runs a prepared one-row insert in a few microseconds, so under load the thread spends its
//! time in SQLite itself.
//!
//! The group-commit task stays between the writes and the thread: while the thread commits
//! one batch, the next gathers behind it. (A thread taking the queued writes itself commits as
//! soon as one arrives, in batches a tenth the size, and was measured 20 % slower.) Reads and the rarer writes stay on sqlx's pool; WAL mode lets them run
//! beside this connection, and `busy_timeout` orders the writes.

use std::path::Path;
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql, TransactionBehavior};

use super::batch::{
    COMPLETE_SESSION, Param, Sorted, Write, case_params, completion_params, enqueue_completed_sql,
    event_params, insert_events_sql, insert_sessions_sql, message_params, open_cases_sql,
    session_params,
};
use tokio::sync::oneshot;

use super::sqlite_pragmas;
use crate::config::SqliteSynchronous;
use crate::store::StoreError;
use crate::store::group_commit::BatchWriter;

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Self::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Self::Null => ToSqlOutput::Owned(Value::Null),
            Self::Int(n) => ToSqlOutput::Owned(Value::Integer(*n)),
            Self::Real(x) => ToSqlOutput::Owned(Value::Real(*x)),
        })
    }
}

/// The statements' text, made once.
struct Statements {
    insert_session: String,
    insert_event: String,
    enqueue_completed: String,
    open_case: String,
}

impl Statements {
    fn new() -> Self {
        Self {
            insert_session: insert_sessions_sql(1),
            insert_event: insert_events_sql(1),
            enqueue_completed: enqueue_completed_sql(1),
            open_case: open_cases_sql(1),
        }
    }
}

struct Job {
    batch: Vec<Write>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue to the writer thread; dropping it ends the thread and closes its connection.
pub(super) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
}

impl SqliteWriter {
    /// Opens the database file (which the migrations have made) and starts the thread.
    pub(super) fn open(path: &Path, synchronous: SqliteSynchronous) -> Result<Self, StoreError> {
        let mut connection = connect(path, synchronous)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kyc-sqlite-writer".into())
            .spawn(move || {
                let statements = Statements::new();
                for job in queue {
                    let result = write(&mut connection, &statements, &job.batch);
                    let _ = job.done.send(result);
                }
            })
            .map_err(|source| StoreError::Database {
                what: "starting SQLite's writer thread",
                source: source.into(),
            })?;
        Ok(Self { jobs })
    }
}

#[async_trait]
impl BatchWriter<Write> for SqliteWriter {
    async fn write_batch(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                batch: batch.to_vec(),
                done,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// A connection to the database file with the pool's settings.
fn connect(path: &Path, synchronous: SqliteSynchronous) -> Result<Connection, StoreError> {
    let what = "opening the writer's connection";
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(what))?;
    connection
        .execute_batch(&sqlite_pragmas(synchronous))
        .map_err(sqlite_error(what))?;
    Ok(connection)
}

/// One batch in one transaction. `IMMEDIATE` takes the write lock at the start, so a
/// transaction never has to upgrade a read lock (which SQLite may refuse at once as a deadlock
/// instead of waiting `busy_timeout`).
fn write(
    connection: &mut Connection,
    statements: &Statements,
    batch: &[Write],
) -> Result<(), StoreError> {
    let sorted = Sorted::new(batch);
    let what = "committing a batch";
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error(what))?;
    {
        let mut insert = tx
            .prepare_cached(&statements.insert_session)
            .map_err(sqlite_error(what))?;
        for session in &sorted.sessions {
            insert
                .execute(session_params(session))
                .map_err(sqlite_error("inserting sessions"))?;
        }
        let mut append = tx
            .prepare_cached(&statements.insert_event)
            .map_err(sqlite_error(what))?;
        for (id, event) in &sorted.events {
            append
                .execute(event_params(*id, event)?)
                .map_err(sqlite_error("appending events"))?;
        }
        let mut complete = tx
            .prepare_cached(COMPLETE_SESSION)
            .map_err(sqlite_error(what))?;
        let mut enqueue = tx
            .prepare_cached(&statements.enqueue_completed)
            .map_err(sqlite_error(what))?;
        for (id, completion, seq) in &sorted.completions {
            let changed = complete
                .execute(completion_params(*id, completion))
                .map_err(sqlite_error("completing a session"))?;
            if changed == 0 {
                return Err(StoreError::NotFound(*id));
            }
            enqueue
                .execute(message_params(*id, *seq, completion.completed_at))
                .map_err(sqlite_error("writing webhook messages"))?;
        }
        let mut open = tx
            .prepare_cached(&statements.open_case)
            .map_err(sqlite_error(what))?;
        for (id, completion, seq) in &sorted.opened {
            open.execute(case_params(*id, completion, *seq))
                .map_err(sqlite_error("opening review cases"))?;
        }
    }
    tx.commit().map_err(sqlite_error(what))
}

/// As `db_error` for sqlx: busy, locked and I/O failures mean the database cannot take the
/// write now; a broken constraint is the write's own fault.
fn sqlite_error(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| match source.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen,
        ) => StoreError::Unavailable {
            what,
            source: source.into(),
        },
        Some(ErrorCode::ConstraintViolation) => StoreError::Constraint {
            what,
            source: source.into(),
        },
        _ => StoreError::Database {
            what,
            source: source.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer binds by position: each statement's parameters must be `$1`, `$2`, ... in
    /// the order they appear, as sqlx numbers them. Prepared against the migrated schema, so a
    /// statement that no longer fits it fails here too.
    #[tokio::test]
    async fn every_statement_numbers_its_parameters_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::store::fixtures::sqlite_in(&dir);
        drop(super::super::SqlStore::connect(&settings).await.unwrap());
        let connection = Connection::open(dir.path().join("kyc.db")).unwrap();
        let statements = Statements::new();
        for (sql, count) in [
            (statements.insert_session.as_str(), 10),
            (statements.insert_event.as_str(), 4),
            (COMPLETE_SESSION, 6),
            (statements.enqueue_completed.as_str(), 4),
            (statements.open_case.as_str(), 4),
        ] {
            let statement = connection.prepare(sql).unwrap();
            assert_eq!(statement.parameter_count(), count, "{sql}");
            for index in 1..=count {
                assert_eq!(
                    statement.parameter_name(index),
                    Some(format!("${index}").as_str()),
                    "{sql}"
                );
            }
        }
    }
}
