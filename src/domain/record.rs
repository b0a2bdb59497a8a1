//! A session as it is kept and shown: its status, its completion, and what an erasure found.
//! The store keeps these and the API shows them; neither owns them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CheckResult, Decision, KeyId, Owner, ReviewState, SessionId};

/// Whether a session is still being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Running,
    Completed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
        }
    }
}

/// A session as stored. Its `Debug` leaves out the client's reference.
#[derive(Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    /// The tenant and mode whose data it is: every read of it filters by them.
    pub owner: Owner,
    /// The key that started it (`None` for a session started in-process, not through the API).
    pub created_by: Option<KeyId>,
    pub reference: Option<String>,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// Fingerprint of the agent plan that runs (or ran) the session.
    pub plan_version: String,
    /// The instance running the session.
    pub instance: String,
    /// How often the session was resumed after its instance stopped.
    pub attempts: u32,
    pub completion: Option<Completion>,
    pub images_erased_at: Option<DateTime<Utc>>,
    /// Set once the images and every extracted personal field are gone.
    pub erased_at: Option<DateTime<Utc>>,
    /// The key that erased it; `None` when retention did.
    pub erased_by: Option<KeyId>,
    /// Its review case, when its agents decided `review`. Once the case is resolved,
    /// `completion`'s decision and reasons are the reviewers'.
    pub review: Option<ReviewState>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("instance", &self.instance)
            .field("attempts", &self.attempts)
            .field("completion", &self.completion)
            .field("erased_at", &self.erased_at)
            .field("review", &self.review.as_ref().map(|r| r.status))
            .finish_non_exhaustive()
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub completed_at: DateTime<Utc>,
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub checks: BTreeMap<String, CheckResult>,
    pub duration_ms: f64,
}

impl SessionRecord {
    /// What the agents decided, and why: the completion's decision and reasons unless a review
    /// replaced them. Kept for ever, whatever reviewers decide.
    pub fn automated(&self) -> Option<(Decision, &[String])> {
        let completion = self.completion.as_ref()?;
        Some(match &self.review {
            Some(review) => (Decision::Review, review.automated_reasons.as_slice()),
            None => (completion.decision, completion.reasons.as_slice()),
        })
    }
}

/// What an erasure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    Erased,
    /// A running session keeps its data until it completes.
    Running,
    NotFound,
}

/// Which of an owner's sessions a list asks for, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionQuery {
    pub status: Option<SessionStatus>,
    pub decision: Option<Decision>,
    /// Exact match on the client's reference.
    pub reference: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only sessions after this one in the list's order: the previous page's last.
    pub after: Option<ListPosition>,
    pub limit: usize,
}

/// A place in the list (newest first): a session's creation time and id, so that pages neither
/// repeat nor skip a session however many are inserted meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: DateTime<Utc>,
    pub id: SessionId,
}
