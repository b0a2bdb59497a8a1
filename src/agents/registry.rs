//! Builds the configured agents and the plan they run in.

use std::sync::Arc;

use crate::config::{AgentKind, AgentSettings, Settings};
use crate::models::ModelError;
use crate::orchestrator::{Plan, PlanError};

use super::doc_capture::DocCapture;
use super::face_match::FaceMatch;
use super::liveness::Liveness;
use super::ocr::Ocr;
use super::sandbox::SandboxAgent;
use super::warm::Loader;
use super::{Agent, Resources};

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
    #[error("agent `{agent}`")]
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
        let resources = Resources {
            limits: settings.limits.images(),
            models: &settings.models.dir,
            slots: settings.orchestrator.cpu_slots(),
        };
        for node in plan.nodes() {
            let (name, agent) = configured
                .iter()
                .find(|(name, _)| name.as_str() == node.name)
                .expect("every plan node comes from the settings");
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
                AgentKind::DocCapture => model_agent(
                    name,
                    &agent.settings,
                    &resources,
                    DocCapture::new,
                    &mut loaders,
                )?,
                AgentKind::Ocr => {
                    model_agent(name, &agent.settings, &resources, Ocr::new, &mut loaders)?
                }
                AgentKind::Liveness => model_agent(
                    name,
                    &agent.settings,
                    &resources,
                    Liveness::new,
                    &mut loaders,
                )?,
                AgentKind::FaceMatch => model_agent(
                    name,
                    &agent.settings,
                    &resources,
                    FaceMatch::new,
                    &mut loaders,
                )?,
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
/// from `models` now, with one engine each: for callers outside the service, such as the
/// evaluation command and the tests.
pub fn document_agents(
    settings: &Settings,
    models: &std::path::Path,
) -> Result<(DocCapture, Ocr), RegistryError> {
    let resources = standalone(settings, models);
    Ok((
        loaded_now("doc_capture", settings, &resources, DocCapture::new)?,
        loaded_now("ocr", settings, &resources, Ocr::new)?,
    ))
}

/// liveness and face_match, likewise.
pub fn person_agents(
    settings: &Settings,
    models: &std::path::Path,
) -> Result<(Liveness, FaceMatch), RegistryError> {
    let resources = standalone(settings, models);
    Ok((
        loaded_now("liveness", settings, &resources, Liveness::new)?,
        loaded_now("face_match", settings, &resources, FaceMatch::new)?,
    ))
}

/// How an agent's constructor looks: its name, its settings, what it is built with.
type Constructor<A, S> = fn(&str, S, &Resources) -> Result<(A, Loader), ModelError>;

fn standalone<'a>(settings: &Settings, models: &'a std::path::Path) -> Resources<'a> {
    Resources {
        limits: settings.limits.images(),
        models,
        slots: 1,
    }
}

/// A configured model-backed agent, its loader queued in `loaders`.
fn model_agent<A: Agent, S: serde::de::DeserializeOwned + Default + AgentSettingsCheck>(
    name: &str,
    table: &serde_json::Value,
    resources: &Resources,
    new: Constructor<A, S>,
    loaders: &mut Vec<Loader>,
) -> Result<Arc<dyn Agent>, RegistryError> {
    let (built, loader) = new(name, agent_settings(name, table)?, resources).map_err(|source| {
        RegistryError::Model {
            agent: name.to_owned(),
            source,
        }
    })?;
    loaders.push(loader);
    Ok(Arc::new(built))
}

/// The agent `name` as `settings` configures it, its models loaded on this thread.
fn loaded_now<A, S: serde::de::DeserializeOwned + Default + AgentSettingsCheck>(
    name: &str,
    settings: &Settings,
    resources: &Resources,
    new: Constructor<A, S>,
) -> Result<A, RegistryError> {
    let model_error = |source| RegistryError::Model {
        agent: name.to_owned(),
        source,
    };
    let table = settings
        .agents
        .get(name)
        .map_or(serde_json::Value::Null, |agent| agent.settings.clone());
    let (built, loader) =
        new(name, agent_settings(name, &table)?, resources).map_err(model_error)?;
    loader.load().map_err(model_error)?;
    Ok(built)
}

/// An agent's `settings` table as its own type; an absent table is all defaults.
fn agent_settings<T: serde::de::DeserializeOwned + Default + AgentSettingsCheck>(
    agent: &str,
    value: &serde_json::Value,
) -> Result<T, RegistryError> {
    let invalid = |reason: String| RegistryError::Settings {
        agent: agent.to_owned(),
        reason,
    };
    let settings: T = if value.is_null() {
        T::default()
    } else {
        serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?
    };
    settings.check().map_err(invalid)?;
    Ok(settings)
}

/// What an agent's settings must satisfy beyond their types: thresholds in the order their
/// meaning needs.
pub trait AgentSettingsCheck {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl AgentSettingsCheck for super::doc_capture::DocCaptureSettings {}
impl AgentSettingsCheck for super::ocr::OcrSettings {}
