//! The service over HTTP: the key on every request, problem details turned into messages.

use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;

/// Why a command failed: what the user reads on stderr.
#[derive(Debug)]
pub enum Failure {
    /// The service could not be reached (or the connection broke).
    Connect(String),
    /// The service refused, with its problem detail.
    Refused { status: u16, detail: String },
    /// A file or an argument could not be used.
    Input(String),
    /// The event stream broke and did not come back.
    Stream(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(what) => write!(f, "cannot reach the service: {what}"),
            Self::Refused { status, detail } => {
                write!(f, "the service answered {status}: {detail}")
            }
            Self::Input(what) | Self::Stream(what) => f.write_str(what),
        }
    }
}

/// A problem's detail, with each invalid field and its code (`selfie.challenge_id:
/// challenge_used`), which say what to change.
fn with_fields(detail: &str, problem: &Value) -> String {
    let fields: Vec<String> = problem["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some(format!("{}: {}", e["field"].as_str()?, e["code"].as_str()?)))
        .collect();
    if fields.is_empty() {
        detail.to_owned()
    } else {
        format!("{detail} ({})", fields.join(", "))
    }
}

/// The service at one URL, with one key.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(url: &str, key: &str) -> Result<Self, Failure> {
        let mut value = HeaderValue::try_from(format!("Bearer {key}"))
            .map_err(|_| Failure::Input("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        let http = kyc_orchestrator::http::client()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::Connect(e.to_string()))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let url = reqwest::Url::parse_with_params(&self.url(path), query)
            .map_err(|e| Failure::Input(format!("--url: {e}")))?;
        let response = self.send(self.http.get(url)).await?;
        response
            .json()
            .await
            .map_err(|e| Failure::Connect(format!("reading the answer: {e}")))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let response = self.send(self.http.post(self.url(path)).json(body)).await?;
        response
            .json()
            .await
            .map_err(|e| Failure::Connect(format!("reading the answer: {e}")))
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        self.send(self.http.delete(self.url(path))).await.map(drop)
    }

    /// Starts a session from `form`, asking for its event stream.
    pub async fn start(
        &self,
        form: reqwest::multipart::Form,
    ) -> Result<reqwest::Response, Failure> {
        let request = self
            .http
            .post(self.url("/v1/sessions"))
            .header(ACCEPT, "application/x-ndjson")
            .multipart(form);
        self.send(request).await
    }

    /// The session's events after `after`, live until it completes.
    pub async fn events(&self, id: &str, after: u64) -> Result<reqwest::Response, Failure> {
        let url = self.url(&format!("/v1/sessions/{id}/events?after={after}"));
        self.send(self.http.get(url)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Connect(describe(e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|problem| Some(with_fields(problem["detail"].as_str()?, &problem)))
            .unwrap_or(text);
        Err(Failure::Refused { status, detail })
    }
}

/// reqwest's error with its causes, which are what tell a user what went wrong.
pub fn describe(error: reqwest::Error) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{}{causes}", error.without_url())
}
