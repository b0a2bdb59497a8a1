//! liveness: is the selfie a live person in front of the camera?
//!
//! No registry package ships a passive anti-spoofing model that runs here, so this agent
//! measures what the frames themselves show and says which signal decided:
//!
//! - **Motion across frames** (decisive, see [`motion`]): a head moves non-rigidly (parallax of
//!   the nose against the cheeks, blinks), a print or a screen moves as one plane. Frames whose
//!   face is too small for the landmarks to resolve that motion give no motion evidence.
//! - **Single-frame cues** (supporting only, see [`cues`]): low colour saturation (a
//!   black-and-white or faded print) and blown-out highlights on the face (a screen's glare).
//!   They can stop a pass, and add to motion evidence of a flat picture, but never fail a
//!   session on their own.
//!
//! What it cannot catch (README lists it): a video of the person replayed on a screen shows a
//! live head's motion and can pass; a colour print held still shows no motion at all and goes
//! to review. One frame alone is never a pass.

pub mod cues;
pub mod motion;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::selfie::{Frame, Selfie};
use super::warm::{Loader, Loading, Warm};
use super::{
    AgentContext, AgentError, AgentKind, CheckSettings, CpuAgent, Output, Report, Resources,
    rounded,
};
use crate::domain::{ImageData, ImageLimits};
use crate::models::ModelError;
use crate::vision::biometrics::{self, Biometrics, FaceBox};

/// Consecutive frames' faces must overlap this much (intersection over union) to count as one
/// face moving.
const MIN_OVERLAP: f32 = 0.3;

/// Thresholds, from the agent's `settings` table; every check records the ones it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessSettings {
    /// Distance between the eyes, in the frame's own pixels, below which landmarks are too
    /// coarse to tell a head's motion from their own noise: no motion evidence either way.
    pub min_interocular_px: f64,
    /// Non-planar motion (in interocular distances) at which a head counts as seen moving.
    pub live_non_planar: f64,
    /// How far below its median the eyes' opening must fall in some frame (as a share of the
    /// median) to count as a blink.
    pub blink: f64,
    /// Motion out of the image plane (in interocular distances) the face must make before its
    /// parallax, or its lack, counts as evidence either way.
    pub min_motion: f64,
    /// Non-planar over total motion below which the face moved as a plane.
    pub flat_ratio: f64,
    /// Mean colour saturation of the face below which it looks printed.
    pub print_saturation: f64,
    /// Share of blown-out pixels on the face above which it looks like a screen's glare.
    pub screen_glare: f64,
    /// Spoof evidence (0-1) at which the check fails with `liveness_failed`.
    pub fail_at: f64,
    /// Spoof evidence below which live evidence may pass the check.
    pub pass_below: f64,
}

impl Default for LivenessSettings {
    fn default() -> Self {
        Self {
            min_interocular_px: 40.0,
            live_non_planar: 0.03,
            blink: 0.5,
            min_motion: 0.05,
            flat_ratio: 0.4,
            print_saturation: 0.15,
            screen_glare: 0.05,
            fail_at: 0.7,
            pass_below: 0.25,
        }
    }
}

impl CheckSettings for LivenessSettings {
    fn check(&self) -> Result<(), String> {
        // A cue adds at most 0.5 to the spoof evidence, and must never fail a check alone.
        if !(self.fail_at > 0.5 && self.fail_at <= 1.0) {
            return Err(format!(
                "fail_at must be above 0.5 and at most 1, not {}",
                self.fail_at
            ));
        }
        if !(0.0..self.fail_at).contains(&self.pass_below) {
            return Err(format!(
                "pass_below must be at least 0 and below fail_at, not {}",
                self.pass_below
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Liveness {
    settings: LivenessSettings,
    limits: ImageLimits,
    engine: Warm<Biometrics>,
}

impl AgentKind for Liveness {
    const KIND: &'static str = "liveness";
    const REASONS: &'static [&'static str] = &[
        "liveness_failed",
        "liveness_inconclusive",
        "no_face_in_selfie",
        "image_too_large",
        "corrupt_image",
    ];
    type Settings = LivenessSettings;

    /// The agent, and the loader of its models (whose files must exist now), with one detector
    /// per CPU slot.
    fn build(
        settings: LivenessSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let (limits, models, slots) = (resources.limits, resources.models, resources.slots);
        crate::models::locate(models, biometrics::LANDMARKS_68)?;
        let dir = models.to_path_buf();
        let (engine, loader) =
            Warm::new(move || Biometrics::load(&dir, biometrics::LANDMARKS_68, false, slots));
        Ok((
            Self {
                settings,
                limits,
                engine,
            },
            Some(loader),
        ))
    }
}

impl Liveness {
    /// The whole check, synchronous: what `run` does on the blocking pool, and what the
    /// evaluation command calls directly.
    pub fn analyse(
        &self,
        frames: &[ImageData],
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let engine = self.engine.get()?;
        let selfie = Selfie::analyse(frames, &self.limits, engine, true, cancel)?;
        let models = json!({ "landmarks": engine.landmarks_model });
        Ok(judge(&selfie, &self.settings, models).with_output(Output::portable(selfie)))
    }
}

/// The evidence, and the verdict it supports.
fn judge(selfie: &Selfie, s: &LivenessSettings, models: serde_json::Value) -> Report {
    let faced: Vec<&Frame> = selfie
        .frames
        .iter()
        .flatten()
        .filter(|frame| frame.landmarks.is_some())
        .collect();
    let frames = selfie.summary();
    if faced.is_empty() {
        let mut reasons = vec!["no_face_in_selfie".to_owned()];
        for code in &selfie.undecodable {
            if !reasons.contains(code) {
                reasons.push(code.clone());
            }
        }
        return Report::failed(Some(0.0), reasons).with_details(json!({
            "frames": frames,
            "thresholds": s,
            "models": models,
        }));
    }

    let moving = motion_evidence(&faced, s);
    let cues = cues::measure(&faced);
    let (print, glare) = cues.as_ref().map_or((0.0, 0.0), |cues| {
        (
            ramp(
                s.print_saturation - cues.saturation,
                s.print_saturation / 3.0,
            ),
            ramp(cues.glare - s.screen_glare, s.screen_glare),
        )
    });
    let cue_spoof = print.max(glare);
    let spoof = (moving.flat + 0.5 * cue_spoof).min(1.0);
    let score = rounded(moving.live * (1.0 - spoof), 3);

    let reason = if spoof >= s.fail_at {
        Some("liveness_failed")
    } else if faced.len() >= 2 && moving.live >= 1.0 && spoof < s.pass_below {
        None
    } else {
        Some("liveness_inconclusive")
    };
    let details = json!({
        "score": score,
        "live_evidence": rounded(moving.live, 3),
        "spoof_evidence": rounded(spoof, 3),
        "signals": {
            "frames_with_face": faced.len(),
            "motion": moving.summary,
            "saturation": cues.as_ref().map(|c| rounded(c.saturation, 3)),
            "glare_fraction": cues.as_ref().map(|c| rounded(c.glare, 3)),
            "print_cue": rounded(print, 3),
            "screen_cue": rounded(glare, 3),
            "face_width_fraction": cues.as_ref().map(|c| rounded(c.face_width_fraction, 3)),
        },
        "frames": frames,
        "thresholds": s,
        "models": models,
    });
    match reason {
        None => Report::passed(Some(score)),
        Some(reason) => Report::failed(Some(score), vec![reason.to_owned()]),
    }
    .with_details(details)
}

/// Motion evidence: `live` (1 = a head seen moving) and `flat` (1 = a plane seen moving).
struct MotionEvidence {
    live: f64,
    flat: f64,
    summary: serde_json::Value,
}

fn motion_evidence(faced: &[&Frame], s: &LivenessSettings) -> MotionEvidence {
    let landmarks: Vec<&[motion::Point]> = faced
        .iter()
        .filter_map(|frame| frame.landmarks.as_deref())
        .collect();
    // In the pixels the landmarks could resolve: the frame's own, or fewer where it was
    // reduced for detection.
    let interocular = median(
        faced
            .iter()
            .zip(&landmarks)
            .map(|(frame, points)| f64::from(motion::interocular(points) / frame.scale.max(1.0)))
            .collect(),
    );
    let none = |why: &str| MotionEvidence {
        live: 0.0,
        flat: 0.0,
        summary: json!({ "resolved": false, "why": why, "interocular_px": rounded(interocular, 3) }),
    };
    if landmarks.len() < 2 {
        return none("one_frame");
    }
    if interocular < s.min_interocular_px {
        return none("face_too_small");
    }
    // One face moving, not faces swapped: each frame's face overlaps the one before.
    let boxes: Vec<FaceBox> = faced
        .iter()
        .map(|frame| frame.faces[0].scaled(1.0 / frame.scale))
        .collect();
    if boxes
        .windows(2)
        .any(|pair| pair[0].overlap(&pair[1]) < MIN_OVERLAP)
    {
        return none("frames_discontinuous");
    }
    // The pair of frames furthest apart in pose: where a head shows the most parallax, and a
    // picture the most foreshortening. (The largest residual over every pair would mostly
    // measure the landmarks' noise.)
    let mut largest: Option<motion::Motion> = None;
    for (i, a) in landmarks.iter().enumerate() {
        for b in &landmarks[i + 1..] {
            if let Some(m) = motion::motion(a, b)
                && largest.is_none_or(|l| m.moved > l.moved)
            {
                largest = Some(m);
            }
        }
    }
    let non_planar = largest.map_or(0.0, |m| m.non_planar);
    let moved = largest.map_or(0.0, |m| m.moved);
    // A blink: the eyes in some frame a fraction of their usual opening.
    let eyes: Vec<f64> = landmarks
        .iter()
        .map(|p| f64::from(motion::eye_openness(p)))
        .collect();
    let closing = 1.0 - eyes.iter().copied().fold(f64::MAX, f64::min) / median(eyes).max(1e-6);
    // Parallax needs a turn to show in: without one, the residual is the landmarks' noise.
    let turned = f64::from(moved) >= s.min_motion;
    let parallax = if turned {
        f64::from(non_planar) / s.live_non_planar
    } else {
        0.0
    };
    let blink = closing / s.blink;
    let flat = if turned {
        ramp(s.flat_ratio - f64::from(non_planar / moved), s.flat_ratio)
    } else {
        0.0
    };
    MotionEvidence {
        live: parallax.max(blink).min(1.0),
        flat,
        summary: json!({
            "resolved": true,
            "interocular_px": rounded(interocular, 3),
            "non_planar": rounded(f64::from(non_planar), 3),
            "moved": rounded(f64::from(moved), 3),
            "eye_closing": rounded(closing, 3),
            "parallax": rounded(parallax, 3),
            "blink": rounded(blink, 3),
            "flat": rounded(flat, 3),
        }),
    }
}

/// `x / width`, clamped to 0-1: how far past its threshold a measure is.
fn ramp(x: impl Into<f64>, width: impl Into<f64>) -> f64 {
    (x.into() / width.into()).clamp(0.0, 1.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl CpuAgent for Liveness {
    /// The selfie frames.
    type Input = Vec<ImageData>;

    fn models(&self) -> Option<&dyn Loading> {
        Some(&self.engine)
    }

    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError> {
        Ok(ctx.input().selfie.frames().to_vec())
    }

    fn compute(
        &self,
        frames: Self::Input,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        self.analyse(&frames, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_let_a_cue_fail_a_check_are_refused() {
        assert!(LivenessSettings::default().check().is_ok());
        let cue_alone_fails = LivenessSettings {
            fail_at: 0.5,
            ..LivenessSettings::default()
        };
        assert!(cue_alone_fails.check().unwrap_err().contains("fail_at"));
        let pass_above_fail = LivenessSettings {
            pass_below: 0.8,
            ..LivenessSettings::default()
        };
        assert!(pass_above_fail.check().unwrap_err().contains("pass_below"));
    }
}
