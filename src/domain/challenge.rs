//! Liveness challenges: a random sequence of head movements the server issues, remembers and
//! checks. A recording made before the challenge was drawn cannot know its steps.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Owner, SessionId, random_bytes};

prefixed_id!(
    /// A challenge's public id, `chl_` and 24 letters or digits (143 bits): unguessable, so
    /// that nobody answers another applicant's challenge by naming it.
    ChallengeId, "chl_", 24, b"", "a challenge id", "chl_7Hq2LmX9bTz4RkWc1VnP0sJd"
);

/// One movement of the head, named from the person's point of view. In an image as the camera
/// takes it (not a mirrored preview), turning to one's own left moves the nose toward the
/// image's right edge.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeStep {
    TurnLeft,
    TurnRight,
    LookUp,
    LookDown,
}

impl ChallengeStep {
    pub const ALL: [Self; 4] = [
        Self::TurnLeft,
        Self::TurnRight,
        Self::LookUp,
        Self::LookDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TurnLeft => "turn_left",
            Self::TurnRight => "turn_right",
            Self::LookUp => "look_up",
            Self::LookDown => "look_down",
        }
    }

    /// A nod (about the horizontal axis) rather than a turn.
    pub fn is_pitch(self) -> bool {
        matches!(self, Self::LookUp | Self::LookDown)
    }
}

impl fmt::Display for ChallengeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChallengeStep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a step (turn_left, turn_right, look_up, look_down)")
            })
    }
}

/// `length` steps drawn uniformly from `vocabulary` with the OS's random source, each differing
/// from the one before unless the vocabulary has a single step. `vocabulary` must not be empty.
pub fn draw_steps(vocabulary: &[ChallengeStep], length: usize) -> Vec<ChallengeStep> {
    assert!(
        !vocabulary.is_empty(),
        "a challenge needs steps to draw from"
    );
    let mut steps: Vec<ChallengeStep> = Vec::with_capacity(length);
    while steps.len() < length {
        let choices: Vec<ChallengeStep> = vocabulary
            .iter()
            .copied()
            .filter(|s| vocabulary.len() == 1 || steps.last() != Some(s))
            .collect();
        steps.push(choices[uniform(choices.len())]);
    }
    steps
}

/// A uniform index below `n` (at most 256): bytes of the range's uneven tail are drawn again.
fn uniform(n: usize) -> usize {
    let limit = 256 - 256 % n;
    loop {
        let [byte] = random_bytes::<1>();
        if usize::from(byte) < limit {
            return usize::from(byte) % n;
        }
    }
}

/// A challenge as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: ChallengeId,
    /// Only this tenant and mode's sessions may answer it.
    pub owner: Owner,
    pub steps: Vec<ChallengeStep>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session that answered it: a challenge is used once.
    pub used_by: Option<SessionId>,
}

/// The challenge a selfie answers. The client names it; its steps come from the store when the
/// session starts (never from the client), and travel with the session's inputs from then on,
/// so that a session resumed elsewhere is judged against the same steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfieChallenge {
    pub id: ChallengeId,
    /// Empty until the session has taken the challenge.
    #[serde(default)]
    pub steps: Vec<ChallengeStep>,
}

/// Why a session may not answer the challenge it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeRefusal {
    /// No such challenge, or another tenant's or mode's.
    #[error("no such challenge")]
    Unknown,
    #[error("the challenge was answered by another session; ask for a new one")]
    Used,
    #[error("the challenge expired; ask for a new one")]
    Expired,
}

impl ChallengeRefusal {
    /// The field error's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_challenge",
            Self::Used => "challenge_used",
            Self::Expired => "challenge_expired",
        }
    }
}

impl Challenge {
    /// Why a session of `owner` may not answer it at `now`, if it may not. Another owner's
    /// challenge is refused as an unknown one.
    pub fn refusal(&self, owner: &Owner, now: DateTime<Utc>) -> Option<ChallengeRefusal> {
        if &self.owner != owner {
            Some(ChallengeRefusal::Unknown)
        } else if self.used_by.is_some() {
            Some(ChallengeRefusal::Used)
        } else if now >= self.expires_at {
            Some(ChallengeRefusal::Expired)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_drawn_from_the_vocabulary_never_twice_in_a_row() {
        let vocabulary = [ChallengeStep::TurnLeft, ChallengeStep::TurnRight];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let steps = draw_steps(&vocabulary, 3);
            assert_eq!(steps.len(), 3);
            assert!(steps.windows(2).all(|w| w[0] != w[1]), "{steps:?}");
            seen.insert(steps);
        }
        // Two sequences alternate left and right; both are drawn.
        assert_eq!(seen.len(), 2);

        let one = [ChallengeStep::LookUp];
        assert_eq!(draw_steps(&one, 2), vec![ChallengeStep::LookUp; 2]);
    }

    #[test]
    fn every_sequence_of_a_larger_vocabulary_comes_up() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            seen.insert(draw_steps(&ChallengeStep::ALL, 2));
        }
        // 4 first steps times 3 different second ones.
        assert_eq!(seen.len(), 12);
    }

    #[test]
    fn steps_parse_by_their_names() {
        for step in ChallengeStep::ALL {
            assert_eq!(step.as_str().parse::<ChallengeStep>(), Ok(step));
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
        }
        assert!("spin".parse::<ChallengeStep>().is_err());
    }
}
