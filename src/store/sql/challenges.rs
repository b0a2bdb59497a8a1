//! Liveness challenges on SQLite and PostgreSQL. A session takes its challenge with one UPDATE
//! whose condition is that nobody has (`used_by IS NULL`): both databases apply it to the row
//! as committed, so of two sessions taking one challenge at once exactly one changes the row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::{SqlStore, db_error, get, optional_timestamp, owner_from_row, parse_timestamp};
use super::{session_id, timestamp};
use crate::domain::{Challenge, ChallengeId, ChallengeRefusal, ChallengeStep, Owner, SessionId};
use crate::store::{ChallengeStore, StoreError};

const COLUMNS: &str = "id, tenant, mode, steps, created_at, expires_at, used_by, used_at";

fn challenge_from_row(row: &AnyRow) -> Result<Challenge, StoreError> {
    let id: String = get(row, "id")?;
    let steps: String = get(row, "steps")?;
    let used_by: Option<String> = get(row, "used_by")?;
    // Read so that a corrupt value is reported, though nothing shows it yet.
    optional_timestamp(row, "used_at")?;
    Ok(Challenge {
        id: id
            .parse()
            .map_err(|e| StoreError::corrupt(format!("challenge id: {e}")))?,
        owner: owner_from_row(row)?,
        steps: steps
            .split(',')
            .map(|step| step.parse::<ChallengeStep>())
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::corrupt(format!("challenge steps: {e}")))?,
        created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
        expires_at: parse_timestamp(&get::<String>(row, "expires_at")?)?,
        used_by: used_by.map(|_| session_id(row, "used_by")).transpose()?,
    })
}

fn steps_text(steps: &[ChallengeStep]) -> String {
    steps
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait]
impl ChallengeStore for SqlStore {
    async fn create_challenge(&self, challenge: &Challenge) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO challenges (id, tenant, mode, steps, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(challenge.id.as_str().to_owned())
        .bind(challenge.owner.tenant.as_str().to_owned())
        .bind(challenge.owner.mode.as_str())
        .bind(steps_text(&challenge.steps))
        .bind(timestamp(challenge.created_at))
        .bind(timestamp(challenge.expires_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("storing a challenge"))?;
        Ok(())
    }

    async fn challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
    ) -> Result<Option<Challenge>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM challenges WHERE id = $1 AND tenant = $2 AND mode = $3");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str().to_owned())
            .bind(owner.tenant.as_str().to_owned())
            .bind(owner.mode.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading a challenge"))?;
        row.as_ref().map(challenge_from_row).transpose()
    }

    async fn take_challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<Result<Challenge, ChallengeRefusal>, StoreError> {
        let Some(mut challenge) = self.challenge(owner, id).await? else {
            return Ok(Err(ChallengeRefusal::Unknown));
        };
        if let Some(refusal) = challenge.refusal(owner, now) {
            return Ok(Err(refusal));
        }
        let taken = sqlx::query(
            "UPDATE challenges SET used_by = $2, used_at = $3 \
             WHERE id = $1 AND used_by IS NULL AND expires_at > $3",
        )
        .bind(id.as_str().to_owned())
        .bind(session.to_string())
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("taking a challenge"))?;
        if taken.rows_affected() != 1 {
            // Another session took it between the read and the update.
            return Ok(Err(ChallengeRefusal::Used));
        }
        challenge.used_by = Some(session);
        Ok(Ok(challenge))
    }

    async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
            .bind(timestamp(before))
            .execute(&self.pool)
            .await
            .map_err(db_error("purging challenges"))?;
        Ok(purged.rows_affected())
    }
}
