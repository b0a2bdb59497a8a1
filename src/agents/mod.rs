//! The agents: one `Agent` trait, the context every agent runs in, and the registry that builds
//! the configured agents.
//!
//! An agent is handed the session's checked inputs and its dependencies' outputs, and returns a
//! `Report` (its check passed or failed, with reasons and evidence) or an `AgentError` (it could
//! not decide). CPU-bound work goes through [`AgentContext::blocking`], which runs it on the
//! blocking pool behind a CPU slot; the orchestrator owns timeouts, cancellation and panics.

pub mod doc_capture;
pub mod face_match;
pub mod liveness;
pub mod ocr;
pub mod registry;
pub mod sandbox;
pub mod selfie;
pub mod warm;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::domain::{NewSession, SessionId};
use crate::orchestrator::CpuPool;

pub use registry::{AgentRegistry, RegistryError, document_agents, person_agents};

/// One step of the verification plan.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// The name the plan and the API know it by.
    fn name(&self) -> &str;

    /// Whether its work is CPU-bound: such an agent does that work through
    /// [`AgentContext::blocking`], never on the async runtime.
    fn cpu_bound(&self) -> bool;

    /// Its models, when they load after start-up.
    fn models(&self) -> Option<&dyn warm::Loading> {
        None
    }

    /// Whether it can run now: an agent whose models load after start-up says no until they
    /// have, and the instance is not ready for traffic until every agent is.
    fn ready(&self) -> bool {
        self.models().is_none_or(|models| models.ready())
    }

    /// Whether it never will be: its models failed to load. Readiness then says
    /// `models_failed` instead of `models_loading`, so an operator knows to look.
    fn failed(&self) -> bool {
        self.models().is_some_and(|models| models.failed())
    }

    /// Runs the check. Dropping the future cancels it; blocking work sees the context's token.
    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError>;
}

/// What a model-backed agent is built with besides its settings.
#[derive(Debug, Clone, Copy)]
pub struct Resources<'a> {
    /// The request's image limits, which decoding holds to.
    pub limits: crate::domain::ImageLimits,
    /// Where its model files are.
    pub models: &'a std::path::Path,
    /// How many of its engines may run at once: the CPU slots.
    pub slots: usize,
}

/// Why an agent produced no check result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The agent ran but could not decide (unusable input, a model failure, ...).
    #[error("{0}")]
    Failed(String),
    /// The agent's code panicked; the payload's message is kept for the log.
    #[error("the agent panicked: {0}")]
    Panicked(String),
    /// The agent stopped because its token was cancelled (timeout, deadline, fail-fast).
    #[error("cancelled")]
    Cancelled,
}

/// `value` to `digits` decimals: the precision a reviewer reads in a check's details.
pub(crate) fn rounded(value: impl Into<f64>, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value.into() * scale).round() / scale
}

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
}

/// What an agent found.
#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    pub score: Option<f64>,
    pub reasons: Vec<String>,
    pub details: serde_json::Value,
    /// Personal data read from the inputs: see `CheckResult::extracted`.
    pub extracted: Option<serde_json::Value>,
    /// Handed to the agents that depend on this one, even when the check failed.
    pub output: Option<Output>,
}

impl Report {
    pub fn passed(score: Option<f64>) -> Self {
        Self {
            verdict: Verdict::Passed,
            score,
            reasons: Vec::new(),
            details: serde_json::Value::Null,
            extracted: None,
            output: None,
        }
    }

    pub fn failed(score: Option<f64>, reasons: Vec<String>) -> Self {
        Self {
            verdict: Verdict::Failed,
            reasons,
            ..Self::passed(score)
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_extracted(mut self, extracted: serde_json::Value) -> Self {
        self.extracted = Some(extracted);
        self
    }

    pub fn with_output(mut self, output: Output) -> Self {
        self.output = Some(output);
        self
    }
}

/// An agent's output for its dependents, typed by the agent that made it.
#[derive(Clone)]
pub struct Output(Arc<dyn Any + Send + Sync>);

impl Output {
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output(..)")
    }
}

/// What an agent runs with: the session's inputs, its dependencies' outputs, its cancellation
/// token and the CPU pool.
#[derive(Clone)]
pub struct AgentContext {
    pub(crate) session_id: SessionId,
    pub(crate) input: Arc<NewSession>,
    pub(crate) upstream: BTreeMap<String, Output>,
    pub(crate) cancel: CancellationToken,
    pub(crate) cpu: CpuPool,
    pub(crate) deadline: tokio::time::Instant,
}

impl AgentContext {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    pub fn input(&self) -> &NewSession {
        &self.input
    }

    /// The output of a dependency, if it produced one of this type.
    pub fn upstream<T: Any>(&self, agent: &str) -> Option<&T> {
        self.upstream.get(agent)?.downcast_ref()
    }

    /// The output of a dependency as it was handed on: a cheap clone can go with blocking work.
    pub fn upstream_output(&self, agent: &str) -> Option<&Output> {
        self.upstream.get(agent)
    }

    /// When this agent's result stops counting: the earlier of its own timeout and the session's
    /// deadline. An agent with optional work (a second detector pass, more frames) can budget it.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Cancelled when the agent times out, the session's deadline passes or fail-fast stops it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Runs CPU-bound work on the blocking pool, once a CPU slot is free, inside this session's
    /// context and span. The work should poll the token it is given and return early once it is
    /// cancelled; its slot is released when it returns, even if nobody waits for it any more.
    pub async fn blocking<F, R>(&self, work: F) -> Result<R, AgentError>
    where
        F: FnOnce(&CancellationToken) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.cpu.run(self.cancel.clone(), work).await
    }
}
