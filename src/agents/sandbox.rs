//! Sandbox agents: simulated agents whose latency, CPU use and outcome come from the request's
//! `sandbox` object, or from config when the request says nothing.
//!
//! This is the service's test mode (as a payment provider has one): integrators drive every path
//! of their integration with it, and the project's own tests and benchmarks do the same. Nothing
//! here looks at an image. Its `sandbox` table is its default behaviour:
//!
//! ```toml
//! [agents.liveness]
//! kind = "sandbox"
//! sandbox = { latency_ms = 120, cpu_ms = 0, result = "pass", reason = "liveness_failed" }
//! ```

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::warm::Loader;
use super::{Agent, AgentContext, AgentError, AgentKind, CheckSettings, Output, Report, Resources};
use crate::domain::{SandboxDirective, SandboxResult, is_reason_code};
use crate::models::ModelError;

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
    /// Reason code reported on `fail`; `<agent name>_failed` when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

impl CheckSettings for SandboxBehaviour {
    fn check(&self) -> Result<(), String> {
        match &self.reason {
            Some(reason) if !is_reason_code(reason) => Err(format!(
                "reason must be 1 to 64 characters of a-z, 0-9, '_' and ':', not `{reason}`"
            )),
            _ => Ok(()),
        }
    }
}

/// A directive's fields over the configured behaviour.
fn scripted(directive: &SandboxDirective, base: &SandboxBehaviour) -> SandboxBehaviour {
    SandboxBehaviour {
        latency_ms: directive.latency_ms.unwrap_or(base.latency_ms),
        cpu_ms: directive.cpu_ms.unwrap_or(base.cpu_ms),
        result: directive.result.unwrap_or(base.result),
        reason: directive.reason.clone().or_else(|| base.reason.clone()),
    }
}

/// What a sandbox agent hands its dependents: proof that it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOutput {
    pub agent: String,
}

impl super::wire::Portable for SandboxOutput {
    const TYPE: &'static str = "sandbox";
    const CHEAP: bool = true;

    fn encode(&self) -> Result<serde_json::Value, String> {
        Ok(json!({ "agent": self.agent }))
    }

    fn decode(wire: &serde_json::Value, _: &crate::domain::NewSession) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Fields {
            agent: String,
        }
        let fields = Fields::deserialize(wire)
            .map_err(|_| "a sandbox output of the wrong shape".to_owned())?;
        Ok(Self {
            agent: fields.agent,
        })
    }
}

/// A simulated agent.
pub struct SandboxAgent {
    name: String,
    defaults: SandboxBehaviour,
    fail_reason: String,
}

impl AgentKind for SandboxAgent {
    const KIND: &'static str = "sandbox";
    /// Its one reason code is configured (or scripted): see [`AgentKind::reasons`].
    const REASONS: &'static [&'static str] = &[];
    type Settings = SandboxBehaviour;
    const TABLE: &'static str = "sandbox";

    fn build(
        defaults: SandboxBehaviour,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let name = resources.agent;
        let fail_reason = defaults
            .reason
            .clone()
            .unwrap_or_else(|| format!("{name}_failed"));
        let agent = Self {
            name: name.to_owned(),
            defaults,
            fail_reason,
        };
        Ok((agent, None))
    }

    fn reasons(&self) -> Vec<String> {
        vec![self.fail_reason.clone()]
    }

    fn scriptable(&self) -> bool {
        true
    }
}

impl SandboxAgent {
    fn behaviour(&self, ctx: &AgentContext) -> SandboxBehaviour {
        ctx.input()
            .sandbox
            .as_ref()
            .and_then(|script| script.0.get(&self.name))
            .map_or_else(|| self.defaults.clone(), |d| scripted(d, &self.defaults))
    }

    /// The scripted stand-in for personal data, if any.
    fn extracted(&self, ctx: &AgentContext) -> Option<serde_json::Value> {
        let script = ctx.input().sandbox.as_ref()?;
        let extracted = script.0.get(&self.name)?.extracted.clone()?;
        Some(serde_json::Value::Object(extracted))
    }
}

#[async_trait]
impl Agent for SandboxAgent {
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
                        Ok::<(), AgentError>(())
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
        Output::portable(SandboxOutput {
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
        let merged = scripted(&directive, &base);
        assert_eq!(merged.latency_ms, 100);
        assert_eq!(merged.cpu_ms, 5);
        assert_eq!(merged.result, SandboxResult::Fail);
    }

    #[test]
    fn burning_cpu_stops_when_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        assert_eq!(burn_cpu(Duration::MAX, &token), Err(AgentError::Cancelled));
    }
}
