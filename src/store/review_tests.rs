//! Review cases, the same on the SQL store (SQLite here; PostgreSQL through the API tests) and
//! the memory store: a `review` completion opens a case; a decision lands only on the case as it
//! was read; a resolution replaces the session's decision and keeps the agents'; the queue is
//! oldest first, by status, a page at a time, per owner; an erasure clears notes alone.

use bytes::Bytes;
use chrono::{Duration, SubsecRound, Utc};

use super::fixtures::{closing, endpoint, owner, running, sqlite_in};
use super::{
    Closing, Completion, Decided, EventRecord, Expiry, MemoryStore, ReviewStore, ReviewWrite,
    SessionStore, SqlStore, WebhookStore,
};
use crate::domain::{
    Decision, Erasure, Mode, Owner, QueuePosition, Resolution, ReviewDecision, ReviewQuery,
    ReviewStatus, Reviewer, SessionId, Verdict,
};

fn line(seq: u64, body: serde_json::Value) -> EventRecord {
    let mut event = serde_json::json!({ "seq": seq });
    event
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    let mut line = serde_json::to_vec(&event).unwrap();
    line.push(b'\n');
    EventRecord {
        seq,
        terminal: false,
        line: Bytes::from(line),
    }
}

/// Completes a fresh session of `owner` as `review` (events 1 and 2), opened at `at`.
async fn in_review(
    store: &dyn SessionStore,
    owner: &Owner,
    at: chrono::DateTime<Utc>,
) -> SessionId {
    let id = SessionId::new();
    let mut record = running(id);
    record.owner = owner.clone();
    store.insert(&record, None).await.unwrap();
    let completion = Completion {
        completed_at: at,
        decision: Decision::Review,
        reasons: vec!["face_mismatch".into()],
        checks: Default::default(),
        duration_ms: 1.0,
    };
    let closing = Closing {
        before: Vec::new(),
        terminal: EventRecord {
            terminal: true,
            ..line(1, serde_json::json!({ "type": "session.completed" }))
        },
        review: Some(line(2, serde_json::json!({ "type": "review.opened" }))),
    };
    store.complete(id, &completion, &closing).await.unwrap();
    id
}

fn decision(seq: u64, verdict: Verdict, note: Option<&str>) -> ReviewDecision {
    ReviewDecision {
        seq,
        reviewer: Reviewer {
            key_id: "key_reviewer1".parse().unwrap(),
            label: Some("alice".into()),
        },
        // Microseconds: what the SQL store keeps of a time.
        decided_at: Utc::now().trunc_subsecs(6),
        verdict,
        reasons: vec!["verified_manually".into()],
        note: note.map(str::to_owned),
    }
}

fn decided(seq: u64, note: Option<&str>) -> EventRecord {
    line(
        seq,
        serde_json::json!({ "type": "review.decided", "decision": "approved", "note": note }),
    )
}

async fn reviews_work(sessions: &dyn SessionStore, reviews: &dyn ReviewStore) {
    let opened_at = Utc::now().trunc_subsecs(6);
    let first = in_review(sessions, &owner(), opened_at - Duration::seconds(30)).await;
    let second = in_review(sessions, &owner(), opened_at - Duration::seconds(20)).await;
    let other_owner = Owner {
        mode: Mode::Live,
        ..owner()
    };
    // Another owner's case: out of the queue below, in the metrics' backlog.
    in_review(sessions, &other_owner, opened_at - Duration::seconds(40)).await;
    // A session its agents approved has no case.
    let plain = SessionId::new();
    sessions.insert(&running(plain), None).await.unwrap();
    sessions
        .complete(plain, &super::fixtures::approved(), &closing(1))
        .await
        .unwrap();
    assert_eq!(sessions.get(plain).await.unwrap().unwrap().review, None);

    let record = sessions.find(&owner(), first).await.unwrap().unwrap();
    let state = record
        .review
        .clone()
        .expect("a review completion opens a case");
    assert_eq!(state.status, ReviewStatus::Open);
    assert_eq!(state.automated_reasons, ["face_mismatch"]);
    assert_eq!((state.opened_seq, state.last_seq), (2, 2));

    let waiting = ReviewQuery {
        statuses: vec![ReviewStatus::Open, ReviewStatus::PendingSecond],
        after: None,
        limit: 10,
    };
    let queue = reviews.reviews(&owner(), &waiting).await.unwrap();
    let ids: Vec<SessionId> = queue.iter().map(|case| case.session_id).collect();
    assert_eq!(ids, [first, second], "oldest first, the owner's alone");
    let page = ReviewQuery {
        after: Some(QueuePosition {
            opened_at: queue[0].state.opened_at,
            session_id: first,
        }),
        limit: 1,
        ..waiting.clone()
    };
    let next: Vec<SessionId> = reviews
        .reviews(&owner(), &page)
        .await
        .unwrap()
        .iter()
        .map(|case| case.session_id)
        .collect();
    assert_eq!(next, [second]);

    // Retention leaves a case waiting for a decision alone, and takes it once resolved.
    let later = Utc::now() + Duration::days(1);
    let held_since = Utc::now() - Duration::days(90);
    for what in [Expiry::Images, Expiry::PersonalData] {
        let due = sessions.expired(what, later, held_since, 10).await.unwrap();
        assert!(due.contains(&plain), "{what:?}");
        assert!(
            !due.contains(&first),
            "{what:?}: evidence kept while in review"
        );
        let long_ago = sessions.expired(what, later, later, 10).await.unwrap();
        assert!(
            long_ago.contains(&first),
            "{what:?}: held no longer than the hold"
        );
    }

    // A first decision under four-eyes: pending, no resolution.
    let pending = ReviewWrite {
        read_seq: 2,
        decision: decision(3, Verdict::Approved, Some("called the applicant")),
        status: ReviewStatus::PendingSecond,
        resolution: None,
        events: vec![decided(3, Some("called the applicant"))],
    };
    assert_eq!(
        reviews.decide(&other_owner, first, &pending).await.unwrap(),
        Decided::Moved,
        "another owner's session is out of reach"
    );
    assert_eq!(
        reviews.decide(&owner(), first, &pending).await.unwrap(),
        Decided::Stored
    );
    assert_eq!(
        reviews.decide(&owner(), first, &pending).await.unwrap(),
        Decided::Moved,
        "a decision made on a case read before the last one is refused"
    );
    // The second resolves it.
    let resolved_at = Utc::now().trunc_subsecs(6);
    let resolving = ReviewWrite {
        read_seq: 3,
        decision: decision(4, Verdict::Approved, None),
        status: ReviewStatus::Resolved,
        resolution: Some(Resolution {
            verdict: Verdict::Approved,
            reasons: vec!["verified_manually".into()],
            resolved_at,
        }),
        events: vec![
            decided(4, None),
            line(5, serde_json::json!({ "type": "review.resolved" })),
        ],
    };
    assert_eq!(
        reviews.decide(&owner(), first, &resolving).await.unwrap(),
        Decided::Stored
    );

    let record = sessions.find(&owner(), first).await.unwrap().unwrap();
    let completion = record.completion.as_ref().unwrap();
    assert_eq!(completion.decision, Decision::Approved);
    assert_eq!(completion.reasons, ["verified_manually"]);
    let (automated, automated_reasons) = record.automated().unwrap();
    assert_eq!(automated, Decision::Review);
    assert_eq!(automated_reasons, ["face_mismatch"]);
    let state = record.review.unwrap();
    assert_eq!(state.status, ReviewStatus::Resolved);
    assert_eq!(state.resolved_at, Some(resolved_at));
    assert_eq!(state.last_seq, 5);
    let seqs: Vec<u64> = sessions
        .events_after(first, 0)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "the review continues the sequence");
    let decisions = reviews.review_decisions(first).await.unwrap();
    assert_eq!(
        decisions,
        [pending.decision.clone(), resolving.decision.clone()]
    );

    let due = sessions
        .expired(Expiry::Images, later, held_since, 10)
        .await
        .unwrap();
    assert!(due.contains(&first), "resolved: retention applies again");

    let resolved = ReviewQuery {
        statuses: vec![ReviewStatus::Resolved],
        ..waiting.clone()
    };
    let done = reviews.reviews(&owner(), &resolved).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].decisions.len(), 2);
    let backlog = reviews.review_backlog().await.unwrap();
    assert_eq!(
        (backlog.open, backlog.pending_second),
        (2, 0),
        "second and theirs"
    );
    assert_eq!(backlog.oldest, Some(opened_at - Duration::seconds(40)));

    // Erasure clears the note, in the decision and in its event, and nothing else.
    assert_eq!(
        sessions
            .erase(first, Some(&owner()), None, Utc::now())
            .await
            .unwrap(),
        Erasure::Erased
    );
    let decisions = reviews.review_decisions(first).await.unwrap();
    assert_eq!(decisions[0].note, None);
    assert_eq!(decisions[0].reviewer, pending.decision.reviewer);
    assert_eq!(decisions[0].verdict, Verdict::Approved);
    let events = sessions.events_after(first, 2).await.unwrap().unwrap();
    let text = String::from_utf8(events[0].line.to_vec()).unwrap();
    assert!(!text.contains("called the applicant"), "{text}");
    assert!(text.contains("review.decided"), "{text}");

    // A decision with a note on a session erased since it was read is not stored; one without
    // a note is.
    sessions
        .erase(second, Some(&owner()), None, Utc::now())
        .await
        .unwrap();
    let noted = ReviewWrite {
        read_seq: 2,
        decision: decision(3, Verdict::Declined, Some("a name")),
        status: ReviewStatus::Resolved,
        resolution: Some(Resolution {
            verdict: Verdict::Declined,
            reasons: vec!["document_fraud".into()],
            resolved_at: Utc::now().trunc_subsecs(6),
        }),
        events: vec![decided(3, Some("a name"))],
    };
    assert_eq!(
        reviews.decide(&owner(), second, &noted).await.unwrap(),
        Decided::Erased
    );
    assert!(reviews.review_decisions(second).await.unwrap().is_empty());
    let plain_write = ReviewWrite {
        decision: decision(3, Verdict::Declined, None),
        events: vec![decided(3, None)],
        ..noted
    };
    assert_eq!(
        reviews
            .decide(&owner(), second, &plain_write)
            .await
            .unwrap(),
        Decided::Stored
    );
}

/// A session an instance of an earlier version completed as `review` (no `review.opened`, no
/// case) gets its case from the periodic look-up, once.
async fn missing_cases_are_opened(sessions: &dyn SessionStore, reviews: &dyn ReviewStore) {
    let id = SessionId::new();
    sessions.insert(&running(id), None).await.unwrap();
    let completion = Completion {
        completed_at: Utc::now().trunc_subsecs(6),
        decision: Decision::Review,
        reasons: vec!["too_blurry".into()],
        checks: Default::default(),
        duration_ms: 1.0,
    };
    sessions
        .complete(id, &completion, &closing(4))
        .await
        .unwrap();
    assert_eq!(sessions.get(id).await.unwrap().unwrap().review, None);

    assert_eq!(reviews.open_missing_cases().await.unwrap(), 1);
    assert_eq!(reviews.open_missing_cases().await.unwrap(), 0, "once");
    let state = sessions.get(id).await.unwrap().unwrap().review.unwrap();
    assert_eq!(state.status, ReviewStatus::Open);
    assert_eq!(state.automated_reasons, ["too_blurry"]);
    assert_eq!((state.opened_seq, state.last_seq), (0, 4));
}

async fn a_resolution_writes_its_message(
    sessions: &dyn SessionStore,
    reviews: &dyn ReviewStore,
    webhooks: &dyn WebhookStore,
) {
    let now = Utc::now().trunc_subsecs(6);
    webhooks
        .create_endpoint(&endpoint("session.reviewed"))
        .await
        .unwrap();
    let id = in_review(sessions, &owner(), now).await;
    let write = ReviewWrite {
        read_seq: 2,
        decision: decision(3, Verdict::Declined, None),
        status: ReviewStatus::Resolved,
        resolution: Some(Resolution {
            verdict: Verdict::Declined,
            reasons: vec!["document_fraud".into()],
            resolved_at: now,
        }),
        events: vec![
            decided(3, None),
            line(4, serde_json::json!({ "type": "review.resolved" })),
        ],
    };
    assert_eq!(
        reviews.decide(&owner(), id, &write).await.unwrap(),
        Decided::Stored
    );
    let messages = webhooks.unrouted(10).await.unwrap();
    let types: Vec<(&str, u64)> = messages
        .iter()
        .filter(|m| m.session_id == id)
        .map(|m| (m.event_type.as_str(), m.seq))
        .collect();
    assert_eq!(
        types,
        [("session.completed", 1), ("session.reviewed", 4)],
        "the completion's message, then the review's at its review.resolved"
    );
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&sqlite_in(&dir)).await.unwrap();
    reviews_work(&store, &store).await;
    a_resolution_writes_its_message(&store, &store, &store).await;
    missing_cases_are_opened(&store, &store).await;
}

#[tokio::test]
async fn in_memory() {
    let store = MemoryStore::new(100);
    reviews_work(&store, &store).await;
    a_resolution_writes_its_message(&store, &store, &store).await;
}
