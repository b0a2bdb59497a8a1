//! Following a challenge: do the frames' head poses make the challenge's steps, in order and
//! nothing else, with a real head and one person throughout?
//!
//! Each frame's pose comes from its landmarks ([`crate::vision::pose`]); the client's word on
//! poses or steps is never asked. Poses are read against the first frame's (the person looks at
//! the camera when the capture starts), which also cancels what a generic face model gets wrong
//! about one person's face. A frame is then a turn or a nod once its angle passes a threshold,
//! and back at the start once it is near the first pose again for two frames running (one frame
//! can be a misread landmark); a step is counted when the head turns away, so two steps the same
//! way need a return in between. Nods are judged only when the challenge asks for one: pitch
//! read from landmarks is far less sure than yaw (a turned head reads as nodding up to 10
//! degrees, a strong expression up to 30 on the real clips), and counting those as steps the
//! challenge lacks failed live people. So with nods in the vocabulary, a recording that adds a
//! nod to a turn challenge's turns is not told apart by the nod.

use serde::Serialize;
use serde_json::json;

use super::LivenessSettings;
use super::motion::{self, Point};
use crate::agents::rounded;
use crate::agents::selfie::Frame;
use crate::domain::ChallengeStep;
use crate::vision::pose::{self, Pose};

/// What a frame's pose shows, against the first frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Near the first frame's pose.
    Start,
    Step(ChallengeStep),
    /// Between the two: neither counts.
    Between,
    /// No pose: no landmarks, or landmarks the rigid face does not fit.
    Unknown,
}

/// One analysed frame with a face: its index among the frames sent, its landmarks (in the
/// detection image's pixels) and its pose.
pub struct Posed<'a> {
    pub index: usize,
    pub frame: &'a Frame,
    pub landmarks: &'a [Point],
    pub pose: Option<Pose>,
}

impl<'a> Posed<'a> {
    /// The frame's pose, unless its face is too blurred or the rigid face does not fit its
    /// landmarks; `None` without landmarks.
    pub fn new(index: usize, frame: &'a Frame, s: &LivenessSettings) -> Option<Self> {
        let landmarks = frame.landmarks.as_deref()?;
        let pose = pose::estimate(landmarks).filter(|p| {
            p.residual <= s.max_pose_misfit_mm && frame.sharpness >= s.min_face_sharpness
        });
        Some(Self {
            index,
            frame,
            landmarks,
            pose,
        })
    }
}

/// A step the head made: where it went furthest.
#[derive(Debug, Clone, Serialize)]
pub struct Made {
    pub step: ChallengeStep,
    /// The frame (index among those sent) of the step's largest angle.
    pub frame: usize,
    /// That angle against the first frame's, in degrees (yaw for a turn, pitch for a nod).
    pub degrees: f64,
    /// Non-planar motion between the first frame and that one, over `live_non_planar`: at least
    /// 1 for a head, below for a flat picture.
    pub parallax: f64,
    /// How much of that motion a flat picture could make (1: all of it).
    pub flat: f64,
}

/// What the frames did.
pub struct Following {
    /// The steps made, in order.
    pub made: Vec<Made>,
    /// Per frame with a face: index, pose and label.
    pub frames: serde_json::Value,
    /// Frames whose pose could be told.
    pub posed: usize,
}

impl Following {
    pub fn steps(&self) -> Vec<ChallengeStep> {
        self.made.iter().map(|m| m.step).collect()
    }

    /// Whether the steps made are exactly the challenge's.
    pub fn follows(&self, steps: &[ChallengeStep]) -> bool {
        self.steps() == steps
    }

    /// The smallest parallax and the largest flatness over the steps made.
    pub fn weakest(&self) -> (f64, f64) {
        let parallax = self
            .made
            .iter()
            .map(|m| m.parallax)
            .fold(f64::INFINITY, f64::min);
        let flat = self.made.iter().map(|m| m.flat).fold(0.0, f64::max);
        (if parallax.is_finite() { parallax } else { 0.0 }, flat)
    }

    pub fn details(&self, steps: &[ChallengeStep]) -> serde_json::Value {
        json!({
            "steps": steps,
            "made": self.made.iter().map(|m| json!({
                "step": m.step,
                "frame": m.frame,
                "degrees": rounded(m.degrees, 1),
                "parallax": rounded(m.parallax, 3),
                "flat": rounded(m.flat, 3),
            })).collect::<Vec<_>>(),
            "followed": self.follows(steps),
            "frames": self.frames,
        })
    }
}

/// The steps the frames make; `pitch`: the challenge asks for a nod.
/// `frames` are the frames with a face, in the order sent.
pub fn follow(frames: &[Posed<'_>], pitch: bool, s: &LivenessSettings) -> Following {
    let start = frames.iter().find(|f| f.pose.is_some());
    let mut made: Vec<Made> = Vec::new();
    let mut summary = Vec::with_capacity(frames.len());
    // Whether the head is back at the start since the last step (two frames running): a step
    // the same way again counts only after a return.
    let mut returned = true;
    let mut at_start = 0;
    for frame in frames {
        let (label, angle) = match (start.and_then(|s| s.pose), frame.pose) {
            (Some(first), Some(pose)) => label(first, pose, pitch, s),
            _ => (Label::Unknown, 0.0),
        };
        summary.push(json!({
            "index": frame.index,
            "yaw": frame.pose.map(|p| rounded(p.yaw, 1)),
            "pitch": frame.pose.map(|p| rounded(p.pitch, 1)),
            "roll": frame.pose.map(|p| rounded(p.roll, 1)),
            "fit_mm": frame.pose.map(|p| rounded(p.residual, 2)),
            "label": label,
        }));
        at_start = if label == Label::Start {
            at_start + 1
        } else {
            0
        };
        match label {
            Label::Start => returned |= at_start >= 2,
            Label::Step(step) => {
                let same = made.last().is_some_and(|m| m.step == step);
                if same && !returned {
                    let last = made.last_mut().expect("a step was made");
                    if angle.abs() > last.degrees.abs() {
                        last.frame = frame.index;
                        last.degrees = angle;
                        (last.parallax, last.flat) = parallax(start, frame, s);
                    }
                } else {
                    let (parallax, flat) = parallax(start, frame, s);
                    made.push(Made {
                        step,
                        frame: frame.index,
                        degrees: angle,
                        parallax,
                        flat,
                    });
                }
                returned = false;
            }
            Label::Between | Label::Unknown => {}
        }
    }
    Following {
        made,
        frames: serde_json::Value::Array(summary),
        posed: frames.iter().filter(|f| f.pose.is_some()).count(),
    }
}

/// A pose's label against the first one, and its angle along the step's axis. `pitch`: the
/// challenge asks for a nod.
fn label(first: Pose, pose: Pose, pitch: bool, s: &LivenessSettings) -> (Label, f64) {
    let yaw = pose.yaw - first.yaw;
    let nod = if pitch { pose.pitch - first.pitch } else { 0.0 };
    // Each axis in units of its own threshold: the larger one says which way the head went.
    let (along_yaw, along_pitch) = (yaw.abs() / s.turn_deg, nod.abs() / s.nod_deg);
    if along_yaw >= 1.0 && along_yaw >= along_pitch {
        let step = if yaw > 0.0 {
            ChallengeStep::TurnLeft
        } else {
            ChallengeStep::TurnRight
        };
        (Label::Step(step), yaw)
    } else if along_pitch >= 1.0 {
        let step = if nod > 0.0 {
            ChallengeStep::LookUp
        } else {
            ChallengeStep::LookDown
        };
        (Label::Step(step), nod)
    } else if yaw.abs() <= s.start_deg && nod.abs() <= s.start_deg {
        (Label::Start, 0.0)
    } else {
        (Label::Between, 0.0)
    }
}

/// The parallax (over `live_non_planar`) and flatness of the motion from the first frame with a
/// pose to `to`.
fn parallax(start: Option<&Posed<'_>>, to: &Posed<'_>, s: &LivenessSettings) -> (f64, f64) {
    let Some(m) = start.and_then(|start| motion::motion(start.landmarks, to.landmarks)) else {
        return (0.0, 1.0);
    };
    let non_planar = f64::from(m.non_planar);
    let moved = f64::from(m.moved).max(1e-9);
    let flat = ((s.flat_ratio - non_planar / moved) / s.flat_ratio).clamp(0.0, 1.0);
    (non_planar / s.live_non_planar, flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose(yaw: f64, pitch: f64) -> Pose {
        Pose {
            yaw,
            pitch,
            roll: 0.0,
            residual: 1.0,
        }
    }

    fn labels(yaws: &[(f64, f64)], pitch: bool) -> Vec<Label> {
        let s = LivenessSettings::default();
        let first = pose(yaws[0].0, yaws[0].1);
        yaws.iter()
            .map(|&(y, p)| label(first, pose(y, p), pitch, &s).0)
            .collect()
    }

    #[test]
    fn turns_and_nods_are_read_against_the_first_pose() {
        use ChallengeStep::*;
        // Someone whose "frontal" reads 5 degrees to the side.
        let got = labels(
            &[
                (5.0, 0.0),
                (25.0, 0.0),
                (-15.0, 0.0),
                (8.0, 2.0),
                (12.0, 0.0),
            ],
            false,
        );
        assert_eq!(
            got,
            vec![
                Label::Start,
                Label::Step(TurnLeft),
                Label::Step(TurnRight),
                Label::Start,
                Label::Between
            ]
        );
        // Nods count only when the challenge asks for one.
        assert_eq!(labels(&[(0.0, 0.0), (2.0, 25.0)], false)[1], Label::Start);
        assert_eq!(
            labels(&[(0.0, 0.0), (2.0, 15.0)], true)[1],
            Label::Step(LookUp)
        );
        assert_eq!(
            labels(&[(0.0, 0.0), (2.0, -20.0)], true)[1],
            Label::Step(LookDown)
        );
        // The larger movement, in units of its threshold, names the step.
        assert_eq!(
            labels(&[(0.0, 0.0), (14.0, 20.0)], true)[1],
            Label::Step(LookUp)
        );
    }
}
