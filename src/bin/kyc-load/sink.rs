//! `--webhook-sink`: a webhook receiver in the load generator. It registers itself as an
//! endpoint of the key's tenant, answers every message `204` at once, and measures how long
//! after its session completed each message arrived (from the body's `completed_at`; server and
//! generator share the machine's clock) and whether any `webhook-id` came twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::report::Micros;

#[derive(Default)]
struct Tally {
    lag: Micros,
    ids: HashSet<String>,
    received: u64,
    last: Option<Instant>,
}

/// The receiver, running.
pub struct Sink {
    tally: Arc<Mutex<Tally>>,
}

impl Sink {
    /// Starts the receiver and registers it with the service at `base`.
    pub async fn start(base: &str, client: &reqwest::Client) -> Result<Self, String> {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&tally));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen: {e}"))?;
        let url = format!(
            "http://{}/hook",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let registered = client
            .post(format!("{base}/v1/webhooks"))
            .json(&json!({ "url": url, "description": "kyc-load --webhook-sink" }))
            .send()
            .await
            .map_err(|e| format!("cannot register the sink: {e}"))?;
        if !registered.status().is_success() {
            let status = registered.status();
            let detail = registered.text().await.unwrap_or_default();
            return Err(format!("registering the sink: {status} {detail}"));
        }
        Ok(Self { tally })
    }

    /// Waits until `expected` messages have arrived, or none for `quiet`.
    pub async fn settle(&self, expected: u64, quiet: Duration) {
        let began = Instant::now();
        loop {
            let (received, last) = {
                let tally = self.tally.lock().unwrap();
                (tally.received, tally.last.unwrap_or(began))
            };
            if received >= expected || last.max(began).elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn report(&self, completed: u64) -> Value {
        let tally = self.tally.lock().unwrap();
        json!({
            "sessions_completed": completed,
            "received": tally.received,
            "distinct_ids": tally.ids.len(),
            "lag_ms": tally.lag.summary(),
        })
    }
}

async fn receive(
    State(tally): State<Arc<Mutex<Tally>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Utc::now();
    let completed = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|message| {
            message["data"]["completed_at"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        });
    let mut tally = tally.lock().unwrap();
    tally.received += 1;
    tally.last = Some(Instant::now());
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        tally.ids.insert(id.to_owned());
    }
    if let Some(completed) = completed {
        tally
            .lag
            .record((now - completed).to_std().unwrap_or_default());
    }
    StatusCode::NO_CONTENT
}
