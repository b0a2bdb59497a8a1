//! The outbox and deliveries, the same on the SQL store (SQLite here; PostgreSQL through the API
//! tests) and the memory store: a completion writes a message only for a tenant with an enabled
//! endpoint; a claim is exclusive until released or recorded; an attempt is recorded only
//! under its claim; finished messages are purged and pending ones are not.

use chrono::{Duration, SubsecRound, Utc};

use super::fixtures::{approved, closing, endpoint, owner, running, sqlite_in};
use super::{MemoryStore, SessionStore, SqlStore, WebhookStore};
use crate::domain::{Attempt, AttemptOutcome, DeliveryState, Endpoint, SessionId};

async fn complete_one(store: &dyn SessionStore) -> SessionId {
    let id = SessionId::new();
    store.insert(&running(id), None).await.unwrap();
    store.complete(id, &approved(), &closing(1)).await.unwrap();
    id
}

async fn the_outbox_flows(sessions: &dyn SessionStore, webhooks: &dyn WebhookStore) {
    complete_one(sessions).await;
    assert!(
        webhooks.unrouted(10).await.unwrap().is_empty(),
        "no endpoint, no message"
    );
    let endpoint = endpoint("session.completed");
    webhooks.create_endpoint(&endpoint).await.unwrap();
    let read_at = endpoint.updated_at;
    let first = Endpoint {
        description: "first".into(),
        updated_at: read_at + Duration::seconds(1),
        ..endpoint.clone()
    };
    let stale = Endpoint {
        description: "stale".into(),
        updated_at: read_at + Duration::seconds(2),
        ..endpoint.clone()
    };
    assert!(webhooks.update_endpoint(&first, read_at).await.unwrap());
    assert!(
        !webhooks.update_endpoint(&stale, read_at).await.unwrap(),
        "a change made on an older read is refused"
    );
    let stored = webhooks
        .endpoint(&owner(), &endpoint.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.description, "first");
    let session = complete_one(sessions).await;

    let outbox = webhooks.unrouted(10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].session_id, session);
    assert_eq!(outbox[0].seq, 1);
    // Microseconds: what the SQL store keeps of a time.
    let now = Utc::now().trunc_subsecs(6);
    let message = &outbox[0].id;
    webhooks
        .route(message, "{}", std::slice::from_ref(&endpoint.id), now)
        .await
        .unwrap();
    webhooks
        .route(message, "{}", std::slice::from_ref(&endpoint.id), now)
        .await
        .unwrap();
    assert!(webhooks.unrouted(10).await.unwrap().is_empty());

    let lease = now + Duration::seconds(60);
    let claimed = webhooks
        .claim_due(now, "a", lease, &[], 4, 10)
        .await
        .unwrap();
    let again = webhooks
        .claim_due(now, "b", lease, &[], 4, 10)
        .await
        .unwrap();
    let skipped = webhooks
        .claim_due(
            now + Duration::seconds(61),
            "c",
            lease,
            std::slice::from_ref(&endpoint.id),
            4,
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one delivery, routed twice");
    assert!(again.is_empty(), "claimed already");
    assert!(skipped.is_empty(), "its endpoint is skipped");
    let due = &claimed[0];
    assert_eq!((due.attempts, due.payload.as_str()), (0, "{}"));
    assert_eq!(due.owner, owner());

    let attempt = Attempt {
        attempt: 1,
        at: now,
        status_code: Some(204),
        latency_ms: 3.0,
        error: None,
    };
    let delivered = AttemptOutcome::Delivered;
    assert!(
        !webhooks
            .record_attempt(due, "b", &attempt, &delivered)
            .await
            .unwrap()
    );
    assert!(
        webhooks
            .record_attempt(due, "a", &attempt, &delivered)
            .await
            .unwrap()
    );
    let listed = webhooks.deliveries(&endpoint.id, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, DeliveryState::Delivered);
    assert_eq!(listed[0].attempts, [attempt]);

    let pending_session = complete_one(sessions).await;
    let pending = webhooks.unrouted(10).await.unwrap();
    assert_eq!(pending[0].session_id, pending_session);
    webhooks
        .route(
            &pending[0].id,
            "{}",
            std::slice::from_ref(&endpoint.id),
            now,
        )
        .await
        .unwrap();
    let later = now + Duration::days(2);
    assert_eq!(
        webhooks.purge_webhooks(later, 100).await.unwrap(),
        1,
        "only the delivered one"
    );
    assert_eq!(
        webhooks.deliveries(&endpoint.id, 10).await.unwrap().len(),
        1
    );
    assert_eq!(webhooks.backlog().await.unwrap().pending, 1);

    for _ in 0..3 {
        complete_one(sessions).await;
    }
    for message in webhooks.unrouted(10).await.unwrap() {
        let to = std::slice::from_ref(&endpoint.id);
        webhooks.route(&message.id, "{}", to, now).await.unwrap();
    }
    let capped = webhooks
        .claim_due(now, "d", lease, &[], 2, 10)
        .await
        .unwrap();
    assert_eq!(capped.len(), 2, "at most two to one endpoint, of four due");
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&sqlite_in(&dir)).await.unwrap();
    the_outbox_flows(&store, &store).await;
}

#[tokio::test]
async fn in_memory() {
    let store = MemoryStore::new(100);
    the_outbox_flows(&store, &store).await;
}
