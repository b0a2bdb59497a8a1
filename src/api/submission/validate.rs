//! The rules a session request must meet, applied to its parts however they arrived. Every
//! problem found is collected, so the client learns all of them from one answer.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::redact::echoable;
use crate::api::error::{ApiError, FieldError};
use crate::config::LimitSettings;
use crate::domain::{
    ChallengeId, Claimed, Document, DocumentType, ImageData, NewSession, Reference, Selfie,
    SelfieChallenge,
};
use crate::domain::{SandboxDirective, SandboxScript};

/// The request's parts, images still raw, with their field names for error reports.
#[derive(Default)]
pub(super) struct Draft {
    pub(super) reference: Option<String>,
    /// `None`: the client sent no selfie at all.
    pub(super) frames: Option<Vec<(String, Bytes)>>,
    pub(super) document_present: bool,
    pub(super) kind: Option<DocumentType>,
    pub(super) front: Option<(String, Bytes)>,
    pub(super) back: Option<(String, Bytes)>,
    pub(super) claimed: Option<Claimed>,
    pub(super) sandbox: Option<BTreeMap<String, SandboxDirective>>,
    /// The liveness challenge the selfie answers, as sent.
    pub(super) challenge_id: Option<String>,
    pub(super) errors: Vec<FieldError>,
}

impl Draft {
    /// Applies every rule and returns the session, or every problem found.
    pub(super) fn check(
        mut self,
        limits: &LimitSettings,
        sandbox_agents: &[String],
    ) -> Result<NewSession, ApiError> {
        let image_limits = limits.images();
        let image = |errors: &mut Vec<FieldError>, (field, bytes): (String, Bytes)| {
            ImageData::parse(bytes, &image_limits)
                .map_err(|e| errors.push(FieldError::new(field, e.code(), e.to_string())))
                .ok()
        };

        let reference = self.reference.take().and_then(|value| {
            Reference::parse(value, limits.max_reference_len)
                .map_err(|e| {
                    self.errors
                        .push(FieldError::new("reference", "invalid", e.to_string()))
                })
                .ok()
        });

        let frames = match self.frames.take() {
            None => {
                self.errors.push(FieldError::missing("selfie"));
                Vec::new()
            }
            Some(frames) if frames.len() > limits.max_selfie_frames => {
                self.errors.push(FieldError::new(
                    "selfie.frames",
                    "too_many_frames",
                    format!("at most {} frames", limits.max_selfie_frames),
                ));
                Vec::new()
            }
            Some(frames) => {
                if frames.is_empty() && !self.errors.iter().any(|e| e.field.starts_with("selfie")) {
                    self.errors.push(FieldError::new(
                        "selfie.frames",
                        "missing",
                        "at least one frame is required",
                    ));
                }
                frames
                    .into_iter()
                    .filter_map(|frame| image(&mut self.errors, frame))
                    .collect()
            }
        };

        if !self.document_present {
            self.errors.push(FieldError::missing("document"));
        } else if self.front.is_none() && !self.errors.iter().any(|e| e.field.contains("front")) {
            self.errors.push(FieldError::missing("document.front"));
        }
        let front = self.front.take().and_then(|f| image(&mut self.errors, f));
        let back = self.back.take().and_then(|b| image(&mut self.errors, b));

        if let Some(claimed) = &self.claimed {
            for (field, problem) in claimed.problems() {
                self.errors.push(FieldError::new(field, "invalid", problem));
            }
        }

        let sandbox = match self.sandbox.take() {
            Some(_) if sandbox_agents.is_empty() => {
                return Err(ApiError::BadRequest(
                    "`sandbox` is only accepted when sandbox agents are configured".into(),
                ));
            }
            Some(script) => {
                for (agent, directive) in &script {
                    let field = format!("sandbox.{}", echoable(agent));
                    if !sandbox_agents.contains(agent) {
                        self.errors.push(FieldError::new(
                            field,
                            "unknown_agent",
                            format!("sandbox agents: {}", sandbox_agents.join(", ")),
                        ));
                    } else if let Err(error) = directive.validate() {
                        self.errors
                            .push(FieldError::new(field, "invalid", error.to_string()));
                    }
                }
                Some(SandboxScript(script))
            }
            None => None,
        };

        // An id that is not one names no challenge; the value itself is not echoed.
        let challenge = self.challenge_id.take().and_then(|id| {
            id.parse::<ChallengeId>()
                .map_err(|_| {
                    self.errors.push(FieldError::new(
                        "selfie.challenge_id",
                        "unknown_challenge",
                        "not a challenge id (chl_...)",
                    ))
                })
                .ok()
        });
        let selfie = Selfie::new(frames).map(|mut selfie| {
            selfie.challenge = challenge.map(|id| SelfieChallenge { id, steps: vec![] });
            selfie
        });
        match (self.errors.is_empty(), selfie, front) {
            (true, Some(selfie), Some(front)) => Ok(NewSession {
                reference,
                selfie,
                document: Document {
                    kind: self.kind,
                    front,
                    back,
                },
                claimed: self.claimed,
                sandbox,
            }),
            _ => Err(ApiError::Invalid(self.errors)),
        }
    }
}
