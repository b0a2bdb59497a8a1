//! A request's sandbox script: how the sandbox agents it names should behave in this session.
//!
//! It is part of the request (and of the stored inputs a session is re-run from), so it is
//! domain data; the sandbox agent that follows it lives in `agents`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest scripted wait, so a script cannot hold a session past any sane deadline by accident.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// Longest scripted CPU burn.
pub const MAX_CPU_MS: u64 = 30_000;
/// Largest scripted `extracted` object, serialised.
pub const MAX_EXTRACTED_BYTES: usize = 4096;

/// How a sandbox agent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxResult {
    #[default]
    Pass,
    Fail,
    Error,
    Panic,
    Hang,
}

/// One agent's part of a request's script: every field is optional and falls back to config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxDirective {
    /// Waited on the runtime before the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 60000)]
    pub latency_ms: Option<u64>,
    /// Burnt on the CPU pool after the latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 30000)]
    pub cpu_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SandboxResult>,
    /// The failure's reason code, instead of the agent's configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9_:]{1,64}$")]
    pub reason: Option<String>,
    /// Stands in for the personal data a real agent reads: reported as the check's `extracted`
    /// on pass or fail, so integrators can exercise erasure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extracted: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Why a directive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("latency_ms must be at most {MAX_LATENCY_MS}")]
    LatencyTooLong,
    #[error("cpu_ms must be at most {MAX_CPU_MS}")]
    CpuTooLong,
    #[error("reason must be 1 to 64 characters of a-z, 0-9, '_' and ':'")]
    BadReason,
    #[error("extracted must be at most {MAX_EXTRACTED_BYTES} bytes of JSON")]
    ExtractedTooLarge,
}

/// Whether `reason` is a reason code: 1 to 64 characters of a-z, 0-9, `_` and `:`.
pub fn is_reason_code(reason: &str) -> bool {
    (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
}

impl SandboxDirective {
    pub fn validate(&self) -> Result<(), DirectiveError> {
        if self.latency_ms.is_some_and(|ms| ms > MAX_LATENCY_MS) {
            return Err(DirectiveError::LatencyTooLong);
        }
        if self.cpu_ms.is_some_and(|ms| ms > MAX_CPU_MS) {
            return Err(DirectiveError::CpuTooLong);
        }
        if self.reason.as_deref().is_some_and(|r| !is_reason_code(r)) {
            return Err(DirectiveError::BadReason);
        }
        if let Some(extracted) = &self.extracted {
            let size = serde_json::to_vec(extracted).map_or(usize::MAX, |v| v.len());
            if size > MAX_EXTRACTED_BYTES {
                return Err(DirectiveError::ExtractedTooLarge);
            }
        }
        Ok(())
    }
}

/// A request's script: agent name to directive. Names are checked against the plan at the edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxScript(pub BTreeMap<String, SandboxDirective>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_outside_the_bounds_are_refused() {
        let long = SandboxDirective {
            latency_ms: Some(MAX_LATENCY_MS + 1),
            ..Default::default()
        };
        assert_eq!(long.validate(), Err(DirectiveError::LatencyTooLong));
        let reason = SandboxDirective {
            reason: Some("Not A Code".into()),
            ..Default::default()
        };
        assert_eq!(reason.validate(), Err(DirectiveError::BadReason));
        assert!(SandboxDirective::default().validate().is_ok());
    }
}
