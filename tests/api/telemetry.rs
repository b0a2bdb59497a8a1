//! Logs: the session id on every line of a session, no personal data on any line.

use serde_json::json;

use crate::helpers::{b64, completion, jpeg, logs, session_body, spawn_app};

#[tokio::test]
async fn every_log_line_of_a_session_carries_its_id_even_from_the_blocking_pool() {
    let app = spawn_app().await;
    let mut request = session_body(json!({
        "liveness": { "latency_ms": 0, "cpu_ms": 2 },
        "ocr": { "result": "error" },
    }));
    request["reference"] = json!("Jane Q. Public");
    let frame = b64(&jpeg(40, 40));
    request["selfie"]["frames"] = json!([frame]);

    let events = app.stream_session(&request).await;

    let id = completion(&events)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines = logs().lines();
    let ours: Vec<_> = lines.iter().filter(|l| l["session_id"] == id).collect();
    let messages: Vec<_> = ours.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    assert!(messages.contains(&"sandbox CPU work done"), "{messages:?}");
    assert!(messages.contains(&"agent failed"), "{messages:?}");
    assert!(messages.contains(&"session completed"), "{messages:?}");
    for line in &ours {
        assert!(line["request_id"].is_string(), "{line}");
    }
    // Lines from the agents and the orchestrator always belong to some session.
    for line in &lines {
        let target = line["target"].as_str().unwrap();
        if target.starts_with("kyc_orchestrator::agents")
            || target.starts_with("kyc_orchestrator::orchestrator::run")
        {
            assert!(line["session_id"].is_string(), "{line}");
        }
    }
    let text = lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!text.contains("Jane"), "the reference is never logged");
    assert!(!text.contains(&frame[..24]), "image data is never logged");
}
