//! Liveness challenges: issued on request, taken by one session, judged by liveness.
//!
//! `POST /v1/liveness/challenges` draws the steps here, with the OS's random source, and stores
//! them; the client shows them to the applicant and sends the frames with the challenge's id.
//! When the session starts, the orchestrator takes the challenge (one compare-and-set in the
//! store, so a challenge is answered once, across instances and restarts) and the session carries
//! its steps from then on. The client never says what the steps were, nor what the poses are.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::ChallengeSettings;
use crate::domain::{
    Challenge, ChallengeId, ChallengeRefusal, ChallengeStep, Owner, SessionId, draw_steps,
};
use crate::store::{ChallengeStore, StoreError};

/// Most steps a challenge may have: each takes about two seconds and four frames of the 24 a
/// capture sends.
pub const MAX_LENGTH: usize = 5;

/// Issues challenges and lets sessions take them.
pub struct Challenges {
    store: Arc<dyn ChallengeStore>,
    vocabulary: Vec<ChallengeStep>,
    length: usize,
    ttl: Duration,
    clock: Clock,
}

impl Challenges {
    /// `settings` checked: a vocabulary without repeats, 1 to [`MAX_LENGTH`] steps, a TTL of
    /// 10 s to an hour.
    pub fn new(
        settings: &ChallengeSettings,
        store: Arc<dyn ChallengeStore>,
        clock: Clock,
    ) -> Result<Self, String> {
        let mut vocabulary = settings.steps.clone();
        vocabulary.sort();
        vocabulary.dedup();
        if vocabulary.is_empty() {
            return Err("challenges.steps: name at least one step".into());
        }
        if !(1..=MAX_LENGTH).contains(&settings.length) {
            return Err(format!(
                "challenges.length: 1 to {MAX_LENGTH} steps, not {}",
                settings.length
            ));
        }
        if !(10..=3600).contains(&settings.ttl_s) {
            return Err(format!(
                "challenges.ttl_s: 10 to 3600 seconds, not {}",
                settings.ttl_s
            ));
        }
        Ok(Self {
            store,
            vocabulary,
            length: settings.length,
            ttl: Duration::from_secs(settings.ttl_s),
            clock,
        })
    }

    /// A new challenge for `owner`, stored.
    pub async fn issue(&self, owner: &Owner) -> Result<Challenge, StoreError> {
        let now = self.clock.now();
        let challenge = Challenge {
            id: ChallengeId::generate(),
            owner: owner.clone(),
            steps: draw_steps(&self.vocabulary, self.length),
            created_at: now,
            expires_at: now + self.ttl,
            used_by: None,
        };
        self.store.create_challenge(&challenge).await?;
        metrics::counter!("kyc_challenges_issued_total").increment(1);
        Ok(challenge)
    }

    /// Takes `owner`'s challenge `id` for the new session `session`: its steps, or why not.
    pub async fn take(
        &self,
        owner: &Owner,
        id: &ChallengeId,
        session: SessionId,
    ) -> Result<Result<Vec<ChallengeStep>, ChallengeRefusal>, StoreError> {
        let taken = self
            .store
            .take_challenge(owner, id, session, self.clock.now())
            .await?;
        let outcome = match &taken {
            Ok(_) => "taken",
            Err(refusal) => refusal.code(),
        };
        metrics::counter!("kyc_challenges_answered_total", "outcome" => outcome).increment(1);
        Ok(taken.map(|c| c.steps))
    }

    /// The steps of `owner`'s challenge `id`, used or not, without taking it: what a repeated
    /// request (the same `Idempotency-Key`) is compared by.
    pub async fn steps(
        &self,
        owner: &Owner,
        id: &ChallengeId,
    ) -> Result<Option<Vec<ChallengeStep>>, StoreError> {
        Ok(self.store.challenge(owner, id).await?.map(|c| c.steps))
    }

    /// `owner`'s challenge `id`, if it may still be answered (unused, unexpired).
    pub async fn answerable(
        &self,
        owner: &Owner,
        id: &ChallengeId,
    ) -> Result<Option<Challenge>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .challenge(owner, id)
            .await?
            .filter(|c| c.refusal(owner, now).is_none()))
    }

    /// Forgets challenges expired before now.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        self.store.purge_challenges(self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Mode, TenantId};
    use crate::store::MemoryStore;

    fn owner(tenant: &str) -> Owner {
        Owner {
            tenant: tenant.parse::<TenantId>().unwrap(),
            mode: Mode::Live,
        }
    }

    fn challenges(store: Arc<MemoryStore>) -> Challenges {
        let settings = crate::Settings::defaults().challenges;
        Challenges::new(&settings, store, Clock::start()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_challenge_is_taken_once_by_its_own_tenant_before_it_expires() {
        let store = Arc::new(MemoryStore::new(10));
        let challenges = challenges(store);
        let acme = owner("acme");
        let issued = challenges.issue(&acme).await.unwrap();
        assert_eq!(issued.steps.len(), 3);
        assert_eq!(
            issued.expires_at - issued.created_at,
            chrono::Duration::seconds(120)
        );

        let other = challenges
            .take(&owner("other"), &issued.id, SessionId::new())
            .await
            .unwrap();
        assert_eq!(other, Err(ChallengeRefusal::Unknown));

        let first = challenges.take(&acme, &issued.id, SessionId::new()).await;
        assert_eq!(first.unwrap(), Ok(issued.steps.clone()));
        let second = challenges.take(&acme, &issued.id, SessionId::new()).await;
        assert_eq!(second.unwrap(), Err(ChallengeRefusal::Used));
        // Its steps stay readable for a repeated request.
        let steps = challenges.steps(&acme, &issued.id).await.unwrap();
        assert_eq!(steps, Some(issued.steps));

        let late = challenges.issue(&acme).await.unwrap();
        // A second over: the clock reads the wall clock to the microsecond, and the test's own
        // time passes between issuing and advancing.
        tokio::time::advance(Duration::from_secs(121)).await;
        let expired = challenges.take(&acme, &late.id, SessionId::new()).await;
        assert_eq!(expired.unwrap(), Err(ChallengeRefusal::Expired));
        assert_eq!(challenges.purge().await.unwrap(), 2);
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let store = Arc::new(MemoryStore::new(10));
        let defaults = crate::Settings::defaults().challenges;
        for (settings, key) in [
            (
                ChallengeSettings {
                    steps: vec![],
                    ..defaults.clone()
                },
                "challenges.steps",
            ),
            (
                ChallengeSettings {
                    length: 0,
                    ..defaults.clone()
                },
                "challenges.length",
            ),
            (
                ChallengeSettings {
                    ttl_s: 1,
                    ..defaults.clone()
                },
                "challenges.ttl_s",
            ),
        ] {
            let error = Challenges::new(&settings, store.clone(), Clock::start())
                .err()
                .unwrap();
            assert!(error.starts_with(key), "{error}");
        }
    }
}
