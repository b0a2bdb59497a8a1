//! Manual review: the queue (`GET /v1/reviews`, `sessions:read`) and a reviewer's decision
//! (`POST /v1/sessions/{id}/review`, `reviews:write`). Both see only the key's tenant and mode:
//! another tenant's session is `404`, exactly as an unknown one.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Authorized, ReviewsWrite, SessionsRead};
use super::error::{ApiError, FieldError};
use super::listing::{decode_cursor, encode_cursor};
use super::sessions::{DecisionView, Links, SessionView};
use super::submission::from_json;
use crate::domain::{
    MAX_NOTE_CHARS, QueuePosition, Refusal, ReviewCase, ReviewQuery, ReviewStatus, SessionId,
    Verdict,
};
use crate::orchestrator::OrchestratorError;
use crate::reviews::{NewDecision, ReviewError};

/// Cases per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 20;
/// The most a page holds.
const MAX_LIMIT: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reviews", get(queue))
        .route("/v1/reviews/reasons", get(reasons))
        .route("/v1/sessions/{id}/review", post(decide))
}

impl From<ReviewError> for ApiError {
    fn from(error: ReviewError) -> Self {
        match error {
            ReviewError::Invalid {
                field,
                code,
                detail,
            } => Self::Invalid(vec![FieldError::new(field, code, detail)]),
            ReviewError::NotFound => Self::NotFound,
            error @ (ReviewError::NotInReview | ReviewError::Refused(Refusal::Resolved)) => {
                Self::ReviewClosed(error.to_string())
            }
            ReviewError::Refused(error @ Refusal::SameReviewer) => {
                Self::SameReviewer(error.to_string())
            }
            error @ ReviewError::Conflict => Self::EditConflict(error.to_string()),
            ReviewError::Store(error) => Self::from(OrchestratorError::Store(error)),
        }
    }
}

/// A reviewer's decision.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionRequest {
    /// `approved` or `declined`: the session's decision once the review resolves.
    decision: Verdict,
    /// One to 16 reason codes: the service's review vocabulary (`review.reasons`) or the
    /// agents' own codes.
    #[schema(example = json!(["document_verified_manually"]))]
    reasons: Vec<String>,
    /// Free text for the audit trail, at most 2,000 characters. It may name the applicant: an
    /// erasure clears it.
    #[schema(
        max_length = 2000,
        example = "Compared the document with the issuer's specimen."
    )]
    note: Option<String>,
}

/// Decides a session in review.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/review",
    tag = "reviews",
    operation_id = "review_session",
    summary = "Decide a session in review",
    description = "Records the calling key's decision (the reviewer is the key: its id and label). \
        Without four-eyes (`review.four_eyes`) it resolves the review: the session's `decision` \
        and `reasons` become the reviewer's, `automated_decision` keeps the agents'. With \
        four-eyes the first decision leaves the review `pending_second`; a different reviewer \
        agreeing resolves it, one disagreeing opens it again. Each decision appends \
        `review.decided` (and `review.resolved`) to the session's events.",
    params(("id" = String, Path, description = "The session's id")),
    request_body(content = DecisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded: the session as it stands now", body = SessionView),
        (status = 400, description = "Not JSON", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 403, description = "Four-eyes: this key made the first decision",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session is not in review, its review is resolved, or \
            another decision was stored meanwhile", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A bad decision, reason code or note",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["reviews:write"])),
)]
pub(super) async fn decide(
    Authorized(caller, _): Authorized<ReviewsWrite>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<SessionView>, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let request: DecisionRequest = from_json(&body)?;
    let reviewed = state
        .reviews
        .decide(
            &caller.key,
            id,
            NewDecision {
                verdict: request.decision,
                reasons: request.reasons,
                note: request.note,
            },
        )
        .await?;
    Ok(Json(SessionView::of(reviewed.session, reviewed.decisions)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct QueueQuery {
    /// Cases in this status; without it, every case waiting for a decision (`open` and
    /// `pending_second`).
    status: Option<ReviewStatus>,
    /// Cases per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of the queue.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct QueuePage {
    data: Vec<QueueItem>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A case in the queue.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct QueueItem {
    session_id: SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    status: ReviewStatus,
    /// Why the agents sent the session to review.
    reasons: Vec<String>,
    opened_at: DateTime<Utc>,
    /// Seconds since it opened.
    age_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<DateTime<Utc>>,
    /// The decisions so far, oldest first.
    decisions: Vec<DecisionView>,
    links: Links,
}

impl QueueItem {
    fn of(case: ReviewCase, now: DateTime<Utc>) -> Self {
        let state = case.state;
        Self {
            session_id: case.session_id,
            reference: case.reference,
            status: state.status,
            reasons: state.automated_reasons,
            opened_at: state.opened_at,
            age_seconds: u64::try_from((now - state.opened_at).num_seconds()).unwrap_or(0),
            resolved_at: state.resolved_at,
            decisions: case.decisions.into_iter().map(DecisionView::from).collect(),
            links: Links::of(case.session_id),
        }
    }
}

/// The codes a reviewer may give.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ReasonList {
    /// `review.reasons` as configured, then the agents' own codes.
    reasons: Vec<String>,
}

/// The reason codes a reviewer may give, in the order to offer them.
#[utoipa::path(
    get,
    path = "/v1/reviews/reasons",
    tag = "reviews",
    operation_id = "list_review_reasons",
    summary = "The reason codes a reviewer may give",
    description = "The service's review vocabulary (`review.reasons`), then the codes its agents \
        report; `POST /v1/sessions/{id}/review` accepts these and no others.",
    responses((status = 200, description = "The codes", body = ReasonList)),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn reasons(
    Authorized(_, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
) -> Json<ReasonList> {
    Json(ReasonList {
        reasons: state.reviews.reasons().to_vec(),
    })
}

/// The review queue, oldest first.
#[utoipa::path(
    get,
    path = "/v1/reviews",
    tag = "reviews",
    operation_id = "list_reviews",
    summary = "The review queue, oldest first",
    description = "The key's tenant's review cases in the key's mode, the longest waiting first, a \
        page at a time (keyset: pass `next_cursor` back as `cursor`).",
    params(QueueQuery),
    responses(
        (status = 200, description = "A page", body = QueuePage),
        (status = 400, description = "A bad parameter or cursor", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn queue(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<QueuePage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after =
        query
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .map(|(opened_at, session_id)| QueuePosition {
                opened_at,
                session_id,
            });
    let statuses = match query.status {
        Some(status) => vec![status],
        None => vec![ReviewStatus::Open, ReviewStatus::PendingSecond],
    };
    // One more than the page: whether there is a next page, without counting.
    let review_query = ReviewQuery {
        statuses,
        after,
        limit: limit + 1,
    };
    let mut cases = state
        .reviews
        .queue(&caller.key.owner, &review_query)
        .await
        .map_err(OrchestratorError::Store)?;
    let more = cases.len() > limit;
    cases.truncate(limit);
    let next_cursor = cases
        .last()
        .filter(|_| more)
        .map(|last| encode_cursor(last.state.opened_at, last.session_id));
    let now = Utc::now();
    Ok(Json(QueuePage {
        data: cases
            .into_iter()
            .map(|case| QueueItem::of(case, now))
            .collect(),
        next_cursor,
    }))
}

const _: () = assert!(MAX_NOTE_CHARS == 2000, "the schema's max_length says 2000");
