//! Message bodies: `{"type", "timestamp", "data"}`, thin on purpose. `session.completed` says
//! which session, how its agents decided and why; `session.reviewed`, how its review resolved.
//! Never what was read from the document or the images, nor a reviewer's note: a receiver that
//! needs more fetches the session with its own key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{CheckStatus, Decision, Mode, OutboxMessage, SessionId, SessionRecord};

/// One message's body, as sent (and signed) on every attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookMessage {
    /// `session.completed` or `session.reviewed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the reported event happened.
    pub timestamp: DateTime<Utc>,
    pub data: MessageData,
}

/// The data of a message, by its type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MessageData {
    Completed(SessionCompleted),
    Reviewed(SessionReviewed),
}

/// `session.completed`'s data: what the agents decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionCompleted {
    pub session_id: SessionId,
    /// The client's own reference, when it gave one.
    pub reference: Option<String>,
    pub mode: Mode,
    /// The agents' decision; `review` is followed by `session.reviewed` once a reviewer has
    /// decided.
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// Each check's status and reason codes.
    pub checks: BTreeMap<String, CheckSummary>,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// The `seq` of the `session.completed` event in the session's event stream.
    pub seq: u64,
}

/// `session.reviewed`'s data: the review of a session the agents decided `review` has
/// resolved. Who decided, and their notes, are on the session (`GET /v1/sessions/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionReviewed {
    pub session_id: SessionId,
    pub reference: Option<String>,
    pub mode: Mode,
    /// The reviewers' decision: the session's from now on.
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// What the agents decided (`review`) and why.
    pub automated_decision: Decision,
    pub automated_reasons: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub resolved_at: DateTime<Utc>,
    /// The `seq` of the `review.resolved` event in the session's event stream.
    pub seq: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckSummary {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The body of `message`, from its session; `None` when the session cannot report it (no
/// completion, or for `session.reviewed` no resolved review).
pub fn body(message: &OutboxMessage, session: &SessionRecord) -> Option<String> {
    let completion = session.completion.as_ref()?;
    let (automated_decision, automated_reasons) = session.automated()?;
    let (timestamp, data) = match message.event_type.as_str() {
        "session.reviewed" => {
            let resolved_at = session.review.as_ref()?.resolved_at?;
            let data = SessionReviewed {
                session_id: session.id,
                reference: session.reference.clone(),
                mode: session.owner.mode,
                decision: completion.decision,
                reasons: completion.reasons.clone(),
                automated_decision,
                automated_reasons: automated_reasons.to_vec(),
                created_at: session.created_at,
                completed_at: completion.completed_at,
                resolved_at,
                seq: message.seq,
            };
            (resolved_at, MessageData::Reviewed(data))
        }
        _ => {
            // Routed after a review has resolved, it still reports what the agents decided.
            let data = SessionCompleted {
                session_id: session.id,
                reference: session.reference.clone(),
                mode: session.owner.mode,
                decision: automated_decision,
                reasons: automated_reasons.to_vec(),
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
            };
            (completion.completed_at, MessageData::Completed(data))
        }
    };
    let body = WebhookMessage {
        event_type: message.event_type.clone(),
        timestamp,
        data,
    };
    Some(serde_json::to_string(&body).expect("a message body serialises"))
}
