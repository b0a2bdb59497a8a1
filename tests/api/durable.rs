//! Durable sessions, against every database backend: the same tests run on a SQLite file and on
//! PostgreSQL (a fresh database per test on the server `KYC_TEST_POSTGRES` names, by default
//! `postgres://postgres:postgres@127.0.0.1:5432`; `scripts/test.sh` makes sure one runs).
//!
//! These run on the real clock: the store's connections live on their own threads, which paused
//! tokio time cannot see. Nothing here waits a fixed time: each test polls for the state it
//! expects, bounded by `PATIENCE`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::helpers::{
    TestApp, completion, eventually, session_body, spawn_app_with, spawn_crashable_app,
};

/// Longest any test waits for a state it expects.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One database (and blob directory) that several instances can open in turn.
pub struct TestStore {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/kyc.db", dir.path().display()),
            Backend::Postgres => {
                let server = std::env::var("KYC_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into());
                let name = format!("kyc_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL must run at {server} (scripts/test.sh starts it): {e}")
                    });
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap();
                format!("{server}/{name}")
            }
        };
        Self { url, dir }
    }

    /// Points `settings` at this store, with a short heartbeat and lease so that recovery
    /// happens within a test.
    pub fn configure(&self, settings: &mut kyc_orchestrator::Settings) {
        settings.store.url = self.url.clone();
        settings.store.blob_dir = self.dir.path().join("blobs");
        settings.store.heartbeat_ms = 100;
        settings.store.lease_ms = 600;
        settings.store.poll_interval_ms = 20;
        settings.store.acquire_timeout_ms = 500;
    }
}

async fn app_on(store: &TestStore) -> TestApp {
    spawn_app_with(|s| store.configure(s)).await
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Starts a session whose `ocr` takes `ocr_latency_ms` on an instance of `store`, then crashes
/// that instance once the session is accepted. Returns the session's id.
async fn start_then_crash(store: &TestStore, ocr_latency_ms: u64) -> String {
    let crashing = spawn_crashable_app(|s| store.configure(s));
    let body = session_body(json!({ "ocr": { "latency_ms": ocr_latency_ms } }));
    let response = crashing
        .client
        .post(crashing.url("/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crashing.crash();
    id
}

async fn a_session_survives_the_crash_of_its_instance(backend: Backend) {
    let store = TestStore::new(backend).await;
    // Slow enough that the crash comes while it runs.
    let id = start_then_crash(&store, 1500).await;

    let survivor = app_on(&store).await;
    let events = survivor.events(&id, None).await;

    assert_eq!(
        seqs(&events),
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "one history without gaps: {:?}",
        types(&events)
    );
    // The crash may come before the first event is stored: then the history opens with the
    // resumption.
    let kinds = types(&events);
    assert!(
        ["session.started", "session.resumed"].contains(&kinds[0]),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|&&k| k == "session.resumed").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(completion(&events)["decision"], "approved");
    let session: Value = survivor.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["status"], "completed");
    assert_eq!(session["decision"], "approved");
}

async fn a_session_past_the_recovery_window_completes_as_interrupted(backend: Backend) {
    let store = TestStore::new(backend).await;
    let id = start_then_crash(&store, 60000).await;

    let survivor = spawn_app_with(|s| {
        store.configure(s);
        s.orchestrator.recovery_window_ms = 0;
    })
    .await;
    let events = survivor.events(&id, None).await;

    let kinds = types(&events);
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["session.interrupted", "session.completed", "review.opened"],
        "an interrupted session waits for a reviewer"
    );
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    let done = completion(&events);
    assert_eq!(done["decision"], "review");
    assert_eq!(done["reasons"], json!(["interrupted"]));
}

async fn a_session_started_on_one_instance_streams_from_another(backend: Backend) {
    let store = TestStore::new(backend).await;
    let a = app_on(&store).await;
    let b = app_on(&store).await;
    let id = a
        .start_session(&session_body(json!({ "ocr": { "latency_ms": 300 } })))
        .await;

    let from_b = b.events(&id, None).await;
    let from_a = a.events(&id, None).await;

    assert_eq!(from_b, from_a, "the same history, byte for byte");
    assert_eq!(completion(&from_b)["decision"], "approved");
    let on_b: Value = b.get_session(&id).await.json().await.unwrap();
    assert_eq!(on_b["decision"], "approved");
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/sessions"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_repeated_idempotency_key_names_the_first_session(backend: Backend) {
    let store = TestStore::new(backend).await;
    let app = app_on(&store).await;
    let body = session_body(json!({}));

    let first = post_with_key(&app, "order-1234", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = post_with_key(&app, "order-1234", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let mut other = body.clone();
    other["reference"] = json!("another-customer");
    let conflict = post_with_key(&app, "order-1234", &other).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let problem: Value = conflict.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:idempotency-key-reused"
    );

    let unkeyed = app.start_session(&body).await;
    assert_ne!(json!(unkeyed), first["id"], "no key, no replay");
    let bad = post_with_key(&app, "", &body).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// A liveness challenge issued by one instance is answered once, on another, and a repeated
/// request with the same `Idempotency-Key` names that session rather than being refused.
async fn a_challenge_is_answered_once_across_instances(backend: Backend) {
    let store = TestStore::new(backend).await;
    let issuer = app_on(&store).await;
    let other = app_on(&store).await;
    let challenge = issuer.issue_challenge().await;
    let mut body = session_body(json!({}));
    body["selfie"]["challenge_id"] = challenge["id"].clone();

    let first = post_with_key(&other, "capture-1", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = post_with_key(&issuer, "capture-1", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let used = issuer.post_session(&body).await;
    assert_eq!(used.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = used.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "challenge_used");
}

async fn erasure_removes_personal_data_and_keeps_the_decision(backend: Backend) {
    let store = TestStore::new(backend).await;
    let app = app_on(&store).await;
    let extracted = json!({ "surname": "ERIKSSON", "document_number": "L898902C3" });
    let events = app
        .stream_session(&session_body(json!({ "ocr": { "extracted": extracted } })))
        .await;
    let id = events[0]["session_id"].as_str().unwrap().to_owned();
    assert_eq!(completion(&events)["checks"]["ocr"]["extracted"], extracted);
    let blobs = walk(&store.dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "the inputs are kept: {blobs:?}");

    let delete = |id: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&format!("/v1/sessions/{id}")))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(id.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(
        delete(id.clone()).await,
        StatusCode::NO_CONTENT,
        "idempotent"
    );

    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["decision"], "approved");
    assert!(session["erased_at"].is_string());
    assert!(session["checks"]["ocr"].get("extracted").is_none());
    assert_eq!(session["checks"]["ocr"]["status"], "passed");
    let replay = app.events(&id, None).await;
    assert_eq!(replay.len(), events.len());
    assert!(
        completion(&replay)["checks"]["ocr"]
            .get("extracted")
            .is_none()
    );
    assert!(walk(&store.dir.path().join("blobs")).is_empty());

    let running = app
        .start_session(&session_body(json!({ "ocr": { "latency_ms": 60000 } })))
        .await;
    assert_eq!(delete(running).await, StatusCode::CONFLICT);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(delete(unknown).await, StatusCode::NOT_FOUND);
}

async fn the_retention_sweep_erases_what_has_expired(backend: Backend) {
    let store = TestStore::new(backend).await;
    let app = app_on(&store).await;
    let extracted = json!({ "surname": "ERIKSSON" });
    let mut ids = Vec::new();
    for _ in 0..3 {
        let events = app
            .stream_session(&session_body(json!({ "ocr": { "extracted": extracted } })))
            .await;
        ids.push(events[0]["session_id"].as_str().unwrap().to_owned());
    }
    let retention = kyc_orchestrator::config::RetentionSettings {
        images_days: 1,
        personal_data_days: 2,
        review_hold_days: 90,
        sweep_interval_s: 60,
        batch_size: 2,
    };

    let now = chrono::Utc::now();
    let today = app.orchestrator.sweep(&retention, now).await.unwrap();
    assert_eq!(
        (today.images, today.personal_data),
        (0, 0),
        "nothing is due yet"
    );

    let later = now + chrono::Duration::hours(36);
    let swept = app.orchestrator.sweep(&retention, later).await.unwrap();
    assert_eq!((swept.images, swept.personal_data), (3, 0));
    assert!(walk(&store.dir.path().join("blobs")).is_empty());
    let session: Value = app.get_session(&ids[0]).await.json().await.unwrap();
    assert_eq!(session["checks"]["ocr"]["extracted"], extracted);

    let much_later = now + chrono::Duration::days(3);
    let swept = app
        .orchestrator
        .sweep(&retention, much_later)
        .await
        .unwrap();
    assert_eq!(swept.personal_data, 3);
    for id in &ids {
        let session: Value = app.get_session(id).await.json().await.unwrap();
        assert!(session["checks"]["ocr"].get("extracted").is_none());
        assert_eq!(session["decision"], "approved");
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_every_backend!(
    a_session_survives_the_crash_of_its_instance,
    a_session_past_the_recovery_window_completes_as_interrupted,
    a_session_started_on_one_instance_streams_from_another,
    a_repeated_idempotency_key_names_the_first_session,
    a_challenge_is_answered_once_across_instances,
    erasure_removes_personal_data_and_keeps_the_decision,
    the_retention_sweep_erases_what_has_expired,
);

/// An instance on a fresh PostgreSQL database that it reaches through a proxy the test can cut
/// or stall, configured further by `configure`.
async fn behind_a_proxy(
    configure: impl FnOnce(&mut kyc_orchestrator::Settings),
) -> (TestStore, crate::helpers::TcpProxy, TestApp) {
    let store = TestStore::new(Backend::Postgres).await;
    let proxy = crate::helpers::TcpProxy::start("127.0.0.1:5432").await;
    let url = store.url.replace("127.0.0.1:5432", &proxy.address());
    let app = spawn_app_with(|s| {
        store.configure(s);
        s.store.url = url;
        configure(s);
    })
    .await;
    (store, proxy, app)
}

/// Returns once a statement of the database's waits for a lock (one the test holds), naming
/// `what` if it never comes.
async fn waiting_on_a_lock(watcher: &sqlx::PgPool, what: &str) {
    eventually(what, PATIENCE, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(watcher)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
}

/// PostgreSQL going away (a proxy in front of it is cut): new sessions get 503, readiness turns
/// 503, liveness stays 200, and a session that was running completes once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_gives_503_and_loses_nothing() {
    let (_store, proxy, app) = behind_a_proxy(|_| {}).await;
    let running = app
        .start_session(&session_body(json!({ "ocr": { "latency_ms": 500 } })))
        .await;

    proxy.cut();
    let refused = eventually("a 503 for a new session", PATIENCE, || async {
        let response = app.post_session(&session_body(json!({}))).await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:store-unavailable"
    );
    let ready = eventually("readiness 503", PATIENCE, || async {
        let response = app.get("/health/ready").await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "store_unavailable");
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);

    proxy.restore();
    eventually("readiness 200", PATIENCE, || async {
        (app.get("/health/ready").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    let session: Value = eventually("the running session's completion", PATIENCE, || async {
        let session: Value = app.get_session(&running).await.json().await.ok()?;
        (session["status"] == "completed").then_some(session)
    })
    .await;
    assert_eq!(session["decision"], "approved");
    let events = app.events(&running, None).await;
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(app.start_session(&session_body(json!({}))).await.len(), 36);
}

/// PostgreSQL stops answering without closing anything (a half-open connection, as a network
/// partition leaves it) while a read is on its way: the read answers 503 within
/// `store.read_timeout_ms`, not when TCP gives up minutes later, and the instance serves again
/// once the database is back. The read is held in the server (another connection locks the
/// table) until the proxy has stalled, so the partition comes exactly while it is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_a_silent_postgresql_answers_503_in_bounded_time() {
    let (store, proxy, app) = behind_a_proxy(|s| s.store.read_timeout_ms = 500).await;
    let events = app.stream_session(&session_body(json!({}))).await;
    let id = completion(&events)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut admin = sqlx::PgConnection::connect(&store.url).await.unwrap();
    admin.execute("BEGIN").await.unwrap();
    admin
        .execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let read = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/sessions/{id}")));
        async move {
            let started = tokio::time::Instant::now();
            let answer = client.get(url).send().await.unwrap();
            (answer, started.elapsed())
        }
    });
    let watcher = sqlx::PgPool::connect(&store.url).await.unwrap();
    waiting_on_a_lock(&watcher, "the read waiting in the server").await;
    proxy.stall();
    admin.execute("COMMIT").await.unwrap();

    // Far below TCP's own give-up (about 15 minutes of retransmissions on Linux), far above
    // the limit.
    let (answered, took) = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer while the database is silent")
        .unwrap();
    assert_eq!(
        answered.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{took:?}"
    );
    let problem: Value = answered.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:kyc-orchestrator:problem:store-unavailable"
    );

    proxy.unstall();
    let session: Value = eventually("reads served again", PATIENCE, || async {
        let response = app.get_session(&id).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json().await.ok()
    })
    .await;
    assert_eq!(session["decision"], "approved");
}

/// PostgreSQL commits a new session's insert, and the answer never comes back (the network
/// goes silent while the commit is on its way back): the client is told 503, and the row, which
/// has no runner, is completed as `interrupted` once the database answers again, within the
/// lease. The commit is held in the server (a deferred trigger waits for a lock the test holds)
/// until the proxy has stalled, so the partition comes exactly between commit and answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_insert_answer_was_lost_is_completed_as_interrupted() {
    let (store, proxy, app) = behind_a_proxy(|s| s.store.write_timeout_ms = 500).await;
    let warm = app.stream_session(&session_body(json!({}))).await;
    let first = completion(&warm)["session_id"].as_str().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&store.url).await.unwrap();
    admin
        .execute(
            "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON sessions \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit();",
        )
        .await
        .unwrap();
    admin
        .execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();

    let refused = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/v1/sessions"));
        async move {
            let body = session_body(json!({}));
            client.post(url).json(&body).send().await.unwrap()
        }
    });
    let watcher = sqlx::PgPool::connect(&store.url).await.unwrap();
    waiting_on_a_lock(&watcher, "the commit waiting in the server").await;
    proxy.stall();
    admin
        .execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let committed: String = eventually("the insert committed", PATIENCE, || async {
        sqlx::query_scalar("SELECT id FROM sessions WHERE id <> $1")
            .bind(&first)
            .fetch_optional(&watcher)
            .await
            .unwrap()
    })
    .await;

    let refused = tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .expect("an answer while the database is silent")
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.unstall();
    let session: Value = eventually("the session completed as interrupted", PATIENCE, || async {
        let session: Value = app.get_session(&committed).await.json().await.ok()?;
        (session["status"] == "completed").then_some(session)
    })
    .await;
    assert_eq!(session["decision"], "review");
    assert_eq!(session["reasons"], json!(["interrupted"]));
    let events = app.events(&committed, None).await;
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0]["type"], "session.interrupted");
}
