//! Health for load balancers and metrics for operators. These routes sit outside admission
//! control, body limits and API keys, and never touch the store, so they answer while the
//! instance is saturated. Metrics have a listener of their own (`metrics.listen`, loopback by
//! default): the API's port, which the world reaches, never shows them.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
}

/// The metrics endpoint of a process: `GET /metrics` on its own listener, when it has one, and
/// the exporter's upkeep every 5 s (which drains the histograms' samples into their buckets,
/// so memory stays flat between scrapes, or without any). Stops when dropped.
pub struct MetricsServer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(listener: Option<tokio::net::TcpListener>) -> Self {
        let handle = crate::telemetry::metrics_handle();
        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            let router = metrics_router(handle.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(
                        error = %crate::telemetry::ErrorChain(&error),
                        "the metrics listener failed"
                    );
                }
            }));
        }
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        }));
        Self { tasks }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `GET /metrics` alone, for the metrics listener.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(handle)
}

/// `GET /health`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `ok`.
    status: &'static str,
    /// Unix seconds.
    ts: i64,
}

/// Liveness: the process serves HTTP. The contract load balancers already use.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process serves HTTP", body = Health)),
)]
pub(super) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        ts: chrono::Utc::now().timestamp(),
    })
}

/// `GET /health/ready`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Why not: `draining`, `models_failed`, `models_loading`, `store_unavailable` or
    /// `saturated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    running_sessions: usize,
    max_inflight_sessions: usize,
    /// Agents that run degraded, with why: `breaker_open` for a remote agent whose circuit
    /// breaker is open (its checks fail at once with `agent_unavailable:NAME`, and sessions go
    /// to review). The instance stays ready: every instance shares the remote.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    degraded: BTreeMap<String, &'static str>,
}

/// Readiness: whether to send this instance new sessions.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "readiness",
    summary = "Readiness: whether to send this instance new sessions",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not now, and why", body = Readiness),
    ),
)]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
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
        degraded: state
            .orchestrator
            .degraded_agents()
            .into_iter()
            .map(|(agent, why)| (agent.to_owned(), why))
            .collect(),
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
