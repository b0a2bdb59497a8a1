//! API keys: every route needs one, a key sees only its tenant's sessions in its mode, scopes
//! and rate limits hold, revocations reach every instance, and no key ever reaches a log line.

use std::collections::HashSet;
use std::time::Duration;

use kyc_orchestrator::auth::{ApiKey, NewKey};
use kyc_orchestrator::domain::{Mode, Scope, Scopes};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::durable::{Backend, TestStore};
use crate::helpers::{
    TENANT, TestApp, client_with, eventually, logs, session_body, spawn_app, spawn_app_with,
};

/// A key of `tenant` in `mode` with `scopes`, from the app's store.
async fn key(app: &TestApp, tenant: &str, mode: Mode, scopes: Scopes) -> ApiKey {
    let mut new = NewKey::new(tenant.parse().unwrap(), mode);
    new.scopes = scopes;
    app.keys.create(new).await.unwrap().0
}

/// A key of [`TENANT`], revoked.
async fn revoked_key(app: &TestApp) -> ApiKey {
    let (key, record) = app
        .keys
        .create(NewKey::new(TENANT.parse().unwrap(), Mode::Test))
        .await
        .unwrap();
    app.keys.revoke(&record.id).await.unwrap();
    key
}

/// A well-formed key that no store holds.
fn unknown_key() -> ApiKey {
    ApiKey::generate(Mode::Test)
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Create,
    List,
    Show,
    Events,
    Erase,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Create,
        Route::List,
        Route::Show,
        Route::Events,
        Route::Erase,
    ];

    fn scope(self) -> Scope {
        match self {
            Route::Create => Scope::SessionsWrite,
            Route::List | Route::Show | Route::Events => Scope::SessionsRead,
            Route::Erase => Scope::SessionsErase,
        }
    }

    async fn send(self, app: &TestApp, client: &reqwest::Client, id: &str) -> reqwest::Response {
        let request = match self {
            // Unscripted, which a live key may send too.
            Route::Create => {
                let mut body = session_body(json!({}));
                body.as_object_mut().unwrap().remove("sandbox");
                client.post(app.url("/v1/sessions")).json(&body)
            }
            Route::List => client.get(app.url("/v1/sessions")),
            Route::Show => client.get(app.url(&format!("/v1/sessions/{id}"))),
            Route::Events => client.get(app.url(&format!("/v1/sessions/{id}/events"))),
            Route::Erase => client.delete(app.url(&format!("/v1/sessions/{id}"))),
        };
        request.send().await.unwrap()
    }

    /// What the key that owns the session gets.
    fn own(self) -> StatusCode {
        match self {
            Route::Create => StatusCode::ACCEPTED,
            Route::Erase => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        }
    }

    /// What another tenant's key gets: for a route naming the session, exactly an unknown id's
    /// answer.
    fn other(self) -> StatusCode {
        match self {
            Route::Create => StatusCode::ACCEPTED,
            Route::List => StatusCode::OK,
            _ => StatusCode::NOT_FOUND,
        }
    }
}

async fn problem(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    (status, challenge, response.json().await.unwrap())
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_the_contract_says() {
    let app = spawn_app().await;
    let id = app.stream_session(&session_body(json!({}))).await[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = client_with(&key(&app, "globex", Mode::Test, Scopes::All).await);
    let live = client_with(&key(&app, TENANT, Mode::Live, Scopes::All).await);
    let revoked = client_with(&revoked_key(&app).await);
    let anonymous = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds");
    let unknown = client_with(&unknown_key());
    let garbage = kyc_orchestrator::http::client()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                "Bearer %%not-a-key".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();

    for route in Route::ALL {
        let others: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|&s| s != route.scope())
            .collect();
        let unscoped = client_with(&key(&app, TENANT, Mode::Test, Scopes::only(others)).await);

        for (who, client, reason) in [
            ("no key", &anonymous, "missing"),
            ("an unknown key", &unknown, "unknown"),
            ("a malformed header", &garbage, "malformed"),
            ("a revoked key", &revoked, "revoked"),
        ] {
            let (status, challenge, body) = problem(route.send(&app, client, &id).await).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{route:?} with {who}");
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer realm=\"kyc\"")),
                "{route:?} with {who}"
            );
            assert_eq!(body["type"], "urn:kyc-orchestrator:problem:unauthorized");
            assert!(body["detail"].as_str().unwrap().contains(reason), "{body}");
        }

        let (status, _, body) = problem(route.send(&app, &unscoped, &id).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route:?} without its scope");
        assert_eq!(body["type"], "urn:kyc-orchestrator:problem:forbidden");

        for (who, client) in [("another tenant", &other), ("a live key", &live)] {
            let response = route.send(&app, client, &id).await;
            assert_eq!(response.status(), route.other(), "{route:?} with {who}");
            if let Route::List = route {
                let page: Value = response.json().await.unwrap();
                assert!(
                    !page["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["id"] == id.as_str()),
                    "{who} lists the session"
                );
            }
        }

        let response = route.send(&app, &app.client, &id).await;
        assert_eq!(response.status(), route.own(), "{route:?} by its owner");
    }

    let erased: Value = app.get_session(&id).await.json().await.unwrap();
    let own_id = app.keys.list(None).await.unwrap()[0].id.to_string();
    assert_eq!(erased["created_by"], own_id.as_str());
    assert_eq!(erased["erased_by"], own_id.as_str());
}

#[tokio::test]
async fn a_live_key_may_not_script_sandbox_agents() {
    let app = spawn_app().await;
    let live = client_with(&key(&app, TENANT, Mode::Live, Scopes::All).await);

    let scripted = live
        .post(app.url("/v1/sessions"))
        .json(&session_body(json!({})))
        .send()
        .await
        .unwrap();
    let mut plain = session_body(json!({}));
    plain.as_object_mut().unwrap().remove("sandbox");
    let unscripted = live
        .post(app.url("/v1/sessions"))
        .json(&plain)
        .send()
        .await
        .unwrap();

    let (status, _, body) = problem(scripted).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("test keys"));
    assert_eq!(unscripted.status(), StatusCode::ACCEPTED);
    let session: Value = unscripted.json().await.unwrap();
    let shown: Value = live
        .get(app.url(&format!("/v1/sessions/{}", session["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["mode"], "live");
}

#[tokio::test]
async fn the_same_idempotency_key_from_two_tenants_makes_two_sessions() {
    let app = spawn_app().await;
    let other = client_with(&key(&app, "globex", Mode::Test, Scopes::All).await);
    let post = |client: &reqwest::Client| {
        client
            .post(app.url("/v1/sessions"))
            .header("Idempotency-Key", "order-42")
            .json(&session_body(json!({})))
            .send()
    };

    let ours = post(&app.client).await.unwrap();
    let theirs = post(&other).await.unwrap();
    let ours_again = post(&app.client).await.unwrap();

    assert_eq!(ours.status(), StatusCode::ACCEPTED);
    assert_eq!(
        theirs.status(),
        StatusCode::ACCEPTED,
        "not a replay of ours"
    );
    assert_eq!(ours_again.status(), StatusCode::OK);
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let ours = id(ours.json().await.unwrap());
    assert_ne!(ours, id(theirs.json().await.unwrap()));
    assert_eq!(ours, id(ours_again.json().await.unwrap()));
}

/// Every page of `client`'s list, following cursors, with `query`.
async fn all_pages(app: &TestApp, client: &reqwest::Client, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url(&format!("/v1/sessions?{query}"));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        items.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_list_pages_newest_first_without_gaps_or_repeats_while_sessions_arrive() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for _ in 0..23 {
        made.push(app.start_session(&session_body(json!({}))).await);
    }
    let other = client_with(&key(&app, "globex", Mode::Test, Scopes::All).await);
    other
        .post(app.url("/v1/sessions"))
        .json(&session_body(json!({})))
        .send()
        .await
        .unwrap();

    let arriving = {
        let (client, url) = (app.client.clone(), app.url("/v1/sessions"));
        tokio::spawn(async move {
            for _ in 0..10 {
                client
                    .post(&url)
                    .json(&session_body(json!({})))
                    .send()
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let listed = all_pages(&app, &app.client, "limit=5").await;
    arriving.await.unwrap();

    let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no session twice");
    let older: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| made.iter().any(|m| m == id))
        .collect();
    let newest_first: Vec<&str> = made.iter().rev().map(String::as_str).collect();
    assert_eq!(older, newest_first, "every earlier session, in order");
    let created: Vec<chrono::DateTime<chrono::Utc>> = listed
        .iter()
        .map(|s| s["created_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
}

#[tokio::test(start_paused = true)]
async fn the_list_filters_and_refuses_what_it_cannot_read() {
    let app = spawn_app().await;
    let declined = app
        .stream_session(&session_body(json!({ "liveness": { "result": "fail" } })))
        .await;
    let declined = declined[0]["session_id"].as_str().unwrap().to_owned();
    let mut tagged = session_body(json!({}));
    tagged["reference"] = json!("customer-7");
    let approved = app.stream_session(&tagged).await[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = |query: &str| {
        let url = app.url(&format!("/v1/sessions?{query}"));
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let ids = |page: Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let by_decision = ids(list("decision=declined").await.json().await.unwrap());
    let by_reference = ids(list("reference=customer-7").await.json().await.unwrap());
    let future = ids(list("created_after=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap());
    let completed = ids(list("status=completed&limit=1").await.json().await.unwrap());

    assert_eq!(by_decision, [declined]);
    assert_eq!(by_reference, std::slice::from_ref(&approved));
    assert!(future.is_empty());
    assert_eq!(completed, [approved]);
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=not-ours",
        "status=paused",
        "created_after=yesterday",
        "colour=blue",
    ] {
        let (status, _, _) = problem(list(bad).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// The bucket's arithmetic, refills included, is tested on paused time in `auth::limiter`;
/// here the real clock, with a minute's interval no request comes near.
#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| s.auth.rate_limit_per_minute = 1).await;
    let other = client_with(&key(&app, TENANT, Mode::Test, Scopes::All).await);

    let first = app.get("/v1/sessions").await.status();
    let second = app.get("/v1/sessions").await;
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, _, body) = problem(second).await;
    let another_key = other.get(app.url("/v1/sessions")).send().await.unwrap();

    assert_eq!(first, StatusCode::OK);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(body["type"], "urn:kyc-orchestrator:problem:rate-limited");
    assert_eq!(another_key.status(), StatusCode::OK, "each key has its own");
}

#[tokio::test]
async fn metrics_are_not_on_the_api_listener() {
    let app = spawn_app().await;

    let public = app.get("/metrics").await;
    let private = app.metrics().await;

    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert!(private.contains("kyc_http_responses_total"), "{private}");
}

/// Two instances on one PostgreSQL database: a key revoked through one stops working on the
/// other within the other's cache lifetime (1 s here; at most 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_instance_on_the_database() {
    let store = TestStore::new(Backend::Postgres).await;
    let configure = |s: &mut kyc_orchestrator::Settings| {
        store.configure(s);
        s.auth.cache_ttl_s = 1;
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    let (shared, record) = a
        .keys
        .create(NewKey::new(TENANT.parse().unwrap(), Mode::Test))
        .await
        .unwrap();
    let client = client_with(&shared);
    let on_b = || client.get(b.url("/v1/sessions")).send();
    assert_eq!(
        on_b().await.unwrap().status(),
        StatusCode::OK,
        "b caches it"
    );

    a.keys.revoke(&record.id).await.unwrap();

    eventually(
        "b refuses the revoked key",
        Duration::from_secs(30),
        || async { (on_b().await.unwrap().status() == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
    let on_a = client.get(a.url("/v1/sessions")).send().await.unwrap();
    assert_eq!(on_a.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_key_reaches_a_log_line() {
    let app = spawn_app().await;
    let revoked = revoked_key(&app).await;
    let unknown = unknown_key();
    let narrow = key(
        &app,
        TENANT,
        Mode::Test,
        Scopes::only([Scope::SessionsRead]),
    )
    .await;

    app.stream_session(&session_body(json!({}))).await;
    for key in [&revoked, &unknown, &narrow] {
        let client = client_with(key);
        client
            .post(app.url("/v1/sessions"))
            .json(&session_body(json!({})))
            .send()
            .await
            .unwrap();
        client.get(app.url("/v1/sessions")).send().await.unwrap();
    }
    let almost = format!("{}x", &app.key.expose()[..app.key.expose().len() - 1]);
    kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds")
        .get(app.url("/v1/sessions"))
        .header("authorization", format!("Bearer {almost}"))
        .send()
        .await
        .unwrap();

    let logs = serde_json::to_string(&logs().lines()).unwrap();
    assert!(logs.contains("API key refused"), "the refusals are logged");
    for key in [&app.key, &revoked, &unknown, &narrow] {
        let secret = &key.expose()["kyc_test_".len()..];
        assert!(!logs.contains(secret), "a key in the logs");
    }
    assert!(!logs.contains(&almost["kyc_test_".len()..]));
}

/// Isolation and the list on a database, where the filters are SQL: another tenant's session
/// is unknown to every route, the same idempotency key makes a session per tenant, and the
/// list pages through filters and cursors.
async fn a_database_keeps_tenants_apart_in_every_query(backend: Backend) {
    let store = TestStore::new(backend).await;
    let app = spawn_app_with(|s| store.configure(s)).await;
    let other = client_with(&key(&app, "globex", Mode::Test, Scopes::All).await);
    let live = client_with(&key(&app, TENANT, Mode::Live, Scopes::All).await);
    let keyed = |client: &reqwest::Client, reference: &str| {
        let mut body = session_body(json!({}));
        body["reference"] = json!(reference);
        client
            .post(app.url("/v1/sessions"))
            .header("Idempotency-Key", "same-key")
            .header("accept", "application/x-ndjson")
            .json(&body)
            .send()
    };
    let ours = keyed(&app.client, "ours").await.unwrap();
    let ours = crate::helpers::parse_ndjson(&ours.bytes().await.unwrap());
    let id = ours[0]["session_id"].as_str().unwrap().to_owned();
    let theirs = keyed(&other, "theirs").await.unwrap();
    assert_eq!(theirs.status(), StatusCode::OK, "a session of their own");
    let theirs = crate::helpers::parse_ndjson(&theirs.bytes().await.unwrap());
    assert_ne!(theirs[0]["session_id"], ours[0]["session_id"]);
    let mut made = vec![id.clone()];
    for n in 0..6 {
        let script = if n % 2 == 0 {
            json!({})
        } else {
            json!({ "liveness": { "result": "fail" } })
        };
        let events = app.stream_session(&session_body(script)).await;
        made.push(events[0]["session_id"].as_str().unwrap().to_owned());
    }

    for path in [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{id}/events"),
    ] {
        for (who, client) in [("another tenant", &other), ("a live key", &live)] {
            let status = client.get(app.url(&path)).send().await.unwrap().status();
            assert_eq!(status, StatusCode::NOT_FOUND, "{path} for {who}");
        }
    }
    let live_list: Value = live
        .get(app.url("/v1/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        live_list["data"],
        json!([]),
        "no test session in the live list"
    );
    let erase = other
        .delete(app.url(&format!("/v1/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(erase.status(), StatusCode::NOT_FOUND);
    let listed = all_pages(&app, &app.client, "limit=2").await;
    let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let newest_first: Vec<&str> = made.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "every page, in order, nothing of theirs");
    let declined = all_pages(&app, &app.client, "decision=declined&limit=2").await;
    assert_eq!(declined.len(), 3);
    assert!(declined.iter().all(|s| s["decision"] == "declined"));
    let referenced = all_pages(&app, &app.client, "reference=ours").await;
    assert_eq!(referenced.len(), 1);
    let first_created = listed.last().unwrap()["created_at"].as_str().unwrap();
    let since = all_pages(
        &app,
        &app.client,
        &format!("created_after={}", first_created.replace('+', "%2B")),
    )
    .await;
    assert_eq!(since.len(), made.len(), "created_after is inclusive");
    let before = all_pages(
        &app,
        &app.client,
        &format!("created_before={}", first_created.replace('+', "%2B")),
    )
    .await;
    assert!(before.is_empty());

    let erased = app
        .client
        .delete(app.url(&format!("/v1/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    let shown: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(shown["erased_by"], shown["created_by"]);
}

mod on_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_keeps_tenants_apart_in_every_query() {
        super::a_database_keeps_tenants_apart_in_every_query(super::Backend::Sqlite).await;
    }
}

mod on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_keeps_tenants_apart_in_every_query() {
        super::a_database_keeps_tenants_apart_in_every_query(super::Backend::Postgres).await;
    }
}

#[tokio::test]
async fn a_key_records_when_it_was_last_used() {
    let app = spawn_app().await;
    let before = app.keys.list(None).await.unwrap();
    assert!(before[0].last_used_at.is_none());

    assert_eq!(app.get("/v1/sessions").await.status(), StatusCode::OK);

    let used = eventually(
        "last_used_at is written",
        Duration::from_secs(10),
        || async { app.keys.list(None).await.unwrap()[0].last_used_at },
    )
    .await;
    assert!(used > before[0].created_at);
}
