//! The NDJSON event stream: order, replay, resume, many followers, disconnects.

use futures::StreamExt;
use reqwest::header::ACCEPT;
use serde_json::{Value, json};

use crate::helpers::{completion, parse_ndjson, session_body, spawn_app, spawn_patient_app};

/// Runs for a (virtual) minute, the longest a sandbox agent may wait, so it is certainly still
/// running while the test acts.
fn slow_session() -> Value {
    session_body(json!({ "liveness": { "latency_ms": 60_000 } }))
}

#[tokio::test(start_paused = true)]
async fn the_stream_is_numbered_without_gaps_from_started_to_completed() {
    let app = spawn_app().await;

    let events = app.stream_session(&session_body(json!({}))).await;

    assert_eq!(events[0]["type"], "session.started");
    completion(&events);
    let id = &events[0]["session_id"];
    let mut previous_ts = String::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], json!(i + 1));
        assert_eq!(&event["session_id"], id);
        let ts = event["ts"].as_str().unwrap().to_owned();
        assert!(ts >= previous_ts, "timestamps never go back");
        previous_ts = ts;
    }
    // 1 started + 4 x (started, completed) + 1 completed
    assert_eq!(events.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_connects_after_completion_gets_the_full_history() {
    let app = spawn_app().await;
    let streamed = app.stream_session(&session_body(json!({}))).await;
    let id = streamed[0]["session_id"].as_str().unwrap();

    let replayed = app.events(id, None).await;

    assert_eq!(replayed, streamed);
}

#[tokio::test(start_paused = true)]
async fn after_resumes_from_a_sequence_number() {
    let app = spawn_app().await;
    let streamed = app.stream_session(&session_body(json!({}))).await;
    let id = streamed[0]["session_id"].as_str().unwrap();

    let resumed = app.events(id, Some(4)).await;

    assert_eq!(resumed, streamed[4..]);
    assert!(app.events(id, Some(10)).await.is_empty());
}

/// Found by the fuzzer (scripts/fuzz.sh): a `seq` no database can store was taken.
#[tokio::test(start_paused = true)]
async fn an_after_beyond_any_stored_seq_is_a_400() {
    let app = spawn_app().await;
    let streamed = app.stream_session(&session_body(json!({}))).await;
    let id = streamed[0]["session_id"].as_str().unwrap();

    let largest = app
        .get(&format!("/v1/sessions/{id}/events?after={}", i64::MAX))
        .await;
    let beyond = app
        .get(&format!(
            "/v1/sessions/{id}/events?after={}",
            i64::MAX as u64 + 1
        ))
        .await;

    assert_eq!(largest.status(), 200);
    assert_eq!(beyond.status(), 400);
    let problem: serde_json::Value = beyond.json().await.unwrap();
    assert_eq!(problem["type"], "urn:kyc-orchestrator:problem:bad-request");
}

#[tokio::test(start_paused = true)]
async fn many_followers_of_a_running_session_see_the_same_complete_history() {
    let app = spawn_patient_app().await;
    let id = app.start_session(&slow_session()).await;

    let followers = futures::future::join_all((0..5).map(|_| app.events(&id, None))).await;

    let first = &followers[0];
    assert_eq!(first[0]["type"], "session.started");
    assert_eq!(completion(first)["decision"], "approved");
    for follower in &followers {
        assert_eq!(follower, first);
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_stops_reading_does_not_hold_the_session_back() {
    let app = spawn_patient_app().await;
    let id = app.start_session(&slow_session()).await;
    let idle = app
        .client
        .get(app.url(&format!("/v1/sessions/{id}/events")))
        .send()
        .await
        .unwrap();

    let reader = app.events(&id, None).await;

    assert_eq!(completion(&reader)["decision"], "approved");
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["status"], "completed");
    // The idle follower, read late, still gets everything.
    let late = parse_ndjson(&idle.bytes().await.unwrap());
    assert_eq!(late, reader);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_disconnects_from_its_stream_does_not_cancel_the_session() {
    let app = spawn_patient_app().await;
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header(ACCEPT, "application/x-ndjson")
        .json(&slow_session())
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let id = parse_ndjson(&first)[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(stream);

    let events = app.events(&id, None).await;

    assert_eq!(completion(&events)["decision"], "approved");
}

#[tokio::test(start_paused = true)]
async fn a_session_reads_as_running_then_as_completed_with_its_checks() {
    let app = spawn_patient_app().await;
    let id = app.start_session(&slow_session()).await;

    let running: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(running["status"], "running");
    assert_eq!(running["reference"], "test-ref-1");
    assert!(running.get("decision").is_none());

    app.events(&id, None).await;
    let completed: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["decision"], "approved");
    assert_eq!(completed["checks"]["liveness"]["status"], "passed");
    assert_eq!(
        completed["links"]["events"],
        format!("/v1/sessions/{id}/events")
    );
}
