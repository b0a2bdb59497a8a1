//! Every sandbox outcome and the decision it leads to.

use serde_json::json;

use crate::helpers::{completion, session_body, spawn_app, spawn_app_with};

#[tokio::test(start_paused = true)]
async fn a_session_whose_checks_all_pass_is_approved() {
    let app = spawn_app().await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "approved");
    assert_eq!(done["reasons"], json!([]));
    for agent in ["liveness", "doc_capture", "ocr", "face_match"] {
        assert_eq!(done["checks"][agent]["status"], "passed", "{agent}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_agents_hard_failure_declines_with_its_reason_code() {
    let app = spawn_app().await;
    for (agent, reason) in [
        ("liveness", "liveness_failed"),
        ("doc_capture", "document_unreadable"),
        ("ocr", "mrz_invalid"),
        ("face_match", "face_mismatch"),
    ] {
        let events = app
            .stream_session(&session_body(json!({ agent: { "result": "fail" } })))
            .await;

        let done = completion(&events);
        assert_eq!(done["decision"], "declined", "{agent}");
        assert_eq!(done["reasons"], json!([reason]), "{agent}");
        assert_eq!(done["checks"][agent]["status"], "failed", "{agent}");
        assert_eq!(done["checks"][agent]["reasons"], json!([reason]), "{agent}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_soft_failure_goes_to_review_and_still_feeds_its_dependents() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(json!({
            "doc_capture": { "result": "fail", "reason": "too_blurry" }
        })))
        .await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["too_blurry"]));
    assert_eq!(done["checks"]["doc_capture"]["status"], "failed");
    // A failed check still hands its output on, so every finding is reported at once.
    assert_eq!(done["checks"]["ocr"]["status"], "passed");
    assert_eq!(done["checks"]["face_match"]["status"], "passed");
}

#[tokio::test(start_paused = true)]
async fn an_agent_error_goes_to_review_and_skips_its_dependents() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(
            json!({ "doc_capture": { "result": "error" } }),
        ))
        .await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_error:doc_capture"]));
    assert_eq!(done["checks"]["doc_capture"]["status"], "error");
    assert_eq!(done["checks"]["liveness"]["status"], "passed");
    for dependent in ["ocr", "face_match"] {
        let check = &done["checks"][dependent];
        assert_eq!(check["status"], "skipped", "{dependent}");
        assert_eq!(
            check["detail"], "dependency `doc_capture` produced no output",
            "{dependent}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_agent_is_an_error_and_the_server_keeps_serving() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(json!({ "ocr": { "result": "panic" } })))
        .await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_error:ocr"]));
    assert_eq!(done["checks"]["ocr"]["status"], "error");
    assert_eq!(done["checks"]["ocr"]["detail"], "the agent panicked");
    assert_eq!(done["checks"]["face_match"]["status"], "passed");

    let next = app.stream_session(&session_body(json!({}))).await;
    assert_eq!(completion(&next)["decision"], "approved");
}

#[tokio::test]
async fn a_panic_on_the_blocking_pool_is_an_error_too() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 0, "cpu_ms": 2, "result": "panic" }
        })))
        .await;

    let done = completion(&events);
    assert_eq!(done["checks"]["liveness"]["status"], "error");
    assert_eq!(done["checks"]["liveness"]["detail"], "the agent panicked");
    assert_eq!(done["checks"]["face_match"]["status"], "skipped");
    assert_eq!(done["reasons"], json!(["agent_error:liveness"]));
}

#[tokio::test(start_paused = true)]
async fn an_agent_past_its_own_timeout_is_a_timeout_without_waiting_for_the_deadline() {
    let app = spawn_app_with(|s| s.agents.get_mut("liveness").unwrap().timeout_ms = 2_000).await;

    let events = app
        .stream_session(&session_body(json!({ "liveness": { "result": "hang" } })))
        .await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_timeout:liveness"]));
    assert_eq!(done["checks"]["liveness"]["status"], "timeout");
    assert_eq!(
        done["checks"]["liveness"]["detail"],
        "the agent's own timeout passed"
    );
    let elapsed = done["duration_ms"].as_f64().unwrap();
    assert!(
        (2_000.0..2_010.0).contains(&elapsed),
        "completed after {elapsed} ms"
    );
}
