//! The dispatcher: every instance runs one. It routes outbox messages to their endpoints,
//! claims due deliveries, attempts them (bounded in all and per endpoint, so one slow or dead
//! endpoint never holds up another's messages) and records each attempt and what follows.
//!
//! An attempt succeeds on a 2xx within `webhooks.timeout`. A redirect is a failure (not
//! followed: the endpoint is what was registered). `410 Gone` disables the endpoint at once.
//! `429` and `503` with `Retry-After` are not tried again sooner than asked. Anything else is
//! tried again on the schedule, and an endpoint whose every attempt failed for
//! `webhooks.disable_after` is disabled. At most [`MAX_ANSWER_BYTES`] of an answer are read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Clock, GuardedResolver, MAX_ANSWER_BYTES, Policy, payload, signature};
use crate::domain::{Attempt, AttemptOutcome, DueDelivery, Endpoint, EndpointId, random_text};
use crate::store::{SessionStore, StoreError, WebhookStore};
use crate::telemetry::ErrorChain;

/// Outbox messages routed per pass.
const ROUTE_BATCH: usize = 100;
/// How often the backlog gauges are measured.
const MEASURE_EVERY: Duration = Duration::from_secs(5);
/// How often finished messages past `webhooks.keep_days` are forgotten, and how many per store
/// call.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
const PURGE_SOON: Duration = Duration::from_secs(10);
const PURGE_BATCH: usize = 500;

/// Delivers webhook messages until stopped.
pub struct Dispatcher {
    store: Arc<dyn WebhookStore>,
    sessions: Arc<dyn SessionStore>,
    policy: Arc<Policy>,
    clock: Clock,
    http: reqwest::Client,
    /// Attempts in flight per endpoint, on this instance.
    busy: Arc<Mutex<HashMap<EndpointId, usize>>>,
}

/// What an endpoint answered, as far as the schedule is concerned.
#[derive(Debug)]
enum Answer {
    Success(u16),
    Gone,
    Failure {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        sessions: Arc<dyn SessionStore>,
        policy: Arc<Policy>,
        clock: Clock,
    ) -> Self {
        let http = client(&policy);
        Self {
            store,
            sessions,
            policy,
            clock,
            http,
            busy: Arc::default(),
        }
    }

    /// Routes and delivers until `stop` is cancelled, then lets the attempts in flight finish
    /// (each bounded by `webhooks.timeout`). What is left waits in the store for the next
    /// instance that runs. Should this panic, [`Dispatcher::supervise`] starts it again.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        let mut measured: Option<tokio::time::Instant> = None;
        let mut purge_at = tokio::time::Instant::now();
        loop {
            self.route_outbox().await;
            let free = self.policy.max_in_flight.saturating_sub(tasks.len());
            if free > 0 {
                self.start_due(free, &mut tasks).await;
            }
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                self.measure().await;
                measured = Some(tokio::time::Instant::now());
            }
            if tokio::time::Instant::now() >= purge_at {
                // Soon again while there is more to forget, so a large backlog goes a batch
                // at a time without holding up deliveries.
                let more = self.purge().await;
                purge_at =
                    tokio::time::Instant::now() + if more { PURGE_SOON } else { PURGE_EVERY };
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.policy.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Runs the dispatcher until `stop` is cancelled, starting it again (after a second) if
    /// it panics: webhooks must not stop silently.
    pub async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let run = tokio::spawn(Arc::clone(&self).run(stop.clone()));
            match run.await {
                Err(error) if error.is_panic() && !stop.is_cancelled() => {
                    tracing::error!(
                        error = %error,
                        "the webhook dispatcher panicked; starting it again"
                    );
                    metrics::counter!("kyc_webhook_dispatcher_restarts_total").increment(1);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return,
            }
        }
    }

    /// Gives outbox messages their bodies and a delivery per endpoint that wants them.
    async fn route_outbox(&self) {
        let messages = match self.store.unrouted(ROUTE_BATCH).await {
            Ok(messages) => messages,
            Err(error) => return log_store_error(&error, "reading the webhook outbox"),
        };
        for message in messages {
            let routed = async {
                let endpoints: Vec<EndpointId> = self
                    .store
                    .endpoints(&message.owner)
                    .await?
                    .into_iter()
                    // A paused endpoint's deliveries wait for it to be enabled again.
                    .filter(|e| e.wants(&message.event_type))
                    .map(|e| e.id)
                    .collect();
                let body = match self.sessions.get(message.session_id).await? {
                    Some(session) => payload::body(&message, &session),
                    None => None,
                };
                let Some(body) = body else {
                    // Gone from a memory store's window: nothing to report from.
                    tracing::warn!(
                        message_id = %message.id,
                        session_id = %message.session_id,
                        "a webhook message's session is not stored any more; not sent"
                    );
                    return self
                        .store
                        .route(&message.id, "", &[], self.clock.now())
                        .await;
                };
                self.store
                    .route(&message.id, &body, &endpoints, self.clock.now())
                    .await
            };
            if let Err(error) = routed.await {
                // The next message may route; this one is tried again on the next pass.
                log_store_error(&error, "routing a webhook message");
                if error.is_unavailable() {
                    return;
                }
            }
        }
    }

    /// Claims up to `free` due deliveries to endpoints with room, and starts their attempts.
    async fn start_due(self: &Arc<Self>, free: usize, tasks: &mut JoinSet<()>) {
        let skip: Vec<EndpointId> = self
            .busy()
            .iter()
            .filter(|&(_, &n)| n >= self.policy.max_per_endpoint)
            .map(|(id, _)| id.clone())
            .collect();
        let now = self.clock.now();
        let claim = random_text(20);
        let lease_until = now + chrono::Duration::from_std(self.policy.lease()).unwrap_or_default();
        let claimed = match self
            .store
            .claim_due(
                now,
                &claim,
                lease_until,
                &skip,
                self.policy.max_per_endpoint,
                free,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => return log_store_error(&error, "claiming webhook deliveries"),
        };
        for due in claimed {
            let admitted = {
                let mut busy = self.busy();
                let n = busy.entry(due.endpoint_id.clone()).or_default();
                (*n < self.policy.max_per_endpoint)
                    .then(|| *n += 1)
                    .is_some()
            };
            if !admitted {
                if let Err(error) = self.store.release(&due, &claim).await {
                    log_store_error(&error, "releasing a webhook delivery");
                }
                continue;
            }
            let this = Arc::clone(self);
            let claim = claim.clone();
            tasks.spawn(async move {
                let _slot = Slot {
                    busy: Arc::clone(&this.busy),
                    endpoint: due.endpoint_id.clone(),
                };
                this.attempt(due, &claim).await;
            });
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, usize>> {
        self.busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One attempt of a claimed delivery, recorded with what follows from it.
    async fn attempt(&self, due: DueDelivery, claim: &str) {
        let endpoint = match self.store.endpoint(&due.owner, &due.endpoint_id).await {
            Ok(Some(endpoint)) if endpoint.enabled => endpoint,
            Ok(_) => {
                // Deleted or disabled since it was claimed.
                if let Err(error) = self.store.release(&due, claim).await {
                    log_store_error(&error, "releasing a webhook delivery");
                }
                return;
            }
            Err(error) => return log_store_error(&error, "reading a webhook endpoint"),
        };
        let made = due.attempts.saturating_add(1);
        let at = self.clock.now();
        let started = tokio::time::Instant::now();
        let answer = self.send(&endpoint, &due, at).await;
        let latency = started.elapsed();
        let now = self.clock.now();
        let (status_code, error, retry_after) = match &answer {
            Answer::Success(status) => (Some(*status), None, None),
            Answer::Gone => (
                Some(410),
                Some("410 Gone: the endpoint is disabled".to_owned()),
                None,
            ),
            Answer::Failure {
                status,
                error,
                retry_after,
            } => (*status, Some(error.clone()), *retry_after),
        };
        let outcome = match answer {
            Answer::Success(_) => AttemptOutcome::Delivered,
            Answer::Gone => AttemptOutcome::Failed,
            Answer::Failure { .. } => {
                match self
                    .policy
                    .schedule
                    .next(made, now, super::schedule::jitter(), retry_after)
                {
                    Some(next_attempt_at) => AttemptOutcome::Retry { next_attempt_at },
                    None => AttemptOutcome::Failed,
                }
            }
        };
        let attempt = Attempt {
            attempt: made,
            at,
            status_code,
            latency_ms: latency.as_secs_f64() * 1000.0,
            error,
        };
        match self
            .store
            .record_attempt(&due, claim, &attempt, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    endpoint_id = %due.endpoint_id,
                    message_id = %due.message_id,
                    "a webhook attempt outlived its lease; another instance has the delivery"
                );
                return;
            }
            Err(error) => return log_store_error(&error, "recording a webhook attempt"),
        }
        self.after(&endpoint, &due, &attempt, &outcome, now).await;
    }

    /// Metrics, the log line and the endpoint's health after an attempt.
    async fn after(
        &self,
        endpoint: &Endpoint,
        due: &DueDelivery,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) {
        let gone = attempt.status_code == Some(410);
        let result = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Failed if gone => "gone",
            AttemptOutcome::Failed => "exhausted",
        };
        metrics::counter!("kyc_webhook_attempts_total", "result" => result).increment(1);
        metrics::histogram!("kyc_webhook_attempt_seconds").record(attempt.latency_ms / 1000.0);
        if !matches!(outcome, AttemptOutcome::Retry { .. }) {
            let state = if result == "delivered" {
                "delivered"
            } else {
                "failed"
            };
            metrics::counter!("kyc_webhook_messages_total", "outcome" => state).increment(1);
        }
        let span = tracing::info_span!(
            "webhook",
            endpoint_id = %due.endpoint_id,
            message_id = %due.message_id,
            attempt = attempt.attempt,
        );
        let _entered = span.enter();
        match outcome {
            AttemptOutcome::Delivered => tracing::info!(
                status = attempt.status_code,
                latency_ms = attempt.latency_ms,
                "webhook delivered"
            ),
            AttemptOutcome::Retry { next_attempt_at } => tracing::warn!(
                status = attempt.status_code,
                error = attempt.error.as_deref().unwrap_or_default(),
                next_attempt_at = %next_attempt_at,
                "webhook attempt failed; trying again later"
            ),
            AttemptOutcome::Failed => tracing::warn!(
                status = attempt.status_code,
                error = attempt.error.as_deref().unwrap_or_default(),
                "webhook message not delivered; no more attempts (resendable)"
            ),
        }
        let failing_for = endpoint
            .failing_since
            .map(|since| (now - since).to_std().unwrap_or_default());
        let (failing, disable) = match outcome {
            AttemptOutcome::Delivered => (None, None),
            _ if gone => (Some(now), Some("gone")),
            _ if failing_for.is_some_and(|f| f >= self.policy.disable_after) => {
                (Some(now), Some("failing"))
            }
            _ => (Some(now), None),
        };
        metrics::gauge!("kyc_webhook_endpoint_failing_seconds", "endpoint" => endpoint.id.to_string())
            .set(if failing.is_some() {
                failing_for.unwrap_or_default().as_secs_f64()
            } else {
                0.0
            });
        if let Some(reason) = disable {
            tracing::warn!(reason, "webhook endpoint disabled");
        }
        let changed = disable.is_some() || failing.is_some() != endpoint.failing_since.is_some();
        if changed
            && let Err(error) = self
                .store
                .endpoint_health(&endpoint.id, failing, disable, now)
                .await
        {
            log_store_error(&error, "recording a webhook endpoint's health");
        }
    }

    /// Posts the message, signed with the endpoint's current secrets.
    async fn send(&self, endpoint: &Endpoint, due: &DueDelivery, at: DateTime<Utc>) -> Answer {
        if let Err(refused) = self.policy.targets.check_form(&endpoint.url) {
            return Answer::Failure {
                status: None,
                error: refused.to_string(),
                retry_after: None,
            };
        }
        let timestamp = at.timestamp();
        let signed = signature(
            &endpoint.signing_secrets(at),
            due.message_id.as_str(),
            timestamp,
            due.payload.as_bytes(),
        );
        let request = self
            .http
            .post(&endpoint.url)
            .header("webhook-id", due.message_id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .header(CONTENT_TYPE, "application/json")
            .body(due.payload.clone());
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| super::schedule::retry_after(v, self.clock.now()));
            // Read (and drop) at most MAX_ANSWER_BYTES, then let the connection go.
            let mut body = response.bytes_stream();
            let mut read = 0;
            while let Some(chunk) = body.next().await {
                read += chunk?.len();
                if read >= MAX_ANSWER_BYTES {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after))
        };
        match tokio::time::timeout(self.policy.timeout, exchange).await {
            Err(_) => Answer::Failure {
                status: None,
                error: format!(
                    "no answer within {}",
                    humantime::format_duration(self.policy.timeout)
                ),
                retry_after: None,
            },
            Ok(Err(error)) => {
                // Without the URL: its path or query may carry the receiver's own token.
                let error = error.without_url();
                Answer::Failure {
                    status: None,
                    error: ErrorChain(&error).to_string(),
                    retry_after: None,
                }
            }
            Ok(Ok((status, retry_after))) => classify(status, retry_after),
        }
    }

    /// Forgets a batch of finished messages older than `webhooks.keep_days`; whether there
    /// may be more.
    async fn purge(&self) -> bool {
        let Some(keep) = self.policy.keep else {
            return false;
        };
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let Some(before) = self.clock.now().checked_sub_signed(keep) else {
            return false;
        };
        match self.store.purge_webhooks(before, PURGE_BATCH).await {
            Ok(n) => {
                metrics::counter!("kyc_webhook_messages_purged_total").increment(n);
                n == PURGE_BATCH as u64
            }
            Err(error) => {
                log_store_error(&error, "purging webhook messages");
                false
            }
        }
    }

    /// The backlog gauges.
    async fn measure(&self) {
        match self.store.backlog().await {
            Ok(backlog) => {
                metrics::gauge!("kyc_webhook_unrouted_messages").set(backlog.unrouted as f64);
                metrics::gauge!("kyc_webhook_pending_deliveries").set(backlog.pending as f64);
                let age = backlog
                    .oldest_pending
                    .map(|at| (self.clock.now() - at).to_std().unwrap_or_default());
                metrics::gauge!("kyc_webhook_oldest_pending_seconds")
                    .set(age.unwrap_or_default().as_secs_f64());
            }
            Err(error) => log_store_error(&error, "measuring the webhook backlog"),
        }
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>) -> Answer {
    let code = status.as_u16();
    if status.is_success() {
        return Answer::Success(code);
    }
    if status == StatusCode::GONE {
        return Answer::Gone;
    }
    let error = if status.is_redirection() {
        format!("{code}: a redirect, not followed")
    } else {
        format!("{code}: not a 2xx")
    };
    let honoured = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    );
    Answer::Failure {
        status: Some(code),
        error,
        retry_after: retry_after.filter(|_| honoured),
    }
}

/// Frees an endpoint's place when an attempt ends, however it ends.
struct Slot {
    busy: Arc<Mutex<HashMap<EndpointId, usize>>>,
    endpoint: EndpointId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = busy.get_mut(&self.endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.endpoint);
            }
        }
    }
}

fn log_store_error(error: &StoreError, doing: &'static str) {
    tracing::warn!(error = %ErrorChain(error), doing, "webhook dispatch: the store failed");
}

/// The HTTP client of webhook attempts: rustls, pooled, no redirects, no proxy from the
/// environment (the address connected to must be the one checked), and a resolver that hands
/// out only allowed addresses.
fn client(policy: &Policy) -> reqwest::Client {
    crate::http::client()
        .user_agent(concat!(
            "kyc-orchestrator-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(policy.timeout)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: policy.targets.allow_private,
        }))
        .build()
        .expect("the webhook HTTP client builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_schedule_needs() {
        let wait = Some(Duration::from_secs(60));

        assert!(matches!(
            classify(StatusCode::NO_CONTENT, None),
            Answer::Success(204)
        ));
        assert!(matches!(classify(StatusCode::GONE, None), Answer::Gone));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, wait),
            Answer::Failure {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, wait),
            Answer::Failure {
                retry_after: None,
                ..
            }
        ));
        let Answer::Failure { error, .. } = classify(StatusCode::FOUND, None) else {
            panic!("a redirect is a failure");
        };
        assert!(error.contains("not followed"));
    }
}
