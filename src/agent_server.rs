//! `kyc-orchestrator agent-server`: a worker that serves some of the configured agents over the
//! remote agent protocol, so that API instances (their agents of kind `http`) can leave the
//! CPU-heavy checks to machines of their own. Built from the same settings as the service: the
//! agents named run with their `[agents.NAME]` settings, on `agent_server.port`, behind
//! `agent_server.token`. Stateless: put as many as needed behind any HTTP load balancer.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::agents::{AgentRegistry, Kinds, RegistryError};
use crate::api::{self, AgentServerState, Lifecycle, ServedAgent};
use crate::config::Settings;
use crate::cpu::CpuPool;

/// Why the agent server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentServerError {
    #[error(
        "agent_server.token is empty: set KYC__AGENT_SERVER__TOKEN (or agent_server.token_file), \
         and the same token in the callers' agents.NAME.settings.token"
    )]
    NoToken,
    #[error("cannot read agent_server.token_file {path}")]
    TokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent `{0}` is not configured (no [agents.{0}] in the settings)")]
    Unknown(String),
    #[error(
        "agent `{0}` is itself of kind \"http\": an agent server runs agents, it does not relay them"
    )]
    Relay(String),
    #[error("no agent to serve")]
    Nothing,
    #[error("invalid agent configuration")]
    Agents(#[from] RegistryError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, agent server.
pub struct AgentServer {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AgentServerState,
    connections: api::Connections,
    drain_delay: Duration,
    shutdown_timeout: Duration,
}

impl AgentServer {
    /// Serves the agents `names` (every configured agent when empty) with the built-in kinds.
    pub async fn build(settings: Settings, names: &[String]) -> Result<Self, AgentServerError> {
        Self::build_with(settings, names, &Kinds::builtin()).await
    }

    /// As [`AgentServer::build`], with the agent kinds `kinds`.
    pub async fn build_with(
        mut settings: Settings,
        names: &[String],
        kinds: &Kinds,
    ) -> Result<Self, AgentServerError> {
        let config = settings.agent_server.clone();
        let token = crate::config::secret(&config.token, config.token_file.as_deref()).map_err(
            |source| AgentServerError::TokenFile {
                path: config.token_file.clone().unwrap_or_default(),
                source,
            },
        )?;
        if token.is_empty() {
            return Err(AgentServerError::NoToken);
        }
        let served = if names.is_empty() {
            settings.agents.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        for name in &served {
            let configured = settings
                .agents
                .get(name)
                .ok_or_else(|| AgentServerError::Unknown(name.clone()))?;
            if configured.kind == "http" {
                return Err(AgentServerError::Relay(name.clone()));
            }
        }
        if served.is_empty() {
            return Err(AgentServerError::Nothing);
        }
        // Only the served agents are built (and only their models loaded).
        settings.agents.retain(|name, _| served.contains(name));
        let mut registry = AgentRegistry::build(&settings, kinds)?;
        let loaders = registry.take_loaders();
        let sandbox_agents = registry.sandbox_agents().to_vec();
        let agents: BTreeMap<String, ServedAgent> = registry
            .into_entries()
            .into_iter()
            .map(|entry| {
                let served = ServedAgent {
                    agent: entry.agent,
                    timeout: entry.timeout,
                };
                (entry.name, served)
            })
            .collect();

        let addr = format!("{}:{}", config.host, config.port);
        let listener = api::listen(&addr)
            .await
            .map_err(|source| AgentServerError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let metrics_listener =
            match config.metrics_listen.as_str() {
                "" => None,
                addr => Some(TcpListener::bind(addr).await.map_err(|source| {
                    AgentServerError::Bind {
                        addr: addr.to_owned(),
                        source,
                    }
                })?),
            };
        crate::agents::warm::load_in_background(loaders);
        let max_inflight = config.max_inflight.max(1);
        let state = AgentServerState {
            agents: Arc::new(agents),
            token_hash: AgentServerState::hash_token(&token),
            slots: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            retry_after_s: config.retry_after_s,
            cpu: CpuPool::new(settings.orchestrator.cpu_slots()),
            limits: Arc::new(settings.limits.clone()),
            sandbox_agents: Arc::new(sandbox_agents),
            lifecycle: Lifecycle::default(),
            body_limit: config.body_limit_bytes,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            connections: api::Connections {
                max_head_bytes: settings.server.max_head_bytes,
                header_timeout: Duration::from_millis(settings.server.header_timeout_ms),
            },
            drain_delay: Duration::from_millis(config.drain_delay_ms),
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The agents it serves.
    pub fn agents(&self) -> Vec<String> {
        self.state.agents.keys().cloned().collect()
    }

    /// Serves until `shutdown` resolves; then readiness turns 503, the listener closes after
    /// the drain delay, and requests in flight finish (each bounded by its deadline) within the
    /// shutdown timeout.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self {
            listener,
            metrics_listener,
            state,
            connections,
            drain_delay,
            shutdown_timeout,
        } = self;
        let metrics = api::MetricsServer::start(metrics_listener);
        let draining = api::Draining {
            lifecycle: state.lifecycle.clone(),
            delay: drain_delay,
            timeout: shutdown_timeout,
        };
        let router = api::agent_router(state);
        api::serve_until_drained(listener, router, connections, draining, shutdown, || {
            tracing::info!("shutting down: readiness is 503, requests in flight finish");
        })
        .await;
        drop(metrics);
        tracing::info!("stopped");
    }
}
