//! face_match: is the person in the selfie the person on the document?
//!
//! It takes the sharpest selfie frame with a face (from liveness's analysis when liveness ran,
//! otherwise it analyses the frames itself) and the portrait doc_capture found, finds the face
//! in each with dlib's HOG detector, aligns it by five landmarks and embeds it with dlib's ResNet
//! model. The Euclidean distance between the two embeddings decides: at most `match_distance`
//! passes, at least `mismatch_distance` is `face_mismatch`, and in between is
//! `face_match_uncertain`, for a person to look at.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::doc_capture::Captured;
use super::selfie::{self, Selfie};
use super::warm::{Loader, Loading, Warm};
use super::{
    AgentContext, AgentError, AgentKind, CheckSettings, CpuAgent, Output, Report, Resources,
    rounded,
};
use crate::domain::{ImageData, ImageLimits};
use crate::models::ModelError;
use crate::vision::biometrics::{self, Biometrics, Embedding, FaceBox, Prepared};

/// Thresholds, from the agent's `settings` table; every check records the ones it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaceMatchSettings {
    /// The agent that provides the document's portrait.
    pub document_from: String,
    /// The agent whose analysis of the selfie frames is reused; when it did not run, the
    /// frames are analysed here.
    pub selfie_from: String,
    /// Embedding distance at or below which the faces match.
    pub match_distance: f64,
    /// Embedding distance at or above which they are different people.
    pub mismatch_distance: f64,
}

impl Default for FaceMatchSettings {
    fn default() -> Self {
        Self {
            document_from: "doc_capture".into(),
            selfie_from: "liveness".into(),
            // dlib's own threshold is 0.6 (99.38 % on LFW). A KYC decision is costlier when it
            // accepts the wrong person than when a reviewer looks at the right one, so the band
            // from 0.5 to 0.6 goes to review.
            match_distance: 0.5,
            mismatch_distance: 0.6,
        }
    }
}

impl CheckSettings for FaceMatchSettings {
    fn check(&self) -> Result<(), String> {
        if self.match_distance > self.mismatch_distance {
            return Err(format!(
                "match_distance ({}) must not exceed mismatch_distance ({})",
                self.match_distance, self.mismatch_distance
            ));
        }
        Ok(())
    }
}

/// The portrait is enlarged to at least this longer side before detection: the detector finds
/// faces of 80 px and more, and a portrait crop is about twice its face. A larger one is
/// reduced like a selfie frame.
const PORTRAIT_SIDE: u32 = 400;

#[derive(Clone)]
pub struct FaceMatch {
    settings: FaceMatchSettings,
    limits: ImageLimits,
    engine: Warm<Biometrics>,
}

impl AgentKind for FaceMatch {
    const KIND: &'static str = "face_match";
    const REASONS: &'static [&'static str] = &[
        "face_mismatch",
        "face_match_uncertain",
        "multiple_faces_in_selfie",
        "no_face_in_selfie",
        "no_face_on_document",
    ];
    type Settings = FaceMatchSettings;

    /// The agent, and the loader of its models (whose files must exist now), with one
    /// detector and one network per CPU slot.
    fn build(
        settings: FaceMatchSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let (limits, models, slots) = (resources.limits, resources.models, resources.slots);
        for file in [biometrics::LANDMARKS_5, biometrics::EMBEDDING_MODEL] {
            crate::models::locate(models, file)?;
        }
        let dir = models.to_path_buf();
        let (engine, loader) =
            Warm::new(move || Biometrics::load(&dir, biometrics::LANDMARKS_5, true, slots));
        Ok((
            Self {
                settings,
                limits,
                engine,
            },
            Some(loader),
        ))
    }

    fn reads(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("document_from", &self.settings.document_from),
            ("selfie_from", &self.settings.selfie_from),
        ]
    }
}

impl FaceMatch {
    /// Compares the selfie (frames sent, or liveness's analysis of them) with the document's
    /// portrait, synchronously.
    pub fn compare(
        &self,
        selfie: Option<&Selfie>,
        frames: &[ImageData],
        captured: &Captured,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let engine = self.engine.get()?;
        let s = &self.settings;
        let own;
        let selfie = match selfie {
            Some(selfie) => selfie,
            None => {
                own = Selfie::analyse(frames, &self.limits, engine, false, cancel)?;
                &own
            }
        };
        let models = json!({
            "landmarks": engine.landmarks_model,
            "embedding": engine.embedding_model,
        });
        let mut details = json!({ "thresholds": s, "models": models });
        let Some((index, frame)) = selfie.best() else {
            return Ok(
                Report::failed(Some(0.0), vec!["no_face_in_selfie".into()]).with_details(details)
            );
        };
        details["selfie"] = json!({
            "frame": index,
            "faces": frame.faces.len(),
            "face": frame.faces[0].scaled(1.0 / frame.scale),
        });
        if cancel.is_cancelled() {
            return Err(AgentError::Cancelled);
        }
        let Some((portrait, portrait_face, on, k)) = find_portrait(engine, captured) else {
            return Ok(
                Report::failed(Some(0.0), vec!["no_face_on_document".into()]).with_details(details),
            );
        };
        details["document"] = json!({ "face": portrait_face.scaled(1.0 / k), "found_on": on });
        let selfie_embedding = embed(engine, &Prepared::new(&frame.image), frame.faces[0])?;
        let portrait_embedding = embed(engine, &portrait, portrait_face)?;
        let distance = f64::from(selfie_embedding.distance(&portrait_embedding));
        // The similarity a reviewer reads: 1 for identical embeddings, 0 at distance 1 and
        // beyond (README, Faces, has the distances of unrelated faces).
        let similarity = rounded((1.0 - distance).max(0.0), 3);
        details["distance"] = json!(rounded(distance, 3));
        details["similarity"] = json!(similarity);

        let mut reasons = Vec::new();
        if frame.faces.len() > 1 {
            reasons.push("multiple_faces_in_selfie");
        }
        if distance >= s.mismatch_distance {
            reasons.push("face_mismatch");
        } else if distance > s.match_distance {
            reasons.push("face_match_uncertain");
        }
        let report = if reasons.is_empty() {
            Report::passed(Some(similarity))
        } else {
            Report::failed(
                Some(similarity),
                reasons.into_iter().map(str::to_owned).collect(),
            )
        };
        Ok(report.with_details(details))
    }
}

/// The portrait (scaled by the returned factor, converted once for detection and embedding)
/// and the face on it: on doc_capture's portrait crop, else anywhere on the rectified front
/// (doc_capture's detector may have missed a face this one finds).
fn find_portrait(
    engine: &Biometrics,
    captured: &Captured,
) -> Option<(Prepared, FaceBox, &'static str, f32)> {
    let candidates = captured
        .portrait
        .iter()
        .map(|p| (p, "portrait"))
        .chain(std::iter::once((&captured.front, "front")));
    for (image, on) in candidates {
        let side = image.width().max(image.height()) as f32;
        let k = if side < PORTRAIT_SIDE as f32 {
            PORTRAIT_SIDE as f32 / side
        } else {
            (selfie::DETECTION_SIDE as f32 / side).min(1.0)
        };
        let scaled = selfie::scaled(image, k);
        let prepared = Prepared::new(&scaled);
        if let Some(&face) = engine.detect_large_first(&scaled, &prepared).first() {
            return Some((prepared, face, on, k));
        }
    }
    None
}

fn embed(engine: &Biometrics, image: &Prepared, face: FaceBox) -> Result<Embedding, AgentError> {
    engine
        .embed(image, face)
        .ok_or_else(|| AgentError::Failed("the face embedding model is not loaded".into()))
}

impl CpuAgent for FaceMatch {
    /// The document, liveness's analysis of the selfie when it ran, and the frames.
    type Input = (Captured, Option<Output>, Vec<ImageData>);

    fn models(&self) -> Option<&dyn Loading> {
        Some(&self.engine)
    }

    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError> {
        Ok((
            Captured::upstream(ctx, &self.settings.document_from)?,
            ctx.upstream_output(&self.settings.selfie_from).cloned(),
            ctx.input().selfie.frames().to_vec(),
        ))
    }

    fn compute(
        &self,
        (captured, analysed, frames): Self::Input,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let selfie = analysed.as_ref().and_then(|o| o.downcast_ref::<Selfie>());
        self.compare(selfie, &frames, &captured, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_threshold_past_the_mismatch_threshold_is_refused() {
        assert!(FaceMatchSettings::default().check().is_ok());
        let crossed = FaceMatchSettings {
            match_distance: 0.7,
            ..FaceMatchSettings::default()
        };
        assert!(crossed.check().unwrap_err().contains("match_distance"));
    }
}
