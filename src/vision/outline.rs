//! The document's outline in a photo, and the document cut out and rectified from it.
//!
//! Edges (Canny on a small copy), closed by dilation, are traced into contours; the largest
//! convex hull that a quadrilateral fits closely is the document. A quadrilateral with a corner
//! on the frame's edge means the document runs out of the picture.

use image::{GrayImage, RgbImage};
use imageproc::contours::{BorderType, find_contours};
use imageproc::geometric_transformations::Projection;
use imageproc::geometry::{approximate_polygon_dp, arc_length, contour_area, convex_hull};
use imageproc::point::Point;
use serde::Serialize;

use super::resample;

/// Outlines are searched for on the image scaled to this longer side.
const SEARCH_SIDE: u32 = 480;
/// Corners closer than this fraction of a side to the frame's edge touch it.
const EDGE_MARGIN: f32 = 0.01;
/// A quadrilateral covering less than this share of the frame is the document only where it
/// has a document's proportions and stands out from its surroundings ([`document_shaped`],
/// [`stands_out`]): a phone photo often shows the document
/// small on a table (a third of the frame's width is a tenth of its area), while inside a scan
/// whose own outline was not found the largest quadrilateral is a part of the page, its printed
/// header or the portrait's frame. From this share up, the largest quadrilateral is taken as
/// before.
const SURROUNDED_BELOW: f64 = 0.2;

/// The document's corners in the photo: top-left, top-right, bottom-right, bottom-left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quad(pub [(f32, f32); 4]);

/// As `[[x, y], ...]` to a tenth of a pixel, all the precision the search has.
impl Serialize for Quad {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tenth = |v: f32| (f64::from(v) * 10.0).round() / 10.0;
        self.0
            .map(|(x, y)| [tenth(x), tenth(y)])
            .serialize(serializer)
    }
}

/// What the outline search found.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Outline {
    pub quad: Quad,
    /// The quadrilateral's share of the frame.
    pub area_fraction: f64,
    /// Corners lie on some of the frame's sides: part of the document is outside the picture.
    /// (Corners on all four sides are a document that fills the frame.)
    pub touches_edge: bool,
}

/// Finds the largest quadrilateral covering at least `min_area_fraction` of the frame (below
/// [`SURROUNDED_BELOW`], one shaped like a document that stands out from its surroundings).
pub fn find(image: &RgbImage, min_area_fraction: f32) -> Option<Outline> {
    let (width, height) = image.dimensions();
    let scale = (SEARCH_SIDE as f32 / width.max(height) as f32).min(1.0);
    let (sw, sh) = (
        ((width as f32 * scale) as u32).max(1),
        ((height as f32 * scale) as u32).max(1),
    );
    let gray: GrayImage = image::imageops::grayscale(&resample::resized(image, sw, sh));
    let blurred = imageproc::filter::gaussian_blur_f32(&gray, 1.2);
    let edges = imageproc::edges::canny(&blurred, 20.0, 50.0);
    let closed =
        imageproc::morphology::dilate(&edges, imageproc::distance_transform::Norm::LInf, 2);

    let frame = (sw * sh) as f64;
    let best = find_contours::<i32>(&closed)
        .into_iter()
        .filter(|c| c.border_type == BorderType::Outer && c.points.len() >= 20)
        .map(|c| convex_hull(c.points))
        .filter_map(|hull| {
            let area = contour_area(&hull);
            (area >= frame * f64::from(min_area_fraction)).then_some((hull, area))
        })
        .filter_map(|(hull, area)| fit_quad(&hull, area).map(|quad| (quad, area)))
        .filter(|(quad, area)| {
            *area >= frame * SURROUNDED_BELOW || (document_shaped(quad) && stands_out(&edges, quad))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;

    let (corners, area) = best;
    let (mx, my) = (sw as f32 * EDGE_MARGIN, sh as f32 * EDGE_MARGIN);
    let (near_left, near_top) = (|x: f32| x <= mx + 2.0, |y: f32| y <= my + 2.0);
    let near_right = |x: f32| x >= sw as f32 - 1.0 - mx - 2.0;
    let near_bottom = |y: f32| y >= sh as f32 - 1.0 - my - 2.0;
    let on_edge = corners
        .iter()
        .any(|&(x, y)| near_left(x) || near_top(y) || near_right(x) || near_bottom(y));
    // Corners on all four sides of the frame: a scan, or a photo cropped to the document.
    // Corners on some sides only: the document runs out of the picture there.
    let fills_frame = corners.iter().any(|c| near_left(c.0))
        && corners.iter().any(|c| near_top(c.1))
        && corners.iter().any(|c| near_right(c.0))
        && corners.iter().any(|c| near_bottom(c.1));
    let touches_edge = on_edge && !fills_frame;
    Some(Outline {
        quad: Quad(corners.map(|(x, y)| (x / scale, y / scale))),
        area_fraction: (area / frame * 1000.0).round() / 1000.0,
        touches_edge,
    })
}

/// The largest quadrilateral on the hull's corners, if it covers the hull to within 12 %. A
/// corner whose edges were faint (a dark band on a dark table) leaves a cut corner on the hull;
/// the largest quadrilateral skips it rather than keeping it and losing a real one.
fn fit_quad(hull: &[Point<i32>], hull_area: f64) -> Option<[(f32, f32); 4]> {
    let perimeter = arc_length(hull, true);
    let mut corners = approximate_polygon_dp(hull, perimeter * 0.01, true);
    // Simplify further until the search below stays small.
    let mut k = 0.02;
    while corners.len() > 12 {
        corners = approximate_polygon_dp(hull, perimeter * k, true);
        k += 0.01;
    }
    let n = corners.len();
    if n < 4 {
        return None;
    }
    let mut best: Option<([Point<i32>; 4], f64)> = None;
    for a in 0..n {
        for b in a + 1..n {
            for c in b + 1..n {
                for d in c + 1..n {
                    let quad = [corners[a], corners[b], corners[c], corners[d]];
                    let area = contour_area(&quad);
                    if best.is_none_or(|(_, best)| area > best) {
                        best = Some((quad, area));
                    }
                }
            }
        }
    }
    let (quad, area) = best?;
    let corners = order(quad.map(|p| (p.x as f32, p.y as f32)));
    (area >= hull_area * 0.88 && plausible(&corners)).then_some(corners)
}

/// The length of side `i` of `quad`, from corner `i` to the next.
fn side(quad: &[(f32, f32); 4], i: usize) -> f32 {
    let (a, b) = (quad[i], quad[(i + 1) % 4]);
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// Whether `quad` has a document's proportions: ICAO's formats are 1.42 to 1.59 times as long
/// as high, and a page leaning away from the camera looks longer still, so up to 2.2. A line of
/// print boxed by its edges (a zone's band, a header) is far longer.
fn document_shaped(quad: &[(f32, f32); 4]) -> bool {
    let side = |i: usize| side(quad, i);
    let (across, down) = (side(0) + side(2), side(1) + side(3));
    across.max(down) <= 2.2 * across.min(down)
}

/// Whether `quad` stands out from its surroundings as a document on a table does: the band
/// around it, from 6 to 25 % of its size beyond its edges, holds under a third as many edge
/// pixels per pixel as its inside (print, the portrait). Around a part of a page the rest of the
/// page's print goes on. Only the band's pixels inside the frame count; a quadrilateral with no
/// band in the frame, or an empty inside, does not stand out.
fn stands_out(edges: &GrayImage, quad: &[(f32, f32); 4]) -> bool {
    let centre = quad
        .iter()
        .fold((0.0, 0.0), |(x, y), c| (x + c.0 / 4.0, y + c.1 / 4.0));
    let grown =
        |k: f32| quad.map(|(x, y)| (centre.0 + (x - centre.0) * k, centre.1 + (y - centre.1) * k));
    let (inner, near, far) = (grown(0.94), grown(1.06), grown(1.25));
    let (mut inside, mut band) = ((0u32, 0u32), (0u32, 0u32));
    // Only the pixels within the outer band's bounds, in the frame.
    let bound = |axis: fn(&(f32, f32)) -> f32, limit: u32| {
        let values = far.iter().map(axis);
        let low = values.clone().fold(f32::INFINITY, f32::min).max(0.0) as u32;
        let high = (values.fold(0.0, f32::max).ceil() as u32).min(limit);
        low..high
    };
    let (xs, ys) = (
        bound(|c| c.0, edges.width()),
        bound(|c| c.1, edges.height()),
    );
    for (x, y) in ys.flat_map(|y| xs.clone().map(move |x| (x, y))) {
        let pixel = edges.get_pixel(x, y);
        let point = (x as f32 + 0.5, y as f32 + 0.5);
        let count = if contains(&inner, point) {
            &mut inside
        } else if contains(&far, point) && !contains(&near, point) {
            &mut band
        } else {
            continue;
        };
        count.0 += 1;
        count.1 += u32::from(pixel[0] > 0);
    }
    let density = |(pixels, edges): (u32, u32)| edges as f32 / pixels.max(1) as f32;
    band.0 > 0 && inside.1 > 0 && density(band) * 3.0 < density(inside)
}

/// Whether `point` is inside the convex quadrilateral `quad` (corners in order around it, either
/// way) or on its edge.
fn contains(quad: &[(f32, f32); 4], point: (f32, f32)) -> bool {
    let side = |i: usize| {
        let (a, b) = (quad[i], quad[(i + 1) % 4]);
        (b.0 - a.0) * (point.1 - a.1) - (b.1 - a.1) * (point.0 - a.0)
    };
    let sides = [side(0), side(1), side(2), side(3)];
    sides.iter().all(|&s| s >= 0.0) || sides.iter().all(|&s| s <= 0.0)
}

/// Whether a quadrilateral could be a rectangle seen at a moderate angle: every interior angle
/// between 50 and 130 degrees, and opposite sides within a factor of two of each other. A hull
/// whose edges were only partly found fits a sliver or a near-triangle, which would rectify
/// into nonsense.
fn plausible(corners: &[(f32, f32); 4]) -> bool {
    let side = |i: usize| side(corners, i);
    let similar = |a: f32, b: f32| a.min(b) * 2.0 >= a.max(b);
    if !similar(side(0), side(2)) || !similar(side(1), side(3)) {
        return false;
    }
    (0..4).all(|i| {
        let (prev, here, next) = (corners[(i + 3) % 4], corners[i], corners[(i + 1) % 4]);
        let (a, b) = (
            (prev.0 - here.0, prev.1 - here.1),
            (next.0 - here.0, next.1 - here.1),
        );
        let norms = a.0.hypot(a.1) * b.0.hypot(b.1);
        if norms == 0.0 {
            return false;
        }
        let angle = ((a.0 * b.0 + a.1 * b.1) / norms)
            .clamp(-1.0, 1.0)
            .acos()
            .to_degrees();
        (50.0..=130.0).contains(&angle)
    })
}

/// The corners of a convex quadrilateral, given in order around it, as top-left, top-right,
/// bottom-right, bottom-left: turned clockwise (as seen, y down) and started at the corner
/// nearest the frame's origin. Keeping the hull's order means no corner is taken twice,
/// however the document is turned.
fn order(mut corners: [(f32, f32); 4]) -> [(f32, f32); 4] {
    let signed_area: f32 = (0..4)
        .map(|i| {
            let (a, b) = (corners[i], corners[(i + 1) % 4]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    if signed_area < 0.0 {
        corners.reverse();
    }
    let first = (0..4)
        .min_by(|&a, &b| {
            let key = |i: usize| corners[i].0 + corners[i].1;
            key(a).total_cmp(&key(b))
        })
        .expect("four corners");
    corners.rotate_left(first);
    corners
}

/// How many times a small document is enlarged at most to reach the minimum size: a thumbnail
/// enlarged to a page's size holds no more detail, and costs every agent after it as much as a
/// page.
const MAX_ENLARGEMENT: u32 = 4;

/// The quadrilateral cut out and warped to a rectangle of its own proportions, landscape,
/// with its longer side between `min_width` and `max_width` pixels (or at most
/// `MAX_ENLARGEMENT` times its own).
pub fn rectify(image: &RgbImage, quad: &Quad, min_width: u32, max_width: u32) -> RgbImage {
    let dist = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let [tl, tr, br, bl] = quad.0;
    let top = dist(tl, tr).max(dist(bl, br));
    let side = dist(tl, bl).max(dist(tr, br));
    // A document photographed upright is turned a quarter, so its text runs left to right.
    let (corners, long, short) = if side > top * 1.1 {
        ([bl, tl, tr, br], side, top)
    } else {
        ([tl, tr, br, bl], top, side)
    };
    let long_px = long.round() as u32;
    let width = long_px.clamp(min_width.min(MAX_ENLARGEMENT * long_px).max(1), max_width);
    let height = ((width as f32 * short / long.max(1.0)).round() as u32).max(1);
    warp_to(image, corners, (width, height))
}

/// The quadrilateral `corners` (top left, top right, bottom right, bottom left) of `image`
/// drawn as an upright `size` rectangle; white beyond the image's edges.
pub fn warp_to(
    image: &RgbImage,
    corners: [(f32, f32); 4],
    (width, height): (u32, u32),
) -> RgbImage {
    match Projection::from_control_points(corners, upright((width, height))) {
        Some(projection) => warp_bilinear(image, projection, (width, height)),
        None => resample::resized(image, width, height),
    }
}

/// The corners of an upright `size` rectangle, in `warp_to`'s order.
fn upright((width, height): (u32, u32)) -> [(f32, f32); 4] {
    let (w, h) = (width as f32, height as f32);
    [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
}

/// White, beyond the image's edges.
const OUTSIDE: [u8; 3] = [255, 255, 255];

/// `image` through `projection`, bilinearly, as a `size` image; white beyond the image's edges.
///
/// The same pixels as imageproc's `warp_into` with `Interpolation::Bilinear` and a white
/// `Border::Constant` (a unit test holds them equal, byte for byte), for 18 % fewer
/// instructions (README, Real agents): that one reads every pixel through a bounds-checked
/// accessor and blends through closures per channel, and rectifying a photographed page is
/// about a twentieth of a real session's CPU.
fn warp_bilinear(
    image: &RgbImage,
    projection: Projection,
    (width, height): (u32, u32),
) -> RgbImage {
    let inverse = projection.invert();
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let src = image.as_raw();
    let pixel = |x: i64, y: i64| -> [u8; 3] {
        if x < 0 || x >= w || y < 0 || y >= h {
            return OUTSIDE;
        }
        let i = 3 * (y * w + x) as usize;
        [src[i], src[i + 1], src[i + 2]]
    };
    // As imageproc's clamp to u8: truncated, not rounded.
    let blend = |a: u8, b: u8, weight: f32| -> u8 {
        let v = (1f32 - weight) * f32::from(a) + weight * f32::from(b);
        if v < 255.0 {
            if v > 0.0 { v as u8 } else { 0 }
        } else {
            255
        }
    };
    let mut out = RgbImage::new(width, height);
    for (y, row) in out
        .as_mut()
        .chunks_exact_mut(3 * width as usize)
        .enumerate()
    {
        for (x, rgb) in row.chunks_exact_mut(3).enumerate() {
            let (px, py) = inverse * (x as f32, y as f32);
            let (left, top) = (px.floor() as i64, py.floor() as i64);
            let (right_weight, bottom_weight) = (px - left as f32, py - top as f32);
            let (tl, tr) = (pixel(left, top), pixel(left + 1, top));
            let (bl, br) = (pixel(left, top + 1), pixel(left + 1, top + 1));
            for c in 0..3 {
                let upper = blend(tl[c], tr[c], right_weight);
                let lower = blend(bl[c], br[c], right_weight);
                rgb[c] = blend(upper, lower, bottom_weight);
            }
        }
    }
    out
}

/// The whole frame, its longer side scaled into `min_side..=max_side` (enlarged at most
/// `MAX_ENLARGEMENT` times) and otherwise as taken:
/// used when no outline is found (a scan, or a photo cropped to the document). Unlike
/// `rectify` it never turns the image: an upright photo in portrait format holds upright text.
pub fn whole_frame(image: &RgbImage, min_side: u32, max_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let long = w.max(h);
    let target = long.clamp(min_side.min(MAX_ENLARGEMENT * long), max_side);
    if target == long {
        return image.clone();
    }
    let scale = target as f32 / long as f32;
    resample::resized(
        image,
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_document_is_enlarged_four_times_at_most() {
        let tiny = RgbImage::new(8, 6);
        assert_eq!(whole_frame(&tiny, 1000, 1600).dimensions(), (32, 24));
        let page = RgbImage::new(600, 420);
        assert_eq!(whole_frame(&page, 1000, 1600).dimensions(), (1000, 700));
        let big = RgbImage::new(3000, 2000);
        assert_eq!(whole_frame(&big, 1000, 1600).dimensions(), (1600, 1067));

        let quad = Quad([(10.0, 10.0), (50.0, 10.0), (50.0, 38.0), (10.0, 38.0)]);
        assert_eq!(rectify(&page, &quad, 1000, 1600).dimensions(), (160, 112));
    }

    #[test]
    fn corners_are_ordered_clockwise_from_the_top_left_however_the_document_is_turned() {
        // Turned about 40 degrees, with some perspective, listed anticlockwise.
        let turned = [(300.0, 40.0), (80.0, 230.0), (270.0, 470.0), (520.0, 250.0)];

        let [tl, tr, br, bl] = order(turned);

        // Each corner once, clockwise as seen, from the one nearest the frame's origin.
        assert_eq!(tl, (80.0, 230.0));
        assert_eq!(tr, (300.0, 40.0));
        assert_eq!(br, (520.0, 250.0));
        assert_eq!(bl, (270.0, 470.0));
    }

    #[test]
    fn the_warp_gives_imageproc_s_bilinear_pixels_exactly() {
        use image::Rgb;
        use imageproc::geometric_transformations::{Border, Interpolation, warp_into};

        // Every value in every channel, in no smooth order, so a rounding apart shows.
        let image = RgbImage::from_fn(97, 61, |x, y| {
            let v = x * 7919 + y * 104_729;
            Rgb([
                (v % 251) as u8,
                (v / 3 % 256) as u8,
                ((x ^ y) * 37 % 256) as u8,
            ])
        });
        type Case = ([(f32, f32); 4], (u32, u32));
        let cases: [Case; 4] = [
            // A page photographed askew, in perspective, enlarged.
            (
                [(12.5, 8.0), (90.2, 3.1), (80.0, 58.7), (4.0, 50.3)],
                (160, 112),
            ),
            // Corners beyond the image: the white border, and the edges' half pixels.
            (
                [(-10.0, -6.0), (110.0, 2.0), (99.0, 70.0), (-3.0, 64.0)],
                (120, 75),
            ),
            // An upright rectangle (a translation and scale: imageproc's affine path).
            (
                [(10.0, 10.0), (50.0, 10.0), (50.0, 38.0), (10.0, 38.0)],
                (33, 23),
            ),
            // The whole image, as it is (a translation).
            (
                [(0.0, 0.0), (97.0, 0.0), (97.0, 61.0), (0.0, 61.0)],
                (97, 61),
            ),
        ];
        for (corners, (width, height)) in cases {
            let projection =
                Projection::from_control_points(corners, upright((width, height))).unwrap();
            let mut expected = RgbImage::new(width, height);
            warp_into(
                &image,
                projection,
                Interpolation::Bilinear,
                Border::Constant(Rgb(OUTSIDE)),
                &mut expected,
            );

            let warped = warp_to(&image, corners, (width, height));

            assert!(warped == expected, "pixels differ for corners {corners:?}");
        }
    }
}
