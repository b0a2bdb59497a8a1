//! Webhook endpoints, the messages sent to them and each delivery's state: what the store keeps
//! and the API shows. Signing and sending are `crate::webhooks`'s.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Owner, SessionId};

/// The message types an endpoint can subscribe to. `session.completed` is sent when a session's
/// agents have decided, `session.reviewed` when its manual review resolves.
pub const EVENT_TYPES: &[&str] = &["session.completed", "session.reviewed"];

prefixed_id!(
    /// An endpoint's public id, `we_` and 16 letters or digits.
    EndpointId, "we_", 16, b"", "an endpoint id", "we_4f1TzqGmW9JbK2xR"
);

prefixed_id!(
    /// A message's id, `msg_` and 22 letters or digits: the `webhook-id` header, the same on
    /// every attempt and to every endpoint, so a receiver dedupes on it.
    MessageId, "msg_", 22, b"", "a message id", "msg_3xq8VbN0aLr7TcYe2WkP1s"
);

/// A signing secret as the store keeps it: `whsec_` and the base64 of its bytes (the Standard
/// Webhooks form, which receivers' libraries take as it is). Never in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// Wraps a stored or generated secret; the caller has checked its form.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// A secret that was replaced and still signs beside the new one until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringSecret {
    pub secret: SigningSecret,
    pub until: DateTime<Utc>,
}

/// Where a tenant's messages go.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub owner: Owner,
    pub url: String,
    /// The message types sent to it, each one of [`EVENT_TYPES`].
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why the service disabled it (`gone`: it answered 410; `failing`: every attempt failed
    /// for `webhooks.disable_after`); `None` when enabled or disabled by its owner.
    pub disabled_reason: Option<String>,
    pub secret: SigningSecret,
    pub previous_secret: Option<RetiringSecret>,
    /// Since when every attempt to it has failed; `None` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }

    /// The secrets that sign at `now`: the current one, and the previous one within its grace.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&SigningSecret> {
        let mut secrets = vec![&self.secret];
        if let Some(previous) = &self.previous_secret
            && previous.until > now
        {
            secrets.push(&previous.secret);
        }
        secrets
    }
}

/// A message waiting in the outbox: written with the session's completion, in the same
/// transaction, and routed to the owner's endpoints afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: MessageId,
    pub owner: Owner,
    pub event_type: String,
    pub session_id: SessionId,
    /// The `seq` of the session event the message reports.
    pub seq: u64,
    pub created_at: DateTime<Utc>,
}

/// Where one message to one endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answered.
    Delivered,
    /// Every attempt of the schedule failed, or the endpoint answered 410; resendable.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = String;

    fn from_str(state: &str) -> Result<Self, Self::Err> {
        match state {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(format!("`{other}` is not a delivery state")),
        }
    }
}

/// A delivery claimed for an attempt: the message as it is sent, and how many attempts came
/// before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    /// The message's (and so the endpoint's) owner.
    pub owner: Owner,
    pub event_type: String,
    /// The exact body sent on every attempt.
    pub payload: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The answer's status; absent when there was none (refused, timed out, broke).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    /// Why the attempt did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Delivered,
    /// Tried again at `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
    },
    /// No more attempts.
    Failed,
}

/// One message to one endpoint with its attempts, newest message first in a list.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub message_id: MessageId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    /// When it is tried next, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
}
