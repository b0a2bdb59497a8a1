//! HTTP only: routing, extractors, handlers and problem+json errors. No business logic: each
//! handler turns the request into domain types, calls the orchestrator once, and maps the result.

mod admission;
mod agent_server;
mod auth;
mod capture;
mod challenges;
mod docs;
mod error;
mod health;
mod images;
mod listing;
mod openapi;
mod pages;
mod reviews;
mod serve;
mod sessions;
mod submission;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Request, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::Authenticator;
use crate::config::LimitSettings;
use crate::orchestrator::Orchestrator;

pub use admission::{Admission, Lifecycle};
pub use agent_server::{AgentServerState, ServedAgent, agent_router};
pub use docs::SCRIPT_FILE as DOCS_SCRIPT_FILE;
pub use error::{ApiError, FieldError, PROBLEM_JSON};
pub use health::{MetricsServer, metrics_router};
pub use openapi::{agent_server_document, document as openapi_document};
pub use pages::PageHeaders;
pub use serve::{Connections, Draining, listen, serve, serve_until_drained};
pub use sessions::NDJSON;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub orchestrator: Orchestrator,
    pub auth: Arc<Authenticator>,
    pub admission: Admission,
    pub lifecycle: Lifecycle,
    pub limits: Arc<LimitSettings>,
    pub body_limit: usize,
    /// How long a session request's body may take to arrive.
    pub body_timeout: Duration,
    /// Redoc's script for `GET /docs`, when `scripts/assets.sh` has put it in place.
    pub docs_script: Option<bytes::Bytes>,
    /// Webhook endpoints and deliveries.
    pub webhooks: crate::webhooks::Webhooks,
    /// Review cases and decisions.
    pub reviews: crate::reviews::Reviews,
    /// `capture.public_url`: the start of capture links' URLs, or empty for the request's host.
    pub capture_url: String,
    /// The pages' security headers.
    pub pages: pages::PageHeaders,
}

/// The whole HTTP surface, with request ids and request spans.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let router = Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(docs::router())
        .merge(sessions::router(body_limit))
        .merge(webhooks::router())
        .merge(reviews::router())
        .merge(challenges::router())
        .merge(capture::router(body_limit))
        .merge(images::router())
        .merge(pages::router())
        .with_state(state);
    with_request_spans(router)
}

/// The fallbacks, request ids and request spans every router of the service has.
fn with_request_spans(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(on_response),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
}

/// One span per request, carrying its id, and once the request is authenticated the key's
/// public id and tenant. The query string is left out of it on purpose.
fn request_span<B>(request: &Request<B>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = %request.uri().path(),
        key_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
        session_id = tracing::field::Empty,
    )
}

/// Server errors are logged as errors, client errors as warnings, the rest only at debug:
/// counts of everything are in the metrics.
fn on_response<B>(response: &Response<B>, latency: Duration, _: &Span) {
    let status = response.status();
    let class = match status.as_u16() {
        500.. => "5xx",
        400.. => "4xx",
        300.. => "3xx",
        200.. => "2xx",
        _ => "1xx",
    };
    metrics::counter!("kyc_http_responses_total", "class" => class).increment(1);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), latency_ms, "request failed");
    } else if status.is_client_error() {
        tracing::warn!(status = status.as_u16(), latency_ms, "request refused");
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms, "request served");
    }
}
