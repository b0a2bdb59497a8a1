//! How an agent's end becomes its check: a result, an error, a panic or a timeout, each with its
//! event and metrics.

use std::time::Duration;

use tokio::task::JoinError;

use super::{AgentRun, RunOutcome, SessionRun};
use crate::agents::{AgentError, Verdict};
use crate::cpu::panic_message;
use crate::domain::{CheckResult, CheckStatus};
use crate::orchestrator::events::{EventKind, TimeoutCause};

impl SessionRun {
    pub(super) fn record(&mut self, run: AgentRun) -> CheckResult {
        let agent = self.inner.plan.nodes()[run.index].name.clone();
        self.slots[run.index].duration = run.elapsed;
        let duration_ms = millis(run.elapsed);
        let outcome = match run.outcome {
            RunOutcome::Finished(result) => Ok(*result),
            RunOutcome::TimedOut(cause) => Err(cause),
        };
        match outcome {
            Ok(Ok(report)) => {
                self.slots[run.index].output = report.output;
                let status = match report.verdict {
                    Verdict::Passed => CheckStatus::Passed,
                    Verdict::Failed => CheckStatus::Failed,
                };
                self.events.emit(EventKind::AgentCompleted {
                    agent: agent.clone(),
                    status,
                    score: report.score,
                    reasons: report.reasons.clone(),
                    duration_ms,
                });
                CheckResult {
                    status,
                    score: report.score,
                    reasons: report.reasons,
                    detail: None,
                    duration_ms: Some(duration_ms),
                    details: report.details,
                    extracted: report.extracted,
                }
            }
            Ok(Err(AgentError::Remote(failure))) => {
                // Its message is this service's own; the remote's words stay in the details.
                tracing::warn!(error = %failure.message, reason = ?failure.reason, "remote agent failed");
                let mut check = self.failed(&agent, failure.message, Some(duration_ms));
                check.reasons.extend(failure.reason);
                check.details = failure.details;
                check
            }
            Ok(Err(error)) => {
                let detail = match &error {
                    AgentError::Panicked(message) => {
                        tracing::error!(panic = %message, "agent panicked");
                        "the agent panicked".to_owned()
                    }
                    other => {
                        tracing::warn!(error = %other, "agent failed");
                        other.to_string()
                    }
                };
                self.failed(&agent, detail, Some(duration_ms))
            }
            Err(cause) => {
                self.deadline_hit |= cause == TimeoutCause::SessionDeadline;
                self.timed_out(&agent, cause, duration_ms)
            }
        }
    }

    /// Records an agent's final check: the one place every check (and its metrics) lands.
    pub(super) fn settle(&mut self, index: usize, check: CheckResult) {
        let agent = self.inner.plan.nodes()[index].name.clone();
        if let Some(ms) = check.duration_ms {
            metrics::histogram!("kyc_agent_duration_seconds", "agent" => agent.clone())
                .record(ms / 1000.0);
        }
        metrics::counter!(
            "kyc_agent_checks_total",
            "agent" => agent,
            "status" => status_label(check.status)
        )
        .increment(1);
        self.slots[index].check = Some(check);
    }

    /// An agent's task ended without returning: it panicked outside any blocking job.
    pub(super) fn record_crash(&mut self, index: usize, error: JoinError) -> CheckResult {
        let agent = self.inner.plan.nodes()[index].name.clone();
        let elapsed = self.slots[index]
            .started
            .map(|s| s.elapsed())
            .unwrap_or_default();
        self.slots[index].duration = elapsed;
        let detail = if error.is_panic() {
            let message = panic_message(error.into_panic());
            tracing::error!(agent = %agent, panic = %message, "agent panicked");
            "the agent panicked"
        } else {
            "the agent's task was cancelled"
        };
        self.failed(&agent, detail.to_owned(), Some(millis(elapsed)))
    }

    pub(super) fn failed(
        &mut self,
        agent: &str,
        detail: String,
        duration_ms: Option<f64>,
    ) -> CheckResult {
        self.events.emit(EventKind::AgentFailed {
            agent: agent.to_owned(),
            error: detail.clone(),
            duration_ms: duration_ms.unwrap_or_default(),
        });
        CheckResult {
            status: CheckStatus::Error,
            detail: Some(detail),
            duration_ms,
            ..CheckResult::skipped("")
        }
    }

    pub(super) fn timed_out(
        &mut self,
        agent: &str,
        cause: TimeoutCause,
        duration_ms: f64,
    ) -> CheckResult {
        tracing::warn!(agent = %agent, ?cause, "agent timed out");
        self.events.emit(EventKind::AgentTimedOut {
            agent: agent.to_owned(),
            cause,
            duration_ms,
        });
        let detail = match cause {
            TimeoutCause::AgentTimeout => "the agent's own timeout passed",
            TimeoutCause::SessionDeadline => "the session deadline passed",
        };
        CheckResult {
            status: CheckStatus::Timeout,
            detail: Some(detail.to_owned()),
            duration_ms: Some(duration_ms),
            ..CheckResult::skipped("")
        }
    }
}

/// Milliseconds with microsecond precision.
pub(super) fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

fn status_label(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Passed => "passed",
        CheckStatus::Failed => "failed",
        CheckStatus::Error => "error",
        CheckStatus::Timeout => "timeout",
        CheckStatus::Skipped => "skipped",
    }
}
