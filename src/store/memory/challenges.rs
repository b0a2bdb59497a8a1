//! Liveness challenges in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::domain::{Challenge, ChallengeId, ChallengeRefusal, Owner, SessionId};
use crate::store::{ChallengeStore, StoreError};

#[async_trait]
impl ChallengeStore for MemoryStore {
    async fn create_challenge(&self, challenge: &Challenge) -> Result<(), StoreError> {
        self.challenges()
            .insert(challenge.id.clone(), challenge.clone());
        Ok(())
    }

    async fn challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
    ) -> Result<Option<Challenge>, StoreError> {
        Ok(self
            .challenges()
            .get(id)
            .filter(|c| &c.owner == owner)
            .cloned())
    }

    async fn take_challenge(
        &self,
        owner: &Owner,
        id: &ChallengeId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<Result<Challenge, ChallengeRefusal>, StoreError> {
        let mut challenges = self.challenges();
        let Some(challenge) = challenges.get_mut(id) else {
            return Ok(Err(ChallengeRefusal::Unknown));
        };
        if let Some(refusal) = challenge.refusal(owner, now) {
            return Ok(Err(refusal));
        }
        challenge.used_by = Some(session);
        Ok(Ok(challenge.clone()))
    }

    async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut challenges = self.challenges();
        let count = challenges.len();
        challenges.retain(|_, c| c.expires_at >= before);
        Ok((count - challenges.len()) as u64)
    }
}
