//! Health for load balancers and metrics for operators. These routes sit outside admission
//! control, body limits and API keys, and never touch the store, so they answer while the
//! instance is saturated. Metrics have a listener of their own (`metrics.listen`, loopback by
//! default): the API's port, which the world reaches, never shows them.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
}

/// `GET /metrics` alone, for the metrics listener.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(handle)
}

/// Liveness: the process serves HTTP. The contract load balancers already use.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "ts": chrono::Utc::now().timestamp() }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    running_sessions: usize,
    max_inflight_sessions: usize,
}

/// Readiness: whether to send this instance new sessions.
async fn ready(State(state): State<AppState>) -> Response {
    let reason = if state.lifecycle.is_draining() {
        Some("draining")
    } else if state.orchestrator.agents_failed() {
        Some("models_failed")
    } else if !state.orchestrator.agents_ready() {
        Some("models_loading")
    } else if !state.orchestrator.store_available() {
        Some("store_unavailable")
    } else if state.admission.saturated() {
        Some("saturated")
    } else {
        None
    };
    let body = Readiness {
        status: if reason.is_some() {
            "unavailable"
        } else {
            "ready"
        },
        reason,
        running_sessions: state.orchestrator.running(),
        max_inflight_sessions: state.admission.max(),
    };
    let status = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
        .into_response()
}
