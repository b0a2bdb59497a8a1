//! The result of one agent's check and the session's decision: what a reviewer reads.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    Error,
    Timeout,
    Skipped,
}

/// One agent's check as recorded on the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckResult {
    pub status: CheckStatus,
    /// The agent's confidence where it has one, 0..=1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Machine-readable reason codes, e.g. `liveness_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Human-readable cause of an error, timeout or skip. Never personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Time from the agent's start to its result, in milliseconds with microsecond precision;
    /// absent for a check that never started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Agent-specific evidence (signals, thresholds, model ids) for whoever must explain the decision.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Personal data the agent read from the inputs (names, numbers, dates, MRZ text,
    /// embeddings). The only place a check may hold it: erasure removes exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<serde_json::Value>,
}

impl CheckResult {
    /// A check that never ran, with the reason why.
    pub fn skipped(detail: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Skipped,
            score: None,
            reasons: Vec::new(),
            detail: Some(detail.into()),
            duration_ms: None,
            details: serde_json::Value::Null,
            extracted: None,
        }
    }

    /// Whether the agent produced output its dependents can use.
    pub fn has_output(&self) -> bool {
        matches!(self.status, CheckStatus::Passed | CheckStatus::Failed)
    }
}

/// The outcome of a whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Declined,
    Review,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Review => "review",
        }
    }
}
