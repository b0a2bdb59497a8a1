//! Builds the configured agents: each `[agents.NAME]` entry's `kind` names an [`AgentKind`],
//! whose settings table is parsed and checked here, so a mistake stops start-up with a message
//! that names the agent and the setting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::warm::Loader;
use super::{Agent, AgentKind, CheckSettings, Resources};
use super::{doc_capture, face_match, liveness, ocr, remote, sandbox};
use crate::config::{AgentSettings, Settings};
use crate::models::ModelError;

/// Why the configured agents could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("agent `{agent}`: unknown kind `{kind}` (known kinds: {known})")]
    UnknownKind {
        agent: String,
        kind: String,
        known: String,
    },
    #[error(
        "agent `{0}` is a sandbox agent, and orchestrator.allow_sandbox_agents is off: configure \
         a real agent for it (a remote agent with settings.sandbox counts as a sandbox agent)"
    )]
    SandboxNotAllowed(String),
    #[error("agent `{agent}`: invalid settings: {reason}")]
    Settings { agent: String, reason: String },
    #[error(
        "agent `{agent}`: unknown key `{key}` (an agent takes kind, timeout_ms, depends_on and its kind's settings table)"
    )]
    UnknownKey { agent: String, key: String },
    #[error(
        "agent `{agent}`: settings.{setting} names `{dependency}`, which is not in its \
         depends_on: add `{dependency}` to agents.{agent}.depends_on, or name one of its \
         dependencies in settings.{setting}"
    )]
    Undeclared {
        agent: String,
        setting: &'static str,
        dependency: String,
    },
    #[error("agent `{agent}`")]
    Model {
        agent: String,
        #[source]
        source: ModelError,
    },
}

/// One agent of the plan: what it is, what it waits for, how long it may take.
pub struct Entry {
    /// The name the plan, the API and the events know it by.
    pub name: String,
    pub agent: Arc<dyn Agent>,
    /// The agents whose results it waits for.
    pub depends_on: Vec<String>,
    /// Its own time limit; it also never runs past the session's deadline.
    pub timeout: Duration,
}

/// The agent kinds a configuration may name.
pub struct Kinds {
    builders: BTreeMap<&'static str, Builder>,
    /// Every kind's settings table key.
    tables: BTreeSet<&'static str>,
}

/// Builds one configured agent of a kind from its entry.
type Builder = fn(&AgentSettings, &Resources) -> Result<Built, RegistryError>;

/// A configured agent, built.
struct Built {
    agent: Arc<dyn Agent>,
    loader: Option<Loader>,
    /// The agents it reads, each with the setting that names it.
    reads: Vec<(&'static str, String)>,
    reasons: Vec<String>,
    scriptable: bool,
}

impl Kinds {
    /// No kinds at all: start from [`Kinds::builtin`] unless every kind is your own.
    pub fn empty() -> Self {
        Self {
            builders: BTreeMap::new(),
            tables: BTreeSet::new(),
        }
    }

    /// The kinds this crate ships: one line each.
    pub fn builtin() -> Self {
        Self::empty()
            .with::<sandbox::SandboxAgent>()
            .with::<doc_capture::DocCapture>()
            .with::<ocr::Ocr>()
            .with::<liveness::Liveness>()
            .with::<face_match::FaceMatch>()
            .with::<remote::HttpAgent>()
    }

    /// Adds the kind `K` under its [`AgentKind::KIND`].
    ///
    /// # Panics
    /// If a kind of that name is already registered: two kinds cannot share a name.
    pub fn with<K: AgentKind>(mut self) -> Self {
        let added = self.builders.insert(K::KIND, build::<K>);
        assert!(added.is_none(), "agent kind `{}` registered twice", K::KIND);
        self.tables.insert(K::TABLE);
        self
    }

    fn builder(&self, agent: &str, kind: &str) -> Result<Builder, RegistryError> {
        self.builders
            .get(kind)
            .copied()
            .ok_or_else(|| RegistryError::UnknownKind {
                agent: agent.to_owned(),
                kind: kind.to_owned(),
                known: self.builders.keys().copied().collect::<Vec<_>>().join(", "),
            })
    }
}

impl Default for Kinds {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Builds one agent of kind `K`: its settings parsed and checked.
fn build<K: AgentKind>(
    configured: &AgentSettings,
    resources: &Resources,
) -> Result<Built, RegistryError> {
    let agent = resources.agent;
    let settings = parse::<K::Settings>(agent, table::<K>(configured))?;
    let (built, loader) = K::build(settings, resources).map_err(|source| RegistryError::Model {
        agent: agent.to_owned(),
        source,
    })?;
    Ok(Built {
        reads: built
            .reads()
            .into_iter()
            .map(|(setting, dependency)| (setting, dependency.to_owned()))
            .collect(),
        reasons: built.reasons(),
        scriptable: built.scriptable(),
        agent: Arc::new(built),
        loader,
    })
}

/// The table of `configured` that kind `K` reads; `Null` when there is none.
fn table<K: AgentKind>(configured: &AgentSettings) -> &serde_json::Value {
    const NONE: &serde_json::Value = &serde_json::Value::Null;
    match K::TABLE {
        "settings" => &configured.settings,
        other => configured.tables.get(other).unwrap_or(NONE),
    }
}

/// An agent's `settings` table as its own type; an absent table is all defaults.
fn parse<T: serde::de::DeserializeOwned + Default + CheckSettings>(
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
    settings.check_for(agent).map_err(invalid)?;
    Ok(settings)
}

/// The configured agents, in the configuration's order, and their models' loaders.
pub struct AgentRegistry {
    entries: Vec<Entry>,
    sandbox: Vec<String>,
    reasons: BTreeSet<String>,
    loaders: Vec<Loader>,
}

impl AgentRegistry {
    /// Builds every configured agent of the built-in kinds: see [`AgentRegistry::build`].
    pub fn from_settings(settings: &Settings) -> Result<Self, RegistryError> {
        Self::build(settings, &Kinds::builtin())
    }

    /// Builds every configured agent from `kinds`; refuses an unknown kind, a sandbox agent
    /// where they are not allowed, settings that do not parse or check, a setting that names an
    /// agent outside `depends_on`, and a model file that is not there. Models are not loaded
    /// yet: see [`AgentRegistry::take_loaders`]. The plan itself (cycles, unknown dependencies)
    /// is the orchestrator's to check.
    pub fn build(settings: &Settings, kinds: &Kinds) -> Result<Self, RegistryError> {
        let mut registry = Self::custom(Vec::new());
        for (name, configured) in &settings.agents {
            let builder = kinds.builder(name, &configured.kind)?;
            if let Some(key) = configured
                .tables
                .keys()
                .find(|key| !kinds.tables.contains(key.as_str()))
            {
                return Err(RegistryError::UnknownKey {
                    agent: name.clone(),
                    key: key.clone(),
                });
            }
            let resources = Resources {
                agent: name,
                limits: settings.limits.images(),
                models: &settings.models.dir,
                slots: settings.orchestrator.cpu_slots(),
            };
            let built = builder(configured, &resources)?;
            let sandbox = built.scriptable;
            if sandbox && !settings.orchestrator.allow_sandbox_agents {
                return Err(RegistryError::SandboxNotAllowed(name.clone()));
            }
            if let Some((setting, dependency)) = built
                .reads
                .into_iter()
                .find(|(_, dependency)| !configured.depends_on.contains(dependency))
            {
                return Err(RegistryError::Undeclared {
                    agent: name.clone(),
                    setting,
                    dependency,
                });
            }
            if sandbox {
                registry.sandbox.push(name.clone());
            }
            registry.reasons.extend(built.reasons);
            registry.loaders.extend(built.loader);
            registry.entries.push(Entry {
                name: name.clone(),
                agent: built.agent,
                depends_on: configured.depends_on.clone(),
                timeout: configured.timeout(),
            });
        }
        Ok(registry)
    }

    /// A registry of agents built elsewhere (a library user's own, or a test's).
    pub fn custom(entries: Vec<Entry>) -> Self {
        Self {
            entries,
            sandbox: Vec::new(),
            reasons: BTreeSet::new(),
            loaders: Vec::new(),
        }
    }

    /// The agents, in the configuration's order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Takes the agents out, for the orchestrator's plan.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// Names of the sandbox agents: the only ones a request's `sandbox` object may script.
    pub fn sandbox_agents(&self) -> &[String] {
        &self.sandbox
    }

    /// Every reason code the configured agents can report.
    pub fn reasons(&self) -> &BTreeSet<String> {
        &self.reasons
    }

    /// The jobs that load the agents' models; each agent is ready once its job has run.
    pub fn take_loaders(&mut self) -> Vec<Loader> {
        std::mem::take(&mut self.loaders)
    }
}

/// The agent `name` of kind `K`, as `settings` configures it (defaults when it has no entry),
/// its models loaded from `models` now, with one engine: for callers outside the service, such
/// as the evaluation command and the tests.
pub fn standalone<K: AgentKind>(
    settings: &Settings,
    name: &str,
    models: &Path,
) -> Result<K, RegistryError> {
    let model_error = |source| RegistryError::Model {
        agent: name.to_owned(),
        source,
    };
    let table = settings
        .agents
        .get(name)
        .map_or(&serde_json::Value::Null, table::<K>);
    let resources = Resources {
        agent: name,
        limits: settings.limits.images(),
        models,
        slots: 1,
    };
    let parsed = parse::<K::Settings>(name, table)?;
    let (agent, loader) = K::build(parsed, &resources).map_err(model_error)?;
    if let Some(loader) = loader {
        loader.load().map_err(model_error)?;
    }
    Ok(agent)
}
