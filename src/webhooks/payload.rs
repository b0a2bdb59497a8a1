//! Message bodies: `{"type", "timestamp", "data"}`, thin on purpose. `session.completed` says
//! which session, how it ended and why, never what was read from the document or the images: a
//! receiver that needs more fetches the session with its own key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{CheckStatus, Decision, Mode, OutboxMessage, SessionId, SessionRecord};

/// One message's body, as sent (and signed) on every attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookMessage {
    /// `session.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the reported event happened.
    pub timestamp: DateTime<Utc>,
    pub data: SessionCompleted,
}

/// `session.completed`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionCompleted {
    pub session_id: SessionId,
    /// The client's own reference, when it gave one.
    pub reference: Option<String>,
    pub mode: Mode,
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// Each check's status and reason codes.
    pub checks: BTreeMap<String, CheckSummary>,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// The `seq` of the `session.completed` event in the session's event stream.
    pub seq: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckSummary {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The body of `message`, from its session; `None` when the session has no completion (it
/// cannot be reported).
pub fn body(message: &OutboxMessage, session: &SessionRecord) -> Option<String> {
    let completion = session.completion.as_ref()?;
    let body = WebhookMessage {
        event_type: message.event_type.clone(),
        timestamp: completion.completed_at,
        data: SessionCompleted {
            session_id: session.id,
            reference: session.reference.clone(),
            mode: session.owner.mode,
            decision: completion.decision,
            reasons: completion.reasons.clone(),
            checks: completion
                .checks
                .iter()
                .map(|(name, check)| {
                    let summary = CheckSummary {
                        status: check.status,
                        reasons: check.reasons.clone(),
                    };
                    (name.clone(), summary)
                })
                .collect(),
            created_at: session.created_at,
            completed_at: completion.completed_at,
            seq: message.seq,
        },
    };
    Some(serde_json::to_string(&body).expect("a message body serialises"))
}
