//! Remote agents: `kind = "http"` against a real agent server (`AgentServer` on port 0), and
//! against a scripted remote at the edge of the test for the failures a real one cannot be made
//! to produce on cue (503s, hangs, 500s).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kyc_orchestrator::Settings;
use kyc_orchestrator::agent_server::{AgentServer, AgentServerError};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::helpers::{
    HOUR_MS, OwnRuntime, TestApp, completion, get, session_body, sorted_entries, spawn_app_with,
};

const TOKEN: &str = "worker-token-1";

/// An agent server on port 0 serving the sandbox agents, as `configure` leaves its settings.
struct Worker {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Worker {
    async fn start(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::sandbox();
        settings.agent_server.port = 0;
        settings.agent_server.token = TOKEN.into();
        settings.agent_server.metrics_listen = String::new();
        configure(&mut settings);
        let server = AgentServer::build(settings, &[])
            .await
            .expect("the agent server builds");
        let address = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap();
    }
}

/// Points the plan's `agents` at `url` as remote (sandbox) agents, retries and breaker as given.
fn remote(settings: &mut Settings, agents: &[&str], url: &str, extra: Value) {
    for name in agents {
        let agent = settings.agents.get_mut(*name).unwrap();
        agent.kind = "http".into();
        let mut table = json!({ "url": url, "token": TOKEN, "sandbox": true });
        for (key, value) in extra.as_object().unwrap() {
            table[key] = value.clone();
        }
        agent.settings = table;
    }
}

/// A request as the scripted remote saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
}

/// What the scripted remote answers, in turn (the last one for ever after).
#[derive(Clone)]
enum Answer {
    Status(u16, Option<&'static str>),
    Report,
    Hang,
    /// `200` with this body.
    Raw(String),
}

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn then(&self, answers: Vec<Answer>) {
        *self.answers.lock().unwrap() = answers;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn scripted(State(script): State<Script>, headers: HeaderMap) -> Response {
    let answer = {
        let mut answers = script.answers.lock().unwrap();
        script.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            headers,
        });
        if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        }
    };
    match answer {
        Answer::Status(status, retry_after) => {
            let status = StatusCode::from_u16(status).unwrap();
            let body =
                json!({ "type": "urn:test:busy", "title": "Busy", "status": status.as_u16() });
            let mut response = (status, axum::Json(body)).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().unwrap());
            }
            response
        }
        Answer::Report => axum::Json(json!({
            "status": "passed",
            "score": 0.91,
            "details": { "model": "remote-v1" },
            "output": { "type": "sandbox", "agent": "liveness" },
        }))
        .into_response(),
        Answer::Hang => std::future::pending().await,
        // Streamed, with no Content-Length: the caller's limit must hold chunk by chunk.
        Answer::Raw(body) => {
            let chunks = body
                .into_bytes()
                .chunks(1000)
                .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(chunk)))
                .collect::<Vec<_>>();
            axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
    }
}

/// A scripted remote agent on port 0.
async fn scripted_remote(answers: Vec<Answer>) -> (String, Script) {
    let script = Script::default();
    script.then(answers);
    let router = Router::new()
        .route("/v1/agents/{agent}", axum::routing::post(scripted))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, script)
}

/// The completion event of one unscripted session, streamed to its end.
async fn decided(app: &TestApp) -> Value {
    completion(&app.stream_session(&session_body(json!({}))).await).clone()
}

/// An app whose `liveness` calls `url`, every other agent local, deadlines of an hour unless the
/// test sets them.
async fn app_with_remote_liveness(url: &str, extra: Value) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(move |s| {
        s.orchestrator.session_deadline_ms = HOUR_MS;
        for agent in s.agents.values_mut() {
            agent.timeout_ms = HOUR_MS;
        }
        remote(s, &["liveness"], &url, extra);
    })
    .await
}

#[tokio::test]
async fn every_agent_of_the_plan_runs_on_an_agent_server() {
    let worker = Worker::start(|_| {}).await;
    let url = worker.address.clone();
    let app = spawn_app_with(move |s| {
        remote(
            s,
            &["liveness", "doc_capture", "ocr", "face_match"],
            &url,
            json!({}),
        );
    })
    .await;

    let scripted_fast = json!({
        "liveness": { "latency_ms": 1 }, "doc_capture": { "latency_ms": 1 },
        "ocr": { "latency_ms": 50, "result": "fail" }, "face_match": { "latency_ms": 1 },
    });
    let events = app.stream_session(&session_body(scripted_fast)).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "declined", "{done:#}");
    assert_eq!(done["reasons"], json!(["mrz_invalid"]));
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    for agent in ["liveness", "doc_capture", "ocr", "face_match"] {
        let check = &session["checks"][agent];
        assert_eq!(
            check["details"]["remote"]["attempts"], 1,
            "{agent}: {check:#}"
        );
        assert_eq!(
            check["details"]["sandbox"], true,
            "{agent}: the remote's own details"
        );
    }
    assert_eq!(session["checks"]["ocr"]["status"], "failed");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn transient_503s_are_tried_again_and_the_remote_learns_the_session_and_its_deadline() {
    let (url, script) = scripted_remote(vec![
        Answer::Status(503, None),
        Answer::Status(503, Some("2")),
        Answer::Report,
    ])
    .await;
    let app = app_with_remote_liveness(&url, json!({ "retry": { "max_attempts": 3 } })).await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "approved", "{done:#}");
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    let check = &session["checks"]["liveness"];
    assert_eq!(check["status"], "passed");
    assert_eq!(check["score"], 0.91);
    assert_eq!(check["details"]["model"], "remote-v1");
    assert_eq!(
        check["details"]["remote"]["outcomes"],
        json!([503, 503, 200])
    );

    let seen = script.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[2].at - seen[1].at >= Duration::from_secs(2),
        "Retry-After is honoured"
    );
    let trace_id = id.replace('-', "");
    for attempt in &seen {
        let header = |name: &str| attempt.headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-session-id"), id);
        assert_eq!(header("authorization"), format!("Bearer {TOKEN}"));
        let traceparent = header("traceparent");
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")) && traceparent.ends_with("-01"),
            "{traceparent}"
        );
        let left: u64 = header("kyc-deadline-ms").parse().unwrap();
        assert!(
            left > HOUR_MS - 60_000 && left <= HOUR_MS,
            "the agent's hour, less what the session took: {left}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_of_the_request_is_final_and_reaches_review() {
    let (url, script) = scripted_remote(vec![Answer::Status(400, None)]).await;
    let app = app_with_remote_liveness(&url, json!({})).await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_error:liveness"]));
    assert_eq!(script.seen().len(), 1, "a 4xx is not tried again");
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    let check = &session["checks"]["liveness"];
    assert_eq!(check["status"], "error");
    assert_eq!(check["details"]["remote"]["outcomes"], json!([400]));
    assert_eq!(check["details"]["remote"]["problem"]["title"], "Busy");
    assert_eq!(
        session["checks"]["doc_capture"]["status"], "passed",
        "the other agents' results are kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_remote_ends_its_check_at_the_session_deadline() {
    let (url, _script) = scripted_remote(vec![Answer::Hang]).await;
    let url_for_app = url.clone();
    let app = spawn_app_with(move |s| {
        s.orchestrator.session_deadline_ms = 1_000;
        for agent in s.agents.values_mut() {
            agent.timeout_ms = HOUR_MS;
        }
        remote(s, &["liveness"], &url_for_app, json!({}));
    })
    .await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    // The session's own clock: the stream's bytes cross real sockets, over which paused time
    // may jump to an unrelated timer.
    let took = done["duration_ms"].as_f64().unwrap();
    assert!((1_000.0..=1_005.0).contains(&took), "{took} ms");
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    assert_eq!(session["checks"]["liveness"]["status"], "timeout");
    assert_eq!(session["checks"]["doc_capture"]["status"], "passed");
}

#[tokio::test(start_paused = true)]
async fn a_remote_that_cannot_be_reached_is_tried_again_then_reported_unavailable() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let app = app_with_remote_liveness(&closed, json!({ "retry": { "max_attempts": 3 } })).await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_unavailable:liveness"]));
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    let remote = &session["checks"]["liveness"]["details"]["remote"];
    assert_eq!(
        remote["outcomes"],
        json!(["connect_error", "connect_error", "connect_error"])
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_failures_fails_fast_and_closes_after_a_probe() {
    let (url, script) = scripted_remote(vec![Answer::Status(500, None)]).await;
    let breaker = json!({
        "retry": { "max_attempts": 1 },
        "breaker": { "consecutive_failures": 2, "failure_ratio": 0.0, "open_ms": 10000 },
    });
    let app = app_with_remote_liveness(&url, breaker).await;
    for _ in 0..2 {
        let done = decided(&app).await;
        assert_eq!(done["reasons"], json!(["agent_unavailable:liveness"]));
    }
    assert_eq!(script.seen().len(), 2);

    let done = decided(&app).await;
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_unavailable:liveness"]));
    assert_eq!(script.seen().len(), 2, "open: no call reaches the remote");
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(
        ready["status"], "ready",
        "a shared remote never drains instances"
    );
    assert_eq!(ready["degraded"], json!({ "liveness": "breaker_open" }));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("kyc_remote_breaker_state{agent=\"liveness\"} 2"),
        "{metrics}"
    );

    script.then(vec![Answer::Report]);
    tokio::time::advance(Duration::from_secs(10)).await;
    let done = decided(&app).await;
    assert_eq!(
        done["decision"], "approved",
        "the probe succeeded: {done:#}"
    );
    assert_eq!(script.seen().len(), 3);
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert!(ready.get("degraded").is_none(), "{ready:#}");
}

#[tokio::test]
async fn an_agent_server_wants_its_token_and_serves_only_its_agents() {
    let worker = Worker::start(|_| {}).await;
    let client = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds");
    let body = json!({ "session": session_body(json!({})) });
    let mut session = body["session"].clone();
    session.as_object_mut().unwrap().remove("reference");
    session.as_object_mut().unwrap().remove("sandbox");
    let body = json!({ "session": session });

    let anonymous = client
        .post(worker.url("/v1/agents/liveness"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client
        .post(worker.url("/v1/agents/liveness"))
        .bearer_auth("not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = client
        .post(worker.url("/v1/agents/palm_reading"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let invalid = client
        .post(worker.url("/v1/agents/liveness"))
        .bearer_auth(TOKEN)
        .json(&json!({ "session": { "selfie": { "frames": [] } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    assert_eq!(
        invalid.headers()["content-type"],
        "application/problem+json"
    );

    let answered = client
        .post(worker.url("/v1/agents/liveness"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let report: Value = answered.json().await.unwrap();
    assert_eq!(report["status"], "passed");
    assert_eq!(
        report["output"],
        json!({ "type": "sandbox", "agent": "liveness" })
    );

    let ready: Value = get(worker.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["agents"],
        json!(["doc_capture", "face_match", "liveness", "ocr"])
    );
    worker.stop().await;
}

/// A session body for an agent server, scripting its sandbox `agent` with `directive`.
fn agent_request(agent: &str, directive: Value) -> Value {
    let mut session = session_body(json!({ agent: directive }));
    session.as_object_mut().unwrap().remove("reference");
    json!({ "session": session })
}

#[tokio::test(start_paused = true)]
async fn a_full_agent_server_answers_503_at_once_and_finishes_what_it_holds_at_shutdown() {
    let worker = Worker::start(|s| {
        s.agent_server.max_inflight = 1;
        s.agent_server.retry_after_s = 3;
    })
    .await;
    let client = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds");
    let slow = {
        let client = client.clone();
        let url = worker.url("/v1/agents/ocr");
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&agent_request("ocr", json!({ "latency_ms": 3000 })))
                .send()
                .await
                .unwrap()
        })
    };
    crate::helpers::eventually(
        "the slow request is in flight",
        Duration::from_secs(1),
        || {
            let url = worker.url("/health/ready");
            async move {
                let ready: Value = get(url).await.ok()?.json().await.ok()?;
                (ready["in_flight"] == 1).then_some(())
            }
        },
    )
    .await;

    let refused = client
        .post(worker.url("/v1/agents/liveness"))
        .bearer_auth(TOKEN)
        .json(&agent_request("liveness", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "3");

    worker.stop().await;
    let finished = slow.await.unwrap();
    assert_eq!(finished.status(), 200, "the request in flight finished");
}

#[tokio::test]
async fn an_agent_that_panics_answers_500_and_the_server_serves_on() {
    let worker = Worker::start(|_| {}).await;
    let client = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds");
    let post = |directive: Value| {
        client
            .post(worker.url("/v1/agents/face_match"))
            .bearer_auth(TOKEN)
            .json(&agent_request("face_match", directive))
            .send()
    };

    let panicked = post(json!({ "result": "panic" })).await.unwrap();
    assert_eq!(panicked.status(), 500);
    let problem: Value = panicked.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:agent-panicked"
    );

    let next = post(json!({})).await.unwrap();
    assert_eq!(next.status(), 200);
    worker.stop().await;
}

#[tokio::test]
async fn an_agent_server_refuses_a_body_over_its_limit() {
    let worker = Worker::start(|s| s.agent_server.body_limit_bytes = 1024).await;

    let response = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds")
        .post(worker.url("/v1/agents/liveness"))
        .bearer_auth(TOKEN)
        .json(&agent_request("liveness", json!({})))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 413);
    worker.stop().await;
}

#[tokio::test]
async fn an_agent_server_does_not_start_without_a_token_or_to_relay() {
    let mut settings = Settings::sandbox();
    settings.agent_server.port = 0;
    settings.agent_server.metrics_listen = String::new();
    let refused = AgentServer::build(settings.clone(), &[]).await;
    assert!(matches!(refused, Err(AgentServerError::NoToken)));

    settings.agent_server.token = TOKEN.into();
    let unknown = AgentServer::build(settings.clone(), &["palm_reading".into()]).await;
    assert!(matches!(unknown, Err(AgentServerError::Unknown(_))));

    remote(&mut settings, &["ocr"], "http://127.0.0.1:1", json!({}));
    let relay = AgentServer::build(settings, &["ocr".into()]).await;
    assert!(matches!(relay, Err(AgentServerError::Relay(_))));
}

#[tokio::test]
async fn switching_an_agent_to_http_by_environment_keeps_the_built_in_settings_for_the_remote() {
    let env = |extra: &[(&str, &str)]| {
        let mut vars: config::Map<String, String> = [
            ("KYC__AGENTS__FACE_MATCH__KIND", "http"),
            (
                "KYC__AGENTS__FACE_MATCH__SETTINGS__URL",
                "http://10.0.0.5:8010",
            ),
            ("KYC__AGENTS__FACE_MATCH__SETTINGS__TOKEN", "12345"),
            ("KYC__AGENTS__FACE_MATCH__SETTINGS__MAX_CONCURRENCY", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        Settings::load_from(None, None, Some(vars)).unwrap()
    };
    let registry = kyc_orchestrator::agents::AgentRegistry::from_settings(&env(&[]))
        .expect("the real face_match's thresholds are left to the remote");
    assert!(registry.reasons().contains("agent_unavailable:face_match"));
    assert!(registry.reasons().contains("face_mismatch"));

    let typo = env(&[("KYC__AGENTS__FACE_MATCH__SETTINGS__MAX_CONCURENCY", "8")]);
    let error = kyc_orchestrator::agents::AgentRegistry::from_settings(&typo)
        .err()
        .expect("a misspelt key is refused");
    let error = format!(
        "{error}: {}",
        std::error::Error::source(&error).map_or(String::new(), |s| s.to_string())
    );
    assert!(
        error.contains("face_match") && error.contains("max_concurency"),
        "{error}"
    );
}

/// Waits until `url` (a readiness route) answers 200: the models have loaded.
async fn until_ready(url: String) {
    crate::helpers::eventually("the models to load", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let response = get(url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn real_agents_on_a_worker_read_the_document_doc_capture_rectified_here() {
    use crate::render;
    let worker = Worker::start(|s| s.agents = Settings::defaults().agents).await;
    let url = worker.address.clone();
    let app = spawn_app_with(move |s| {
        s.agents = Settings::defaults().agents;
        let extra = json!({});
        remote(s, &["ocr", "face_match"], &url, extra);
        for name in ["ocr", "face_match"] {
            s.agents.get_mut(name).unwrap().settings["sandbox"] = false.into();
        }
    })
    .await;
    until_ready(worker.url("/health/ready")).await;
    until_ready(app.url("/health/ready")).await;
    let document = render::photo(&render::page(&render::portrait_page()), render::ASKEW);
    let body = json!({
        "selfie": { "frames": [crate::helpers::b64(&render::jpeg(&render::selfie()))] },
        "document": { "type": "passport", "front": crate::helpers::b64(&render::jpeg(&document)) },
    });

    let events = app.stream_session(&body).await;

    let done = completion(&events);
    let id = done["session_id"].as_str().unwrap();
    let session: Value = app.get_session(id).await.json().await.unwrap();
    let ocr = &session["checks"]["ocr"];
    assert_eq!(
        ocr["status"], "passed",
        "the MRZ read on the worker: {ocr:#}"
    );
    assert_eq!(ocr["details"]["remote"]["attempts"], 1);
    assert_eq!(
        ocr["extracted"]["document_number"],
        render::ANNA.number,
        "{ocr:#}"
    );
    let face_match = &session["checks"]["face_match"];
    assert_eq!(
        face_match["status"], "passed",
        "the portrait crop crossed the wire: {face_match:#}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_agent_servers_document_is_the_committed_one() {
    let worker = Worker::start(|_| {}).await;

    let served: Value = get(worker.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let committed: Value =
        serde_json::from_str(include_str!("../../openapi-agent-server.json")).unwrap();
    assert!(
        served == committed,
        "the agent server's document changed: run `cargo run --bin kyc-orchestrator -- openapi \
         --agent-server > openapi-agent-server.json` and review the difference"
    );
    assert!(served["paths"]["/v1/agents/{agent}"]["post"].is_object());
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_or_oversized_answer_is_a_clear_error() {
    let (url, script) = scripted_remote(vec![Answer::Raw("<html>gateway</html>".into())]).await;
    let app = app_with_remote_liveness(&url, json!({ "max_answer_bytes": 4096 })).await;

    let done = decided(&app).await;
    let (decision, malformed) = (&done["decision"], &done["checks"]["liveness"]);
    assert_eq!(decision, "review");
    assert_eq!(malformed["status"], "error", "{malformed:#}");
    assert_eq!(malformed["reasons"], json!(["agent_unavailable:liveness"]));
    assert!(
        malformed["detail"]
            .as_str()
            .unwrap()
            .contains("the answer is not a report"),
        "{malformed:#}"
    );

    script.then(vec![Answer::Raw("x".repeat(10_000))]);
    let done = decided(&app).await;
    let (decision, oversized) = (&done["decision"], &done["checks"]["liveness"]);
    assert_eq!(decision, "review");
    assert_eq!(
        oversized["details"]["remote"]["outcomes"],
        json!(["answer_too_large"]),
        "{oversized:#}"
    );
    assert_eq!(script.seen().len(), 2, "neither is tried again");
}

#[tokio::test]
async fn a_wrong_token_is_refused_once_and_named_in_the_check() {
    let worker = Worker::start(|_| {}).await;
    let url = worker.address.clone();
    let app = spawn_app_with(move |s| {
        remote(s, &["face_match"], &url, json!({ "token": "stale-token" }));
    })
    .await;

    let events = app.stream_session(&session_body(json!({}))).await;

    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["agent_unavailable:face_match"]));
    let check = &done["checks"]["face_match"];
    assert_eq!(
        check["details"]["remote"]["outcomes"],
        json!([401]),
        "{check:#}"
    );
    worker.stop().await;
}

/// An agent server of the sandbox agents on a runtime of its own, which the test can kill.
fn killable_worker() -> (String, OwnRuntime) {
    OwnRuntime::start(|| async {
        let mut settings = Settings::sandbox();
        settings.agent_server.port = 0;
        settings.agent_server.token = TOKEN.into();
        settings.agent_server.metrics_listen = String::new();
        let server = AgentServer::build(settings, &[])
            .await
            .expect("the agent server builds");
        let address = format!("http://{}", server.local_addr());
        (address, server.run_until_stopped(std::future::pending()))
    })
}

#[tokio::test]
async fn an_agent_server_killed_mid_session_costs_only_its_check() {
    let (address, worker) = killable_worker();
    let url = address.clone();
    let app = spawn_app_with(move |s| {
        s.orchestrator.session_deadline_ms = HOUR_MS;
        for agent in s.agents.values_mut() {
            agent.timeout_ms = HOUR_MS;
        }
        remote(s, &["ocr"], &url, json!({}));
    })
    .await;
    let ocr_in_flight = format!("{address}/health/ready");
    let id = app
        .start_session(&session_body(json!({ "ocr": { "latency_ms": 60000 } })))
        .await;
    crate::helpers::eventually(
        "ocr is running on the worker",
        Duration::from_secs(10),
        || {
            let url = ocr_in_flight.clone();
            async move {
                let ready: Value = get(url).await.ok()?.json().await.ok()?;
                (ready["in_flight"] == 1).then_some(())
            }
        },
    )
    .await;

    worker.kill();

    let session = crate::helpers::eventually(
        "the session to complete",
        Duration::from_secs(10),
        || async {
            let session: Value = app.get_session(&id).await.json().await.ok()?;
            (session["status"] == "completed").then_some(session)
        },
    )
    .await;
    assert_eq!(session["decision"], "review");
    assert_eq!(session["reasons"], json!(["agent_unavailable:ocr"]));
    let ocr = &session["checks"]["ocr"];
    assert_eq!(
        ocr["details"]["remote"]["outcomes"],
        json!(["transport_error"]),
        "{ocr:#}"
    );
    assert_eq!(session["checks"]["liveness"]["status"], "passed");
    assert_eq!(session["checks"]["face_match"]["status"], "passed");
}

/// The checks as a reviewer reads them, without the remote's own record.
fn without_remote(mut check: Value) -> Value {
    if let Some(details) = check["details"].as_object_mut() {
        details.remove("remote");
    }
    if let Some(object) = check.as_object_mut() {
        object.remove("duration_ms");
    }
    check
}

/// Selfie frames and a document photo, as a session body (JPEG, as phones send them).
fn real_session(frames: &[image::RgbImage], document: &image::RgbImage) -> Value {
    use crate::render;
    let frames: Vec<String> = frames
        .iter()
        .map(|frame| crate::helpers::b64(&render::jpeg(frame)))
        .collect();
    json!({
        "selfie": { "frames": frames },
        "document": { "type": "passport", "front": crate::helpers::b64(&render::jpeg(document)) },
    })
}

/// The head-turn frames of `../shared/data/headturn`, five from each clip, where the data is.
fn shared_head_turns() -> Vec<Vec<image::RgbImage>> {
    let Some(root) = crate::helpers::shared_data("headturn") else {
        return Vec::new();
    };
    sorted_entries(&root)
        .iter()
        .filter_map(|clip| {
            let frames = sorted_entries(clip);
            let step = (frames.len() / 5).max(1);
            let picked = frames
                .iter()
                .step_by(step)
                .take(5)
                .map(|f| image::open(f).map(|i| i.to_rgb8()))
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            (picked.len() == 5).then_some(picked)
        })
        .collect()
}

/// The face photos of `../shared/data/faces`, each a one-frame selfie, where the data is.
fn shared_faces() -> Vec<Vec<image::RgbImage>> {
    let Some(root) = crate::helpers::shared_data("faces") else {
        return Vec::new();
    };
    sorted_entries(&root)
        .iter()
        .filter_map(|photo| Some(vec![image::open(photo).ok()?.to_rgb8()]))
        .collect()
}

#[tokio::test]
async fn liveness_and_face_match_decide_the_same_on_a_worker_as_in_process() {
    use crate::render;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let worker = Worker::start(|s| s.agents = Settings::defaults().agents).await;
    let url = worker.address.clone();
    let local = spawn_app_with(|s| s.agents = Settings::defaults().agents).await;
    let remote_app = spawn_app_with(move |s| {
        s.agents = Settings::defaults().agents;
        remote(s, &["liveness", "face_match"], &url, json!({}));
        for name in ["liveness", "face_match"] {
            s.agents.get_mut(name).unwrap().settings["sandbox"] = false.into();
        }
    })
    .await;
    until_ready(worker.url("/health/ready")).await;
    until_ready(local.url("/health/ready")).await;
    until_ready(remote_app.url("/health/ready")).await;
    let passport = render::photo(&render::page(&render::portrait_page()), render::ASKEW);
    let mut selfies = vec![render::turning_selfie(&render::astronaut_photo(), &models).unwrap()];
    selfies.extend(shared_head_turns());
    selfies.extend(shared_faces());

    for frames in &selfies {
        let body = real_session(frames, &passport);
        let here = local.stream_session(&body).await;
        let there = remote_app.stream_session(&body).await;

        let (here, there) = (completion(&here), completion(&there));
        assert_eq!(here["decision"], there["decision"]);
        assert_eq!(here["reasons"], there["reasons"]);
        for agent in ["liveness", "face_match"] {
            assert_eq!(there["checks"][agent]["details"]["remote"]["attempts"], 1);
            assert_eq!(
                without_remote(here["checks"][agent].clone()),
                without_remote(there["checks"][agent].clone()),
                "{agent}"
            );
        }
    }
    worker.stop().await;
}
