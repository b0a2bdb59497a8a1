//! Capture links: a short-lived, single-use link an integrator's backend asks for and hands to an
//! applicant, whose page then takes the photos and starts one session of that integrator.
//!
//! The token in the link is a bearer secret like an API key: made from the OS's random source,
//! kept only as a hash, never logged. It grants one thing: starting (and following) the one
//! session it was made for.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{ChallengeId, Claimed, DocumentType, KeyHash, KeyId, Owner, SessionId, random_text};

prefixed_id!(
    /// A capture link's public id, `cpl_` and 16 letters or digits: what logs and lists show,
    /// never the token.
    CaptureLinkId, "cpl_", 16, b"", "a capture link id", "cpl_Xq7Lm2bT9RkWc1Vn"
);

/// Random characters of a token after its prefix: 40 of 62 letters and digits, 238 bits.
const TOKEN_LEN: usize = 40;
const TOKEN_PREFIX: &str = "cap_";

/// A capture link's secret. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct CaptureToken(String);

/// A string that cannot be a capture token. Says nothing of the string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a capture token (cap_ and 40 letters or digits)")]
pub struct MalformedToken;

impl CaptureToken {
    pub fn generate() -> Self {
        Self(format!("{TOKEN_PREFIX}{}", random_text(TOKEN_LEN)))
    }

    /// Checks the shape of a presented token; only the store knows whether it exists.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let secret = text.strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken)?;
        if secret.len() != TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedToken);
        }
        Ok(Self(text.to_owned()))
    }

    /// What the store keeps and looks the link up by: SHA-256 of the token, in hex.
    pub fn hash(&self) -> String {
        KeyHash(Sha256::digest(self.0.as_bytes()).into()).to_hex()
    }

    /// The token itself, for the one answer that carries it (the link's URL).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CaptureToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptureToken(<redacted>)")
    }
}

/// A capture link as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureLink {
    pub id: CaptureLinkId,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The session it starts is this tenant's, in this mode.
    pub owner: Owner,
    /// The key that asked for the link: the session's `created_by`.
    pub created_by: KeyId,
    /// The integrator's reference, given to the session. Never logged.
    pub reference: Option<String>,
    pub document_type: DocumentType,
    /// What the integrator knows of the applicant, given to the session.
    pub claimed: Option<Claimed>,
    /// Where the page sends the applicant when the session has been decided.
    pub redirect_url: Option<String>,
    /// The liveness challenge its page was given: the only one its session may answer.
    pub challenge_id: Option<ChallengeId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session the link started: a link starts one.
    pub used_by: Option<SessionId>,
}

/// Why a link may not start a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptureRefusal {
    #[error("this capture link has already been used; ask for a new one")]
    Used,
    #[error("this capture link has expired; ask for a new one")]
    Expired,
    /// The key that made it has been revoked, or has expired: what it made goes with it.
    #[error("the key that made this capture link no longer acts; ask for a new link")]
    Revoked,
}

impl CaptureRefusal {
    /// The problem's slug.
    pub fn code(self) -> &'static str {
        match self {
            Self::Used => "capture-link-used",
            Self::Expired => "capture-link-expired",
            Self::Revoked => "capture-link-revoked",
        }
    }
}

impl CaptureLink {
    /// Why it may not start a session at `now`, if it may not.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<CaptureRefusal> {
        if self.used_by.is_some() {
            Some(CaptureRefusal::Used)
        } else if now >= self.expires_at {
            Some(CaptureRefusal::Expired)
        } else {
            None
        }
    }

    /// The link's session may still be followed by its token: until the link expires.
    pub fn followable(&self, now: DateTime<Utc>) -> Option<SessionId> {
        self.used_by.filter(|_| now < self.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_never_printed() {
        let token = CaptureToken::generate();
        assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + TOKEN_LEN);
        assert_ne!(token, CaptureToken::generate());
        assert_eq!(CaptureToken::parse(token.expose()), Ok(token.clone()));
        assert_eq!(format!("{token:?}"), "CaptureToken(<redacted>)");
        assert_eq!(token.hash().len(), 64);
        assert_ne!(token.hash(), CaptureToken::generate().hash());
    }

    #[test]
    fn anything_else_is_not_a_token() {
        for text in [
            "",
            "cap_",
            "cap_short",
            &format!("kyc_test_{}", "a".repeat(40)),
            &format!("cap_{}", "a".repeat(41)),
            &format!("cap_{}!", "a".repeat(39)),
        ] {
            assert_eq!(CaptureToken::parse(text), Err(MalformedToken), "{text}");
        }
    }

    fn link(now: DateTime<Utc>) -> CaptureLink {
        CaptureLink {
            id: CaptureLinkId::generate(),
            token_hash: CaptureToken::generate().hash(),
            owner: Owner {
                tenant: "acme".parse().unwrap(),
                mode: super::super::Mode::Test,
            },
            created_by: "key_uaZVCmYi6P63m8D1".parse().unwrap(),
            reference: None,
            document_type: DocumentType::Passport,
            claimed: None,
            redirect_url: None,
            challenge_id: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(30),
            used_by: None,
        }
    }

    #[test]
    fn a_link_starts_one_session_before_it_expires() {
        let now = Utc::now();
        let mut link = link(now);
        assert_eq!(link.refusal(now), None);
        assert_eq!(link.refusal(link.expires_at), Some(CaptureRefusal::Expired));
        assert_eq!(link.followable(now), None);

        let session = SessionId::new();
        link.used_by = Some(session);
        assert_eq!(link.refusal(now), Some(CaptureRefusal::Used));
        assert_eq!(link.followable(now), Some(session));
        assert_eq!(link.followable(link.expires_at), None);
    }
}
