//! The `application/json` body: images as base64 strings, decoded straight from the body.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Draft;
use super::base64;
use super::redact::{describe, echoable_path};
use super::text::Text;
use crate::api::error::{ApiError, FieldError};
use crate::domain::SandboxDirective;
use crate::domain::{Claimed, DocumentType};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBody<'a> {
    reference: Option<String>,
    #[serde(borrow)]
    selfie: Option<JsonSelfie<'a>>,
    #[serde(borrow)]
    document: Option<JsonDocument<'a>>,
    claimed: Option<Claimed>,
    sandbox: Option<BTreeMap<String, SandboxDirective>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSelfie<'a> {
    #[serde(borrow, default)]
    frames: Vec<Text<'a>>,
    challenge_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDocument<'a> {
    #[serde(rename = "type")]
    kind: Option<DocumentType>,
    #[serde(borrow)]
    front: Option<Text<'a>>,
    #[serde(borrow)]
    back: Option<Text<'a>>,
}

/// A JSON body of type `T`: not JSON (or trailing bytes) is `400 malformed-json`; JSON of the
/// wrong shape is `422` naming the field, with no value of the request in the message.
pub(crate) fn from_json<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    "body".to_owned()
                } else {
                    echoable_path(&path)
                };
                ApiError::Invalid(vec![FieldError::new(field, "invalid", describe(&inner))])
            }
            _ => ApiError::MalformedJson(describe(&inner)),
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::MalformedJson(describe(&error)))?;
    Ok(parsed)
}

/// The body's parts: a body that is not JSON, or JSON of the wrong shape, is refused whole;
/// a bad image is one field error among the others.
pub(super) fn parse(body: &[u8]) -> Result<Draft, ApiError> {
    let parsed: JsonBody<'_> = from_json(body)?;
    let mut draft = Draft {
        reference: parsed.reference,
        claimed: parsed.claimed,
        sandbox: parsed.sandbox,
        ..Draft::default()
    };
    if let Some(selfie) = parsed.selfie {
        draft.challenge_id = selfie.challenge_id;
        let mut frames = Vec::with_capacity(selfie.frames.len());
        for (i, frame) in selfie.frames.iter().enumerate() {
            let field = format!("selfie.frames[{i}]");
            if let Some(bytes) = base64::decode(&field, &frame.0, &mut draft.errors) {
                frames.push((field, bytes));
            }
        }
        draft.frames = Some(frames);
    }
    if let Some(document) = parsed.document {
        draft.document_present = true;
        draft.kind = document.kind;
        for (name, value, slot) in [
            ("document.front", document.front, &mut draft.front),
            ("document.back", document.back, &mut draft.back),
        ] {
            if let Some(value) = value {
                let bytes = base64::decode(name, &value.0, &mut draft.errors);
                *slot = bytes.map(|b| (name.to_owned(), b));
            }
        }
    }
    Ok(draft)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_of_the_openapi_document_parses() {
        let body = serde_json::to_vec(&crate::api::openapi::example_request()).unwrap();
        let draft = super::parse(&body).unwrap();
        assert!(draft.errors.is_empty());
        assert_eq!(draft.frames.map(|f| f.len()), Some(1));
    }
}
