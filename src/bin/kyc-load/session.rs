//! One session over HTTP: the request body the workload calls for, and what its NDJSON stream
//! came to.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

/// The default plan's agents, each of which a sandbox script drives.
const AGENTS: [&str; 4] = ["liveness", "doc_capture", "ocr", "face_match"];

/// What every session of a run asks the server to do.
pub enum Workload {
    /// Sandbox agents scripted to wait `latency_ms`, then burn `cpu_ms` of CPU; `hang` names one
    /// agent that never answers, so every session ends at its deadline.
    Sandbox {
        latency_ms: u64,
        cpu_ms: u64,
        hang: Option<String>,
        /// doc_capture fails with a code no policy declines on, so every session goes to
        /// review, and is then decided through `POST /v1/sessions/{id}/review`.
        review: bool,
        /// Each session scripts a random fault into one agent (or none): a failure, an error,
        /// a panic or a hang; any decision counts as completed.
        faults: bool,
    },
    /// Real images for the real agents: no script, and any decision counts as completed.
    Real {
        document: PathBuf,
        selfie: Vec<PathBuf>,
    },
}

/// What `--faults` scripts into one agent of a session, and how often in 16 sessions: most
/// sessions run clean, as in production, and every kind of fault comes up many times a minute.
const FAULTS: [(&str, usize); 5] = [
    ("pass", 8),
    ("fail", 3),
    ("error", 2),
    ("panic", 2),
    ("hang", 1),
];

impl Workload {
    /// The request bodies, built once: each session sends one of them, drawn at random.
    pub fn bodies(&self) -> std::io::Result<Vec<Bytes>> {
        if let Self::Sandbox {
            latency_ms,
            cpu_ms,
            faults: true,
            ..
        } = self
        {
            let mut bodies = Vec::new();
            for (fault, weight) in FAULTS {
                for agent in AGENTS {
                    let body = sandbox_body(*latency_ms, *cpu_ms, |name| {
                        if name == agent { fault } else { "pass" }
                    });
                    bodies.extend(std::iter::repeat_n(body, weight));
                }
            }
            return Ok(bodies);
        }
        Ok(vec![self.body()?])
    }

    /// The request body of a workload without faults.
    fn body(&self) -> std::io::Result<Bytes> {
        let body = match self {
            Self::Sandbox {
                latency_ms,
                cpu_ms,
                hang,
                review,
                ..
            } => {
                let image = STANDARD.encode(tiny_png());
                let script = AGENTS
                    .iter()
                    .map(|&agent| {
                        let result = if hang.as_deref() == Some(agent) {
                            "hang"
                        } else {
                            "pass"
                        };
                        let mut directive =
                            json!({ "latency_ms": latency_ms, "cpu_ms": cpu_ms, "result": result });
                        if *review && agent == "doc_capture" {
                            directive["result"] = json!("fail");
                            directive["reason"] = json!("too_blurry");
                        }
                        (agent.to_owned(), directive)
                    })
                    .collect::<serde_json::Map<_, _>>();
                json!({
                    "selfie": { "frames": [image] },
                    "document": { "type": "passport", "front": image },
                    "sandbox": script,
                })
            }
            Self::Real { document, selfie } => {
                let frames = selfie
                    .iter()
                    .map(|frame| Ok(STANDARD.encode(std::fs::read(frame)?)))
                    .collect::<std::io::Result<Vec<_>>>()?;
                json!({
                    "selfie": { "frames": frames },
                    "document": { "type": "passport", "front": STANDARD.encode(std::fs::read(document)?) },
                })
            }
        };
        Ok(serde_json::to_vec(&body).expect("JSON serialises").into())
    }

    /// The decision a session of this workload must reach to count as completed; `None`: any.
    fn expected_decision(&self) -> Option<&'static str> {
        match self {
            Self::Sandbox { faults: true, .. } => None,
            Self::Sandbox {
                hang: None,
                review: false,
                ..
            } => Some("approved"),
            // A hung agent is a timeout, which the policy sends to review.
            Self::Sandbox { .. } => Some("review"),
            Self::Real { .. } => None,
        }
    }
}

/// A sandbox session whose agents wait `latency_ms`, burn `cpu_ms` and end as `result` says.
fn sandbox_body(latency_ms: u64, cpu_ms: u64, result: impl Fn(&str) -> &'static str) -> Bytes {
    let image = STANDARD.encode(tiny_png());
    let script = AGENTS
        .iter()
        .map(|&agent| {
            let directive =
                json!({ "latency_ms": latency_ms, "cpu_ms": cpu_ms, "result": result(agent) });
            (agent.to_owned(), directive)
        })
        .collect::<serde_json::Map<_, _>>();
    let body = json!({
        "selfie": { "frames": [image] },
        "document": { "type": "passport", "front": image },
        "sandbox": script,
    });
    serde_json::to_vec(&body).expect("JSON serialises").into()
}

/// A 32x32 PNG: the smallest image every limit accepts, so the measurement is orchestration.
fn tiny_png() -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb([90, 120, 150]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("a PNG encodes");
    png
}

/// What one session's request came to.
pub enum Outcome {
    Completed(Completed),
    /// Admission control said 503: try again after this long (its `Retry-After`).
    Refused(Duration),
    /// The kind of failure, as the report counts it.
    Failed(String),
}

pub struct Completed {
    /// From the session's scheduled start to the end of its stream.
    pub latency: Duration,
    /// `latency` minus the critical path of the agents' measured durations.
    pub overhead: Duration,
    /// The server's own session duration (from its start to its completion).
    pub server: Duration,
    /// Each agent's own duration.
    pub agents: Vec<(String, Duration)>,
    /// How long its review decision took to answer, when the workload decides one.
    pub review: Option<Duration>,
}

/// Starts one session with `Accept: application/x-ndjson` and reads its stream to the end.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    scheduled: Instant,
    workload: &Workload,
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
        Ok(response) if response.status() == 503 => {
            let seconds = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            return Outcome::Refused(Duration::from_secs(seconds));
        }
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
    // The last line, or for a session decided `review` the one before `review.opened`.
    let completed = buffer
        .split(|&b| b == b'\n')
        .rev()
        .filter(|line| !line.is_empty())
        .take(2)
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .find(|event| event["type"] == "session.completed");
    let Some(completed) = completed else {
        return Outcome::Failed("stream_incomplete".into());
    };
    let decision = completed["decision"].as_str().unwrap_or("?");
    if workload
        .expected_decision()
        .is_some_and(|expected| expected != decision)
    {
        return Outcome::Failed(format!("decision_{decision}"));
    }
    let agents = completed["checks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(agent, check)| Some((agent.clone(), millis(check["duration_ms"].as_f64()?))))
        .collect();
    let path = critical_path(&completed).unwrap_or_default();
    let review = match workload {
        Workload::Sandbox { review: true, .. } => {
            let id = completed["session_id"].as_str().unwrap_or_default();
            match decide(client, url, id).await {
                Ok(took) => Some(took),
                Err(kind) => return Outcome::Failed(kind),
            }
        }
        _ => None,
    };
    Outcome::Completed(Completed {
        latency,
        overhead: latency.saturating_sub(path),
        server: millis(completed["duration_ms"].as_f64().unwrap_or_default()),
        agents,
        review,
    })
}

/// Approves session `id` as a reviewer (the run's key); how long the answer took, or the kind
/// of failure.
async fn decide(client: &reqwest::Client, sessions: &str, id: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let answer = client
        .post(format!("{sessions}/{id}/review"))
        .json(&json!({ "decision": "approved", "reasons": ["verified_manually"] }))
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status() == 200 => match answer.bytes().await {
            Ok(_) => Ok(started.elapsed()),
            Err(_) => Err("review_broken".into()),
        },
        Ok(answer) => Err(format!("review_http_{}", answer.status().as_u16())),
        Err(_) => Err("review_request".into()),
    }
}

fn millis(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// The default plan's critical path from the agents' measured durations:
/// `max(doc_capture + ocr, max(liveness, doc_capture) + face_match)`.
fn critical_path(completed: &Value) -> Option<Duration> {
    let ms = |agent: &str| completed["checks"][agent]["duration_ms"].as_f64();
    let (liveness, doc, ocr, face) = (
        ms("liveness")?,
        ms("doc_capture")?,
        ms("ocr")?,
        ms("face_match")?,
    );
    Some(millis((doc + ocr).max(liveness.max(doc) + face)))
}
