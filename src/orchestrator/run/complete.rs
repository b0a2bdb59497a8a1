//! The session's end: the decision from its checks, the completion stored with its terminal
//! event (or queued for retry when the store does not take it), and the outcome returned.

use std::time::Duration;

use super::SessionRun;
use super::checks::millis;
use crate::domain::CheckResult;
use crate::orchestrator::events::EventKind;
use crate::orchestrator::{PendingCompletion, SessionOutcome};
use crate::store::{Closing, Completion};
use crate::telemetry::ErrorChain;

impl SessionRun {
    pub(super) async fn complete(mut self) -> SessionOutcome {
        let durations: Vec<Duration> = self.slots.iter().map(|slot| slot.duration).collect();
        let plan = &self.inner.plan;
        let checks: Vec<(String, CheckResult)> = plan
            .nodes()
            .iter()
            .zip(self.slots.iter_mut())
            .map(|(node, slot)| {
                (
                    node.name.clone(),
                    slot.check.take().expect("every agent is accounted for"),
                )
            })
            .collect();
        let verdict = self.inner.policy.decide(
            checks.iter().map(|(name, check)| (name.as_str(), check)),
            self.deadline_hit,
        );
        let elapsed = self.clock.elapsed();
        let completion = Completion {
            completed_at: self.clock.now(),
            decision: verdict.decision,
            reasons: verdict.reasons.clone(),
            checks: checks.iter().cloned().collect(),
            duration_ms: millis(elapsed),
        };
        let terminal = self.events.next(EventKind::SessionCompleted {
            decision: completion.decision,
            reasons: completion.reasons.clone(),
            checks: completion.checks.clone(),
            duration_ms: completion.duration_ms,
        });
        let review = EventKind::review_opening(&completion).map(|kind| self.events.next(kind));
        // The portrait is on disk before the completion is stored: a reviewer who sees the
        // session decided sees it too.
        let outputs = self.slots.iter().filter_map(|slot| slot.output.as_ref());
        let (closed, ()) = tokio::join!(
            self.events.close(),
            self.inner.keep_portrait(self.id, outputs)
        );
        let closing = Closing {
            before: self.events.take_unstored(),
            terminal,
            review,
        };
        let stored = closed
            && match self
                .inner
                .store
                .complete(self.id, &completion, &closing)
                .await
            {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(error = %ErrorChain(&error), "could not store the session's completion");
                    false
                }
            };
        drop(self.permit.take());
        if stored {
            for record in closing.live() {
                self.events.publish(record);
            }
        } else {
            // Followers see the completion once it is stored: the retry loop writes it (and
            // any events before it) as soon as the store answers.
            self.inner.pending_completion(PendingCompletion {
                id: self.id,
                completion: completion.clone(),
                closing,
            });
        }
        self.inner.hub.close(self.id);
        let elapsed = self.clock.elapsed();

        let decision = verdict.decision.as_str();
        metrics::counter!("kyc_sessions_completed_total", "decision" => decision).increment(1);
        metrics::histogram!("kyc_session_duration_seconds").record(elapsed.as_secs_f64());
        tracing::info!(
            decision,
            reasons = %verdict.reasons.join(","),
            duration_ms = completion.duration_ms,
            "session completed"
        );
        SessionOutcome {
            id: self.id,
            decision: verdict.decision,
            reasons: verdict.reasons,
            critical_path: plan.critical_path(&durations),
            checks,
            elapsed,
        }
    }
}
