//! Capture links in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::domain::{CaptureLink, CaptureLinkId, SessionId};
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
        Ok(true)
    }

    async fn purge_capture_links(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut links = self.capture_links();
        let count = links.len();
        links.retain(|_, link| link.expires_at >= before);
        Ok((count - links.len()) as u64)
    }
}
