//! How the plan runs: dependency order, the deadline, fail-fast, and the CPU pool.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    agent_event, completion, eventually, millis_between, position, session_body, spawn_app,
    spawn_app_with,
};

#[tokio::test(start_paused = true)]
async fn ocr_starts_as_soon_as_doc_capture_is_done_without_waiting_for_a_slow_liveness() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 3000 },
            "doc_capture": { "latency_ms": 100 },
            "ocr": { "latency_ms": 100 },
        })))
        .await;

    let ocr_started = position(&events, "agent.started", "ocr");
    let ocr_done = position(&events, "agent.completed", "ocr");
    let liveness_done = position(&events, "agent.completed", "liveness");
    let face_started = position(&events, "agent.started", "face_match");
    assert!(ocr_started < liveness_done);
    assert!(ocr_done < liveness_done);
    assert!(face_started > liveness_done);
    assert!(face_started > position(&events, "agent.completed", "doc_capture"));
    let started = &events[0];
    assert_eq!(
        millis_between(started, agent_event(&events, "agent.started", "ocr")),
        100
    );
    assert_eq!(completion(&events)["decision"], "approved");
}

#[tokio::test(start_paused = true)]
async fn a_hung_agent_ends_the_session_at_the_deadline_and_keeps_the_other_results() {
    let app = spawn_app_with(|s| s.agents.get_mut("liveness").unwrap().timeout_ms = 60_000).await;

    let events = app
        .stream_session(&session_body(json!({ "liveness": { "result": "hang" } })))
        .await;

    let done = completion(&events);
    let elapsed = millis_between(&events[0], done);
    assert!(
        (8_000..=8_005).contains(&elapsed),
        "completed after {elapsed} ms"
    );
    assert_eq!(done["decision"], "review");
    assert_eq!(
        done["reasons"],
        json!(["agent_timeout:liveness", "deadline_exceeded"])
    );
    assert_eq!(done["checks"]["doc_capture"]["status"], "passed");
    assert_eq!(done["checks"]["ocr"]["status"], "passed");
    assert_eq!(done["checks"]["liveness"]["status"], "timeout");
    assert_eq!(done["checks"]["face_match"]["status"], "skipped");
    let timed_out = agent_event(&events, "agent.timed_out", "liveness");
    assert_eq!(timed_out["cause"], "session_deadline");
}

#[tokio::test(start_paused = true)]
async fn agents_not_started_by_the_deadline_are_skipped() {
    let app = spawn_app_with(|s| {
        s.orchestrator.session_deadline_ms = 1_000;
        s.agents.get_mut("doc_capture").unwrap().timeout_ms = 60_000;
    })
    .await;

    let events = app
        .stream_session(&session_body(
            json!({ "doc_capture": { "latency_ms": 5_000 } }),
        ))
        .await;

    let done = completion(&events);
    assert_eq!(millis_between(&events[0], done), 1_000);
    assert_eq!(done["checks"]["liveness"]["status"], "passed");
    assert_eq!(done["checks"]["doc_capture"]["status"], "timeout");
    for agent in ["ocr", "face_match"] {
        assert_eq!(done["checks"][agent]["status"], "skipped", "{agent}");
    }
    assert_eq!(
        done["reasons"],
        json!(["agent_timeout:doc_capture", "deadline_exceeded"])
    );
}

#[tokio::test(start_paused = true)]
async fn with_fail_fast_a_declining_check_ends_the_session_at_once() {
    let app = spawn_app().await;

    let events = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 100, "result": "fail" },
            "doc_capture": { "latency_ms": 5_000 },
        })))
        .await;

    let done = completion(&events);
    assert_eq!(millis_between(&events[0], done), 100);
    assert_eq!(done["decision"], "declined");
    assert_eq!(done["reasons"], json!(["liveness_failed"]));
    assert_eq!(done["checks"]["doc_capture"]["status"], "skipped");
    assert_eq!(
        done["checks"]["doc_capture"]["detail"],
        "cancelled: `liveness` already declined the session"
    );
    assert_eq!(done["checks"]["ocr"]["status"], "skipped");
}

#[tokio::test(start_paused = true)]
async fn without_fail_fast_every_check_runs_and_is_reported() {
    let app = spawn_app_with(|s| s.orchestrator.fail_fast = false).await;

    let events = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 100, "result": "fail" },
            "doc_capture": { "latency_ms": 500 },
            "ocr": { "result": "fail" },
        })))
        .await;

    let done = completion(&events);
    assert_eq!(done["decision"], "declined");
    assert_eq!(done["reasons"], json!(["liveness_failed", "mrz_invalid"]));
    assert_eq!(done["checks"]["doc_capture"]["status"], "passed");
    assert_eq!(done["checks"]["face_match"]["status"], "passed");
}

/// On a single-threaded runtime, CPU work done on the runtime would keep `/health` from being
/// answered until it finished. The session must still be running when health answers.
#[tokio::test(flavor = "current_thread")]
async fn cpu_bound_work_runs_off_the_runtime_so_health_answers_meanwhile() {
    let app = spawn_app_with(|s| s.orchestrator.cpu_slots = 1).await;
    let id = app
        .start_session(&session_body(json!({
            "liveness": { "latency_ms": 0, "cpu_ms": 30_000 }
        })))
        .await;
    // Wait until the CPU job holds its slot, so health is asked while it burns.
    eventually(
        "the CPU job to hold its slot",
        Duration::from_secs(60),
        || async { (app.orchestrator.cpu_pool().busy() > 0).then_some(()) },
    )
    .await;

    let health = app.get("/health").await;

    assert_eq!(health.status(), 200);
    let session: serde_json::Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["status"], "running");
}

/// Real time: paused time cannot advance while a blocking job runs. The deadline is far above
/// what the other agents need, so only the hung one can time out.
#[tokio::test]
async fn a_blocking_agent_cancelled_at_the_deadline_gives_its_cpu_slot_back() {
    let app = spawn_app_with(|s| {
        s.orchestrator.cpu_slots = 1;
        s.orchestrator.session_deadline_ms = 2_000;
        s.agents.get_mut("liveness").unwrap().timeout_ms = 60_000;
    })
    .await;

    let hung = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 0, "cpu_ms": 1, "result": "hang" }
        })))
        .await;
    assert_eq!(completion(&hung)["checks"]["liveness"]["status"], "timeout");

    // With the single slot still held by the cancelled job, this CPU work could not start and
    // the session would end at its deadline with liveness timed out.
    let next = app
        .stream_session(&session_body(json!({
            "liveness": { "latency_ms": 0, "cpu_ms": 5 },
            "doc_capture": { "latency_ms": 0 },
            "ocr": { "latency_ms": 0 },
            "face_match": { "latency_ms": 0 },
        })))
        .await;
    assert_eq!(
        completion(&next)["checks"]["liveness"]["status"],
        "passed",
        "the cancelled job gave its CPU slot back"
    );
}
