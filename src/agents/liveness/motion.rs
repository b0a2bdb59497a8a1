//! How a face's 68 landmarks move between frames, separated into what a flat picture can do and
//! what only a head can.
//!
//! Any motion of a flat picture (a print, a phone screen) in front of a camera maps its points
//! from one frame to the next by a single homography, however it is tilted, turned or moved. A
//! live head is not flat: turning it moves the nose against the cheeks (parallax), and eyes and
//! mouth open and close. So the homography that best maps one frame's landmarks onto another's
//! leaves a residual that is landmark noise for a picture and larger for a face. Blinks and
//! mouth movement are measured on their own as well.

use nalgebra::{DMatrix, Matrix3, Vector3};

pub type Point = (f32, f32);

/// Points in the scheme.
pub const LANDMARKS: usize = 68;

/// The iBUG 300-W indices of the 68-point scheme that the measures use.
const RIGHT_EYE: std::ops::Range<usize> = 36..42;
const LEFT_EYE: std::ops::Range<usize> = 42..48;

/// Distance between the eye centres: the unit every measure is expressed in, so that they do
/// not depend on the face's size in pixels.
pub fn interocular(points: &[Point]) -> f32 {
    distance(mean(&points[RIGHT_EYE]), mean(&points[LEFT_EYE])).max(1.0)
}

/// The gap between the eyelids, averaged over both eyes, over the distance from the eyes to
/// the mouth. Both are vertical, so the measure holds when the face turns sideways or a
/// picture is foreshortened (the usual eye aspect ratio, height over width, does not); a
/// blink takes it to a fraction of its open value.
pub fn eye_openness(points: &[Point]) -> f32 {
    let gap = |e: &[Point]| (distance(e[1], e[5]) + distance(e[2], e[4])) / 2.0;
    let lids = (gap(&points[RIGHT_EYE]) + gap(&points[LEFT_EYE])) / 2.0;
    let centre = |range: std::ops::Range<usize>| mean(&points[range]);
    let eyes = centre(36..48);
    let mouth = centre(48..68);
    lids / distance(eyes, mouth).max(1.0)
}

fn mean(points: &[Point]) -> Point {
    let n = points.len().max(1) as f32;
    let (x, y) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), p| (sx + p.0, sy + p.1));
    (x / n, y / n)
}

fn distance(a: Point, b: Point) -> f32 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// How `to` differs from `from` (the same face's landmarks in two frames), in interocular
/// distances of `from`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// Root-mean-square distance between `to` and `from` carried by the best similarity (shift,
    /// turn in the image plane, scale): the motion that a turn out of the image plane makes,
    /// foreshortening a picture and showing parallax on a head. A head that only shifts, rolls
    /// or comes closer makes none, so it is never taken for a flat picture.
    pub moved: f32,
    /// Root-mean-square distance between `to` and `from` carried by the best homography: the
    /// part of the motion no flat picture can make.
    pub non_planar: f32,
}

/// The motion between the same face's 68 landmarks in two frames; `None` for another number
/// of points or a degenerate set (all in one place).
pub fn motion(from: &[Point], to: &[Point]) -> Option<Motion> {
    if from.len() != LANDMARKS || to.len() != LANDMARKS {
        return None;
    }
    let unit = interocular(from);
    let (fm, tm) = (mean(from), mean(to));
    // The least-squares similarity of the centred points: q = [a -b; b a] p.
    let centred: Vec<(Point, Point)> = from
        .iter()
        .zip(to)
        .map(|(f, t)| ((f.0 - fm.0, f.1 - fm.1), (t.0 - tm.0, t.1 - tm.1)))
        .collect();
    let norm: f32 = centred.iter().map(|(p, _)| p.0 * p.0 + p.1 * p.1).sum();
    if norm < 1e-6 {
        return None;
    }
    let a = centred
        .iter()
        .map(|(p, q)| p.0 * q.0 + p.1 * q.1)
        .sum::<f32>()
        / norm;
    let b = centred
        .iter()
        .map(|(p, q)| p.0 * q.1 - p.1 * q.0)
        .sum::<f32>()
        / norm;
    let moved = rms(centred
        .iter()
        .map(|(p, q)| distance((a * p.0 - b * p.1, b * p.0 + a * p.1), *q)));
    let h = homography(from, to)?;
    let non_planar = rms(from
        .iter()
        .zip(to)
        .map(|(&f, &t)| distance(apply(&h, f), t)));
    if !non_planar.is_finite() || !moved.is_finite() {
        return None;
    }
    Some(Motion {
        moved: moved / unit,
        non_planar: non_planar / unit,
    })
}

fn rms(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0.0f64, 0u32), |(s, n), v| (s + f64::from(v * v), n + 1));
    if n == 0 {
        0.0
    } else {
        (sum / f64::from(n)).sqrt() as f32
    }
}

fn apply(h: &Matrix3<f64>, (x, y): Point) -> Point {
    let p = h * Vector3::new(f64::from(x), f64::from(y), 1.0);
    if p.z.abs() < 1e-12 {
        return (f32::INFINITY, f32::INFINITY);
    }
    ((p.x / p.z) as f32, (p.y / p.z) as f32)
}

/// The homography mapping `from` onto `to` in the least-squares sense: the direct linear
/// transform on Hartley-normalised points (centred, mean distance sqrt 2), whose solution is
/// the eigenvector of AᵀA with the smallest eigenvalue.
fn homography(from: &[Point], to: &[Point]) -> Option<Matrix3<f64>> {
    let (nf, tf) = (normaliser(from)?, normaliser(to)?);
    let mut a = DMatrix::<f64>::zeros(2 * from.len(), 9);
    for (i, (&f, &t)) in from.iter().zip(to).enumerate() {
        let p = tf_point(&nf, f);
        let q = tf_point(&tf, t);
        let (x, y, u, v) = (p.0, p.1, q.0, q.1);
        let rows = [
            [-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u],
            [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v],
        ];
        for (r, row) in rows.iter().enumerate() {
            for (c, value) in row.iter().enumerate() {
                a[(2 * i + r, c)] = *value;
            }
        }
    }
    let eigen = (a.transpose() * &a).symmetric_eigen();
    let smallest = eigen.eigenvalues.argmin().0;
    let h = eigen.eigenvectors.column(smallest);
    let normalised = Matrix3::from_row_slice(h.as_slice());
    let h = tf.try_inverse()? * normalised * nf;
    h.iter().all(|v| v.is_finite()).then_some(h)
}

/// The similarity that centres `points` and scales their mean distance from the centre to
/// sqrt 2.
fn normaliser(points: &[Point]) -> Option<Matrix3<f64>> {
    let n = points.len() as f64;
    let (cx, cy) = points.iter().fold((0.0, 0.0), |(sx, sy), p| {
        (sx + f64::from(p.0), sy + f64::from(p.1))
    });
    let (cx, cy) = (cx / n, cy / n);
    let spread = points
        .iter()
        .map(|p| (f64::from(p.0) - cx).hypot(f64::from(p.1) - cy))
        .sum::<f64>()
        / n;
    if spread < 1e-9 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / spread;
    Some(Matrix3::new(
        s,
        0.0,
        -s * cx,
        0.0,
        s,
        -s * cy,
        0.0,
        0.0,
        1.0,
    ))
}

fn tf_point(m: &Matrix3<f64>, (x, y): Point) -> (f64, f64) {
    let p = m * Vector3::new(f64::from(x), f64::from(y), 1.0);
    (p.x / p.z, p.y / p.z)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rough face in 3-D (millimetres, camera looking down +z): 68 points with the eyes and
    /// the mouth near one plane, the nose 25 mm in front of it and the jaw's sides up to 30 mm
    /// behind it, as on a head.
    fn head() -> Vec<[f32; 3]> {
        (0..68)
            .map(|i| {
                let (x, y) = match i {
                    0..=16 => (
                        -70.0 + 8.75 * i as f32,
                        10.0 + (i as f32 - 8.0).powi(2) * -0.8,
                    ),
                    17..=26 => (-50.0 + 11.0 * (i - 17) as f32, -35.0),
                    27..=35 => (-8.0 + 2.0 * (i - 27) as f32, -20.0 + 5.0 * (i - 27) as f32),
                    36..=47 => {
                        // Corner, upper lid, upper lid, corner, lower lid, lower lid.
                        const EYE: [(f32, f32); 6] = [
                            (-15.0, 0.0),
                            (-5.0, -4.0),
                            (5.0, -4.0),
                            (15.0, 0.0),
                            (5.0, 4.0),
                            (-5.0, 4.0),
                        ];
                        let centre = if i < 42 { -30.0 } else { 30.0 };
                        let (dx, dy) = EYE[(i - 36) % 6];
                        (centre + dx, -20.0 + dy)
                    }
                    _ => (-25.0 + 2.5 * (i - 48) as f32, 40.0 + ((i % 3) as f32) * 3.0),
                };
                let z = match i {
                    0..=16 => 30.0 * ((i as f32 - 8.0) / 8.0).powi(2),
                    27..=35 => -25.0,
                    _ => 0.0,
                };
                [x, y, z]
            })
            .collect()
    }

    /// The points turned by `yaw` degrees about the vertical axis, moved by `shift`, and seen
    /// by a pinhole camera 500 mm away.
    fn view(points: &[[f32; 3]], yaw: f32, shift: (f32, f32)) -> Vec<Point> {
        let (s, c) = yaw.to_radians().sin_cos();
        points
            .iter()
            .map(|&[x, y, z]| {
                let (x, z) = (c * x + s * z, -s * x + c * z);
                let depth = 500.0 + z;
                (800.0 * (x + shift.0) / depth, 800.0 * (y + shift.1) / depth)
            })
            .collect()
    }

    fn flat(points: &[[f32; 3]]) -> Vec<[f32; 3]> {
        points.iter().map(|&[x, y, _]| [x, y, 0.0]).collect()
    }

    #[test]
    fn a_flat_picture_moves_as_one_plane() {
        let picture = flat(&head());
        let m = motion(
            &view(&picture, 0.0, (0.0, 0.0)),
            &view(&picture, 25.0, (20.0, -10.0)),
        )
        .unwrap();
        assert!(m.moved > 0.01, "{m:?}");
        assert!(m.non_planar < 1e-3, "{m:?}");
    }

    #[test]
    fn shifting_rolling_and_nearing_are_not_turning() {
        let head = view(&head(), 0.0, (0.0, 0.0));
        let (s, c) = 0.2f32.sin_cos();
        let moved: Vec<Point> = head
            .iter()
            .map(|&(x, y)| (1.3 * (c * x - s * y) + 40.0, 1.3 * (s * x + c * y) - 25.0))
            .collect();
        let m = motion(&head, &moved).unwrap();
        assert!(m.moved < 1e-4 && m.non_planar < 1e-4, "{m:?}");
    }

    #[test]
    fn a_turning_head_shows_parallax() {
        let head = head();
        let m = motion(
            &view(&head, 0.0, (0.0, 0.0)),
            &view(&head, 15.0, (20.0, -10.0)),
        )
        .unwrap();
        let defaults = crate::agents::liveness::LivenessSettings::default();
        assert!(f64::from(m.non_planar) >= defaults.live_non_planar, "{m:?}");
        assert!(f64::from(m.moved) >= defaults.min_motion, "{m:?}");
    }

    #[test]
    fn a_still_face_has_no_motion() {
        let points = view(&head(), 0.0, (0.0, 0.0));
        let m = motion(&points, &points).unwrap();
        assert!(m.moved < 1e-4 && m.non_planar < 1e-4, "{m:?}");
    }

    #[test]
    fn too_few_or_coincident_points_give_nothing() {
        let face = view(&head(), 0.0, (0.0, 0.0));
        assert!(motion(&face[..10], &face[..10]).is_none());
        let point = vec![(3.0, 3.0); LANDMARKS];
        assert!(motion(&point, &point).is_none());
    }

    #[test]
    fn eyes_and_mouth_open_and_close() {
        let open = view(&head(), 0.0, (0.0, 0.0));
        let mut closed = open.clone();
        for eye in [36..42, 42..48] {
            let mid = (closed[eye.start].1 + closed[eye.start + 3].1) / 2.0;
            for p in &mut closed[eye] {
                p.1 = mid;
            }
        }
        assert!(eye_openness(&open) > 0.1, "{}", eye_openness(&open));
        assert!(eye_openness(&closed) < 0.01);
        assert!(
            (interocular(&open) - 96.0).abs() < 1.0,
            "{}",
            interocular(&open)
        );
    }
}
