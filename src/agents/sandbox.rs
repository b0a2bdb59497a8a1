//! Sandbox agents: simulated agents whose latency, CPU use and outcome come from the request's
//! `sandbox` object, or from config when the request says nothing.
//!
//! This is the service's test mode (as a payment provider has one): integrators drive every path
//! of their integration with it, and the project's own tests and benchmarks do the same. Nothing
//! here looks at an image.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentContext, AgentError, Output, Report};

/// Longest scripted wait, so a script cannot hold a session past any sane deadline by accident.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// Longest scripted CPU burn.
pub const MAX_CPU_MS: u64 = 30_000;

/// How a sandbox agent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxResult {
    #[default]
    Pass,
    Fail,
    Error,
    Panic,
    Hang,
}

/// A sandbox agent's complete behaviour: wait `latency_ms` on the runtime, then burn `cpu_ms` of
/// CPU on the blocking pool, then end as `result` says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxBehaviour {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub cpu_ms: u64,
    #[serde(default)]
    pub result: SandboxResult,
    /// Reason code reported on `fail`; the agent's default code when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Largest scripted `extracted` object, serialised.
pub const MAX_EXTRACTED_BYTES: usize = 4096;

/// One agent's part of a request's script: every field is optional and falls back to config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxDirective {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SandboxResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

impl SandboxDirective {
    pub fn validate(&self) -> Result<(), DirectiveError> {
        if self.latency_ms.is_some_and(|ms| ms > MAX_LATENCY_MS) {
            return Err(DirectiveError::LatencyTooLong);
        }
        if self.cpu_ms.is_some_and(|ms| ms > MAX_CPU_MS) {
            return Err(DirectiveError::CpuTooLong);
        }
        if let Some(reason) = &self.reason {
            let valid = (1..=64).contains(&reason.len())
                && reason.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':'
                });
            if !valid {
                return Err(DirectiveError::BadReason);
            }
        }
        if let Some(extracted) = &self.extracted {
            let size = serde_json::to_vec(extracted).map_or(usize::MAX, |v| v.len());
            if size > MAX_EXTRACTED_BYTES {
                return Err(DirectiveError::ExtractedTooLarge);
            }
        }
        Ok(())
    }

    fn apply_to(&self, base: &SandboxBehaviour) -> SandboxBehaviour {
        SandboxBehaviour {
            latency_ms: self.latency_ms.unwrap_or(base.latency_ms),
            cpu_ms: self.cpu_ms.unwrap_or(base.cpu_ms),
            result: self.result.unwrap_or(base.result),
            reason: self.reason.clone().or_else(|| base.reason.clone()),
        }
    }
}

/// A request's script: agent name to directive. Names are checked against the plan at the edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxScript(pub BTreeMap<String, SandboxDirective>);

/// What a sandbox agent hands its dependents: proof that it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOutput {
    pub agent: String,
}

/// A simulated agent.
pub struct SandboxAgent {
    name: String,
    defaults: SandboxBehaviour,
    fail_reason: String,
}

impl SandboxAgent {
    pub fn new(name: &str, defaults: SandboxBehaviour, fail_reason: Option<String>) -> Self {
        let fail_reason = fail_reason.unwrap_or_else(|| default_fail_reason(name));
        Self {
            name: name.to_owned(),
            defaults,
            fail_reason,
        }
    }

    fn behaviour(&self, ctx: &AgentContext) -> SandboxBehaviour {
        ctx.input()
            .sandbox
            .as_ref()
            .and_then(|script| script.0.get(&self.name))
            .map_or_else(|| self.defaults.clone(), |d| d.apply_to(&self.defaults))
    }

    /// The scripted stand-in for personal data, if any.
    fn extracted(&self, ctx: &AgentContext) -> Option<serde_json::Value> {
        let script = ctx.input().sandbox.as_ref()?;
        let extracted = script.0.get(&self.name)?.extracted.clone()?;
        Some(serde_json::Value::Object(extracted))
    }
}

/// The reason code the real agent of that name reports when its check fails.
fn default_fail_reason(agent: &str) -> String {
    match agent {
        "liveness" => "liveness_failed".into(),
        "doc_capture" => "document_unreadable".into(),
        "ocr" => "mrz_invalid".into(),
        "face_match" => "face_mismatch".into(),
        other => format!("{other}_failed"),
    }
}

#[async_trait]
impl Agent for SandboxAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn cpu_bound(&self) -> bool {
        self.defaults.cpu_ms > 0
    }

    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError> {
        let behaviour = self.behaviour(&ctx);
        // A zero wait is none: tokio's timer would still hold the agent to its next 1 ms tick.
        if behaviour.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
        }
        if behaviour.cpu_ms > 0 {
            let cpu = Duration::from_millis(behaviour.cpu_ms);
            let result = behaviour.result;
            ctx.blocking(move |cancel| {
                burn_cpu(cpu, cancel)?;
                match result {
                    SandboxResult::Hang => {
                        burn_cpu(Duration::MAX, cancel)?;
                        unreachable!("burn_cpu(MAX) returns only when cancelled")
                    }
                    SandboxResult::Panic => panic!("sandbox: scripted panic on the blocking pool"),
                    _ => {
                        tracing::debug!(cpu_ms = cpu.as_millis() as u64, "sandbox CPU work done");
                        Ok(())
                    }
                }
            })
            .await??;
        }
        let report = match behaviour.result {
            SandboxResult::Pass => Report::passed(Some(0.97)),
            SandboxResult::Fail => {
                let reason = behaviour.reason.unwrap_or_else(|| self.fail_reason.clone());
                Report::failed(Some(0.12), vec![reason])
            }
            SandboxResult::Error => {
                return Err(AgentError::Failed("sandbox: scripted agent error".into()));
            }
            SandboxResult::Panic => panic!("sandbox: scripted panic on the runtime"),
            SandboxResult::Hang => std::future::pending().await,
        };
        let report = report
            .with_details(json!({ "sandbox": true }))
            .with_output(self.output());
        Ok(match self.extracted(&ctx) {
            Some(extracted) => report.with_extracted(extracted),
            None => report,
        })
    }
}

impl SandboxAgent {
    fn output(&self) -> Output {
        Output::new(SandboxOutput {
            agent: self.name.clone(),
        })
    }
}

/// Keeps one core busy for `budget`, checking the token about every millisecond.
fn burn_cpu(budget: Duration, cancel: &CancellationToken) -> Result<(), AgentError> {
    let start = Instant::now();
    let mut acc = 0u64;
    while start.elapsed() < budget {
        if cancel.is_cancelled() {
            return Err(AgentError::Cancelled);
        }
        let slice = Instant::now();
        while slice.elapsed() < Duration::from_millis(1) {
            acc = std::hint::black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directive_overrides_only_the_fields_it_names() {
        let base = SandboxBehaviour {
            latency_ms: 100,
            cpu_ms: 5,
            result: SandboxResult::Pass,
            reason: None,
        };
        let directive = SandboxDirective {
            result: Some(SandboxResult::Fail),
            ..Default::default()
        };
        let merged = directive.apply_to(&base);
        assert_eq!(merged.latency_ms, 100);
        assert_eq!(merged.cpu_ms, 5);
        assert_eq!(merged.result, SandboxResult::Fail);
    }

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

    #[test]
    fn burning_cpu_stops_when_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        assert_eq!(burn_cpu(Duration::MAX, &token), Err(AgentError::Cancelled));
    }
}
