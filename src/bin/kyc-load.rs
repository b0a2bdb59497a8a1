//! HTTP load generator for kyc-orchestrator.
//!
//! Starts sessions with `Accept: application/x-ndjson` and reads every stream to its
//! `session.completed`, either closed-loop (N clients, each starting its next session when the
//! last one ends) or open-loop (a fixed arrival rate, latency counted from each session's
//! scheduled start so a slow server cannot hide its queueing). The sandbox agents are scripted
//! to a fixed latency, so the critical path is known and the overhead is measured per session.
//!
//!     kyc-load --concurrency 100 --duration 10 --latency-ms 50
//!     kyc-load --rate 2000 --duration 10 --server-pid "$(pidof kyc-orchestrator)"

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

// Many small, short-lived allocations on two or more threads: mimalloc's per-thread heaps avoid
// the arena-lock contention glibc's malloc showed under load (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Drive kyc-orchestrator with sandbox sessions and report latency and overhead")]
struct Args {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8009")]
    url: String,
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
}

/// What one session's request came to.
enum Outcome {
    Completed {
        latency: Duration,
        overhead: Duration,
        /// Each agent's own duration.
        agents: Vec<(String, Duration)>,
    },
    Failed(String),
}

#[derive(Default)]
struct Report {
    latency: Option<Histogram<u64>>,
    overhead: Option<Histogram<u64>>,
    agents: BTreeMap<String, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Completed {
                latency,
                overhead,
                agents,
            } => {
                let new = || Histogram::new(3).expect("3 significant figures is valid");
                for (agent, duration) in agents {
                    let _ = self
                        .agents
                        .entry(agent)
                        .or_insert_with(new)
                        .record((duration.as_micros() as u64).max(1));
                }
                let latency_us = latency.as_micros() as u64;
                let overhead_us = overhead.as_micros() as u64;
                let _ = self
                    .latency
                    .get_or_insert_with(new)
                    .record(latency_us.max(1));
                let _ = self
                    .overhead
                    .get_or_insert_with(new)
                    .record(overhead_us.max(1));
            }
            Outcome::Failed(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }
}

/// A session of real images, for the real agents: no sandbox script.
fn real_body(document: &std::path::Path, selfie: &[std::path::PathBuf]) -> std::io::Result<Bytes> {
    let frames = selfie
        .iter()
        .map(|frame| Ok(STANDARD.encode(std::fs::read(frame)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let body = json!({
        "selfie": { "frames": frames },
        "document": { "type": "passport", "front": STANDARD.encode(std::fs::read(document)?) },
    });
    Ok(serde_json::to_vec(&body).expect("JSON serialises").into())
}

fn request_body(latency_ms: u64) -> Bytes {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb([90, 120, 150]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("a PNG encodes");
    let image = STANDARD.encode(&png);
    let agent = json!({ "latency_ms": latency_ms, "cpu_ms": 0, "result": "pass" });
    let body = json!({
        "selfie": { "frames": [image] },
        "document": { "type": "passport", "front": image },
        "sandbox": {
            "liveness": agent, "doc_capture": agent, "ocr": agent, "face_match": agent,
        },
    });
    serde_json::to_vec(&body).expect("JSON serialises").into()
}

/// The default plan's critical path from the agents' measured durations.
fn critical_path(completed: &Value) -> Option<Duration> {
    let ms = |agent: &str| completed["checks"][agent]["duration_ms"].as_f64();
    let (liveness, doc, ocr, face) = (
        ms("liveness")?,
        ms("doc_capture")?,
        ms("ocr")?,
        ms("face_match")?,
    );
    let path = (doc + ocr).max(liveness.max(doc) + face);
    Some(Duration::from_secs_f64(path / 1000.0))
}

async fn one_session(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    scheduled: Instant,
    any_decision: bool,
) -> Outcome {
    let response = client
        .post(url)
        .header("accept", "application/x-ndjson")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(response) if response.status() == 200 => response,
        Ok(response) => return Outcome::Failed(format!("http_{}", response.status().as_u16())),
        Err(error) if error.is_connect() => return Outcome::Failed("connect".into()),
        Err(_) => return Outcome::Failed("request".into()),
    };
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => buffer.extend_from_slice(&chunk),
            Err(_) => return Outcome::Failed("stream_broken".into()),
        }
    }
    let latency = scheduled.elapsed();
    let last = buffer
        .split(|&b| b == b'\n')
        .rev()
        .find(|line| !line.is_empty())
        .and_then(|line| serde_json::from_slice::<Value>(line).ok());
    match last {
        Some(event) if event["type"] == "session.completed" => {
            if !any_decision && event["decision"] != "approved" {
                return Outcome::Failed(format!(
                    "decision_{}",
                    event["decision"].as_str().unwrap_or("?")
                ));
            }
            let path = critical_path(&event).unwrap_or_default();
            let agents = event["checks"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(agent, check)| {
                    let ms = check["duration_ms"].as_f64()?;
                    Some((agent.clone(), Duration::from_secs_f64(ms / 1000.0)))
                })
                .collect();
            Outcome::Completed {
                latency,
                overhead: latency.saturating_sub(path),
                agents,
            }
        }
        _ => Outcome::Failed("stream_incomplete".into()),
    }
}

/// (utime + stime) in clock ticks, and peak RSS in KiB, from /proc.
fn server_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, hwm))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // Every session stream is a socket; the common soft limit of 1024 is far below what one
    // instance serves, so take what the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let url = format!("{}/v1/sessions", args.url.trim_end_matches('/'));
    let any_decision = args.document.is_some();
    let body = match &args.document {
        Some(document) => real_body(document, &args.selfie).unwrap_or_else(|e| {
            eprintln!("cannot read the images: {e}");
            std::process::exit(2)
        }),
        None => request_body(args.latency_ms),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("a client builds");
    let report = Arc::new(Mutex::new(Report::default()));
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let usage_before = Arc::new(Mutex::new(None));

    if let Some(pid) = args.server_pid {
        let usage_before = Arc::clone(&usage_before);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *usage_before.lock().unwrap() = server_usage(pid);
        });
    }

    let mut tasks = tokio::task::JoinSet::new();
    match args.rate {
        None => {
            for _ in 0..args.concurrency {
                let (client, url, body, report) = (
                    client.clone(),
                    url.clone(),
                    body.clone(),
                    Arc::clone(&report),
                );
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let scheduled = Instant::now();
                        let outcome =
                            one_session(&client, &url, body.clone(), scheduled, any_decision).await;
                        if scheduled >= measure_from
                            && Instant::now() <= end + Duration::from_secs(30)
                        {
                            report.lock().unwrap().record(outcome);
                        }
                    }
                });
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut next = start;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let (client, url, body, report) = (
                    client.clone(),
                    url.clone(),
                    body.clone(),
                    Arc::clone(&report),
                );
                let scheduled = next;
                tasks.spawn(async move {
                    let outcome = one_session(&client, &url, body, scheduled, any_decision).await;
                    if scheduled >= measure_from {
                        report.lock().unwrap().record(outcome);
                    }
                });
                next += interval;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = measure.as_secs_f64();
    let usage_after = args.server_pid.and_then(server_usage);
    let report = report.lock().unwrap();

    let completed = report.latency.as_ref().map_or(0, |h| h.len());
    let pct = |h: &Option<Histogram<u64>>, q: f64| {
        h.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let max = |h: &Option<Histogram<u64>>| h.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0);
    let server = match (*usage_before.lock().unwrap(), usage_after) {
        (Some((before, _)), Some((after, hwm))) => {
            // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
            let cpu_seconds = (after - before) as f64 / 100.0;
            Some(
                json!({ "cpu_percent": 100.0 * cpu_seconds / elapsed, "peak_rss_mib": hwm as f64 / 1024.0 }),
            )
        }
        _ => None,
    };
    let summary = json!({
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "concurrency": args.rate.map_or(args.concurrency as f64, |_| 0.0),
        "rate": args.rate,
        "agent_latency_ms": args.latency_ms,
        "seconds": elapsed,
        "completed": completed,
        "sessions_per_s": completed as f64 / elapsed,
        "latency_ms": { "p50": pct(&report.latency, 0.5), "p90": pct(&report.latency, 0.9), "p99": pct(&report.latency, 0.99), "max": max(&report.latency) },
        "overhead_ms": { "p50": pct(&report.overhead, 0.5), "p90": pct(&report.overhead, 0.9), "p99": pct(&report.overhead, 0.99), "max": max(&report.overhead) },
        "agents_ms": report.agents.iter().map(|(agent, h)| (agent.clone(), json!({
            "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
            "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
        }))).collect::<serde_json::Map<_, _>>(),
        "errors": report.errors,
        "server": server,
    });
    if args.json {
        println!("{summary}");
        return;
    }
    match &args.document {
        Some(document) => println!(
            "{} loop, {} s, real agents on {}",
            summary["mode"].as_str().unwrap_or_default(),
            elapsed,
            document.display()
        ),
        None => println!(
            "{} loop, {} s, agents {} ms each (critical path {} ms)",
            summary["mode"].as_str().unwrap_or_default(),
            elapsed,
            args.latency_ms,
            2 * args.latency_ms
        ),
    }
    match args.rate {
        Some(rate) => println!("arrival rate      {rate}/s"),
        None => println!("clients           {}", args.concurrency),
    }
    println!(
        "completed         {completed} ({:.1} sessions/s)",
        completed as f64 / elapsed
    );
    for (name, h) in [
        ("latency ms", &report.latency),
        ("overhead ms", &report.overhead),
    ] {
        println!(
            "{name:<17} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            pct(h, 0.5),
            pct(h, 0.9),
            pct(h, 0.99),
            max(h)
        );
    }
    for (agent, h) in &report.agents {
        println!(
            "{:<17} p50 {:.2}  p99 {:.2}",
            format!("{agent} ms"),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    println!("errors            {:?}", report.errors);
    if let Some(server) = server {
        println!(
            "server            cpu {:.0} %, peak RSS {:.1} MiB",
            server["cpu_percent"].as_f64().unwrap_or_default(),
            server["peak_rss_mib"].as_f64().unwrap_or_default()
        );
    }
}
