//! In-process orchestration overhead: what a session costs beyond its agents' own work.
//!
//! Sessions of sandbox agents run straight through the orchestrator (no HTTP, the memory
//! store) in three measurements:
//!
//! 1. **CPU per session** (criterion): one session after another with agents that answer at
//!    once, so the time per session is the orchestrator's own work. Criterion's statistics and
//!    change detection apply to this figure.
//! 2. **Overhead under load**: closed loop at 1, 100, 1,000 and 10,000 sessions in flight, agents
//!    at 50 ms each. Overhead = a session's wall time (from its start to its `session.completed`
//!    being published) minus the critical path of its agents' measured run times, the longest
//!    dependency chain: `max(doc_capture + ocr, max(liveness, doc_capture) + face_match)`.
//!    Memory per in-flight session is the growth of live heap bytes (counted by the allocator
//!    below) and of RSS while the level runs, divided by the sessions in flight.
//! 4. **Authentication** (criterion): what `Authorization: Bearer` costs a request once the
//!    key's record is cached (the SHA-256 of the key, the cache lookup, the scope and the rate
//!    limiter): the price of API keys on the hot path.
//! 3. **Deadline accuracy**: 1,000 sessions in flight whose `ocr` never answers; how long after
//!    its deadline each session completed.
//!
//! Clients start spread over one session's length, as independent clients arrive, so their
//! timers do not all fire on the same tick; every client then starts its next session when its
//! last one ends.
//!
//! Run: `cargo bench --bench overhead`. `KYC_BENCH_SECONDS` sets each level's measurement
//! (default 5); `-- --quick` shortens criterion's part.

use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap::Cap;
use criterion::Criterion;
use hdrhistogram::Histogram;
use kyc_orchestrator::Settings;
use kyc_orchestrator::app::build_orchestrator;
use kyc_orchestrator::auth::{Authenticator, KeyManager, NewKey};
use kyc_orchestrator::domain::{
    Document, DocumentType, ImageData, ImageLimits, NewSession, Selfie,
};
use kyc_orchestrator::domain::{Mode, Owner, Principal, SandboxResult, Scope};
use kyc_orchestrator::orchestrator::Orchestrator;
use kyc_orchestrator::store::MemoryStore;

/// The server's allocator (mimalloc), wrapped to count the bytes live on the heap.
#[global_allocator]
static GLOBAL: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Each agent's simulated latency under load: a 100 ms critical path, as in the HTTP targets.
const AGENT_LATENCY_MS: u64 = 50;
const CONCURRENCY: [usize; 4] = [1, 100, 1_000, 10_000];
const HUNG_SESSIONS: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(1);

/// The default plan on the memory store: this measures orchestration, not a database (the
/// HTTP load generator measures the real stores). `hang` names an agent that never answers.
async fn sandbox_orchestrator(latency_ms: u64, hang: Option<&str>) -> Orchestrator {
    let mut settings = Settings::sandbox();
    settings.store.url = "memory://".into();
    // Completed sessions are kept only briefly, so memory measures the sessions in flight.
    settings.store.memory_capacity = 100;
    settings.orchestrator.session_deadline_ms = DEADLINE.as_millis() as u64;
    for (name, agent) in settings.agents.iter_mut() {
        let result = if hang == Some(name.as_str()) {
            SandboxResult::Hang
        } else {
            SandboxResult::Pass
        };
        let sandbox = agent.tables.entry("sandbox".into()).or_default();
        sandbox["latency_ms"] = latency_ms.into();
        sandbox["cpu_ms"] = 0.into();
        sandbox["result"] = serde_json::to_value(result).expect("a result serialises");
    }
    build_orchestrator(&settings)
        .await
        .expect("the default plan builds")
}

fn request() -> NewSession {
    static IMAGE: OnceLock<ImageData> = OnceLock::new();
    let image = IMAGE
        .get_or_init(|| {
            let mut png = Vec::new();
            image::RgbImage::new(32, 32)
                .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            let limits = ImageLimits {
                max_bytes: 1 << 20,
                max_pixels: 1 << 20,
                max_side: 1024,
            };
            ImageData::parse(Bytes::from(png), &limits).unwrap()
        })
        .clone();
    NewSession {
        reference: None,
        selfie: Selfie::new(vec![image.clone()]).unwrap(),
        document: Document {
            kind: Some(DocumentType::Passport),
            front: image,
            back: None,
        },
        claimed: None,
        sandbox: None,
    }
}

/// What one concurrency level measured.
struct Level {
    sessions: u64,
    per_second: f64,
    /// Microseconds: overhead, or lateness past the deadline.
    micros: Histogram<u64>,
    heap_per_session: f64,
    rss_per_session: f64,
}

/// Runs `concurrency` clients in a closed loop for `measure` after a ramp of one `spread`, and
/// records `sample(outcome)` for every session that started in the measurement window.
async fn closed_loop(
    orchestrator: &Orchestrator,
    concurrency: usize,
    spread: Duration,
    measure: Duration,
    sample: fn(&kyc_orchestrator::orchestrator::SessionOutcome) -> Duration,
) -> Level {
    let heap_before = GLOBAL.allocated();
    let rss_before = rss_bytes();
    let start = Instant::now();
    let measure_from = start + spread;
    let end = measure_from + measure;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (orchestrator, histogram) = (orchestrator.clone(), Arc::clone(&histogram));
        let first = start + spread.mul_f64(i as f64 / concurrency as f64);
        clients.spawn(async move {
            tokio::time::sleep_until(first.into()).await;
            while Instant::now() < end {
                let began = Instant::now();
                let started = orchestrator
                    .start(request(), &principal(), None)
                    .await
                    .unwrap();
                let outcome = started.outcome.await.unwrap();
                if began >= measure_from {
                    let micros = sample(&outcome).as_micros() as u64;
                    histogram.lock().unwrap().record(micros.max(1)).unwrap();
                }
            }
        });
    }
    // Memory in the middle of the window, with every client's session in flight.
    tokio::time::sleep_until((measure_from + measure / 2).into()).await;
    let heap = GLOBAL.allocated().saturating_sub(heap_before);
    let rss = rss_bytes().saturating_sub(rss_before);
    while clients.join_next().await.is_some() {}
    let micros = Arc::try_unwrap(histogram).unwrap().into_inner().unwrap();
    Level {
        sessions: micros.len(),
        per_second: micros.len() as f64 / measure.as_secs_f64(),
        micros,
        heap_per_session: heap as f64 / concurrency as f64,
        rss_per_session: rss as f64 / concurrency as f64,
    }
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn measure_seconds() -> Duration {
    let seconds = std::env::var("KYC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds)
}

/// Criterion: one session at a time, agents answering at once.
fn cpu_per_session(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let orchestrator = runtime.block_on(sandbox_orchestrator(0, None));
    c.bench_function("session_cpu", |b| {
        b.to_async(runtime).iter(|| async {
            let started = orchestrator
                .start(request(), &principal(), None)
                .await
                .unwrap();
            started.outcome.await.unwrap()
        });
    });
}

/// The key every benchmark session is started with.
fn principal() -> Principal {
    Principal {
        owner: Owner {
            tenant: "bench".parse().unwrap(),
            mode: Mode::Test,
        },
        key_id: "key_bench".parse().unwrap(),
    }
}

/// Criterion: one request's authentication with its key cached.
fn authentication(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let store = Arc::new(MemoryStore::new(1));
    let auth = Authenticator::new(store.clone(), Duration::from_secs(30), 0, None).unwrap();
    let (key, _) = runtime
        .block_on(KeyManager::new(store).create(NewKey::new("bench".parse().unwrap(), Mode::Test)))
        .unwrap();
    let header = format!("Bearer {}", key.expose()).into_bytes();
    c.bench_function("authenticate_cached", |b| {
        b.to_async(runtime).iter(|| async {
            auth.authorize(Some(&header), Scope::SessionsWrite)
                .await
                .unwrap()
        });
    });
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default().configure_from_args();
    cpu_per_session(&mut criterion, &runtime);
    authentication(&mut criterion, &runtime);
    criterion.final_summary();

    let measure = measure_seconds();
    let path = Duration::from_millis(2 * AGENT_LATENCY_MS);
    let orchestrator = runtime.block_on(sandbox_orchestrator(AGENT_LATENCY_MS, None));
    println!(
        "\noverhead per session (wall - critical path), closed loop, agents {AGENT_LATENCY_MS} ms \
         each, {} s per level",
        measure.as_secs_f64()
    );
    println!(
        "{:>11} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>11}",
        "in flight",
        "sessions",
        "per s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "heap KiB/s.",
        "RSS KiB/s."
    );
    for concurrency in CONCURRENCY {
        let level = runtime.block_on(closed_loop(
            &orchestrator,
            concurrency,
            path,
            measure,
            |outcome| outcome.elapsed.saturating_sub(outcome.critical_path),
        ));
        let h = &level.micros;
        println!(
            "{:>11} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>12.1} {:>11.1}",
            concurrency,
            level.sessions,
            level.per_second,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
            level.heap_per_session / 1024.0,
            level.rss_per_session / 1024.0,
        );
    }

    let hung = runtime.block_on(sandbox_orchestrator(AGENT_LATENCY_MS, Some("ocr")));
    let level = runtime.block_on(closed_loop(&hung, HUNG_SESSIONS, DEADLINE, measure, |o| {
        o.elapsed.saturating_sub(DEADLINE)
    }));
    let h = &level.micros;
    println!(
        "\ndeadline accuracy: {HUNG_SESSIONS} sessions in flight, ocr hangs, deadline {} ms; \
         completion after the deadline over {} sessions: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        DEADLINE.as_millis(),
        level.sessions,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
}
