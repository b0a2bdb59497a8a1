//! Hosted capture over HTTP. `POST /v1/capture-links` is the integrator's (an API key with
//! `sessions:write`); the `/v1/capture` routes are the applicant's page's, whose only credential
//! is the link's token (`Authorization: Bearer cap_...`). The token opens its link and nothing
//! else: what to photograph, a liveness challenge, the one session, and that session's
//! progress, which names the checks as they run and finish but never their results.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admission::AdmissionPermit;
use super::auth::{Authorized, SessionsWrite};
use super::challenges::ChallengeView;
use super::error::{ApiError, FieldError};
use super::sessions::ndjson;
use super::submission::Submission;
use crate::capture::{CaptureLinks, LinkRequest, OpenError};
use crate::domain::{CaptureLink, CaptureLinkId, CaptureRefusal, Claimed, DocumentType, SessionId};
use crate::orchestrator::{Event, EventKind, OrchestratorError, Start};

pub fn router(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/capture-links", post(create))
        .route("/v1/capture", get(show))
        .route("/v1/capture/challenge", post(challenge))
        .route(
            "/v1/capture/session",
            post(submit).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/v1/capture/events", get(events))
}

/// What an integrator asks a link for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkBody {
    /// Your reference for the session (never shown to the applicant).
    reference: Option<String>,
    document_type: DocumentType,
    /// What you know of the applicant, compared with the document as in `POST /v1/sessions`.
    claimed: Option<Claimed>,
    /// Where the page sends the applicant once the session is decided, with `session_id`
    /// added to its query.
    redirect_url: Option<String>,
}

/// A link, as made. The URL is the only place its token appears: hand it to the applicant.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct LinkView {
    id: CaptureLinkId,
    /// The capture page, with the token in its fragment (which browsers never send to a server
    /// nor put in a `Referer`).
    url: String,
    expires_at: DateTime<Utc>,
}

/// Makes a capture link for one session of the key's tenant and mode.
#[utoipa::path(
    post,
    path = "/v1/capture-links",
    tag = "capture",
    operation_id = "create_capture_link",
    summary = "Make a capture link for an applicant",
    description = "A single-use link to the hosted capture page, valid for `capture.ttl_s` \
        (30 minutes by default). The page photographs the document and the applicant's \
        liveness challenge, starts one session with this request's reference, document type \
        and claim, shows its progress without any result, and sends the applicant to \
        `redirect_url` with `session_id` added. Follow the session as any other (`GET \
        /v1/sessions/{id}`, webhooks).",
    request_body = LinkBody,
    responses(
        (status = 201, description = "Made", body = LinkView),
        (status = 400, description = "Not a JSON body, or a missing, unknown or mistyped field",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each with a code",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:write"])),
)]
pub(super) async fn create(
    Authorized(caller, _): Authorized<SessionsWrite>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LinkBody>, JsonRejection>,
) -> Result<(StatusCode, Json<LinkView>), ApiError> {
    let Json(body) = body.map_err(|rejection| ApiError::MalformedJson(rejection.body_text()))?;
    let links = capture_links(&state)?;
    let request = LinkRequest {
        reference: body.reference,
        document_type: body.document_type,
        claimed: body.claimed,
        redirect_url: body.redirect_url,
    };
    let problems = links.problems(&request);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldError::new(p.field, "invalid", p.detail))
                .collect(),
        ));
    }
    let (link, token) = links
        .create(&caller.principal(), request)
        .await
        .map_err(OrchestratorError::Store)?;
    tracing::info!(capture_link = %link.id.as_str(), "capture link made");
    let base = public_url(&state, &headers);
    Ok((
        StatusCode::CREATED,
        Json(LinkView {
            id: link.id,
            url: format!("{base}/capture#{}", token.expose()),
            expires_at: link.expires_at,
        }),
    ))
}

/// What the page shows before it starts.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CaptureView {
    document_type: DocumentType,
    /// Whether to photograph the document's back too.
    document_back: bool,
    /// Most selfie frames a session may send (`limits.max_selfie_frames`).
    selfie_frames: usize,
    expires_at: DateTime<Utc>,
}

/// The open link's task: which document to photograph.
#[utoipa::path(
    get,
    path = "/v1/capture",
    tag = "capture",
    operation_id = "show_capture",
    summary = "What a capture link asks for",
    responses(
        (status = 200, description = "The link is open", body = CaptureView),
        (status = 401, description = "No link has this token",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was used or has expired, or its key revoked",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("capture_token" = [])),
)]
pub(super) async fn show(
    OpenLink(link): OpenLink,
    State(state): State<AppState>,
) -> Json<CaptureView> {
    Json(CaptureView {
        document_type: link.document_type,
        document_back: link.document_type.has_back(),
        selfie_frames: state.limits.max_selfie_frames,
        expires_at: link.expires_at,
    })
}

/// A liveness challenge for the link's session.
#[utoipa::path(
    post,
    path = "/v1/capture/challenge",
    tag = "capture",
    operation_id = "create_capture_challenge",
    summary = "Issue the capture's liveness challenge",
    description = "As `POST /v1/liveness/challenges`, for the tenant and mode of the link, and \
        for its session alone. Asked again, it answers the same challenge until that one \
        expires, and only then draws another; the session may answer no other.",
    responses(
        (status = 201, description = "Issued", body = ChallengeView),
        (status = 401, description = "No link has this token",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was used or has expired, or its key revoked",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("capture_token" = [])),
)]
pub(super) async fn challenge(
    OpenLink(link): OpenLink,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<ChallengeView>), ApiError> {
    let challenge = state
        .orchestrator
        .capture_challenge(&link)
        .await
        .map_err(OrchestratorError::Store)?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(capture_link = %link.id.as_str(), challenge_id = %challenge.id, "capture challenge given");
    Ok((StatusCode::CREATED, Json(challenge.into())))
}

/// One line of a capture's progress.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Progress {
    /// The session runs these checks.
    Started { checks: Vec<String> },
    /// A check began.
    Running { check: String },
    /// A check is over (whatever it found).
    Done { check: String },
    /// The session is decided: send the applicant on.
    Completed {
        session_id: SessionId,
        /// `redirect_url` with `session_id` added, if the link has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        redirect_url: Option<String>,
    },
}

/// Starts the link's session and streams its progress.
#[utoipa::path(
    post,
    path = "/v1/capture/session",
    tag = "capture",
    operation_id = "submit_capture",
    summary = "Start the capture link's session",
    description = "The multipart form of `POST /v1/sessions` (`document_front`, \
        `document_back`, `selfie` parts, and a `metadata` part with `challenge_id`); the link \
        supplies the reference, document type and claim. Answers with the session's progress \
        as NDJSON: which checks run and finish, never what they found. A link that started a \
        session refuses another with `410`; a page that lost its connection follows the \
        session with `GET /v1/capture/events`.",
    request_body(content = super::openapi::SessionUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The progress", body = Progress,
            content_type = "application/x-ndjson"),
        (status = 401, description = "No link has this token",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was used or has expired, or its key revoked",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parts, each with a code",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("capture_token" = [])),
)]
pub(super) async fn submit(
    OpenLink(link): OpenLink,
    AdmissionPermit(permit): AdmissionPermit,
    State(state): State<AppState>,
    Submission(session): Submission,
) -> Result<Response, ApiError> {
    if session.sandbox.is_some() || session.reference.is_some() || session.claimed.is_some() {
        return Err(ApiError::BadRequest(
            "a capture link fixes the session's reference and claim, and runs no sandbox \
             script; send only images and `challenge_id`"
                .into(),
        ));
    }
    let start = state
        .orchestrator
        .start_captured(&link, session, Some(permit))
        .await?;
    let lines = match start {
        Start::New(started) => {
            tracing::info!(capture_link = %link.id.as_str(), session_id = %started.id, "capture session started");
            progress(state.orchestrator.follow_new(started.events).boxed(), link)
        }
        Start::Existing {
            same_request: false,
            ..
        } => return Err(ApiError::CaptureGone(CaptureRefusal::Used)),
        Start::Existing { id, .. } => following(&state, link, id).await?,
    };
    Ok(ndjson(lines))
}

/// The progress of the session the link started, from its start.
#[utoipa::path(
    get,
    path = "/v1/capture/events",
    tag = "capture",
    operation_id = "follow_capture",
    summary = "Follow the capture link's session",
    description = "For a page that lost its connection after submitting: the progress of the \
        session the link started, from the start, until it is decided. Until the link expires.",
    responses(
        (status = 200, description = "The progress", body = Progress,
            content_type = "application/x-ndjson"),
        (status = 401, description = "No link has this token",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The link is open: it has started no session yet",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link has expired",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("capture_token" = [])),
)]
pub(super) async fn events(
    token: CaptureBearer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let links = capture_links(&state)?;
    let (link, id) = links.session(&token.0).await.map_err(open_error)?;
    Ok(ndjson(following(&state, link, id).await?))
}

async fn following(
    state: &AppState,
    link: CaptureLink,
    id: SessionId,
) -> Result<futures::stream::BoxStream<'static, Bytes>, ApiError> {
    let events = state
        .orchestrator
        .follow_started(id, 0)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(progress(events.boxed(), link))
}

/// The session's event lines as progress lines: names of checks and states, no results.
fn progress(
    events: futures::stream::BoxStream<'static, Bytes>,
    link: CaptureLink,
) -> futures::stream::BoxStream<'static, Bytes> {
    events
        .flat_map(move |chunk| {
            let lines: Vec<Bytes> = chunk
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .filter_map(|line| serde_json::from_slice::<Event>(line).ok())
                .filter_map(|event| progress_of(event, &link))
                .map(|progress| {
                    let mut line = serde_json::to_vec(&progress).expect("progress serializes");
                    line.push(b'\n');
                    Bytes::from(line)
                })
                .collect();
            futures::stream::iter(lines)
        })
        .boxed()
}

fn progress_of(event: Event, link: &CaptureLink) -> Option<Progress> {
    Some(match event.kind {
        EventKind::SessionStarted { agents, .. } | EventKind::SessionResumed { agents, .. } => {
            Progress::Started { checks: agents }
        }
        EventKind::AgentStarted { agent } => Progress::Running { check: agent },
        EventKind::AgentCompleted { agent, .. }
        | EventKind::AgentFailed { agent, .. }
        | EventKind::AgentTimedOut { agent, .. }
        | EventKind::AgentSkipped { agent, .. } => Progress::Done { check: agent },
        EventKind::SessionCompleted { .. } => Progress::Completed {
            session_id: event.session_id,
            redirect_url: link
                .redirect_url
                .as_deref()
                .map(|url| with_session(url, event.session_id)),
        },
        EventKind::SessionInterrupted { .. }
        | EventKind::ReviewOpened { .. }
        | EventKind::ReviewDecided { .. }
        | EventKind::ReviewResolved { .. } => return None,
    })
}

/// `url` with `session_id=<id>` added to its query.
fn with_session(url: &str, id: SessionId) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed
                .query_pairs_mut()
                .append_pair("session_id", &id.to_string());
            parsed.into()
        }
        Err(_) => url.to_owned(),
    }
}

fn capture_links(state: &AppState) -> Result<&CaptureLinks, ApiError> {
    state
        .orchestrator
        .capture()
        .map(|links| &**links)
        .ok_or(ApiError::NotFound)
}

/// Where the applicant's browser reaches this service: `capture.public_url`, or the request's
/// own `Host` (behind a proxy, with its `X-Forwarded-Proto`).
fn public_url(state: &AppState, headers: &HeaderMap) -> String {
    if !state.capture_url.is_empty() {
        return state.capture_url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|proto| matches!(*proto, "http" | "https"))
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

fn open_error(error: OpenError) -> ApiError {
    match error {
        OpenError::Unknown => ApiError::CaptureUnknown,
        OpenError::NotStarted => ApiError::NotFound,
        OpenError::Refused(refusal) => ApiError::CaptureGone(refusal),
        OpenError::Store(error) => OrchestratorError::Store(error).into(),
    }
}

/// The capture token a request presents, unchecked.
pub(super) struct CaptureBearer(String);

impl<S: Send + Sync> FromRequestParts<S> for CaptureBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| Self(token.trim().to_owned()))
            .ok_or(ApiError::CaptureUnknown)
    }
}

/// A link that may still start its session, named by the request's token.
pub(super) struct OpenLink(CaptureLink);

impl FromRequestParts<AppState> for OpenLink {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CaptureBearer(token) = CaptureBearer::from_request_parts(parts, state).await?;
        let link = capture_links(state)?
            .open(&token)
            .await
            .map_err(open_error)?;
        tracing::Span::current().record("tenant", link.owner.tenant.as_str());
        // A link acts for the key that made it, so no longer than that key may.
        if !state
            .auth
            .may_act(&link.created_by)
            .await
            .map_err(OrchestratorError::Store)?
        {
            return Err(ApiError::CaptureGone(CaptureRefusal::Revoked));
        }
        Ok(Self(link))
    }
}
