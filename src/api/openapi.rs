//! The OpenAPI 3.1 document, generated from the handlers' annotations and the types they take
//! and return, served at `GET /openapi.json` without a key. A test compares it with the
//! committed `openapi.json`, so a change to the API shows in review.
//!
//! What every `/v1` operation shares is added here rather than on each handler: the bearer
//! key, and the `401`, `403`, `429` and `503` answers; every answer carries `x-request-id`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;
pub(super) use super::error::{FieldError, Problem};
use crate::domain::{Claimed, DocumentType, SandboxDirective};

// The request types below describe the wire format for the document; the handler parses the
// body itself (`submission`), so their fields are read only by the schema.

/// The JSON session request: images as base64 (a `data:image/...;base64,` prefix and missing
/// padding are accepted). Unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct SessionRequest {
    /// The client's own reference (at most `limits.max_reference_len` characters). Never
    /// logged: it may identify a person.
    #[schema(example = "customer-42")]
    reference: Option<String>,
    selfie: SelfieRequest,
    document: DocumentRequest,
    claimed: Option<Claimed>,
    /// Per sandbox agent, its scripted behaviour. Test keys only, and only where sandbox
    /// agents are configured.
    sandbox: Option<BTreeMap<String, SandboxDirective>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct SelfieRequest {
    /// JPEG, PNG or WebP frames in capture order, base64; 1 to `limits.max_selfie_frames`.
    #[schema(min_items = 1)]
    frames: Vec<String>,
    /// The liveness challenge these frames answer (`POST /v1/liveness/challenges`): the head
    /// frontal in the first frame, then each step and back, in order. A challenge is answered
    /// once, before it expires, by a session of the key's own tenant and mode.
    #[schema(example = "chl_7Hq2LmX9bTz4RkWc1VnP0sJd")]
    challenge_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct DocumentRequest {
    #[serde(rename = "type")]
    kind: Option<DocumentType>,
    /// The document's front, base64.
    front: String,
    /// Its back, base64: read for the zone when the front has none (an ID card's).
    back: Option<String>,
}

/// An image file part.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(super) struct ImageFile(Vec<u8>);

/// The multipart session request: file parts, and the rest as a JSON `metadata` part.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionUpload {
    /// Selfie frames, one part each, in capture order.
    selfie: Vec<ImageFile>,
    document_front: ImageFile,
    document_back: Option<ImageFile>,
    /// JSON: `reference`, `document` (`{"type": ...}`), `claimed`, `sandbox` and
    /// `challenge_id` (the selfie's liveness challenge), as in the JSON request.
    #[schema(example = r#"{"reference": "customer-42", "document": {"type": "passport"}}"#)]
    metadata: Option<String>,
}

/// The body of a remote agent's request (`POST /v1/agents/{agent}` of an agent server).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AgentRequest {
    /// The session's inputs, as in the body of `POST /v1/sessions` (without `reference`;
    /// `sandbox` only for a sandbox agent, under the server's name for it).
    session: SessionRequest,
    /// The output of each dependency of the agent that has a wire form, by the caller's name
    /// for the dependency: an object with a `type`. `document` (from doc_capture): `front`,
    /// and where there is one `photo`, `back` and `portrait`, each a base64 PNG (the rectified
    /// document, the photo as taken, the back, the portrait crop). `selfie` (from liveness):
    /// `frames` (how many), `best` (`index`, `scale`, `faces` as `[x, y, width, height]` in
    /// the scaled frame's pixels, `sharpness`; null without a face) and `undecodable`.
    /// `sandbox`: `agent`.
    #[schema(value_type = Object)]
    upstream: BTreeMap<String, Value>,
    /// The liveness challenge the selfie answers: `id` and the `steps` the caller took from
    /// its store (`turn_left`, `turn_right`, `look_up`, `look_down`). For liveness.
    #[schema(value_type = Option<Object>)]
    challenge: Option<Value>,
}

/// An 8x8 PNG, standing in for real photos in examples.
const EXAMPLE_IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mM4MS0FK2IYWhIADlxwgebZ8zEAAAAASUVORK5CYII=";

/// The JSON request the reference shows.
pub(super) fn example_request() -> Value {
    json!({
        "reference": "customer-42",
        "selfie": { "frames": [EXAMPLE_IMAGE] },
        "document": { "type": "passport", "front": EXAMPLE_IMAGE },
        "claimed": { "surname": "Eriksson", "date_of_birth": "1974-08-12" },
        "sandbox": { "liveness": { "latency_ms": 300, "result": "fail" } }
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kyc-orchestrator",
        description = "Identity verification: a session of selfie frames and document images \
            is checked by four agents (liveness, doc_capture, ocr, face_match) under a deadline, \
            and decided `approved`, `declined` or `review` with reason codes. Every `/v1` route \
            needs `Authorization: Bearer <key>` (`kyc_test_...` or `kyc_live_...`) and sees only \
            its key's tenant and mode. Errors are RFC 9457 `application/problem+json` with `type` \
            `urn:kyc-orchestrator:problem:<slug>`. Agents that run elsewhere speak the remote \
            agent protocol: `kyc-orchestrator openapi --agent-server` prints its document, which \
            an agent server serves at its own `/openapi.json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::sessions::create,
        super::listing::list,
        super::sessions::show,
        super::sessions::events,
        super::sessions::erase,
        super::images::index,
        super::images::image,
        super::challenges::create,
        super::capture::create,
        super::capture::show,
        super::capture::challenge,
        super::capture::submit,
        super::capture::events,
        super::reviews::queue,
        super::reviews::reasons,
        super::reviews::decide,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::show,
        super::webhooks::update,
        super::webhooks::delete,
        super::webhooks::rotate_secret,
        super::webhooks::deliveries,
        super::webhooks::resend,
        super::webhooks::recover,
        super::health::health,
        super::health::ready,
    ),
    components(schemas(
        crate::orchestrator::EventKind,
        FieldError,
        crate::webhooks::WebhookMessage,
    )),
    modifiers(&Conventions),
    tags(
        (name = "sessions", description = "Verification sessions"),
        (name = "liveness", description = "Liveness challenges: a random sequence of head \
            movements for the applicant to make, which a recording made before it cannot know"),
        (name = "capture", description = "Hosted capture: a single-use link to the page at \
            `/capture`, where the applicant photographs the document and answers a liveness \
            challenge. The `/v1/capture` routes are that page's; its credential is the link's \
            token"),
        (name = "reviews", description = "Manual review of sessions the agents decided \
            `review`: the queue and reviewers' decisions, with four-eyes when the service \
            requires it"),
        (name = "webhooks", description = "Endpoints that receive signed messages when a \
            decision is made (Standard Webhooks); the body is the `WebhookMessage` schema"),
        (name = "health", description = "For load balancers; no key"),
    ),
)]
struct ApiDoc;

/// The document, as served.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The agent server's own document (`kyc-orchestrator agent-server`): the remote agent
/// protocol, for anyone who implements it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kyc-orchestrator agent server",
        description = "The remote agent protocol. An API instance's agent of kind `http` posts \
            a session's inputs and its dependencies' outputs to `{url}/v1/agents/{agent}` and \
            reads back the agent's report. `kyc-orchestrator agent-server` implements it for \
            the built-in agents; a vendor's adapter or a model server can implement it too. \
            Errors are RFC 9457 `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::agent_server::run,
        super::health::health,
        super::agent_server::ready,
    ),
    modifiers(&AgentToken),
    tags(
        (name = "agents", description = "Running an agent"),
        (name = "health", description = "For load balancers; no token"),
    ),
)]
struct AgentServerDoc;

/// The agent server's document, as it serves it.
pub fn agent_server_document() -> Document {
    AgentServerDoc::openapi()
}

/// The agent server's bearer token.
struct AgentToken;

impl Modify for AgentToken {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "agent_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`agent_server.token`, which the callers have as \
                         `agents.NAME.settings.token`",
                    ))
                    .build(),
            ),
        );
    }
}

/// What every operation shares.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kyc_test_... or kyc_live_...")
                    .description(Some(
                        "An API key (`kyc-orchestrator keys create`); its scopes are named on \
                         each operation",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "capture_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cap_...")
                    .description(Some(
                        "A capture link's token, from the fragment of its URL; it opens that \
                         link alone",
                    ))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if operation.security.is_some() {
                    add_key_answers(operation);
                }
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "x-request-id".into(),
                            HeaderBuilder::new()
                                .description(Some(
                                    "The request's id: the client's own, or one the service made",
                                ))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

/// The answers every keyed operation can give.
fn add_key_answers(operation: &mut Operation) {
    let problem = |description: &str, header: Option<(&str, &str)>| {
        let mut response = ResponseBuilder::new().description(description).content(
            super::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if let Some((name, meaning)) = header {
            response = response.header(
                name,
                HeaderBuilder::new().description(Some(meaning)).build(),
            );
        }
        RefOr::T(response.build())
    };
    let answers = [
        (
            "401",
            problem(
                "No key, or a malformed, unknown, revoked or expired one",
                Some(("WWW-Authenticate", "`Bearer realm=\"kyc\"`")),
            ),
        ),
        ("403", problem("The key lacks the operation's scope", None)),
        (
            "429",
            problem(
                "The key is over its rate limit",
                Some(("Retry-After", "Seconds until a request is allowed")),
            ),
        ),
        (
            "503",
            problem(
                "At the limit of running sessions, draining, the store unavailable, or the \
                 models still loading",
                Some(("Retry-After", "Seconds to wait, where known")),
            ),
        ),
    ];
    for (status, answer) in answers {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(answer);
    }
}

/// `GET /openapi.json`, no key.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve_document))
}

async fn serve_document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    json_text(TEXT.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the document serialises")
    }))
}

/// `GET /openapi.json` of an agent server, no token.
pub(super) async fn serve_agent_server_document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    json_text(TEXT.get_or_init(|| {
        agent_server_document()
            .to_pretty_json()
            .expect("the document serialises")
    }))
}

fn json_text(text: &str) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text.to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real parser's side is `submission::json`'s test of the same example.
    #[test]
    fn the_example_request_fits_the_documented_schema() {
        let body = serde_json::to_vec(&example_request()).unwrap();
        let parsed: SessionRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.selfie.frames.len(), 1);
    }
}
