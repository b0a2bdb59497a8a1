//! `/v1/sessions/{id}/images`: a session's stored images, for people who must look at them (the
//! console's reviewers). A key with `sessions:read` of the session's tenant and mode; after an
//! erasure, `410`. Never cached by a browser or a proxy.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use super::auth::{Authorized, SessionsRead};
use super::error::ApiError;
use crate::domain::{ImageFormat, SessionId};
use crate::orchestrator::{ImagePart, SessionImages};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/images", get(index))
        .route("/v1/sessions/{id}/images/{part}", get(image))
}

/// The images a session has.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ImageIndex {
    /// `document_front`, `document_back` (when sent), `document_portrait` (the portrait the
    /// agents cut out of the document, when they found one), then `selfie_0`, `selfie_1`... in
    /// capture order: each is `GET /v1/sessions/{id}/images/{name}`.
    images: Vec<String>,
}

/// Names the session's stored images.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/images",
    tag = "sessions",
    operation_id = "list_session_images",
    summary = "A session's images",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "Their names", body = ImageIndex),
        (status = 404, description = "No such session for this key's tenant and mode, or a \
            store that keeps no images (`memory://`)",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Erased", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn index(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ImageIndex>, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    match state.orchestrator.images(&caller.key.owner, id).await? {
        images @ SessionImages::Kept { .. } => Ok(Json(ImageIndex {
            images: images.names().iter().map(ToString::to_string).collect(),
        })),
        images => Err(absent(&images)),
    }
}

/// One stored image, as it was sent.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/images/{part}",
    tag = "sessions",
    operation_id = "get_session_image",
    summary = "One of a session's images",
    description = "The image as the client sent it (JPEG, PNG or WebP), or for \
        `document_portrait` the portrait as the agents compared it (PNG). Personal data: \
        answered with `Cache-Control: no-store`.",
    params(
        ("id" = String, Path, description = "The session's id"),
        ("part" = String, Path, description = "A name from the session's image list"),
    ),
    responses(
        (status = 200, description = "The image", content_type = "image/*"),
        (status = 404, description = "No such session or image for this key's tenant and mode",
            body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Erased", body = super::openapi::Problem,
            content_type = "application/problem+json"),
    ),
    security(("api_key" = ["sessions:read"])),
)]
pub(super) async fn image(
    Authorized(caller, _): Authorized<SessionsRead>,
    State(state): State<AppState>,
    Path((id, part)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let part: ImagePart = part.parse().map_err(|()| ApiError::NotFound)?;
    let images = state.orchestrator.images(&caller.key.owner, id).await?;
    let Some(image) = images.part(part) else {
        return Err(absent(&images));
    };
    let media_type = match image.format() {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Png => "image/png",
        ImageFormat::Webp => "image/webp",
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, private"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        image.bytes().clone(),
    )
        .into_response())
}

fn absent(images: &SessionImages) -> ApiError {
    match images {
        SessionImages::Erased => ApiError::ImagesErased,
        _ => ApiError::NotFound,
    }
}
