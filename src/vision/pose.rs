//! A head's pose (yaw, pitch, roll) from its 68 landmarks, by fitting a rigid 3-D face to them.
//!
//! The camera is taken as scaled orthographic (weak perspective): at arm's length a face's depth
//! is a small part of its distance from the lens, and the model then needs no focal length,
//! which a client never reports truthfully anyway. The fit is a few Levenberg-Marquardt steps on
//! six numbers (three angles, scale, shift) over about thirty points, on `nalgebra`, which the
//! crate already uses: a PnP crate would bring a camera model this problem does not have.
//!
//! Only the points that stay put on a face are fitted: the nose, the eyes' corners and lids and
//! the mouth's outline. The jaw's points are left out: dlib places them on the face's silhouette,
//! which slides over the cheek as the head turns instead of staying on one spot of it. Brows
//! move with expressions and are left out as well.
//!
//! Angles are in degrees, named from the person's point of view in the image as the camera takes
//! it (not a mirrored preview): positive yaw is the nose toward the image's right edge (the person
//! turned to their own left), positive pitch the nose up (looking up), positive roll the head
//! tilted clockwise in the image.

use nalgebra::{Matrix3, SMatrix, SVector, Vector3};

/// A landmark in the image's pixels (x right, y down).
pub type Point = (f32, f32);

/// The rigid points of a generic adult face, in millimetres, by their iBUG 300-W index: x to the
/// image's right when the face looks at the camera, y up, z toward the camera, the nose tip at
/// the origin. Proportions from common anthropometric figures: about 62 mm between the eyes'
/// centres, 32 mm between their inner corners, a 34 mm wide nose standing 32 mm in front of the
/// inner eye corners, a 50 mm wide mouth.
const MODEL: [(usize, [f64; 3]); 33] = [
    // The nose: its bridge from the nasion to the tip, then the base from one wing to the other.
    (27, [0.0, 40.0, -20.0]),
    (28, [0.0, 27.0, -13.0]),
    (29, [0.0, 13.0, -6.0]),
    (30, [0.0, 0.0, 0.0]),
    (31, [-15.0, -8.0, -24.0]),
    (32, [-8.0, -11.0, -17.0]),
    (33, [0.0, -13.0, -15.0]),
    (34, [8.0, -11.0, -17.0]),
    (35, [15.0, -8.0, -24.0]),
    // The eye on the image's left: outer corner, upper lid, inner corner, lower lid.
    (36, [-45.0, 35.0, -50.0]),
    (37, [-36.0, 39.0, -40.0]),
    (38, [-25.0, 39.0, -36.0]),
    (39, [-16.0, 35.0, -34.0]),
    (40, [-25.0, 31.0, -36.0]),
    (41, [-36.0, 31.0, -40.0]),
    // The eye on the image's right: inner corner, upper lid, outer corner, lower lid.
    (42, [16.0, 35.0, -34.0]),
    (43, [25.0, 39.0, -36.0]),
    (44, [36.0, 39.0, -40.0]),
    (45, [45.0, 35.0, -50.0]),
    (46, [36.0, 31.0, -40.0]),
    (47, [25.0, 31.0, -36.0]),
    // The mouth's outer edge, from the corner on the image's left, over the upper lip and back.
    (48, [-25.0, -35.0, -38.0]),
    (49, [-15.0, -30.0, -26.0]),
    (50, [-6.0, -28.0, -20.0]),
    (51, [0.0, -29.0, -19.0]),
    (52, [6.0, -28.0, -20.0]),
    (53, [15.0, -30.0, -26.0]),
    (54, [25.0, -35.0, -38.0]),
    (55, [15.0, -41.0, -28.0]),
    (56, [6.0, -43.0, -23.0]),
    (57, [0.0, -43.0, -22.0]),
    (58, [-6.0, -43.0, -23.0]),
    (59, [-15.0, -41.0, -28.0]),
];

/// The mouth's points count half: a smile moves them against the rest of the face.
const MOUTH_WEIGHT: f64 = 0.5;
const ITERATIONS: usize = 30;

/// A head's orientation, and how well the rigid face fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// Degrees; positive: the nose toward the image's right edge (the person's own left).
    pub yaw: f64,
    /// Degrees; positive: the nose up.
    pub pitch: f64,
    /// Degrees; positive: tilted clockwise in the image.
    pub roll: f64,
    /// Root-mean-square distance between the landmarks and the fitted face, in millimetres of
    /// the model face: a few for a face the landmarks follow, much more when they do not.
    pub residual: f64,
}

/// The rotation of the model for these angles (degrees): yaw about the vertical axis, then
/// pitch about the horizontal one, then roll in the image plane.
pub fn rotation(yaw: f64, pitch: f64, roll: f64) -> Matrix3<f64> {
    let (sy, cy) = yaw.to_radians().sin_cos();
    let (sp, cp) = pitch.to_radians().sin_cos();
    let (sr, cr) = roll.to_radians().sin_cos();
    let ry = Matrix3::new(cy, 0.0, sy, 0.0, 1.0, 0.0, -sy, 0.0, cy);
    let rx = Matrix3::new(1.0, 0.0, 0.0, 0.0, cp, sp, 0.0, -sp, cp);
    // Clockwise in an image whose y axis points down is clockwise on screen.
    let rz = Matrix3::new(cr, sr, 0.0, -sr, cr, 0.0, 0.0, 0.0, 1.0);
    rz * rx * ry
}

/// Where the model's point `index` lands in an image, for a pose, scale (pixels per millimetre)
/// and shift (the nose tip's pixel).
pub fn project(
    point: [f64; 3],
    (yaw, pitch, roll): (f64, f64, f64),
    scale: f64,
    shift: (f64, f64),
) -> (f64, f64) {
    let p = rotation(yaw, pitch, roll) * Vector3::from(point);
    (shift.0 + scale * p.x, shift.1 - scale * p.y)
}

/// The model's points, by iBUG index, for drawing test faces.
pub fn model_points() -> impl Iterator<Item = (usize, [f64; 3])> {
    MODEL.iter().copied()
}

/// The pose of the face whose 68 landmarks these are; `None` for another number of points or
/// a degenerate set (all in one place).
pub fn estimate(landmarks: &[Point]) -> Option<Pose> {
    if landmarks.len() != 68 {
        return None;
    }
    let target: Vec<(f64, f64)> = MODEL
        .iter()
        .map(|&(i, _)| (f64::from(landmarks[i].0), f64::from(landmarks[i].1)))
        .collect();
    let weights: Vec<f64> = MODEL
        .iter()
        .map(|&(i, _)| if i >= 48 { MOUTH_WEIGHT } else { 1.0 })
        .collect();
    // The start: no turn, the roll of the line between the eyes, the scale of their distance.
    let eye = |range: std::ops::Range<usize>| {
        let n = range.len() as f64;
        range.fold((0.0, 0.0), |(x, y), i| {
            (
                x + f64::from(landmarks[i].0) / n,
                y + f64::from(landmarks[i].1) / n,
            )
        })
    };
    let (left, right) = (eye(36..42), eye(42..48));
    let eyes = (right.0 - left.0).hypot(right.1 - left.1);
    if eyes.is_nan() || eyes <= 1e-3 {
        return None;
    }
    let roll = (right.1 - left.1).atan2(right.0 - left.0).to_degrees();
    let nose = target[3];
    let mut params = SVector::<f64, 6>::new(0.0, 0.0, roll, eyes / 61.0, nose.0, nose.1);
    let mut lambda = 1e-3;
    let mut cost = weighted_cost(&params, &target, &weights);
    for _ in 0..ITERATIONS {
        let (jtj, jtr) = normal_equations(&params, &target, &weights);
        let mut improved = false;
        for _ in 0..8 {
            let mut damped = jtj;
            for k in 0..6 {
                damped[(k, k)] += lambda * jtj[(k, k)].max(1e-9);
            }
            let Some(step) = damped.lu().solve(&jtr) else {
                lambda *= 10.0;
                continue;
            };
            let next = params - step;
            let next_cost = weighted_cost(&next, &target, &weights);
            if next_cost.is_finite() && next_cost < cost {
                let converged = cost - next_cost < 1e-10 * cost.max(1e-12);
                params = next;
                cost = next_cost;
                lambda = (lambda / 10.0).max(1e-9);
                improved = !converged;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    let weight: f64 = weights.iter().sum();
    let scale = params[3].abs().max(1e-9);
    let pose = Pose {
        yaw: wrap(params[0]),
        pitch: wrap(params[1]),
        roll: wrap(params[2]),
        residual: (cost / weight).sqrt() / scale,
    };
    [pose.yaw, pose.pitch, pose.roll, pose.residual]
        .iter()
        .all(|v| v.is_finite())
        .then_some(pose)
}

/// An angle in degrees, in (-180, 180].
fn wrap(degrees: f64) -> f64 {
    let mut d = degrees % 360.0;
    if d > 180.0 {
        d -= 360.0;
    } else if d <= -180.0 {
        d += 360.0;
    }
    d
}

fn residuals(params: &SVector<f64, 6>, target: &[(f64, f64)]) -> Vec<f64> {
    let angles = (params[0], params[1], params[2]);
    let r = rotation(angles.0, angles.1, angles.2);
    MODEL
        .iter()
        .zip(target)
        .flat_map(|(&(_, point), &(u, v))| {
            let p = r * Vector3::from(point);
            [
                params[4] + params[3] * p.x - u,
                params[5] - params[3] * p.y - v,
            ]
        })
        .collect()
}

fn weighted_cost(params: &SVector<f64, 6>, target: &[(f64, f64)], weights: &[f64]) -> f64 {
    residuals(params, target)
        .chunks(2)
        .zip(weights)
        .map(|(r, w)| w * (r[0] * r[0] + r[1] * r[1]))
        .sum()
}

/// JᵀWJ and JᵀWr, with the Jacobian by central differences: six parameters over thirty-odd
/// points is cheap, and the rotation's derivatives by hand would be a place for sign errors.
fn normal_equations(
    params: &SVector<f64, 6>,
    target: &[(f64, f64)],
    weights: &[f64],
) -> (SMatrix<f64, 6, 6>, SVector<f64, 6>) {
    let base = residuals(params, target);
    let mut jacobian = vec![[0.0; 6]; base.len()];
    for k in 0..6 {
        let h = if k < 3 {
            1e-4
        } else {
            1e-6 * params[k].abs().max(1e-3)
        };
        let mut up = *params;
        up[k] += h;
        let mut down = *params;
        down[k] -= h;
        let (ru, rd) = (residuals(&up, target), residuals(&down, target));
        for (row, (a, b)) in jacobian.iter_mut().zip(ru.iter().zip(&rd)) {
            row[k] = (a - b) / (2.0 * h);
        }
    }
    let mut jtj = SMatrix::<f64, 6, 6>::zeros();
    let mut jtr = SVector::<f64, 6>::zeros();
    for (i, (row, r)) in jacobian.iter().zip(&base).enumerate() {
        let w = weights[i / 2];
        for a in 0..6 {
            jtr[a] += w * row[a] * r;
            for b in 0..6 {
                jtj[(a, b)] += w * row[a] * row[b];
            }
        }
    }
    (jtj, jtr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's landmarks seen at a pose, with the points it does not fit (jaw, brows, inner
    /// lips) far away, to show they are ignored.
    fn landmarks_at(yaw: f64, pitch: f64, roll: f64, jitter: f64) -> Vec<Point> {
        let mut points = vec![(-1000.0f32, -1000.0f32); 68];
        for (n, (index, point)) in model_points().enumerate() {
            let (x, y) = project(point, (yaw, pitch, roll), 2.5, (320.0, 240.0));
            // A deterministic jitter of up to `jitter` pixels.
            let wobble = ((n * 7919) % 13) as f64 / 6.0 - 1.0;
            points[index] = ((x + jitter * wobble) as f32, (y - jitter * wobble) as f32);
        }
        points
    }

    #[test]
    fn the_model_seen_at_a_pose_gives_that_pose_back() {
        for (yaw, pitch, roll) in [
            (0.0, 0.0, 0.0),
            (25.0, 0.0, 0.0),
            (-25.0, 5.0, -8.0),
            (15.0, -15.0, 10.0),
            (-40.0, 10.0, 3.0),
        ] {
            let pose = estimate(&landmarks_at(yaw, pitch, roll, 0.0)).unwrap();
            assert!((pose.yaw - yaw).abs() < 0.01, "{pose:?} for {yaw}");
            assert!((pose.pitch - pitch).abs() < 0.01, "{pose:?} for {pitch}");
            assert!((pose.roll - roll).abs() < 0.01, "{pose:?} for {roll}");
            assert!(pose.residual < 0.01, "{pose:?}");
        }
    }

    #[test]
    fn a_pixel_of_landmark_noise_moves_the_pose_by_a_degree_or_two() {
        for yaw in [-20.0, 0.0, 20.0] {
            let pose = estimate(&landmarks_at(yaw, 0.0, 0.0, 1.0)).unwrap();
            assert!((pose.yaw - yaw).abs() < 2.5, "{pose:?} for {yaw}");
            assert!(pose.pitch.abs() < 2.5, "{pose:?}");
        }
    }

    #[test]
    fn a_turn_to_the_persons_own_left_moves_the_nose_to_the_images_right() {
        let frontal = landmarks_at(0.0, 0.0, 0.0, 0.0);
        let turned = landmarks_at(20.0, 0.0, 0.0, 0.0);
        let between_eyes = |p: &[Point]| (p[39].0 + p[42].0) / 2.0;
        assert!(turned[30].0 - between_eyes(&turned) > frontal[30].0 - between_eyes(&frontal));
    }

    /// What liveness's `max_pose_misfit_mm` (8 by default) separates: a face's landmarks with a
    /// pixel of noise fit within a millimetre; the same points in the wrong places (no face at
    /// all) miss by far more, whatever pose is tried.
    #[test]
    fn points_no_rigid_face_makes_fit_far_worse_than_a_face() {
        let limit = 8.0;
        let face = estimate(&landmarks_at(10.0, 0.0, 0.0, 1.0)).unwrap();
        assert!(face.residual < 1.0, "{face:?}");
        // Every model point moved to the next one's place: eyes, nose and mouth scrambled.
        let placed = landmarks_at(10.0, 0.0, 0.0, 0.0);
        let indices: Vec<usize> = model_points().map(|(i, _)| i).collect();
        let mut scrambled = placed.clone();
        for (n, &i) in indices.iter().enumerate() {
            scrambled[i] = placed[indices[(n + 7) % indices.len()]];
        }
        let misfit = estimate(&scrambled).map_or(f64::INFINITY, |p| p.residual);
        assert!(misfit > 2.0 * limit, "{misfit}");
    }

    #[test]
    fn too_few_or_collapsed_points_have_no_pose() {
        assert_eq!(estimate(&[(1.0, 1.0); 5]), None);
        assert_eq!(estimate(&[(1.0, 1.0); 68]), None);
    }
}
