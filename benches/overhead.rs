//! In-process orchestration overhead: what a session costs beyond its agents' own work.
//!
//! Sessions of sandbox agents with fixed latencies run straight through the orchestrator (no
//! HTTP) at several concurrency levels. For every session, overhead = wall time from `start` to
//! its `session.completed` event being published, minus the critical path of the agents' measured run times (the longest
//! dependency chain: for the default plan `max(doc_capture + ocr, max(liveness, doc_capture) +
//! face_match)`). Criterion reports the time per batch; the percentile table printed at the end
//! is the figure that matters.
//!
//! Run: `cargo bench --bench overhead` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::sandbox::SandboxResult;
use kyc_orchestrator::app::build_orchestrator;
use kyc_orchestrator::domain::{
    Document, DocumentType, ImageData, ImageLimits, NewSession, Selfie,
};
use kyc_orchestrator::orchestrator::Orchestrator;

// The allocator the server binary uses, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Each agent's simulated latency.
const AGENT_LATENCY_MS: u64 = 20;
const CONCURRENCY: [usize; 3] = [1, 100, 1_000];

/// The default plan on the in-memory store: this measures orchestration, not a database (the
/// HTTP load benchmark measures the real stores).
async fn orchestrator() -> Orchestrator {
    let mut settings = Settings::sandbox();
    settings.store.url = "memory://".into();
    settings.server.max_inflight_sessions = 100_000;
    settings.store.memory_capacity = 10_000;
    for agent in settings.agents.values_mut() {
        agent.sandbox.latency_ms = AGENT_LATENCY_MS;
        agent.sandbox.cpu_ms = 0;
        agent.sandbox.result = SandboxResult::Pass;
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

/// Overheads in microseconds, by concurrency, across every batch criterion ran.
fn overheads() -> &'static Mutex<BTreeMap<usize, Histogram<u64>>> {
    static OVERHEADS: OnceLock<Mutex<BTreeMap<usize, Histogram<u64>>>> = OnceLock::new();
    OVERHEADS.get_or_init(Mutex::default)
}

/// Starts `concurrency` sessions at once and waits for all; returns the batch's wall time.
async fn batch(orchestrator: &Orchestrator, concurrency: usize) -> Duration {
    let begin = Instant::now();
    let mut running = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let started = orchestrator.start(request(), None).await.unwrap();
        running.push(started.outcome);
    }
    let mut samples = Vec::with_capacity(concurrency);
    for outcome in running {
        // Timed inside the session, so the order of these awaits does not matter.
        let outcome = outcome.await.unwrap();
        let overhead = outcome.elapsed.saturating_sub(outcome.critical_path);
        samples.push(overhead.as_micros() as u64);
    }
    let total = begin.elapsed();
    let mut all = overheads().lock().unwrap();
    let histogram = all
        .entry(concurrency)
        .or_insert_with(|| Histogram::new(3).unwrap());
    for sample in samples {
        histogram.record(sample.max(1)).unwrap();
    }
    total
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let orchestrator = runtime.block_on(orchestrator());
    let mut group = c.benchmark_group("session_overhead");
    group.sample_size(20);
    for concurrency in CONCURRENCY {
        group.bench_with_input(
            BenchmarkId::from_parameter(concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let orchestrator = orchestrator.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += batch(&orchestrator, concurrency).await;
                        }
                        total
                    }
                });
            },
        );
    }
    group.finish();

    println!(
        "\norchestration overhead per session (wall - critical path), agents {AGENT_LATENCY_MS} ms each"
    );
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "concurrency", "sessions", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    for (concurrency, h) in overheads().lock().unwrap().iter() {
        println!(
            "{:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
            concurrency,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
