//! Review cases and decisions on SQLite and PostgreSQL, with the same statements for both.
//!
//! A decision's transaction first locks its session's row (an UPDATE that changes nothing, on
//! PostgreSQL; on SQLite the database's write lock), the row an erasure locks first too: so an
//! erasure either comes after the decision and clears its note, or comes first and the decision
//! sees `erased_at` (PostgreSQL re-checks a waiting UPDATE's condition against the committed
//! row) and keeps no note. Every writer of a case takes the session's row before the case's,
//! so two never wait on each other in opposite orders. Then the decision is a compare-and-set
//! on the case's `last_seq`: a second decider's UPDATE waits for the first and finds `last_seq`
//! moved on. Exactly one of two decisions made at once is stored.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Transaction};

use super::batch::insert_events;
use super::{
    ROWS_PER_STATEMENT, SqlStore, db_error, get, json, optional_timestamp, parse_timestamp,
    seq_param, session_id, timestamp,
};
use crate::domain::{
    KeyId, MessageId, Owner, ReviewCase, ReviewDecision, ReviewQuery, ReviewState, ReviewStatus,
    Reviewer, SessionId,
};
use crate::store::{Decided, ReviewBacklog, ReviewStore, ReviewWrite, StoreError};

const DECISION_COLUMNS: &str =
    "session_id, seq, reviewer, reviewer_label, decided_at, decision, reasons, note";

fn seq(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, column)?)
        .map_err(|_| StoreError::corrupt(format!("{column} is negative")))
}

/// The review case among a session's columns (`review_status` and the rest, from a LEFT JOIN):
/// `None` when the session has none.
pub(super) fn state_from_row(row: &AnyRow) -> Result<Option<ReviewState>, StoreError> {
    let Some(status) = get::<Option<String>>(row, "review_status")? else {
        return Ok(None);
    };
    Ok(Some(ReviewState {
        status: status.parse().map_err(StoreError::corrupt)?,
        opened_at: parse_timestamp(&get::<String>(row, "review_opened_at")?)?,
        resolved_at: optional_timestamp(row, "review_resolved_at")?,
        automated_reasons: json(
            "automated_reasons",
            &get::<String>(row, "automated_reasons")?,
        )?,
        opened_seq: seq(row, "opened_seq")?,
        last_seq: seq(row, "last_seq")?,
    }))
}

fn decision_from_row(row: &AnyRow) -> Result<ReviewDecision, StoreError> {
    let reviewer: String = get(row, "reviewer")?;
    let verdict: String = get(row, "decision")?;
    Ok(ReviewDecision {
        seq: seq(row, "seq")?,
        reviewer: Reviewer {
            key_id: reviewer
                .parse::<KeyId>()
                .map_err(|e| StoreError::corrupt(format!("reviewer: {e}")))?,
            label: get(row, "reviewer_label")?,
        },
        decided_at: parse_timestamp(&get::<String>(row, "decided_at")?)?,
        verdict: verdict.parse().map_err(StoreError::corrupt)?,
        reasons: json("reasons", &get::<String>(row, "reasons")?)?,
        note: get(row, "note")?,
    })
}

/// Clears the notes of a session's decisions, in the caller's transaction: its erasure's.
pub(super) async fn clear_notes(
    tx: &mut Transaction<'static, Any>,
    id: SessionId,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE review_decisions SET note = NULL WHERE session_id = $1 AND note IS NOT NULL",
    )
    .bind(id.to_string())
    .execute(&mut **tx)
    .await
    .map_err(db_error("erasing review notes"))?;
    Ok(())
}

impl SqlStore {
    async fn decisions_of(
        &self,
        ids: &[SessionId],
    ) -> Result<Vec<(SessionId, ReviewDecision)>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let list = (1..=chunk.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {DECISION_COLUMNS} FROM review_decisions WHERE session_id IN ({list}) \
                 ORDER BY session_id, seq"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            let rows = query
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("reading review decisions"))?;
            for row in &rows {
                found.push((session_id(row, "session_id")?, decision_from_row(row)?));
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl ReviewStore for SqlStore {
    async fn review_decisions(&self, id: SessionId) -> Result<Vec<ReviewDecision>, StoreError> {
        Ok(self
            .decisions_of(&[id])
            .await?
            .into_iter()
            .map(|(_, decision)| decision)
            .collect())
    }

    async fn reviews(
        &self,
        owner: &Owner,
        query: &ReviewQuery,
    ) -> Result<Vec<ReviewCase>, StoreError> {
        let waiting = [ReviewStatus::Open, ReviewStatus::PendingSecond];
        let (statuses, bound) =
            if query.statuses.len() == 2 && waiting.iter().all(|s| query.statuses.contains(s)) {
                // The predicate of the partial index `reviews_waiting`, as it is written there.
                ("r.status <> 'resolved'".to_owned(), &[][..])
            } else {
                let list = (0..query.statuses.len())
                    .map(|n| format!("${}", n + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                (format!("r.status IN ({list})"), &query.statuses[..])
            };
        let mut next = bound.len() + 3;
        let after = match query.after {
            Some(_) => {
                next += 2;
                format!(
                    " AND (r.opened_at, r.session_id) > (${}, ${})",
                    next - 2,
                    next - 1
                )
            }
            None => String::new(),
        };
        let sql = format!(
            "SELECT r.session_id, s.reference, r.status AS review_status, \
             r.opened_at AS review_opened_at, r.resolved_at AS review_resolved_at, \
             r.automated_reasons, r.opened_seq, r.last_seq \
             FROM reviews r JOIN sessions s ON s.id = r.session_id \
             WHERE r.tenant = $1 AND r.mode = $2 AND {statuses}{after} \
             ORDER BY r.opened_at, r.session_id LIMIT {}",
            query.limit
        );
        let mut statement = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str());
        for status in bound {
            statement = statement.bind(status.as_str());
        }
        if let Some(position) = query.after {
            statement = statement
                .bind(timestamp(position.opened_at))
                .bind(position.session_id.to_string());
        }
        let rows = statement
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("reading the review queue"))?;
        let mut cases = Vec::with_capacity(rows.len());
        for row in &rows {
            cases.push(ReviewCase {
                session_id: session_id(row, "session_id")?,
                reference: get(row, "reference")?,
                state: state_from_row(row)?
                    .ok_or_else(|| StoreError::corrupt("a review without a status"))?,
                decisions: Vec::new(),
            });
        }
        let ids: Vec<SessionId> = cases.iter().map(|case| case.session_id).collect();
        for (id, decision) in self.decisions_of(&ids).await? {
            if let Some(case) = cases.iter_mut().find(|case| case.session_id == id) {
                case.decisions.push(decision);
            }
        }
        Ok(cases)
    }

    async fn decide(
        &self,
        owner: &Owner,
        id: SessionId,
        write: &ReviewWrite,
    ) -> Result<Decided, StoreError> {
        let last = write
            .events
            .last()
            .map_or(write.read_seq, |event| event.seq);
        let with_note = write.decision.note.is_some();
        let mut tx = self.begin("recording a review decision").await?;
        let session = sqlx::query(
            "UPDATE sessions SET erased_at = erased_at \
             WHERE id = $1 AND tenant = $2 AND mode = $3 AND ($4 = 0 OR erased_at IS NULL)",
        )
        .bind(id.to_string())
        .bind(owner.tenant.as_str().to_owned())
        .bind(owner.mode.as_str())
        .bind(i64::from(with_note))
        .execute(&mut *tx)
        .await
        .map_err(db_error("recording a review decision"))?;
        if session.rows_affected() == 0 {
            // Erased, or not the owner's session at all.
            let erased = sqlx::query(
                "SELECT 1 FROM sessions \
                 WHERE id = $1 AND tenant = $2 AND mode = $3 AND erased_at IS NOT NULL",
            )
            .bind(id.to_string())
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error("recording a review decision"))?;
            return Ok(if erased.is_some() {
                Decided::Erased
            } else {
                Decided::Moved
            });
        }
        let moved = sqlx::query(
            "UPDATE reviews SET status = $3, last_seq = $4, resolved_at = $5 \
             WHERE session_id = $1 AND last_seq = $2 AND tenant = $6 AND mode = $7",
        )
        .bind(id.to_string())
        .bind(seq_param(write.read_seq))
        .bind(write.status.as_str())
        .bind(seq_param(last))
        .bind(write.resolution.as_ref().map(|r| timestamp(r.resolved_at)))
        .bind(owner.tenant.as_str().to_owned())
        .bind(owner.mode.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error("recording a review decision"))?;
        if moved.rows_affected() == 0 {
            return Ok(Decided::Moved);
        }
        let decision = &write.decision;
        let sql = format!(
            "INSERT INTO review_decisions ({DECISION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(seq_param(decision.seq))
            .bind(decision.reviewer.key_id.as_str().to_owned())
            .bind(decision.reviewer.label.clone())
            .bind(timestamp(decision.decided_at))
            .bind(decision.verdict.as_str())
            .bind(serde_json::to_string(&decision.reasons).expect("reasons serialise"))
            .bind(decision.note.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error("recording a review decision"))?;
        let events: Vec<_> = write.events.iter().map(|event| (id, event)).collect();
        insert_events(&mut tx, &events).await?;
        if let Some(resolution) = &write.resolution {
            sqlx::query("UPDATE sessions SET decision = $2, reasons = $3 WHERE id = $1")
                .bind(id.to_string())
                .bind(resolution.verdict.as_str())
                .bind(serde_json::to_string(&resolution.reasons).expect("reasons serialise"))
                .execute(&mut *tx)
                .await
                .map_err(db_error("resolving a review"))?;
            sqlx::query(
                "INSERT INTO webhook_messages (id, tenant, mode, type, session_id, seq, created_at) \
                 SELECT $1, $2, $3, 'session.reviewed', $4, $5, $6 \
                 WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant = $2 AND e.mode = $3)",
            )
            .bind(MessageId::generate().as_str().to_owned())
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .bind(id.to_string())
            .bind(seq_param(last))
            .bind(timestamp(resolution.resolved_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error("writing a webhook message"))?;
        }
        tx.commit()
            .await
            .map_err(db_error("recording a review decision"))?;
        Ok(Decided::Stored)
    }

    async fn review_backlog(&self) -> Result<ReviewBacklog, StoreError> {
        // The predicate of the partial index `reviews_unresolved`, as it is written there.
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS cases, MIN(opened_at) AS oldest FROM reviews \
             WHERE status <> 'resolved' GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("counting open reviews"))?;
        let mut backlog = ReviewBacklog::default();
        for row in &rows {
            let cases = u64::try_from(get::<i64>(row, "cases")?).unwrap_or_default();
            match get::<String>(row, "status")?
                .parse()
                .map_err(StoreError::corrupt)?
            {
                ReviewStatus::Open => backlog.open = cases,
                ReviewStatus::PendingSecond => backlog.pending_second = cases,
                ReviewStatus::Resolved => {}
            }
            if let Some(oldest) = optional_timestamp(row, "oldest")? {
                backlog.oldest = Some(backlog.oldest.map_or(oldest, |o| o.min(oldest)));
            }
        }
        Ok(backlog)
    }

    async fn open_missing_cases(&self) -> Result<u64, StoreError> {
        // `decision = 'review'` as the partial index `sessions_in_review` has it: the sessions
        // still waiting for a decision, not the whole table. (Only a completion sets a
        // decision; a condition on `status` would lead SQLite to `sessions_running` instead.)
        let opened = sqlx::query(
            "INSERT INTO reviews (session_id, tenant, mode, status, opened_at, \
             automated_reasons, opened_seq, last_seq) \
             SELECT s.id, s.tenant, s.mode, 'open', s.completed_at, COALESCE(s.reasons, '[]'), 0, \
                 COALESCE((SELECT MAX(e.seq) FROM events e WHERE e.session_id = s.id), 0) \
             FROM sessions s WHERE s.decision = 'review' AND s.completed_at IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.session_id = s.id) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .execute(&self.pool)
        .await
        .map_err(db_error("opening missing review cases"))?;
        Ok(opened.rows_affected())
    }
}
