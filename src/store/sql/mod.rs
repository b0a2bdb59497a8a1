//! SQLite and PostgreSQL behind one implementation: sqlx's `Any` driver, one schema
//! (`migrations/`), one set of statements. The statements use only what both databases
//! understand (`$n` parameters, `ON CONFLICT`, `RETURNING`-free updates, text timestamps), so
//! there is no second copy of any query to drift.
//!
//! - Writes on the hot path (new sessions, events, completions) go through group commit: one
//!   transaction per batch, each write acknowledged once its batch has committed. Their
//!   rows' parameters are in [`batch`]; on SQLite a writer thread of its own runs them
//!   ([`sqlite_writer`]), on PostgreSQL a connection of its own binds them as arrays
//!   ([`pg_writer`]).
//! - SQLite runs in WAL mode, so readers never wait for the writer; sqlx runs each SQLite
//!   connection on its own thread, so no query blocks the async runtime. `synchronous = NORMAL`
//!   (the default, `store.sqlite_synchronous`) survives a crash of the process but may lose the
//!   last commits on a power cut; `FULL` survives both at the cost of an fsync per commit.
//! - PostgreSQL commits are durable when acknowledged (its default `synchronous_commit = on`).
//!   Several instances share it: each heartbeats in `instances`, and a session whose instance
//!   went silent is claimed by a compare-and-set on its `instance` column, so exactly one
//!   survivor resumes it.

mod batch;
mod capture;
mod challenges;
mod migrations;
mod pg_writer;
mod reviews;
mod sqlite_writer;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};

use self::batch::{Write, insert_sessions};
use self::migrations::MIGRATOR;
use self::pg_writer::PgWriter;
use self::sqlite_writer::SqliteWriter;
use super::erasure::{scrub_checks, scrub_line};
use super::group_commit::GroupCommit;
use super::{
    Closing, Completion, Erasure, EventRecord, Expiry, IdempotencyKey, Inserted, KeyStore,
    SessionRecord, SessionStatus, SessionStore, StoreError, UnreadableJson, redact_url,
};
use crate::config::StoreSettings;
use crate::domain::{
    Decision, KeyHash, KeyId, KeyRecord, Mode, Owner, Scopes, SessionId, SessionQuery, TenantId,
};

/// A session's columns, with its review case's: select them `FROM` [`SESSIONS`].
const SESSION_COLUMNS: &str = "s.id, s.tenant, s.mode, s.created_by, s.reference, s.status, \
     s.created_at, s.deadline_at, s.completed_at, s.decision, s.reasons, s.checks, \
     s.duration_ms, s.plan_version, s.instance, s.attempts, s.images_erased_at, s.erased_at, \
     s.erased_by, r.status AS review_status, r.opened_at AS review_opened_at, \
     r.resolved_at AS review_resolved_at, r.automated_reasons, r.opened_seq, r.last_seq";

/// Sessions as `s`, each with its review case (if any) as `r`.
const SESSIONS: &str = "sessions s LEFT JOIN reviews r ON r.session_id = s.id";

const KEY_COLUMNS: &str = "id, tenant, mode, scopes, label, hash, created_at, last_used_at, \
     expires_at, revoked_at, replaces";

/// Rows per multi-row statement, for the writes that bypass group commit (PostgreSQL's writer
/// binds arrays instead, `pg_writer`). Each size is a statement text of its own, which sqlx
/// prepares once per connection and keeps in a cache of 100; and a short message never waits on
/// Nagle's algorithm, which sqlx 0.9.0 leaves on (see `pg_writer::STATEMENT_BYTES`).
const ROWS_PER_STATEMENT: usize = 16;

/// A database-backed store.
pub struct SqlStore {
    pool: AnyPool,
    writer: GroupCommit<Write>,
    instance: String,
}

impl SqlStore {
    /// Connects, runs the migrations and registers this instance.
    pub async fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let store = Self::connect(settings).await?;
        // Registered before it runs any session, so nobody takes its sessions for orphans.
        store.heartbeat(Utc::now()).await?;
        tracing::info!(
            url = %redact_url(&settings.url),
            instance = %store.instance,
            "session store open"
        );
        Ok(store)
    }

    /// Connects and runs the migrations, without registering an instance: for the commands
    /// that manage keys.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = if settings.url.starts_with("sqlite:") {
            Some(SqliteFile::of(&settings.url)?)
        } else {
            None
        };
        let url = sqlite
            .as_ref()
            .map_or_else(|| settings.url.clone(), |file| file.url.clone());
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
        if sqlite.is_some() {
            let pragmas = sqlite_pragmas(settings.sqlite_synchronous);
            options = options.after_connect(move |conn, _| {
                let pragmas = AssertSqlSafe(pragmas.clone());
                Box::pin(async move {
                    conn.execute(pragmas).await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(&settings.url),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migration)?;
        let max_batch = settings.max_batch;
        let linger = Duration::from_micros(settings.flush_interval_us);
        let timeout = match settings.write_timeout_ms {
            0 => Duration::MAX,
            ms => Duration::from_millis(ms),
        };
        let writer = if let Some(file) = &sqlite {
            let writer = SqliteWriter::open(&file.path, settings.sqlite_synchronous)?;
            GroupCommit::spawn([writer], max_batch, linger, timeout, max_batch * 8)
        } else {
            let writers = PgWriter::pool(
                &url,
                settings.writer_connections,
                Duration::from_millis(settings.acquire_timeout_ms),
            )?;
            GroupCommit::spawn(writers, max_batch, linger, timeout, max_batch * 8)
        };
        Ok(Self {
            pool,
            writer,
            instance: uuid::Uuid::now_v7().to_string(),
        })
    }

    async fn begin(&self, what: &'static str) -> Result<Transaction<'static, Any>, StoreError> {
        self.pool.begin().await.map_err(db_error(what))
    }
}

/// A `sqlite://PATH` url: for sqlx, with `mode=rwc` (create if missing) added; and its file,
/// whose directory is created.
struct SqliteFile {
    url: String,
    path: std::path::PathBuf,
}

impl SqliteFile {
    fn of(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.starts_with(":memory:") {
            return Err(StoreError::UnsupportedUrl(format!(
                "{url} (an in-memory SQLite database is not shared between connections: use \
                 memory://)"
            )));
        }
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        let url = if rest.contains("mode=") {
            url.to_owned()
        } else if rest.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        Ok(Self { url, path })
    }
}

/// What every SQLite connection runs first: sqlx's pool and the writer's connection.
fn sqlite_pragmas(synchronous: crate::config::SqliteSynchronous) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 10000;",
        synchronous.pragma()
    )
}

/// What a database error means to the caller, with `what` the store was doing: `Unavailable`
/// when the database cannot be reached now, `Constraint` when a write breaks the schema,
/// `Database` otherwise.
fn db_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        let unavailable = match &source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => true,
            // PostgreSQL: connection exceptions, insufficient resources, operator intervention
            // (shutting down). SQLite: busy and locked.
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "5"
                    || code == "6"
            }),
            _ => false,
        };
        let constraint = matches!(&source, sqlx::Error::Database(db) if breaks_constraint(&**db));
        if unavailable {
            StoreError::Unavailable {
                what,
                source: source.into(),
            }
        } else if constraint {
            StoreError::Constraint {
                what,
                source: source.into(),
            }
        } else {
            StoreError::Database {
                what,
                source: source.into(),
            }
        }
    }
}

fn breaks_constraint(db: &dyn DatabaseError) -> bool {
    db.kind() != ErrorKind::Other
        || db.code().is_some_and(|code| {
            (code.len() == 5 && code.starts_with("23"))
                || code.parse::<u32>().is_ok_and(|code| code & 0xff == 19)
        })
}

/// RFC 3339 UTC with microseconds: fixed width, so text order is time order.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| StoreError::corrupt_because(format!("timestamp `{text}`"), e))
}

fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column)
        .map_err(|e| StoreError::corrupt_because(format!("column {column}"), e))
}

fn optional_timestamp(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get::<Option<String>>(row, column)?
        .map(|t| parse_timestamp(&t))
        .transpose()
}

/// The session id in `column`.
fn session_id(row: &AnyRow, column: &str) -> Result<SessionId, StoreError> {
    let id: String = get(row, column)?;
    SessionId::from_str(&id).map_err(|e| StoreError::corrupt_because(format!("{column} `{id}`"), e))
}

/// The JSON in `column`, its value left out of any error.
fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt_because(column, UnreadableJson::from(e)))
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let id = session_id(row, "id")?;
    let status = match get::<String>(row, "status")?.as_str() {
        "running" => SessionStatus::Running,
        "completed" => SessionStatus::Completed,
        other => return Err(StoreError::corrupt(format!("status `{other}`"))),
    };
    let completion = match optional_timestamp(row, "completed_at")? {
        None => None,
        Some(completed_at) => {
            let text = |column: &str| -> Result<String, StoreError> {
                get::<Option<String>>(row, column)?
                    .ok_or_else(|| StoreError::corrupt(format!("{column} is missing")))
            };
            let decision = text("decision")?;
            let decision: Decision = serde_json::from_value(serde_json::Value::String(decision))
                .map_err(|e| StoreError::corrupt_because("decision", UnreadableJson::from(e)))?;
            Some(Completion {
                completed_at,
                decision,
                reasons: json("reasons", &text("reasons")?)?,
                checks: json("checks", &text("checks")?)?,
                duration_ms: get::<Option<f64>>(row, "duration_ms")?.unwrap_or_default(),
            })
        }
    };
    Ok(SessionRecord {
        id,
        owner: owner_from_row(row)?,
        created_by: key_id(row, "created_by")?,
        reference: get(row, "reference")?,
        status,
        created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
        deadline_at: parse_timestamp(&get::<String>(row, "deadline_at")?)?,
        plan_version: get(row, "plan_version")?,
        instance: get(row, "instance")?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
        completion,
        images_erased_at: optional_timestamp(row, "images_erased_at")?,
        erased_at: optional_timestamp(row, "erased_at")?,
        erased_by: key_id(row, "erased_by")?,
        review: reviews::state_from_row(row)?,
    })
}

fn owner_from_row(row: &AnyRow) -> Result<Owner, StoreError> {
    let tenant: String = get(row, "tenant")?;
    let mode: String = get(row, "mode")?;
    Ok(Owner {
        tenant: tenant
            .parse()
            .map_err(|e| StoreError::corrupt_because(format!("tenant `{tenant}`"), e))?,
        mode: mode
            .parse::<Mode>()
            .map_err(|e| StoreError::corrupt(format!("mode: {e}")))?,
    })
}

/// The key id in `column`, if any.
fn key_id(row: &AnyRow, column: &str) -> Result<Option<KeyId>, StoreError> {
    get::<Option<String>>(row, column)?
        .map(|id| {
            id.parse::<KeyId>()
                .map_err(|e| StoreError::corrupt(format!("{column}: {e}")))
        })
        .transpose()
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let hash: String = get(row, "hash")?;
    let scopes: String = get(row, "scopes")?;
    Ok(KeyRecord {
        id: key_id(row, "id")?.ok_or_else(|| StoreError::corrupt("a key without an id"))?,
        owner: owner_from_row(row)?,
        scopes: Scopes::parse(&scopes).map_err(|e| StoreError::corrupt(format!("scopes: {e}")))?,
        label: get(row, "label")?,
        hash: KeyHash::from_hex(&hash).ok_or_else(|| StoreError::corrupt("a key's hash"))?,
        created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
        last_used_at: optional_timestamp(row, "last_used_at")?,
        expires_at: optional_timestamp(row, "expires_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        replaces: key_id(row, "replaces")?,
    })
}

async fn insert_key(
    executor: impl sqlx::Executor<'_, Database = Any>,
    key: &KeyRecord,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES {}",
        placeholders(1, 11)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(key.id.as_str().to_owned())
        .bind(key.owner.tenant.as_str().to_owned())
        .bind(key.owner.mode.as_str())
        .bind(key.scopes.to_text())
        .bind(key.label.clone())
        .bind(key.hash.to_hex())
        .bind(timestamp(key.created_at))
        .bind(key.last_used_at.map(timestamp))
        .bind(key.expires_at.map(timestamp))
        .bind(key.revoked_at.map(timestamp))
        .bind(key.replaces.as_ref().map(|id| id.as_str().to_owned()))
        .execute(executor)
        .await
        .map_err(db_error("creating an API key"))
        .map_err(|error| match error {
            StoreError::Constraint { .. } => StoreError::DuplicateKey(key.id.clone()),
            other => other,
        })?;
    Ok(())
}

/// The WHERE clause and parameters of a session list, after `$1` (tenant) and `$2` (mode).
fn list_filter(query: &SessionQuery) -> (String, Vec<String>) {
    let mut sql = String::from("s.tenant = $1 AND s.mode = $2");
    let mut params = Vec::new();
    let mut add = |condition: &str, values: Vec<String>| {
        let mut condition = condition.to_owned();
        for value in values {
            params.push(value);
            condition = condition.replacen('?', &format!("${}", params.len() + 2), 1);
        }
        sql.push_str(" AND ");
        sql.push_str(&condition);
    };
    if let Some(status) = query.status {
        add("s.status = ?", vec![status.as_str().to_owned()]);
    }
    if let Some(decision) = query.decision {
        add("s.decision = ?", vec![decision.as_str().to_owned()]);
    }
    if let Some(reference) = &query.reference {
        add("s.reference = ?", vec![reference.clone()]);
    }
    if let Some(after) = query.created_after {
        add("s.created_at >= ?", vec![timestamp(after)]);
    }
    if let Some(before) = query.created_before {
        add("s.created_at < ?", vec![timestamp(before)]);
    }
    if let Some(position) = query.after {
        // Row values compare in both databases; text timestamps sort as times.
        add(
            "(s.created_at, s.id) < (?, ?)",
            vec![timestamp(position.created_at), position.id.to_string()],
        );
    }
    (sql, params)
}

fn event_from_row(row: &AnyRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        seq: u64::try_from(get::<i64>(row, "seq")?)
            .map_err(|_| StoreError::corrupt("a negative seq"))?,
        terminal: get::<i64>(row, "terminal")? != 0,
        line: get::<String>(row, "line")?.into(),
    })
}

fn line_text(event: &EventRecord) -> Result<String, StoreError> {
    String::from_utf8(event.line.to_vec())
        .map_err(|e| StoreError::corrupt_because("an event line", e))
}

/// `($1, $2, $3), ($4, $5, $6), ...`: `rows` tuples of `columns` parameters.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * columns + column + 1));
        }
        sql.push(')');
    }
    sql
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for SqlStore {
    fn instance(&self) -> &str {
        &self.instance
    }

    async fn insert(
        &self,
        session: &SessionRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError> {
        let Some(key) = key else {
            self.writer
                .submit(Write::Insert(Arc::new(session.clone())))
                .await?;
            return Ok(Inserted::New);
        };
        let now = Utc::now();
        let mut tx = self.begin("inserting a session").await?;
        // Takes the key if it is new or expired; a live key is left alone.
        let owner = &session.owner;
        let taken = sqlx::query(
            "INSERT INTO scoped_idempotency_keys \
             (key, fingerprint, session_id, created_at, expires_at, tenant, mode) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, mode, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             session_id = excluded.session_id, created_at = excluded.created_at, \
             expires_at = excluded.expires_at \
             WHERE scoped_idempotency_keys.expires_at < excluded.created_at",
        )
        .bind(key.key.clone())
        .bind(key.fingerprint.clone())
        .bind(session.id.to_string())
        .bind(timestamp(now))
        .bind(timestamp(key.expires_at))
        .bind(owner.tenant.as_str().to_owned())
        .bind(owner.mode.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error("claiming an idempotency key"))?;
        if taken.rows_affected() == 0 {
            let row = sqlx::query(
                "SELECT session_id, fingerprint FROM scoped_idempotency_keys \
                 WHERE tenant = $1 AND mode = $2 AND key = $3",
            )
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .bind(key.key.clone())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error("reading an idempotency key"))?;
            let id = session_id(&row, "session_id")?;
            let fingerprint: String = get(&row, "fingerprint")?;
            return Ok(Inserted::Existing {
                id,
                same_request: fingerprint == key.fingerprint,
            });
        }
        insert_sessions(&mut tx, &[session]).await?;
        tx.commit().await.map_err(db_error("inserting a session"))?;
        Ok(Inserted::New)
    }

    async fn find_key(
        &self,
        owner: &Owner,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionId, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT session_id, fingerprint FROM scoped_idempotency_keys \
             WHERE tenant = $3 AND mode = $4 AND key = $1 AND expires_at >= $2",
        )
        .bind(key.to_owned())
        .bind(timestamp(now))
        .bind(owner.tenant.as_str().to_owned())
        .bind(owner.mode.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("reading an idempotency key"))?;
        row.map(|row| Ok((session_id(&row, "session_id")?, get(&row, "fingerprint")?)))
            .transpose()
    }

    async fn append_events(&self, id: SessionId, events: &[EventRecord]) -> Result<(), StoreError> {
        self.writer.submit(Write::Events(id, events.into())).await
    }

    async fn complete(
        &self,
        id: SessionId,
        completion: &Completion,
        closing: &Closing,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(Write::Complete(
                id,
                Arc::new(completion.clone()),
                Arc::new(closing.clone()),
            ))
            .await
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM {SESSIONS} WHERE s.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading a session"))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn find(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM {SESSIONS} \
             WHERE s.id = $1 AND s.tenant = $2 AND s.mode = $3"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading a session"))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list(
        &self,
        owner: &Owner,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let (filter, params) = list_filter(query);
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM {SESSIONS} WHERE {filter} \
             ORDER BY s.created_at DESC, s.id DESC LIMIT {}",
            query.limit
        );
        let mut statement = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str());
        for param in params {
            statement = statement.bind(param);
        }
        let rows = statement
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("listing sessions"))?;
        rows.iter().map(session_from_row).collect()
    }

    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
    ) -> Result<Option<Vec<EventRecord>>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, terminal, line FROM events WHERE session_id = $1 AND seq > $2 \
             ORDER BY seq",
        )
        .bind(id.to_string())
        .bind(seq_param(after))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("reading events"))?;
        if rows.is_empty() {
            let known = sqlx::query("SELECT 1 FROM sessions WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("reading events"))?;
            if known.is_none() {
                return Ok(None);
            }
        }
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn forget_instances(&self, silent_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let forgotten = sqlx::query(
            "DELETE FROM instances WHERE heartbeat_at < $1 AND id <> $2 AND NOT EXISTS ( \
                 SELECT 1 FROM sessions s WHERE s.status = 'running' AND s.instance = instances.id)",
        )
        .bind(timestamp(silent_before))
        .bind(self.instance.clone())
        .execute(&self.pool)
        .await
        .map_err(db_error("forgetting silent instances"))?;
        Ok(forgotten.rows_affected())
    }

    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(self.instance.clone())
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("sending the heartbeat"))?;
        Ok(())
    }

    async fn orphans(
        &self,
        silent_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM {SESSIONS} \
             WHERE s.status = 'running' AND s.instance <> $1 AND NOT EXISTS ( \
                 SELECT 1 FROM instances i WHERE i.id = s.instance AND i.heartbeat_at >= $2) \
             ORDER BY s.created_at LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(self.instance.clone())
            .bind(timestamp(silent_since))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("looking for orphaned sessions"))?;
        rows.iter().map(session_from_row).collect()
    }

    async fn claim(
        &self,
        id: SessionId,
        from: &str,
        deadline_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE sessions SET instance = $3, attempts = attempts + 1, deadline_at = $4 \
             WHERE id = $1 AND status = 'running' AND instance = $2",
        )
        .bind(id.to_string())
        .bind(from.to_owned())
        .bind(self.instance.clone())
        .bind(timestamp(deadline_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("claiming a session"))?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn erase(
        &self,
        id: SessionId,
        owner: Option<&Owner>,
        by: Option<&KeyId>,
        now: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        // Without an owner (retention) `$3 IS NULL` lets any session through.
        let tenant = owner.map(|o| o.tenant.as_str().to_owned());
        let mode = owner.map(|o| o.mode.as_str());
        let mut tx = self.begin("erasing a session").await?;
        // Writes first, so a SQLite transaction holds the write lock from its first statement.
        let stamped = sqlx::query(
            "UPDATE sessions SET erased_by = CASE WHEN erased_at IS NULL THEN $5 ELSE erased_by END, \
             erased_at = COALESCE(erased_at, $2), \
             images_erased_at = COALESCE(images_erased_at, $2) \
             WHERE id = $1 AND status = 'completed' \
             AND ($3 IS NULL OR (tenant = $3 AND mode = $4))",
        )
        .bind(id.to_string())
        .bind(timestamp(now))
        .bind(tenant.clone())
        .bind(mode)
        .bind(by.map(|id| id.as_str().to_owned()))
        .execute(&mut *tx)
        .await
        .map_err(db_error("erasing a session"))?;
        if stamped.rows_affected() == 0 {
            let running = sqlx::query(
                "SELECT status FROM sessions WHERE id = $1 \
                 AND ($2 IS NULL OR (tenant = $2 AND mode = $3))",
            )
            .bind(id.to_string())
            .bind(tenant)
            .bind(mode)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error("erasing a session"))?;
            return Ok(if running.is_some() {
                Erasure::Running
            } else {
                Erasure::NotFound
            });
        }
        let row = sqlx::query("SELECT checks FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error("erasing a session"))?;
        if let Some(checks) = get::<Option<String>>(&row, "checks")? {
            let mut checks: std::collections::BTreeMap<String, crate::domain::CheckResult> =
                json("checks", &checks)?;
            scrub_checks(&mut checks);
            sqlx::query("UPDATE sessions SET checks = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(serde_json::to_string(&checks).expect("checks serialise"))
                .execute(&mut *tx)
                .await
                .map_err(db_error("erasing a session"))?;
        }
        // The lines that may hold personal data: `session.completed` (checks) and a review's
        // events (notes), which all come after its `review.opened`.
        let personal = sqlx::query(
            "SELECT seq, terminal, line FROM events WHERE session_id = $1 AND (terminal = 1 \
             OR seq > (SELECT opened_seq FROM reviews WHERE session_id = $1))",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error("erasing a session"))?;
        reviews::clear_notes(&mut tx, id).await?;
        for row in &personal {
            let event = event_from_row(row)?;
            let scrubbed = scrub_line(&event.line);
            if scrubbed != event.line {
                sqlx::query("UPDATE events SET line = $3 WHERE session_id = $1 AND seq = $2")
                    .bind(id.to_string())
                    .bind(seq_param(event.seq))
                    .bind(String::from_utf8_lossy(&scrubbed).into_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("erasing a session"))?;
            }
        }
        tx.commit().await.map_err(db_error("erasing a session"))?;
        Ok(Erasure::Erased)
    }

    async fn expired(
        &self,
        what: Expiry,
        created_before: DateTime<Utc>,
        held_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let column = match what {
            Expiry::Images => "images_erased_at",
            Expiry::PersonalData => "erased_at",
        };
        let sql = format!(
            "SELECT s.id FROM sessions s WHERE s.status = 'completed' AND s.{column} IS NULL \
             AND s.created_at < $1 AND NOT EXISTS (SELECT 1 FROM reviews r \
                 WHERE r.session_id = s.id AND r.status <> 'resolved' AND r.opened_at >= $3) \
             ORDER BY s.created_at LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(timestamp(created_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(timestamp(held_since))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("looking for expired sessions"))?;
        rows.iter().map(|row| session_id(row, "id")).collect()
    }

    async fn images_erased(&self, ids: &[SessionId], now: DateTime<Utc>) -> Result<(), StoreError> {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE sessions SET images_erased_at = COALESCE(images_erased_at, $1) \
                 WHERE id IN ({})",
                list.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(timestamp(now));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            query
                .execute(&self.pool)
                .await
                .map_err(db_error("stamping erased images"))?;
        }
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM scoped_idempotency_keys WHERE expires_at < $1")
            .bind(timestamp(now))
            .execute(&self.pool)
            .await
            .map_err(db_error("purging idempotency keys"))?;
        // Keys instances of the previous version take (migration 0002) expire here too.
        let unscoped = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
            .bind(timestamp(now))
            .execute(&self.pool)
            .await
            .map_err(db_error("purging idempotency keys"))?;
        Ok(purged.rows_affected() + unscoped.rows_affected())
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        insert_key(&self.pool, key).await
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading an API key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading an API key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1 IS NULL OR tenant = $1) \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.map(|t| t.as_str().to_owned()))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("listing API keys"))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id.as_str().to_owned())
                .bind(timestamp(now))
                .execute(&self.pool)
                .await
                .map_err(db_error("revoking an API key"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        old_expires_at: DateTime<Utc>,
        new: &KeyRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin("rotating an API key").await?;
        let expired = sqlx::query(
            "UPDATE api_keys SET expires_at = CASE \
             WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(old.as_str().to_owned())
        .bind(timestamp(old_expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error("rotating an API key"))?;
        if expired.rows_affected() == 0 {
            return Ok(false);
        }
        insert_key(&mut *tx, new).await?;
        tx.commit().await.map_err(db_error("rotating an API key"))?;
        Ok(true)
    }

    async fn key_used(&self, id: &KeyId, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id.as_str().to_owned())
            .bind(timestamp(at))
            .execute(&self.pool)
            .await
            .map_err(db_error("recording an API key's use"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures;

    #[test]
    fn placeholders_number_every_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn timestamps_have_one_width_so_text_order_is_time_order() {
        let early = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let late = early + chrono::Duration::microseconds(1_500_001);
        assert_eq!(timestamp(early), "2026-01-02T03:04:05.000000Z");
        assert_eq!(timestamp(late), "2026-01-02T03:04:06.500001Z");
        assert_eq!(parse_timestamp(&timestamp(late)).unwrap(), late);
    }

    #[test]
    fn only_errors_of_reaching_the_database_count_as_unavailable() {
        let unavailable = db_error("reading a session")(sqlx::Error::PoolTimedOut);
        assert!(
            matches!(unavailable, StoreError::Unavailable { .. }),
            "{unavailable:?}"
        );
        assert!(unavailable.is_unavailable());

        let other = db_error("reading a session")(sqlx::Error::RowNotFound);
        assert!(matches!(other, StoreError::Database { .. }), "{other:?}");
        assert!(!other.is_unavailable());
    }

    /// A completion stores the events before it in its own write, all or nothing, on both
    /// stores.
    #[tokio::test]
    async fn a_completion_stores_the_events_before_it_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sql = SqlStore::open(&fixtures::sqlite_in(&dir)).await.unwrap();
        let memory = crate::store::MemoryStore::new(10);
        for store in [&sql as &dyn SessionStore, &memory] {
            let id = SessionId::new();
            store.insert(&fixtures::running(id), None).await.unwrap();
            store
                .append_events(id, &[fixtures::event(1, false)])
                .await
                .unwrap();
            let again = Closing {
                before: vec![fixtures::event(1, false), fixtures::event(2, false)],
                ..fixtures::closing(3)
            };
            let closing = Closing {
                before: vec![fixtures::event(2, false), fixtures::event(3, false)],
                ..fixtures::closing(4)
            };

            let refused = store.complete(id, &fixtures::approved(), &again).await;
            let seqs = |events: Option<Vec<EventRecord>>| -> Vec<u64> {
                events.unwrap().iter().map(|event| event.seq).collect()
            };
            let after_refusal = seqs(store.events_after(id, 0).await.unwrap());
            store
                .complete(id, &fixtures::approved(), &closing)
                .await
                .unwrap();

            assert!(refused.is_err(), "event 1 is stored already");
            assert_eq!(after_refusal, [1], "nothing of a refused completion");
            assert_eq!(seqs(store.events_after(id, 0).await.unwrap()), [1, 2, 3, 4]);
            let record = store.get(id).await.unwrap().unwrap();
            assert_eq!(record.status, SessionStatus::Completed);
        }
    }

    #[tokio::test]
    async fn a_write_that_breaks_a_key_is_refused_and_a_row_out_of_shape_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&fixtures::sqlite_in(&dir)).await.unwrap();
        let id = SessionId::new();
        store.insert(&fixtures::running(id), None).await.unwrap();

        let again = store.insert(&fixtures::running(id), None).await;
        sqlx::query("UPDATE sessions SET status = 'paused' WHERE id = $1")
            .bind(id.to_string())
            .execute(&store.pool)
            .await
            .unwrap();
        let read = store.get(id).await;

        assert!(
            matches!(&again, Err(error @ StoreError::Constraint { .. }) if !error.is_unavailable()),
            "{again:?}"
        );
        assert!(
            matches!(&read, Err(error @ StoreError::Corrupt { .. }) if !error.is_unavailable()),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn instances_gone_for_long_are_forgotten_once_no_session_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&fixtures::sqlite_in(&dir)).await.unwrap();
        let now = Utc::now();
        let long_ago = timestamp(now - chrono::Duration::days(2));
        for (id, heartbeat) in [
            ("gone-idle", long_ago.clone()),
            ("gone-busy", long_ago.clone()),
            ("alive", timestamp(now)),
        ] {
            sqlx::query("INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)")
                .bind(id)
                .bind(heartbeat)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let mut busy = fixtures::running(SessionId::new());
        busy.instance = "gone-busy".into();
        store.insert(&busy, None).await.unwrap();
        // This instance too, as if it had been silent: it is never forgotten by itself.
        let cutoff = now - chrono::Duration::days(1);
        store
            .heartbeat(cutoff - chrono::Duration::days(1))
            .await
            .unwrap();

        assert_eq!(store.forget_instances(cutoff).await.unwrap(), 1);

        let left: Vec<String> = sqlx::query("SELECT id FROM instances ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| get::<String>(row, "id").unwrap())
            .collect();
        let mut expected = vec![
            "alive".to_owned(),
            "gone-busy".to_owned(),
            store.instance.clone(),
        ];
        expected.sort();
        assert_eq!(left, expected, "the busy one waits for recovery");
    }

    /// A SQLite database in `dir` with the migrations before `version` alone, as a previous
    /// version left it: its settings, and a pool on it to put rows in.
    async fn database_before(
        dir: &tempfile::TempDir,
        version: i64,
    ) -> (crate::config::StoreSettings, AnyPool) {
        let settings = crate::store::fixtures::sqlite_in(dir);
        let earlier = sqlx::migrate::Migrator::with_migrations(
            MIGRATOR
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        );
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .connect(&SqliteFile::of(&settings.url).unwrap().url)
            .await
            .unwrap();
        earlier.run(&pool).await.unwrap();
        (settings, pool)
    }

    /// A database of the version before tenants, with a session and an idempotency key in it:
    /// the migration keeps both, in tenant `default`, mode `live`, and leaves the old columns
    /// and table that instances of that version still use.
    #[tokio::test]
    async fn a_database_from_before_tenants_migrates_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, pool) = database_before(&dir, 2).await;
        let id = SessionId::new();
        let now = timestamp(Utc::now());
        sqlx::query(
            "INSERT INTO sessions (id, owner, status, created_at, deadline_at, plan_version, \
             instance) VALUES ($1, NULL, 'running', $2, $2, 'v1', 'gone')",
        )
        .bind(id.to_string())
        .bind(now.clone())
        .execute(&pool)
        .await
        .unwrap();
        let expires = timestamp(Utc::now() + chrono::Duration::hours(1));
        sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, session_id, created_at, expires_at) \
             VALUES ('order-1', 'abc', $1, $2, $3)",
        )
        .bind(id.to_string())
        .bind(now)
        .bind(expires)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = SqlStore::open(&settings).await.unwrap();

        let owner = Owner {
            tenant: "default".parse().unwrap(),
            mode: Mode::Live,
        };
        let session = store.find(&owner, id).await.unwrap().expect("kept");
        assert_eq!(session.created_by, None);
        assert_eq!(
            store.find_key(&owner, "order-1", Utc::now()).await.unwrap(),
            Some((id, "abc".to_owned()))
        );
        let old_columns = sqlx::query("SELECT owner FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&store.pool)
            .await;
        assert!(old_columns.is_ok(), "the previous version's columns stay");
    }

    #[tokio::test]
    async fn sessions_decided_review_before_reviews_existed_get_an_open_case() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, pool) = database_before(&dir, 4).await;
        let (review, approved) = (SessionId::new(), SessionId::new());
        let now = timestamp(Utc::now());
        for (id, decision) in [(review, "review"), (approved, "approved")] {
            sqlx::query(
                "INSERT INTO sessions (id, status, created_at, deadline_at, completed_at, \
                 decision, reasons, checks, plan_version, instance, tenant, mode) \
                 VALUES ($1, 'completed', $2, $2, $2, $3, '[\"too_blurry\"]', '{}', 'v1', 'gone', \
                 'acme', 'test')",
            )
            .bind(id.to_string())
            .bind(now.clone())
            .bind(decision)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO events (session_id, seq, terminal, line) VALUES ($1, 7, 1, '{}')",
            )
            .bind(id.to_string())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = SqlStore::open(&settings).await.unwrap();

        let owner = Owner {
            tenant: "acme".parse().unwrap(),
            mode: Mode::Test,
        };
        let state = store
            .find(&owner, review)
            .await
            .unwrap()
            .unwrap()
            .review
            .expect("an open case");
        assert_eq!(state.status, crate::domain::ReviewStatus::Open);
        assert_eq!(state.automated_reasons, ["too_blurry"]);
        assert_eq!(
            (state.opened_seq, state.last_seq),
            (0, 7),
            "decisions follow event 7"
        );
        let plain = store.find(&owner, approved).await.unwrap().unwrap();
        assert_eq!(plain.review, None);
    }

    #[test]
    fn sqlite_urls_create_their_file_and_refuse_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/kyc.db");
        let url = format!("sqlite://{}", path.display());
        let file = SqliteFile::of(&url).unwrap();
        assert_eq!(file.url, format!("{url}?mode=rwc"));
        assert_eq!(file.path, path);
        assert!(path.parent().unwrap().is_dir());
        assert!(SqliteFile::of("sqlite://:memory:").is_err());
    }
}
