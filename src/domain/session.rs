//! A checked session request: what the orchestrator runs.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Claimed, ImageData, SandboxScript, SelfieChallenge};

/// Kinds of identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    Passport,
    IdCard,
    DrivingLicence,
}

impl DocumentType {
    pub const ALL: [Self; 3] = [Self::Passport, Self::IdCard, Self::DrivingLicence];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passport => "passport",
            Self::IdCard => "id_card",
            Self::DrivingLicence => "driving_licence",
        }
    }

    /// Whether the document has a back worth photographing (an ID card's MRZ is on its back).
    pub fn has_back(self) -> bool {
        !matches!(self, Self::Passport)
    }
}

impl std::str::FromStr for DocumentType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a document type"))
    }
}

/// The identity document's images.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: Option<DocumentType>,
    pub front: ImageData,
    pub back: Option<ImageData>,
}

/// One or more selfie frames, in capture order; never empty. With a challenge, the frames
/// answer it.
#[derive(Debug, Clone)]
pub struct Selfie {
    frames: Vec<ImageData>,
    pub challenge: Option<SelfieChallenge>,
}

impl Selfie {
    /// `None` when there is no frame.
    pub fn new(frames: Vec<ImageData>) -> Option<Self> {
        (!frames.is_empty()).then_some(Self {
            frames,
            challenge: None,
        })
    }

    pub fn frames(&self) -> &[ImageData] {
        &self.frames
    }
}

/// The client's own reference for the session: printable, bounded. It may identify a person in
/// the client's systems, so it is stored and returned but never logged.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reference(String);

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference is empty")]
    Empty,
    #[error("the reference is longer than {0} characters")]
    TooLong(usize),
    #[error("the reference contains control characters")]
    ControlCharacters,
}

impl Reference {
    pub fn parse(value: String, max_len: usize) -> Result<Self, ReferenceError> {
        if value.trim().is_empty() {
            return Err(ReferenceError::Empty);
        }
        if value.chars().count() > max_len {
            return Err(ReferenceError::TooLong(max_len));
        }
        if value.chars().any(char::is_control) {
            return Err(ReferenceError::ControlCharacters);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reference(<redacted>)")
    }
}

/// Everything a session needs, checked.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub reference: Option<Reference>,
    pub selfie: Selfie,
    pub document: Document,
    /// What the applicant claims, compared with the document by ocr.
    pub claimed: Option<Claimed>,
    /// Scripted behaviour for sandbox agents; only accepted when sandbox agents are configured.
    pub sandbox: Option<SandboxScript>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_bounded_printable_and_never_debug_printed() {
        let reference = Reference::parse("customer-42".into(), 16).unwrap();
        assert_eq!(reference.as_str(), "customer-42");
        assert_eq!(format!("{reference:?}"), "Reference(<redacted>)");
        assert_eq!(Reference::parse(" ".into(), 16), Err(ReferenceError::Empty));
        assert_eq!(
            Reference::parse("x".repeat(17), 16),
            Err(ReferenceError::TooLong(16))
        );
        assert_eq!(
            Reference::parse("a\nb".into(), 16),
            Err(ReferenceError::ControlCharacters)
        );
    }
}
