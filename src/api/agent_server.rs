//! The agent server's HTTP surface (`kyc-orchestrator agent-server`): the built-in agents
//! served over the remote agent protocol (`agents::wire`), to `http` agents of API instances.
//!
//! `POST /v1/agents/{agent}` checks the bearer token, takes an admission slot (or answers `503`
//! with `Retry-After` at once, so the caller can try another worker), reads the body within its
//! limit, parses the session's inputs by the rules `POST /v1/sessions` applies, runs the agent
//! on this server's CPU pool under the caller's deadline, and answers its report. `/health` and
//! `/health/ready` (`ready` once the served agents' models have loaded) are for the load
//! balancer in front of the workers.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::FutureExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::ApiError;
use super::{Lifecycle, submission};
use crate::agents::wire::{self, AgentAnswer, AgentRequestIn};
use crate::agents::{Agent, AgentContext, AgentError, Output, Report};
use crate::config::LimitSettings;
use crate::cpu::{CpuPool, SessionContext, panic_message};
use crate::domain::SessionId;

/// One agent this server runs, with its own time limit.
#[derive(Clone)]
pub struct ServedAgent {
    pub agent: Arc<dyn Agent>,
    pub timeout: Duration,
}

/// What the agent server's handlers reach.
#[derive(Clone)]
pub struct AgentServerState {
    pub agents: Arc<BTreeMap<String, ServedAgent>>,
    /// SHA-256 of the bearer token callers must send.
    pub token_hash: [u8; 32],
    /// Requests in flight at once; the next is answered `503` at once.
    pub slots: Arc<Semaphore>,
    pub max_inflight: usize,
    pub retry_after_s: u64,
    pub cpu: CpuPool,
    pub limits: Arc<LimitSettings>,
    /// The served sandbox agents, the only ones a request's `sandbox` may script.
    pub sandbox_agents: Arc<Vec<String>>,
    pub lifecycle: Lifecycle,
    pub body_limit: usize,
}

impl AgentServerState {
    /// The hash callers' tokens are compared with.
    pub fn hash_token(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.lifecycle.is_draining() {
            Err("draining")
        } else if self.agents.values().any(|served| served.agent.failed()) {
            Err("models_failed")
        } else if !self.agents.values().all(|served| served.agent.ready()) {
            Err("models_loading")
        } else {
            Ok(())
        }
    }
}

/// The agent server's routes, with request ids and spans.
pub fn agent_router(state: AgentServerState) -> Router {
    let router = Router::new()
        .route("/health", get(super::health::health))
        .route("/health/ready", get(ready))
        .route(
            "/openapi.json",
            get(super::openapi::serve_agent_server_document),
        )
        .route(
            "/v1/agents/{agent}",
            post(run).layer(DefaultBodyLimit::max(state.body_limit)),
        )
        .with_state(state);
    super::with_request_spans(router)
}

/// `GET /health/ready` of an agent server.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AgentServerReadiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    agents: Vec<String>,
    in_flight: usize,
    max_inflight: usize,
}

/// Readiness of an agent server: whether to send it requests.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "agent_server_readiness",
    summary = "Readiness: whether to send this agent server requests",
    responses(
        (status = 200, description = "Ready", body = AgentServerReadiness),
        (status = 503, description = "Not now (`draining`, `models_loading`, `models_failed`)",
            body = AgentServerReadiness),
    ),
)]
pub(super) async fn ready(State(state): State<AgentServerState>) -> Response {
    let reason = state.ready().err();
    let body = AgentServerReadiness {
        status: if reason.is_some() {
            "unavailable"
        } else {
            "ready"
        },
        reason,
        agents: state.agents.keys().cloned().collect(),
        in_flight: state.max_inflight - state.slots.available_permits(),
        max_inflight: state.max_inflight,
    };
    let status = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// Bodies above this are parsed (and answers encoded) on the blocking pool.
const INLINE_PARSE_LIMIT: usize = 256 * 1024;

/// `POST /v1/agents/{agent}`: the agent's report on the inputs sent.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}",
    tag = "agents",
    operation_id = "run_agent",
    summary = "Run one agent on a session's inputs",
    description = "The remote agent protocol: what an `http` agent of an API instance sends, and \
        what `kyc-orchestrator agent-server` (or anything that implements this operation: a \
        vendor's adapter, a model server) answers. Stateless and safe to repeat. The caller \
        retries `429`, `502`, `503` and `504` within its deadline and takes any other answer \
        as final; a `200` is the agent's report, whether its check passed or failed.",
    params(
        ("agent" = String, Path, description = "The agent's name on this server"),
        ("x-session-id" = Option<String>, Header,
            description = "The session's id (a UUID), for the logs"),
        ("traceparent" = Option<String>, Header,
            description = "W3C trace context: the trace id is the session's id without dashes"),
        ("kyc-deadline-ms" = Option<u64>, Header,
            description = "Milliseconds until the caller stops waiting; the server stops the \
                agent then (or at the agent's own timeout, if earlier)"),
    ),
    request_body(content = super::openapi::AgentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The agent's report", body = AgentAnswer),
        (status = 400, description = "A header or the body is malformed",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or not the server's",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server does not serve that agent",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over `agent_server.body_limit_bytes`",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid inputs (`invalid-request`, naming the fields), or \
            the agent ran and could not decide (`agent-failed`)",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 500, description = "The agent panicked (`agent-panicked`)",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every slot is taken (`busy`, with `Retry-After`), the \
            server is draining, or its models are loading",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The agent did not finish by the deadline",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("agent_token" = [])),
)]
pub(super) async fn run(
    State(state): State<AgentServerState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    authenticate(request.headers(), &state.token_hash)?;
    let served = state.agents.get(&name).cloned().ok_or(ApiError::NotFound)?;
    match state.ready() {
        Err("draining") => return Err(ApiError::ShuttingDown),
        Err(_) => return Err(ApiError::Starting),
        Ok(()) => {}
    }
    let _slot = state
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::AgentsBusy {
            retry_after_s: state.retry_after_s,
        })?;
    let session_id = match request.headers().get(wire::SESSION_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<SessionId>().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{} is not a UUID", wire::SESSION_HEADER))
            })?,
        None => SessionId::new(),
    };
    let asked = match request.headers().get(wire::DEADLINE_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{} is not milliseconds", wire::DEADLINE_HEADER))
                })?,
        ),
        None => None,
    };
    tracing::Span::current().record("session_id", tracing::field::display(session_id));
    let deadline = Instant::now() + asked.map_or(served.timeout, |a| a.min(served.timeout));
    let trace_id = trace_id(request.headers());
    let span = tracing::info_span!("agent_run", session_id = %session_id, agent = %name, trace_id);
    let started = std::time::Instant::now();
    let outcome = async move {
        // The body and its parsing hold an admission slot: they get the caller's deadline too.
        let read = async {
            let body = read_body(request, state.body_limit).await?;
            parse(body, &state).await
        };
        let (session, upstream) = tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| ApiError::AgentTimedOut)??;
        let cancel = CancellationToken::new();
        let _cancel_on_exit = cancel.clone().drop_guard();
        let ctx = AgentContext::new(
            session_id,
            session,
            upstream,
            cancel,
            state.cpu.clone(),
            deadline,
        );
        let work = AssertUnwindSafe(served.agent.run(ctx)).catch_unwind();
        let report = match tokio::time::timeout_at(deadline, work).await {
            Err(_) => return Err(ApiError::AgentTimedOut),
            Ok(Err(panic)) => {
                tracing::error!(panic = %panic_message(panic), "agent panicked");
                return Err(ApiError::AgentPanicked);
            }
            Ok(Ok(result)) => result.map_err(agent_error)?,
        };
        answer(report).await
    }
    .instrument(span.clone());
    let outcome = SessionContext { session_id }.scope(outcome).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(ApiError::AgentFailed(_)) => "failed",
        Err(ApiError::AgentTimedOut) => "timeout",
        Err(ApiError::AgentPanicked) => "panicked",
        Err(_) => "refused",
    };
    metrics::counter!("kyc_agent_server_runs_total", "agent" => name.clone(), "outcome" => label)
        .increment(1);
    metrics::histogram!("kyc_agent_server_run_seconds", "agent" => name)
        .record(started.elapsed().as_secs_f64());
    outcome
}

/// `Authorization: Bearer <token>`, compared in constant time through its hash.
fn authenticate(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::AgentUnauthorized("missing"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::AgentUnauthorized("malformed"))?;
    let hash = AgentServerState::hash_token(token.trim());
    if bool::from(hash.ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::AgentUnauthorized("unknown token"))
    }
}

/// The trace id of a W3C `traceparent`, for the log; empty without a well-formed one.
fn trace_id(headers: &HeaderMap) -> String {
    let Some(value) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let mut parts = value.split('-');
    match (parts.next(), parts.next()) {
        (Some("00"), Some(id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

/// The body, within `limit` (the route's `DefaultBodyLimit`, which a declared length over it
/// meets before a byte is read).
async fn read_body(request: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use axum::extract::FromRequest;
    bytes::Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })
}

/// The session's inputs and the dependencies' outputs: off the runtime when the body is large
/// or an output carries images.
async fn parse(
    body: bytes::Bytes,
    state: &AgentServerState,
) -> Result<(Arc<crate::domain::NewSession>, BTreeMap<String, Output>), ApiError> {
    let small = body.len() < INLINE_PARSE_LIMIT;
    let limits = state.limits.clone();
    let sandbox = state.sandbox_agents.clone();
    let parse = move || {
        let request: AgentRequestIn<'_> = submission::from_json(&body)?;
        let mut session =
            submission::session_from_json(request.session.get().as_bytes(), &limits, &sandbox)?;
        // The caller took the challenge from its own store; its steps come with the request.
        session.selfie.challenge = request.challenge;
        let cheap = request.upstream.values().all(wire::decodes_cheaply);
        Ok::<_, ApiError>((session, request.upstream, cheap))
    };
    let (session, upstream, cheap) = if small {
        parse()?
    } else {
        off_runtime(parse).await?
    };
    let session = Arc::new(session);
    let decode = {
        let session = Arc::clone(&session);
        move || {
            let mut outputs = BTreeMap::new();
            for (agent, value) in upstream {
                let output = wire::decode_output(value, &session).map_err(|problem| {
                    ApiError::Invalid(vec![super::FieldError::new(
                        format!("upstream.{}", submission::echoable(&agent)),
                        "invalid",
                        problem,
                    )])
                })?;
                outputs.insert(agent, output);
            }
            Ok::<_, ApiError>(outputs)
        }
    };
    let outputs = if cheap {
        decode()?
    } else {
        off_runtime(decode).await?
    };
    Ok((session, outputs))
}

/// Runs CPU work (a large body, images) on the blocking pool, in the request's session context;
/// its panic is a `500`.
async fn off_runtime<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    crate::cpu::spawn_blocking_in_session(work)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
}

/// How an agent's error is answered. Its message is the agent's own (no personal data).
fn agent_error(error: AgentError) -> ApiError {
    match error {
        AgentError::Failed(message) => ApiError::AgentFailed(message),
        AgentError::Panicked(message) => {
            tracing::error!(panic = %message, "agent panicked");
            ApiError::AgentPanicked
        }
        AgentError::Cancelled => ApiError::AgentTimedOut,
        AgentError::Remote(failure) => ApiError::AgentFailed(failure.message),
    }
}

/// The report as the answer's JSON, its output encoded off the runtime when it has images.
async fn answer(report: Report) -> Result<Response, ApiError> {
    let cheap = report.output.as_ref().is_none_or(Output::encoding_is_cheap);
    let encode = move || -> Result<Vec<u8>, ApiError> {
        let answer = AgentAnswer::from_report(report).map_err(|e| ApiError::Internal(e.into()))?;
        serde_json::to_vec(&answer).map_err(|e| ApiError::Internal(Box::new(e)))
    };
    let body = if cheap {
        encode()?
    } else {
        off_runtime(encode).await?
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_is_accepted() {
        let expected = AgentServerState::hash_token("s3cret");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            authenticate(&headers, &expected)
        };
        assert!(with("Bearer s3cret").is_ok());
        assert!(matches!(
            with("Bearer s3cre"),
            Err(ApiError::AgentUnauthorized(_))
        ));
        assert!(matches!(
            with("Basic s3cret"),
            Err(ApiError::AgentUnauthorized(_))
        ));
        assert!(matches!(
            authenticate(&HeaderMap::new(), &expected),
            Err(ApiError::AgentUnauthorized("missing"))
        ));
    }

    #[test]
    fn a_trace_id_is_read_only_from_a_well_formed_traceparent() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", value.parse().unwrap());
            trace_id(&headers)
        };
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(with(&format!("00-{id}-00f067aa0ba902b7-01")), id);
        assert_eq!(with("00-xyz-00f067aa0ba902b7-01"), "");
        assert_eq!(trace_id(&HeaderMap::new()), "");
    }
}
