//! Webhooks end to end: a real receiver (axum on port 0) that answers as each test scripts it,
//! endpoints managed through the API, signatures checked by the Standard Webhooks reference
//! library, the retry schedule under paused time, and (on the real clock, on SQLite and
//! PostgreSQL) a crash between completion and delivery and two instances sharing one database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use reqwest::Client;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::durable::{Backend, TestStore};
use crate::helpers::{
    TestApp, client_with, completion, eventually, session_body, spawn_app_with, spawn_crashable_app,
};
use kyc_orchestrator::Settings;
use kyc_orchestrator::auth::NewKey;
use kyc_orchestrator::domain::{Mode, Scope, Scopes};

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// A status with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// No answer at all.
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn id(&self) -> String {
        self.header("webhook-id")
    }

    fn header(&self, name: &str) -> String {
        self.headers[name].to_str().unwrap().to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Script {
    replies: VecDeque<Reply>,
    received: Vec<Received>,
    /// How many requests have arrived, for waiting without polling.
    count: tokio::sync::watch::Sender<usize>,
}

/// A webhook receiver: answers from its script, then 204.
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
    count: tokio::sync::watch::Receiver<usize>,
}

impl Receiver {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        let (count, counted) = tokio::sync::watch::channel(0);
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into_iter().collect(),
            received: Vec::new(),
            count,
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            script,
            count: counted,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests have arrived, for at most `patience` on the runtime's clock.
    #[track_caller]
    fn wait_for(&self, n: usize, patience: Duration) -> impl Future<Output = Vec<Received>> {
        let caller = std::panic::Location::caller();
        let mut count = self.count.clone();
        async move {
            tokio::time::timeout(patience, count.wait_for(|&got| got >= n))
                .await
                .unwrap_or_else(|_| panic!("{caller}: waited {patience:?} for {n} requests"))
                .expect("the receiver runs");
            self.received()
        }
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        script.count.send_replace(script.received.len());
        script.replies.pop_front().unwrap_or(Reply::Status(204))
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RetryAfter(code, seconds) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

/// Sends `request` and reads its JSON answer.
async fn fetch(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Registers `url` for the client's tenant; the endpoint as answered (with its secret).
async fn register(app: &TestApp, client: &Client, url: &str) -> Value {
    let answer = client
        .post(app.url("/v1/webhooks"))
        .json(&json!({ "url": url, "description": "test receiver" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::CREATED,
        "{:?}",
        answer.text().await
    );
    answer.json().await.unwrap()
}

async fn deliveries(app: &TestApp, endpoint: &Value) -> Vec<Value> {
    let url = app.url(&format!(
        "/v1/webhooks/{}/deliveries",
        endpoint["id"].as_str().unwrap()
    ));
    let page: Value = fetch(app.client.get(url)).await;
    page["data"].as_array().unwrap().clone()
}

/// Checks a request's signature with the Standard Webhooks reference library.
fn verify(secret: &str, received: &Received) -> Result<(), String> {
    standardwebhooks::Webhook::new(secret)
        .map_err(|e| format!("{e:?}"))?
        .verify(&received.body, &received.headers)
        .map_err(|e| format!("{e:?}"))
}

fn with_schedule(schedule: &'static str) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.webhooks.retry_schedule = schedule.into();
        s.webhooks.poll_interval_ms = 50;
    }
}

#[tokio::test(start_paused = true)]
async fn a_decision_reaches_the_endpoint_signed_thin_and_once() {
    let app = spawn_app_with(with_schedule("0s")).await;
    let receiver = Receiver::start([]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    let mut body = session_body(json!({
        "ocr": { "extracted": { "surname": "ERIKSSON", "document_number": "L898902C3" } }
    }));
    body["reference"] = json!("customer-42");

    let events = app.stream_session(&body).await;
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;

    assert_eq!(got.len(), 1);
    let message = &got[0];
    verify(endpoint["secret"].as_str().unwrap(), message).expect("a valid signature");
    assert!(message.id().starts_with("msg_"));
    assert_eq!(message.header("content-type"), "application/json");
    let sent = message.json();
    let done = completion(&events);
    assert_eq!(sent["type"], "session.completed");
    assert_eq!(sent["data"]["session_id"], done["session_id"]);
    assert_eq!(sent["data"]["seq"], done["seq"]);
    assert_eq!(sent["data"]["decision"], done["decision"]);
    assert_eq!(sent["data"]["reference"], "customer-42");
    assert_eq!(sent["data"]["checks"]["ocr"]["status"], "passed");
    let text = String::from_utf8_lossy(&message.body);
    assert!(
        !text.contains("ERIKSSON") && !text.contains("L898902C3"),
        "no personal data: {text}"
    );
    let listed = deliveries(&app, &endpoint).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["message_id"], message.id().as_str());
    assert_eq!(listed[0]["state"], "delivered");
    assert_eq!(listed[0]["attempts"][0]["status_code"], 204);
    let shown: Value = fetch(app.client.get(app.url(&format!(
        "/v1/webhooks/{}",
        endpoint["id"].as_str().unwrap()
    ))))
    .await;
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"kyc_webhook_attempts_total{result="delivered"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_on_the_schedule_under_one_message_id() {
    let app = spawn_app_with(with_schedule("0s,10s,1m")).await;
    let receiver = Receiver::start([Reply::Status(500), Reply::Status(302)]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;

    app.stream_session(&session_body(json!({}))).await;
    let got = receiver.wait_for(3, Duration::from_secs(600)).await;

    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id() == got[0].id()), "one webhook-id");
    assert!(got[1].at - got[0].at >= Duration::from_secs(10));
    assert!(
        got[1].at - got[0].at <= Duration::from_secs(13),
        "10 s and at most 20 % jitter"
    );
    assert!(got[2].at - got[1].at >= Duration::from_secs(60));
    let listed = eventually(
        "the third attempt recorded",
        Duration::from_secs(60),
        || async {
            let listed = deliveries(&app, &endpoint).await;
            (listed[0]["state"] == "delivered").then_some(listed)
        },
    )
    .await;
    let statuses: Vec<&Value> = listed[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(302), &json!(204)]);
    assert!(
        listed[0]["attempts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("not followed")
    );
}

#[tokio::test(start_paused = true)]
async fn gone_disables_the_endpoint_and_retry_after_is_honoured() {
    let app = spawn_app_with(with_schedule("0s,1s,1s")).await;
    let gone = Receiver::start([Reply::Status(410)]).await;
    let busy = Receiver::start([Reply::RetryAfter(429, 120)]).await;
    let gone_endpoint = register(&app, &app.client, &gone.url).await;
    register(&app, &app.client, &busy.url).await;

    app.stream_session(&session_body(json!({}))).await;
    let throttled = busy.wait_for(2, Duration::from_secs(600)).await;
    let shown: Value = eventually("the endpoint disabled", Duration::from_secs(60), || async {
        let id = gone_endpoint["id"].as_str().unwrap();
        let shown: Value = fetch(app.client.get(app.url(&format!("/v1/webhooks/{id}")))).await;
        (shown["enabled"] == false).then_some(shown)
    })
    .await;

    assert!(throttled[1].at - throttled[0].at >= Duration::from_secs(120));
    assert_eq!(shown["disabled_reason"], "gone");
    app.stream_session(&session_body(json!({}))).await;
    busy.wait_for(3, Duration::from_secs(60)).await;
    assert_eq!(gone.received().len(), 1, "a disabled endpoint gets nothing");
}

#[tokio::test(start_paused = true)]
async fn exhausted_messages_stay_listed_and_are_resent_under_the_same_id() {
    let app = spawn_app_with(|s| {
        with_schedule("0s,1s")(s);
        s.webhooks.timeout = "2s".into();
    })
    .await;
    let receiver = Receiver::start([
        Reply::Status(500),
        Reply::Hang,
        Reply::Status(204),
        Reply::Status(500),
        Reply::Status(500),
    ])
    .await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    let id = endpoint["id"].as_str().unwrap().to_owned();

    app.stream_session(&session_body(json!({}))).await;
    let failed = eventually("the message failed", Duration::from_secs(60), || async {
        let listed = deliveries(&app, &endpoint).await;
        (listed.first().is_some_and(|d| d["state"] == "failed")).then(|| listed[0].clone())
    })
    .await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 2);
    assert!(
        failed["attempts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 2s"),
        "{failed}"
    );
    let message = failed["message_id"].as_str().unwrap();
    let resent = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/deliveries/{message}/resend")))
        .send()
        .await
        .unwrap();
    let got = receiver.wait_for(3, Duration::from_secs(60)).await;

    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    assert_eq!(got[2].id(), message, "the same webhook-id");
    let unknown = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/deliveries/msg_nothere/resend")))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    app.stream_session(&session_body(json!({}))).await;
    receiver.wait_for(5, Duration::from_secs(60)).await;
    eventually(
        "the second message failed",
        Duration::from_secs(60),
        || async {
            let listed = deliveries(&app, &endpoint).await;
            (listed.len() == 2 && listed[0]["state"] == "failed").then_some(())
        },
    )
    .await;
    let recovered: Value = fetch(
        app.client
            .post(app.url(&format!("/v1/webhooks/{id}/recover")))
            .json(&json!({ "since": "2000-01-01T00:00:00Z" })),
    )
    .await;
    let got = receiver.wait_for(6, Duration::from_secs(60)).await;

    assert_eq!(recovered["recovered"], 1, "only the failed message");
    assert_eq!(got[5].id(), got[3].id());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_for_too_long_is_disabled_until_enabled_again() {
    let app = spawn_app_with(|s| {
        with_schedule("0s,1h,1h,1h,1h")(s);
        s.webhooks.disable_after = "2h".into();
        // Hours pass in this test: a slower poll keeps the dispatcher's loop short.
        s.webhooks.poll_interval_ms = 10_000;
    })
    .await;
    let receiver = Receiver::start([Reply::Status(500); 3]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    let url = app.url(&format!(
        "/v1/webhooks/{}",
        endpoint["id"].as_str().unwrap()
    ));
    let show = || {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            let shown: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            shown
        }
    };

    app.stream_session(&session_body(json!({}))).await;
    let failing = eventually("a failing streak", Duration::from_secs(60), || async {
        let shown = show().await;
        shown["failing_since"].is_string().then_some(shown)
    })
    .await;
    receiver.wait_for(3, Duration::from_secs(4 * 3600)).await;
    let disabled = eventually("the endpoint disabled", Duration::from_secs(60), || async {
        let shown = show().await;
        (shown["enabled"] == false).then_some(shown)
    })
    .await;

    assert!(failing["enabled"].as_bool().unwrap());
    assert_eq!(disabled["disabled_reason"], "failing");
    assert_eq!(receiver.received().len(), 3, "nothing sent while disabled");
    let enabled = app
        .client
        .patch(&url)
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), StatusCode::OK);
    receiver.wait_for(4, Duration::from_secs(2 * 3600)).await;
    let healthy = eventually("the streak over", Duration::from_secs(60), || async {
        let shown = show().await;
        shown["failing_since"].is_null().then_some(shown)
    })
    .await;
    assert_eq!(healthy["enabled"], true);
    assert!(healthy.get("disabled_reason").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_never_delays_another_endpoints_messages() {
    let app = spawn_app_with(|s| {
        with_schedule("0s,1h")(s);
        s.webhooks.timeout = "15s".into();
        s.webhooks.max_per_endpoint = 1;
    })
    .await;
    let stuck = Receiver::start([Reply::Hang, Reply::Hang, Reply::Hang]).await;
    let quick = Receiver::start([]).await;
    register(&app, &app.client, &stuck.url).await;
    register(&app, &app.client, &quick.url).await;
    let started = Instant::now();

    for _ in 0..3 {
        app.stream_session(&session_body(json!({}))).await;
    }
    let delivered = quick.wait_for(3, Duration::from_secs(60)).await;

    assert!(
        delivered[2].at - started < Duration::from_secs(15),
        "delivered before the stuck endpoint's first attempt timed out"
    );
    assert_eq!(
        stuck.received().len(),
        1,
        "one attempt at a time per endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn another_tenants_endpoint_never_receives_a_message_nor_is_seen() {
    let app = spawn_app_with(with_schedule("0s")).await;
    let (globex_key, _) = app
        .keys
        .create(NewKey::new("globex".parse().unwrap(), Mode::Test))
        .await
        .unwrap();
    let globex = client_with(&globex_key);
    let theirs = Receiver::start([]).await;
    let ours = Receiver::start([]).await;
    let their_endpoint = register(&app, &globex, &theirs.url).await;
    register(&app, &app.client, &ours.url).await;

    app.stream_session(&session_body(json!({}))).await;
    app.stream_session(&session_body(json!({}))).await;
    ours.wait_for(2, Duration::from_secs(30)).await;
    let peek = app
        .client
        .get(app.url(&format!(
            "/v1/webhooks/{}",
            their_endpoint["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let listed: Value = fetch(app.client.get(app.url("/v1/webhooks"))).await;

    assert!(theirs.received().is_empty());
    assert_eq!(peek.status(), StatusCode::NOT_FOUND);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rotated_secret_signs_beside_the_new_one_for_the_grace() {
    let app = spawn_app_with(|s| {
        with_schedule("0s")(s);
        s.webhooks.rotation_grace = "1m".into();
    })
    .await;
    let receiver = Receiver::start([]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    let id = endpoint["id"].as_str().unwrap();

    let rotated: Value = fetch(
        app.client
            .post(app.url(&format!("/v1/webhooks/{id}/rotate-secret"))),
    )
    .await;
    app.stream_session(&session_body(json!({}))).await;
    let during = receiver.wait_for(1, Duration::from_secs(30)).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    app.stream_session(&session_body(json!({}))).await;
    let after = receiver.wait_for(2, Duration::from_secs(30)).await;

    let (old, new) = (
        endpoint["secret"].as_str().unwrap(),
        rotated["secret"].as_str().unwrap(),
    );
    assert_ne!(old, new);
    assert!(rotated["previous_secret_expires_at"].is_string());
    assert_eq!(during[0].header("webhook-signature").split(' ').count(), 2);
    verify(old, &during[0]).expect("the old secret still verifies");
    verify(new, &during[0]).expect("the new secret verifies");
    assert_eq!(after[1].header("webhook-signature").split(' ').count(), 1);
    verify(new, &after[1]).expect("the new secret alone");
    assert!(verify(old, &after[1]).is_err(), "the old secret is retired");
}

#[tokio::test]
async fn endpoints_are_managed_and_bad_input_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    let post = |body: Value| {
        let (client, url) = (app.client.clone(), app.url("/v1/webhooks"));
        async move { client.post(url).json(&body).send().await.unwrap() }
    };

    let made =
        post(json!({ "url": "http://127.0.0.1:9/hook", "events": ["session.completed"] })).await;
    let unknown_type =
        post(json!({ "url": "https://example.com/", "events": ["session.started"] })).await;
    let unknown_field = post(json!({ "url": "https://example.com/", "secret": "mine" })).await;
    let not_a_url = post(json!({ "url": "example.com" })).await;
    let not_json = app
        .client
        .post(app.url("/v1/webhooks"))
        .body("{")
        .send()
        .await
        .unwrap();

    assert_eq!(made.status(), StatusCode::CREATED);
    let location = made.headers()["location"].to_str().unwrap().to_owned();
    let made: Value = made.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/webhooks/{}", made["id"].as_str().unwrap())
    );
    assert!(made["secret"].as_str().unwrap().starts_with("whsec_"));
    for refused in [unknown_type, unknown_field, not_a_url] {
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = refused.json().await.unwrap();
        assert!(problem["errors"][0]["field"].is_string(), "{problem}");
    }
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let paused: Value = fetch(
        app.client
            .patch(app.url(&location))
            .json(&json!({ "enabled": false, "description": "paused" })),
    )
    .await;
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["description"], "paused");
    let deleted = app.client.delete(app.url(&location)).send().await.unwrap();
    let again = app.client.delete(app.url(&location)).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let mut reader = NewKey::new("acme".parse().unwrap(), Mode::Test);
    reader.scopes = Scopes::only([Scope::SessionsRead]);
    let limited = client_with(&app.keys.create(reader).await.unwrap().0);
    let forbidden = limited.get(app.url("/v1/webhooks")).send().await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn targets_on_this_network_and_plain_http_are_refused_in_production() {
    let app = spawn_app_with(|s| {
        s.webhooks.allow_insecure_http = false;
        s.webhooks.allow_private_targets = false;
    })
    .await;
    let mut refusals = HashMap::new();

    for url in [
        "http://example.com/hook",
        "https://localhost:8443/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
    ] {
        let answer = app
            .client
            .post(app.url("/v1/webhooks"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let problem: Value = answer.json().await.unwrap();
        refusals.insert(
            url,
            problem["errors"][0]["code"].as_str().unwrap().to_owned(),
        );
    }

    assert_eq!(refusals["http://example.com/hook"], "bad_url");
    for (url, code) in &refusals {
        if !url.starts_with("http:") {
            assert_eq!(code, "target_not_allowed", "{url}");
        }
    }
}

/// The instance dies after a session completed and its message's first attempt failed; the
/// next instance on the same database sends it again, under the same `webhook-id`.
async fn a_message_survives_a_crash_between_completion_and_delivery(backend: Backend) {
    let store = TestStore::new(backend).await;
    let receiver = Receiver::start([Reply::Status(503)]).await;
    let configure = |s: &mut Settings| {
        store.configure(s);
        s.webhooks.retry_schedule = "0s,1s".into();
        s.webhooks.poll_interval_ms = 50;
    };
    let first = spawn_crashable_app(configure);
    let endpoint: Value = fetch(
        first
            .client
            .post(first.url("/v1/webhooks"))
            .json(&json!({ "url": receiver.url })),
    )
    .await;
    let deliveries_url = first.url(&format!(
        "/v1/webhooks/{}/deliveries",
        endpoint["id"].as_str().unwrap()
    ));
    first
        .client
        .post(first.url("/v1/sessions"))
        .json(&session_body(json!({})))
        .send()
        .await
        .unwrap();
    eventually(
        "the first attempt recorded",
        Duration::from_secs(30),
        || async {
            let page: Value = first
                .client
                .get(&deliveries_url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (page["data"][0]["attempts"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    first.crash();

    let second = spawn_app_with(configure).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;

    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id(), got[1].id());
    drop(second);
}

/// Two instances on one database: every message arrives, none twice.
async fn two_instances_deliver_every_message_once(backend: Backend) {
    let store = TestStore::new(backend).await;
    let receiver = Receiver::start([]).await;
    let configure = |s: &mut Settings| {
        store.configure(s);
        s.webhooks.retry_schedule = "0s".into();
        s.webhooks.poll_interval_ms = 20;
    };
    let one = spawn_app_with(configure).await;
    let two = spawn_app_with(configure).await;
    let endpoint = register(&one, &one.client, &receiver.url).await;

    let instant = json!({
        "liveness": { "latency_ms": 0 }, "doc_capture": { "latency_ms": 0 },
        "ocr": { "latency_ms": 0 }, "face_match": { "latency_ms": 0 },
    });
    let body = session_body(instant);
    let streams = (0..20).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        app.stream_session(&body)
    });
    let mut sessions: Vec<String> = futures::future::join_all(streams)
        .await
        .iter()
        .map(|events| {
            completion(events)["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    receiver.wait_for(20, Duration::from_secs(30)).await;
    // Every delivery recorded as delivered: nothing is claimable any more, so nothing more
    // can be sent.
    let url = one.url(&format!(
        "/v1/webhooks/{}/deliveries?limit=100",
        endpoint["id"].as_str().unwrap()
    ));
    let recorded = eventually(
        "every delivery recorded",
        Duration::from_secs(30),
        || async {
            let page: Value = one.client.get(&url).send().await.ok()?.json().await.ok()?;
            let data = page["data"].as_array()?.clone();
            (data.len() == 20 && data.iter().all(|d| d["state"] == "delivered")).then_some(data)
        },
    )
    .await;

    let got = receiver.received();
    assert!(
        recorded
            .iter()
            .all(|d| d["attempts"].as_array().unwrap().len() == 1),
        "one attempt each"
    );
    let mut ids: Vec<String> = got.iter().map(Received::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "no webhook-id twice");
    let mut reported: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["session_id"].as_str().unwrap().to_owned())
        .collect();
    reported.sort();
    sessions.sort();
    assert_eq!(reported, sessions, "every session once");
}

on_every_backend!(
    a_message_survives_a_crash_between_completion_and_delivery,
    two_instances_deliver_every_message_once,
);

#[tokio::test(start_paused = true)]
async fn finished_messages_are_forgotten_after_keep_days() {
    let app = spawn_app_with(|s| {
        with_schedule("0s")(s);
        s.webhooks.keep_days = 1;
    })
    .await;
    let receiver = Receiver::start([]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;

    app.stream_session(&session_body(json!({}))).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    eventually("the delivery recorded", Duration::from_secs(30), || async {
        (deliveries(&app, &endpoint).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;

    eventually(
        "the message forgotten",
        Duration::from_secs(2 * 3600),
        || async { deliveries(&app, &endpoint).await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_endpoints_messages_wait_for_it() {
    let app = spawn_app_with(with_schedule("0s")).await;
    let receiver = Receiver::start([]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    let url = app.url(&format!(
        "/v1/webhooks/{}",
        endpoint["id"].as_str().unwrap()
    ));
    let pause = |enabled: bool| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            let answer = client.patch(url).json(&json!({ "enabled": enabled }));
            assert_eq!(answer.send().await.unwrap().status(), StatusCode::OK);
        }
    };

    pause(false).await;
    app.stream_session(&session_body(json!({}))).await;
    let waiting = eventually("the message routed", Duration::from_secs(30), || async {
        let listed = deliveries(&app, &endpoint).await;
        (listed.len() == 1).then_some(listed)
    })
    .await;
    let unsent = receiver.received().len();
    pause(true).await;
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;

    assert_eq!(waiting[0]["state"], "pending");
    assert_eq!(unsent, 0, "nothing sent while paused");
    assert_eq!(got[0].id(), waiting[0]["message_id"].as_str().unwrap());
}

/// A session the agents send to review reports `session.completed` with decision `review`,
/// then `session.reviewed` once a reviewer resolves it: the reviewers' decision beside the
/// agents', and never the reviewer's note.
#[tokio::test(start_paused = true)]
async fn a_resolved_review_sends_session_reviewed() {
    let app = spawn_app_with(with_schedule("0s")).await;
    let receiver = Receiver::start([]).await;
    let endpoint = register(&app, &app.client, &receiver.url).await;
    assert_eq!(
        endpoint["events"],
        json!(["session.completed", "session.reviewed"]),
        "every type unless chosen"
    );
    let events = app
        .stream_session(&session_body(json!({
            "doc_capture": { "result": "fail", "reason": "too_blurry" }
        })))
        .await;
    let id = completion(&events)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decided = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/review")))
        .json(&json!({
            "decision": "declined",
            "reasons": ["document_fraud"],
            "note": "the applicant's name was misspelt",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);

    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    let mut sent: Vec<Value> = got.iter().map(Received::json).collect();
    sent.sort_by_key(|m| m["data"]["seq"].as_u64());
    assert_eq!(sent[0]["type"], "session.completed");
    assert_eq!(sent[0]["data"]["decision"], "review");
    let reviewed = &sent[1];
    assert_eq!(reviewed["type"], "session.reviewed");
    assert_eq!(reviewed["data"]["session_id"], id.as_str());
    assert_eq!(reviewed["data"]["decision"], "declined");
    assert_eq!(reviewed["data"]["reasons"], json!(["document_fraud"]));
    assert_eq!(reviewed["data"]["automated_decision"], "review");
    assert_eq!(reviewed["data"]["automated_reasons"], json!(["too_blurry"]));
    let history = app.events(&id, None).await;
    assert_eq!(reviewed["data"]["seq"], history.last().unwrap()["seq"]);
    assert_eq!(history.last().unwrap()["type"], "review.resolved");
    assert!(
        got.iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("misspelt")),
        "no note in a message"
    );
    for message in &got {
        verify(endpoint["secret"].as_str().unwrap(), message).expect("a valid signature");
    }
}
