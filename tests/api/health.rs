//! Health, readiness, metrics and request ids.

use serde_json::{Value, json};

use crate::helpers::{session_body, spawn_app};

#[tokio::test]
async fn health_says_ok_with_a_unix_timestamp() {
    let app = spawn_app().await;

    let response = app.get("/health").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let now = chrono::Utc::now().timestamp();
    let ts = body["ts"].as_i64().unwrap();
    assert!((now - 5..=now + 5).contains(&ts));
}

#[tokio::test]
async fn an_idle_instance_is_ready() {
    let app = spawn_app().await;

    let response = app.get("/health/ready").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["running_sessions"], 0);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_sessions_by_decision() {
    let app = spawn_app().await;
    app.stream_session(&session_body(json!({}))).await;

    let text = app.metrics().await;

    assert!(
        text.lines()
            .any(|l| l.starts_with("kyc_sessions_completed_total{decision=\"approved\"}")),
        "{text}"
    );
    assert!(text.contains("kyc_agent_duration_seconds_bucket"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = spawn_app().await;

    let generated = app.get("/health").await;
    let given = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();

    assert!(!generated.headers()["x-request-id"].is_empty());
    assert_eq!(given.headers()["x-request-id"], "req-abc-123");
}
