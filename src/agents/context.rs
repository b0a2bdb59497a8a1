//! What an agent runs with: the session's inputs, its dependencies' outputs, its deadline and
//! cancellation token, and the CPU pool.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{AgentError, Output};
use crate::cpu::CpuPool;
use crate::domain::{NewSession, SessionId};

/// One agent's view of its session, built by the orchestrator for each run.
#[derive(Clone)]
pub struct AgentContext {
    session_id: SessionId,
    input: Arc<NewSession>,
    upstream: BTreeMap<String, Output>,
    cancel: CancellationToken,
    cpu: CpuPool,
    deadline: tokio::time::Instant,
}

impl AgentContext {
    /// The context of one run: `upstream` holds the outputs of the agent's dependencies by
    /// name, `deadline` is when its result stops counting.
    pub fn new(
        session_id: SessionId,
        input: Arc<NewSession>,
        upstream: BTreeMap<String, Output>,
        cancel: CancellationToken,
        cpu: CpuPool,
        deadline: tokio::time::Instant,
    ) -> Self {
        Self {
            session_id,
            input,
            upstream,
            cancel,
            cpu,
            deadline,
        }
    }

    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    pub fn input(&self) -> &NewSession {
        &self.input
    }

    /// The inputs as shared, for work that outlives this borrow (blocking jobs).
    pub fn input_shared(&self) -> Arc<NewSession> {
        Arc::clone(&self.input)
    }

    /// Every dependency's output, by the dependency's name.
    pub fn upstream_outputs(&self) -> impl Iterator<Item = (&str, &Output)> {
        self.upstream
            .iter()
            .map(|(name, output)| (name.as_str(), output))
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

    /// Runs `work` right here when it is `cheap` (a few kilobytes of JSON, no image), else as
    /// [`AgentContext::blocking`] does: for work whose cost depends on its input.
    pub async fn blocking_unless<R>(
        &self,
        cheap: bool,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AgentError>
    where
        R: Send + 'static,
    {
        if cheap {
            Ok(work())
        } else {
            self.blocking(move |_| work()).await
        }
    }

    /// Runs CPU-bound work on the blocking pool, once a CPU slot is free, inside this session's
    /// context and span. The work should poll the token it is given and return early once it is
    /// cancelled; its slot is released when it returns, even if nobody waits for it any more.
    pub async fn blocking<F, R>(&self, work: F) -> Result<R, AgentError>
    where
        F: FnOnce(&CancellationToken) -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.cpu.run(self.cancel.clone(), work).await?)
    }
}
