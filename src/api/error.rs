//! API errors as RFC 9457 problem details. The only place that knows status codes.
//!
//! 4xx bodies say exactly what was wrong, field by field, without echoing the input. 5xx bodies
//! are opaque; their cause chain goes to the log inside the request's span, once, as the line's
//! `error` field. The errors below the API carry ids, codes and positions, never request data,
//! so the chain is fit for the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::orchestrator::OrchestratorError;
use crate::telemetry::ErrorChain;

/// Seconds a client should wait before retrying when the store is unavailable.
const STORE_RETRY_AFTER_S: u64 = 2;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where in the request, e.g. `selfie.frames[1]` or the multipart part `document_front`.
    pub field: String,
    /// Stable, machine-readable code, e.g. `bad_base64`.
    pub code: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            detail: detail.into(),
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        let detail = format!("`{field}` is required");
        Self::new(field, "missing", detail)
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("a valid API key is required: `Authorization: Bearer <key>` ({0})")]
    Unauthorized(&'static str),
    #[error(
        "the agent server's token is required: `Authorization: Bearer <agent_server.token>` ({0})"
    )]
    AgentUnauthorized(&'static str),
    #[error("this API key lacks the scope `{0}`")]
    Forbidden(crate::domain::Scope),
    #[error("this API key is over its rate limit")]
    RateLimited { retry_after_s: u64 },
    #[error("nothing here for this API key: no such resource in its tenant and mode")]
    NotFound,
    /// A session's images, asked for after its erasure.
    #[error("the session's images were erased")]
    ImagesErased,
    /// A capture page's token that opens no link (malformed, unknown, or purged).
    #[error("no capture link has this token; ask for a new link")]
    CaptureUnknown,
    /// A capture link that was used or has expired.
    #[error("{0}")]
    CaptureGone(crate::domain::CaptureRefusal),
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyConflict,
    #[error("the session is still running; erase it once it has completed")]
    SessionRunning,
    #[error("{0}")]
    EditConflict(String),
    /// A review decision on a session not (or no longer) waiting for one.
    #[error("{0}")]
    ReviewClosed(String),
    /// Four-eyes: the first reviewer tried to confirm their own decision.
    #[error("{0}")]
    SameReviewer(String),
    #[error("the session store is unavailable; retry shortly")]
    StoreUnavailable,
    #[error("this path does not accept that method")]
    MethodNotAllowed,
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    RequestTimeout(std::time::Duration),
    #[error("the service is at its limit of running sessions")]
    Overloaded { retry_after_s: u64 },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(
        "the service has not loaded its models (loading, or failed: see readiness); retry shortly"
    )]
    Starting,
    /// Agent server: the agent ran and could not decide (its own words, never personal data).
    #[error("{0}")]
    AgentFailed(String),
    #[error("the agent panicked")]
    AgentPanicked,
    #[error("the agent did not finish within its deadline")]
    AgentTimedOut,
    #[error("every agent slot of this server is taken")]
    AgentsBusy { retry_after_s: u64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::Drained => Self::ShuttingDown,
            OrchestratorError::NotReady => Self::Starting,
            OrchestratorError::Capture(refusal) => Self::CaptureGone(refusal),
            OrchestratorError::Challenge(refusal) => Self::Invalid(vec![FieldError::new(
                "selfie.challenge_id",
                refusal.code(),
                refusal.to_string(),
            )]),
            OrchestratorError::Store(error) if error.is_unavailable() => {
                tracing::error!(error = %ErrorChain(&error), "the session store is unavailable");
                Self::StoreUnavailable
            }
            error @ OrchestratorError::Inputs(_) => {
                tracing::error!(error = %ErrorChain(&error), "cannot store session inputs");
                Self::StoreUnavailable
            }
            other => Self::Internal(Box::new(other)),
        }
    }
}

/// An RFC 9457 problem: every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Problem<'a> {
    /// `urn:kyc-orchestrator:problem:<slug>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:kyc-orchestrator:problem:invalid-request")]
    kind: String,
    title: &'a str,
    status: u16,
    /// What was wrong; never the rejected values.
    detail: String,
    /// For `invalid-request`: each invalid field.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) | Self::AgentUnauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::SameReviewer(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::CaptureUnknown => StatusCode::UNAUTHORIZED,
            Self::CaptureGone(_) | Self::ImagesErased => StatusCode::GONE,
            Self::IdempotencyConflict
            | Self::SessionRunning
            | Self::EditConflict(_)
            | Self::ReviewClosed(_) => StatusCode::CONFLICT,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } | Self::ShuttingDown | Self::Starting => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::AgentFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AgentTimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::AgentsBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::AgentPanicked | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (slug of the problem type, title)
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => ("malformed-json", "Malformed JSON"),
            Self::BadRequest(_) => ("bad-request", "Bad request"),
            Self::Invalid(_) => ("invalid-request", "Invalid request"),
            Self::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported media type"),
            Self::PayloadTooLarge { .. } => ("payload-too-large", "Payload too large"),
            Self::Unauthorized(_) | Self::AgentUnauthorized(_) => ("unauthorized", "Unauthorized"),
            Self::Forbidden(_) => ("forbidden", "Forbidden"),
            Self::RateLimited { .. } => ("rate-limited", "Rate limited"),
            Self::NotFound => ("not-found", "Not found"),
            Self::CaptureUnknown => ("unknown-capture-link", "Unknown capture link"),
            Self::ImagesErased => ("erased", "Erased"),
            Self::CaptureGone(refusal) => (refusal.code(), "Capture link no longer valid"),
            Self::IdempotencyConflict => ("idempotency-key-reused", "Idempotency key reused"),
            Self::SessionRunning => ("session-running", "Session still running"),
            Self::EditConflict(_) => ("edit-conflict", "Changed by another request"),
            Self::ReviewClosed(_) => ("not-in-review", "Not waiting for a review decision"),
            Self::SameReviewer(_) => ("same-reviewer", "Four-eyes needs a second reviewer"),
            Self::StoreUnavailable => ("store-unavailable", "Session store unavailable"),
            Self::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            Self::RequestTimeout(_) => ("request-timeout", "Request timeout"),
            Self::Overloaded { .. } => ("overloaded", "Too many running sessions"),
            Self::ShuttingDown => ("shutting-down", "Shutting down"),
            Self::Starting => ("starting", "Starting"),
            Self::AgentFailed(_) => ("agent-failed", "The agent could not decide"),
            Self::AgentPanicked => ("agent-panicked", "The agent panicked"),
            Self::AgentTimedOut => ("agent-timeout", "The agent ran out of time"),
            Self::AgentsBusy { .. } => ("busy", "Every agent slot is taken"),
            Self::Internal(_) => ("internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %ErrorChain(&**cause), "request failed");
        }
        let status = self.status();
        let (slug, title) = self.kind();
        let errors = match &self {
            Self::Invalid(errors) => errors.as_slice(),
            _ => &[],
        };
        let problem = Problem {
            kind: format!("urn:kyc-orchestrator:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::Overloaded { retry_after_s }
            | Self::RateLimited { retry_after_s }
            | Self::AgentsBusy { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            Self::Unauthorized(reason) | Self::AgentUnauthorized(reason) => {
                // RFC 6750: a request without credentials gets the challenge alone; one with
                // a bad key also learns that the key was the problem.
                let challenge = if reason == "missing" {
                    HeaderValue::from_static("Bearer realm=\"kyc\"")
                } else {
                    HeaderValue::from_static("Bearer realm=\"kyc\", error=\"invalid_token\"")
                };
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
            Self::CaptureUnknown => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"capture\", error=\"invalid_token\""),
                );
            }
            Self::StoreUnavailable | Self::Starting => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER_S));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::store::StoreError;
    use crate::telemetry::JsonLines;
    use crate::telemetry::capture::Capture;

    /// Runs `respond` inside a request span and returns the response with the log lines.
    fn logged(respond: impl FnOnce() -> Response) -> (Response, Vec<Value>) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(capture.clone()));
        let response = tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("request", request_id = "r-1").in_scope(respond)
        });
        (response, capture.lines())
    }

    fn unreadable_row() -> StoreError {
        let source = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        StoreError::Corrupt {
            what: "checks".into(),
            source: Some(Box::new(crate::store::UnreadableJson::from(source))),
        }
    }

    #[tokio::test]
    async fn an_internal_error_logs_its_cause_chain_once_and_answers_opaquely() {
        let error = ApiError::from(OrchestratorError::Store(unreadable_row()));

        let (response, lines) = logged(|| error.into_response());

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}")
        };
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(
            line["error"],
            "a stored row is unreadable: checks: JSON of the wrong shape at line 1 column 3"
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["detail"], "internal error");
    }

    #[test]
    fn an_unavailable_store_answers_503_and_logs_why() {
        let timed_out = StoreError::TimedOut {
            what: "a commit",
            limit: std::time::Duration::from_millis(500),
        };
        let shared = StoreError::Shared(Arc::new(timed_out));

        let (response, lines) =
            logged(|| ApiError::from(OrchestratorError::Store(shared)).into_response());

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            lines[0]["error"],
            "a commit had no answer from the session store within 500 ms"
        );
    }

    #[test]
    fn a_store_error_that_is_not_unavailable_is_internal() {
        let error = ApiError::from(OrchestratorError::Store(unreadable_row()));

        assert!(matches!(error, ApiError::Internal(_)), "{error:?}");
    }
}
