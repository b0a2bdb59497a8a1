//! `GET /docs`: the API reference for people, rendered in the browser by Redoc from
//! `/openapi.json`. Redoc's script comes from the npm registry's `redoc` package through
//! `scripts/assets.sh` (checked against its SHA-256) and is served by the service itself, so
//! the page works offline and nothing loads from a CDN. No key: the document holds no data.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// The file `scripts/assets.sh` puts in `docs.assets_dir`.
pub const SCRIPT_FILE: &str = "redoc.standalone.js";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kyc-orchestrator API reference</title>
<style>body { margin: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

const MISSING: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>kyc-orchestrator API reference</title></head>
<body>
<p>The reference page's script is not installed on this instance: run
<code>scripts/assets.sh</code> (it puts Redoc's bundle into <code>docs.assets_dir</code>) and
restart. The OpenAPI document itself is at <a href="/openapi.json">/openapi.json</a>.</p>
</body>
</html>
"#;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/redoc.standalone.js", get(script))
}

async fn page(State(state): State<AppState>) -> Html<&'static str> {
    Html(if state.docs_script.is_some() {
        PAGE
    } else {
        MISSING
    })
}

async fn script(State(state): State<AppState>) -> Response {
    match state.docs_script {
        Some(script) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            script,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
