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
//! What it cannot catch, and says so in README: a video replayed on a screen shows a live head's
//! motion, and a colour print held still shows no motion at all; both get `review` at best,
//! never a pass only where a cue sees them. One frame alone is never a pass.

pub mod cues;
pub mod motion;

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::selfie::{Frame, Selfie};
use super::warm::{Loader, Warm};
use super::{Agent, AgentContext, AgentError, Output, Report};
use crate::domain::{ImageData, ImageLimits};
use crate::models::ModelError;
use crate::vision::biometrics::{self, Biometrics};

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
    /// Motion (in interocular distances) the face must make before moving "as one plane" is
    /// evidence of a flat picture.
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
            live_non_planar: 0.04,
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

#[derive(Clone)]
pub struct Liveness {
    name: String,
    settings: LivenessSettings,
    limits: ImageLimits,
    engine: Warm<Biometrics>,
}

impl Liveness {
    /// The agent, and the loader of its models (whose files must exist now), with one detector
    /// per CPU slot.
    pub fn new(
        name: &str,
        settings: LivenessSettings,
        limits: ImageLimits,
        models: &Path,
        slots: usize,
    ) -> Result<(Self, Loader), ModelError> {
        crate::models::locate(models, biometrics::LANDMARKS_68)?;
        let dir = models.to_path_buf();
        let (engine, loader) =
            Warm::new(move || Biometrics::load(&dir, biometrics::LANDMARKS_68, false, slots));
        Ok((
            Self {
                name: name.to_owned(),
                settings,
                limits,
                engine,
            },
            loader,
        ))
    }

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
        Ok(judge(&selfie, &self.settings, models).with_output(Output::new(selfie)))
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
        reasons.extend(selfie.undecodable.iter().cloned());
        reasons.dedup();
        return Report::failed(Some(0.0), reasons).with_details(json!({
            "frames": frames,
            "thresholds": s,
            "models": models,
        }));
    }

    let moving = motion_evidence(&faced, s);
    let cues = cues::measure(&faced);
    let print = ramp(
        s.print_saturation - cues.saturation,
        s.print_saturation / 3.0,
    );
    let glare = ramp(cues.glare - s.screen_glare, s.screen_glare);
    let cue_spoof = print.max(glare);
    let spoof = (moving.flat + 0.5 * cue_spoof).min(1.0);
    let score = round3(moving.live * (1.0 - spoof));

    let reason = if spoof >= s.fail_at {
        Some("liveness_failed")
    } else if faced.len() >= 2 && moving.live >= 1.0 && spoof < s.pass_below {
        None
    } else {
        Some("liveness_inconclusive")
    };
    let details = json!({
        "score": score,
        "live_evidence": round3(moving.live),
        "spoof_evidence": round3(spoof),
        "signals": {
            "frames_with_face": faced.len(),
            "motion": moving.summary,
            "saturation": round3(cues.saturation),
            "glare_fraction": round3(cues.glare),
            "print_cue": round3(print),
            "screen_cue": round3(glare),
            "face_width_fraction": round3(cues.face_width_fraction),
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
    let interocular = median(
        faced
            .iter()
            .zip(&landmarks)
            .map(|(frame, points)| f64::from(motion::interocular(points) / frame.scale))
            .collect(),
    );
    let none = |why: &str| MotionEvidence {
        live: 0.0,
        flat: 0.0,
        summary: json!({ "resolved": false, "why": why, "interocular_px": round3(interocular) }),
    };
    if landmarks.len() < 2 {
        return none("one_frame");
    }
    if interocular < s.min_interocular_px {
        return none("face_too_small");
    }
    // Every pair of frames: the most non-planar motion, and the pair that moved most.
    let mut non_planar = 0.0f32;
    let mut largest: Option<motion::Motion> = None;
    for (i, a) in landmarks.iter().enumerate() {
        for b in &landmarks[i + 1..] {
            let Some(m) = motion::motion(a, b) else {
                continue;
            };
            non_planar = non_planar.max(m.non_planar);
            if largest.is_none_or(|l| m.moved > l.moved) {
                largest = Some(m);
            }
        }
    }
    // A blink: the eyes in some frame a fraction of their usual opening.
    let eyes: Vec<f64> = landmarks
        .iter()
        .map(|p| f64::from(motion::eye_openness(p)))
        .collect();
    let closing = 1.0 - eyes.iter().copied().fold(f64::MAX, f64::min) / median(eyes).max(1e-6);
    let parallax = f64::from(non_planar) / s.live_non_planar;
    let blink = closing / s.blink;
    let (moved, flat) = match largest {
        Some(m) if f64::from(m.moved) >= s.min_motion => (
            m.moved,
            ramp(
                s.flat_ratio - f64::from(m.non_planar / m.moved),
                s.flat_ratio,
            ),
        ),
        Some(m) => (m.moved, 0.0),
        None => (0.0, 0.0),
    };
    MotionEvidence {
        live: parallax.max(blink).min(1.0),
        flat,
        summary: json!({
            "resolved": true,
            "interocular_px": round3(interocular),
            "non_planar": round3(f64::from(non_planar)),
            "moved": round3(f64::from(moved)),
            "eye_closing": round3(closing),
            "parallax": round3(parallax),
            "blink": round3(blink),
            "flat": round3(flat),
        }),
    }
}

/// `x / width`, clamped to 0-1: how far past its threshold a measure is.
fn ramp(x: impl Into<f64>, width: impl Into<f64>) -> f64 {
    (x.into() / width.into()).clamp(0.0, 1.0)
}

fn round3(value: impl Into<f64>) -> f64 {
    (value.into() * 1000.0).round() / 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[async_trait]
impl Agent for Liveness {
    fn name(&self) -> &str {
        &self.name
    }

    fn cpu_bound(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        self.engine.ready()
    }

    fn failed(&self) -> bool {
        self.engine.failed()
    }

    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError> {
        let frames = ctx.input().selfie.frames().to_vec();
        let this = self.clone();
        ctx.blocking(move |cancel| this.analyse(&frames, cancel))
            .await?
    }
}
