//! One way to start the service and talk to it, shared by every test area.
//!
//! `TEST_LOG=1` prints the service's logs; otherwise they go to a buffer that tests can read.

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kyc_orchestrator::agents::Kinds;
use kyc_orchestrator::api::Lifecycle;
use kyc_orchestrator::auth::{ApiKey, KeyManager, NewKey};
use kyc_orchestrator::config::LogFormat;
use kyc_orchestrator::domain::{Mode, Owner};
use kyc_orchestrator::orchestrator::Orchestrator;
use kyc_orchestrator::{Application, Settings, telemetry};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every log line the service wrote in this process (when `TEST_LOG` is not set).
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// The lines written so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
            .collect()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the process's subscriber once: debug-level JSON into a buffer, or to stdout.
pub fn logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let mut settings = Settings::defaults().telemetry;
        settings.level = "kyc_orchestrator=debug,info".into();
        settings.format = LogFormat::Json;
        let buffer = LogBuffer::default();
        if std::env::var_os("TEST_LOG").is_some() {
            telemetry::init(&settings, std::io::stdout);
        } else {
            let sink = buffer.clone();
            telemetry::init(&settings, move || sink.clone());
        }
        buffer
    })
    .clone()
}

/// The tenant whose test key every [`TestApp`]'s client sends.
pub const TENANT: &str = "acme";

/// A running instance on a random port, with a client that sends a test key of [`TENANT`].
pub struct TestApp {
    pub address: String,
    /// Where `GET /metrics` answers.
    pub metrics_address: String,
    pub client: reqwest::Client,
    /// The key the client sends.
    pub key: ApiKey,
    /// The keys of the instance's store.
    pub keys: KeyManager,
    pub orchestrator: Orchestrator,
    pub lifecycle: Lifecycle,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// The default configuration (sandbox agents), on port 0.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An hour, in milliseconds: a deadline or timeout no test races against.
pub const HOUR_MS: u64 = 3_600_000;

/// The default configuration with a session deadline and agent timeouts of an hour, for tests
/// that act while a session is still running: under paused time the clock jumps to the next
/// timer whenever the runtime idles, so the timers must lie far beyond anything the test awaits.
pub async fn spawn_patient_app() -> TestApp {
    spawn_app_with(|s| {
        s.orchestrator.session_deadline_ms = HOUR_MS;
        for agent in s.agents.values_mut() {
            agent.timeout_ms = HOUR_MS;
        }
    })
    .await
}

/// The defaults every test starts from: port 0, and the in-memory store, so that tests of the
/// API and the orchestration (many on paused time, which a database's own threads cannot
/// follow) leave no files behind. `durable.rs` runs its tests on SQLite and PostgreSQL.
fn test_settings(configure: impl FnOnce(&mut Settings)) -> Settings {
    logs();
    let mut settings = Settings::sandbox();
    settings.server.port = 0;
    settings.metrics.listen = "127.0.0.1:0".into();
    settings.store.url = "memory://".into();
    settings.auth.rate_limit_per_minute = 0;
    configure(&mut settings);
    settings
}

/// The default configuration changed by `configure`, on port 0.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_kinds(&Kinds::builtin(), configure).await
}

/// As [`spawn_app_with`], with the agent kinds `kinds` to configure agents from.
pub async fn spawn_app_with_kinds(kinds: &Kinds, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let settings = test_settings(configure);
    let app = Application::build_with(settings, kinds)
        .await
        .expect("the app builds");
    let address = format!("http://{}", app.local_addr());
    let metrics_address = format!("http://{}", app.metrics_addr().expect("metrics listen"));
    let keys = app.keys();
    let key = test_key(&keys).await;
    let orchestrator = app.orchestrator().clone();
    let lifecycle = app.lifecycle().clone();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop.await;
    }));
    TestApp {
        address,
        metrics_address,
        client: client_with(&key),
        key,
        keys,
        orchestrator,
        lifecycle,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// The default plan's real agents, with the models `scripts/models.sh` fetched, once readiness
/// says they have loaded.
pub async fn spawn_real_agents_app() -> TestApp {
    spawn_real_agents_app_with(|_| {}).await
}

/// As [`spawn_real_agents_app`], configured further by `configure`.
pub async fn spawn_real_agents_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(|settings| {
        settings.agents = Settings::defaults().agents;
        settings.models.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        configure(settings);
    })
    .await;
    eventually(
        "readiness 200 (the models loaded)",
        std::time::Duration::from_secs(30),
        || async { (app.get("/health/ready").await.status() == 200).then_some(()) },
    )
    .await;
    app
}

/// A new test key of [`TENANT`] with every scope.
pub async fn test_key(keys: &KeyManager) -> ApiKey {
    keys.create(NewKey::new(TENANT.parse().unwrap(), Mode::Test))
        .await
        .expect("a key is created")
        .0
}

/// A client with a test key of another tenant than [`TENANT`]: what must see nothing of the
/// app's own client's data.
pub async fn other_tenant_client(app: &TestApp) -> reqwest::Client {
    let (key, _) = app
        .keys
        .create(NewKey::new("other-bank".parse().unwrap(), Mode::Test))
        .await
        .expect("a key is created");
    client_with(&key)
}

/// A client that sends `key` with every request.
/// `GET url` without credentials, as `reqwest::get` does, on a client from `http::client()`.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds")
        .get(url)
        .send()
        .await
}

pub fn client_with(key: &ApiKey) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose())).unwrap();
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    kyc_orchestrator::http::client()
        .default_headers(headers)
        .build()
        .unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The tenant and mode of the client's key.
    pub fn owner(&self) -> Owner {
        Owner {
            tenant: TENANT.parse().unwrap(),
            mode: Mode::Test,
        }
    }

    /// `GET /metrics` on the metrics listener.
    pub async fn metrics(&self) -> String {
        get(format!("{}/metrics", self.metrics_address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POSTs a JSON session without asking for the stream.
    pub async fn post_session(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/sessions"))
            .json(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// POSTs a JSON session with a raw body and content type.
    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/sessions"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// POSTs a session asking for its NDJSON stream, and reads the stream to its end.
    pub async fn stream_session(&self, body: &Value) -> Vec<Value> {
        let response = self
            .client
            .post(self.url("/v1/sessions"))
            .header(ACCEPT, "application/x-ndjson")
            .json(body)
            .send()
            .await
            .expect("the request is sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/x-ndjson");
        parse_ndjson(&response.bytes().await.unwrap())
    }

    /// Starts a session (202) and returns its id.
    pub async fn start_session(&self, body: &Value) -> String {
        let response = self.post_session(body).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn get_session(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/sessions/{id}/events[?after=N]`, read to its end.
    pub async fn events(&self, id: &str, after: Option<u64>) -> Vec<Value> {
        let path = match after {
            Some(after) => format!("/v1/sessions/{id}/events?after={after}"),
            None => format!("/v1/sessions/{id}/events"),
        };
        let response = self.client.get(self.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        parse_ndjson(&response.bytes().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// A liveness challenge issued to the client's key (`201`), as JSON.
    pub async fn issue_challenge(&self) -> Value {
        let response = self
            .client
            .post(self.url("/v1/liveness/challenges"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// Sends the shutdown signal and waits until the instance is draining (not stopped).
    pub async fn signal_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.lifecycle.draining().await;
    }

    /// Signals shutdown and waits until the server has drained and stopped.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.signal_shutdown().await;
        self.server
            .take()
            .unwrap()
            .await
            .expect("the server task ends")
    }
}

/// Asks `check` again and again until it gives `Some`, and returns what it gave: how a test waits
/// for a state that comes in its own time (models loading, a database coming back). Panics,
/// naming `what` and the caller's line, when `patience` runs out first, even if one `check` is
/// itself what hangs. Counts time on the runtime's clock, so under paused time `patience` is
/// virtual.
#[track_caller]
pub fn eventually<T, F, Fut>(
    what: &str,
    patience: Duration,
    mut check: F,
) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    const BETWEEN_CHECKS: Duration = Duration::from_millis(20);
    let caller = std::panic::Location::caller();
    async move {
        let poll = async {
            loop {
                if let Some(value) = check().await {
                    return value;
                }
                tokio::time::sleep(BETWEEN_CHECKS).await;
            }
        };
        tokio::time::timeout(patience, poll)
            .await
            .unwrap_or_else(|_| panic!("{caller}: waited {patience:?} for {what}, in vain"))
    }
}

pub fn parse_ndjson(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

/// A small PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Png)
}

/// A small JPEG.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Jpeg)
}

fn encode(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A valid JSON session whose sandbox agents follow `sandbox`.
pub fn session_body(sandbox: Value) -> Value {
    json!({
        "reference": "test-ref-1",
        "selfie": { "frames": [b64(&jpeg(64, 64))] },
        "document": { "type": "passport", "front": b64(&png(96, 64)) },
        "sandbox": sandbox,
    })
}

/// The single event of `kind` for `agent`.
pub fn agent_event<'a>(events: &'a [Value], kind: &str, agent: &str) -> &'a Value {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == kind && e["agent"] == agent)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} for {agent} in {events:#?}");
    found[0]
}

/// The position of the event of `kind` for `agent`.
pub fn position(events: &[Value], kind: &str, agent: &str) -> usize {
    events
        .iter()
        .position(|e| e["type"] == kind && e["agent"] == agent)
        .unwrap_or_else(|| panic!("no {kind} for {agent}"))
}

/// Milliseconds between two events' timestamps.
pub fn millis_between(from: &Value, to: &Value) -> i64 {
    let ts = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).unwrap();
    (ts(to) - ts(from)).num_milliseconds()
}

/// The `session.completed` event: the last one, or followed by a review's events alone.
pub fn completion(events: &[Value]) -> &Value {
    let at = events
        .iter()
        .rposition(|e| e["type"] == "session.completed")
        .unwrap_or_else(|| panic!("no session.completed in {events:#?}"));
    let after = &events[at + 1..];
    assert!(
        after
            .iter()
            .all(|e| e["type"].as_str().is_some_and(|t| t.starts_with("review."))),
        "only a review's events follow session.completed: {after:#?}"
    );
    &events[at]
}

/// A server on a runtime of its own, in a thread, which `kill` drops at once: every task, timer
/// and connection of it ends where it stands, as in a killed process.
pub struct OwnRuntime {
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnRuntime {
    /// Runs `start` on a new runtime with one worker: it gives what the test needs to know of
    /// the server (its address, say) and the future that serves, which runs until `kill`.
    pub fn start<T, Start, Serve>(start: impl FnOnce() -> Start + Send + 'static) -> (T, Self)
    where
        T: Send + 'static,
        Start: Future<Output = (T, Serve)>,
        Serve: Future<Output = ()> + Send + 'static,
    {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (started, serve) = runtime.block_on(start());
            runtime.spawn(serve);
            started_tx.send(started).unwrap();
            let _ = killed.recv();
            runtime.shutdown_background();
        });
        let started = started_rx.recv().expect("the server starts");
        let handle = Self {
            kill: Some(kill),
            thread: Some(thread),
        };
        (started, handle)
    }

    pub fn kill(mut self) {
        drop(self.kill.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// An instance on a runtime of its own, which `crash` kills (see [`OwnRuntime`]).
pub struct CrashableApp {
    pub address: String,
    pub client: reqwest::Client,
    runtime: OwnRuntime,
}

pub fn spawn_crashable_app(configure: impl FnOnce(&mut Settings)) -> CrashableApp {
    let settings = test_settings(configure);
    let ((address, key), runtime) = OwnRuntime::start(move || async move {
        let app = Application::build(settings).await.expect("the app builds");
        let key = test_key(&app.keys()).await;
        let address = format!("http://{}", app.local_addr());
        let serve = async move {
            let _ = app.run_until_stopped(std::future::pending()).await;
        };
        ((address, key), serve)
    });
    CrashableApp {
        address,
        client: client_with(&key),
        runtime,
    }
}

impl CrashableApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn crash(self) {
        self.runtime.kill();
    }
}

/// `../shared/data/PATH` (not part of the project), or `None`, saying so, where it is absent.
pub fn shared_data(path: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(path);
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} is absent", path.display());
        None
    }
}

/// The entries of `dir`, sorted by name; none when it cannot be read.
pub fn sorted_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    entries.sort();
    entries
}

/// A TCP proxy to `target` whose connections can be cut (and refused) and then allowed again:
/// a database that goes away and comes back, as its clients see it.
pub struct TcpProxy {
    address: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    /// While true, nothing is forwarded and nothing is closed: what a half-open connection
    /// looks like to its client.
    stalled: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (stalled, _) = tokio::sync::watch::channel(false);
        let target = target.to_owned();
        let task = tokio::spawn({
            let open = Arc::clone(&open);
            let cuts = cuts.clone();
            let stalled = stalled.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused as it opens
                    }
                    let target = target.clone();
                    let mut cut = cuts.subscribe();
                    let mut stall = stalled.subscribe();
                    tokio::spawn(async move {
                        let stalled_now = *stall.borrow();
                        if stalled_now {
                            // Accepted, and never answered.
                            let _ = cut.changed().await;
                            return;
                        }
                        let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                            _ = async { drop(stall.wait_for(|stalled| *stalled).await) } => {
                                // Both sockets stay open, and nothing moves, until a cut.
                                let _ = cut.changed().await;
                            }
                        }
                    });
                }
            }
        });
        Self {
            address,
            open,
            cuts,
            stalled,
            task,
        }
    }

    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops forwarding without closing anything, on open connections and new ones.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards new connections again; the stalled ones are closed, as a network that comes
    /// back after its flows timed out resets them.
    pub fn unstall(&self) {
        self.stalled.send_replace(false);
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A problem's field errors, as (field, code).
pub fn fields(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
