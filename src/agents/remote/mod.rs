//! `kind = "http"`: an agent that runs elsewhere (an agent server of this service's own, a
//! vendor's adapter, a model server), called over the protocol of [`super::wire`].
//!
//! ```toml
//! [agents.face_match]
//! kind = "http"
//! timeout_ms = 4000
//! depends_on = ["doc_capture", "liveness"]
//! settings = { url = "http://10.0.0.5:8010", max_concurrency = 32 }
//! ```
//!
//! Each call: a bulkhead slot (`max_concurrency`), then the body, encoded once, then attempts.
//! An attempt needs the circuit breaker's leave and, from the second on, `retry.min_attempt_ms`
//! of the agent's time left; it runs until an answer or the agent's deadline (the earlier of its
//! timeout and the session's), which the remote is told in a header. Connect errors, `429`,
//! `502`, `503` and `504` are tried again after a backoff with full jitter (or the remote's
//! `Retry-After`), within the same deadline; any other answer is final. The check's details
//! record every attempt. The session's id travels as `x-session-id` and as the trace id of a W3C
//! `traceparent`, so the remote's logs can be joined to this service's.

mod breaker;
mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use breaker::{Breaker, BreakerSettings, BreakerState};
use retry::Next;
pub use retry::RetrySettings;

use super::warm::Loader;
use super::wire::{self, AgentAnswer, AgentRequestOut};
use super::{
    Agent, AgentContext, AgentError, AgentKind, CheckSettings, Output, RemoteFailure, Report,
    Resources,
};
use crate::models::ModelError;

/// `settings` of an `http` agent. The token comes from the environment
/// (`KYC__AGENTS__NAME__SETTINGS__TOKEN`) or from `token_file`, and is never logged.
///
/// An agent switched to `http` by one layer of configuration (`KYC__AGENTS__OCR__KIND=http`)
/// still has the built-in agent's settings from the layers below: those are accepted (checked as
/// that kind's, so a typo is still caught) and left to the remote, which applies its own.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// The agent server's base URL, `http(s)://host[:port][/prefix]`; the agent answers at
    /// `{url}/v1/agents/{agent}`.
    pub url: String,
    /// The agent's name on the remote; by default the plan's name for it.
    pub agent: Option<String>,
    /// Sent as `Authorization: Bearer ...`; none when empty.
    #[serde(deserialize_with = "text_or_scalar")]
    pub token: String,
    /// A file holding the token (its surrounding whitespace trimmed), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Calls in flight from this instance at once; the next waits (within its deadline).
    pub max_concurrency: usize,
    /// How long a new connection may take.
    pub connect_timeout_ms: u64,
    /// The largest answer read; a larger one is a failed attempt (the remote misbehaves).
    pub max_answer_bytes: usize,
    /// The reason codes the remote reports. By default those of the built-in kind of the
    /// remote's agent name (a remote `face_match` reports what `face_match` reports).
    pub reasons: Option<Vec<String>>,
    /// The remote is a sandbox agent: a request's `sandbox` directive for this agent is
    /// forwarded to it. Needs `orchestrator.allow_sandbox_agents`, as a local sandbox agent does.
    pub sandbox: bool,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    /// Any other key: the built-in agent's settings, for the remote (see above).
    #[serde(flatten)]
    pub remote_settings: serde_json::Map<String, serde_json::Value>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            agent: None,
            token: String::new(),
            token_file: None,
            max_concurrency: 64,
            connect_timeout_ms: 1_000,
            max_answer_bytes: 64 * 1024 * 1024,
            reasons: None,
            sandbox: false,
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
            remote_settings: serde_json::Map::new(),
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("url", &self.url)
            .field("agent", &self.agent)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .field("max_concurrency", &self.max_concurrency)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// A token from the environment arrives parsed (`KYC__...` values that look like numbers become
/// numbers), so take it back as the text it was.
fn text_or_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Unsigned(u64),
        Boolean(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(text) => text,
        Scalar::Integer(n) => n.to_string(),
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Boolean(b) => b.to_string(),
    })
}

impl CheckSettings for HttpSettings {
    fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("url must be an http(s) URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err("url must be an http(s) URL without a query".into());
        }
        if !self.token.is_empty() && self.token_file.is_some() {
            return Err("give token or token_file, not both".into());
        }
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 {
            return Err("connect_timeout_ms must be at least 1".into());
        }
        if self.max_answer_bytes < 1024 {
            return Err("max_answer_bytes must be at least 1024".into());
        }
        if let Some(name) = &self.agent
            && !crate::domain::is_reason_code(name)
        {
            return Err("agent must be a name of a-z, 0-9 and '_'".into());
        }
        if let Some(code) = self
            .reasons
            .iter()
            .flatten()
            .find(|code| !crate::domain::is_reason_code(code))
        {
            return Err(format!("reasons: `{code}` is not a reason code"));
        }
        self.retry.check()?;
        self.breaker.check()
    }

    fn check_for(&self, agent: &str) -> Result<(), String> {
        self.check()?;
        if self.remote_settings.is_empty() {
            return Ok(());
        }
        let kind = self.agent.as_deref().unwrap_or(agent);
        builtin_settings(kind, &self.remote_settings).map_err(|problem| {
            let keys: Vec<&str> = self.remote_settings.keys().map(String::as_str).collect();
            format!(
                "{problem} (keys {}: an http agent takes url, agent, token, token_file, \
                 max_concurrency, connect_timeout_ms, max_answer_bytes, reasons, sandbox, retry and breaker, and the \
                 settings of the built-in agent of its remote name)",
                keys.join(", ")
            )
        })
    }
}

/// Whether `table` holds valid settings of the built-in kind named `kind`.
fn builtin_settings(
    kind: &str,
    table: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    use super::{doc_capture, face_match, liveness, ocr};
    fn as_kind<K: AgentKind>(
        table: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let settings: K::Settings = serde_json::from_value(table.clone().into())
            .map_err(|e| format!("as {} settings: {e}", K::KIND))?;
        settings.check()
    }
    match kind {
        "doc_capture" => as_kind::<doc_capture::DocCapture>(table),
        "ocr" => as_kind::<ocr::Ocr>(table),
        "liveness" => as_kind::<liveness::Liveness>(table),
        "face_match" => as_kind::<face_match::FaceMatch>(table),
        _ => Err("unknown keys".into()),
    }
}

/// An agent served elsewhere.
pub struct HttpAgent {
    /// The plan's name for it.
    name: String,
    /// The remote's.
    remote: String,
    endpoint: reqwest::Url,
    token: Option<HeaderValue>,
    client: reqwest::Client,
    bulkhead: Arc<Semaphore>,
    retry: RetrySettings,
    breaker: Breaker,
    reasons: Vec<String>,
    unavailable: String,
    scriptable: bool,
    max_answer_bytes: usize,
}

/// Image bytes below which a request's body is encoded on the async runtime.
const INLINE_ENCODE_LIMIT: usize = 256 * 1024;

impl AgentKind for HttpAgent {
    const KIND: &'static str = "http";
    /// Its codes are the remote's: see [`HttpSettings::reasons`].
    const REASONS: &'static [&'static str] = &[];
    type Settings = HttpSettings;

    fn build(
        settings: HttpSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let name = resources.agent.to_owned();
        let remote = settings.agent.clone().unwrap_or_else(|| name.clone());
        let mut endpoint = reqwest::Url::parse(&settings.url).map_err(|e| ModelError::Invalid {
            path: settings.url.clone().into(),
            reason: e.to_string(),
        })?;
        let path = format!(
            "{}{}",
            endpoint.path().trim_end_matches('/'),
            wire::agent_path(&remote)
        );
        endpoint.set_path(&path);
        let token = crate::config::secret(&settings.token, settings.token_file.as_deref())
            .map_err(|source| ModelError::SecretFile {
                path: settings.token_file.clone().unwrap_or_default(),
                source,
            })?;
        let token = (!token.is_empty())
            .then(|| HeaderValue::from_str(&format!("Bearer {token}")))
            .transpose()
            .map_err(|_| ModelError::Invalid {
                path: settings.token_file.clone().unwrap_or_default(),
                reason: "the token has characters a header cannot carry".into(),
            })?
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let client = crate::http::client()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .tcp_nodelay(true)
            // Agent servers sit on the operator's own network; a redirect there is a
            // misconfiguration to surface, not to follow with the session's images.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ModelError::Invalid {
                path: settings.url.clone().into(),
                reason: e.to_string(),
            })?;
        let unavailable = format!("agent_unavailable:{name}");
        let mut reasons = settings
            .reasons
            .clone()
            .unwrap_or_else(|| builtin_reasons(&remote));
        reasons.push(unavailable.clone());
        let breaker = Breaker::new(&name, settings.breaker);
        let agent = Self {
            name,
            remote,
            endpoint,
            token,
            client,
            bulkhead: Arc::new(Semaphore::new(settings.max_concurrency)),
            retry: settings.retry,
            breaker,
            reasons,
            unavailable,
            scriptable: settings.sandbox,
            max_answer_bytes: settings.max_answer_bytes,
        };
        Ok((agent, None))
    }

    fn reasons(&self) -> Vec<String> {
        self.reasons.clone()
    }

    fn scriptable(&self) -> bool {
        self.scriptable
    }
}

/// The reason codes of the built-in kind named `kind`, if there is one.
fn builtin_reasons(kind: &str) -> Vec<String> {
    use super::{doc_capture, face_match, liveness, ocr};
    let codes: &[&str] = match kind {
        "doc_capture" => <doc_capture::DocCapture as AgentKind>::REASONS,
        "ocr" => <ocr::Ocr as AgentKind>::REASONS,
        "liveness" => <liveness::Liveness as AgentKind>::REASONS,
        "face_match" => <face_match::FaceMatch as AgentKind>::REASONS,
        _ => &[],
    };
    codes.iter().map(|&code| code.to_owned()).collect()
}

/// How one attempt ended.
enum Attempt {
    Answered {
        status: reqwest::StatusCode,
        retry_after: Option<String>,
        body: Bytes,
    },
    /// No answer: the connection failed before the request was sent, or after.
    Transport { connect: bool },
    /// An answer longer than `max_answer_bytes`, left unread.
    TooLarge,
}

/// The attempts of one call, for the check's details.
#[derive(Default)]
struct Attempts {
    outcomes: Vec<serde_json::Value>,
    problem: Option<serde_json::Value>,
}

impl Attempts {
    fn details(&self) -> serde_json::Value {
        let mut remote = json!({
            "attempts": self.outcomes.len(),
            "outcomes": self.outcomes,
        });
        if let Some(problem) = &self.problem {
            remote["problem"] = problem.clone();
        }
        remote
    }
}

impl HttpAgent {
    fn count(&self, outcome: &'static str) {
        metrics::counter!(
            "kyc_remote_attempts_total",
            "agent" => self.name.clone(),
            "outcome" => outcome
        )
        .increment(1);
    }

    /// A failure with the agent's `agent_unavailable:` reason.
    fn unavailable(&self, message: &str, attempts: &Attempts) -> AgentError {
        self.failure(Some(self.unavailable.clone()), message, attempts)
    }

    fn failure(&self, reason: Option<String>, message: &str, attempts: &Attempts) -> AgentError {
        AgentError::Remote(Box::new(RemoteFailure {
            reason,
            message: format!("remote agent `{}`: {message}", self.remote),
            details: json!({ "remote": attempts.details() }),
        }))
    }

    /// The request's body: the session's inputs and the dependencies' outputs, encoded once for
    /// every attempt; images off the runtime.
    async fn body(&self, ctx: &AgentContext) -> Result<Bytes, AgentError> {
        let input = ctx.input();
        let image_bytes: usize = input
            .selfie
            .frames()
            .iter()
            .chain(std::iter::once(&input.document.front))
            .chain(input.document.back.iter())
            .map(|image| image.bytes().len())
            .sum();
        let outputs: Vec<(String, Output)> = ctx
            .upstream_outputs()
            .map(|(name, output)| (name.to_owned(), output.clone()))
            .collect();
        let cheap = image_bytes < INLINE_ENCODE_LIMIT
            && outputs.iter().all(|(_, output)| output.encoding_is_cheap());
        let encode = {
            let input = ctx.input_shared();
            let (local, remote) = (self.name.clone(), self.remote.clone());
            move || -> Result<Bytes, AgentError> {
                let mut upstream = BTreeMap::new();
                for (name, output) in outputs {
                    if let Some(encoded) = output.encoded() {
                        let encoded = encoded.map_err(AgentError::Failed)?;
                        upstream.insert(name, encoded);
                    }
                }
                let request = AgentRequestOut::new(&input, &local, &remote, &upstream);
                serde_json::to_vec(&request)
                    .map(Bytes::from)
                    .map_err(|e| AgentError::Failed(format!("cannot encode the request: {e}")))
            }
        };
        ctx.blocking_unless(cheap, encode).await?
    }

    async fn attempt(&self, ctx: &AgentContext, body: Bytes) -> Attempt {
        let left = ctx
            .deadline()
            .saturating_duration_since(Instant::now())
            .as_millis();
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(wire::SESSION_HEADER, ctx.session_id().to_string())
            .header(wire::DEADLINE_HEADER, left.to_string())
            .header("traceparent", traceparent(ctx))
            .body(body);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Transport {
                    connect: error.is_connect(),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if response
            .content_length()
            .is_some_and(|length| length > self.max_answer_bytes as u64)
        {
            return Attempt::TooLarge;
        }
        let mut response = response;
        let mut body = bytes::BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > self.max_answer_bytes => {
                    return Attempt::TooLarge;
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => return Attempt::Transport { connect: false },
            }
        }
        Attempt::Answered {
            status,
            retry_after,
            body: body.freeze(),
        }
    }

    /// The report in a `200` answer's body. JSON of some size, and an output with images, are
    /// read off the runtime. The remote's text is not repeated in the message: it is logged.
    async fn report(&self, ctx: &AgentContext, body: Bytes) -> Result<Report, String> {
        let small = body_is_small(&body);
        let parse = move || -> Result<AgentAnswer, String> {
            serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "the answer is not a report ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            })
        };
        let answer = ctx
            .blocking_unless(small, parse)
            .await
            .map_err(|e| e.to_string())??;
        let session = ctx.input_shared();
        let cheap = answer.output.as_ref().is_none_or(wire::decodes_cheaply);
        ctx.blocking_unless(cheap, move || answer.into_report(&session))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn body_is_small(body: &Bytes) -> bool {
    body.len() < 64 * 1024
}

/// The W3C trace context of one attempt: the session's id is the trace id (a UUID is 16 bytes,
/// as a trace id is), so every attempt of every agent of a session shares one trace; each
/// attempt is a span of its own.
fn traceparent(ctx: &AgentContext) -> String {
    let span = u64::from_le_bytes(crate::domain::random_bytes::<8>()).max(1);
    format!("00-{}-{span:016x}-01", ctx.session_id().simple())
}

/// The parts of a `application/problem+json` answer a reviewer may read, bounded in size.
fn problem(body: &Bytes) -> Option<serde_json::Value> {
    if !body_is_small(body) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let field = |name: &str| -> Option<String> {
        let text = value.get(name)?.as_str()?;
        Some(text.chars().filter(|c| !c.is_control()).take(300).collect())
    };
    Some(json!({ "type": field("type"), "title": field("title"), "detail": field("detail") }))
}

#[async_trait]
impl Agent for HttpAgent {
    fn degraded(&self) -> Option<&'static str> {
        (self.breaker.state() == BreakerState::Open).then_some("breaker_open")
    }

    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError> {
        let mut attempts = Attempts::default();
        // Before a slot and the body: an open breaker fails at once, whatever else is queued.
        if self.breaker.state() == BreakerState::Open {
            self.count("breaker_open");
            return Err(self.unavailable("the circuit breaker is open", &attempts));
        }
        // The wait for a slot counts against the deadline: the orchestrator drops this future
        // when it passes.
        let _slot = self
            .bulkhead
            .acquire()
            .await
            .expect("the bulkhead is never closed");
        let body = self.body(&ctx).await?;
        let deadline = ctx.deadline();
        for attempt in 1..=self.retry.max_attempts {
            let Some(call) = self.breaker.call() else {
                self.count("breaker_open");
                return Err(self.unavailable("the circuit breaker is open", &attempts));
            };
            let call = call.until(deadline);
            let next =
                match self.attempt(&ctx, body.clone()).await {
                    Attempt::Answered { status, body, .. } if status.is_success() => {
                        attempts.outcomes.push(status.as_u16().into());
                        return match self.report(&ctx, body).await {
                            Ok(report) => {
                                let _ = call.succeeded();
                                self.count("ok");
                                Ok(with_attempts(report, &attempts))
                            }
                            // A `200` that is not a report (a proxy's page, a broken adapter): the
                            // remote is not usable, and counts against its breaker.
                            Err(message) => {
                                let _ = call.failed();
                                self.count("malformed");
                                Err(self.unavailable(&message, &attempts))
                            }
                        };
                    }
                    Attempt::Answered {
                        status,
                        retry_after,
                        body,
                    } => {
                        attempts.outcomes.push(status.as_u16().into());
                        attempts.problem = problem(&body);
                        let mut next = retry::after_status(status, retry_after.as_deref());
                        // An agent server whose own timeout for the agent passed would only run out
                        // of time again.
                        if attempts.problem.as_ref().is_some_and(|p| {
                            p["type"] == "urn:kyc-orchestrator:problem:agent-timeout"
                        }) {
                            next = Next::Stop;
                        }
                        // The remote's health, not the request's: a refusal of this request (400,
                        // 404, 413, 422) says the remote is up.
                        let remote_failed =
                            status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 429);
                        if remote_failed {
                            let _ = call.failed();
                        } else {
                            let _ = call.succeeded();
                        }
                        if next == Next::Stop {
                            self.count(if remote_failed { "failed" } else { "refused" });
                            let reason = remote_failed.then(|| self.unavailable.clone());
                            let message = format!("answered {}", status.as_u16());
                            return Err(self.failure(reason, &message, &attempts));
                        }
                        self.count("retryable");
                        next
                    }
                    Attempt::TooLarge => {
                        let _ = call.failed();
                        self.count("too_large");
                        attempts.outcomes.push("answer_too_large".into());
                        let message = format!("answered more than {} bytes", self.max_answer_bytes);
                        return Err(self.unavailable(&message, &attempts));
                    }
                    Attempt::Transport { connect } => {
                        let _ = call.failed();
                        self.count(if connect {
                            "connect_error"
                        } else {
                            "transport_error"
                        });
                        attempts.outcomes.push(
                            if connect {
                                "connect_error"
                            } else {
                                "transport_error"
                            }
                            .into(),
                        );
                        if !connect {
                            // The request may have reached the agent; it is safe to repeat (a check
                            // reads, it writes nothing), but a remote that drops connections
                            // mid-answer is not one to press with the same images again.
                            return Err(self.unavailable("the connection failed", &attempts));
                        }
                        Next::Retry(None)
                    }
                };
            if attempt == self.retry.max_attempts {
                break;
            }
            let Next::Retry(asked) = next else { break };
            let wait = asked.unwrap_or_else(|| self.retry.backoff(attempt + 1, retry::unit_draw()));
            let needed = wait + Duration::from_millis(self.retry.min_attempt_ms);
            if Instant::now() + needed > deadline {
                return Err(self.unavailable("no time left for another attempt", &attempts));
            }
            tokio::time::sleep(wait).await;
        }
        Err(self.unavailable(
            &format!("no answer after {} attempts", attempts.outcomes.len()),
            &attempts,
        ))
    }
}

/// The report with the attempts in its details, under `remote`.
fn with_attempts(mut report: Report, attempts: &Attempts) -> Report {
    let remote = attempts.details();
    report.details = match report.details {
        serde_json::Value::Object(mut details) => {
            details.insert("remote".into(), remote);
            details.into()
        }
        serde_json::Value::Null => json!({ "remote": remote }),
        other => json!({ "report": other, "remote": remote }),
    };
    report
}
