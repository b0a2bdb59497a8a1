//! Graceful shutdown: stop taking work, finish what is running, then stop.

use serde_json::{Value, json};

use crate::helpers::{HOUR_MS, session_body, spawn_app_with};

#[tokio::test(start_paused = true)]
async fn on_shutdown_readiness_fails_new_sessions_are_refused_and_running_ones_finish() {
    let mut app = spawn_app_with(|s| {
        s.server.drain_delay_ms = 30_000;
        s.server.shutdown_timeout_ms = HOUR_MS;
        s.orchestrator.session_deadline_ms = HOUR_MS;
        s.agents.get_mut("liveness").unwrap().timeout_ms = HOUR_MS;
    })
    .await;
    // Still running when the drain delay ends: stopping must wait for it.
    let id = app
        .start_session(&session_body(
            json!({ "liveness": { "latency_ms": 60_000 } }),
        ))
        .await;

    app.signal_shutdown().await;

    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "draining");
    assert_eq!(app.get("/health").await.status(), 200);
    let refused = app.post_session(&session_body(json!({}))).await;
    assert_eq!(refused.status(), 503);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(
        refused["type"],
        "urn:kyc-orchestrator:problem:shutting-down"
    );

    let orchestrator = app.orchestrator.clone();
    let owner = app.owner();
    app.stop().await.expect("the server stops cleanly");

    let session = orchestrator
        .session(&owner, id.parse().unwrap())
        .await
        .unwrap()
        .expect("the session is kept");
    let completion = session.completion.expect("the running session finished");
    assert_eq!(completion.decision.as_str(), "approved");
}
