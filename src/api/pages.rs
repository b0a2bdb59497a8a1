//! The pages people use in a browser: `/capture` for applicants, `/console` for compliance
//! officers. Their files live in `web/` and
//! are compiled into the binary, so an instance serves them with nothing to install and nothing
//! loaded from elsewhere at run time. Plain HTML, CSS and JavaScript modules with no build step:
//! there is nothing to bundle for a page this size, and every file served is the file in the
//! repository.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline script), `Referrer-Policy: no-referrer`, and `frame-ancestors` from
//! `web.frame_ancestors`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::config::WebSettings;

/// A file of `web/`: its name under `/assets/`, media type and contents.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $media_type:literal) => {
        Asset {
            name: $name,
            media_type: $media_type,
            body: include_str!(concat!("../../web/", $name)),
        }
    };
}

const CAPTURE_PAGE: &str = include_str!("../../web/capture.html");
const CONSOLE_PAGE: &str = include_str!("../../web/console.html");

const ASSETS: &[Asset] = &[
    asset!("base.css", "text/css; charset=utf-8"),
    asset!("capture.js", "text/javascript; charset=utf-8"),
    asset!("capture.css", "text/css; charset=utf-8"),
    asset!("progress.js", "text/javascript; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("judge.js", "text/javascript; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
];

/// The security headers of every page and asset, built once from `web` settings.
#[derive(Clone)]
pub struct PageHeaders {
    csp: HeaderValue,
}

impl PageHeaders {
    /// `settings.frame_ancestors` checked: `'none'` alone, or `'self'` and origins.
    pub fn new(settings: &WebSettings) -> Result<Self, String> {
        let sources = &settings.frame_ancestors;
        if sources.is_empty() {
            return Err("web.frame_ancestors: name at least one source, or 'none'".into());
        }
        for source in sources {
            let origin = source.starts_with("https://") || source.starts_with("http://");
            let keyword = source == "'self'" || source == "'none'";
            if !(origin || keyword)
                || source.contains(|c: char| c.is_whitespace() || c == ';' || c == ',')
            {
                return Err(format!(
                    "web.frame_ancestors: `{source}` is not 'self', 'none' or an origin \
                     (https://app.example.com)"
                ));
            }
        }
        if sources.len() > 1 && sources.iter().any(|s| s == "'none'") {
            return Err("web.frame_ancestors: 'none' stands alone".into());
        }
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
             media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors {}",
            sources.join(" ")
        );
        Ok(Self {
            csp: HeaderValue::try_from(csp).map_err(|e| format!("web.frame_ancestors: {e}"))?,
        })
    }

    fn apply(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
        );
        headers.insert(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        // Revalidated on every load, so a new version of the service is never mixed with
        // another's cached script.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/capture", get(capture))
        .route("/console", get(console))
        .route("/assets/{name}", get(asset))
}

async fn capture(State(state): State<AppState>) -> Response {
    page(&state, CAPTURE_PAGE)
}

async fn console(State(state): State<AppState>) -> Response {
    page(&state, CONSOLE_PAGE)
}

fn page(state: &AppState, html: &'static str) -> Response {
    state
        .pages
        .apply(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => state
            .pages
            .apply(([(header::CONTENT_TYPE, asset.media_type)], asset.body).into_response()),
        None => ApiError::NotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(sources: &[&str]) -> Result<PageHeaders, String> {
        PageHeaders::new(&WebSettings {
            frame_ancestors: sources.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn frame_ancestors_are_keywords_or_origins() {
        let csp = headers(&["'self'", "https://app.example.com"]).unwrap().csp;
        assert!(
            csp.to_str()
                .unwrap()
                .ends_with("frame-ancestors 'self' https://app.example.com")
        );
        for bad in [
            &[][..],
            &["*"],
            &["'none'", "'self'"],
            &["https://a.example; script-src *"],
            &["app.example.com"],
        ] {
            assert!(headers(bad).is_err(), "{bad:?}");
        }
    }

    /// The names `text` loads after `prefix` up to the closing quote: `/assets/x.js"` in a page,
    /// `from "./x.js"` in a module.
    fn loaded<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.split(prefix)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn every_file_the_pages_load_is_served_and_every_served_file_is_loaded() {
        let mut wanted: Vec<&str> = [CAPTURE_PAGE, CONSOLE_PAGE]
            .iter()
            .flat_map(|page| loaded(page, "/assets/"))
            .chain(ASSETS.iter().flat_map(|a| loaded(a.body, "from \"./")))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut served: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        served.sort_unstable();
        assert_eq!(wanted, served);
        assert!(
            wanted.contains(&"judge.js"),
            "modules' imports are read too"
        );
    }
}
