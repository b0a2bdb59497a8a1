//! Capture links, the same on the SQL store (SQLite here) and the memory store: found by their
//! token's hash with every field as made, used once, refused once expired, and purged after.

use chrono::{Duration, SubsecRound, Utc};

use super::fixtures::{principal, sqlite_in};
use super::{CaptureStore, MemoryStore, SqlStore};
use crate::domain::{
    CaptureLink, CaptureLinkId, CaptureToken, ChallengeId, Claimed, DocumentType, SessionId,
};

fn made(ttl: Duration) -> CaptureLink {
    // Microseconds, as the SQL store keeps them.
    let now = Utc::now().trunc_subsecs(6);
    let by = principal();
    CaptureLink {
        id: CaptureLinkId::generate(),
        token_hash: CaptureToken::generate().hash(),
        owner: by.owner,
        created_by: by.key_id,
        reference: Some("applicant-7".into()),
        document_type: DocumentType::IdCard,
        claimed: Some(Claimed {
            surname: Some("Eriksson".into()),
            date_of_birth: "1974-08-12".parse().ok(),
            ..Claimed::default()
        }),
        redirect_url: Some("https://bank.example/done".into()),
        challenge_id: None,
        created_at: now,
        expires_at: now + ttl,
        used_by: None,
    }
}

async fn links_are_used_once(store: &dyn CaptureStore) {
    let link = made(Duration::minutes(30));
    store.create_capture_link(&link).await.unwrap();
    let now = link.created_at;

    assert_eq!(
        store.capture_link(&link.token_hash).await.unwrap(),
        Some(link.clone())
    );
    assert_eq!(
        store
            .capture_link(&CaptureToken::generate().hash())
            .await
            .unwrap(),
        None
    );

    let challenge = ChallengeId::generate();
    store
        .set_capture_challenge(&link.id, &challenge)
        .await
        .unwrap();
    let read = store.capture_link(&link.token_hash).await.unwrap().unwrap();
    assert_eq!(read.challenge_id, Some(challenge.clone()));

    let session = SessionId::new();
    assert!(
        store
            .use_capture_link(&link.id, session, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_capture_link(&link.id, SessionId::new(), now)
            .await
            .unwrap()
    );
    let read = store.capture_link(&link.token_hash).await.unwrap().unwrap();
    assert_eq!(read.used_by, Some(session));
    // The session holds the integrator's data now; the link keeps none of it.
    assert_eq!((read.reference, read.claimed), (None, None));
    // A used link takes no other challenge.
    store
        .set_capture_challenge(&link.id, &ChallengeId::generate())
        .await
        .unwrap();
    let read = store.capture_link(&link.token_hash).await.unwrap().unwrap();
    assert_eq!(read.challenge_id, Some(challenge));

    let late = made(Duration::seconds(10));
    store.create_capture_link(&late).await.unwrap();
    assert!(
        !store
            .use_capture_link(&late.id, SessionId::new(), late.expires_at)
            .await
            .unwrap()
    );

    // Only the expired one goes.
    let purged = store
        .purge_capture_links(late.expires_at + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(
        store
            .capture_link(&late.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .capture_link(&link.token_hash)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&sqlite_in(&dir)).await.unwrap();
    links_are_used_once(&store).await;
}

#[tokio::test]
async fn in_memory() {
    links_are_used_once(&MemoryStore::new(10)).await;
}
