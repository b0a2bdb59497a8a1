//! Hosted capture: links an integrator's backend asks for, which an applicant's phone opens.
//!
//! `POST /v1/capture-links` makes a link here: a token from the OS's random source (only its hash
//! is stored), the session's reference, document type and claim fixed by the integrator, and an
//! expiry (`capture.ttl_s`). The page at `/capture` holds the token and may then, with it alone,
//! read what to photograph, ask for a liveness challenge, start the one session, and follow its
//! progress. The orchestrator starts that session under the link's id as its idempotency key
//! (so a link starts one session, across instances and restarts), then marks the link used.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::CaptureSettings;
use crate::domain::{
    CaptureLink, CaptureLinkId, CaptureRefusal, CaptureToken, Claimed, DocumentType, Principal,
    Reference, SessionId,
};
use crate::store::{CaptureStore, StoreError};

/// How long an expired link is kept before it is purged: for that day its page still says
/// "expired" (`410`) rather than "not valid" (`401`), which tells an applicant to ask for a new
/// link rather than to check the one they have. The reference and claim go with the row.
pub const KEEP_EXPIRED: chrono::Duration = chrono::Duration::days(1);

/// Longest `redirect_url` accepted, in bytes.
pub const MAX_REDIRECT_URL_LEN: usize = 2048;

/// What an integrator asks a link for, unchecked.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub reference: Option<String>,
    pub document_type: DocumentType,
    pub claimed: Option<Claimed>,
    pub redirect_url: Option<String>,
}

/// A field of a [`LinkRequest`] that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkProblem {
    pub field: String,
    pub detail: String,
}

/// Why a token opens nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The link is open: it has started no session to follow yet.
    #[error("the capture link has started no session yet")]
    NotStarted,
    /// Malformed, or no link has it (or it was purged).
    #[error("no capture link has this token")]
    Unknown,
    #[error(transparent)]
    Refused(CaptureRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes, opens and uses capture links.
pub struct CaptureLinks {
    store: Arc<dyn CaptureStore>,
    ttl: Duration,
    max_reference_len: usize,
    clock: Clock,
}

impl CaptureLinks {
    /// `settings` checked: a TTL of a minute to a day.
    pub fn new(
        settings: &CaptureSettings,
        max_reference_len: usize,
        store: Arc<dyn CaptureStore>,
        clock: Clock,
    ) -> Result<Self, String> {
        if !(60..=86_400).contains(&settings.ttl_s) {
            return Err(format!(
                "capture.ttl_s: 60 to 86400 seconds, not {}",
                settings.ttl_s
            ));
        }
        Ok(Self {
            store,
            ttl: Duration::from_secs(settings.ttl_s),
            max_reference_len,
            clock,
        })
    }

    /// The fields of `request` that break the rules; empty when it may make a link.
    pub fn problems(&self, request: &LinkRequest) -> Vec<LinkProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, detail: String| {
            problems.push(LinkProblem {
                field: field.to_owned(),
                detail,
            })
        };
        if let Some(reference) = &request.reference
            && let Err(error) = Reference::parse(reference.clone(), self.max_reference_len)
        {
            problem("reference", error.to_string());
        }
        if let Some(claimed) = &request.claimed {
            for (field, detail) in claimed.problems() {
                problem(field, detail);
            }
        }
        if let Some(url) = &request.redirect_url
            && let Err(detail) = check_redirect(url)
        {
            problem("redirect_url", detail);
        }
        problems
    }

    /// A new link for `by`'s tenant and mode, stored, with its token. `request` must have no
    /// [`problems`](Self::problems).
    pub async fn create(
        &self,
        by: &Principal,
        request: LinkRequest,
    ) -> Result<(CaptureLink, CaptureToken), StoreError> {
        let token = CaptureToken::generate();
        let now = self.clock.now();
        let link = CaptureLink {
            id: CaptureLinkId::generate(),
            token_hash: token.hash(),
            owner: by.owner.clone(),
            created_by: by.key_id.clone(),
            reference: request.reference,
            document_type: request.document_type,
            claimed: request.claimed,
            redirect_url: request.redirect_url,
            challenge_id: None,
            created_at: now,
            expires_at: now + self.ttl,
            used_by: None,
        };
        self.store.create_capture_link(&link).await?;
        metrics::counter!("kyc_capture_links_created_total").increment(1);
        Ok((link, token))
    }

    /// The link `token` names, whatever its state.
    pub async fn find(&self, token: &str) -> Result<CaptureLink, OpenError> {
        let token = CaptureToken::parse(token).map_err(|_| OpenError::Unknown)?;
        self.store
            .capture_link(&token.hash())
            .await?
            .ok_or(OpenError::Unknown)
    }

    /// The link `token` names, if it may still start its session.
    pub async fn open(&self, token: &str) -> Result<CaptureLink, OpenError> {
        let link = self.find(token).await?;
        match link.refusal(self.clock.now()) {
            Some(refusal) => Err(OpenError::Refused(refusal)),
            None => Ok(link),
        }
    }

    /// The session a used link started, while the link lasts: what its page may follow.
    pub async fn session(&self, token: &str) -> Result<(CaptureLink, SessionId), OpenError> {
        let link = self.find(token).await?;
        let now = self.clock.now();
        match (link.followable(now), link.refusal(now)) {
            (Some(session), _) => Ok((link, session)),
            (None, Some(refusal)) => Err(OpenError::Refused(refusal)),
            (None, None) => Err(OpenError::NotStarted),
        }
    }

    /// Records `challenge` as the one `link`'s page may answer.
    pub async fn give_challenge(
        &self,
        link: &CaptureLink,
        challenge: &crate::domain::ChallengeId,
    ) -> Result<(), StoreError> {
        self.store.set_capture_challenge(&link.id, challenge).await
    }

    /// Records that `link` started `session`; `false` when it had already started another or
    /// has expired.
    pub async fn mark_used(
        &self,
        link: &CaptureLink,
        session: SessionId,
    ) -> Result<bool, StoreError> {
        let used = self
            .store
            .use_capture_link(&link.id, session, self.clock.now())
            .await?;
        if used {
            metrics::counter!("kyc_capture_links_used_total").increment(1);
        }
        Ok(used)
    }

    /// Forgets links expired more than [`KEEP_EXPIRED`] ago, with their reference and claim.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        self.store
            .purge_capture_links(self.clock.now() - KEEP_EXPIRED)
            .await
    }
}

/// An absolute `http` or `https` URL without credentials, at most [`MAX_REDIRECT_URL_LEN`]
/// bytes: where a browser may be sent, and nothing a script could run in.
fn check_redirect(url: &str) -> Result<(), String> {
    if url.len() > MAX_REDIRECT_URL_LEN {
        return Err(format!("at most {MAX_REDIRECT_URL_LEN} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, Mode, Owner};
    use crate::store::MemoryStore;

    fn links(clock: Clock) -> CaptureLinks {
        CaptureLinks::new(
            &CaptureSettings {
                ttl_s: 600,
                public_url: String::new(),
            },
            16,
            Arc::new(MemoryStore::new(10)),
            clock,
        )
        .unwrap()
    }

    fn by() -> Principal {
        Principal {
            owner: Owner {
                tenant: "acme".parse().unwrap(),
                mode: Mode::Test,
            },
            key_id: KeyId::generate(),
        }
    }

    fn request() -> LinkRequest {
        LinkRequest {
            reference: Some("customer-42".into()),
            document_type: DocumentType::IdCard,
            claimed: None,
            redirect_url: Some("https://example.com/done?x=1".into()),
        }
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let links = links(Clock::start());
        assert_eq!(links.problems(&request()), vec![]);

        let bad = LinkRequest {
            reference: Some("x".repeat(17)),
            claimed: Some(Claimed::default()),
            redirect_url: Some("javascript:alert(1)".into()),
            ..request()
        };
        let fields: Vec<_> = links.problems(&bad).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["reference", "claimed", "redirect_url"]);
    }

    #[test]
    fn a_redirect_goes_to_a_web_page_without_credentials() {
        assert_eq!(check_redirect("https://example.com/kyc/done"), Ok(()));
        assert_eq!(check_redirect("http://localhost:3000/"), Ok(()));
        for url in [
            "/relative",
            "data:text/html,hi",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
        ] {
            assert!(check_redirect(url).is_err(), "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_REDIRECT_URL_LEN));
        assert!(check_redirect(&long).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_opens_until_it_starts_a_session_or_expires() {
        let links = links(Clock::start());
        let (link, token) = links.create(&by(), request()).await.unwrap();
        assert_eq!(links.open(token.expose()).await.unwrap().id, link.id);
        assert!(matches!(
            links.open("cap_nonsense").await,
            Err(OpenError::Unknown)
        ));
        assert!(matches!(
            links.session(token.expose()).await,
            Err(OpenError::NotStarted)
        ));

        let session = SessionId::new();
        assert!(links.mark_used(&link, session).await.unwrap());
        assert!(!links.mark_used(&link, SessionId::new()).await.unwrap());
        assert!(matches!(
            links.open(token.expose()).await,
            Err(OpenError::Refused(CaptureRefusal::Used))
        ));
        assert_eq!(links.session(token.expose()).await.unwrap().1, session);

        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(matches!(
            links.session(token.expose()).await,
            Err(OpenError::Refused(CaptureRefusal::Used))
        ));
        assert_eq!(links.purge().await.unwrap(), 0);
        tokio::time::advance(KEEP_EXPIRED.to_std().unwrap()).await;
        assert_eq!(links.purge().await.unwrap(), 1);
        assert!(matches!(
            links.open(token.expose()).await,
            Err(OpenError::Unknown)
        ));
    }
}
