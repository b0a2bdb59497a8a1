//! What every agent is to the orchestrator: the `Agent` trait, and the `Report` or `AgentError`
//! a run ends with.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::AgentContext;
use super::warm::Loading;
use super::wire::Portable;
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

    /// Why it is degraded, if it is: a remote agent whose circuit breaker is open. Readiness
    /// reports it, and the instance stays ready: every instance shares the remote, so taking
    /// them out of the load balancer would turn one failing check into an outage.
    fn degraded(&self) -> Option<&'static str> {
        None
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
    /// A remote agent gave no report: it could not be reached, kept failing, refused the
    /// request, or its circuit breaker is open. The check records its reason code and details.
    #[error("{}", .0.message)]
    Remote(Box<RemoteFailure>),
}

/// What a reviewer reads of a remote agent that gave no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFailure {
    /// The check's reason code, e.g. `agent_unavailable:face_match`; none when the remote
    /// answered that the agent could not decide.
    pub reason: Option<String>,
    /// One line for the check's `detail`.
    pub message: String,
    /// The attempts made: how many, and how each ended.
    pub details: serde_json::Value,
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

/// An agent's output for its dependents, typed by the agent that made it. An output made with
/// [`Output::portable`] also has a wire form, so a remote agent can be handed it.
#[derive(Clone)]
pub struct Output(Arc<Held>);

struct Held {
    value: Box<dyn Any + Send + Sync>,
    encode: Option<Encoder>,
    cheap: bool,
    /// The wire form, made once however many remote agents read it.
    encoded: OnceLock<Result<Arc<serde_json::Value>, String>>,
}

type Encoder = fn(&(dyn Any + Send + Sync)) -> Result<serde_json::Value, String>;

impl Output {
    /// An output only agents in this process can read.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(Held {
            value: Box::new(value),
            encode: None,
            cheap: true,
            encoded: OnceLock::new(),
        }))
    }

    /// An output that can also be sent to a remote agent.
    pub fn portable<T: Portable>(value: T) -> Self {
        fn encode<T: Portable>(
            value: &(dyn Any + Send + Sync),
        ) -> Result<serde_json::Value, String> {
            let value = value
                .downcast_ref::<T>()
                .expect("an encoder is made for its own type");
            super::wire::tagged(T::TYPE, value.encode()?)
        }
        Self(Arc::new(Held {
            value: Box::new(value),
            encode: Some(encode::<T>),
            cheap: T::CHEAP,
            encoded: OnceLock::new(),
        }))
    }

    /// An output that came over the wire as `wire`, which is its encoding from now on.
    pub fn portable_encoded<T: Portable>(value: T, wire: Arc<serde_json::Value>) -> Self {
        let output = Self::portable(value);
        let _ = output.0.encoded.set(Ok(wire));
        output
    }

    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.value.downcast_ref()
    }

    /// Whether [`Output::encoded`] is cheap enough for the async runtime: nothing to encode,
    /// encoded already, or a type without images.
    pub fn encoding_is_cheap(&self) -> bool {
        self.0.cheap || self.0.encoded.get().is_some()
    }

    /// Its wire form (`{"type": ..., ...}`), encoded on first use: `None` for an output only
    /// this process can read. CPU work for images: call it off the runtime.
    pub fn encoded(&self) -> Option<Result<Arc<serde_json::Value>, String>> {
        let encode = self.0.encode?;
        Some(
            self.0
                .encoded
                .get_or_init(|| encode(self.0.value.as_ref()).map(Arc::new))
                .clone(),
        )
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output(..)")
    }
}
