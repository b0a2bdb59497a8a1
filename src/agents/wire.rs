//! The remote agent protocol, both ends: what an `http` agent sends and what
//! `kyc-orchestrator agent-server` (or a vendor's adapter, or a model server in another language)
//! answers. README, "Remote agents", is its specification; this file is the one place its shapes
//! live.
//!
//! A request is `POST {url}/v1/agents/{agent}` with a JSON body: `session`, shaped like the body
//! of `POST /v1/sessions` without `reference` (images as base64), and `upstream`, the wire form
//! of each dependency's output. The answer is the agent's report. Outputs cross the wire where
//! their type is [`Portable`]: doc_capture's rectified document (PNG images), liveness's choice
//! of the frame to compare (its index, scale and faces: the frame itself is in the session's
//! inputs), and the sandbox's marker.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use image::RgbImage;
use serde::{Deserialize, Serialize, Serializer};

use super::doc_capture::Captured;
use super::sandbox::SandboxOutput;
use super::selfie::Selfie;
use super::{Output, Report, Verdict};
use crate::domain::{
    Claimed, DocumentType, ImageData, NewSession, SandboxDirective, SelfieChallenge,
};

/// Where an agent server answers for the agent `name`, under the base URL `url`.
pub fn agent_path(name: &str) -> String {
    format!("/v1/agents/{name}")
}

/// The header that carries the session's id to a remote agent, for its logs.
pub const SESSION_HEADER: &str = "x-session-id";
/// The header that says how many milliseconds the remote has before its answer stops counting.
pub const DEADLINE_HEADER: &str = "kyc-deadline-ms";

/// An output type that can be handed to a remote agent.
pub trait Portable: std::any::Any + Send + Sync + Sized {
    /// Its `type` on the wire.
    const TYPE: &'static str;

    /// Whether encoding it is cheap enough to do on the async runtime (no images).
    const CHEAP: bool = false;

    /// Its fields as a JSON object (without `type`).
    fn encode(&self) -> Result<serde_json::Value, String>;

    /// Back from its wire form (`type` and those fields; unknown fields are ignored, so a
    /// newer peer may add some), for the session whose inputs are `session`.
    fn decode(wire: &serde_json::Value, session: &NewSession) -> Result<Self, String>;
}

/// `fields` with `"type": kind` in front.
pub(super) fn tagged(kind: &str, fields: serde_json::Value) -> Result<serde_json::Value, String> {
    let serde_json::Value::Object(fields) = fields else {
        return Err("an output's wire form must be an object".into());
    };
    let mut tagged = serde_json::Map::with_capacity(fields.len() + 1);
    tagged.insert("type".into(), kind.into());
    tagged.extend(fields);
    Ok(tagged.into())
}

/// An output from its wire form, by its `type`. CPU work for images: call it off the runtime.
/// The wire form is kept as the output's encoding: handed on to another remote agent, it is
/// sent as it came, not encoded again.
pub fn decode_output(value: serde_json::Value, session: &NewSession) -> Result<Output, String> {
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ if !value.is_object() => return Err("an output must be a JSON object".into()),
        _ => return Err("an output needs a string `type`".into()),
    };
    let wire = Arc::new(value);
    match kind.as_str() {
        Captured::TYPE => {
            Captured::decode(&wire, session).map(|v| Output::portable_encoded(v, wire))
        }
        Selfie::TYPE => Selfie::decode(&wire, session).map(|v| Output::portable_encoded(v, wire)),
        SandboxOutput::TYPE => {
            SandboxOutput::decode(&wire, session).map(|v| Output::portable_encoded(v, wire))
        }
        // The remote's text is not repeated: it could be anything, and errors are logged.
        _ => Err("an output of an unknown type".into()),
    }
}

/// Whether decoding `value` is cheap enough for the async runtime: an output without images.
pub fn decodes_cheaply(value: &serde_json::Value) -> bool {
    value.get("type").and_then(serde_json::Value::as_str) == Some(SandboxOutput::TYPE)
}

/// The bounds of an image that crosses the wire: a rectified document is at most 1,600 pixels
/// wide, and a peer that sends more is not trusted with the decoder's memory.
const WIRE_IMAGE_LIMITS: crate::domain::ImageLimits = crate::domain::ImageLimits {
    max_bytes: 32 * 1024 * 1024,
    max_pixels: 16_000_000,
    max_side: 8_000,
};

/// An image as base64 PNG: lossless, so a remote agent sees the pixels a local one would, and
/// compressed fast (the wire is a data-centre network, the CPU is the scarce part).
pub(super) fn png_base64(image: &RgbImage) -> Result<String, String> {
    crate::vision::encode_png(image)
        .map(|png| STANDARD.encode(png))
        .map_err(|e| format!("cannot encode an image: {e}"))
}

/// An image from [`png_base64`]'s form, decoded within `WIRE_IMAGE_LIMITS` (read from its
/// header first, as the service's own inputs are).
pub(super) fn image_from_base64(text: &str) -> Result<Arc<RgbImage>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| "an image of an output is not base64".to_owned())?;
    crate::vision::decode(&bytes, &WIRE_IMAGE_LIMITS)
        .map(Arc::new)
        .map_err(|e| format!("an image of an output cannot be decoded ({})", e.code()))
}

/// The body a remote agent is sent: the session's inputs and the dependencies' outputs.
#[derive(Serialize)]
pub struct AgentRequestOut<'a> {
    session: SessionOut<'a>,
    upstream: BTreeMap<&'a str, &'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<&'a SelfieChallenge>,
}

#[derive(Serialize)]
struct SessionOut<'a> {
    document: DocumentOut<'a>,
    selfie: SelfieOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed: Option<&'a Claimed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<BTreeMap<&'a str, &'a SandboxDirective>>,
}

#[derive(Serialize)]
struct DocumentOut<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<DocumentType>,
    #[serde(serialize_with = "base64_image")]
    front: &'a ImageData,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "base64_optional"
    )]
    back: Option<&'a ImageData>,
}

#[derive(Serialize)]
struct SelfieOut<'a> {
    #[serde(serialize_with = "base64_images")]
    frames: &'a [ImageData],
}

fn base64_image<S: Serializer>(image: &&ImageData, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Base64Display::new(image.bytes(), &STANDARD))
}

fn base64_optional<S: Serializer>(image: &Option<&ImageData>, s: S) -> Result<S::Ok, S::Error> {
    match image {
        Some(image) => base64_image(image, s),
        None => s.serialize_none(),
    }
}

fn base64_images<S: Serializer>(images: &&[ImageData], s: S) -> Result<S::Ok, S::Error> {
    /// One image, serialised as base64 text without a copy of it in between.
    struct Text<'a>(&'a ImageData);
    impl Serialize for Text<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&Base64Display::new(self.0.bytes(), &STANDARD))
        }
    }
    s.collect_seq(images.iter().map(Text))
}

impl<'a> AgentRequestOut<'a> {
    /// The request for the remote agent `remote`: the session's inputs (the sandbox directive
    /// for `local`, the plan's name of it, renamed to `remote`, and no other), and `upstream`.
    pub fn new(
        input: &'a NewSession,
        local: &str,
        remote: &'a str,
        upstream: &'a BTreeMap<String, Arc<serde_json::Value>>,
    ) -> Self {
        let sandbox = input
            .sandbox
            .as_ref()
            .and_then(|script| script.0.get(local))
            .map(|directive| BTreeMap::from([(remote, directive)]));
        Self {
            session: SessionOut {
                document: DocumentOut {
                    kind: input.document.kind,
                    front: &input.document.front,
                    back: input.document.back.as_ref(),
                },
                selfie: SelfieOut {
                    frames: input.selfie.frames(),
                },
                claimed: input.claimed.as_ref(),
                sandbox,
            },
            upstream: upstream
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_ref()))
                .collect(),
            challenge: input.selfie.challenge.as_ref(),
        }
    }
}

/// The body an agent server reads: the session's inputs are parsed as `POST /v1/sessions`
/// parses its body, by the same code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRequestIn<'a> {
    #[serde(borrow)]
    pub session: &'a serde_json::value::RawValue,
    #[serde(default)]
    pub upstream: BTreeMap<String, serde_json::Value>,
    /// The liveness challenge the selfie answers, with the steps the caller took from its
    /// store: the agent server trusts its authenticated caller, never a session's client.
    #[serde(default)]
    pub challenge: Option<SelfieChallenge>,
}

/// Whether the remote's check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    Passed,
    Failed,
}

/// A remote agent's report: `200` to `POST /v1/agents/{agent}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentAnswer {
    pub status: AnswerStatus,
    /// 0 to 1, the agent's own confidence in its verdict's measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Reason codes (`a-z`, `0-9`, `_`, `:`), for a failed check at least one.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Evidence for a reviewer: any JSON, never personal data.
    #[serde(default)]
    pub details: serde_json::Value,
    /// Personal data read from the inputs (names, numbers, dates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<serde_json::Value>,
    /// The output handed to the agents that depend on this one: an object with a `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
}

impl AgentAnswer {
    /// A report as its answer; its output's wire form, if it has one. CPU work for images.
    pub fn from_report(report: Report) -> Result<Self, String> {
        let output = match report.output.as_ref().and_then(Output::encoded) {
            Some(encoded) => Some(encoded?.as_ref().clone()),
            None => None,
        };
        Ok(Self {
            status: match report.verdict {
                Verdict::Passed => AnswerStatus::Passed,
                Verdict::Failed => AnswerStatus::Failed,
            },
            score: report.score,
            reasons: report.reasons,
            details: report.details,
            extracted: report.extracted,
            output,
        })
    }

    /// The report it carries, checked: reason codes, a score between 0 and 1, and an output
    /// this service can read for `session`. CPU work for images.
    pub fn into_report(self, session: &NewSession) -> Result<Report, String> {
        if !self
            .reasons
            .iter()
            .all(|code| crate::domain::is_reason_code(code))
        {
            return Err("a reason code is not 1 to 64 characters of a-z, 0-9, '_' and ':'".into());
        }
        if self.score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err("the score must be between 0 and 1".into());
        }
        let mut report = match self.status {
            AnswerStatus::Passed => Report::passed(self.score),
            AnswerStatus::Failed => Report::failed(self.score, self.reasons),
        }
        .with_details(self.details);
        if let Some(extracted) = self.extracted {
            report = report.with_extracted(extracted);
        }
        if let Some(output) = self.output {
            report = report.with_output(decode_output(output, session)?);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of one 8x8 frame and document.
    fn session() -> NewSession {
        let mut png = Vec::new();
        RgbImage::new(8, 8)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let limits = crate::domain::ImageLimits {
            max_bytes: 1 << 20,
            max_pixels: 1 << 20,
            max_side: 100,
        };
        let image = ImageData::parse(png.into(), &limits).unwrap();
        NewSession {
            reference: None,
            selfie: crate::domain::Selfie::new(vec![image.clone()]).unwrap(),
            document: crate::domain::Document {
                kind: None,
                front: image,
                back: None,
            },
            claimed: None,
            sandbox: None,
        }
    }

    #[test]
    fn a_document_output_crosses_the_wire_pixel_for_pixel() {
        let front = RgbImage::from_fn(40, 25, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 77]));
        let portrait = RgbImage::from_pixel(8, 10, image::Rgb([200, 10, 10]));
        let sent = Output::portable(Captured {
            front: Arc::new(front.clone()),
            photo: None,
            back: None,
            portrait: Some(Arc::new(portrait.clone())),
        });
        let wire = sent.encoded().unwrap().unwrap();
        assert_eq!(wire["type"], "document");
        let received = decode_output(wire.as_ref().clone(), &session()).unwrap();
        assert!(received.encoding_is_cheap(), "its wire form is kept");
        assert_eq!(received.encoded().unwrap().unwrap(), wire);
        let captured = received.downcast_ref::<Captured>().unwrap();
        assert_eq!(*captured.front, front);
        assert_eq!(captured.portrait.as_deref(), Some(&portrait));
        assert!(captured.photo.is_none() && captured.back.is_none());
    }

    #[test]
    fn livenesss_choice_of_frame_crosses_the_wire_and_is_rebuilt_from_the_sessions_frame() {
        use crate::agents::selfie::{Frame, scaled};
        use crate::vision::biometrics::FaceBox;
        let session = session();
        let frame = &session.selfie.frames()[0];
        let limits = crate::domain::ImageLimits {
            max_bytes: 1 << 20,
            max_pixels: 1 << 20,
            max_side: 100,
        };
        let decoded = crate::vision::decode(frame.bytes(), &limits).unwrap();
        let scale = 2.5_f32;
        let face = FaceBox {
            x: 1.1,
            y: 2.2,
            width: 3.3333333,
            height: 4.4,
        };
        let sent = Output::portable(Selfie {
            frames: vec![Some(Frame {
                image: Arc::new(scaled(&decoded, scale)),
                scale,
                faces: vec![face],
                landmarks: None,
                sharpness: 123.456,
            })],
            undecodable: Vec::new(),
        });
        let wire = sent.encoded().unwrap().unwrap();
        assert_eq!(wire["type"], "selfie");

        let received = decode_output(wire.as_ref().clone(), &session).unwrap();
        let selfie = received.downcast_ref::<Selfie>().unwrap();
        let (index, best) = selfie.best().unwrap();
        assert_eq!(index, 0);
        assert_eq!(best.faces, [face], "face boxes exact, not rounded");
        assert_eq!(best.scale, scale);
        assert_eq!(*best.image, scaled(&decoded, scale));

        let mut other = session.clone();
        other.selfie = crate::domain::Selfie::new(vec![frame.clone(), frame.clone()]).unwrap();
        assert!(decode_output(wire.as_ref().clone(), &other).is_err());
    }

    #[test]
    fn an_output_without_a_wire_form_is_not_sent_and_unknown_types_are_refused() {
        assert!(Output::new(3u8).encoded().is_none());
        let error = decode_output(serde_json::json!({"type": "hologram"}), &session()).unwrap_err();
        assert!(
            !error.contains("hologram"),
            "the peer's words are not repeated: {error}"
        );
        assert!(decode_output(serde_json::json!([1]), &session()).is_err());
    }

    #[test]
    fn an_answer_with_a_bad_reason_or_score_is_not_a_report() {
        let answer = |reasons: Vec<&str>, score| AgentAnswer {
            status: AnswerStatus::Failed,
            score,
            reasons: reasons.into_iter().map(str::to_owned).collect(),
            details: serde_json::Value::Null,
            extracted: None,
            output: None,
        };
        let session = session();
        let report = |answer: AgentAnswer| answer.into_report(&session);
        assert!(report(answer(vec!["Not A Code"], None)).is_err());
        assert!(report(answer(vec!["face_mismatch"], Some(1.5))).is_err());
        let report = report(answer(vec!["face_mismatch"], Some(0.2))).unwrap();
        assert_eq!(report.verdict, Verdict::Failed);
        assert_eq!(report.reasons, ["face_mismatch"]);
    }
}
