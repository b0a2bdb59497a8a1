//! Sessions started by capture links: the applicant's page sends the images, the link supplies
//! everything else.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::{Orchestrator, OrchestratorError, Start};
use crate::capture::CaptureLinks;
use crate::domain::{CaptureLink, NewSession, Principal, Reference};
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

    /// Starts `link`'s session with `request`'s images and challenge. The link decides the
    /// rest: the reference, the document type and the claim, and whose session it is (its
    /// tenant and mode, created by the key that made the link).
    ///
    /// The link's id is the start's idempotency key, so a page that sends its images again
    /// (its connection dropped) gets the session the first attempt started, and a page that
    /// sends other images to a link that has started one gets `Start::Existing` with
    /// `same_request: false`. The link is then marked used; should the store not answer that,
    /// the idempotency key still holds the link to its one session.
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
        let by = Principal {
            owner: link.owner.clone(),
            key_id: link.created_by.clone(),
        };
        let key = format!("capture:{}", link.id.as_str());
        let start = self.start_once(request, &by, permit, Some(key)).await?;
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
