//! The decision policy: pure, so that every decision can be recomputed from its checks.
//!
//! - `declined` when a failed check carries a reason code listed in `policy.decline_on`;
//! - `approved` only when every check passed and the deadline held;
//! - otherwise `review`, with a reason for everything that kept it from `approved`.

use std::collections::HashSet;

use crate::config::PolicySettings;
use crate::domain::{CheckResult, CheckStatus, Decision};

/// A decision and the reason codes that explain it, most decisive first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reasons: Vec<String>,
}

/// Turns checks into a decision.
#[derive(Debug, Clone)]
pub struct Policy {
    decline_on: HashSet<String>,
}

impl Policy {
    pub fn new(settings: &PolicySettings) -> Self {
        Self {
            decline_on: settings.decline_on.iter().cloned().collect(),
        }
    }

    /// Whether this check alone already declines the session (what fail-fast stops on).
    pub fn is_decisive(&self, check: &CheckResult) -> bool {
        check.status == CheckStatus::Failed
            && check.reasons.iter().any(|r| self.decline_on.contains(r))
    }

    /// Decides from every check of the session, in plan order.
    pub fn decide<'a>(
        &self,
        checks: impl IntoIterator<Item = (&'a str, &'a CheckResult)>,
        deadline_exceeded: bool,
    ) -> Verdict {
        let mut decisive = Vec::new();
        let mut other = Vec::new();
        let mut all_passed = !deadline_exceeded;
        for (agent, check) in checks {
            all_passed &= check.status == CheckStatus::Passed;
            match check.status {
                CheckStatus::Passed | CheckStatus::Skipped => {}
                CheckStatus::Failed if self.is_decisive(check) => {
                    decisive.extend(check.reasons.iter().cloned());
                }
                CheckStatus::Failed if check.reasons.is_empty() => {
                    other.push(format!("check_failed:{agent}"));
                }
                CheckStatus::Failed => other.extend(check.reasons.iter().cloned()),
                // A remote agent's error says why (`agent_unavailable:NAME`).
                CheckStatus::Error if !check.reasons.is_empty() => {
                    other.extend(check.reasons.iter().cloned());
                }
                CheckStatus::Error => other.push(format!("agent_error:{agent}")),
                CheckStatus::Timeout => other.push(format!("agent_timeout:{agent}")),
            }
        }
        if deadline_exceeded {
            other.push("deadline_exceeded".to_owned());
        }
        let decision = if !decisive.is_empty() {
            Decision::Declined
        } else if all_passed {
            Decision::Approved
        } else {
            Decision::Review
        };
        let mut reasons = decisive;
        reasons.extend(other);
        let mut seen = HashSet::new();
        reasons.retain(|r| seen.insert(r.clone()));
        Verdict { decision, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(&PolicySettings {
            decline_on: vec!["liveness_failed".into(), "face_mismatch".into()],
        })
    }

    fn check(status: CheckStatus, reasons: &[&str]) -> CheckResult {
        CheckResult {
            status,
            score: None,
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
            detail: None,
            duration_ms: Some(1.0),
            details: serde_json::Value::Null,
            extracted: None,
        }
    }

    #[test]
    fn all_passed_is_approved_without_reasons() {
        let passed = check(CheckStatus::Passed, &[]);
        let verdict = policy().decide([("a", &passed), ("b", &passed)], false);
        assert_eq!(verdict.decision, Decision::Approved);
        assert!(verdict.reasons.is_empty());
    }

    #[test]
    fn a_listed_failure_declines_and_comes_first() {
        let error = check(CheckStatus::Error, &[]);
        let spoof = check(CheckStatus::Failed, &["liveness_failed"]);
        let verdict = policy().decide([("ocr", &error), ("liveness", &spoof)], false);
        assert_eq!(verdict.decision, Decision::Declined);
        assert_eq!(verdict.reasons, ["liveness_failed", "agent_error:ocr"]);
    }

    #[test]
    fn an_unlisted_failure_an_error_and_a_timeout_go_to_review() {
        let blurry = check(CheckStatus::Failed, &["too_blurry"]);
        let error = check(CheckStatus::Error, &[]);
        let timeout = check(CheckStatus::Timeout, &[]);
        let skipped = check(CheckStatus::Skipped, &[]);
        let verdict = policy().decide(
            [
                ("doc_capture", &blurry),
                ("ocr", &error),
                ("liveness", &timeout),
                ("face_match", &skipped),
            ],
            true,
        );
        assert_eq!(verdict.decision, Decision::Review);
        assert_eq!(
            verdict.reasons,
            [
                "too_blurry",
                "agent_error:ocr",
                "agent_timeout:liveness",
                "deadline_exceeded"
            ]
        );
    }

    #[test]
    fn passing_checks_past_the_deadline_are_not_approved() {
        let passed = check(CheckStatus::Passed, &[]);
        let verdict = policy().decide([("a", &passed)], true);
        assert_eq!(verdict.decision, Decision::Review);
        assert_eq!(verdict.reasons, ["deadline_exceeded"]);
    }
}
