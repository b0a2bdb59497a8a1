//! Text detection: the DB (differentiable binarisation) model gives a text probability per
//! pixel; boxes are the connected regions above a threshold, grown back by the unclip ratio
//! the model was trained to shrink them by.

use image::{GrayImage, Luma, RgbImage};
use imageproc::region_labelling::{Connectivity, connected_components};
use ndarray::Array4;
use ort::session::Session;
use serde::Serialize;

use super::{InferenceError, infer, write_input};
use crate::vision::resample;

/// Detection thresholds; the defaults are PP-OCR's own.
#[derive(Debug, Clone, Serialize)]
pub struct DetectSettings {
    /// The image's longer side is scaled to this before detection (enlarged at most 4 times).
    pub side: u32,
    /// A pixel is text above this probability.
    pub threshold: f32,
    /// A region is kept when the mean probability of its pixels is above this. (PP-OCR takes
    /// the mean over the region's rotated box; the regions here are axis-aligned boxes, which
    /// on a slightly tilted line would count the background beside it.)
    pub box_threshold: f32,
    /// How far a region is grown back: area x ratio / perimeter.
    pub unclip_ratio: f32,
}

impl Default for DetectSettings {
    fn default() -> Self {
        Self {
            side: 1024,
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
        }
    }
}

/// A text box in the input image's pixels: the line's own rectangle, turned by `angle`, and
/// the upright rectangle around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
    /// The line's direction, radians from the image's x axis; positive: falling to the right
    /// (the image's y axis points down). 0 for a line found level.
    pub angle: f32,
    /// The line's centre.
    pub centre: (f32, f32),
    /// Its length along `angle`, and its height across it.
    pub length: f32,
    pub thickness: f32,
}

impl TextBox {
    pub fn centre_y(&self) -> f32 {
        self.centre.1
    }

    /// This box `dy` pixels lower: a box found on the lower part of an image, in the whole
    /// image's pixels.
    pub fn lowered(mut self, dy: f32) -> Self {
        self.y += dy;
        self.centre.1 += dy;
        self
    }

    /// Whether `other` is a shorter piece of this line: within 3 degrees of its direction, its
    /// centre within half a height across this line and within its length along it.
    pub fn covers(&self, other: &TextBox) -> bool {
        let (along, across) = self.local(other.centre);
        self.parallel(other)
            && across.abs() < 0.5 * self.thickness
            && along.abs() <= self.length / 2.0
            && other.length < self.length
    }

    /// Sets the upright box to the one around the line's rectangle.
    pub(super) fn bound(&mut self) {
        let corners = self.corners(0.0);
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (x, y) in corners {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        (self.x, self.y, self.width, self.height) = (x0, y0, x1 - x0, y1 - y0);
    }

    /// The line's rectangle, grown by `pad` across it on each side: top left, top right, bottom
    /// right, bottom left, as the text reads.
    pub fn corners(&self, pad: f32) -> [(f32, f32); 4] {
        let (hl, ht) = (self.length / 2.0, self.thickness / 2.0 + pad);
        let at = |u, v| self.point(u, v);
        [at(-hl, -ht), at(hl, -ht), at(hl, ht), at(-hl, ht)]
    }

    /// The image point `along` the line from its centre and `across` it (positive: below the
    /// line as the text reads).
    fn point(&self, along: f32, across: f32) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        (
            self.centre.0 + along * c - across * s,
            self.centre.1 + along * s + across * c,
        )
    }

    /// An image point in the line's own terms: how far along it from its centre, and across.
    fn local(&self, (x, y): (f32, f32)) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.centre.0, y - self.centre.1);
        (dx * c + dy * s, -dx * s + dy * c)
    }

    /// This box with its upright box cut to an image `width` x `height`.
    pub(super) fn within(mut self, width: f32, height: f32) -> Self {
        let (x1, y1) = (self.x + self.width, self.y + self.height);
        self.x = self.x.max(0.0);
        self.y = self.y.max(0.0);
        self.width = x1.min(width) - self.x;
        self.height = y1.min(height) - self.y;
        self
    }

    /// Whether `other` runs within 3 degrees of this line's direction.
    fn parallel(&self, other: &TextBox) -> bool {
        (other.angle - self.angle).abs() <= 3f32.to_radians()
    }
}

/// Joins boxes that continue one another along one line: the detector often splits a line at
/// a change of texture (an MRZ's name against its run of fillers), most of all on a tilted
/// photo. Two boxes join when their directions are within 3 degrees, their heights within a
/// factor of 1.6, the second's centre lies within half a height of the first's line, and the
/// gap between their ends is under one and a half heights.
pub fn join_lines(mut boxes: Vec<TextBox>) -> Vec<TextBox> {
    // Longest first, so that short boxes join the line they continue.
    boxes.sort_by(|a, b| b.length.total_cmp(&a.length));
    let mut lines: Vec<TextBox> = Vec::with_capacity(boxes.len());
    'next: for candidate in boxes {
        for line in &mut lines {
            if let Some(joined) = join(line, &candidate) {
                *line = joined;
                continue 'next;
            }
        }
        lines.push(candidate);
    }
    // A join can bring a line near another it was too short to reach: once more, until
    // nothing changes (a few lines at most take part).
    let mut joined = true;
    while joined {
        joined = false;
        'outer: for i in 0..lines.len() {
            for j in i + 1..lines.len() {
                if let Some(line) = join(&lines[i], &lines[j]) {
                    lines[i] = line;
                    lines.remove(j);
                    joined = true;
                    break 'outer;
                }
            }
        }
    }
    lines.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
    lines
}

/// `line`'s rectangle moved onto each line of text running beside it: for a zone of lines of
/// one length (an MRZ), where the detector found one whole and another only in pieces. A
/// neighbour is a box within 3 degrees of the line's direction, beside the line, whose
/// centre is between half a height and three heights away across it; boxes about as far
/// count once. Each rectangle has the line's length and the thinner of the two heights.
pub fn beside(line: &TextBox, boxes: &[TextBox]) -> Vec<TextBox> {
    let mut found: Vec<TextBox> = Vec::new();
    for other in boxes {
        let (along, across) = line.local(other.centre);
        let distance = across.abs() / line.thickness;
        if !line.parallel(other)
            || along.abs() > line.length / 2.0
            || !(0.5..=3.0).contains(&distance)
        {
            continue;
        }
        let thickness = line.thickness.min(other.thickness);
        if found
            .iter()
            .any(|f| (line.local(f.centre).1 - across).abs() < 0.5 * thickness)
        {
            continue;
        }
        let mut moved = TextBox {
            centre: line.point(0.0, across),
            thickness,
            ..*line
        };
        moved.bound();
        found.push(moved);
    }
    found
}

/// `a` and `b` as one line, where `b` continues `a`.
fn join(a: &TextBox, b: &TextBox) -> Option<TextBox> {
    let (thin, thick) = (a.thickness.min(b.thickness), a.thickness.max(b.thickness));
    let (along, across) = a.local(b.centre);
    if !a.parallel(b) || thick > 1.6 * thin || across.abs() > 0.5 * thin {
        return None;
    }
    let (b0, b1) = (along - b.length / 2.0, along + b.length / 2.0);
    let (a0, a1) = (-a.length / 2.0, a.length / 2.0);
    let gap = (b0 - a1).max(a0 - b1);
    if gap > 1.5 * thick {
        return None;
    }
    // The line's score: the two boxes' scores, weighed by their lengths.
    let score = (a.score * a.length + b.score * b.length) / (a.length + b.length);
    if a.angle == 0.0 && b.angle == 0.0 {
        // Level boxes stay upright boxes: their union.
        let (x0, y0) = (a.x.min(b.x), a.y.min(b.y));
        let x1 = (a.x + a.width).max(b.x + b.width);
        let y1 = (a.y + a.height).max(b.y + b.height);
        return Some(TextBox {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
            score,
            angle: 0.0,
            centre: ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
            length: x1 - x0,
            thickness: y1 - y0,
        });
    }
    let (u0, u1) = (a0.min(b0), a1.max(b1));
    // The line's centre across it: the two boxes' centres, weighed by their lengths.
    let v = across * b.length / (a.length + b.length);
    let mut line = TextBox {
        score,
        centre: a.point((u0 + u1) / 2.0, v),
        length: u1 - u0,
        thickness: thick,
        ..*a
    };
    line.bound();
    Some(line)
}

/// Lines tilted less than this (radians, half a degree) are boxed upright, as found: the
/// upright box of a level line is its own rectangle. A page levelled by its outline is often
/// still a degree off, enough for an upright box to cut a long line's characters: with lines
/// levelled from 1.5 degrees, 4 of the 10 specimens marked 100 validated turned 35 degrees
/// (`kyc-eval ocr --turn -35`); from half a degree, 8.
pub(super) const LEVEL: f64 = 0.0087;

pub(super) fn detect(
    session: &mut Session,
    image: &RgbImage,
    settings: &DetectSettings,
) -> Result<Vec<TextBox>, InferenceError> {
    let (width, height) = image.dimensions();
    // Small images are enlarged at most 4 times: a thumbnail holds no line worth the cost of a
    // full-size detection.
    let scale = (settings.side as f32 / width.max(height) as f32).min(4.0);
    let to_32 = |side: u32| ((side as f32 * scale / 32.0).round() as u32).max(1) * 32;
    let (w, h) = (to_32(width), to_32(height));
    let resized = resample::resized(image, w, h);

    let mut input = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
    write_input(&mut input, 0, &resized);
    let probability = infer(session, &input)?
        .into_shape_with_order((h as usize, w as usize))
        .map_err(InferenceError::from_ort)?;

    let mut bitmap = GrayImage::new(w, h);
    for ((y, x), &p) in probability.indexed_iter() {
        if p > settings.threshold {
            bitmap.put_pixel(x as u32, y as u32, Luma([255]));
        }
    }
    let labels = connected_components(&bitmap, Connectivity::Eight, Luma([0]));
    let mut regions: Vec<Region> = Vec::new();
    for (x, y, label) in labels.enumerate_pixels() {
        let label = label[0] as usize;
        if label == 0 {
            continue;
        }
        if regions.len() < label {
            regions.resize(label, Region::EMPTY);
        }
        regions[label - 1].add(x, y, probability[[y as usize, x as usize]]);
    }
    // A tilted line's extent along and across its own direction: a second pass over its
    // pixels, projected onto its axes.
    for region in &mut regions {
        region.orient();
    }
    if regions.iter().any(|region| region.angle != 0.0) {
        for (x, y, label) in labels.enumerate_pixels() {
            if let Some(region) = (label[0] as usize).checked_sub(1).map(|i| &mut regions[i]) {
                region.extend(x, y);
            }
        }
    }

    let (sx, sy) = (width as f32 / w as f32, height as f32 / h as f32);
    let mut boxes: Vec<TextBox> = regions
        .iter()
        .filter(|r| r.pixels > 0 && r.width() >= 3 && r.height() >= 3)
        .filter_map(|r| {
            let score = r.probability / r.pixels as f32;
            if score < settings.box_threshold {
                return None;
            }
            Some(r.text_box(settings.unclip_ratio, (w, h), (sx, sy), score))
        })
        .collect();
    boxes.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
    Ok(boxes)
}

/// A connected region's bounding box, size, and moments (for its direction).
#[derive(Clone, Copy)]
struct Region {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    pixels: u32,
    probability: f32,
    /// Sums of x, y, x², y² and xy.
    moments: [f64; 5],
    /// Its direction (radians) once `orient`ed, and its pixels' extent along it and across
    /// it from the centroid: (min u, max u, min v, max v).
    angle: f64,
    extent: (f64, f64, f64, f64),
}

impl Region {
    const EMPTY: Self = Self {
        x0: u32::MAX,
        y0: u32::MAX,
        x1: 0,
        y1: 0,
        pixels: 0,
        probability: 0.0,
        moments: [0.0; 5],
        angle: 0.0,
        extent: (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
    };

    fn add(&mut self, x: u32, y: u32, probability: f32) {
        self.probability += probability;
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x);
        self.y1 = self.y1.max(y);
        self.pixels += 1;
        let (x, y) = (f64::from(x), f64::from(y));
        for (sum, term) in self.moments.iter_mut().zip([x, y, x * x, y * y, x * y]) {
            *sum += term;
        }
    }

    fn centroid(&self) -> (f64, f64) {
        let n = f64::from(self.pixels.max(1));
        (self.moments[0] / n, self.moments[1] / n)
    }

    /// Sets the direction of the region's principal axis: the way a line of text runs.
    fn orient(&mut self) {
        let n = f64::from(self.pixels.max(1));
        let (cx, cy) = self.centroid();
        let xx = self.moments[2] / n - cx * cx;
        let yy = self.moments[3] / n - cy * cy;
        let xy = self.moments[4] / n - cx * cy;
        let angle = 0.5 * (2.0 * xy).atan2(xx - yy);
        // Only a clearly long region has a direction worth turning for.
        let elongated = xx + yy > 0.0 && {
            let spread = ((xx - yy).powi(2) + 4.0 * xy * xy).sqrt();
            (xx + yy + spread) > 4.0 * (xx + yy - spread)
        };
        self.angle = if elongated && angle.abs() >= LEVEL {
            angle
        } else {
            0.0
        };
    }

    fn extend(&mut self, x: u32, y: u32) {
        if self.angle == 0.0 {
            return;
        }
        let (cx, cy) = self.centroid();
        let (dx, dy) = (f64::from(x) - cx, f64::from(y) - cy);
        let (c, s) = (self.angle.cos(), self.angle.sin());
        let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
        let e = &mut self.extent;
        *e = (e.0.min(u), e.1.max(u), e.2.min(v), e.3.max(v));
    }

    /// The box, grown back by the unclip ratio and scaled to the input image by `(sx, sy)`.
    fn text_box(
        &self,
        unclip_ratio: f32,
        (w, h): (u32, u32),
        (sx, sy): (f32, f32),
        score: f32,
    ) -> TextBox {
        if self.angle == 0.0 {
            let (bw, bh) = (self.width() as f32, self.height() as f32);
            let grow = bw * bh * unclip_ratio / (2.0 * (bw + bh));
            let x0 = (self.x0 as f32 - grow).max(0.0);
            let y0 = (self.y0 as f32 - grow).max(0.0);
            let x1 = (self.x1 as f32 + 1.0 + grow).min(w as f32);
            let y1 = (self.y1 as f32 + 1.0 + grow).min(h as f32);
            let (x, y, width, height) = (x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
            return TextBox {
                x,
                y,
                width,
                height,
                score,
                angle: 0.0,
                centre: (x + width / 2.0, y + height / 2.0),
                length: width,
                thickness: height,
            };
        }
        let (u0, u1, v0, v1) = self.extent;
        let (length, thickness) = ((u1 - u0 + 1.0) as f32, (v1 - v0 + 1.0) as f32);
        let grow = length * thickness * unclip_ratio / (2.0 * (length + thickness));
        let (c, s) = (self.angle.cos(), self.angle.sin());
        let (um, vm) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
        let (cx, cy) = self.centroid();
        // +0.5: a pixel's centre, as the upright box counts whole pixels.
        let centre = (cx + um * c - vm * s + 0.5, cy + um * s + vm * c + 0.5);
        // Scaled to the input: the two scales differ by the rounding to 32 pixels only.
        let angle = (s * f64::from(sy)).atan2(c * f64::from(sx)) as f32;
        let stretch = |along: f64| {
            let (ax, ay) = (along.cos() * f64::from(sx), along.sin() * f64::from(sy));
            ax.hypot(ay) as f32
        };
        let mut text_box = TextBox {
            x: 0.0,
            y: 0.0,
            width: 0.0,
            height: 0.0,
            score,
            angle,
            centre: (centre.0 as f32 * sx, centre.1 as f32 * sy),
            length: (length + 2.0 * grow) * stretch(self.angle),
            thickness: (thickness + 2.0 * grow) * stretch(self.angle + std::f64::consts::FRAC_PI_2),
        };
        text_box.bound();
        text_box.within(w as f32 * sx, h as f32 * sy)
    }

    fn width(&self) -> u32 {
        self.x1 + 1 - self.x0
    }

    fn height(&self) -> u32 {
        self.y1 + 1 - self.y0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `length` long and `thickness` high centred at `centre`, running at `degrees`.
    fn line(centre: (f32, f32), length: f32, thickness: f32, degrees: f32) -> TextBox {
        let mut line = TextBox {
            x: 0.0,
            y: 0.0,
            width: 0.0,
            height: 0.0,
            score: 0.9,
            angle: degrees.to_radians(),
            centre,
            length,
            thickness,
        };
        line.bound();
        line
    }

    /// The point `along` the line through `from` at `degrees`, and `across` it.
    fn at(from: (f32, f32), degrees: f32, along: f32, across: f32) -> (f32, f32) {
        let (s, c) = degrees.to_radians().sin_cos();
        (
            from.0 + along * c - across * s,
            from.1 + along * s + across * c,
        )
    }

    #[test]
    fn the_pieces_of_a_tilted_line_join_and_the_line_beside_them_stays_apart() {
        let o = (800.0, 600.0);
        let left = line(at(o, -20.0, -250.0, 0.0), 400.0, 34.0, -19.0);
        let right = line(at(o, -20.0, 230.0, 1.0), 500.0, 40.0, -20.0);
        let below = line(at(o, -20.0, 0.0, 55.0), 900.0, 40.0, -20.0);

        let lines = join_lines(vec![left, right, below]);

        assert_eq!(lines.len(), 2, "{lines:?}");
        let joined = lines
            .iter()
            .find(|l| l.length < 950.0 && l.centre.1 < 600.0)
            .unwrap();
        // From 450 before the centre to 480 after it.
        assert!((joined.length - 930.0).abs() < 2.0, "{joined:?}");
        assert!((joined.angle.to_degrees() + 20.0).abs() < 0.01);
    }

    #[test]
    fn pieces_too_far_apart_or_turned_apart_do_not_join() {
        let o = (800.0, 600.0);
        let a = line(o, 300.0, 40.0, 10.0);
        let far = line(at(o, 10.0, 300.0 + 70.0, 0.0), 300.0, 40.0, 10.0);
        let turned = line(at(o, 10.0, 310.0, 0.0), 300.0, 40.0, 16.0);
        let thick = line(at(o, 10.0, 310.0, 0.0), 300.0, 80.0, 10.0);
        for other in [far, turned, thick] {
            assert_eq!(join_lines(vec![a, other]).len(), 2, "{other:?}");
        }
    }

    #[test]
    fn level_pieces_join_into_their_upright_box() {
        let a = line((300.0, 100.0), 400.0, 40.0, 0.0);
        let b = line((750.0, 102.0), 400.0, 40.0, 0.0);

        let lines = join_lines(vec![a, b]);

        assert_eq!(lines.len(), 1);
        let l = lines[0];
        assert_eq!((l.angle, l.x, l.width), (0.0, 100.0, 850.0));
        assert_eq!((l.y, l.height), (80.0, 42.0));
    }

    #[test]
    fn a_line_is_read_again_at_its_length_over_the_pieces_beside_it() {
        let o = (800.0, 600.0);
        let whole = line(o, 900.0, 40.0, -15.0);
        let pieces = [
            line(at(o, -15.0, -250.0, -52.0), 380.0, 38.0, -15.5),
            line(at(o, -15.0, 250.0, -50.0), 380.0, 28.0, -14.0),
            // Too far along to be beside it, and too far across.
            line(at(o, -15.0, 700.0, -50.0), 300.0, 38.0, -15.0),
            line(at(o, -15.0, 0.0, 200.0), 300.0, 38.0, -15.0),
        ];

        let strips = beside(&whole, &pieces);

        assert_eq!(strips.len(), 1, "{strips:?}");
        let strip = strips[0];
        assert_eq!((strip.length, strip.angle), (whole.length, whole.angle));
        assert_eq!(strip.thickness, 38.0);
        let expected = at(o, -15.0, 0.0, -52.0);
        assert!((strip.centre.0 - expected.0).abs() < 0.01, "{strip:?}");
        assert!((strip.centre.1 - expected.1).abs() < 0.01, "{strip:?}");
        // The strip stands for the pieces it was laid over, and for nothing else.
        assert!(strip.covers(&pieces[0]) && strip.covers(&pieces[1]));
        assert!(!strip.covers(&pieces[2]) && !strip.covers(&pieces[3]));
        assert!(!strip.covers(&whole));
    }
}
