//! The application: built from settings, bound to a port (0 picks a free one), run until the
//! shutdown future it is given resolves.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::agents::{AgentRegistry, Kinds, RegistryError};
use crate::api::{self, Admission, AppState, Lifecycle};
use crate::auth::{Authenticator, KeyManager};
use crate::capture::CaptureLinks;
use crate::challenges::Challenges;
use crate::config::Settings;
use crate::orchestrator::{Durability, Maintenance, Orchestrator, PlanError, Policy};
use crate::reviews::{ReviewPolicy, Reviews};
use crate::store::{self, BlobError, Blobs, KeyStore, StoreError, Stores};

use crate::webhooks::{self, Dispatcher};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid agent configuration")]
    Agents(#[from] RegistryError),
    #[error("invalid agent configuration")]
    Plan(#[from] PlanError),
    #[error("cannot open the session store")]
    Store(#[from] StoreError),
    #[error("cannot open the blob directory")]
    Blobs(#[from] BlobError),
    #[error("invalid auth settings")]
    Auth(#[from] crate::auth::BootstrapError),
    #[error("invalid webhook settings")]
    Webhooks(#[from] webhooks::PolicyError),
    #[error("invalid review settings: {0}")]
    Review(String),
    #[error("invalid challenge settings: {0}")]
    Challenges(String),
    #[error("invalid capture settings: {0}")]
    Capture(String),
    #[error("invalid web settings: {0}")]
    Web(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, instance.
pub struct Application {
    listener: TcpListener,
    /// `GET /metrics`, apart from the API (`metrics.listen`).
    metrics_listener: Option<TcpListener>,
    keys: Arc<dyn KeyStore>,
    state: AppState,
    drain_delay: Duration,
    connections: api::Connections,
    shutdown_timeout: Duration,
    maintenance: Maintenance,
    dispatcher: Dispatcher,
    /// How long the dispatcher's attempts in flight may take to finish at shutdown.
    webhook_timeout: Duration,
}

impl Application {
    /// The service on the built-in agent kinds.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, &Kinds::builtin()).await
    }

    /// The service with the agent kinds `kinds` (the built-in ones and a library user's own).
    pub async fn build_with(settings: Settings, kinds: &Kinds) -> Result<Self, StartupError> {
        let policy = Arc::new(webhooks::Policy::from_settings(&settings.webhooks)?);
        let (orchestrator, stores, agent_reasons) = build_parts(&settings, kinds).await?;
        let review_policy =
            ReviewPolicy::new(&settings.review, &agent_reasons).map_err(StartupError::Review)?;
        let keys = stores.keys.clone();
        let clock = webhooks::Clock::start();
        let dispatcher = Dispatcher::new(
            stores.webhooks.clone(),
            stores.sessions.clone(),
            policy.clone(),
            clock,
        );
        let auth = &settings.auth;
        let bootstrap = (!auth.bootstrap_key.is_empty())
            .then_some((auth.bootstrap_key.as_str(), auth.bootstrap_tenant.as_str()));
        if bootstrap.is_some() {
            tracing::warn!(
                tenant = %auth.bootstrap_tenant,
                "auth.bootstrap_key is set: a key from configuration acts for its tenant with \
                 every scope, and is revoked only by removing it"
            );
        }
        let authenticator = Authenticator::new(
            keys.clone(),
            Duration::from_secs(auth.cache_ttl_s),
            auth.rate_limit_per_minute,
            bootstrap,
        )?;
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = api::listen(&addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let metrics_listener = match settings.metrics.listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind {
                        addr: addr.to_owned(),
                        source,
                    })?,
            ),
        };
        let docs_script = read_docs_script(&settings.docs.assets_dir);
        let state = AppState {
            orchestrator,
            auth: Arc::new(authenticator),
            admission: Admission::new(
                settings.server.max_inflight_sessions,
                settings.server.retry_after_s,
            ),
            lifecycle: Lifecycle::default(),
            limits: Arc::new(settings.limits.clone()),
            webhooks: webhooks::Webhooks::new(stores.webhooks, policy.clone(), clock),
            reviews: Reviews::new(
                stores.reviews,
                stores.sessions.clone(),
                keys.clone(),
                review_policy,
            ),
            body_limit: settings.server.body_limit_bytes,
            body_timeout: Duration::from_millis(settings.server.body_timeout_ms),
            docs_script,
            capture_url: settings.capture.public_url.clone(),
            pages: api::PageHeaders::new(&settings.web).map_err(StartupError::Web)?,
        };
        Ok(Self {
            listener,
            metrics_listener,
            keys,
            state,
            drain_delay: Duration::from_millis(settings.server.drain_delay_ms),
            connections: api::Connections {
                max_head_bytes: settings.server.max_head_bytes,
                header_timeout: Duration::from_millis(settings.server.header_timeout_ms),
            },
            shutdown_timeout: Duration::from_millis(settings.server.shutdown_timeout_ms),
            maintenance: Maintenance {
                heartbeat: Duration::from_millis(settings.store.heartbeat_ms),
                lease: Duration::from_millis(settings.store.lease_ms),
                retention: settings.retention.clone(),
            },
            dispatcher,
            webhook_timeout: policy.timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Where `GET /metrics` answers, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The API keys of this instance's store, for in-process callers (tests, tools).
    pub fn keys(&self) -> KeyManager {
        KeyManager::new(self.keys.clone())
    }

    /// Tells whether (and when) the instance starts draining.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.state.lifecycle
    }

    /// The orchestrator behind the API, for in-process callers (benchmarks, tests).
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.state.orchestrator
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503 and new sessions are
    /// refused at once; the listener closes after `server.drain_delay_ms`; open connections get
    /// `server.shutdown_timeout_ms` more to finish; running sessions finish (each bounded by its
    /// deadline); then this returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            metrics_listener,
            keys: _,
            state,
            drain_delay,
            connections,
            shutdown_timeout,
            maintenance,
            dispatcher,
            webhook_timeout,
        } = self;
        let orchestrator = state.orchestrator.clone();
        let lifecycle = state.lifecycle.clone();
        let metrics = api::MetricsServer::start(metrics_listener);
        // Heartbeat, recovery, delayed completions and retention; it runs until every session
        // has drained, so that no other instance takes this one's sessions for orphans.
        let maintain = tokio::spawn(state.orchestrator.clone().maintain(maintenance));
        // Webhooks, until every session has drained (their completions write messages).
        let stop_dispatch = tokio_util::sync::CancellationToken::new();
        let mut dispatch = tokio::spawn(Arc::new(dispatcher).supervise(stop_dispatch.clone()));
        let review_metrics = tokio::spawn(state.reviews.clone().watch(stop_dispatch.clone()));

        let router = api::router(state.clone());
        let draining = api::Draining {
            lifecycle,
            delay: drain_delay,
            timeout: shutdown_timeout,
        };
        api::serve_until_drained(listener, router, connections, draining, shutdown, || {
            tracing::info!(
                running_sessions = orchestrator.running(),
                drain_delay_ms = drain_delay.as_millis() as u64,
                "shutting down: readiness is 503, new sessions are refused"
            );
        })
        .await;
        state.orchestrator.drain().await;
        state.orchestrator.retry_pending().await;
        // Attempts in flight finish (each bounded); what is left waits in the store.
        stop_dispatch.cancel();
        let finish = webhook_timeout + Duration::from_secs(1);
        if tokio::time::timeout(finish, &mut dispatch).await.is_err() {
            dispatch.abort();
        }
        maintain.abort();
        review_metrics.abort();
        drop(metrics);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Redoc's script for `GET /docs`, read once; its absence only costs the reference page.
fn read_docs_script(dir: &std::path::Path) -> Option<bytes::Bytes> {
    let path = dir.join(api::DOCS_SCRIPT_FILE);
    match std::fs::read(&path) {
        Ok(script) => Some(script.into()),
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                error = %error,
                "no script for the API reference page (/docs): run scripts/assets.sh"
            );
            None
        }
    }
}

/// The agents, the plan, the store and the policy, as configured.
///
/// Model files are checked now; the models themselves load on the blocking pool, and the
/// orchestrator refuses sessions (readiness says `models_loading`) until they have. A model that
/// fails to load is logged and keeps the instance unready: it never takes traffic.
pub async fn build_orchestrator(settings: &Settings) -> Result<Orchestrator, StartupError> {
    build_orchestrator_with(settings, &Kinds::builtin()).await
}

/// As [`build_orchestrator`], with the agent kinds `kinds`.
pub async fn build_orchestrator_with(
    settings: &Settings,
    kinds: &Kinds,
) -> Result<Orchestrator, StartupError> {
    Ok(build_parts(settings, kinds).await?.0)
}

/// The orchestrator, the stores of its backend, and every reason code its agents report.
async fn build_parts(
    settings: &Settings,
    kinds: &Kinds,
) -> Result<(Orchestrator, Stores, BTreeSet<String>), StartupError> {
    let mut registry = AgentRegistry::build(settings, kinds)?;
    let agent_reasons = registry.reasons().clone();
    let unreported: Vec<&str> = settings
        .policy
        .decline_on
        .iter()
        .filter(|code| !registry.reasons().contains(*code))
        .map(String::as_str)
        .collect();
    if !unreported.is_empty() {
        tracing::warn!(
            codes = %unreported.join(","),
            "policy.decline_on names reason codes that no configured agent reports; a typo here \
             sends a decline to review"
        );
    }
    let loaders = registry.take_loaders();
    let stores = store::open(&settings.store).await?;
    // A memory store dies with the process, so there is nothing to re-run inputs for.
    let blobs = if settings.store.url.starts_with("memory:") {
        None
    } else {
        Some(Blobs::open(
            &settings.store.blob_dir,
            settings.store.sync_inputs(),
        )?)
    };
    let durability = Durability {
        blobs,
        input_limits: settings.limits.images(),
        poll_interval: Duration::from_millis(settings.store.poll_interval_ms),
        idempotency_ttl: chrono::Duration::hours(
            i64::try_from(settings.idempotency.ttl_hours).unwrap_or(i64::MAX / 3_600_000),
        ),
    };
    let orchestrator = Orchestrator::new(
        registry,
        &settings.orchestrator,
        Policy::new(&settings.policy),
        stores.sessions.clone(),
        durability,
    )?
    .with_challenges(Arc::new(
        Challenges::new(
            &settings.challenges,
            stores.challenges.clone(),
            crate::clock::Clock::start(),
        )
        .map_err(StartupError::Challenges)?,
    ))
    .with_capture(Arc::new(
        CaptureLinks::new(
            &settings.capture,
            settings.limits.max_reference_len,
            stores.capture.clone(),
            crate::clock::Clock::start(),
        )
        .map_err(StartupError::Capture)?,
    ));
    let plan = orchestrator.plan();
    for node in plan.nodes() {
        tracing::info!(
            agent = %node.name,
            depends_on = ?node.deps.iter().map(|&d| &plan.nodes()[d].name).collect::<Vec<_>>(),
            timeout_ms = node.timeout.as_millis() as u64,
            "agent configured"
        );
    }
    // Only once everything else has been checked: a start-up that fails loads no model.
    crate::agents::warm::load_in_background(loaders);
    Ok((orchestrator, stores, agent_reasons))
}
