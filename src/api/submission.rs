//! The body of `POST /v1/sessions`, as JSON (base64 images) or multipart (file parts), turned
//! into a checked [`NewSession`]. Every problem found is reported at once, field by field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, FieldError};
use crate::config::LimitSettings;
use crate::domain::{
    Claimed, Document, DocumentType, ImageData, NewSession, Reference, SandboxDirective,
    SandboxScript, Selfie,
};

/// Standard base64, padding optional: clients differ on it and it carries no meaning.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A checked session request.
pub struct Submission(pub NewSession);

/// Bodies above this size are parsed on the blocking pool: decoding megabytes of base64 is CPU
/// work that would otherwise stall the runtime's workers.
const INLINE_PARSE_LIMIT: usize = 256 * 1024;

/// `application/json` body.
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

/// A JSON string that borrows from the request body unless it has escapes (serde's own `Cow`
/// only borrows as a bare field, never inside `Option` or `Vec`). Base64 images are megabytes;
/// this saves a copy of each.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The `metadata` part of a multipart body: everything but the images.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    reference: Option<String>,
    document: Option<MetadataDocument>,
    claimed: Option<Claimed>,
    sandbox: Option<BTreeMap<String, SandboxDirective>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataDocument {
    #[serde(rename = "type")]
    kind: Option<DocumentType>,
}

/// The request's parts, images still raw, with their field names for error reports.
#[derive(Default)]
struct Draft {
    reference: Option<String>,
    /// `None`: the client sent no selfie at all.
    frames: Option<Vec<(String, Bytes)>>,
    document_present: bool,
    kind: Option<DocumentType>,
    front: Option<(String, Bytes)>,
    back: Option<(String, Bytes)>,
    claimed: Option<Claimed>,
    sandbox: Option<BTreeMap<String, SandboxDirective>>,
    errors: Vec<FieldError>,
}

impl FromRequest<AppState> for Submission {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.body_limit;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let draft = match essence.as_str() {
            "application/json" => {
                let body = arrives_in_time(state, Bytes::from_request(request, state))
                    .await?
                    .map_err(|rejection| {
                        body_error(rejection.status(), limit, rejection.body_text())
                    })?;
                if body.len() > INLINE_PARSE_LIMIT {
                    let state = state.clone();
                    return tokio::task::spawn_blocking(move || {
                        parse_json(&body)?.check(&state.limits, state.orchestrator.sandbox_agents())
                    })
                    .await
                    .map_err(|e| ApiError::Internal(Box::new(e)))?
                    .map(Self);
                }
                parse_json(&body)?
            }
            "multipart/form-data" => {
                let multipart = Multipart::from_request(request, state)
                    .await
                    .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
                arrives_in_time(state, parse_multipart(multipart, limit)).await??
            }
            "" => {
                return Err(ApiError::UnsupportedMediaType(
                    "missing Content-Type; send application/json or multipart/form-data".into(),
                ));
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "`{other}`; send application/json or multipart/form-data"
                )));
            }
        };
        draft
            .check(&state.limits, state.orchestrator.sandbox_agents())
            .map(Self)
    }
}

/// The admission slot is already held while the body arrives: a client that trickles its body
/// must not keep it. Only the reading is timed, not the parsing after it.
async fn arrives_in_time<T>(
    state: &AppState,
    read: impl Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout(state.body_timeout))
}

/// A client-supplied name (a JSON key, a part name) is echoed only if it looks like an
/// identifier; anything else might be data.
pub(super) fn echoable(name: &str) -> String {
    let plain = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'[' | b']'));
    if plain {
        name.to_owned()
    } else {
        "<unnamed>".to_owned()
    }
}

/// A field path with every segment that does not look like an identifier hidden.
fn echoable_path(path: &str) -> String {
    path.split('.').map(echoable).collect::<Vec<_>>().join(".")
}

fn body_error(status: axum::http::StatusCode, limit: usize, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(text)
    }
}

fn parse_json(body: &[u8]) -> Result<Draft, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: JsonBody<'_> =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
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
    let mut draft = Draft {
        reference: parsed.reference,
        claimed: parsed.claimed,
        sandbox: parsed.sandbox,
        ..Draft::default()
    };
    if let Some(selfie) = parsed.selfie {
        let mut frames = Vec::with_capacity(selfie.frames.len());
        for (i, frame) in selfie.frames.iter().enumerate() {
            let field = format!("selfie.frames[{i}]");
            if let Some(bytes) = decode_base64(&field, &frame.0, &mut draft.errors) {
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
                let bytes = decode_base64(name, &value.0, &mut draft.errors);
                *slot = bytes.map(|b| (name.to_owned(), b));
            }
        }
    }
    Ok(draft)
}

async fn parse_multipart(mut multipart: Multipart, limit: usize) -> Result<Draft, ApiError> {
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
    draft.kind = metadata.document.and_then(|d| d.kind);
    draft.document_present = draft.front.is_some() || draft.back.is_some();
    if !frames.is_empty() {
        draft.frames = Some(frames);
    }
    Ok(draft)
}

/// serde's message without the offending value: serde quotes the input it rejects (a whole
/// base64 image, a name sent in the wrong field), and problem bodies must not echo personal data.
/// Field names and the list of expected values are kept.
fn describe(error: &serde_json::Error) -> String {
    const KINDS: [&str; 5] = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "unknown field",
    ];
    if error.classify() != serde_json::error::Category::Data {
        // Syntax and end-of-input messages name the expected token, never the input.
        return error.to_string();
    }
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("missing field `{}`", echoable(field));
    }
    let kind = KINDS
        .into_iter()
        .find(|kind| message.starts_with(kind))
        .unwrap_or("invalid value");
    // The expected part is ours; the value before it is the client's and may itself contain
    // ", expected ", so split at the last one.
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("{kind}: expected {expected}"),
        None => kind.to_owned(),
    }
}

fn decode_base64(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Bytes> {
    // Accept a data URL as well as bare base64: browsers hand out the former.
    let payload = match value.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => value,
    };
    match BASE64.decode(payload.trim()) {
        Ok(bytes) => Some(bytes.into()),
        Err(error) => {
            errors.push(FieldError::new(
                field,
                "bad_base64",
                format!("not valid base64: {error}"),
            ));
            None
        }
    }
}

impl Draft {
    /// Applies every rule and returns the session, or every problem found.
    fn check(
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

        let selfie = Selfie::new(frames);
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
