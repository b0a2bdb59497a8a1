//! Manual review through the API: the queue, decisions, `automated_decision`, the audit trail in
//! the event log, four-eyes with several keys of one tenant, every refusal, tenant isolation,
//! erasure after review, and (on SQLite and PostgreSQL) two instances deciding one session at
//! once.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::durable::{Backend, TestStore};
use crate::helpers::{TestApp, client_with, spawn_app, spawn_app_with};
use kyc_orchestrator::auth::NewKey;
use kyc_orchestrator::domain::{Mode, Scope, Scopes};

/// A session the sandbox agents send to review (`too_blurry`, a code no policy declines on),
/// every agent without delay.
fn to_review() -> Value {
    crate::helpers::session_body(json!({
        "liveness": { "latency_ms": 0 },
        "doc_capture": { "latency_ms": 0, "result": "fail", "reason": "too_blurry" },
        "ocr": { "latency_ms": 0 },
        "face_match": { "latency_ms": 0 },
    }))
}

/// Runs a session to its end on `app` (streamed) and returns its id and decision.
async fn run(app: &TestApp, body: &Value) -> (String, String) {
    let events = app.stream_session(body).await;
    let done = crate::helpers::completion(&events);
    (
        done["session_id"].as_str().unwrap().to_owned(),
        done["decision"].as_str().unwrap().to_owned(),
    )
}

async fn in_review(app: &TestApp) -> String {
    let (id, decision) = run(app, &to_review()).await;
    assert_eq!(decision, "review");
    id
}

/// A key of the app's tenant (or `tenant`) with `scopes` and `label`, and a client sending it;
/// returns the key's public id too.
async fn reviewer(app: &TestApp, tenant: &str, scopes: Scopes, label: &str) -> (Client, String) {
    let (key, record) = app
        .keys
        .create(NewKey {
            scopes,
            label: Some(label.to_owned()),
            ..NewKey::new(tenant.parse().unwrap(), Mode::Test)
        })
        .await
        .unwrap();
    (client_with(&key), record.id.to_string())
}

async fn decide(app: &TestApp, client: &Client, id: &str, body: Value) -> (StatusCode, Value) {
    let response = client
        .post(app.url(&format!("/v1/sessions/{id}/review")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn get_json(client: &Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["session_id"].as_str().unwrap())
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_queue_lists_reviews_oldest_first_and_a_decision_resolves_one() {
    let app = spawn_app().await;
    let (a, b, c) = (
        in_review(&app).await,
        in_review(&app).await,
        in_review(&app).await,
    );
    let (_, approved) = run(&app, &crate::helpers::session_body(json!({}))).await;
    assert_eq!(approved, "approved", "not in the queue");

    let queue = get_json(&app.client, app.url("/v1/reviews")).await;
    assert_eq!(ids(&queue), [a.as_str(), b.as_str(), c.as_str()]);
    let first = &queue["data"][0];
    assert_eq!(first["status"], "open");
    assert_eq!(first["reasons"], json!(["too_blurry"]));
    assert_eq!(first["reference"], "test-ref-1");
    assert_eq!(first["decisions"], json!([]));
    assert!(first["age_seconds"].is_u64() && first["opened_at"].is_string());
    let page = get_json(&app.client, app.url("/v1/reviews?limit=2")).await;
    assert_eq!(ids(&page), [a.as_str(), b.as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get_json(
        &app.client,
        app.url(&format!("/v1/reviews?limit=2&cursor={cursor}")),
    )
    .await;
    assert_eq!(ids(&rest), [c.as_str()]);
    assert!(rest.get("next_cursor").is_none());

    let (alice, alice_id) = reviewer(&app, "acme", Scopes::All, "alice@acme").await;
    let (status, session) = decide(
        &app,
        &alice,
        &b,
        json!({
            "decision": "approved",
            "reasons": ["document_verified_manually", "document_verified_manually"],
            "note": "Compared with the issuer's specimen.",
        }),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["decision"], "approved");
    assert_eq!(session["reasons"], json!(["document_verified_manually"]));
    assert_eq!(session["automated_decision"], "review");
    assert_eq!(session["automated_reasons"], json!(["too_blurry"]));
    assert_eq!(session["review"]["status"], "resolved");
    let decision = &session["review"]["decisions"][0];
    assert_eq!(decision["reviewer"]["key_id"], alice_id);
    assert_eq!(decision["reviewer"]["label"], "alice@acme");
    assert_eq!(decision["decision"], "approved");
    assert_eq!(decision["note"], "Compared with the issuer's specimen.");
    assert_eq!(
        app.get_session(&b).await.json::<Value>().await.unwrap(),
        session,
        "GET shows the same"
    );

    // The event log is the whole history, without a gap; replay picks the review up.
    let events = app.events(&b, None).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let kinds = types(&events);
    assert_eq!(
        kinds[kinds.len() - 4..],
        [
            "session.completed",
            "review.opened",
            "review.decided",
            "review.resolved"
        ]
    );
    let completed = events[events.len() - 4]["seq"].as_u64().unwrap();
    let review_events = app.events(&b, Some(completed)).await;
    assert_eq!(
        types(&review_events),
        ["review.opened", "review.decided", "review.resolved"]
    );
    assert_eq!(review_events[0]["reasons"], json!(["too_blurry"]));
    assert_eq!(review_events[1]["reviewer"]["key_id"], alice_id);
    assert_eq!(review_events[1]["status"], "resolved");
    assert_eq!(review_events[2]["decision"], "approved");

    let queue = get_json(&app.client, app.url("/v1/reviews")).await;
    assert_eq!(ids(&queue), [a.as_str(), c.as_str()]);
    let resolved = get_json(&app.client, app.url("/v1/reviews?status=resolved")).await;
    assert_eq!(ids(&resolved), [b.as_str()]);
    assert_eq!(
        resolved["data"][0]["decisions"][0]["reviewer"]["key_id"],
        alice_id
    );
    // The list filters and shows the decision as it stands.
    let listed = get_json(&app.client, app.url("/v1/sessions?decision=approved")).await;
    let item = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == b.as_str())
        .expect("the reviewed session is approved now");
    assert_eq!(item["review_status"], "resolved");

    let (status, problem) = decide(
        &app,
        &alice,
        &b,
        json!({ "decision": "declined", "reasons": ["document_fraud"] }),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:not-in-review"
    );
    assert!(app.metrics().await.contains("kyc_review_decisions_total"));
}

#[tokio::test]
async fn every_bad_decision_is_refused_clearly() {
    let app = spawn_app().await;
    let id = in_review(&app).await;
    let (approved, _) = run(&app, &crate::helpers::session_body(json!({}))).await;
    let ok = json!({ "decision": "approved", "reasons": ["verified_manually"] });

    let invalid = [
        (
            json!({ "decision": "review", "reasons": ["verified_manually"] }),
            "decision",
        ),
        (json!({ "decision": "approved", "reasons": [] }), "reasons"),
        (
            json!({ "decision": "approved", "reasons": ["not_a_code_we_know"] }),
            "reasons",
        ),
        (json!({ "decision": "approved" }), "body"),
        (
            json!({ "decision": "approved", "reasons": ["verified_manually"], "note": "x".repeat(2001) }),
            "note",
        ),
        (
            json!({ "decision": "approved", "reasons": ["verified_manually"], "reviewer": "mallory" }),
            "reviewer",
        ),
    ];
    for (body, field) in invalid {
        let (status, problem) = decide(&app, &app.client, &id, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        assert!(
            !problem.to_string().contains("not_a_code_we_know"),
            "the input is not echoed: {problem}"
        );
    }
    let response = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/review")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let (status, problem) = decide(&app, &app.client, &approved, ok.clone()).await;
    assert_eq!(status, 409, "not in review: {problem}");
    let running = app
        .start_session(&crate::helpers::session_body(
            json!({ "ocr": { "latency_ms": 60000 } }),
        ))
        .await;
    let (status, problem) = decide(&app, &app.client, &running, ok.clone()).await;
    assert_eq!(status, 409, "still running: {problem}");
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:not-in-review"
    );
    for unknown in ["00000000-0000-7000-8000-000000000000", "not-an-id"] {
        let (status, _) = decide(&app, &app.client, unknown, ok.clone()).await;
        assert_eq!(status, 404);
    }

    // Scopes: deciding needs reviews:write, the queue sessions:read.
    let (reader, _) = reviewer(&app, "acme", Scopes::only([Scope::SessionsRead]), "r").await;
    let (status, problem) = decide(&app, &reader, &id, ok.clone()).await;
    assert_eq!(status, 403, "{problem}");
    let (writer, _) = reviewer(&app, "acme", Scopes::only([Scope::ReviewsWrite]), "w").await;
    let response = writer.get(app.url("/v1/reviews")).send().await.unwrap();
    assert_eq!(response.status(), 403);

    // Another tenant sees no queue and cannot decide: the session is as unknown as any.
    let (other, _) = reviewer(&app, "globex", Scopes::All, "g").await;
    let queue = get_json(&other, app.url("/v1/reviews")).await;
    assert_eq!(queue["data"], json!([]));
    let (status, _) = decide(&app, &other, &id, ok.clone()).await;
    assert_eq!(status, 404);

    for bad in [
        "status=closed",
        "limit=0",
        "limit=101",
        "cursor=nope",
        "colour=red",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/reviews?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    // A note of exactly the limit is kept; the case was never touched by the refusals.
    let (status, session) = decide(
        &app,
        &app.client,
        &id,
        json!({ "decision": "declined", "reasons": ["face_mismatch"], "note": "é".repeat(2000) }),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["review"]["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(
        session["decision"], "declined",
        "an agent's code is a reason too"
    );
}

#[tokio::test]
async fn four_eyes_needs_a_second_reviewer_to_agree() {
    let app = spawn_app_with(|s| s.review.four_eyes = true).await;
    let id = in_review(&app).await;
    let (alice, _) = reviewer(&app, "acme", Scopes::All, "alice").await;
    let (bob, bob_id) = reviewer(&app, "acme", Scopes::All, "bob").await;
    let (carol, carol_id) = reviewer(&app, "acme", Scopes::All, "carol").await;
    let approve = |reason: &str| json!({ "decision": "approved", "reasons": [reason] });

    let (status, session) = decide(&app, &alice, &id, approve("verified_manually")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["review"]["status"], "pending_second");
    assert_eq!(session["decision"], "review", "not final yet");
    let pending = get_json(&app.client, app.url("/v1/reviews?status=pending_second")).await;
    assert_eq!(ids(&pending), [id.as_str()]);

    let (status, problem) = decide(&app, &alice, &id, approve("verified_manually")).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:same-reviewer"
    );

    // Bob disagrees: back to open, both decisions kept.
    let (status, session) = decide(
        &app,
        &bob,
        &id,
        json!({ "decision": "declined", "reasons": ["document_fraud"] }),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["review"]["status"], "open");
    assert_eq!(session["review"]["decisions"].as_array().unwrap().len(), 2);

    // Bob decides first this time; a rotated key of his is still Bob.
    let (status, _) = decide(&app, &bob, &id, approve("document_verified_manually")).await;
    assert_eq!(status, 200);
    let (rotated, _) = app
        .keys
        .rotate(&bob_id.parse().unwrap(), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let (status, problem) = decide(
        &app,
        &client_with(&rotated),
        &id,
        approve("verified_manually"),
    )
    .await;
    assert_eq!(
        status, 403,
        "a rotation does not make a second reviewer: {problem}"
    );

    let (status, session) = decide(&app, &carol, &id, approve("face_verified_manually")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["review"]["status"], "resolved");
    assert_eq!(session["decision"], "approved");
    assert_eq!(
        session["reasons"],
        json!(["document_verified_manually", "face_verified_manually"]),
        "both agreeing reviewers' reasons"
    );
    let reviewers: Vec<&str> = session["review"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reviewer"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(reviewers, ["alice", "bob", "bob", "carol"]);
    assert_eq!(
        session["review"]["decisions"][3]["reviewer"]["key_id"],
        carol_id
    );

    let events = app.events(&id, None).await;
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "review.decided")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["pending_second", "open", "pending_second", "resolved"]
    );
    assert_eq!(types(&events).last(), Some(&"review.resolved"));
}

/// Two instances on one database, two reviewers deciding the same sessions at the same moment:
/// exactly one decision of each pair is stored, the other is told `409`. Then an erasure clears
/// the note and keeps who decided what.
async fn two_instances_deciding_at_once_store_exactly_one(backend: Backend) {
    let store = TestStore::new(backend).await;
    let one = spawn_app_with(|s| store.configure(s)).await;
    let two = spawn_app_with(|s| store.configure(s)).await;
    let (alice, _) = reviewer(&one, "acme", Scopes::All, "alice").await;
    let (bob, _) = reviewer(&one, "acme", Scopes::All, "bob").await;

    for _ in 0..5 {
        let id = in_review(&one).await;
        let note = |who: &str| json!({ "decision": "declined", "reasons": ["document_fraud"], "note": format!("seen by {who}") });
        let ((first, _), (second, _)) = tokio::join!(
            decide(&one, &alice, &id, note("alice")),
            decide(&two, &bob, &id, note("bob")),
        );
        let mut statuses = [first.as_u16(), second.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "exactly one wins");
        let session = one.get_session(&id).await.json::<Value>().await.unwrap();
        assert_eq!(session["review"]["decisions"].as_array().unwrap().len(), 1);
        let events = two.events(&id, None).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            types(&events)
                .iter()
                .filter(|t| **t == "review.decided")
                .count(),
            1
        );

        let erased = two
            .client
            .delete(two.url(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(erased.status(), 204);
        let session = one.get_session(&id).await.json::<Value>().await.unwrap();
        let decision = &session["review"]["decisions"][0];
        assert!(decision.get("note").is_none(), "{decision}");
        assert_eq!(decision["decision"], "declined");
        assert!(decision["reviewer"]["key_id"].is_string());
        assert_eq!(session["decision"], "declined");
        let events = one.events(&id, None).await;
        assert!(
            !events.iter().any(|e| e.to_string().contains("seen by")),
            "no note left in the history"
        );
        // After the erasure a decision takes no note (the case is resolved anyway).
        let (status, _) = decide(&one, &alice, &id, note("alice")).await;
        assert_eq!(status, 409);
    }
}

on_every_backend!(two_instances_deciding_at_once_store_exactly_one);

#[tokio::test(start_paused = true)]
async fn open_reviews_and_the_oldest_ones_age_are_in_the_metrics() {
    let app = spawn_app().await;
    in_review(&app).await;
    in_review(&app).await;
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;

    let metrics = crate::helpers::eventually(
        "the review gauges sampled",
        std::time::Duration::from_secs(120),
        || async {
            let metrics = app.metrics().await;
            metrics
                .contains(r#"kyc_reviews_open{status="open"} 2"#)
                .then_some(metrics)
        },
    )
    .await;
    assert!(metrics.contains(r#"kyc_reviews_open{status="pending_second"} 0"#));
    let age = metrics
        .lines()
        .find_map(|line| line.strip_prefix("kyc_reviews_oldest_age_seconds "));
    assert!(
        age.is_some_and(|age| age.parse::<f64>().is_ok()),
        "the age gauge: {metrics}"
    );
}

#[tokio::test]
async fn the_reasons_a_reviewer_may_give_are_listed_configured_first() {
    let app = spawn_app_with(|s| {
        s.review.reasons = vec!["verified_manually".into(), "watchlist_match".into()];
    })
    .await;

    let listed: Value = app.get("/v1/reviews/reasons").await.json().await.unwrap();

    let reasons: Vec<&str> = listed["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons[..2], ["verified_manually", "watchlist_match"]);
    // Then the agents' own codes, which a reviewer may repeat.
    assert!(reasons.contains(&"liveness_failed"), "{reasons:?}");
    assert!(!reasons.contains(&"document_fraud"), "{reasons:?}");
    let id = in_review(&app).await;
    let (status, _) = decide(
        &app,
        &app.client,
        &id,
        json!({ "decision": "declined", "reasons": ["document_fraud"] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "not in the list");
}
