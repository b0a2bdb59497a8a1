//! Liveness challenges, the same on the SQL store (SQLite here) and the memory store: a
//! challenge is read by its own owner only, taken once, refused once expired, and purged after.

use chrono::{Duration, SubsecRound, Utc};

use super::fixtures::{owner, sqlite_in};
use super::{ChallengeStore, MemoryStore, SqlStore};
use crate::domain::{Challenge, ChallengeId, ChallengeRefusal, ChallengeStep, Mode, SessionId};

fn issued(ttl: Duration) -> Challenge {
    // Microseconds, as the SQL store keeps them.
    let now = Utc::now().trunc_subsecs(6);
    Challenge {
        id: ChallengeId::generate(),
        owner: owner(),
        steps: vec![ChallengeStep::TurnLeft, ChallengeStep::LookUp],
        created_at: now,
        expires_at: now + ttl,
        used_by: None,
    }
}

async fn challenges_are_taken_once(store: &dyn ChallengeStore) {
    let challenge = issued(Duration::minutes(2));
    store.create_challenge(&challenge).await.unwrap();
    let now = challenge.created_at;
    let mut other = owner();
    other.mode = Mode::Live;

    assert_eq!(store.challenge(&other, &challenge.id).await.unwrap(), None);
    assert_eq!(
        store.challenge(&owner(), &challenge.id).await.unwrap(),
        Some(challenge.clone())
    );
    let refused = store
        .take_challenge(&other, &challenge.id, SessionId::new(), now)
        .await
        .unwrap();
    assert_eq!(refused, Err(ChallengeRefusal::Unknown));
    let unknown = store
        .take_challenge(&owner(), &ChallengeId::generate(), SessionId::new(), now)
        .await
        .unwrap();
    assert_eq!(unknown, Err(ChallengeRefusal::Unknown));

    let session = SessionId::new();
    let taken = store
        .take_challenge(&owner(), &challenge.id, session, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.steps, challenge.steps);
    assert_eq!(taken.used_by, Some(session));
    let again = store
        .take_challenge(&owner(), &challenge.id, SessionId::new(), now)
        .await
        .unwrap();
    assert_eq!(again, Err(ChallengeRefusal::Used));
    let read = store.challenge(&owner(), &challenge.id).await.unwrap();
    assert_eq!(read.unwrap().used_by, Some(session));

    let late = issued(Duration::seconds(10));
    store.create_challenge(&late).await.unwrap();
    let expired = store
        .take_challenge(&owner(), &late.id, SessionId::new(), late.expires_at)
        .await
        .unwrap();
    assert_eq!(expired, Err(ChallengeRefusal::Expired));

    // Only the expired one goes.
    let purged = store
        .purge_challenges(late.expires_at + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(store.challenge(&owner(), &late.id).await.unwrap().is_none());
    assert!(
        store
            .challenge(&owner(), &challenge.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&sqlite_in(&dir)).await.unwrap();
    challenges_are_taken_once(&store).await;
}

#[tokio::test]
async fn in_memory() {
    challenges_are_taken_once(&MemoryStore::new(10)).await;
}
