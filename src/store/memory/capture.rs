//! Capture links in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::domain::{CaptureLink, CaptureLinkId, ChallengeId, SessionId};
use crate::store::{CaptureStore, StoreError};

#[async_trait]
impl CaptureStore for MemoryStore {
    async fn create_capture_link(&self, link: &CaptureLink) -> Result<(), StoreError> {
        self.capture_links()
            .insert(link.token_hash.clone(), link.clone());
        Ok(())
    }

    async fn capture_link(&self, token_hash: &str) -> Result<Option<CaptureLink>, StoreError> {
        Ok(self.capture_links().get(token_hash).cloned())
    }

    async fn set_capture_challenge(
        &self,
        id: &CaptureLinkId,
        challenge: &ChallengeId,
    ) -> Result<(), StoreError> {
        if let Some(link) = self
            .capture_links()
            .values_mut()
            .find(|link| &link.id == id && link.used_by.is_none())
        {
            link.challenge_id = Some(challenge.clone());
        }
        Ok(())
    }

    async fn use_capture_link(
        &self,
        id: &CaptureLinkId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut links = self.capture_links();
        let Some(link) = links.values_mut().find(|link| &link.id == id) else {
            return Ok(false);
        };
        if link.refusal(now).is_some() {
            return Ok(false);
        }
        link.used_by = Some(session);
        link.reference = None;
        link.claimed = None;
        Ok(true)
    }

    async fn purge_capture_links(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut links = self.capture_links();
        let count = links.len();
        links.retain(|_, link| link.expires_at >= before);
        Ok((count - links.len()) as u64)
    }
}
