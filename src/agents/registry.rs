//! Builds the configured agents and the plan they run in.

use std::sync::Arc;

use crate::config::{AgentKind, AgentSettings, Settings};
use crate::models::ModelError;
use crate::orchestrator::{Plan, PlanError};

use super::Agent;
use super::doc_capture::DocCapture;
use super::face_match::FaceMatch;
use super::liveness::Liveness;
use super::ocr::Ocr;
use super::sandbox::SandboxAgent;
use super::warm::Loader;

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
    #[error("agent `{agent}`: invalid settings: {reason}")]
    Settings { agent: String, reason: String },
    #[error("agent `{agent}`: {source}")]
    Model {
        agent: String,
        #[source]
        source: ModelError,
    },
}

/// The configured agents, in the plan's order, with the plan itself.
pub struct AgentRegistry {
    plan: Plan,
    agents: Vec<Arc<dyn Agent>>,
    sandbox: Vec<String>,
    loaders: Vec<Loader>,
}

impl AgentRegistry {
    /// Builds every configured agent; refuses a plan with a cycle or an unknown dependency,
    /// unknown agent settings, and a model file that is not there. Models are not loaded yet:
    /// see [`AgentRegistry::take_loaders`].
    pub fn from_settings(settings: &Settings) -> Result<Self, RegistryError> {
        let configured: Vec<(&String, &AgentSettings)> = settings.agents.iter().collect();
        let plan =
            Plan::new(configured.iter().map(|(name, agent)| {
                (name.as_str(), agent.depends_on.as_slice(), agent.timeout())
            }))?;
        let mut agents = Vec::with_capacity(plan.len());
        let mut sandbox = Vec::new();
        let mut loaders = Vec::new();
        for node in plan.nodes() {
            let (name, agent) = configured
                .iter()
                .find(|(name, _)| name.as_str() == node.name)
                .expect("every plan node comes from the settings");
            let model_error = |source| RegistryError::Model {
                agent: name.to_string(),
                source,
            };
            let built: Arc<dyn Agent> = match agent.kind {
                AgentKind::Sandbox if !settings.orchestrator.allow_sandbox_agents => {
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
                AgentKind::DocCapture => {
                    let (built, loader) = DocCapture::new(
                        name,
                        agent_settings(name, &agent.settings)?,
                        settings.limits.images(),
                        &settings.models.dir,
                    )
                    .map_err(model_error)?;
                    loaders.push(loader);
                    Arc::new(built)
                }
                AgentKind::Ocr => {
                    let (built, loader) = Ocr::new(
                        name,
                        agent_settings(name, &agent.settings)?,
                        &settings.models.dir,
                        settings.orchestrator.cpu_slots(),
                    )
                    .map_err(model_error)?;
                    loaders.push(loader);
                    Arc::new(built)
                }
                AgentKind::Liveness => {
                    let (built, loader) = Liveness::new(
                        name,
                        agent_settings(name, &agent.settings)?,
                        settings.limits.images(),
                        &settings.models.dir,
                        settings.orchestrator.cpu_slots(),
                    )
                    .map_err(model_error)?;
                    loaders.push(loader);
                    Arc::new(built)
                }
                AgentKind::FaceMatch => {
                    let (built, loader) = FaceMatch::new(
                        name,
                        agent_settings(name, &agent.settings)?,
                        settings.limits.images(),
                        &settings.models.dir,
                        settings.orchestrator.cpu_slots(),
                    )
                    .map_err(model_error)?;
                    loaders.push(loader);
                    Arc::new(built)
                }
            };
            agents.push(built);
        }
        Ok(Self {
            plan,
            agents,
            sandbox,
            loaders,
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
            loaders: Vec::new(),
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

    /// The jobs that load the agents' models; each agent is ready once its job has run.
    pub fn take_loaders(&mut self) -> Vec<Loader> {
        std::mem::take(&mut self.loaders)
    }
}

/// doc_capture and ocr as `settings` configures them (under those names), their models loaded
/// from `models` now, with one inference session each: for callers outside the service, such
/// as the evaluation command and the tests.
pub fn document_agents(
    settings: &Settings,
    models: &std::path::Path,
) -> Result<(DocCapture, Ocr), RegistryError> {
    let limits = settings.limits.images();
    let capture = loaded_now(
        "doc_capture",
        DocCapture::new(
            "doc_capture",
            configured(settings, "doc_capture")?,
            limits,
            models,
        ),
    )?;
    let ocr = loaded_now(
        "ocr",
        Ocr::new("ocr", configured(settings, "ocr")?, models, 1),
    )?;
    Ok((capture, ocr))
}

/// liveness and face_match, likewise.
pub fn person_agents(
    settings: &Settings,
    models: &std::path::Path,
) -> Result<(Liveness, FaceMatch), RegistryError> {
    let limits = settings.limits.images();
    let liveness = loaded_now(
        "liveness",
        Liveness::new(
            "liveness",
            configured(settings, "liveness")?,
            limits,
            models,
            1,
        ),
    )?;
    let face_match = loaded_now(
        "face_match",
        FaceMatch::new(
            "face_match",
            configured(settings, "face_match")?,
            limits,
            models,
            1,
        ),
    )?;
    Ok((liveness, face_match))
}

/// The settings table `settings` has for the agent `name` (defaults if it has none).
fn configured<T: serde::de::DeserializeOwned + Default>(
    settings: &Settings,
    name: &str,
) -> Result<T, RegistryError> {
    let table = settings
        .agents
        .get(name)
        .map_or(serde_json::Value::Null, |agent| agent.settings.clone());
    agent_settings(name, &table)
}

/// A built agent with its models loaded, on this thread.
fn loaded_now<T>(agent: &str, built: Result<(T, Loader), ModelError>) -> Result<T, RegistryError> {
    let model_error = |source| RegistryError::Model {
        agent: agent.to_owned(),
        source,
    };
    let (built, loader) = built.map_err(model_error)?;
    loader.load().map_err(model_error)?;
    Ok(built)
}

/// An agent's `settings` table as its own type; an absent table is all defaults.
fn agent_settings<T: serde::de::DeserializeOwned + Default>(
    agent: &str,
    value: &serde_json::Value,
) -> Result<T, RegistryError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value.clone()).map_err(|e| RegistryError::Settings {
        agent: agent.to_owned(),
        reason: e.to_string(),
    })
}
