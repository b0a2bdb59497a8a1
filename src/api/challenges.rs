//! `/v1/liveness/challenges`: a liveness challenge for a session to answer.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AppState;
use super::auth::{Authorized, SessionsWrite};
use super::error::ApiError;
use crate::domain::{Challenge, ChallengeId, ChallengeStep};
use crate::orchestrator::OrchestratorError;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/liveness/challenges", post(create))
}

/// A challenge, as issued.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ChallengeView {
    id: ChallengeId,
    /// The movements to make, in order, each from a frontal start and back: name them to the
    /// applicant from their own point of view (`turn_left`: to their own left).
    steps: Vec<ChallengeStep>,
    /// A session must name it before then.
    expires_at: DateTime<Utc>,
}

impl From<Challenge> for ChallengeView {
    fn from(challenge: Challenge) -> Self {
        Self {
            id: challenge.id,
            steps: challenge.steps,
            expires_at: challenge.expires_at,
        }
    }
}

/// Issues a challenge: steps drawn at random, for one session of the key's tenant and mode to
/// answer before it expires.
#[utoipa::path(
    post,
    path = "/v1/liveness/challenges",
    tag = "liveness",
    operation_id = "create_liveness_challenge",
    summary = "Issue a liveness challenge",
    description = "Draws a random sequence of head movements. Show the steps to the applicant, \
        capture frames while they make them (frontal first, then each step and back to \
        frontal; about 4 frames a second, at most `limits.max_selfie_frames`), and send the \
        frames with `selfie.challenge_id` in `POST /v1/sessions`. A challenge is answered by \
        one session, before `expires_at`; liveness computes the head's pose from the frames \
        itself and passes only when they make these steps, in order, and no others. No body.",
    responses(
        (status = 201, description = "Issued", body = ChallengeView),
        (status = 503, description = "The store is unavailable",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:write"])),
)]
pub(super) async fn create(
    Authorized(caller, _): Authorized<SessionsWrite>,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<ChallengeView>), ApiError> {
    let challenges = state.orchestrator.challenges().ok_or(ApiError::NotFound)?;
    let challenge = challenges
        .issue(&caller.principal().owner)
        .await
        .map_err(OrchestratorError::Store)?;
    tracing::info!(challenge_id = %challenge.id, "liveness challenge issued");
    Ok((StatusCode::CREATED, Json(challenge.into())))
}
