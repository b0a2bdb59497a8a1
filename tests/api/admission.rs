//! Admission control: a bounded number of running sessions, refused fast beyond it.

use serde_json::{Value, json};

use crate::helpers::{HOUR_MS, session_body, spawn_app_with};

fn hanging() -> Value {
    session_body(json!({ "liveness": { "result": "hang" } }))
}

#[tokio::test(start_paused = true)]
async fn past_the_limit_new_sessions_get_503_with_retry_after_and_health_still_answers() {
    let app = spawn_app_with(|s| {
        s.server.max_inflight_sessions = 2;
        s.server.retry_after_s = 3;
        s.orchestrator.session_deadline_ms = HOUR_MS;
    })
    .await;
    app.start_session(&hanging()).await;
    app.start_session(&hanging()).await;

    let refused = app.post_session(&session_body(json!({}))).await;

    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "3");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "urn:kyc-orchestrator:problem:overloaded");
    assert_eq!(app.get("/health").await.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "saturated");
    assert_eq!(ready["running_sessions"], 2);
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_applied_before_the_body_is_read() {
    let app = spawn_app_with(|s| {
        s.server.max_inflight_sessions = 1;
        s.orchestrator.session_deadline_ms = HOUR_MS;
    })
    .await;
    app.start_session(&hanging()).await;

    // Garbage that would be a 415 if it were looked at.
    let refused = app.post_raw("text/plain", "not even json").await;

    assert_eq!(refused.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_completed_session_frees_its_slot() {
    let app = spawn_app_with(|s| s.server.max_inflight_sessions = 1).await;
    let first = app.start_session(&session_body(json!({}))).await;
    assert_eq!(
        app.post_session(&session_body(json!({}))).await.status(),
        503
    );

    app.events(&first, None).await;

    let next = app.post_session(&session_body(json!({}))).await;
    assert_eq!(next.status(), 202);
}
