//! One `Settings` type, layered: the embedded `config/default.toml` < `config/$KYC_ENV.toml`
//! < a `--config` file < `KYC__SECTION__KEY` environment variables.
//!
//! The defaults are compiled into the binary so that it serves with no file on disk; the other
//! layers only ever override keys.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::domain::ImageLimits;

/// The defaults every other layer overrides.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every agent a sandbox agent: the service's test mode.
pub const SANDBOX_TOML: &str = include_str!("../config/sandbox.toml");

/// Everything the service reads from configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub limits: LimitSettings,
    pub orchestrator: OrchestratorSettings,
    pub policy: PolicySettings,
    pub store: StoreSettings,
    pub idempotency: IdempotencySettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub docs: DocsSettings,
    pub retention: RetentionSettings,
    pub webhooks: WebhookSettings,
    pub review: ReviewSettings,
    pub challenges: ChallengeSettings,
    pub capture: CaptureSettings,
    pub web: WebSettings,
    pub telemetry: TelemetrySettings,
    pub models: ModelSettings,
    /// `kyc-orchestrator agent-server`: the built-in agents served to other instances.
    pub agent_server: AgentServerSettings,
    /// The plan: agent name to its settings. A BTreeMap so the plan is built in a stable order.
    pub agents: BTreeMap<String, AgentSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub max_inflight_sessions: usize,
    pub body_limit_bytes: usize,
    pub retry_after_s: u64,
    pub drain_delay_ms: u64,
    pub body_timeout_ms: u64,
    /// How long a request's head (status line and headers) may take to arrive; 0: no limit.
    pub header_timeout_ms: u64,
    /// The largest request head read (status line and headers), at least 8192.
    pub max_head_bytes: usize,
    pub shutdown_timeout_ms: u64,
}

/// Limits applied to a request before any agent runs.
#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub max_selfie_frames: usize,
    pub max_image_bytes: usize,
    pub max_image_pixels: u64,
    pub max_image_side: u32,
    pub max_reference_len: usize,
}

impl LimitSettings {
    /// The limits every image is checked against.
    pub fn images(&self) -> ImageLimits {
        ImageLimits {
            max_bytes: self.max_image_bytes,
            max_pixels: self.max_image_pixels,
            max_side: self.max_image_side,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrchestratorSettings {
    pub session_deadline_ms: u64,
    pub fail_fast: bool,
    /// 0 means one slot per available core.
    pub cpu_slots: usize,
    /// Whether sandbox agents may be configured. Off in production: a sandbox agent lets the
    /// client choose its own outcome.
    pub allow_sandbox_agents: bool,
    /// A session left running by a stopped instance is re-run if it was created less than this
    /// long ago; older ones are completed as `review` with reason `interrupted`.
    pub recovery_window_ms: u64,
}

impl OrchestratorSettings {
    pub fn session_deadline(&self) -> Duration {
        Duration::from_millis(self.session_deadline_ms)
    }

    /// The number of CPU-bound agent jobs allowed to run at once.
    pub fn cpu_slots(&self) -> usize {
        if self.cpu_slots > 0 {
            return self.cpu_slots;
        }
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PolicySettings {
    pub decline_on: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    pub url: String,
    pub memory_capacity: usize,
    /// Where session inputs (images) are kept for recovery until retention erases them.
    pub blob_dir: PathBuf,
    /// Sync each input file (and its directory) before the session is accepted. Unset: as
    /// durable as the session's row (see [`StoreSettings::sync_inputs`]).
    #[serde(default)]
    pub blob_fsync: Option<bool>,
    pub max_connections: u32,
    /// PostgreSQL: the group commit's connections, each committing a batch while the next
    /// gathers (SQLite has one writer whatever this says). Apart from `max_connections`.
    pub writer_connections: u32,
    /// How long a query waits for a connection before the store counts as unavailable.
    pub acquire_timeout_ms: u64,
    /// How long one commit may take before the store counts as unavailable; 0: no limit.
    pub write_timeout_ms: u64,
    /// Every other store call (reads, erasures, decisions, key and webhook calls) failing as
    /// "store unavailable" without an answer within this; 0: no limit.
    pub read_timeout_ms: u64,
    /// Group commit: how long the writer waits for more writes before committing.
    pub flush_interval_us: u64,
    pub max_batch: usize,
    pub sqlite_synchronous: SqliteSynchronous,
    /// How often this instance says it is alive (and checks the store answers).
    pub heartbeat_ms: u64,
    /// An instance silent this long has stopped: its running sessions are recovered.
    pub lease_ms: u64,
    /// How often a follower of a session running on another instance reads new events.
    pub poll_interval_ms: u64,
}

impl StoreSettings {
    /// Whether a session's input files are synced before it is accepted: `blob_fsync` if set,
    /// else as durable as the row that names them. SQLite with `synchronous = normal` commits
    /// without an fsync, so the row survives a crash of the process but not a power cut; input
    /// files written without one are in the same case, and an fsync of theirs would buy nothing
    /// (after a power cut the row naming them may be gone) at the price of most of a session's
    /// cost in the store. With `full`, and on PostgreSQL, a commit is on disk when it returns,
    /// so the inputs are too.
    pub fn sync_inputs(&self) -> bool {
        self.blob_fsync.unwrap_or_else(|| {
            !(self.url.starts_with("sqlite:")
                && self.sqlite_synchronous == SqliteSynchronous::Normal)
        })
    }
}

/// SQLite's `synchronous` pragma in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Survives a process crash; the last commits may be lost on a power cut.
    Normal,
    /// Survives a power cut too: one fsync per commit.
    Full,
}

impl SqliteSynchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// API keys on every `/v1` route.
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    /// Requests per minute per key, per instance (a token bucket); 0: unlimited.
    pub rate_limit_per_minute: u32,
    /// How long a key's record is cached; at most 60 (the bound on how late a revocation made
    /// elsewhere reaches this instance).
    pub cache_ttl_s: u64,
    /// A key accepted without being stored, for `bootstrap_tenant` with every scope; empty:
    /// none. For `memory://` and for containers where nobody runs `keys create` first.
    pub bootstrap_key: String,
    pub bootstrap_tenant: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("cache_ttl_s", &self.cache_ttl_s)
            .field(
                "bootstrap_key",
                &(!self.bootstrap_key.is_empty()).then_some("<redacted>"),
            )
            .field("bootstrap_tenant", &self.bootstrap_tenant)
            .finish()
    }
}

/// The API reference page.
#[derive(Debug, Clone, Deserialize)]
pub struct DocsSettings {
    /// Where `scripts/assets.sh` puts Redoc's script; relative to the working directory.
    pub assets_dir: PathBuf,
}

/// `kyc-orchestrator agent-server` (README, "Remote agents").
#[derive(Clone, Deserialize)]
pub struct AgentServerSettings {
    pub host: String,
    pub port: u16,
    /// The bearer token callers must send; the server refuses to start without one. From the
    /// environment (`KYC__AGENT_SERVER__TOKEN`) or `token_file`, never from a file under
    /// version control.
    pub token: String,
    /// A file holding the token (surrounding whitespace trimmed), instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Requests in flight at once; the next is answered `503` with `Retry-After` at once.
    pub max_inflight: usize,
    pub retry_after_s: u64,
    /// Whole request body: the session's images and the dependencies' outputs (PNG), in base64.
    pub body_limit_bytes: usize,
    /// As `server.drain_delay_ms` and `server.shutdown_timeout_ms`, for the agent server.
    pub drain_delay_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// `HOST:PORT` of its own `GET /metrics`; empty: none.
    pub metrics_listen: String,
}

impl std::fmt::Debug for AgentServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentServerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

/// The Prometheus endpoint's own listener, apart from the API's.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// `HOST:PORT` of `GET /metrics`; empty: no metrics endpoint.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    /// How long an `Idempotency-Key` names its session.
    pub ttl_hours: u64,
}

/// How long personal data is kept. 0 keeps it until it is erased through the API.
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    pub images_days: u64,
    pub personal_data_days: u64,
    /// Days after its review case opened that a session waiting for a decision keeps its data
    /// past the two periods above; 0: retention does not wait for reviews.
    pub review_hold_days: u64,
    pub sweep_interval_s: u64,
    /// Sessions erased per store call, so a sweep never holds the database for long.
    pub batch_size: usize,
}

/// Webhook delivery. The durations are humantime text (`15s`, `5d`), checked when the service
/// starts (`crate::webhooks::Policy`).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// Comma-separated delays, one per attempt: `0s,5s,5m,...`.
    pub retry_schedule: String,
    pub timeout: String,
    pub rotation_grace: String,
    pub disable_after: String,
    pub allow_insecure_http: bool,
    pub allow_private_targets: bool,
    pub max_in_flight: usize,
    pub max_per_endpoint: usize,
    pub poll_interval_ms: u64,
    pub max_endpoints: usize,
    /// Days a message with nothing left to send is kept (for the deliveries list, resend and
    /// recover); 0 keeps messages for ever.
    pub keep_days: u64,
}

/// Manual review of sessions the agents decided `review` (README, "Manual review").
#[derive(Debug, Clone, Deserialize)]
pub struct ReviewSettings {
    /// Two different reviewers must agree before a review resolves.
    pub four_eyes: bool,
    /// Reason codes a reviewer may give, besides every code the configured agents report.
    pub reasons: Vec<String>,
}

/// Liveness challenges (README, "Liveness challenges").
#[derive(Debug, Clone, Deserialize)]
pub struct ChallengeSettings {
    /// The steps a challenge is drawn from.
    pub steps: Vec<crate::domain::ChallengeStep>,
    /// Steps per challenge.
    pub length: usize,
    /// Seconds from issue within which a session must answer.
    pub ttl_s: u64,
}

/// Hosted capture links (README, "Hosted capture").
#[derive(Debug, Clone, Deserialize)]
pub struct CaptureSettings {
    /// Seconds a link lasts from when it is made.
    pub ttl_s: u64,
    /// The service's address as applicants' browsers reach it (`https://kyc.example.com`), the
    /// start of every link's URL. Empty: taken from each request's `Host` and
    /// `X-Forwarded-Proto` headers.
    pub public_url: String,
}

/// The pages the service serves (the capture page and the console).
#[derive(Debug, Clone, Deserialize)]
pub struct WebSettings {
    /// Who may show the pages in a frame: the sources of the Content-Security-Policy's
    /// `frame-ancestors` (`'none'`, `'self'`, or origins such as `https://app.example.com`).
    pub frame_ancestors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    pub level: String,
}

/// Where the real agents' model files are.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSettings {
    /// Relative to the working directory; `scripts/models.sh` fills it.
    pub dir: PathBuf,
}

/// One agent of the plan. What its tables hold is the agent kind's own business: the config
/// knows no agent, and the registry parses the kind's table as the kind's settings type.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentSettings {
    /// Which implementation: a kind the registry knows (`doc_capture`, `ocr`, `liveness`,
    /// `face_match`, `sandbox`, or one a library user registers).
    pub kind: String,
    pub timeout_ms: u64,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The settings of most kinds; each kind documents its own keys and refuses unknown ones.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Tables a kind reads under a name of its own (a sandbox agent's `sandbox`), so that a file
    /// or variable that switches an agent's kind leaves the other kind's `settings` alone
    /// instead of mixing the two. The registry refuses a table no kind reads.
    #[serde(flatten)]
    pub tables: BTreeMap<String, serde_json::Value>,
}

impl AgentSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A secret given inline (from the environment) or as a file, whose surrounding whitespace is
/// trimmed: how every token the settings hold is read.
pub fn secret(inline: &str, file: Option<&Path>) -> std::io::Result<String> {
    match file {
        Some(path) => Ok(std::fs::read_to_string(path)?.trim().to_owned()),
        None => Ok(inline.to_owned()),
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration")]
    Invalid(#[from] config::ConfigError),
}

impl Settings {
    /// The embedded defaults alone, with no file or environment layer.
    pub fn defaults() -> Self {
        Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .expect("the embedded config/default.toml is valid")
    }

    /// The defaults with every agent a sandbox agent (`config/sandbox.toml`, also embedded):
    /// what the orchestration tests and the benchmarks run on.
    pub fn sandbox() -> Self {
        Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(SANDBOX_TOML, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .expect("the embedded config/sandbox.toml is valid")
    }

    /// Every layer, as the binary loads them, reading the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(config_file, std::env::var("KYC_ENV").ok(), None)
    }

    /// Every layer, with the `KYC__*` variables taken from `env` instead of the process
    /// environment when it is given.
    pub fn load_from(
        config_file: Option<&Path>,
        kyc_env: Option<String>,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(name) = kyc_env {
            let path = PathBuf::from("config").join(format!("{name}.toml"));
            if !path.exists() {
                return Err(SettingsError::MissingFile(path));
            }
            builder = builder.add_source(File::from(path));
        }
        if let Some(path) = config_file {
            if !path.exists() {
                return Err(SettingsError::MissingFile(path.to_path_buf()));
            }
            builder = builder.add_source(File::from(path));
        }
        builder = builder.add_source(
            Environment::with_prefix("KYC")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("policy.decline_on")
                .with_list_parse_key("challenges.steps")
                .with_list_parse_key("web.frame_ancestors")
                .source(env),
        );
        Ok(builder.build()?.try_deserialize()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_describe_the_default_plan() {
        let settings = Settings::defaults();
        assert_eq!(settings.server.port, 8009);
        assert_eq!(settings.orchestrator.session_deadline_ms, 8000);
        let names: Vec<_> = settings.agents.keys().map(String::as_str).collect();
        assert_eq!(names, ["doc_capture", "face_match", "liveness", "ocr"]);
        assert_eq!(
            settings.agents["face_match"].depends_on,
            ["doc_capture", "liveness"]
        );
    }

    #[test]
    fn environment_variables_override_the_defaults() {
        let env = [
            ("KYC__SERVER__PORT", "9100"),
            ("KYC__ORCHESTRATOR__FAIL_FAST", "false"),
            ("KYC__ORCHESTRATOR__SESSION_DEADLINE_MS", "2500"),
            ("KYC__POLICY__DECLINE_ON", "liveness_failed,face_mismatch"),
            ("KYC__AGENTS__OCR__TIMEOUT_MS", "1234"),
            ("KYC__WEBHOOKS__RETRY_SCHEDULE", "0s,1s,2s"),
            ("KYC__WEBHOOKS__TIMEOUT", "5s"),
            ("KYC__CHALLENGES__STEPS", "turn_left,look_up"),
            ("KYC__CHALLENGES__LENGTH", "4"),
            ("KYC__CHALLENGES__TTL_S", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::load_from(None, None, Some(env)).unwrap();
        assert_eq!(settings.server.port, 9100);
        assert!(!settings.orchestrator.fail_fast);
        assert_eq!(settings.orchestrator.session_deadline_ms, 2500);
        assert_eq!(
            settings.policy.decline_on,
            ["liveness_failed", "face_mismatch"]
        );
        assert_eq!(settings.agents["ocr"].timeout_ms, 1234);
        assert_eq!(settings.agents["ocr"].depends_on, ["doc_capture"]);
        assert_eq!(settings.webhooks.retry_schedule, "0s,1s,2s");
        assert_eq!(settings.webhooks.timeout, "5s");
        use crate::domain::ChallengeStep::{LookUp, TurnLeft};
        assert_eq!(settings.challenges.steps, [TurnLeft, LookUp]);
        assert_eq!(settings.challenges.length, 4);
        assert_eq!(settings.challenges.ttl_s, 60);
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error() {
        let err = Settings::load_from(
            Some(Path::new("nowhere.toml")),
            None,
            Some(Default::default()),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration file nowhere.toml does not exist"
        );
    }

    #[test]
    fn the_production_file_parses_over_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
        let settings = Settings::load_from(Some(&path), None, Some(Default::default())).unwrap();
        assert_eq!(settings.server.host, "0.0.0.0");
        assert_eq!(settings.server.port, 8009);
    }

    #[test]
    fn zero_cpu_slots_means_one_per_core() {
        let mut settings = Settings::defaults().orchestrator;
        settings.cpu_slots = 0;
        assert!(settings.cpu_slots() >= 1);
        settings.cpu_slots = 3;
        assert_eq!(settings.cpu_slots(), 3);
    }
}
