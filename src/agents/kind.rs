//! How one file in `src/agents/` becomes an agent the configuration can name.
//!
//! An agent file defines its settings, its type and two impls: [`AgentKind`] (its `kind` name,
//! its reason codes, how it is built from its settings) and, for the usual agent whose check is
//! CPU work, [`CpuAgent`] (what it takes from the session on the runtime, what it computes on
//! the CPU pool). One line in [`Kinds::builtin`](super::Kinds::builtin) registers it.

use std::path::Path;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::warm::{Loader, Loading};
use super::{Agent, AgentContext, AgentError, Report};
use crate::domain::ImageLimits;
use crate::models::ModelError;

/// What an agent is built with besides its settings.
#[derive(Debug, Clone, Copy)]
pub struct Resources<'a> {
    /// The name the plan knows it by (`[agents.NAME]`).
    pub agent: &'a str,
    /// The request's image limits, which decoding holds to.
    pub limits: ImageLimits,
    /// Where its model files are.
    pub models: &'a Path,
    /// How many of its engines may run at once: the CPU slots.
    pub slots: usize,
}

/// An agent implementation that `[agents.NAME] kind = "..."` can name.
pub trait AgentKind: Agent + Sized {
    /// The `kind` value that selects it.
    const KIND: &'static str;

    /// Every reason code its failed checks can report, so that a `policy.decline_on` code that
    /// no configured agent reports (a typo that would send a decline to review) is found at
    /// start-up.
    const REASONS: &'static [&'static str];

    /// Its settings: an absent table is the default, an unknown key is refused.
    type Settings: DeserializeOwned + Default + CheckSettings;

    /// The key of its settings table under `[agents.NAME]`. A kind that stands in for others
    /// (the sandbox) reads a table of its own name, so that switching an agent's kind in one
    /// layer of configuration does not merge the real agent's thresholds into its settings.
    const TABLE: &'static str = "settings";

    /// Builds the agent. Model files must exist now; the loader, if any, loads them later on the
    /// blocking pool (the instance is not ready until it has).
    fn build(
        settings: Self::Settings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError>;

    /// The agents whose outputs it reads, each with the setting that names it: every one must be
    /// among the agent's `depends_on`, or it would run before them and never find their output.
    fn reads(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }

    /// Whether a request's `sandbox` directive may script it: a sandbox agent, or a remote one.
    /// Only allowed where `orchestrator.allow_sandbox_agents` is on.
    fn scriptable(&self) -> bool {
        false
    }

    /// The reason codes this configured agent can report; [`AgentKind::REASONS`] unless its
    /// settings choose them.
    fn reasons(&self) -> Vec<String> {
        Self::REASONS.iter().map(|&code| code.to_owned()).collect()
    }
}

/// What an agent's settings must satisfy beyond their types: thresholds in the order their
/// meaning needs.
pub trait CheckSettings {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// [`CheckSettings::check`] for the agent the plan calls `agent`: for settings whose rules
    /// depend on it.
    fn check_for(&self, agent: &str) -> Result<(), String> {
        let _ = agent;
        self.check()
    }
}

/// An agent whose check is CPU work: it takes what it needs from the session on the runtime
/// (cheap clones of images and upstream outputs), then computes on the CPU pool, behind a slot,
/// in the session's span. Implementing it implements [`Agent`].
pub trait CpuAgent: Clone + Send + Sync + 'static {
    /// What [`CpuAgent::gather`] hands to [`CpuAgent::compute`].
    type Input: Send + 'static;

    /// Its models, when they load after start-up.
    fn models(&self) -> Option<&dyn Loading> {
        None
    }

    /// Takes the check's inputs from the session. Runs on the async runtime: no real work here.
    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError>;

    /// The check, on a blocking thread. Returns early, `Cancelled`, once `cancel` is cancelled.
    fn compute(&self, input: Self::Input, cancel: &CancellationToken)
    -> Result<Report, AgentError>;
}

#[async_trait]
impl<T: CpuAgent> Agent for T {
    fn models(&self) -> Option<&dyn Loading> {
        CpuAgent::models(self)
    }

    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError> {
        let input = self.gather(&ctx)?;
        let this = self.clone();
        ctx.blocking(move |cancel| this.compute(input, cancel))
            .await?
    }
}
