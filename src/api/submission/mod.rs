//! The body of `POST /v1/sessions`, as JSON (base64 images) or multipart (file parts), turned
//! into a checked [`NewSession`]. Every problem found is reported at once, field by field.
//!
//! This file picks the parser by content type and bounds the body in size and time; `json` and
//! `multipart` turn a body into a `Draft` (`text` and `base64` carry its images), `validate`
//! applies the rules, and `redact` keeps the client's data out of every problem reported.

mod base64;
mod json;
mod multipart;
mod redact;
mod text;
mod validate;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use bytes::Bytes;

use super::AppState;
use super::error::ApiError;
use crate::domain::NewSession;

pub(crate) use json::from_json;
pub(in crate::api) use redact::echoable;
use validate::Draft;

/// A checked session request.
pub struct Submission(pub NewSession);

/// Bodies above this size are parsed on the blocking pool: decoding megabytes of base64 is CPU
/// work that would otherwise stall the runtime's workers.
const INLINE_PARSE_LIMIT: usize = 256 * 1024;

impl FromRequest<AppState> for Submission {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.body_limit;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let draft = match essence.as_str() {
            "application/json" => {
                let body = arrives_in_time(state, Bytes::from_request(request, state))
                    .await?
                    .map_err(|rejection| {
                        body_error(rejection.status(), limit, rejection.body_text())
                    })?;
                if body.len() > INLINE_PARSE_LIMIT {
                    let state = state.clone();
                    return tokio::task::spawn_blocking(move || {
                        json::parse(&body)?
                            .check(&state.limits, state.orchestrator.sandbox_agents())
                    })
                    .await
                    .map_err(|e| ApiError::Internal(Box::new(e)))?
                    .map(Self);
                }
                json::parse(&body)?
            }
            "multipart/form-data" => {
                let multipart = Multipart::from_request(request, state)
                    .await
                    .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
                arrives_in_time(state, multipart::parse(multipart, limit)).await??
            }
            "" => {
                return Err(ApiError::UnsupportedMediaType(
                    "missing Content-Type; send application/json or multipart/form-data".into(),
                ));
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "`{other}`; send application/json or multipart/form-data"
                )));
            }
        };
        draft
            .check(&state.limits, state.orchestrator.sandbox_agents())
            .map(Self)
    }
}

/// A session's inputs in the JSON form of `POST /v1/sessions`, checked by the same rules: how
/// an agent server reads the `session` of a remote agent's request.
pub(crate) fn session_from_json(
    body: &[u8],
    limits: &crate::config::LimitSettings,
    sandbox_agents: &[String],
) -> Result<NewSession, ApiError> {
    json::parse(body)?.check(limits, sandbox_agents)
}

/// The admission slot is already held while the body arrives: a client that trickles its body
/// must not keep it. Only the reading is timed, not the parsing after it.
async fn arrives_in_time<T>(
    state: &AppState,
    read: impl Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout(state.body_timeout))
}

/// A body that could not be read: one over the limit is 413, anything else 400.
fn body_error(status: axum::http::StatusCode, limit: usize, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(text)
    }
}
