//! A face photo drawn as a head in 3-D, turned to known angles: the positive fixture of the
//! liveness challenge, and the truth its pose error is measured against.
//!
//! The photo is laid over a relief built from its 68 landmarks: an ellipsoid for the head, a
//! ridge for the nose that stands half an eye distance in front of the eyes' inner corners,
//! hollows for the eyes, a rise for the lips. The relief is cut into a mesh of small triangles,
//! turned about the head's centre, seen in perspective from about arm's length, and drawn with
//! a depth buffer, so the nose hides the far cheek as it turns. Everything outside the head
//! (shoulders, background) stays where it is, as it does when a person turns their head. This
//! is not a planar warp: the landmarks of its frames keep the parallax a flat picture lacks.

use image::{Rgb, RgbImage};

type Point = (f32, f32);

/// Pixels between two mesh vertices.
const MESH: usize = 2;
/// Camera distance in eye distances: about 40 cm for 6.2 cm between the eyes.
const CAMERA: f32 = 7.0;

/// A face photo with the depth of every pixel.
pub struct Head {
    photo: RgbImage,
    /// Depth toward the camera, in pixels; 0 outside the head.
    depth: Vec<f32>,
    /// The head's centre: what it turns about.
    centre: (f32, f32),
    /// Eye distance in pixels.
    unit: f32,
}

fn mean(points: &[Point]) -> Point {
    let n = points.len() as f32;
    let (x, y) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
    (x / n, y / n)
}

fn gauss(d2: f32, width: f32) -> f32 {
    (-d2 / (2.0 * width * width)).exp()
}

impl Head {
    /// The head whose frontal photo this is, with the 68 landmarks of its face (in the photo's
    /// pixels).
    pub fn new(photo: RgbImage, landmarks: &[Point]) -> Self {
        assert_eq!(landmarks.len(), 68, "the 68-point landmarks");
        let p = |i: usize| landmarks[i];
        let (left_eye, right_eye) = (mean(&landmarks[36..42]), mean(&landmarks[42..48]));
        let unit = (right_eye.0 - left_eye.0).hypot(right_eye.1 - left_eye.1);
        let (nasion, tip, base) = (p(27), p(30), p(33));
        let mouth = mean(&landmarks[48..60]);
        let half_width = 0.55 * (p(16).0 - p(0).0).abs().max(unit);
        let half_height = 1.5 * half_width;
        let centre = (nasion.0, p(29).1 - 0.35 * unit);
        let relief = half_width;
        let (w, h) = photo.dimensions();
        let mut depth = vec![0.0f32; (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32, y as f32);
                let u = (fx - centre.0) / half_width;
                let v = (fy - centre.1) / half_height;
                let inside = 1.0 - u * u - v * v;
                if inside <= 0.0 {
                    continue;
                }
                let mut z = relief * inside.sqrt();
                // The nose's ridge, rising from the nasion to the tip, then falling to its base.
                // (It starts a little above the nasion, where the brows meet.)
                let t = ((fy - nasion.1) / (tip.1 - nasion.1).max(1.0)).clamp(0.0, 1.0);
                let ridge_x = nasion.0 + (tip.0 - nasion.0) * t;
                let along = if fy < nasion.1 - 0.2 * unit {
                    0.0
                } else if fy <= tip.1 {
                    0.12 + 0.38 * t
                } else {
                    0.5 * gauss((fy - tip.1).powi(2), 0.35 * (base.1 - tip.1).max(1.0))
                };
                z += unit * along * gauss((fx - ridge_x).powi(2), 0.16 * unit);
                // The nose's wings.
                let d2 = (fx - base.0).powi(2) + (fy - base.1).powi(2) * 2.0;
                z += 0.12 * unit * gauss(d2, 0.3 * unit);
                // The eyes' hollows.
                for eye in [left_eye, right_eye] {
                    let d2 = (fx - eye.0).powi(2) + (fy - eye.1).powi(2);
                    z -= 0.1 * unit * gauss(d2, 0.28 * unit);
                }
                // The lips.
                let d2 = (fx - mouth.0).powi(2) + 2.0 * (fy - mouth.1).powi(2);
                z += 0.06 * unit * gauss(d2, 0.35 * unit);
                depth[(y * w + x) as usize] = z.max(0.0);
            }
        }
        Self {
            photo,
            depth,
            centre,
            unit,
        }
    }

    /// The head turned by `yaw` degrees (positive: to the person's own left, the nose toward
    /// the image's right edge) and `pitch` degrees (positive: looking up).
    pub fn render(&self, yaw: f32, pitch: f32) -> RgbImage {
        let (w, h) = self.photo.dimensions();
        let (sy, cy) = yaw.to_radians().sin_cos();
        let (sp, cp) = pitch.to_radians().sin_cos();
        let camera = CAMERA * self.unit;
        let front = self.depth.iter().copied().fold(0.0, f32::max);
        // Each mesh vertex: where it is drawn, its depth, and the photo pixel it shows.
        let (cols, rows) = (w as usize / MESH + 1, h as usize / MESH + 1);
        let mut vertices = Vec::with_capacity(cols * rows);
        for row in 0..rows {
            for col in 0..cols {
                let sx = ((col * MESH) as f32).min(w as f32 - 1.0);
                let sy_ = ((row * MESH) as f32).min(h as f32 - 1.0);
                let z = self.depth[(sy_ as u32 * w + sx as u32) as usize];
                if z <= 0.0 {
                    // Not the head: it stays, behind everything the head shows.
                    vertices.push((sx, sy_, -front, sx, sy_));
                    continue;
                }
                let (x, y) = (sx - self.centre.0, self.centre.1 - sy_);
                // Yaw about the vertical axis, then pitch about the horizontal one.
                let (x1, z1) = (x * cy + z * sy, -x * sy + z * cy);
                let (y2, z2) = (y * cp + z1 * sp, -y * sp + z1 * cp);
                let k = (camera - front) / (camera - z2);
                vertices.push((self.centre.0 + x1 * k, self.centre.1 - y2 * k, z2, sx, sy_));
            }
        }
        let mut out = RgbImage::new(w, h);
        let mut buffer = vec![f32::NEG_INFINITY; (w * h) as usize];
        for row in 0..rows - 1 {
            for col in 0..cols - 1 {
                let at = |r: usize, c: usize| vertices[r * cols + c];
                let (a, b, c, d) = (
                    at(row, col),
                    at(row, col + 1),
                    at(row + 1, col),
                    at(row + 1, col + 1),
                );
                self.triangle(&mut out, &mut buffer, [a, b, c]);
                self.triangle(&mut out, &mut buffer, [b, d, c]);
            }
        }
        out
    }

    /// Draws one triangle of the mesh where it is nearer than what is drawn already.
    fn triangle(&self, out: &mut RgbImage, buffer: &mut [f32], t: [(f32, f32, f32, f32, f32); 3]) {
        let (w, h) = out.dimensions();
        let [a, b, c] = t;
        let area = (b.0 - a.0) * (c.1 - a.1) - (c.0 - a.0) * (b.1 - a.1);
        if area.abs() < 1e-6 {
            return;
        }
        let x0 = a.0.min(b.0).min(c.0).floor().max(0.0) as u32;
        let x1 = (a.0.max(b.0).max(c.0).ceil() as u32).min(w - 1);
        let y0 = a.1.min(b.1).min(c.1).floor().max(0.0) as u32;
        let y1 = (a.1.max(b.1).max(c.1).ceil() as u32).min(h - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (px, py) = (x as f32, y as f32);
                let wa = ((b.0 - px) * (c.1 - py) - (c.0 - px) * (b.1 - py)) / area;
                let wb = ((c.0 - px) * (a.1 - py) - (a.0 - px) * (c.1 - py)) / area;
                let wc = 1.0 - wa - wb;
                if wa < -1e-4 || wb < -1e-4 || wc < -1e-4 {
                    continue;
                }
                let z = wa * a.2 + wb * b.2 + wc * c.2;
                let slot = (y * w + x) as usize;
                if z <= buffer[slot] {
                    continue;
                }
                buffer[slot] = z;
                let u = wa * a.3 + wb * b.3 + wc * c.3;
                let v = wa * a.4 + wb * b.4 + wc * c.4;
                out.put_pixel(x, y, self.sample(u, v));
            }
        }
    }

    fn sample(&self, u: f32, v: f32) -> Rgb<u8> {
        let (w, h) = self.photo.dimensions();
        let x = u.clamp(0.0, w as f32 - 1.001);
        let y = v.clamp(0.0, h as f32 - 1.001);
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let p = |dx: u32, dy: u32| self.photo.get_pixel(x0 + dx, y0 + dy).0;
        let (p00, p10, p01, p11) = (p(0, 0), p(1, 0), p(0, 1), p(1, 1));
        Rgb(std::array::from_fn(|i| {
            let top = f32::from(p00[i]) * (1.0 - fx) + f32::from(p10[i]) * fx;
            let bottom = f32::from(p01[i]) * (1.0 - fx) + f32::from(p11[i]) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        }))
    }
}
