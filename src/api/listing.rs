//! `GET /v1/sessions`: the caller's sessions, newest first, a page at a time.
//!
//! Pages are keyset, not offset: the cursor is the last session's creation time and id, so a
//! page starts exactly after the previous one however many sessions arrive meanwhile (they are
//! newer, so before the first page). A session's creation time is taken when it starts and its
//! row commits a few milliseconds later (its inputs are synced to disk first, and commits are
//! grouped), so one started just before a client began paging may appear at the top of the list
//! after the client's first page: a client polling with `created_after` should overlap its
//! windows by a few seconds. Items are summaries: no checks, nothing an agent extracted.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Authorized, SessionsRead};
use super::error::ApiError;
use super::sessions::Links;
use crate::domain::{
    Decision, ListPosition, Mode, ReviewStatus, SessionId, SessionQuery, SessionRecord,
    SessionStatus,
};

/// Sessions per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 20;
/// The most a page holds.
pub const MAX_LIMIT: usize = 100;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    status: Option<SessionStatus>,
    decision: Option<Decision>,
    /// Exact match on the client's reference.
    reference: Option<String>,
    /// Created at or after (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Sessions per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of the list.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Page {
    data: Vec<SessionSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A session in the list: no checks, nothing an agent extracted.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SessionSummary {
    id: SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    status: SessionStatus,
    /// Where its review stands, when its agents decided `review`.
    #[serde(skip_serializing_if = "Option::is_none")]
    review_status: Option<ReviewStatus>,
    mode: Mode,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    reasons: Vec<String>,
    links: Links,
}

impl From<SessionRecord> for SessionSummary {
    fn from(record: SessionRecord) -> Self {
        let completion = record.completion;
        Self {
            id: record.id,
            reference: record.reference,
            status: record.status,
            review_status: record.review.as_ref().map(|r| r.status),
            mode: record.owner.mode,
            created_at: record.created_at,
            completed_at: completion.as_ref().map(|c| c.completed_at),
            decision: completion.as_ref().map(|c| c.decision),
            reasons: completion.map(|c| c.reasons).unwrap_or_default(),
            links: Links::of(record.id),
        }
    }
}

/// The caller's sessions matching the filters, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "list_sessions",
    summary = "List sessions, newest first",
    description = "The key's tenant's sessions in the key's mode, a page at a time (keyset: \
        pass `next_cursor` back as `cursor`).",
    params(ListQuery),
    responses(
        (status = 200, description = "A page", body = Page),
        (status = 400, description = "A bad parameter or cursor", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn list(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let mut query = session_query(query)?;
    let limit = query.limit;
    // One more than the page: whether there is a next page, without counting.
    query.limit += 1;
    let mut records = state
        .orchestrator
        .sessions(&caller.key.owner, &query)
        .await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_cursor = records
        .last()
        .filter(|_| more)
        .map(|last| encode_cursor(last.created_at, last.id));
    Ok(Json(Page {
        data: records.into_iter().map(SessionSummary::from).collect(),
        next_cursor,
    }))
}

fn session_query(query: ListQuery) -> Result<SessionQuery, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = query
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .map(|(created_at, id)| ListPosition { created_at, id });
    Ok(SessionQuery {
        status: query.status,
        decision: query.decision,
        reference: query.reference,
        created_after: query.created_after,
        created_before: query.created_before,
        after,
        limit,
    })
}

/// A page's cursor: the last item's time (a session's creation, a review's opening) and
/// session id. Nanoseconds, the finest any store keeps, so the position is exact in every store.
pub(super) fn encode_cursor(at: DateTime<Utc>, id: SessionId) -> String {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    URL_SAFE_NO_PAD.encode(format!("{nanos}.{id}"))
}

pub(super) fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, SessionId), ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this service gave out".into());
    let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(text).map_err(|_| bad())?;
    let (nanos, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((
        DateTime::from_timestamp_nanos(nanos.parse().map_err(|_| bad())?),
        id.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T12:00:00.123456789Z")
            .unwrap()
            .to_utc();
        let id = SessionId::new();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for bad in [
            "",
            "!!",
            "bm90LWEtY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("12.nope"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
