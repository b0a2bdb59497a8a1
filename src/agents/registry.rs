//! Builds the configured agents and the plan they run in.

use std::sync::Arc;

use crate::config::{AgentKind, AgentSettings};
use crate::orchestrator::{Plan, PlanError};

use super::Agent;
use super::sandbox::SandboxAgent;

/// Why the configured agents could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "agent `{0}` is a sandbox agent, and orchestrator.allow_sandbox_agents is off: \
         configure a real agent for it"
    )]
    SandboxNotAllowed(String),
}

/// The configured agents, in the plan's order, with the plan itself.
pub struct AgentRegistry {
    plan: Plan,
    agents: Vec<Arc<dyn Agent>>,
    sandbox: Vec<String>,
}

impl AgentRegistry {
    /// Builds every configured agent; refuses a plan with a cycle or an unknown dependency.
    pub fn from_settings<'a>(
        settings: impl IntoIterator<Item = (&'a String, &'a AgentSettings)>,
        allow_sandbox: bool,
    ) -> Result<Self, RegistryError> {
        let settings: Vec<_> = settings.into_iter().collect();
        let plan =
            Plan::new(settings.iter().map(|(name, agent)| {
                (name.as_str(), agent.depends_on.as_slice(), agent.timeout())
            }))?;
        let mut agents = Vec::with_capacity(plan.len());
        let mut sandbox = Vec::new();
        for node in plan.nodes() {
            let (name, agent) = settings
                .iter()
                .find(|(name, _)| name.as_str() == node.name)
                .expect("every plan node comes from the settings");
            let built: Arc<dyn Agent> = match agent.kind {
                AgentKind::Sandbox if !allow_sandbox => {
                    return Err(RegistryError::SandboxNotAllowed(name.to_string()));
                }
                AgentKind::Sandbox => {
                    sandbox.push(name.to_string());
                    Arc::new(SandboxAgent::new(
                        name,
                        agent.sandbox.clone(),
                        agent.fail_reason.clone(),
                    ))
                }
            };
            agents.push(built);
        }
        Ok(Self {
            plan,
            agents,
            sandbox,
        })
    }

    /// A registry of agents built elsewhere (a library user's own, or a test's), each with its
    /// dependencies and timeout. The plan is checked as for configured agents.
    pub fn custom(
        agents: Vec<(Arc<dyn Agent>, Vec<String>, std::time::Duration)>,
    ) -> Result<Self, RegistryError> {
        let plan = Plan::new(
            agents
                .iter()
                .map(|(agent, deps, timeout)| (agent.name(), deps.as_slice(), *timeout)),
        )?;
        let agents = plan
            .nodes()
            .iter()
            .map(|node| {
                let (agent, _, _) = agents
                    .iter()
                    .find(|(agent, _, _)| agent.name() == node.name)
                    .expect("every plan node comes from the list");
                Arc::clone(agent)
            })
            .collect();
        Ok(Self {
            plan,
            agents,
            sandbox: Vec::new(),
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The agents, indexed like the plan's nodes.
    pub fn agents(&self) -> &[Arc<dyn Agent>] {
        &self.agents
    }

    /// Names of the sandbox agents: the only ones a request's `sandbox` object may script.
    pub fn sandbox_agents(&self) -> &[String] {
        &self.sandbox
    }
}
