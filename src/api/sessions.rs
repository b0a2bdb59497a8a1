//! `/v1/sessions`: start a session, list them, read one, follow its events, erase it. Each route
//! needs a key with its scope, and sees only the key's tenant and mode: another tenant's session
//! is `404`, exactly as an unknown one.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admission::AdmissionPermit;
use super::auth::{Authorized, SessionsErase, SessionsRead, SessionsWrite};
use super::error::ApiError;
use super::submission::Submission;
use crate::domain::{
    CheckResult, Decision, Erasure, KeyId, Mode, ReviewDecision, ReviewState, ReviewStatus,
    Reviewer, SessionId, SessionRecord, SessionStatus, Verdict,
};
use crate::orchestrator::{OrchestratorError, Start, Started};

/// The prefix of the idempotency keys of capture links' sessions (the link's id follows), which
/// no client's key may take.
const CAPTURE_KEYS: &str = "capture:";

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub const NDJSON: &str = "application/x-ndjson";

pub fn router(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sessions",
            post(create)
                .layer(DefaultBodyLimit::max(body_limit))
                .get(super::listing::list),
        )
        .route("/v1/sessions/{id}", get(show).delete(erase))
        .route("/v1/sessions/{id}/events", get(events))
}

/// Starts a session: `202` with its location, or with `Accept: application/x-ndjson` its events
/// as they happen. With an `Idempotency-Key` already used for the same request, the same
/// session instead (`200`, or its events); for a different request, `409`.
/// A live key's request may not script sandbox agents: `400`.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "create_session",
    summary = "Start a verification session",
    description = "Checks the request, stores its inputs and starts the agents. Without \
        `Accept: application/x-ndjson` the answer is `202` at once; with it, `200` and the \
        session's events as they happen, one JSON object per line, until `session.completed` \
        (followed by `review.opened` when the agents decide `review`). A repeated `Idempotency-Key` with the same request names the same session (`200`, \
        `Idempotent-Replayed: true`, or its events); with another request, `409`.",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 visible ASCII characters; scoped to the key's tenant and mode"),
        ("Accept" = Option<String>, Header,
            description = "`application/x-ndjson` for the event stream"),
    ),
    request_body(
        description = "Images as base64 in JSON, or as file parts of a multipart form.",
        content(
            (super::openapi::SessionRequest = "application/json",
                example = json!(super::openapi::example_request())),
            (super::openapi::SessionUpload = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the session runs", body = AcceptedView,
            headers(("Location" = String, description = "The session's URL"))),
        (status = 200, description = "The event stream (with `Accept: application/x-ndjson`), \
            or the session an `Idempotency-Key` already named (`Idempotent-Replayed: true`)",
            content(
                (crate::orchestrator::Event = "application/x-ndjson"),
                (AcceptedView = "application/json"),
            ),
            headers(
                ("Location" = String, description = "The session's URL"),
                ("Idempotent-Replayed" = String, description = "`true` on a replay"),
            )),
        (status = 400, description = "Malformed JSON, a bad `Idempotency-Key`, or a `sandbox` \
            script with a live key or without sandbox agents", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used for another request",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over `server.body_limit_bytes`",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor multipart",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each with a code",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:write"])),
)]
pub(super) async fn create(
    Authorized(caller, _): Authorized<SessionsWrite>,
    AdmissionPermit(permit): AdmissionPermit,
    State(state): State<AppState>,
    WantsNdjson(stream): WantsNdjson,
    IdempotencyKey(key): IdempotencyKey,
    Submission(session): Submission,
) -> Result<Response, ApiError> {
    if caller.key.owner.mode == Mode::Live && session.sandbox.is_some() {
        return Err(ApiError::BadRequest(
            "`sandbox` scripts are for test keys (kyc_test_...); a live key's sessions run as \
             they are"
                .into(),
        ));
    }
    let by = caller.principal();
    let (id, response) = match state
        .orchestrator
        .start_once(session, &by, Some(permit), key)
        .await?
    {
        // Accepted: from here on the client hears of its session, whatever the store does.
        Start::New(started) if stream => {
            return Ok(ndjson(state.orchestrator.follow_new(started.events)));
        }
        Start::New(started) => (started.id, accepted(&started)),
        Start::Existing {
            same_request: false,
            ..
        } => return Err(ApiError::IdempotencyConflict),
        Start::Existing { id, .. } => {
            let record = state
                .orchestrator
                .session(&by.owner, id)
                .await?
                .ok_or(ApiError::NotFound)?;
            (id, replayed(record))
        }
    };
    if stream {
        let events = state
            .orchestrator
            .follow_started(id, 0)
            .await?
            .ok_or(ApiError::NotFound)?;
        return Ok(ndjson(events));
    }
    Ok(response)
}

/// Erases a completed session's images and extracted personal data; its decision stays.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    operation_id = "erase_session",
    summary = "Erase a session's images and personal data",
    description = "Deletes the inputs and every check's `extracted` data, and stamps `erased_at` \
        and `erased_by`. The decision, reasons and timings stay. Again: `204`.",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "No such session for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Still running", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:erase"])),
)]
pub(super) async fn erase(
    Authorized(caller, _): Authorized<SessionsErase>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    match state.orchestrator.erase(&caller.principal(), id).await? {
        Erasure::Erased => Ok(StatusCode::NO_CONTENT),
        Erasure::Running => Err(ApiError::SessionRunning),
        Erasure::NotFound => Err(ApiError::NotFound),
    }
}

/// The request's `Idempotency-Key`, checked: 1 to 255 visible ASCII characters.
pub(super) struct IdempotencyKey(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        idempotency_key(&parts.headers).map(Self)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?;
    let valid = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(bad());
    }
    if key.starts_with(CAPTURE_KEYS) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key: keys starting `{CAPTURE_KEYS}` are the capture links' own"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// The session as it stands.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    operation_id = "get_session",
    summary = "Read a session",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 404, description = "No such session for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn show(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = parse_id(&id)?;
    let record = state
        .orchestrator
        .session(&caller.key.owner, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let decisions = state
        .reviews
        .decisions(&record)
        .await
        .map_err(OrchestratorError::Store)?;
    Ok(Json(SessionView::of(record, decisions)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events with a greater `seq`: 0 to 2^63 - 1 (what both databases store).
    #[serde(default)]
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: u64,
}

/// The session's events after `?after=<seq>`, then live ones until `session.completed`.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/events",
    tag = "sessions",
    operation_id = "follow_session",
    summary = "Follow a session's events",
    description = "The stored events after `after`, then live ones until `session.completed` \
        and the review events stored by then, one JSON object per line; on any instance. \
        Review decisions made later follow: read again with `after`.",
    params(("id" = String, Path, description = "The session's id"), EventsQuery),
    responses(
        (status = 200, description = "The events", body = crate::orchestrator::Event,
            content_type = "application/x-ndjson"),
        (status = 400, description = "A bad `after`", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such session for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn events(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let events = state
        .orchestrator
        .follow(&caller.key.owner, id, checked_after(query.after)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ndjson(events))
}

/// `after` within what a stored `seq` can be.
fn checked_after(after: u64) -> Result<u64, ApiError> {
    if i64::try_from(after).is_err() {
        return Err(ApiError::BadRequest(format!(
            "after must be 0 to {}",
            i64::MAX
        )));
    }
    Ok(after)
}

/// An id that does not parse names no session.
fn parse_id(id: &str) -> Result<SessionId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// Whether the client asked for the event stream.
pub(super) struct WantsNdjson(bool);

impl<S: Send + Sync> FromRequestParts<S> for WantsNdjson {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let wants = parts
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)));
        Ok(Self(wants))
    }
}

pub(super) fn ndjson(lines: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Links {
    #[serde(rename = "self")]
    this: String,
    events: String,
}

impl Links {
    pub(super) fn of(id: SessionId) -> Self {
        Self {
            this: format!("/v1/sessions/{id}"),
            events: format!("/v1/sessions/{id}/events"),
        }
    }
}

/// A session just accepted (or named by its `Idempotency-Key`).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AcceptedView {
    id: SessionId,
    status: SessionStatus,
    created_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
    links: Links,
}

fn accepted(started: &Started) -> Response {
    let links = Links::of(started.id);
    let location = HeaderValue::try_from(links.this.as_str()).expect("a path is a valid header");
    let view = AcceptedView {
        id: started.id,
        status: SessionStatus::Running,
        created_at: started.created_at,
        deadline_at: started.deadline_at,
        links,
    };
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response()
}

/// The answer to a repeated request: the session its key named, as it stands now.
fn replayed(record: SessionRecord) -> Response {
    let links = Links::of(record.id);
    let location = HeaderValue::try_from(links.this.as_str()).expect("a path is a valid header");
    let view = AcceptedView {
        id: record.id,
        status: record.status,
        created_at: record.created_at,
        deadline_at: record.deadline_at,
        links,
    };
    (
        StatusCode::OK,
        [
            (header::LOCATION, location),
            (
                header::HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ),
        ],
        Json(view),
    )
        .into_response()
}

/// A session: `GET /v1/sessions/{id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    id: SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    status: SessionStatus,
    created_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<DateTime<Utc>>,
    /// The decision: the agents', or the reviewers' once a review has resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    /// The reason codes of `decision`.
    reasons: Vec<String>,
    /// What the agents decided, kept whatever reviewers decide since.
    #[serde(skip_serializing_if = "Option::is_none")]
    automated_decision: Option<Decision>,
    /// The reason codes of `automated_decision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    automated_reasons: Option<Vec<String>>,
    /// The manual review, when the agents decided `review`.
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<ReviewView>,
    checks: BTreeMap<String, CheckResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    /// The agent plan that decided the session.
    plan_version: String,
    /// Set once its images and extracted personal data are erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_at: Option<DateTime<Utc>>,
    mode: Mode,
    /// The public id of the key that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<KeyId>,
    /// The public id of the key that erased it (absent when retention did).
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_by: Option<KeyId>,
    links: Links,
}

impl SessionView {
    /// The session with the decisions of its review (none when it has no review).
    pub(super) fn of(record: SessionRecord, decisions: Vec<ReviewDecision>) -> Self {
        let automated = record
            .automated()
            .map(|(decision, reasons)| (decision, reasons.to_vec()));
        let review = record
            .review
            .as_ref()
            .map(|state| ReviewView::of(state, decisions));
        let completion = record.completion;
        Self {
            id: record.id,
            reference: record.reference,
            status: record.status,
            created_at: record.created_at,
            deadline_at: record.deadline_at,
            completed_at: completion.as_ref().map(|c| c.completed_at),
            decision: completion.as_ref().map(|c| c.decision),
            duration_ms: completion.as_ref().map(|c| c.duration_ms),
            reasons: completion
                .as_ref()
                .map(|c| c.reasons.clone())
                .unwrap_or_default(),
            automated_decision: automated.as_ref().map(|(decision, _)| *decision),
            automated_reasons: automated.map(|(_, reasons)| reasons),
            review,
            checks: completion.map(|c| c.checks).unwrap_or_default(),
            plan_version: record.plan_version,
            erased_at: record.erased_at,
            mode: record.owner.mode,
            created_by: record.created_by,
            erased_by: record.erased_by,
            links: Links::of(record.id),
        }
    }
}

/// A session's manual review.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ReviewView {
    status: ReviewStatus,
    opened_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<DateTime<Utc>>,
    /// Every decision, oldest first: under four-eyes a disagreement keeps both.
    decisions: Vec<DecisionView>,
}

impl ReviewView {
    pub(super) fn of(state: &ReviewState, decisions: Vec<ReviewDecision>) -> Self {
        Self {
            status: state.status,
            opened_at: state.opened_at,
            resolved_at: state.resolved_at,
            decisions: decisions.into_iter().map(DecisionView::from).collect(),
        }
    }
}

/// One reviewer's decision.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DecisionView {
    /// The key that decided: its public id and label.
    reviewer: Reviewer,
    decided_at: DateTime<Utc>,
    decision: Verdict,
    reasons: Vec<String>,
    /// The reviewer's note; gone once the session is erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<ReviewDecision> for DecisionView {
    fn from(decision: ReviewDecision) -> Self {
        Self {
            reviewer: decision.reviewer,
            decided_at: decision.decided_at,
            decision: decision.verdict,
            reasons: decision.reasons,
            note: decision.note,
        }
    }
}
