//! Every class of bad input gets a precise problem+json answer and breaks nothing.

use reqwest::Response;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{b64, fields, jpeg, png, session_body, spawn_app, spawn_app_with};

/// Asserts a problem+json body with `status` and returns it.
async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:kyc-orchestrator:problem:")
    );
    body
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let body = problem(app.post_raw("application/json", "{\"selfie\": ").await, 400).await;
    assert_eq!(body["type"], "urn:kyc-orchestrator:problem:malformed-json");
}

#[tokio::test]
async fn trailing_data_after_the_json_document_is_a_400() {
    let app = spawn_app().await;
    let body = format!("{} {{}}", session_body(json!({})));
    let body = problem(app.post_raw("application/json", body).await, 400).await;
    assert_eq!(body["type"], "urn:kyc-orchestrator:problem:malformed-json");
}

/// Each request carries one bad value, so each is certainly read and reported.
#[tokio::test]
async fn rejected_values_and_names_are_never_quoted_back() {
    let app = spawn_app().await;
    let cases = [
        (
            "/document/type",
            json!("Jane Doe"),
            "document.type",
            "unknown variant: expected one of `passport`, `id_card`, `driving_licence`",
        ),
        (
            "/selfie/frames",
            json!("AAAAsecretbase64AAAA"),
            "selfie.frames",
            "invalid type: expected a sequence",
        ),
        (
            "/document",
            json!("Jane Doe, expected Smith"),
            "document",
            "invalid type: expected struct JsonDocument",
        ),
        (
            "/Jane Doe 1970-01-01",
            json!(1),
            "<unnamed>",
            "unknown field: expected one of `reference`, `selfie`, `document`, `claimed`, `sandbox`",
        ),
        (
            "/sandbox/Jane Doe",
            json!({ "result": "pass" }),
            "sandbox.<unnamed>",
            "sandbox agents: doc_capture, liveness, ocr, face_match",
        ),
    ];
    for (pointer, value, field, detail) in cases {
        let mut request = session_body(json!({}));
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        request
            .pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()[key] = value;

        let body = problem(app.post_session(&request).await, 422).await;

        let text = body.to_string();
        assert!(
            !text.contains("Jane") && !text.contains("secretbase64"),
            "{text}"
        );
        assert_eq!(body["errors"][0]["field"], field, "{text}");
        assert_eq!(body["errors"][0]["detail"], detail, "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_frees_the_slot() {
    let app = spawn_app_with(|s| s.server.max_inflight_sessions = 1).await;
    let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    sender.unbounded_send(Ok(b"{\"selfie\":".to_vec())).unwrap();

    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(receiver))
        .send()
        .await
        .unwrap();

    problem(response, 408).await;
    drop(sender);
    let next = app.post_session(&session_body(json!({}))).await;
    assert_eq!(next.status(), 202);
}

/// The HTTP layer reads at most `server.max_head_bytes` (8 KiB) of request head; beyond it, `431`,
/// and the next request is served as usual.
#[tokio::test]
async fn a_request_head_over_8_kib_is_a_431() {
    let app = spawn_app().await;
    let padded = |len: usize| {
        app.client
            .get(app.url("/health"))
            .header("x-padding", "a".repeat(len))
            .send()
    };

    assert_eq!(padded(9 * 1024).await.unwrap().status(), 431);
    assert_eq!(padded(7 * 1024).await.unwrap().status(), 200);
}

/// A client that opens a connection and never finishes its request head holds it only for
/// `server.header_timeout_ms`.
#[tokio::test(start_paused = true)]
async fn a_request_head_that_does_not_arrive_in_time_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| s.server.header_timeout_ms = 5_000).await;
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();

    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("the connection was closed within a minute");

    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the connection was closed, not answered: {read:?} {rest:?}"
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_method_a_path_does_not_take_is_a_405() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/health")).send().await.unwrap();
    problem(response, 405).await;
}

#[tokio::test]
async fn missing_images_are_reported_field_by_field() {
    let app = spawn_app().await;
    let body = problem(app.post_session(&json!({ "reference": "r" })).await, 422).await;
    assert_eq!(
        fields(&body),
        [
            ("selfie".into(), "missing".into()),
            ("document".into(), "missing".into())
        ]
    );

    let no_front = json!({ "selfie": { "frames": [] }, "document": { "type": "passport" } });
    let body = problem(app.post_session(&no_front).await, 422).await;
    assert_eq!(
        fields(&body),
        [
            ("selfie.frames".into(), "missing".into()),
            ("document.front".into(), "missing".into())
        ]
    );
}

#[tokio::test]
async fn bad_base64_and_non_images_are_422_with_the_field_named() {
    let app = spawn_app().await;
    let mut request = session_body(json!({}));
    request["selfie"]["frames"] = json!([b64(&jpeg(32, 32)), "%%% not base64 %%%"]);
    request["document"]["front"] = json!(b64(b"just some text"));

    let body = problem(app.post_session(&request).await, 422).await;

    assert_eq!(
        fields(&body),
        [
            ("selfie.frames[1]".into(), "bad_base64".into()),
            ("document.front".into(), "not_an_image".into())
        ]
    );
    let text = body.to_string();
    assert!(
        !text.contains("just some text") && !text.contains("anVzdCBzb21l"),
        "input is never echoed"
    );
}

#[tokio::test]
async fn a_truncated_image_is_corrupt() {
    let app = spawn_app().await;
    let mut request = session_body(json!({}));
    request["document"]["back"] = json!(b64(&png(64, 64)[..30]));
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(
        fields(&body),
        [("document.back".into(), "corrupt_image".into())]
    );
}

#[tokio::test]
async fn wrong_types_and_unknown_fields_are_422() {
    let app = spawn_app().await;
    let mut request = session_body(json!({}));
    request["document"]["type"] = json!("library_card");
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(fields(&body)[0].0, "document.type");

    let mut request = session_body(json!({}));
    request["selfy"] = json!({});
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "selfy");
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("unknown field: expected one of `reference`")
    );
}

#[tokio::test]
async fn too_many_frames_are_refused() {
    let app = spawn_app_with(|s| s.limits.max_selfie_frames = 2).await;
    let mut request = session_body(json!({}));
    let frame = b64(&jpeg(16, 16));
    request["selfie"]["frames"] = json!([frame, frame, frame]);
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(
        fields(&body),
        [("selfie.frames".into(), "too_many_frames".into())]
    );
}

#[tokio::test]
async fn an_image_over_the_pixel_limit_is_refused_from_its_header() {
    let app = spawn_app_with(|s| s.limits.max_image_side = 100).await;
    let mut request = session_body(json!({}));
    request["document"]["front"] = json!(b64(&png(101, 10)));
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(
        fields(&body),
        [("document.front".into(), "image_dimensions_too_large".into())]
    );
}

#[tokio::test]
async fn scripting_an_agent_that_is_not_a_sandbox_agent_is_refused() {
    let app = spawn_app().await;
    let request = session_body(json!({ "passport_reader": { "result": "pass" } }));
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(
        fields(&body),
        [("sandbox.passport_reader".into(), "unknown_agent".into())]
    );

    let request = session_body(json!({ "ocr": { "latency_ms": 3_600_000 } }));
    let body = problem(app.post_session(&request).await, 422).await;
    assert_eq!(fields(&body), [("sandbox.ocr".into(), "invalid".into())]);
}

#[tokio::test]
async fn an_unsupported_content_type_is_a_415() {
    let app = spawn_app().await;
    problem(app.post_raw("text/plain", "hello").await, 415).await;
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(response, 415).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app_with(|s| s.server.body_limit_bytes = 4_096).await;
    let mut request = session_body(json!({}));
    request["document"]["front"] = json!(b64(&vec![0u8; 8_192]));
    let body = problem(app.post_session(&request).await, 413).await;
    assert_eq!(
        body["type"],
        "urn:kyc-orchestrator:problem:payload-too-large"
    );

    // Without a Content-Length the limit holds while streaming.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1_024])));
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    problem(response, 413).await;
}

#[tokio::test]
async fn an_unknown_session_is_a_404() {
    let app = spawn_app().await;
    problem(
        app.get("/v1/sessions/01a1ffa2-b34b-7044-a2cb-80666ff80c8b")
            .await,
        404,
    )
    .await;
    problem(app.get("/v1/sessions/not-an-id/events").await, 404).await;
    problem(app.get("/v2/nothing").await, 404).await;
}

#[tokio::test]
async fn a_bad_resume_point_is_a_400() {
    let app = spawn_app().await;
    let id = app.start_session(&session_body(json!({}))).await;
    problem(
        app.get(&format!("/v1/sessions/{id}/events?after=soon"))
            .await,
        400,
    )
    .await;
}

fn multipart(metadata: Value) -> Form {
    Form::new()
        .part("selfie", Part::bytes(jpeg(48, 48)).file_name("f0.jpg"))
        .part("selfie", Part::bytes(jpeg(48, 48)).file_name("f1.jpg"))
        .part("metadata", Part::text(metadata.to_string()))
}

#[tokio::test(start_paused = true)]
async fn a_multipart_session_runs_like_a_json_one() {
    let app = spawn_app().await;
    let form = multipart(json!({ "reference": "mp-1", "document": { "type": "id_card" } }))
        .part(
            "document_front",
            Part::bytes(png(80, 50)).file_name("front.png"),
        )
        .part(
            "document_back",
            Part::bytes(png(80, 50)).file_name("back.png"),
        );

    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header("accept", "application/x-ndjson")
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let events = crate::helpers::parse_ndjson(&response.bytes().await.unwrap());
    assert_eq!(crate::helpers::completion(&events)["decision"], "approved");
}

#[tokio::test]
async fn a_multipart_session_without_a_document_or_with_a_stray_part_is_422() {
    let app = spawn_app().await;
    let form = multipart(json!({})).part("passport", Part::bytes(png(8, 8)));
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let body = problem(response, 422).await;
    assert_eq!(
        fields(&body),
        [
            ("passport".into(), "unknown_part".into()),
            ("document".into(), "missing".into())
        ]
    );
}

#[tokio::test]
async fn bad_requests_leave_the_service_healthy() {
    let app = spawn_app().await;
    for _ in 0..3 {
        problem(app.post_raw("application/json", "[").await, 400).await;
    }
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn a_bad_claim_is_422_with_its_field_named_and_never_echoed() {
    let app = spawn_app().await;
    let mut empty = session_body(json!({}));
    empty["claimed"] = json!({});
    let mut blank = session_body(json!({}));
    blank["claimed"] = json!({ "surname": "  ", "given_names": "Anna" });
    let mut bad_date = session_body(json!({}));
    bad_date["claimed"] = json!({ "date_of_birth": "12/08/1974" });

    let empty = problem(app.post_session(&empty).await, 422).await;
    let blank = problem(app.post_session(&blank).await, 422).await;
    let bad_date = problem(app.post_session(&bad_date).await, 422).await;

    assert_eq!(fields(&empty), [("claimed".into(), "invalid".into())]);
    assert_eq!(
        fields(&blank),
        [("claimed.surname".into(), "invalid".into())]
    );
    assert_eq!(bad_date["errors"][0]["field"], "claimed.date_of_birth");
    assert!(!bad_date.to_string().contains("12/08/1974"));
}
