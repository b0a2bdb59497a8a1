//! Manual review: the case a session decided `review` opens, the decisions people make on it,
//! and the rule that says where each decision leaves the case. The rule is here, apart from the
//! store and the API, so that it reads in one place and is tested without either.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Decision, KeyId, SessionId};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Most reason codes on one decision.
pub const MAX_REVIEW_REASONS: usize = 16;

/// Where a review case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for a decision.
    Open,
    /// Four-eyes: one reviewer has decided; a second, different one confirms or disagrees.
    PendingSecond,
    /// Decided: the session's `decision` is the reviewers'.
    Resolved,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::PendingSecond => "pending_second",
            Self::Resolved => "resolved",
        }
    }
}

impl FromStr for ReviewStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "open" => Ok(Self::Open),
            "pending_second" => Ok(Self::PendingSecond),
            "resolved" => Ok(Self::Resolved),
            other => Err(format!("review status `{other}`")),
        }
    }
}

/// What a reviewer decides: a review ends in one of these, never in another `review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Declined,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        Decision::from(self).as_str()
    }
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Approved => Self::Approved,
            Verdict::Declined => Self::Declined,
        }
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "approved" => Ok(Self::Approved),
            "declined" => Ok(Self::Declined),
            other => Err(format!("verdict `{other}`")),
        }
    }
}

/// A session's review case, as stored beside the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewState {
    pub status: ReviewStatus,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Why the agents sent the session to review: the reasons of its automated decision, kept
    /// when a review replaces the session's reasons with the reviewers'.
    pub automated_reasons: Vec<String>,
    /// The `seq` of the case's `review.opened` event.
    pub opened_seq: u64,
    /// The `seq` of the case's latest event: each decision advances it, so a decision made on
    /// a case read at one `last_seq` is stored only if nobody decided since.
    pub last_seq: u64,
}

/// Who decided: the calling API key, never a name the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reviewer {
    /// The key's public id.
    pub key_id: KeyId,
    /// The key's label when the decision was made (who holds the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One decision on a case. Decisions are append-only; an erasure clears `note` alone.
#[derive(Clone, PartialEq, Eq)]
pub struct ReviewDecision {
    /// The `seq` of its `review.decided` event: its place in the session's history.
    pub seq: u64,
    pub reviewer: Reviewer,
    pub decided_at: DateTime<Utc>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// The reviewer's free text: it may name the applicant, so it is personal data (never
    /// logged, cleared by an erasure).
    pub note: Option<String>,
}

impl fmt::Debug for ReviewDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReviewDecision")
            .field("seq", &self.seq)
            .field("reviewer", &self.reviewer.key_id)
            .field("decided_at", &self.decided_at)
            .field("verdict", &self.verdict)
            .field("reasons", &self.reasons)
            .field("note", &self.note.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A case in the queue: the session it is about and its decisions so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewCase {
    pub session_id: SessionId,
    pub reference: Option<String>,
    pub state: ReviewState,
    pub decisions: Vec<ReviewDecision>,
}

/// Which of an owner's cases a queue page asks for, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewQuery {
    /// The statuses wanted; never empty.
    pub statuses: Vec<ReviewStatus>,
    /// Only cases after this one in the queue's order: the previous page's last.
    pub after: Option<QueuePosition>,
    pub limit: usize,
}

/// A place in the queue: a case's opening time and session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePosition {
    pub opened_at: DateTime<Utc>,
    pub session_id: SessionId,
}

/// How a decision resolves a case: the session's decision and reasons from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub resolved_at: DateTime<Utc>,
}

/// Where a decision leaves its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub status: ReviewStatus,
    /// Set when the decision resolves the case.
    pub resolution: Option<Resolution>,
}

/// Why a decision cannot be made on a case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the review of this session is already resolved")]
    Resolved,
    #[error(
        "four-eyes review: this key made the first decision; a second reviewer, with a key of \
         their own, confirms it"
    )]
    SameReviewer,
}

/// Where `decision` leaves a case in `state` with `decisions` so far.
///
/// Without four-eyes a decision resolves an unresolved case. With it, the first decision leaves
/// the case `pending_second`; a second one by somebody else (`same_reviewer` says whether a key
/// is the first reviewer's, rotations included) resolves it when it agrees, and sends it back
/// to `open` when it does not, both decisions kept. A case found `pending_second` after four-eyes
/// was switched off resolves with the next decision, as any unresolved case would.
pub fn step(
    state: &ReviewState,
    decisions: &[ReviewDecision],
    decision: &ReviewDecision,
    four_eyes: bool,
    same_reviewer: impl Fn(&KeyId) -> bool,
) -> Result<Step, Refusal> {
    let resolve = |reasons: Vec<String>| Step {
        status: ReviewStatus::Resolved,
        resolution: Some(Resolution {
            verdict: decision.verdict,
            reasons,
            resolved_at: decision.decided_at,
        }),
    };
    match state.status {
        ReviewStatus::Resolved => Err(Refusal::Resolved),
        _ if !four_eyes => Ok(resolve(decision.reasons.clone())),
        ReviewStatus::Open => Ok(Step {
            status: ReviewStatus::PendingSecond,
            resolution: None,
        }),
        ReviewStatus::PendingSecond => {
            let Some(first) = decisions.last() else {
                // A pending case always has its first decision; without one, this decision
                // is the first.
                return Ok(Step {
                    status: ReviewStatus::PendingSecond,
                    resolution: None,
                });
            };
            if same_reviewer(&first.reviewer.key_id) {
                return Err(Refusal::SameReviewer);
            }
            if first.verdict != decision.verdict {
                return Ok(Step {
                    status: ReviewStatus::Open,
                    resolution: None,
                });
            }
            // Both reviewers' reasons, the first's first, each once.
            let mut reasons = first.reasons.clone();
            for reason in &decision.reasons {
                if !reasons.contains(reason) {
                    reasons.push(reason.clone());
                }
            }
            Ok(resolve(reasons))
        }
    }
}

/// Why a note cannot be kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is longer than {MAX_NOTE_CHARS} characters")]
    TooLong,
    #[error("the note contains control characters other than line breaks and tabs")]
    ControlCharacters,
}

/// A note as kept: `None` when blank.
pub fn check_note(note: Option<String>) -> Result<Option<String>, NoteError> {
    let Some(note) = note.filter(|n| !n.trim().is_empty()) else {
        return Ok(None);
    };
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(NoteError::TooLong);
    }
    if note
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(NoteError::ControlCharacters);
    }
    Ok(Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyId {
        format!("key_{}", char::from(b'a' + n).to_string().repeat(16))
            .parse()
            .unwrap()
    }

    fn decision(by: u8, verdict: Verdict, reasons: &[&str]) -> ReviewDecision {
        ReviewDecision {
            seq: 0,
            reviewer: Reviewer {
                key_id: key(by),
                label: None,
            },
            decided_at: Utc::now(),
            verdict,
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            note: None,
        }
    }

    fn state(status: ReviewStatus) -> ReviewState {
        ReviewState {
            status,
            opened_at: Utc::now(),
            resolved_at: None,
            automated_reasons: vec!["face_mismatch".into()],
            opened_seq: 9,
            last_seq: 9,
        }
    }

    #[test]
    fn without_four_eyes_one_decision_resolves_with_its_own_reasons() {
        let mine = decision(1, Verdict::Approved, &["verified_manually"]);

        let step = step(&state(ReviewStatus::Open), &[], &mine, false, |_| false).unwrap();

        assert_eq!(step.status, ReviewStatus::Resolved);
        let resolution = step.resolution.unwrap();
        assert_eq!(resolution.verdict, Verdict::Approved);
        assert_eq!(resolution.reasons, ["verified_manually"]);
    }

    #[test]
    fn with_four_eyes_a_second_reviewer_confirms_refuses_the_first_and_disagreement_reopens() {
        let first = decision(1, Verdict::Declined, &["document_fraud"]);
        let pending = step(&state(ReviewStatus::Open), &[], &first, true, |_| false).unwrap();
        assert_eq!(pending.status, ReviewStatus::PendingSecond);
        assert_eq!(pending.resolution, None);

        let case = state(ReviewStatus::PendingSecond);
        let so_far = [first.clone()];
        let again = decision(1, Verdict::Declined, &[]);
        assert_eq!(
            step(&case, &so_far, &again, true, |k| *k == key(1)),
            Err(Refusal::SameReviewer)
        );

        let agree = decision(
            2,
            Verdict::Declined,
            &["identity_mismatch", "document_fraud"],
        );
        let done = step(&case, &so_far, &agree, true, |k| *k == key(2)).unwrap();
        assert_eq!(done.status, ReviewStatus::Resolved);
        assert_eq!(
            done.resolution.unwrap().reasons,
            ["document_fraud", "identity_mismatch"],
            "both reviewers' reasons, each once"
        );

        let disagree = decision(2, Verdict::Approved, &["verified_manually"]);
        let back = step(&case, &so_far, &disagree, true, |k| *k == key(2)).unwrap();
        assert_eq!(back.status, ReviewStatus::Open);
        assert_eq!(back.resolution, None);
    }

    #[test]
    fn a_resolved_case_takes_no_more_decisions() {
        let late = decision(3, Verdict::Approved, &["verified_manually"]);
        for four_eyes in [false, true] {
            assert_eq!(
                step(
                    &state(ReviewStatus::Resolved),
                    &[],
                    &late,
                    four_eyes,
                    |_| false
                ),
                Err(Refusal::Resolved)
            );
        }
    }

    #[test]
    fn notes_are_bounded_and_blank_ones_are_none() {
        assert_eq!(check_note(None), Ok(None));
        assert_eq!(check_note(Some("  \n".into())), Ok(None));
        assert_eq!(
            check_note(Some("two lines\nof text".into())),
            Ok(Some("two lines\nof text".into()))
        );
        assert_eq!(
            check_note(Some("é".repeat(MAX_NOTE_CHARS))).map(|n| n.map(|n| n.chars().count())),
            Ok(Some(MAX_NOTE_CHARS)),
            "characters, not bytes"
        );
        assert_eq!(
            check_note(Some("x".repeat(MAX_NOTE_CHARS + 1))),
            Err(NoteError::TooLong)
        );
        assert_eq!(
            check_note(Some("bell\u{7}".into())),
            Err(NoteError::ControlCharacters)
        );
    }
}
