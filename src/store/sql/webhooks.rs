//! Webhook endpoints, the outbox and deliveries on SQLite and PostgreSQL, with the same
//! statements for both.
//!
//! A delivery is claimed by a conditional UPDATE that sets a lease and a claim token, and only
//! where no live lease exists; the UPDATE repeats that condition, so on PostgreSQL an instance
//! that waited for another's row lock re-checks it against the committed row and skips a row the
//! other has just claimed. Its result is read back by the token. An attempt is recorded only
//! while the claim is still its recorder's: a lease that ran out and was taken by another
//! instance is never recorded twice.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::{
    SqlStore, db_error, get, optional_timestamp, owner_from_row, parse_timestamp, session_id,
    timestamp,
};
use crate::domain::{
    Attempt, AttemptOutcome, Delivery, DeliveryState, DueDelivery, Endpoint, EndpointId, MessageId,
    OutboxMessage, Owner, RetiringSecret, SigningSecret,
};
use crate::store::{Backlog, StoreError, WebhookStore};

const ENDPOINT_COLUMNS: &str = "id, tenant, mode, url, events, description, enabled, \
     disabled_reason, secret, previous_secret, previous_until, failing_since, created_at, \
     updated_at";

fn endpoint_id(row: &AnyRow, column: &str) -> Result<EndpointId, StoreError> {
    let id: String = get(row, column)?;
    EndpointId::from_str(&id).map_err(|e| StoreError::corrupt(format!("{column}: {e}")))
}

fn message_id(row: &AnyRow, column: &str) -> Result<MessageId, StoreError> {
    let id: String = get(row, column)?;
    MessageId::from_str(&id).map_err(|e| StoreError::corrupt(format!("{column}: {e}")))
}

fn count(row: &AnyRow, column: &str) -> Result<u32, StoreError> {
    Ok(u32::try_from(get::<i64>(row, column)?).unwrap_or(u32::MAX))
}

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint, StoreError> {
    let previous_secret: Option<String> = get(row, "previous_secret")?;
    let previous_until = optional_timestamp(row, "previous_until")?;
    Ok(Endpoint {
        id: endpoint_id(row, "id")?,
        owner: owner_from_row(row)?,
        url: get(row, "url")?,
        events: get::<String>(row, "events")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        description: get(row, "description")?,
        enabled: get::<i64>(row, "enabled")? != 0,
        disabled_reason: get(row, "disabled_reason")?,
        secret: SigningSecret::new(get(row, "secret")?),
        previous_secret: previous_secret.zip(previous_until).map(|(secret, until)| {
            RetiringSecret {
                secret: SigningSecret::new(secret),
                until,
            }
        }),
        failing_since: optional_timestamp(row, "failing_since")?,
        created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
        updated_at: parse_timestamp(&get::<String>(row, "updated_at")?)?,
    })
}

fn attempt_from_row(row: &AnyRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        attempt: count(row, "attempt")?,
        at: parse_timestamp(&get::<String>(row, "at")?)?,
        status_code: get::<Option<i64>>(row, "status_code")?
            .and_then(|code| u16::try_from(code).ok()),
        latency_ms: get(row, "latency_ms")?,
        error: get(row, "error")?,
    })
}

/// Binds the endpoint's key (id, tenant, mode) and its changeable fields, as `$1` to `$12` in
/// the order of [`ENDPOINT_COLUMNS`].
fn bind_changeable<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    endpoint: &Endpoint,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let previous = endpoint.previous_secret.as_ref();
    query
        .bind(endpoint.id.as_str().to_owned())
        .bind(endpoint.owner.tenant.as_str().to_owned())
        .bind(endpoint.owner.mode.as_str())
        .bind(endpoint.url.clone())
        .bind(endpoint.events.join(" "))
        .bind(endpoint.description.clone())
        .bind(i64::from(endpoint.enabled))
        .bind(endpoint.disabled_reason.clone())
        .bind(endpoint.secret.expose().to_owned())
        .bind(previous.map(|p| p.secret.expose().to_owned()))
        .bind(previous.map(|p| timestamp(p.until)))
        .bind(endpoint.failing_since.map(timestamp))
}

/// `$first, $first+1, ...`: `n` parameters.
fn parameters(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ({})",
            parameters(1, 14)
        );
        bind_changeable(sqlx::query(AssertSqlSafe(sql)), endpoint)
            .bind(timestamp(endpoint.created_at))
            .bind(timestamp(endpoint.updated_at))
            .execute(&self.pool)
            .await
            .map_err(db_error("creating a webhook endpoint"))?;
        Ok(())
    }

    async fn endpoint(
        &self,
        owner: &Owner,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE id = $1 AND tenant = $2 AND mode = $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.as_str().to_owned())
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading a webhook endpoint"))?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()
    }

    async fn endpoints(&self, owner: &Owner) -> Result<Vec<Endpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE tenant = $1 AND mode = $2 ORDER BY created_at, id"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("listing webhook endpoints"))?
            .iter()
            .map(endpoint_from_row)
            .collect()
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "UPDATE webhook_endpoints SET url = $4, events = $5, description = $6, \
             enabled = $7, disabled_reason = $8, secret = $9, previous_secret = $10, \
             previous_until = $11, failing_since = $12, updated_at = $13 \
             WHERE id = $1 AND tenant = $2 AND mode = $3 AND updated_at = $14",
        );
        let done = bind_changeable(query, endpoint)
            .bind(timestamp(endpoint.updated_at))
            .bind(timestamp(read_at))
            .execute(&self.pool)
            .await
            .map_err(db_error("updating a webhook endpoint"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_endpoint(&self, owner: &Owner, id: &EndpointId) -> Result<bool, StoreError> {
        let mut tx = self.begin("deleting a webhook endpoint").await?;
        let done = sqlx::query(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND tenant = $2 AND mode = $3",
        )
        .bind(id.as_str().to_owned())
        .bind(owner.tenant.as_str().to_owned())
        .bind(owner.mode.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error("deleting a webhook endpoint"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for table in ["webhook_deliveries", "webhook_attempts"] {
            let sql = format!("DELETE FROM {table} WHERE endpoint_id = $1");
            sqlx::query(AssertSqlSafe(sql))
                .bind(id.as_str().to_owned())
                .execute(&mut *tx)
                .await
                .map_err(db_error("deleting a webhook endpoint"))?;
        }
        tx.commit()
            .await
            .map_err(db_error("deleting a webhook endpoint"))?;
        Ok(true)
    }

    async fn unrouted(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        sqlx::query(
            "SELECT id, tenant, mode, type, session_id, seq, created_at FROM webhook_messages \
             WHERE routed_at IS NULL ORDER BY created_at LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("reading the webhook outbox"))?
        .iter()
        .map(|row| {
            Ok(OutboxMessage {
                id: message_id(row, "id")?,
                owner: owner_from_row(row)?,
                event_type: get(row, "type")?,
                session_id: session_id(row, "session_id")?,
                seq: u64::try_from(get::<i64>(row, "seq")?).unwrap_or_default(),
                created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
            })
        })
        .collect()
    }

    async fn route(
        &self,
        message: &MessageId,
        payload: &str,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin("routing a webhook message").await?;
        let routed = sqlx::query(
            "UPDATE webhook_messages SET payload = $2, routed_at = $3 \
             WHERE id = $1 AND routed_at IS NULL",
        )
        .bind(message.as_str().to_owned())
        .bind(payload.to_owned())
        .bind(timestamp(now))
        .execute(&mut *tx)
        .await
        .map_err(db_error("routing a webhook message"))?;
        if routed.rows_affected() == 0 {
            // Another instance routed it first.
            return Ok(());
        }
        for endpoint in endpoints {
            sqlx::query(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, \
                 next_attempt_at, created_at) VALUES ($1, $2, 'pending', 0, $3, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(message.as_str().to_owned())
            .bind(endpoint.as_str().to_owned())
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await
            .map_err(db_error("routing a webhook message"))?;
        }
        tx.commit()
            .await
            .map_err(db_error("routing a webhook message"))
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: &str,
        lease_until: DateTime<Utc>,
        skip: &[EndpointId],
        per_endpoint: usize,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let skipped = if skip.is_empty() {
            String::new()
        } else {
            format!("AND d.endpoint_id NOT IN ({})", parameters(6, skip.len()))
        };
        let free = "d.state = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.lease_until IS NULL OR d.lease_until < $1)";
        // The longest-due candidates (a bounded read along the due index), ranked within each
        // endpoint, so one endpoint's backlog cannot fill a claim that others wait in; an
        // endpoint at its limit is in `skip` and leaves the candidates to the others.
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_until = $2, leased_by = $3 \
             WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) \
             AND (message_id, endpoint_id) IN ( \
                 SELECT message_id, endpoint_id FROM ( \
                     SELECT c.message_id, c.endpoint_id, c.next_attempt_at, ROW_NUMBER() \
                         OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at) AS rank \
                     FROM (SELECT d.message_id, d.endpoint_id, d.next_attempt_at \
                         FROM webhook_deliveries d \
                         JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                         WHERE {free} AND e.enabled = 1 {skipped} \
                         ORDER BY d.next_attempt_at LIMIT $4 * 4) c) ranked \
                 WHERE rank <= $5 ORDER BY next_attempt_at LIMIT $4)"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(timestamp(now))
            .bind(timestamp(lease_until))
            .bind(claim.to_owned())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(per_endpoint).unwrap_or(i64::MAX));
        for endpoint in skip {
            query = query.bind(endpoint.as_str().to_owned());
        }
        let claimed = query
            .execute(&self.pool)
            .await
            .map_err(db_error("claiming webhook deliveries"))?;
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT d.message_id, d.endpoint_id, d.attempts, m.type, m.payload, m.created_at, \
             m.tenant, m.mode FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id \
             WHERE d.leased_by = $1 AND d.state = 'pending' ORDER BY d.next_attempt_at",
        )
        .bind(claim.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("claiming webhook deliveries"))?
        .iter()
        .map(|row| {
            Ok(DueDelivery {
                message_id: message_id(row, "message_id")?,
                endpoint_id: endpoint_id(row, "endpoint_id")?,
                owner: owner_from_row(row)?,
                event_type: get(row, "type")?,
                payload: get::<Option<String>>(row, "payload")?
                    .ok_or_else(|| StoreError::corrupt("a routed message without a body"))?,
                attempts: count(row, "attempts")?,
                created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
            })
        })
        .collect()
    }

    async fn endpoint_health(
        &self,
        id: &EndpointId,
        failing: Option<DateTime<Utc>>,
        disable: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_endpoints SET \
             failing_since = CASE WHEN $2 IS NULL THEN NULL ELSE COALESCE(failing_since, $2) END, \
             enabled = CASE WHEN $3 IS NULL THEN enabled ELSE 0 END, \
             disabled_reason = COALESCE($3, disabled_reason), updated_at = $4 WHERE id = $1",
        )
        .bind(id.as_str().to_owned())
        .bind(failing.map(timestamp))
        .bind(disable.map(str::to_owned))
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("recording a webhook endpoint's health"))?;
        Ok(())
    }

    async fn release(&self, due: &DueDelivery, claim: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL, leased_by = NULL \
             WHERE message_id = $1 AND endpoint_id = $2 AND leased_by = $3",
        )
        .bind(due.message_id.as_str().to_owned())
        .bind(due.endpoint_id.as_str().to_owned())
        .bind(claim.to_owned())
        .execute(&self.pool)
        .await
        .map_err(db_error("releasing a webhook delivery"))?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        due: &DueDelivery,
        claim: &str,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let (state, next) = match outcome {
            AttemptOutcome::Delivered => (DeliveryState::Delivered, None),
            AttemptOutcome::Retry { next_attempt_at } => {
                (DeliveryState::Pending, Some(*next_attempt_at))
            }
            AttemptOutcome::Failed => (DeliveryState::Failed, None),
        };
        let mut tx = self.begin("recording a webhook attempt").await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET state = $4, attempts = $5, \
             next_attempt_at = COALESCE($6, next_attempt_at), lease_until = NULL, \
             leased_by = NULL WHERE message_id = $1 AND endpoint_id = $2 AND leased_by = $3",
        )
        .bind(due.message_id.as_str().to_owned())
        .bind(due.endpoint_id.as_str().to_owned())
        .bind(claim.to_owned())
        .bind(state.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(next.map(timestamp))
        .execute(&mut *tx)
        .await
        .map_err(db_error("recording a webhook attempt"))?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (message_id, endpoint_id, attempt, at, status_code, \
             latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(due.message_id.as_str().to_owned())
        .bind(due.endpoint_id.as_str().to_owned())
        .bind(i64::from(attempt.attempt))
        .bind(timestamp(attempt.at))
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.latency_ms)
        .bind(attempt.error.clone())
        .execute(&mut *tx)
        .await
        .map_err(db_error("recording a webhook attempt"))?;
        tx.commit()
            .await
            .map_err(db_error("recording a webhook attempt"))?;
        Ok(true)
    }

    async fn deliveries(
        &self,
        endpoint: &EndpointId,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.message_id, d.state, d.next_attempt_at, d.created_at, m.type \
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id \
             WHERE d.endpoint_id = $1 ORDER BY d.created_at DESC, d.message_id DESC LIMIT $2",
        )
        .bind(endpoint.as_str().to_owned())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("listing webhook deliveries"))?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: String = get(row, "state")?;
            let state = DeliveryState::from_str(&state).map_err(StoreError::corrupt)?;
            let message_id = message_id(row, "message_id")?;
            let attempts = sqlx::query(
                "SELECT attempt, at, status_code, latency_ms, error FROM webhook_attempts \
                 WHERE message_id = $1 AND endpoint_id = $2 ORDER BY attempt",
            )
            .bind(message_id.as_str().to_owned())
            .bind(endpoint.as_str().to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("listing webhook deliveries"))?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_, _>>()?;
            deliveries.push(Delivery {
                message_id,
                event_type: get(row, "type")?,
                state,
                created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
                next_attempt_at: match state {
                    DeliveryState::Pending => optional_timestamp(row, "next_attempt_at")?,
                    _ => None,
                },
                attempts,
            });
        }
        Ok(deliveries)
    }

    async fn resend(
        &self,
        endpoint: &EndpointId,
        message: &MessageId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $3 \
             WHERE endpoint_id = $1 AND message_id = $2",
        )
        .bind(endpoint.as_str().to_owned())
        .bind(message.as_str().to_owned())
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("resending a webhook message"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn recover(
        &self,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $3 \
             WHERE endpoint_id = $1 AND state = 'failed' AND created_at >= $2",
        )
        .bind(endpoint.as_str().to_owned())
        .bind(timestamp(since))
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("recovering webhook messages"))?;
        Ok(done.rows_affected())
    }

    async fn purge_webhooks(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM webhook_messages m WHERE m.created_at < $1 \
             AND m.routed_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                 WHERE d.message_id = m.id AND d.state = 'pending' AND e.enabled = 1) \
             ORDER BY m.created_at LIMIT $2",
        )
        .bind(timestamp(before))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("purging webhook messages"))?
        .iter()
        .map(|row| get(row, "id"))
        .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin("purging webhook messages").await?;
        for (table, column) in [
            ("webhook_attempts", "message_id"),
            ("webhook_deliveries", "message_id"),
            ("webhook_messages", "id"),
        ] {
            let sql = format!(
                "DELETE FROM {table} WHERE {column} IN ({})",
                parameters(1, ids.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in &ids {
                query = query.bind(id.clone());
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(db_error("purging webhook messages"))?;
        }
        tx.commit()
            .await
            .map_err(db_error("purging webhook messages"))?;
        Ok(ids.len() as u64)
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let unrouted =
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_messages WHERE routed_at IS NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error("measuring the webhook backlog"))?;
        let pending = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(d.created_at) AS oldest FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.state = 'pending' AND e.enabled = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("measuring the webhook backlog"))?;
        Ok(Backlog {
            unrouted: u64::try_from(get::<i64>(&unrouted, "n")?).unwrap_or_default(),
            pending: u64::try_from(get::<i64>(&pending, "n")?).unwrap_or_default(),
            oldest_pending: optional_timestamp(&pending, "oldest")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parameters;

    #[test]
    fn parameters_count_from_the_first() {
        assert_eq!(parameters(5, 3), "$5, $6, $7");
        assert_eq!(parameters(1, 0), "");
    }
}
