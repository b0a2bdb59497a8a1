//! The group-commit writer on PostgreSQL: a whole batch in one transaction, each kind of write
//! one statement per [`STATEMENT_BYTES`] of values.
//!
//! A statement takes its rows as one array per column (`UNNEST($1::text[], ...)`), so its text
//! never changes with the number of rows and is prepared once per connection, and a round trip
//! carries as many rows as fit. Multi-row `VALUES` lists, the alternative, need a text of their
//! own per row count: at 16 rows a statement, a batch at 400 clients took about 75 round trips.
//!
//! The writer has a connection of its own, on sqlx's PostgreSQL driver rather than the `Any`
//! driver the reads use, because arrays are not among the types `Any` can bind. The rows come
//! from the same `*_params` functions as SQLite's writer takes them from ([`super::batch`]).

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use super::batch::{
    HAS_ENDPOINT, Param, Sorted, Write, case_params, completion_params, event_params,
    message_params, session_params,
};
use super::db_error;
use crate::store::group_commit::BatchWriter;
use crate::store::{StoreError, redact_url};

/// A column's PostgreSQL type, as its array parameter is cast.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    Text,
    BigInt,
    Double,
}

impl Type {
    fn array(self) -> &'static str {
        match self {
            Type::Text => "text[]",
            Type::BigInt => "bigint[]",
            Type::Double => "float8[]",
        }
    }
}

use Type::{BigInt, Double, Text};

/// The columns of `session_params`.
const SESSION: [Type; 10] = [Text; 10];
/// The columns of `event_params`.
const EVENT: [Type; 4] = [Text, BigInt, BigInt, Text];
/// The columns of `completion_params`.
const COMPLETION: [Type; 6] = [Text, Text, Text, Text, Double, Text];
/// The columns of `message_params`.
const MESSAGE: [Type; 4] = [Text, Text, BigInt, Text];
/// The columns of `case_params`.
const CASE: [Type; 4] = [Text, Text, Text, BigInt];

/// `UNNEST($1::text[], $2::bigint[], ...)` for `columns`.
fn unnest(columns: &[Type]) -> String {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("${}::{}", i + 1, column.array()))
        .collect();
    format!("UNNEST({})", arrays.join(", "))
}

/// The most bytes of values one statement carries. sqlx 0.9.0 leaves Nagle's algorithm on for
/// its TCP connections (upstream has the fix, not yet released), so a message the kernel takes
/// in more than one write waits for the server's delayed acknowledgement, 40 ms on Linux,
/// before its last part goes out. Measured on a local server: 48 KiB statements waited 40 ms
/// each (270 sessions/s at 400 clients), 12 KiB never did (1,320-1,370/s). Across a network,
/// with segments of about 1,460 bytes, a longer message can still wait (README, "Stores under
/// load").
const STATEMENT_BYTES: usize = 12 * 1024;

/// About what `param` adds to the message that binds it.
fn wire_bytes(param: &Param) -> usize {
    4 + match param {
        Param::Text(text) => text.len(),
        Param::Null => 0,
        Param::Int(_) | Param::Real(_) => 8,
    }
}

/// Runs `sql` once for each chunk; the rows they changed, together.
async fn execute(
    tx: &mut Transaction<'static, Postgres>,
    sql: &'static str,
    chunks: Vec<Columns>,
    what: &'static str,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for columns in chunks {
        let done = columns
            .bind(sqlx::query(sql))
            .execute(&mut **tx)
            .await
            .map_err(db_error(what))?;
        changed += done.rows_affected();
    }
    Ok(changed)
}

static INSERT_SESSIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO sessions (id, tenant, mode, created_by, reference, status, created_at, \
         deadline_at, plan_version, instance) SELECT * FROM {}",
        unnest(&SESSION)
    )
});

static INSERT_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events (session_id, seq, terminal, line) SELECT * FROM {}",
        unnest(&EVENT)
    )
});

/// Marks running sessions completed; fewer rows changed than given means one of them is
/// unknown or already completed.
static COMPLETE_SESSIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sessions AS s SET status = 'completed', completed_at = v.completed_at, \
         decision = v.decision, reasons = v.reasons, checks = v.checks, \
         duration_ms = v.duration_ms \
         FROM {} AS v (completed_at, decision, reasons, checks, duration_ms, id) \
         WHERE s.id = v.id AND s.status = 'running'",
        unnest(&COMPLETION)
    )
});

/// As [`super::batch::enqueue_completed_sql`]: a message for each completion whose owner has a
/// webhook endpoint.
static ENQUEUE_COMPLETED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO webhook_messages (id, tenant, mode, type, session_id, seq, created_at) \
         SELECT v.id, s.tenant, s.mode, 'session.completed', s.id, v.seq, v.created_at \
         FROM {} AS v (id, session_id, seq, created_at) JOIN sessions s ON s.id = v.session_id \
         {HAS_ENDPOINT}",
        unnest(&MESSAGE)
    )
});

/// As [`super::batch::open_cases_sql`].
static OPEN_CASES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO reviews (session_id, tenant, mode, status, opened_at, \
         automated_reasons, opened_seq, last_seq) \
         SELECT s.id, s.tenant, s.mode, 'open', v.opened_at, v.reasons, v.seq, v.seq \
         FROM {} AS v (session_id, opened_at, reasons, seq) JOIN sessions s ON s.id = v.session_id",
        unnest(&CASE)
    )
});

/// One array per column. No `Debug`: the values may be personal data.
enum Column {
    Text(Vec<Option<String>>),
    BigInt(Vec<i64>),
    Double(Vec<f64>),
}

/// Rows turned into columns, to bind as arrays.
struct Columns(Vec<Column>);

impl Columns {
    fn new(types: &[Type]) -> Self {
        Self(
            types
                .iter()
                .map(|column| match column {
                    Type::Text => Column::Text(Vec::new()),
                    Type::BigInt => Column::BigInt(Vec::new()),
                    Type::Double => Column::Double(Vec::new()),
                })
                .collect(),
        )
    }

    fn rows(&self) -> usize {
        match self.0.first() {
            Some(Column::Text(values)) => values.len(),
            Some(Column::BigInt(values)) => values.len(),
            Some(Column::Double(values)) => values.len(),
            None => 0,
        }
    }

    /// `types`' columns of every row in `rows`, in statements of at most [`STATEMENT_BYTES`]
    /// of values each (a row larger than that alone). A parameter of another type than its
    /// column's is an error: the unit test below holds every `*_params` to its column list.
    fn chunks<T, P: IntoIterator<Item = Param>>(
        types: &[Type],
        rows: &[T],
        mut params: impl FnMut(&T) -> Result<P, StoreError>,
    ) -> Result<Vec<Self>, StoreError> {
        let mut chunks = Vec::new();
        let mut current = Self::new(types);
        let mut bytes = 0;
        for row in rows {
            let row: Vec<Param> = params(row)?.into_iter().collect();
            let size: usize = row.iter().map(wire_bytes).sum();
            if bytes + size > STATEMENT_BYTES && current.rows() > 0 {
                chunks.push(std::mem::replace(&mut current, Self::new(types)));
                bytes = 0;
            }
            current.push(row)?;
            bytes += size;
        }
        if current.rows() > 0 {
            chunks.push(current);
        }
        Ok(chunks)
    }

    fn push(&mut self, row: impl IntoIterator<Item = Param>) -> Result<(), StoreError> {
        let mut row = row.into_iter();
        for column in &mut self.0 {
            match (column, row.next()) {
                (Column::Text(values), Some(Param::Text(text))) => values.push(Some(text)),
                (Column::Text(values), Some(Param::Null)) => values.push(None),
                (Column::BigInt(values), Some(Param::Int(n))) => values.push(n),
                (Column::Double(values), Some(Param::Real(x))) => values.push(x),
                // Only the kinds: a parameter's value may be personal data.
                (column, param) => {
                    return Err(StoreError::corrupt(format!(
                        "a batch parameter ({}) does not fit a {:?} column",
                        param.as_ref().map_or("missing", kind),
                        column.kind()
                    )));
                }
            }
        }
        match row.next() {
            None => Ok(()),
            Some(_) => Err(StoreError::corrupt(
                "a batch row has more parameters than columns",
            )),
        }
    }

    fn bind(self, mut query: Query<'_, Postgres, PgArguments>) -> Query<'_, Postgres, PgArguments> {
        for column in self.0 {
            query = match column {
                Column::Text(values) => query.bind(values),
                Column::BigInt(values) => query.bind(values),
                Column::Double(values) => query.bind(values),
            };
        }
        query
    }
}

/// A writer: one of group commit's tasks, on a pool of the writers' own connections (one each).
#[derive(Clone)]
pub(super) struct PgWriter {
    pool: PgPool,
}

impl PgWriter {
    /// `connections` writers on a pool of as many connections. Parses `url` now; connects at
    /// the first batch, and again after a lost connection.
    pub(super) fn pool(
        url: &str,
        connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Vec<Self>, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            url: redact_url(url),
            source,
        })?;
        let connections = connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Ok(vec![Self { pool }; connections as usize])
    }
}

#[async_trait]
impl BatchWriter<Write> for PgWriter {
    async fn write_batch(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let sorted = Sorted::new(batch);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("committing a batch"))?;
        let sessions = Columns::chunks(&SESSION, &sorted.sessions, |s| Ok(session_params(s)))?;
        execute(
            &mut tx,
            &INSERT_SESSIONS_SQL,
            sessions,
            "inserting sessions",
        )
        .await?;
        let events = Columns::chunks(&EVENT, &sorted.events, |(id, event)| {
            event_params(*id, event)
        })?;
        execute(&mut tx, &INSERT_EVENTS_SQL, events, "appending events").await?;
        if let Some((first, _, _)) = sorted.completions.first() {
            let completions = Columns::chunks(&COMPLETION, &sorted.completions, |(id, c, _)| {
                Ok(completion_params(*id, c))
            })?;
            let completed = execute(
                &mut tx,
                &COMPLETE_SESSIONS_SQL,
                completions,
                "completing sessions",
            )
            .await?;
            if completed < sorted.completions.len() as u64 {
                // Group commit writes the batch again one write at a time, and so finds which.
                return Err(StoreError::NotFound(*first));
            }
            let messages = Columns::chunks(&MESSAGE, &sorted.completions, |(id, c, seq)| {
                Ok(message_params(*id, *seq, c.completed_at))
            })?;
            execute(
                &mut tx,
                &ENQUEUE_COMPLETED_SQL,
                messages,
                "writing webhook messages",
            )
            .await?;
        }
        let cases = Columns::chunks(&CASE, &sorted.opened, |(id, c, seq)| {
            Ok(case_params(*id, c, *seq))
        })?;
        execute(&mut tx, &OPEN_CASES_SQL, cases, "opening review cases").await?;
        tx.commit().await.map_err(db_error("committing a batch"))
    }
}

/// What kind of value `param` is, never the value.
fn kind(param: &Param) -> &'static str {
    match param {
        Param::Text(_) => "text",
        Param::Null => "null",
        Param::Int(_) => "integer",
        Param::Real(_) => "real",
    }
}

impl Column {
    fn kind(&self) -> Type {
        match self {
            Column::Text(_) => Type::Text,
            Column::BigInt(_) => Type::BigInt,
            Column::Double(_) => Type::Double,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::SessionId;
    use crate::store::fixtures;

    /// Every `*_params` row fits its column list, so no batch is refused for a type.
    #[test]
    fn every_row_fits_its_columns() {
        let id = SessionId::new();
        let completion = fixtures::approved();
        let rows: [(&[Type], Vec<Param>); 5] = [
            (&SESSION, session_params(&fixtures::running(id)).into()),
            (
                &EVENT,
                event_params(id, &fixtures::event(1, false)).unwrap().into(),
            ),
            (&COMPLETION, completion_params(id, &completion).into()),
            (&MESSAGE, message_params(id, 3, Utc::now()).into()),
            (&CASE, case_params(id, &completion, 4).into()),
        ];
        for (types, row) in rows {
            let mut columns = Columns::new(types);
            columns.push(row).unwrap();
            assert_eq!(columns.rows(), 1);
        }
    }

    #[test]
    fn a_parameter_of_another_type_is_refused_not_bound() {
        let mut columns = Columns::new(&EVENT);
        let wrong = [Param::Int(1), Param::Int(1), Param::Int(0), Param::Null];
        assert!(matches!(
            columns.push(wrong),
            Err(StoreError::Corrupt { .. })
        ));
        let short = [Param::Text("a".into())];
        assert!(columns.push(short).is_err());
    }

    #[test]
    fn rows_are_split_into_statements_of_bounded_size_and_none_is_lost() {
        let line = "x".repeat(1000);
        let rows: Vec<u64> = (0..40).collect();
        let chunks = Columns::chunks(&EVENT, &rows, |&seq| {
            Ok([
                Param::Text("s".into()),
                Param::Int(seq as i64),
                Param::Int(0),
                Param::Text(line.clone()),
            ])
        })
        .unwrap();
        let sizes: Vec<usize> = chunks.iter().map(Columns::rows).collect();
        // 1,025 bytes of text and 24 of framing a row: 11 rows fit in 12 KiB.
        assert_eq!(sizes, [11, 11, 11, 7]);
        // A row larger than the bound goes alone.
        let huge = "x".repeat(STATEMENT_BYTES * 2);
        let chunks =
            Columns::chunks(&SESSION[..1], &[0, 1], |_| Ok([Param::Text(huge.clone())])).unwrap();
        assert_eq!(chunks.iter().map(Columns::rows).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn each_statement_numbers_its_arrays_in_column_order() {
        assert_eq!(
            unnest(&EVENT),
            "UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[])"
        );
    }
}
