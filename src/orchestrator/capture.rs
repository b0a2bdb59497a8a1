//! Sessions started by capture links: the applicant's page sends the images, the link supplies
//! everything else.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::{Orchestrator, OrchestratorError, Start};
use crate::capture::CaptureLinks;
use crate::domain::{
    CaptureLink, CaptureRefusal, Challenge, ChallengeRefusal, NewSession, Principal, Reference,
};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

impl Orchestrator {
    /// Capture links may start sessions, and are purged by the retention sweep.
    pub fn with_capture(mut self, capture: Arc<CaptureLinks>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("capture links are set before the orchestrator is shared")
            .capture = Some(capture);
        self
    }

    /// Where capture links are made and opened, when they are.
    pub fn capture(&self) -> Option<&Arc<CaptureLinks>> {
        self.inner.capture.as_ref()
    }

    /// The liveness challenge of `link`'s page: the one it was given while that one can still
    /// be answered, else a new one, which replaces it. So a page cannot draw challenges until it
    /// gets the sequence it has a recording of: it gets one, and another only once that has
    /// expired (`challenges.ttl_s`). `None` where challenges are not issued.
    pub async fn capture_challenge(
        &self,
        link: &CaptureLink,
    ) -> Result<Option<Challenge>, StoreError> {
        let (Some(challenges), Some(capture)) = (&self.inner.challenges, &self.inner.capture)
        else {
            return Ok(None);
        };
        if let Some(id) = &link.challenge_id
            && let Some(challenge) = challenges.answerable(&link.owner, id).await?
        {
            return Ok(Some(challenge));
        }
        let challenge = challenges.issue(&link.owner).await?;
        capture.give_challenge(link, &challenge.id).await?;
        Ok(Some(challenge))
    }

    /// Starts `link`'s session with `request`'s images and challenge. The link decides the
    /// rest: the reference, the document type and the claim, and whose session it is (its
    /// tenant and mode, created by the key that made the link).
    ///
    /// The link's id is the start's idempotency key: that is what holds a link to one session
    /// when two submissions race (on any instances), or when one comes after a start whose
    /// marking failed; the same images name the same session, others get `Start::Existing` with
    /// `same_request: false`. Once the link is marked used, the API refuses it before this
    /// point (`410`), and its page follows the session instead.
    pub async fn start_captured(
        &self,
        link: &CaptureLink,
        mut request: NewSession,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Start, OrchestratorError> {
        request.reference = link
            .reference
            .clone()
            .and_then(|reference| Reference::parse(reference, usize::MAX).ok());
        request.claimed = link.claimed.clone();
        request.document.kind = Some(link.document_type);
        request.sandbox = None;
        // Only the challenge the link's page was given: not one of the tenant's others.
        if let Some(challenge) = &request.selfie.challenge
            && link.challenge_id.as_ref() != Some(&challenge.id)
        {
            return Err(ChallengeRefusal::Unknown.into());
        }
        let by = Principal {
            owner: link.owner.clone(),
            key_id: link.created_by.clone(),
        };
        // `POST /v1/sessions` refuses client keys of this prefix.
        let key = format!("capture:{}", link.id.as_str());
        let start = match self.start_once(request, &by, permit, Some(key)).await {
            // The link's challenge is answered by the link's session alone, so another
            // submission of this link took it: one that raced this one and won. Its page
            // follows that session.
            Err(OrchestratorError::Challenge(ChallengeRefusal::Used)) => {
                return Err(CaptureRefusal::Used.into());
            }
            start => start?,
        };
        let id = match &start {
            Start::New(started) => started.id,
            Start::Existing {
                id,
                same_request: true,
            } => *id,
            Start::Existing { .. } => return Ok(start),
        };
        if let Some(capture) = &self.inner.capture
            && let Err(error) = capture.mark_used(link, id).await
        {
            tracing::warn!(
                capture_link = %link.id.as_str(),
                error = %ErrorChain(&error),
                "cannot mark the capture link used; its idempotency key still holds it to its session"
            );
        }
        Ok(start)
    }
}
