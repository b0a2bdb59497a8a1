//! HTTP load generator for kyc-orchestrator.
//!
//! Starts sessions with `Accept: application/x-ndjson` and reads every stream to its
//! `session.completed`, either closed-loop (N clients, each starting its next session when the
//! last one ends) or open-loop (a fixed arrival rate, latency counted from each session's
//! scheduled start so a slow server cannot hide its queueing). The sandbox agents are scripted
//! to a fixed latency, so the critical path is known and the overhead is measured per session.
//!
//!     kyc-load --concurrency 400 --duration 10 --latency-ms 50
//!     kyc-load --rate 2000 --duration 10 --server-pid "$(pidof kyc-orchestrator)"
//!     kyc-load --concurrency 8 --latency-ms 0 --cpu-ms 50 --health-rate 100   # CPU isolation
//!     kyc-load --concurrency 1000 --hang ocr --deadline-ms 1000                # deadline accuracy
//!     kyc-load --concurrency 40 --review                  # every session reviewed and decided

mod report;
mod session;
mod sink;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use report::{Probes, Run, Server, Sessions, Usage};
use session::Workload;

// Many small, short-lived allocations on two or more threads: mimalloc's per-thread heaps avoid
// the arena-lock contention glibc's malloc showed under load (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Drive kyc-orchestrator with sessions and report latency, overhead and errors")]
struct Args {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8009")]
    url: String,
    /// A test key of the service (`kyc-orchestrator keys create --tenant load`), sent with
    /// every session.
    #[arg(long, env = "KYC_API_KEY", hide_env_values = true)]
    key: String,
    /// Closed loop: clients, each running one session at a time.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Open loop: sessions started per second (overrides --concurrency).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Latency of every sandbox agent, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// CPU every sandbox agent burns after its latency, in milliseconds (on the server's
    /// bounded CPU pool).
    #[arg(long, default_value_t = 0)]
    cpu_ms: u64,
    /// This sandbox agent never answers: every session ends at its deadline, and the report
    /// shows how late after it (with --deadline-ms).
    #[arg(long)]
    hang: Option<String>,
    /// The server's `orchestrator.session_deadline_ms`, for --hang.
    #[arg(long, default_value_t = 8000)]
    deadline_ms: u64,
    /// Probe `GET /health` this many times a second from a separate client on its own thread,
    /// and report its latency.
    #[arg(long, default_value_t = 0.0)]
    health_rate: f64,
    /// Real-agent mode: send this document photo (and --selfie) with no sandbox script, count
    /// every decision as completed, and report each agent's own duration.
    #[arg(long, requires = "selfie")]
    document: Option<std::path::PathBuf>,
    /// The selfie frames sent with --document, in order (repeat the flag, or list them).
    #[arg(long, requires = "document", num_args = 1..)]
    selfie: Vec<std::path::PathBuf>,
    /// PID of the server, to report its CPU use and peak RSS (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Runtime threads driving the sessions. One keeps the generator off the server's second
    /// core, and drives the rates README's Performance section reports (which also says where
    /// one thread falls behind).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Every session goes to review and is decided by the run's key right after it completes
    /// (the key needs `reviews:write`); the report adds the decisions' latency.
    #[arg(long, conflicts_with_all = ["hang", "document"])]
    review: bool,
    /// Each session scripts a random fault into one agent (a failure, an error, a panic or a
    /// hang, half of the sessions none); any decision counts as completed.
    #[arg(long, conflicts_with_all = ["hang", "document", "review"])]
    faults: bool,
    /// Stop starting sessions after this many in all (the duration still bounds the run).
    #[arg(long)]
    sessions: Option<u64>,
    /// Registers a webhook receiver of its own and reports how long after each session's
    /// completion its message arrived (the service must allow http and private targets, as
    /// its default config does).
    #[arg(long)]
    webhook_sink: bool,
}

impl Args {
    fn workload(&self) -> Workload {
        match &self.document {
            Some(document) => Workload::Real {
                document: document.clone(),
                selfie: self.selfie.clone(),
            },
            None => Workload::Sandbox {
                latency_ms: self.latency_ms,
                cpu_ms: self.cpu_ms,
                hang: self.hang.clone(),
                review: self.review,
                faults: self.faults,
            },
        }
    }

    fn describe(&self) -> String {
        let load = match self.rate {
            Some(rate) => format!("{rate} sessions/s"),
            None => format!("{} clients", self.concurrency),
        };
        let agents = match (&self.document, &self.hang) {
            (Some(document), _) => format!("real agents on {}", document.display()),
            (None, hang) => {
                format!(
                    "agents {} ms + {} ms CPU each (critical path {} ms){}",
                    self.latency_ms,
                    self.cpu_ms,
                    2 * (self.latency_ms + self.cpu_ms),
                    hang.as_ref()
                        .map(|agent| format!(
                            ", {agent} hangs until the {} ms deadline",
                            self.deadline_ms
                        ))
                        .unwrap_or_default()
                ) + if self.review {
                    ", each session to review and then decided"
                } else {
                    ""
                }
            }
        };
        format!("{load}, {agents}")
    }
}

/// Probes `/health` at `rate` per second until `end` on a thread and runtime of its own, so
/// the probe's latency is the server's and not the load generator's queue.
///
/// The thread sleeps to each scheduled time itself: tokio's timer fires on whole milliseconds,
/// which would add up to a millisecond of the generator's own lateness to every probe, more
/// than an idle server takes to answer it (README, Performance, CPU isolation).
fn probe_health(
    base: &str,
    rate: f64,
    measure_from: Instant,
    end: Instant,
) -> std::thread::JoinHandle<Probes> {
    let url = format!("{base}/health");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds");
        let client = kyc_orchestrator::http::client()
            .build()
            .expect("an HTTP client builds");
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut probes = Probes::default();
        let mut next = measure_from;
        while next < end {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // From the scheduled time: a probe held up by a slow one still counts its wait.
            let scheduled = next;
            let answered = runtime.block_on(async {
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                }
            });
            if answered {
                probes.latency.record(scheduled.elapsed());
            } else {
                probes.errors += 1;
            }
            next += interval;
            while next < Instant::now() {
                next += interval;
            }
        }
        probes
    })
}

fn main() {
    let args = Args::parse();
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        threads => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
    };
    runtime.expect("a runtime builds").block_on(drive(args));
}

async fn drive(args: Args) {
    // Every session stream is a socket; the common soft limit of 1024 is far below what one
    // instance serves, so take what the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let base = args.url.trim_end_matches('/').to_owned();
    let url = format!("{base}/v1/sessions");
    let workload = Arc::new(args.workload());
    let bodies = Arc::new(workload.bodies().unwrap_or_else(|e| {
        eprintln!("cannot read the images: {e}");
        std::process::exit(2)
    }));
    // Sessions started so far, against --sessions.
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let budget = args.sessions.unwrap_or(u64::MAX);
    let next_body = {
        let (bodies, started) = (Arc::clone(&bodies), Arc::clone(&started));
        move || -> Option<bytes::Bytes> {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= budget {
                return None;
            }
            let draw = u64::from_le_bytes(kyc_orchestrator::domain::random_bytes::<8>());
            Some(bodies[(draw % bodies.len() as u64) as usize].clone())
        }
    };
    let deadline = args
        .hang
        .is_some()
        .then(|| Duration::from_millis(args.deadline_ms));
    let mut headers = reqwest::header::HeaderMap::new();
    let mut authorization = reqwest::header::HeaderValue::try_from(format!("Bearer {}", args.key))
        .unwrap_or_else(|_| {
            eprintln!("--key is not a valid header value");
            std::process::exit(2)
        });
    authorization.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, authorization);
    let client = kyc_orchestrator::http::client()
        .pool_max_idle_per_host(usize::MAX)
        .default_headers(headers)
        .build()
        .expect("a client builds");
    let sink = if args.webhook_sink {
        match sink::Sink::start(&base, &client).await {
            Ok(sink) => Some(sink),
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(1)
            }
        }
    } else {
        None
    };
    // Every completed session, the warm-up's too: each sends a webhook message.
    let all_completed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sessions = Arc::new(Mutex::new(Sessions::with_deadline(deadline)));
    let measure = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + measure;
    let idle = args.server_pid.and_then(Usage::of);
    let before = Arc::new(Mutex::new(None));
    if let Some(pid) = args.server_pid {
        let before = Arc::clone(&before);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *before.lock().unwrap() = Usage::of(pid);
        });
    }
    let probes =
        (args.health_rate > 0.0).then(|| probe_health(&base, args.health_rate, measure_from, end));

    let mut tasks = tokio::task::JoinSet::new();
    let record = |sessions: &Mutex<Sessions>, outcome| sessions.lock().unwrap().record(outcome);
    let count = |all: &std::sync::atomic::AtomicU64, outcome: &session::Outcome| {
        if matches!(outcome, session::Outcome::Completed(_)) {
            all.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    match args.rate {
        None => {
            // Clients start spread over the warm-up, as independent clients arrive; started
            // together, their sessions would stay in lock-step and every timer of a round
            // would fire on the same tick.
            let ramp = measure_from - start;
            for i in 0..args.concurrency {
                let first = start + ramp.mul_f64(i as f64 / args.concurrency as f64);
                let (client, url, next_body) = (client.clone(), url.clone(), next_body.clone());
                let (sessions, workload) = (Arc::clone(&sessions), Arc::clone(&workload));
                let all = Arc::clone(&all_completed);
                tasks.spawn(async move {
                    tokio::time::sleep_until(first.into()).await;
                    while Instant::now() < end {
                        let Some(body) = next_body() else { break };
                        let scheduled = Instant::now();
                        let outcome = session::run(&client, &url, body, scheduled, &workload).await;
                        count(&all, &outcome);
                        // A refused client waits as told, as a well-behaved one does.
                        let wait = match outcome {
                            session::Outcome::Refused(wait) => wait,
                            _ => Duration::ZERO,
                        };
                        if scheduled >= measure_from {
                            record(&sessions, outcome);
                        }
                        tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                            .await;
                    }
                });
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut next = start;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let Some(body) = next_body() else { break };
                let (client, url) = (client.clone(), url.clone());
                let (sessions, workload) = (Arc::clone(&sessions), Arc::clone(&workload));
                let scheduled = next;
                let all = Arc::clone(&all_completed);
                tasks.spawn(async move {
                    let outcome = session::run(&client, &url, body, scheduled, &workload).await;
                    count(&all, &outcome);
                    if scheduled >= measure_from {
                        record(&sessions, outcome);
                    }
                });
                next += interval;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let after = args.server_pid.and_then(Usage::of);
    let probes = probes.map(|thread| thread.join().expect("the health prober does not panic"));
    let before = *before.lock().unwrap();
    {
        let sessions = sessions.lock().unwrap();
        let run = Run {
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            load: args.describe(),
            seconds: measure.as_secs_f64(),
            sessions: &sessions,
            probes: probes.as_ref(),
            server: idle
                .zip(before)
                .zip(after)
                .map(|((idle, before), after)| Server {
                    idle,
                    before,
                    after,
                }),
        };
        if args.json {
            println!("{}", run.json());
        } else {
            run.print();
        }
    }
    if let Some(sink) = sink {
        let completed = all_completed.load(std::sync::atomic::Ordering::Relaxed);
        sink.settle(completed, Duration::from_secs(5)).await;
        println!("webhooks          {}", sink.report(completed));
    }
}
