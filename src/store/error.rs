//! Why the store could not do what was asked. Each variant names what happened and keeps the
//! underlying error as its `source()`: the message says what failed here, and a log line that
//! walks the chain (`telemetry::ErrorChain`) shows each cause once.
//!
//! Callers branch on one property only, [`StoreError::is_unavailable`]: retry later, readiness
//! 503, HTTP 503. Everything else is a bug, bad data or bad configuration, and retrying it
//! would fail the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::SessionId;

/// The underlying error: sqlx's, rusqlite's (SQLite's writer) or any other.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} is not in the store")]
    NotFound(SessionId),
    #[error("session {0} is already in the store")]
    Duplicate(SessionId),
    /// A new API key whose id or hash another key has (a 1 in 2^95 chance: try again).
    #[error("API key {0} is already in the store")]
    DuplicateKey(crate::domain::KeyId),
    /// An append whose first event's number the session already has.
    #[error("session {0} already has events with these numbers")]
    Conflict(SessionId),
    #[error("unsupported store url `{0}`: use sqlite://PATH, postgres://USER@HOST/DB or memory://")]
    UnsupportedUrl(String),
    /// The first connection at start-up failed; `url` has its password redacted.
    #[error("cannot connect to the session store at {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The directory for a SQLite file could not be created.
    #[error("cannot create the database directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be reached now, or is too busy or shutting down: retry later.
    #[error("the session store is unavailable while {what}")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// A call had no answer within its time limit, as on a connection the network left
    /// half-open. Whether a write landed is unknown.
    #[error("{what} had no answer from the session store within {} ms", .limit.as_millis())]
    TimedOut { what: &'static str, limit: Duration },
    /// The task that commits writes is gone: the runtime is shutting down.
    #[error("the session store's writer has stopped")]
    WriterStopped,
    /// The database refused a write that breaks the schema: a key already taken, a row whose
    /// parent is missing.
    #[error("the session store refused {what}: it breaks a constraint of the schema")]
    Constraint {
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// Any other database failure: a statement the database rejected, a row gone mid-transaction.
    #[error("the database failed while {what}")]
    Database {
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// A stored value we cannot read back: a column of the wrong type, text that is not a
    /// timestamp, an id, JSON of the expected shape or a known status.
    #[error("a stored row is unreadable: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("the schema migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// One failure handed to every write it failed (a batch, or the writes after the store
    /// stopped answering): each waiter gets the same error, which cannot be cloned.
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// Whether the store could not be reached or did not answer, so the same call may succeed
    /// later: the client is told to retry (503), a completion is kept to write again, a batch is
    /// not retried write by write. Connecting and creating the database directory count too:
    /// at start-up they mean the database is not there yet.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Directory { .. }
            | Self::Unavailable { .. }
            | Self::TimedOut { .. }
            | Self::WriterStopped => true,
            Self::Shared(error) => error.is_unavailable(),
            Self::NotFound(_)
            | Self::Duplicate(_)
            | Self::DuplicateKey(_)
            | Self::Conflict(_)
            | Self::UnsupportedUrl(_)
            | Self::Constraint { .. }
            | Self::Database { .. }
            | Self::Corrupt { .. }
            | Self::Migration(_) => false,
        }
    }

    /// A stored value that is not what it should be, with nothing more to say than `what`.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// A stored value that `source` could not read.
    pub(crate) fn corrupt_because(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// Why stored JSON could not be read, without the JSON: serde's messages quote the value they
/// reject, and a stored check or a session's inputs hold names and document numbers.
#[derive(Debug, thiserror::Error)]
#[error("{kind} at line {line} column {column}")]
pub(crate) struct UnreadableJson {
    kind: &'static str,
    line: usize,
    column: usize,
}

impl From<serde_json::Error> for UnreadableJson {
    fn from(error: serde_json::Error) -> Self {
        use serde_json::error::Category;
        Self {
            kind: match error.classify() {
                Category::Io => "cannot read the JSON",
                Category::Syntax => "invalid JSON",
                Category::Data => "JSON of the wrong shape",
                Category::Eof => "truncated JSON",
            },
            line: error.line(),
            column: error.column(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_json_keeps_the_position_and_drops_the_value() {
        let error = serde_json::from_str::<Vec<u32>>("[1, \"Eriksson\"]").unwrap_err();
        assert!(error.to_string().contains("Eriksson"), "{error}");

        let redacted = UnreadableJson::from(error);

        assert_eq!(
            redacted.to_string(),
            "JSON of the wrong shape at line 1 column 14"
        );
    }

    #[test]
    fn a_shared_failure_is_unavailable_when_its_cause_is() {
        let timed_out = StoreError::TimedOut {
            what: "a commit",
            limit: Duration::from_secs(1),
        };
        let shared = StoreError::Shared(Arc::new(timed_out));
        assert!(shared.is_unavailable());
        assert_eq!(
            shared.to_string(),
            "a commit had no answer from the session store within 1000 ms"
        );
        assert!(!StoreError::Shared(Arc::new(StoreError::corrupt("x"))).is_unavailable());
    }
}
