//! The `multipart/form-data` body: images as file parts, everything else in a JSON `metadata`
//! part.

use std::collections::BTreeMap;

use axum::extract::Multipart;
use serde::Deserialize;

use super::redact::{describe, echoable};
use super::{Draft, body_error};
use crate::api::error::{ApiError, FieldError};
use crate::domain::SandboxDirective;
use crate::domain::{Claimed, DocumentType};

/// The `metadata` part: everything but the images.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    reference: Option<String>,
    document: Option<MetadataDocument>,
    claimed: Option<Claimed>,
    sandbox: Option<BTreeMap<String, SandboxDirective>>,
    /// The liveness challenge the `selfie` parts answer.
    challenge_id: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataDocument {
    #[serde(rename = "type")]
    kind: Option<DocumentType>,
}

/// The body's parts; `limit` is the body limit a part that is too large is reported against.
pub(super) async fn parse(mut multipart: Multipart, limit: usize) -> Result<Draft, ApiError> {
    let mut draft = Draft::default();
    let mut metadata: Option<Metadata> = None;
    let mut frames = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(e.status(), limit, e.body_text()))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| body_error(e.status(), limit, e.body_text()))?;
        match name.as_str() {
            "selfie" => frames.push((format!("selfie[{}]", frames.len()), bytes)),
            "document_front" => draft.front = Some((name, bytes)),
            "document_back" => draft.back = Some((name, bytes)),
            "metadata" => match serde_json::from_slice::<Metadata>(&bytes) {
                Ok(parsed) => metadata = Some(parsed),
                Err(error) => {
                    draft
                        .errors
                        .push(FieldError::new("metadata", "invalid", describe(&error)))
                }
            },
            _ => draft.errors.push(FieldError::new(
                echoable(&name),
                "unknown_part",
                "expected parts: selfie, document_front, document_back, metadata",
            )),
        }
    }
    let metadata = metadata.unwrap_or_default();
    draft.reference = metadata.reference;
    draft.claimed = metadata.claimed;
    draft.sandbox = metadata.sandbox;
    draft.challenge_id = metadata.challenge_id;
    draft.kind = metadata.document.and_then(|d| d.kind);
    draft.document_present = draft.front.is_some() || draft.back.is_some();
    if !frames.is_empty() {
        draft.frames = Some(frames);
    }
    Ok(draft)
}
