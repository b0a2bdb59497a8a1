//! `/v1/webhooks`: a tenant's endpoints, their secrets and deliveries. Every route needs
//! `webhooks:manage` and sees only the key's tenant and mode: another tenant's endpoint is `404`.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Authorized, WebhooksManage};
use super::error::{ApiError, FieldError};
use super::submission::from_json;
use crate::domain::{Delivery, Endpoint, EndpointId, MessageId};
use crate::orchestrator::OrchestratorError;
use crate::webhooks::{EndpointChange, NewEndpoint, WebhookError};

/// Deliveries listed at most.
const MAX_DELIVERIES: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(show).patch(update).delete(delete))
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/v1/webhooks/{id}/deliveries/{message_id}/resend",
            post(resend),
        )
        .route("/v1/webhooks/{id}/recover", post(recover))
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid {
                field,
                code,
                detail,
            } => Self::Invalid(vec![FieldError::new(field, code, detail)]),
            WebhookError::NotFound => Self::NotFound,
            error @ WebhookError::Busy => Self::EditConflict(error.to_string()),
            WebhookError::Store(error) => Self::from(OrchestratorError::Store(error)),
        }
    }
}

/// A new endpoint.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateEndpoint {
    /// Where messages are posted: `https://` (and `http://` where the service allows it). Its
    /// host must resolve to public addresses unless the service allows private targets.
    #[schema(example = "https://example.com/kyc/webhooks")]
    url: String,
    /// Message types to send; all of them when absent.
    #[schema(example = json!(["session.completed"]))]
    events: Option<Vec<String>>,
    /// Free text for people, e.g. which system receives.
    #[schema(example = "decisions to the onboarding service")]
    description: Option<String>,
}

/// What to change; absent fields stay.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateEndpoint {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    /// `false` pauses deliveries (messages wait); `true` resumes them, also after the service
    /// disabled the endpoint.
    enabled: Option<bool>,
}

/// Failed messages to send again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecoverRequest {
    /// Every failed delivery of a message created since then.
    since: DateTime<Utc>,
}

/// An endpoint as shown. Its secret only when it is made, and on rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EndpointView {
    id: EndpointId,
    url: String,
    events: Vec<String>,
    description: String,
    enabled: bool,
    /// Why the service disabled it: `gone` (it answered 410) or `failing` (every attempt failed
    /// for `webhooks.disable_after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// Since when every attempt has failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The signing secret (`whsec_...`): shown when the endpoint is made and when it is rotated,
    /// never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// After a rotation, until when the previous secret signs beside this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl EndpointView {
    fn of(endpoint: Endpoint, with_secret: bool) -> Self {
        Self {
            secret: with_secret.then(|| endpoint.secret.expose().to_owned()),
            previous_secret_expires_at: endpoint.previous_secret.as_ref().map(|p| p.until),
            id: endpoint.id,
            url: endpoint.url,
            events: endpoint.events,
            description: endpoint.description,
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            failing_since: endpoint.failing_since,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EndpointList {
    data: Vec<EndpointView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DeliveryList {
    /// Newest message first.
    data: Vec<Delivery>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Recovered {
    /// How many messages are sent again.
    recovered: u64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// 1 to 100, 20 by default.
    limit: Option<usize>,
}

fn endpoint_id(id: &str) -> Result<EndpointId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// Registers an endpoint.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    summary = "Register a webhook endpoint",
    description = "Messages of the chosen types go to the URL, signed per the Standard Webhooks \
        specification with the secret in the answer (shown only now and on rotation).",
    request_body(content = CreateEndpoint, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = EndpointView,
            headers(("Location" = String, description = "The endpoint's URL"))),
        (status = 400, description = "Not JSON", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid: the URL's form or target, an unknown \
            message type, too many endpoints", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn create(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateEndpoint = from_json(&body)?;
    let endpoint = state
        .webhooks
        .create(
            &caller.principal().owner,
            NewEndpoint {
                url: request.url,
                events: request.events,
                description: request.description,
            },
        )
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint registered");
    let location = format!("/v1/webhooks/{}", endpoint.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EndpointView::of(endpoint, true)),
    )
        .into_response())
}

/// The key's tenant's endpoints.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "list_webhooks",
    summary = "List webhook endpoints",
    responses((status = 200, description = "Oldest first", body = EndpointList)),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn list(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = state.webhooks.list(&caller.principal().owner).await?;
    Ok(Json(EndpointList {
        data: endpoints
            .into_iter()
            .map(|e| EndpointView::of(e, false))
            .collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "get_webhook",
    summary = "Read a webhook endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = EndpointView),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn show(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let endpoint = state
        .webhooks
        .get(&caller.principal().owner, &endpoint_id(&id)?)
        .await?;
    Ok(Json(EndpointView::of(endpoint, false)))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "update_webhook",
    summary = "Change a webhook endpoint",
    description = "Sets the fields given. `enabled: true` resumes an endpoint the service \
        disabled; its waiting messages go out.",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = UpdateEndpoint, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = EndpointView),
        (status = 400, description = "Not JSON", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn update(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndpointView>, ApiError> {
    let id = endpoint_id(&id)?;
    let request: UpdateEndpoint = from_json(&body)?;
    let change = EndpointChange {
        url: request.url,
        events: request.events,
        description: request.description,
        enabled: request.enabled,
    };
    let endpoint = state
        .webhooks
        .update(&caller.principal().owner, &id, change)
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, enabled = endpoint.enabled, "webhook endpoint changed");
    Ok(Json(EndpointView::of(endpoint, false)))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook",
    summary = "Delete a webhook endpoint",
    description = "Its waiting messages are not sent; its delivery history goes with it.",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn delete(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = endpoint_id(&id)?;
    state
        .webhooks
        .delete(&caller.principal().owner, &id)
        .await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    summary = "Rotate an endpoint's signing secret",
    description = "A new secret signs from now on; the previous one keeps signing beside it \
        (both signatures in `webhook-signature`) until `previous_secret_expires_at` \
        (`webhooks.rotation_grace`), so the receiver can switch without losing a message.",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = EndpointView),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn rotate_secret(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let id = endpoint_id(&id)?;
    let endpoint = state
        .webhooks
        .rotate_secret(&caller.principal().owner, &id)
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook secret rotated");
    Ok(Json(EndpointView::of(endpoint, true)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    summary = "An endpoint's messages and every attempt",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "Newest message first", body = DeliveryList),
        (status = 400, description = "A query parameter is invalid",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn deliveries(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = endpoint_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_DELIVERIES).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_DELIVERIES}"
        )));
    }
    let data = state
        .webhooks
        .deliveries(&caller.principal().owner, &id, limit)
        .await?;
    Ok(Json(DeliveryList { data }))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/deliveries/{message_id}/resend",
    tag = "webhooks",
    operation_id = "resend_webhook_message",
    summary = "Send a message to the endpoint again",
    description = "Under the same `webhook-id`, as soon as the endpoint is enabled.",
    params(
        ("id" = String, Path, description = "The endpoint's id"),
        ("message_id" = String, Path, description = "The message's id (`webhook-id`)"),
    ),
    responses(
        (status = 202, description = "Queued"),
        (status = 404, description = "No such endpoint or message",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn resend(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path((id, message)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = endpoint_id(&id)?;
    let message: MessageId = message.parse().map_err(|_| ApiError::NotFound)?;
    state
        .webhooks
        .resend(&caller.principal().owner, &id, &message)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/recover",
    tag = "webhooks",
    operation_id = "recover_webhook_messages",
    summary = "Send every failed message since a time again",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = RecoverRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = Recovered),
        (status = 400, description = "Not JSON", body = super::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`since` is missing or not a time",
            body = super::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:manage"])),
)]
pub(super) async fn recover(
    Authorized(caller, _): Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let id = endpoint_id(&id)?;
    let request: RecoverRequest = from_json(&body)?;
    let recovered = state
        .webhooks
        .recover(&caller.principal().owner, &id, request.since)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { recovered })))
}
