//! What every agent is to the orchestrator: the `Agent` trait, and the `Report` or `AgentError`
//! a run ends with.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;

use super::AgentContext;
use super::warm::Loading;
use crate::cpu::CpuError;

/// One step of the verification plan, as the orchestrator runs it.
///
/// CPU-bound work never runs on the async runtime: it goes through
/// [`AgentContext::blocking`]. Most agents do not implement this trait themselves: an agent
/// whose check is CPU work implements [`CpuAgent`](super::CpuAgent) and gets this from it.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Its models, when they load after start-up.
    fn models(&self) -> Option<&dyn Loading> {
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

impl From<CpuError> for AgentError {
    fn from(error: CpuError) -> Self {
        match error {
            CpuError::Panicked(message) => Self::Panicked(message),
            CpuError::Cancelled => Self::Cancelled,
        }
    }
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
