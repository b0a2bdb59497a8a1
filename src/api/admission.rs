//! Admission control and the service's lifecycle.
//!
//! At most `server.max_inflight_sessions` sessions run at once. The [`AdmissionPermit`]
//! extractor takes a slot before the body is read or parsed, so an overloaded instance answers
//! 503 at once instead of queueing; the slot is held by the session until it completes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::AppState;
use super::error::ApiError;

/// The running-session limit.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    retry_after_s: u64,
}

impl Admission {
    pub fn new(max: usize, retry_after_s: u64) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            retry_after_s,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn saturated(&self) -> bool {
        self.slots.available_permits() == 0
    }
}

/// Whether the instance is draining for shutdown.
#[derive(Clone)]
pub struct Lifecycle {
    draining: Arc<watch::Sender<bool>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: Arc::new(watch::channel(false).0),
        }
    }
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        let mut changes = self.draining.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = changes.wait_for(|draining| *draining).await;
    }
}

/// A slot for one new session, taken before the request body is touched.
pub struct AdmissionPermit(pub OwnedSemaphorePermit);

impl FromRequestParts<AppState> for AdmissionPermit {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.lifecycle.is_draining() {
            metrics::counter!("kyc_sessions_rejected_total", "reason" => "draining").increment(1);
            return Err(ApiError::ShuttingDown);
        }
        let admission = &state.admission;
        match Arc::clone(&admission.slots).try_acquire_owned() {
            Ok(permit) => Ok(Self(permit)),
            Err(_) => {
                metrics::counter!("kyc_sessions_rejected_total", "reason" => "overloaded")
                    .increment(1);
                Err(ApiError::Overloaded {
                    retry_after_s: admission.retry_after_s,
                })
            }
        }
    }
}
