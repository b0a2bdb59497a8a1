//! Hosted capture: links made by an integrator's key, opened by the applicant's page with the
//! link's token alone, which starts one session and sees its progress but not its results.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, fields, jpeg, logs, parse_ndjson, png, spawn_app, spawn_patient_app,
};

/// A link made by the app's key; its URL and token.
async fn make_link(app: &TestApp, body: &Value) -> (Value, String) {
    link_by(&app.client, app, body).await
}

/// A link made by `client`'s key.
async fn link_by(client: &reqwest::Client, app: &TestApp, body: &Value) -> (Value, String) {
    let response = client
        .post(app.url("/v1/capture-links"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let link: Value = response.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    let (_, token) = url
        .split_once("/capture#")
        .expect("the token is the URL's fragment");
    let token = token.to_owned();
    (link, token)
}

fn link_body() -> Value {
    json!({
        "reference": "applicant-7",
        "document_type": "id_card",
        "claimed": { "surname": "Eriksson" },
        "redirect_url": "https://bank.example/kyc/done?step=2",
    })
}

/// A request of the capture page: the token and nothing else.
fn page(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    kyc_orchestrator::http::client()
        .build()
        .unwrap()
        .request(method, app.url(path))
        .header(AUTHORIZATION, format!("Bearer {token}"))
}

fn images(challenge_id: Option<&str>, frame_side: u32) -> Form {
    let metadata = match challenge_id {
        Some(id) => json!({ "challenge_id": id }),
        None => json!({}),
    };
    Form::new()
        .part(
            "document_front",
            Part::bytes(png(96, 64)).file_name("front.png"),
        )
        .part(
            "document_back",
            Part::bytes(png(96, 64)).file_name("back.png"),
        )
        .part(
            "selfie",
            Part::bytes(jpeg(frame_side, frame_side)).file_name("s.jpg"),
        )
        .text("metadata", metadata.to_string())
}

/// The page's submission of the images, answering `challenge_id` when given.
async fn send_images(
    app: &TestApp,
    token: &str,
    challenge_id: Option<&str>,
    frame_side: u32,
) -> reqwest::Response {
    page(app, reqwest::Method::POST, "/v1/capture/session", token)
        .multipart(images(challenge_id, frame_side))
        .send()
        .await
        .unwrap()
}

/// The page's challenge (`201`), as JSON.
async fn link_challenge(app: &TestApp, token: &str) -> Value {
    let response = page(app, reqwest::Method::POST, "/v1/capture/challenge", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn problem_type(response: reqwest::Response) -> String {
    response.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The link `token` is spent for `reason` (`used` or `expired`): it shows nothing and starts
/// nothing more.
async fn assert_spent(app: &TestApp, token: &str, reason: &str) {
    let shown = page(app, reqwest::Method::GET, "/v1/capture", token)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::GONE);
    assert_eq!(
        problem_type(shown).await,
        format!("urn:kyc-orchestrator:problem:capture-link-{reason}")
    );
    let submitted = send_images(app, token, None, 80).await;
    assert_eq!(submitted.status(), StatusCode::GONE);
}

#[tokio::test]
async fn a_link_starts_one_session_with_the_integrators_reference_and_shows_only_progress() {
    let app = spawn_app().await;
    let (link, token) = make_link(&app, &link_body()).await;
    assert!(link["id"].as_str().unwrap().starts_with("cpl_"));
    assert!(token.starts_with("cap_"));

    let shown: Value = page(&app, reqwest::Method::GET, "/v1/capture", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["document_type"], "id_card");
    assert_eq!(shown["document_back"], true);
    assert_eq!(shown["selfie_frames"], 24);
    let challenge = link_challenge(&app, &token).await;

    let response = send_images(&app, &token, challenge["id"].as_str(), 64).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/x-ndjson");
    let lines = parse_ndjson(&response.bytes().await.unwrap());
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"completed"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "done").count(),
        4,
        "{kinds:?}"
    );
    for line in &lines {
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        for key in keys {
            assert!(
                ["type", "checks", "check", "session_id", "redirect_url"].contains(&key.as_str()),
                "the page sees no result: {line}"
            );
        }
    }
    let completed = lines.last().unwrap();
    let session_id = completed["session_id"].as_str().unwrap();
    assert_eq!(
        completed["redirect_url"],
        format!("https://bank.example/kyc/done?step=2&session_id={session_id}")
    );

    // The integrator's key sees the session as its own, with the link's reference.
    let session: Value = app.get_session(session_id).await.json().await.unwrap();
    assert_eq!(session["status"], "completed");
    assert_eq!(session["reference"], "applicant-7");
    let key_id = app.keys.list(None).await.unwrap()[0].id.to_string();
    assert_eq!(session["created_by"], key_id.as_str());

    // The link is spent: it shows nothing more and starts nothing more, but follows its session.
    assert_spent(&app, &token, "used").await;
    let followed = page(&app, reqwest::Method::GET, "/v1/capture/events", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    let followed = parse_ndjson(&followed.bytes().await.unwrap());
    assert_eq!(followed.last(), Some(completed));

    // The token is a secret: no log line holds it.
    let logged = serde_json::to_string(&logs().lines()).unwrap();
    assert!(!logged.contains(&token));
    assert!(!logged.contains("applicant-7"));
}

#[tokio::test]
async fn a_token_opens_its_own_link_and_nothing_else() {
    let app = spawn_app().await;
    let (_, token) = make_link(&app, &link_body()).await;

    // Not an API key.
    let sessions = page(&app, reqwest::Method::GET, "/v1/sessions", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), StatusCode::UNAUTHORIZED);
    let challenges = page(
        &app,
        reqwest::Method::POST,
        "/v1/liveness/challenges",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(challenges.status(), StatusCode::UNAUTHORIZED);

    // A token no link has, a malformed one, an API key, and none at all.
    let unknown = format!("cap_{}", "A".repeat(40));
    for presented in [unknown.as_str(), "cap_short", app.key.expose()] {
        let response = page(&app, reqwest::Method::GET, "/v1/capture", presented)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented}");
        assert!(response.headers().contains_key("www-authenticate"));
        assert_eq!(
            problem_type(response).await,
            "urn:kyc-orchestrator:problem:unknown-capture-link"
        );
    }
    let bare = crate::helpers::get(app.url("/v1/capture")).await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);

    // A link that started nothing has nothing to follow yet.
    let events = page(&app, reqwest::Method::GET, "/v1/capture/events", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_links_page_gets_one_challenge_and_its_session_answers_no_other() {
    let app = spawn_app().await;
    let (_, token) = make_link(&app, &link_body()).await;

    let first = link_challenge(&app, &token).await;
    let again = link_challenge(&app, &token).await;

    assert_eq!(
        first["id"], again["id"],
        "no drawing until the sequence suits"
    );
    assert_eq!(first["steps"], again["steps"]);
    // One of the tenant's own challenges, issued with its key, is not the link's.
    let others = app.issue_challenge().await;
    let refused = send_images(&app, &token, others["id"].as_str(), 64).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "unknown_challenge");
    // Refused before it started: the link's own challenge still works.
    let answered = send_images(&app, &token, first["id"].as_str(), 64).await;
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn a_clients_idempotency_key_may_not_pose_as_a_capture_links() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header("Idempotency-Key", "capture:cpl_Xq7Lm2bT9RkWc1Vn")
        .json(&crate::helpers::session_body(json!({})))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_link_dies_with_the_key_that_made_it() {
    let app = spawn_app().await;
    let (key, record) = app
        .keys
        .create(kyc_orchestrator::auth::NewKey::new(
            crate::helpers::TENANT.parse().unwrap(),
            kyc_orchestrator::domain::Mode::Test,
        ))
        .await
        .unwrap();
    let maker = crate::helpers::client_with(&key);
    let (_, token) = link_by(&maker, &app, &link_body()).await;
    link_challenge(&app, &token).await;

    app.keys.revoke(&record.id).await.unwrap();

    assert_spent(&app, &token, "revoked").await;
    let sessions: Value = app.get("/v1/sessions").await.json().await.unwrap();
    assert_eq!(sessions["data"], json!([]), "it started nothing");
}

/// Posts the capture's images and reads the progress to its end; the session id it names, or
/// the refusal's status.
async fn submit(app: &TestApp, token: &str, challenge_id: &str) -> Result<String, StatusCode> {
    let response = send_images(app, token, Some(challenge_id), 64).await;
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let lines = parse_ndjson(&response.bytes().await.unwrap());
    let last = lines.last().expect("progress to the end");
    assert_eq!(last["type"], "completed", "{lines:?}");
    Ok(last["session_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn two_pages_submitting_at_once_start_one_session() {
    let app = spawn_app().await;
    let (_, token) = make_link(&app, &link_body()).await;
    let challenge = link_challenge(&app, &token).await;
    let challenge_id = challenge["id"].as_str().unwrap();

    let (a, b) = tokio::join!(
        submit(&app, &token, challenge_id),
        submit(&app, &token, challenge_id)
    );

    // Each either follows the one session or is told the link is used; never a second session.
    let started: Vec<&String> = [&a, &b].into_iter().flatten().collect();
    assert!(!started.is_empty(), "{a:?} {b:?}");
    assert!(started.iter().all(|id| *id == started[0]), "{a:?} {b:?}");
    for refused in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(*refused, StatusCode::GONE);
    }
    let sessions: Value = app
        .get("/v1/sessions?reference=applicant-7")
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [started[0].as_str()]);
}

#[tokio::test]
async fn a_page_that_lost_its_connection_follows_its_session_and_cannot_send_again() {
    let app = spawn_patient_app().await;
    let (_, token) = make_link(&app, &link_body()).await;
    let challenge = link_challenge(&app, &token).await;
    let challenge_id = challenge["id"].as_str().unwrap();
    let mut response = send_images(&app, &token, Some(challenge_id), 64).await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first line");
    assert_eq!(parse_ndjson(&first)[0]["type"], "started");
    drop(response);

    // Sending the photos again is refused: the link started its session.
    assert_eq!(
        submit(&app, &token, challenge_id).await,
        Err(StatusCode::GONE)
    );
    // Following it gives the whole progress, from the start to the decision.
    let followed = page(&app, reqwest::Method::GET, "/v1/capture/events", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    let lines = parse_ndjson(&followed.bytes().await.unwrap());
    assert_eq!(lines.first().unwrap()["type"], "started");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "completed");
    let session: Value = app
        .get_session(last["session_id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(session["status"], "completed");
}

#[tokio::test(start_paused = true)]
async fn a_link_expires_after_its_time_to_live() {
    let app = spawn_app().await;
    let (link, token) = make_link(&app, &link_body()).await;
    let expires: chrono::DateTime<chrono::Utc> =
        link["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(29) && ttl <= chrono::Duration::minutes(30));

    tokio::time::advance(std::time::Duration::from_secs(30 * 60 + 1)).await;

    assert_spent(&app, &token, "expired").await;
}

#[tokio::test]
async fn a_link_request_is_checked_field_by_field() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/capture-links"))
        .json(&json!({
            "reference": " ",
            "document_type": "passport",
            "claimed": {},
            "redirect_url": "javascript:alert(1)",
        }))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    let named: Vec<String> = fields(&problem).into_iter().map(|(f, _)| f).collect();
    assert_eq!(named, ["reference", "claimed", "redirect_url"]);
    assert!(!problem.to_string().contains("javascript"), "{problem}");

    for body in [
        json!({ "document_type": "library_card" }),
        json!({ "reference": "x" }),
        json!({ "document_type": "passport", "colour": "blue" }),
    ] {
        let response = app
            .client
            .post(app.url("/v1/capture-links"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let anonymous = kyc_orchestrator::http::client()
        .build()
        .unwrap()
        .post(app.url("/v1/capture-links"))
        .json(&link_body())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_capture_session_takes_no_reference_claim_or_script_from_the_page() {
    let app = spawn_app().await;
    let (_, token) = make_link(&app, &link_body()).await;
    let form = Form::new()
        .part(
            "document_front",
            Part::bytes(png(96, 64)).file_name("f.png"),
        )
        .part("selfie", Part::bytes(jpeg(64, 64)).file_name("s.jpg"))
        .text(
            "metadata",
            json!({ "sandbox": { "liveness": { "result": "pass" } } }).to_string(),
        );

    let response = page(&app, reqwest::Method::POST, "/v1/capture/session", &token)
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Refused before it started anything: the link still opens.
    let shown = page(&app, reqwest::Method::GET, "/v1/capture", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
}

#[tokio::test]
async fn the_capture_page_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;

    let response = crate::helpers::get(app.url("/capture")).await.unwrap();

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers[REFERRER_POLICY], "no-referrer");
    let html = response.text().await.unwrap();
    // No inline script: every script element names its file.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=\"/assets/")
            .count()
    );
    for asset in ["capture.js", "capture.css", "progress.js"] {
        let response = crate::helpers::get(app.url(&format!("/assets/{asset}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.headers().contains_key(CONTENT_SECURITY_POLICY));
    }
    let missing = crate::helpers::get(app.url("/assets/../Cargo.toml"))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn integrators_who_embed_the_page_name_their_origins() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.web.frame_ancestors = vec!["'self'".into(), "https://bank.example".into()];
        s.capture.public_url = "https://kyc.bank.example/".into();
    })
    .await;

    let response = crate::helpers::get(app.url("/capture")).await.unwrap();
    let csp = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.ends_with("frame-ancestors 'self' https://bank.example"));
    let (link, _) = make_link(&app, &link_body()).await;
    assert!(
        link["url"]
            .as_str()
            .unwrap()
            .starts_with("https://kyc.bank.example/capture#cap_")
    );
}
