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
//! With a challenge (a random sequence of head movements the server issued, see
//! [`challenge`]) the motion must also make the challenge's steps, in order and nothing else,
//! each a real turn of a head, with one person throughout: a video recorded before the challenge
//! was drawn cannot know them. Without one, what it cannot catch (README lists it): a video of
//! the person replayed on a screen shows a live head's motion and can pass; a colour print held
//! still shows no motion at all and goes to review. With `require_challenge`, a selfie without
//! a challenge never passes. One frame alone is never a pass.

pub mod challenge;
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
use crate::domain::{ChallengeStep, ImageData, ImageLimits, SelfieChallenge};
use crate::models::ModelError;
use crate::vision::biometrics::{self, Biometrics, FaceBox, Prepared};

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
    /// Without a challenge the check never passes (at best `challenge_required`, a review):
    /// a replayed video of the person passes the passive check.
    pub require_challenge: bool,
    /// Degrees of yaw, away from the first frame's, at which a head has turned.
    pub turn_deg: f64,
    /// Degrees of pitch, away from the first frame's, at which a head has nodded.
    pub nod_deg: f64,
    /// Degrees within which a head is back at its first pose, between two steps.
    pub start_deg: f64,
    /// Root-mean-square misfit (millimetres of the model face) above which a frame's landmarks
    /// give no pose.
    pub max_pose_misfit_mm: f64,
    /// Sharpness of the face (variance of the Laplacian at 150 px) below which a challenge
    /// frame's landmarks are too unsure to give a pose.
    pub min_face_sharpness: f64,
    /// Embedding distance between a step's frame and the first above which the face is
    /// somebody else's (dlib's own threshold is 0.6).
    pub same_person: f64,
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
            require_challenge: false,
            turn_deg: 10.0,
            nod_deg: 10.0,
            start_deg: 6.0,
            max_pose_misfit_mm: 8.0,
            min_face_sharpness: 5.0,
            same_person: 0.6,
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
        if !(self.turn_deg > self.start_deg
            && self.nod_deg > self.start_deg
            && self.start_deg > 0.0)
        {
            return Err(format!(
                "turn_deg ({}) and nod_deg ({}) must be above start_deg ({}), which must be \
                 above 0",
                self.turn_deg, self.nod_deg, self.start_deg
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
        "challenge_not_followed",
        "challenge_required",
        "no_face_in_selfie",
        "image_too_large",
        "corrupt_image",
    ];
    type Settings = LivenessSettings;

    /// The agent, and the loader of its models (whose files must exist now), with one detector
    /// and embedding network per CPU slot (the network tells whether a challenge's frames show
    /// one person).
    fn build(
        settings: LivenessSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let (limits, models, slots) = (resources.limits, resources.models, resources.slots);
        crate::models::locate(models, biometrics::LANDMARKS_68)?;
        crate::models::locate(models, biometrics::EMBEDDING_MODEL)?;
        let dir = models.to_path_buf();
        let (engine, loader) =
            Warm::new(move || Biometrics::load(&dir, biometrics::LANDMARKS_68, true, slots));
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
    /// evaluation command calls directly. With `challenge`, the frames answer its steps.
    pub fn analyse(
        &self,
        frames: &[ImageData],
        challenge: Option<&[ChallengeStep]>,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let selfie = self.frames(frames, cancel)?;
        let report = self.judge(&selfie, challenge)?;
        Ok(report.with_output(Output::portable(selfie)))
    }

    /// The frames decoded, with their faces and landmarks: the costly half of the check.
    pub fn frames(
        &self,
        frames: &[ImageData],
        cancel: &CancellationToken,
    ) -> Result<Selfie, AgentError> {
        Selfie::analyse(frames, &self.limits, self.engine.get()?, true, cancel)
    }

    /// The verdict on analysed frames, answering `challenge` when there is one: the evaluation
    /// command judges one analysis against several challenges.
    pub fn judge(
        &self,
        selfie: &Selfie,
        challenge: Option<&[ChallengeStep]>,
    ) -> Result<Report, AgentError> {
        let engine = self.engine.get()?;
        let models = json!({
            "landmarks": engine.landmarks_model,
            "embedding": engine.embedding_model,
        });
        Ok(judge(selfie, &self.settings, models, challenge, engine))
    }
}

/// The evidence, and the verdict it supports.
fn judge(
    selfie: &Selfie,
    s: &LivenessSettings,
    models: serde_json::Value,
    challenge: Option<&[ChallengeStep]>,
    engine: &Biometrics,
) -> Report {
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

    let (reason, score, answered) = match challenge {
        Some(steps) => {
            let answer = answer(selfie, steps, s, engine, &moving, cue_spoof);
            let details = answer.details;
            (answer.reason, answer.score, Some(details))
        }
        None => {
            let reason = if spoof >= s.fail_at {
                Some("liveness_failed")
            } else if faced.len() >= 2 && moving.live >= 1.0 && spoof < s.pass_below {
                s.require_challenge.then_some("challenge_required")
            } else {
                Some("liveness_inconclusive")
            };
            (reason, score, None)
        }
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
        "challenge": answered,
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

/// A challenge's answer: the verdict's reason (none for a pass), score and details.
struct Answer {
    reason: Option<&'static str>,
    score: f64,
    details: serde_json::Value,
}

/// Whether the selfie answers `steps`: the poses make them, each a real turn of a head, one
/// person throughout, and neither the motion nor a cue looks like a picture.
fn answer(
    selfie: &Selfie,
    steps: &[ChallengeStep],
    s: &LivenessSettings,
    engine: &Biometrics,
    moving: &MotionEvidence,
    cue_spoof: f64,
) -> Answer {
    let posed: Vec<challenge::Posed<'_>> = selfie
        .frames
        .iter()
        .enumerate()
        .filter_map(|(i, frame)| challenge::Posed::new(i, frame.as_ref()?, s))
        .collect();
    // Most frames too blurred for their landmarks: nothing to judge the poses by.
    let blurred = posed
        .iter()
        .filter(|p| p.frame.sharpness < s.min_face_sharpness)
        .count();
    let pitch = steps.iter().any(|step| step.is_pitch());
    let following = challenge::follow(&posed, pitch, s);
    let mut details = following.details(steps);
    details["blurred_frames"] = json!(blurred);
    let resolved = moving.summary["resolved"] == true;
    // Each step's frame against the first: one person throughout.
    let identity = if following.follows(steps) && resolved {
        identity(&posed, &following, engine)
    } else {
        None
    };
    details["identity_distance"] = json!(identity.map(|d| rounded(d, 3)));
    let (parallax, flat) = following.weakest();
    let spoof = (flat + 0.5 * cue_spoof).min(1.0);
    let reason =
        if steps.is_empty() || !resolved || following.posed < 2 || 2 * blurred > posed.len() {
            // Too small, one frame, or faces swapped between frames: no pose sequence to judge.
            Some("liveness_inconclusive")
        } else if !following.follows(steps) {
            Some("challenge_not_followed")
        } else if identity.is_some_and(|d| d > s.same_person) || spoof >= s.fail_at {
            Some("liveness_failed")
        } else if identity.is_none() || parallax < 1.0 || spoof >= s.pass_below {
            Some("liveness_inconclusive")
        } else {
            None
        };
    Answer {
        reason,
        score: rounded(parallax.min(1.0) * (1.0 - spoof), 3),
        details,
    }
}

/// The largest embedding distance between the first frame with a pose and each step's frame;
/// `None` where a face could not be embedded.
fn identity(
    posed: &[challenge::Posed<'_>],
    following: &challenge::Following,
    engine: &Biometrics,
) -> Option<f64> {
    let embed = |frame: &challenge::Posed<'_>| {
        let face = *frame.frame.faces.first()?;
        engine.embed(&Prepared::new(&frame.frame.image), face)
    };
    let first = embed(posed.iter().find(|p| p.pose.is_some())?)?;
    let mut largest = 0.0f64;
    for made in &following.made {
        let frame = posed.iter().find(|p| p.index == made.frame)?;
        largest = largest.max(f64::from(first.distance(&embed(frame)?)));
    }
    Some(largest)
}

impl CpuAgent for Liveness {
    /// The selfie frames, and the challenge they answer.
    type Input = (Vec<ImageData>, Option<SelfieChallenge>);

    fn models(&self) -> Option<&dyn Loading> {
        Some(&self.engine)
    }

    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError> {
        let selfie = &ctx.input().selfie;
        Ok((selfie.frames().to_vec(), selfie.challenge.clone()))
    }

    fn compute(
        &self,
        (frames, challenge): Self::Input,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let steps = challenge.as_ref().map(|c| c.steps.as_slice());
        self.analyse(&frames, steps, cancel)
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
