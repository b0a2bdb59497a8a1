//! Capture links on SQLite and PostgreSQL. A link is used with one UPDATE whose condition is
//! that nobody has (`used_by IS NULL`), so of two pages submitting at once exactly one changes
//! the row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::{SqlStore, db_error, get, optional_timestamp, owner_from_row, parse_timestamp};
use super::{session_id, timestamp};
use crate::domain::{CaptureLink, CaptureLinkId, ChallengeId, Claimed, SessionId};
use crate::store::{CaptureStore, StoreError, UnreadableJson};

const COLUMNS: &str = "id, token_hash, tenant, mode, created_by, reference, document_type, \
    claimed, redirect_url, challenge_id, created_at, expires_at, used_by, used_at";

fn link_from_row(row: &AnyRow) -> Result<CaptureLink, StoreError> {
    let id: String = get(row, "id")?;
    let created_by: String = get(row, "created_by")?;
    let document_type: String = get(row, "document_type")?;
    let claimed: Option<String> = get(row, "claimed")?;
    let used_by: Option<String> = get(row, "used_by")?;
    let challenge_id: Option<String> = get(row, "challenge_id")?;
    // Read so that a corrupt value is reported, though nothing shows it yet.
    optional_timestamp(row, "used_at")?;
    Ok(CaptureLink {
        id: id
            .parse()
            .map_err(|e| StoreError::corrupt(format!("capture link id: {e}")))?,
        token_hash: get(row, "token_hash")?,
        owner: owner_from_row(row)?,
        created_by: created_by
            .parse()
            .map_err(|e| StoreError::corrupt(format!("capture link created_by: {e}")))?,
        reference: get(row, "reference")?,
        document_type: document_type
            .parse()
            .map_err(|e| StoreError::corrupt(format!("capture link document_type: {e}")))?,
        claimed: claimed
            .map(|text| serde_json::from_str::<Claimed>(&text))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                what: "capture link claimed".into(),
                source: Some(Box::new(UnreadableJson::from(e))),
            })?,
        redirect_url: get(row, "redirect_url")?,
        challenge_id: challenge_id
            .map(|id| id.parse())
            .transpose()
            .map_err(|e| StoreError::corrupt(format!("capture link challenge_id: {e}")))?,
        created_at: parse_timestamp(&get::<String>(row, "created_at")?)?,
        expires_at: parse_timestamp(&get::<String>(row, "expires_at")?)?,
        used_by: used_by.map(|_| session_id(row, "used_by")).transpose()?,
    })
}

#[async_trait]
impl CaptureStore for SqlStore {
    async fn create_capture_link(&self, link: &CaptureLink) -> Result<(), StoreError> {
        let claimed = link
            .claimed
            .as_ref()
            .map(|claimed| serde_json::to_string(claimed).expect("a claim serializes"));
        sqlx::query(
            "INSERT INTO capture_links (id, token_hash, tenant, mode, created_by, reference, \
             document_type, claimed, redirect_url, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(link.id.as_str().to_owned())
        .bind(link.token_hash.clone())
        .bind(link.owner.tenant.as_str().to_owned())
        .bind(link.owner.mode.as_str())
        .bind(link.created_by.as_str().to_owned())
        .bind(link.reference.clone())
        .bind(link.document_type.as_str())
        .bind(claimed)
        .bind(link.redirect_url.clone())
        .bind(timestamp(link.created_at))
        .bind(timestamp(link.expires_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("storing a capture link"))?;
        Ok(())
    }

    async fn capture_link(&self, token_hash: &str) -> Result<Option<CaptureLink>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM capture_links WHERE token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("reading a capture link"))?;
        row.as_ref().map(link_from_row).transpose()
    }

    async fn set_capture_challenge(
        &self,
        id: &CaptureLinkId,
        challenge: &ChallengeId,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE capture_links SET challenge_id = $2 WHERE id = $1 AND used_by IS NULL")
            .bind(id.as_str().to_owned())
            .bind(challenge.as_str().to_owned())
            .execute(&self.pool)
            .await
            .map_err(db_error("giving a capture link its challenge"))?;
        Ok(())
    }

    async fn use_capture_link(
        &self,
        id: &CaptureLinkId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let used = sqlx::query(
            "UPDATE capture_links SET used_by = $2, used_at = $3, reference = NULL, \
             claimed = NULL WHERE id = $1 AND used_by IS NULL AND expires_at > $3",
        )
        .bind(id.as_str().to_owned())
        .bind(session.to_string())
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .map_err(db_error("using a capture link"))?;
        Ok(used.rows_affected() == 1)
    }

    async fn purge_capture_links(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM capture_links WHERE expires_at < $1")
            .bind(timestamp(before))
            .execute(&self.pool)
            .await
            .map_err(db_error("purging capture links"))?;
        Ok(purged.rows_affected())
    }
}
