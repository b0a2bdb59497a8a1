//! Smoke test of a running instance, from outside, over HTTP: what CI runs against the release
//! binary and what compose.smoke.yml runs against the container.
//!
//!     KYC_API_KEY=kyc_test_... kyc-smoke run --url http://127.0.0.1:8009 --profile sandbox
//!     KYC_API_KEY=kyc_test_... kyc-smoke run --url http://127.0.0.1:8009 --profile default
//!     kyc-smoke health --url http://127.0.0.1:8009      # the container's HEALTHCHECK
//!
//! It prints each check as it passes and stops at the first failure, printing the response it
//! got, with exit code 1.

use std::io::Cursor;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Check a running kyc-orchestrator end to end")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when GET /health answers {"status":"ok"}.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8009")]
        url: String,
    },
    /// The whole smoke test.
    Run {
        #[arg(long, default_value = "http://127.0.0.1:8009")]
        url: String,
        /// What the instance runs: every agent a sandbox agent, or the default plan.
        #[arg(long, value_enum, default_value = "sandbox")]
        profile: Profile,
        /// Seconds to wait for the instance to become ready.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// A test key of the instance (`kyc-orchestrator keys create --tenant smoke`).
        #[arg(long, env = "KYC_API_KEY", hide_env_values = true)]
        key: String,
        /// Agents the instance runs on an agent server: their checks must say so.
        #[arg(long, value_delimiter = ',')]
        remote: Vec<String>,
        /// Another instance on the same store: a session started here is followed there,
        /// live, from its first event to its last.
        #[arg(long)]
        follower: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Sandbox,
    Default,
}

/// A failed check: what was checked and what came back.
struct Failure(String);

type Check<T = ()> = Result<T, Failure>;

fn fail<T>(what: &str, got: impl std::fmt::Display) -> Check<T> {
    Err(Failure(format!("{what}\n  got: {got}")))
}

fn ok(what: &str) {
    println!("ok    {what}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let client = |key: Option<&str>| {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {key}"))
                .expect("a key is a valid header value");
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        kyc_orchestrator::http::client()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("a client builds")
    };
    let outcome = match args.command {
        Command::Health { url } => health(&client(None), url.trim_end_matches('/')).await,
        Command::Run {
            url,
            profile,
            wait,
            key,
            remote,
            follower,
        } => {
            let url = url.trim_end_matches('/');
            let wait = Duration::from_secs(wait);
            let keyed = client(Some(&key));
            let checks = async {
                unauthorized(&client(None), url).await?;
                run(&keyed, url, profile, wait, &remote).await?;
                match follower {
                    Some(follower) => {
                        followed_elsewhere(&keyed, url, follower.trim_end_matches('/')).await
                    }
                    None => Ok(()),
                }
            };
            checks.await.map(|()| println!("all checks passed"))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            println!("FAIL  {message}");
            ExitCode::FAILURE
        }
    }
}

async fn health(client: &reqwest::Client, url: &str) -> Check {
    let (status, body) = get_json(client, &format!("{url}/health")).await?;
    if status != 200 || body["status"] != "ok" || !body["ts"].is_i64() {
        return fail(
            "GET /health is 200 {\"status\":\"ok\",\"ts\":<unix seconds>}",
            body,
        );
    }
    Ok(())
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    profile: Profile,
    wait: Duration,
    remote: &[String],
) -> Check {
    let started = Instant::now();
    while health(client, url).await.is_err() {
        if started.elapsed() > wait {
            return health(client, url).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ok("GET /health is 200 {\"status\":\"ok\",\"ts\":...}");
    loop {
        let (status, body) = get_json(client, &format!("{url}/health/ready")).await?;
        if status == 200 && body["status"] == "ready" {
            break;
        }
        if started.elapsed() > wait {
            return fail(
                "GET /health/ready turns 200 (models loaded, store up)",
                body,
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ok("GET /health/ready is 200 ready");

    bad_request(client, url).await?;
    let sandbox = profile == Profile::Sandbox;
    let script = |s: Value| if sandbox { Some(s) } else { None };
    let body = session(script(json!({})));
    let events = stream(client, url, &body).await?;
    ok("a session streams as NDJSON from session.started to session.completed");
    accepted_then_replayed(client, url, &body).await?;
    if !remote.is_empty() {
        ran_remotely(&events, remote)?;
    }

    match profile {
        Profile::Sandbox => outcomes(client, url).await?,
        Profile::Default => {
            real_agents_on_a_card(&events)?;
            real_agents_on_a_passport(client, url).await?;
        }
    }
    Ok(())
}

/// A session accepted by the instance at `url` is followed on the one at `follower`, which
/// reads it from the shared store while it runs: the follower's stream must be the session's
/// whole history, and the session must still have been running when the follower asked (or
/// the check would be of a replay). The real agents reading a passport take long enough.
async fn followed_elsewhere(client: &reqwest::Client, url: &str, follower: &str) -> Check {
    let response = post(client, url, &passport_session(), false).await?;
    let status = response.status().as_u16();
    let location = header(&response, "location");
    if status != 202 || location.is_empty() {
        return fail(
            "a session without Accept is 202 with a Location",
            format!("{status} {location:?}"),
        );
    }
    let (status, session) = get_json(client, &format!("{follower}{location}")).await?;
    if status != 200 || session["status"] != "running" {
        return fail(
            &format!("the other instance, {follower}, sees the session running"),
            format!("{status} {session}"),
        );
    }
    replay(
        client,
        &format!("{follower}{location}/events"),
        &format!("the events followed on {follower}"),
    )
    .await?;
    ok(&format!(
        "a session running on {url} is followed live on {follower} from seq 1 to \
         session.completed"
    ));
    Ok(())
}

/// A session with a small generated selfie and document, and the sandbox script if any.
fn session(sandbox: Option<Value>) -> Value {
    let mut body = json!({
        "reference": "smoke",
        "selfie": { "frames": [STANDARD.encode(card(320, 400, false))] },
        "document": { "type": "passport", "front": STANDARD.encode(card(1200, 900, true)) },
    });
    if let Some(script) = sandbox {
        body["sandbox"] = script;
    }
    body
}

/// A JPEG: a light card on a dark table (`document`), or a plain grey frame.
fn card(width: u32, height: u32, document: bool) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let inside = x > width / 8 && x < width * 7 / 8 && y > height / 8 && y < height * 7 / 8;
        match (document, inside) {
            (true, true) => image::Rgb([236, 230, 214]),
            (true, false) => image::Rgb([60, 48, 40]),
            (false, _) => image::Rgb([128, 128, 128]),
        }
    });
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .expect("a JPEG encodes");
    out
}

async fn get_json(client: &reqwest::Client, url: &str) -> Check<(u16, Value)> {
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(error) => return fail(&format!("GET {url} answers"), error),
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// A session's events as `GET .../events` (at `url`) streams them to the end, checked as
/// `what`: a whole history, from seq 1 to `session.completed`.
async fn replay(client: &reqwest::Client, url: &str, what: &str) -> Check<Vec<Value>> {
    let text = match client.get(url).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => return fail(&format!("GET {url} answers"), error),
    };
    history(what, &text)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    stream: bool,
) -> Check<reqwest::Response> {
    let mut request = client.post(format!("{url}/v1/sessions")).json(body);
    if stream {
        request = request.header("accept", "application/x-ndjson");
    }
    match request.send().await {
        Ok(response) => Ok(response),
        Err(error) => fail("POST /v1/sessions answers", error),
    }
}

/// Without a key, the API is closed: 401 problem+json with a Bearer challenge.
async fn unauthorized(client: &reqwest::Client, url: &str) -> Check {
    let started = Instant::now();
    let response = loop {
        match client.get(format!("{url}/v1/sessions")).send().await {
            Ok(response) => break response,
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return fail("GET /v1/sessions answers", error),
        }
    };
    let status = response.status().as_u16();
    let challenge = header(&response, "www-authenticate");
    let content_type = header(&response, "content-type");
    if status != 401
        || !challenge.starts_with("Bearer")
        || content_type != "application/problem+json"
    {
        return fail(
            "GET /v1/sessions without a key is 401 problem+json with WWW-Authenticate: Bearer",
            format!("{status} {content_type} {challenge:?}"),
        );
    }
    ok("without a key the API is 401 with a Bearer challenge");
    Ok(())
}

/// The sessions just made are in the caller's list, newest first.
async fn listed(client: &reqwest::Client, url: &str, newest: &str) -> Check {
    let (status, body) = get_json(client, &format!("{url}/v1/sessions?limit=5")).await?;
    if status != 200 || body["data"][0]["id"] != newest {
        return fail(
            "GET /v1/sessions lists the newest session first",
            format!("{status} {body}"),
        );
    }
    ok("GET /v1/sessions lists the caller's sessions, newest first");
    Ok(())
}

async fn bad_request(client: &reqwest::Client, url: &str) -> Check {
    let response = post(client, url, &json!({ "selfie": { "frames": [] } }), false).await?;
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let body: Value = response.json().await.unwrap_or_default();
    let typed = body["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("urn:kyc-orchestrator:problem:"));
    if status != 422 || content_type != "application/problem+json" || !typed {
        return fail(
            "a session without a document is 422 application/problem+json",
            format!("{status} {content_type} {body}"),
        );
    }
    ok("a bad request is 422 problem+json");
    Ok(())
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The events of a streamed session, checked: gap-free, started to completed.
async fn stream(client: &reqwest::Client, url: &str, body: &Value) -> Check<Vec<Value>> {
    let response = post(client, url, body, true).await?;
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let text = response.text().await.unwrap_or_default();
    if status != 200 || !content_type.starts_with("application/x-ndjson") {
        return fail(
            "a streamed session is 200 application/x-ndjson",
            format!("{status} {text}"),
        );
    }
    history("the stream", &text)
}

fn history(what: &str, text: &str) -> Check<Vec<Value>> {
    let events: Vec<Value> = match text.lines().map(serde_json::from_str).collect() {
        Ok(events) => events,
        Err(_) => return fail(&format!("{what} is one JSON object per line"), text),
    };
    let gap_free = events
        .iter()
        .enumerate()
        .all(|(i, e)| e["seq"].as_u64() == Some(i as u64 + 1));
    let first = events
        .first()
        .map(|e| e["type"].clone())
        .unwrap_or_default();
    // A session decided `review` goes on with its review's events (`review.opened` first).
    let ends_well = completion_at(&events).is_some_and(|at| {
        events[at + 1..].iter().all(|e| {
            e["type"]
                .as_str()
                .is_some_and(|kind| kind.starts_with("review."))
        })
    });
    if !gap_free || first != "session.started" || !ends_well {
        return fail(
            &format!(
                "{what} runs seq 1, 2, ... from session.started to session.completed (and a \
                 review's events)"
            ),
            text,
        );
    }
    Ok(events)
}

/// Where `session.completed` is in `events`.
fn completion_at(events: &[Value]) -> Option<usize> {
    events
        .iter()
        .rposition(|e| e["type"] == "session.completed")
}

async fn accepted_then_replayed(client: &reqwest::Client, url: &str, body: &Value) -> Check {
    let response = post(client, url, body, false).await?;
    let status = response.status().as_u16();
    let location = header(&response, "location");
    if status != 202 || location.is_empty() {
        let text = response.text().await.unwrap_or_default();
        return fail(
            "a session without Accept is 202 with a Location",
            format!("{status} {text}"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let session = loop {
        let (status, session) = get_json(client, &format!("{url}{location}")).await?;
        if status == 200 && session["status"] == "completed" {
            break session;
        }
        if status != 200 || Instant::now() > deadline {
            return fail(&format!("GET {location} reaches status completed"), session);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ok("a session is accepted with 202, and GET shows it completed");
    let events = replay(
        client,
        &format!("{url}{location}/events"),
        "the replayed events",
    )
    .await?;
    let completed = &events[completion_at(&events).expect("history checked it")];
    if completed["decision"] != session["decision"] {
        return fail("the replay ends with the session's decision", completed);
    }
    ok("its events replay from seq 1 to session.completed");
    listed(client, url, session["id"].as_str().unwrap_or_default()).await
}

/// Every outcome, scripted through the sandbox agents.
async fn outcomes(client: &reqwest::Client, url: &str) -> Check {
    let cases = [
        ("approved", json!({}), json!([])),
        (
            "declined",
            json!({ "liveness": { "result": "fail" } }),
            json!(["liveness_failed"]),
        ),
        (
            "review",
            json!({ "doc_capture": { "result": "fail", "reason": "too_blurry" } }),
            json!(["too_blurry"]),
        ),
        (
            "review",
            json!({ "ocr": { "result": "error" } }),
            json!(["agent_error:ocr"]),
        ),
        (
            "review",
            json!({ "face_match": { "result": "panic" } }),
            json!(["agent_error:face_match"]),
        ),
    ];
    for (decision, script, reasons) in cases {
        let events = stream(client, url, &session(Some(script.clone()))).await?;
        let done = &events[completion_at(&events).expect("history checked it")];
        if done["decision"] != decision || done["reasons"] != reasons {
            return fail(
                &format!("sandbox script {script} gives {decision} {reasons}"),
                done,
            );
        }
        ok(&format!(
            "sandbox script {script} gives {decision} {reasons}"
        ));
    }
    Ok(())
}

/// The default plan's real agents looked at the images: a card with no print and no portrait,
/// and a grey selfie, are reported as such, by the models the checks name.
fn real_agents_on_a_card(events: &[Value]) -> Check {
    let done = &events[completion_at(events).expect("history checked it")];
    for (check, model) in [("liveness", "landmarks"), ("face_match", "embedding")] {
        let checked = &done["checks"][check];
        if checked["reasons"] != json!(["no_face_in_selfie"])
            || checked["details"]["models"][model]["file"].is_null()
        {
            return fail(
                &format!("{check} found no face in the grey selfie, naming its models"),
                done,
            );
        }
    }
    let doc = &done["checks"]["doc_capture"];
    let ocr = &done["checks"]["ocr"];
    let issues = doc["details"]["issues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if doc["details"]["models"]["face_detector"]["file"].is_null()
        || !issues.contains(&json!("no_portrait"))
    {
        return fail(
            "doc_capture analysed the card and found no portrait, naming its model",
            done,
        );
    }
    if ocr["reasons"] != json!(["mrz_not_found"])
        || ocr["details"]["models"]["recognition"].is_null()
    {
        return fail(
            "ocr read the card and found no zone, naming its models",
            done,
        );
    }
    if done["decision"] != "review" {
        return fail("a document without a zone goes to review", done);
    }
    ok(
        "the real agents analysed the generated card and selfie: no face, no portrait, no zone, review",
    );
    Ok(())
}

/// A drawn passport page (ICAO's specimen holder, a zone valid until 2034, no portrait)
/// photographed askew: ocr reads and verifies the zone, doc_capture misses the portrait.
async fn real_agents_on_a_passport(client: &reqwest::Client, url: &str) -> Check {
    let events = stream(client, url, &passport_session()).await?;
    let done = &events[completion_at(&events).expect("history checked it")];
    let ocr = &done["checks"]["ocr"];
    if ocr["status"] != "passed"
        || ocr["details"]["check_digits_valid"] != true
        || ocr["extracted"]["document_number"] != kyc_orchestrator::specimen::ANNA.number
    {
        return fail(
            "ocr reads and verifies the drawn passport's zone, and the claim agrees",
            done,
        );
    }
    if done["decision"] != "review"
        || done["checks"]["doc_capture"]["reasons"] != json!(["no_portrait"])
        || done["checks"]["face_match"]["reasons"] != json!(["no_face_in_selfie"])
    {
        return fail(
            "the passport without a portrait, with a faceless selfie, goes to review",
            done,
        );
    }
    ok(
        "the real ocr read and verified a drawn passport's zone; no portrait and no face send it to review",
    );
    Ok(())
}

/// The drawn passport page photographed askew, with a grey selfie and a claim its zone bears out.
fn passport_session() -> Value {
    use kyc_orchestrator::specimen;
    let photo = specimen::photo(&specimen::page(&specimen::Page::default()), specimen::ASKEW);
    json!({
        "reference": "smoke",
        "selfie": { "frames": [STANDARD.encode(card(320, 400, false))] },
        "document": { "type": "passport", "front": STANDARD.encode(specimen::jpeg(&photo)) },
        "claimed": { "surname": "Eriksson", "date_of_birth": "1974-08-12" },
    })
}

/// Every agent in `remote` ran on an agent server: its check records the remote's answer.
fn ran_remotely(events: &[Value], remote: &[String]) -> Check {
    let done = &events[completion_at(events).expect("history checked it")];
    for agent in remote {
        if done["checks"][agent]["details"]["remote"]["outcomes"] != json!([200]) {
            return fail(
                &format!("{agent} ran on the agent server (its details record one 200)"),
                done,
            );
        }
    }
    ok(&format!("{} ran on the agent server", remote.join(", ")));
    Ok(())
}
