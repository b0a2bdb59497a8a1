//! Lines of dense print found without the detector: a machine-readable zone's lines on a page
//! that is level to within a few degrees (a rectified document).
//!
//! A zone is printed in a monospaced font with no spaces: every character cell, the fillers
//! `<` included, holds ink across the middle of the line, so along a zone line the print is
//! dense from one end to the other, over most of the page's width. The page is cut into
//! vertical strips; in each, the rows where many pixels change sharply from their left to
//! their right neighbour are print, and runs of such rows are the strip's pieces of text. A
//! line is a chain of pieces, one per strip, at nearly the same height and thickness; only
//! chains across most of the page are kept. Their direction is fitted through the pieces'
//! centres, so a page left a few degrees turned still gives its lines whole.
//!
//! It costs a few milliseconds where the detector costs a few hundred; what it finds is read
//! and kept only where the zone's check digits verify, and the detector runs otherwise.

use image::GrayImage;

use super::detect::{LEVEL, TextBox};
use crate::vision::quality::quantile;

/// Vertical strips the page is cut into.
const STRIPS: usize = 24;
/// A line spans at least this share of the strips. A zone's lines span 80 % of its page or
/// more; where no outline was found, the page may be a little over half the photo's width.
const MIN_SPAN: f32 = 0.45;
/// A row of a strip is print where at least this share of its pixels are edges, and at least
/// this share of the densest row's in the strip (a patterned background's fine lines give
/// rows of a tenth or so, a zone's about half).
const MIN_DENSITY: f32 = 0.1;
const MIN_OF_DENSEST: f32 = 0.3;

/// A run of print rows in one strip: its top and bottom row (inclusive).
#[derive(Debug, Clone, Copy)]
struct Piece {
    top: u32,
    bottom: u32,
}

impl Piece {
    fn centre(&self) -> f32 {
        (self.top + self.bottom) as f32 / 2.0 + 0.5
    }

    fn thickness(&self) -> f32 {
        (self.bottom + 1 - self.top) as f32
    }
}

/// The lines of dense print across most of `gray`'s width, top to bottom: each as the
/// rectangle around its print, grown by a fifth of its height on each side and by one
/// height at each end (room the recogniser was trained with).
pub fn dense_lines(gray: &GrayImage) -> Vec<TextBox> {
    let (width, height) = gray.dimensions();
    if width < 4 * STRIPS as u32 || height < 8 {
        return Vec::new();
    }
    let edges = Edges::of(gray);
    let strip_width = width / STRIPS as u32;
    // A zone's characters are a 60th (44 to a line) to a 25th of its page's width high. Runs
    // from a 120th to a 15th of the image's width are kept: the page may fill only half the
    // image, and a few degrees' turn thickens a line's piece in a strip.
    let (min_thickness, max_thickness) = ((width as f32 / 120.0).max(4.0), width as f32 / 15.0);
    // A zone's lines are more than a character's height apart: a gap of a 300th of the width
    // is within a line.
    let bridge = (width / 300).max(1) as usize;
    let pieces: Vec<Vec<Piece>> = (0..STRIPS as u32)
        .map(|s| {
            let x0 = s * strip_width;
            strip_pieces(&edges, x0, strip_width, bridge)
                .into_iter()
                .filter(|p| (min_thickness..=max_thickness).contains(&p.thickness()))
                .collect()
        })
        .collect();
    let mut lines = Vec::new();
    for chain in chains(&pieces) {
        if (chain.len() as f32) < MIN_SPAN * STRIPS as f32 {
            continue;
        }
        if let Some(line) = fit(&edges, &chain, strip_width) {
            lines.push(line);
        }
    }
    lines.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
    lines
}

/// Where the intensity changes sharply between a pixel's left and right neighbours: the
/// vertical strokes of print, row by row.
struct Edges {
    width: usize,
    on: Vec<bool>,
}

impl Edges {
    /// The threshold follows the image's contrast: half its strongest changes (their 98th
    /// percentile), since a zone's print is black and the pattern behind it pale; but never
    /// below 16 grey levels, nor above 40, where a sharp scan's strongest changes would leave
    /// only the middle of its strokes (their edges softened by compression).
    fn of(gray: &GrayImage) -> Self {
        let width = gray.width() as usize;
        let mut changes = vec![0u8; gray.as_raw().len()];
        let mut histogram = [0u32; 256];
        for (row, pixels) in changes
            .chunks_exact_mut(width)
            .zip(gray.as_raw().chunks_exact(width))
        {
            for x in 1..width - 1 {
                row[x] = pixels[x + 1].abs_diff(pixels[x - 1]);
                histogram[usize::from(row[x])] += 1;
            }
        }
        let threshold = (quantile(&histogram, 0.98) / 2).clamp(16, 40);
        Self {
            width,
            on: changes.into_iter().map(|g| g >= threshold).collect(),
        }
    }

    fn rows(&self) -> impl Iterator<Item = &[bool]> {
        self.on.chunks_exact(self.width)
    }

    fn height(&self) -> usize {
        self.on.len() / self.width
    }

    fn at(&self, x: u32, y: u32) -> bool {
        self.on[y as usize * self.width + x as usize]
    }
}

/// The runs of print rows in the strip from `x0`, `width` wide. A run goes on across up to
/// `bridge` rows below the threshold (where the strokes in the strip are thin or pale).
fn strip_pieces(edges: &Edges, x0: u32, width: u32, bridge: usize) -> Vec<Piece> {
    let density: Vec<f32> = edges
        .rows()
        .map(|row| {
            row[x0 as usize..(x0 + width) as usize]
                .iter()
                .filter(|&&e| e)
                .count() as f32
                / width as f32
        })
        .collect();
    let densest = density.iter().copied().fold(0.0, f32::max);
    let floor = MIN_DENSITY.max(MIN_OF_DENSEST * densest);
    let print: Vec<bool> = density.iter().map(|&d| d >= floor).collect();
    let mut pieces = Vec::new();
    let mut y = 0;
    while y < print.len() {
        if !print[y] {
            y += 1;
            continue;
        }
        let top = y;
        let mut bottom = y;
        let mut gap = 0;
        y += 1;
        while y < print.len() && gap <= bridge {
            if print[y] {
                bottom = y;
                gap = 0;
            } else {
                gap += 1;
            }
            y += 1;
        }
        pieces.push(Piece {
            top: top as u32,
            bottom: bottom as u32,
        });
        y = bottom + 1;
    }
    pieces
}

/// Chains of pieces in consecutive strips (one strip may be skipped), each piece's centre
/// within half a thickness of the previous one's and its thickness within a factor of 1.8.
/// Each chain holds the index of its strip with each piece.
fn chains(pieces: &[Vec<Piece>]) -> Vec<Vec<(usize, Piece)>> {
    let mut open: Vec<Vec<(usize, Piece)>> = Vec::new();
    let mut done = Vec::new();
    for (strip, here) in pieces.iter().enumerate() {
        let mut taken = vec![false; here.len()];
        let mut still = Vec::new();
        for mut chain in open.drain(..) {
            let (at, last) = *chain.last().expect("a chain has a piece");
            let next = here.iter().enumerate().find(|(i, p)| {
                !taken[*i]
                    && (p.centre() - last.centre()).abs()
                        <= 0.5 * p.thickness().min(last.thickness())
                    && p.thickness().max(last.thickness())
                        <= 1.8 * p.thickness().min(last.thickness())
            });
            match next {
                Some((i, piece)) => {
                    taken[i] = true;
                    chain.push((strip, *piece));
                    still.push(chain);
                }
                // A chain waits one strip for its next piece.
                None if strip - at < 2 => still.push(chain),
                None => done.push(chain),
            }
        }
        for (i, piece) in here.iter().enumerate() {
            if !taken[i] {
                still.push(vec![(strip, *piece)]);
            }
        }
        open = still;
    }
    done.extend(open);
    done
}

/// The line through a chain's pieces: its direction fitted through their centres, its
/// thickness their thickest but one, and its ends where the print along it stops.
fn fit(edges: &Edges, chain: &[(usize, Piece)], strip_width: u32) -> Option<TextBox> {
    let points: Vec<(f32, f32)> = chain
        .iter()
        .map(|(strip, piece)| ((*strip as f32 + 0.5) * strip_width as f32, piece.centre()))
        .collect();
    let n = points.len() as f32;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x / n, sy + y / n));
    let (sxx, sxy) = points.iter().fold((0.0, 0.0), |(sxx, sxy), (x, y)| {
        (sxx + (x - mx) * (x - mx), sxy + (x - mx) * (y - my))
    });
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let mut thicknesses: Vec<f32> = chain.iter().map(|(_, p)| p.thickness()).collect();
    thicknesses.sort_by(f32::total_cmp);
    let thickness = thicknesses[thicknesses.len().saturating_sub(2)];
    // The ends: from the chain's first and last strips, outwards along the line while print
    // continues, a gap of up to one thickness allowed.
    let width = edges.width as u32;
    let height = edges.height() as u32;
    let print_at = |x: u32| {
        let centre = my + slope * (x as f32 - mx);
        let (top, bottom) = (
            (centre - thickness / 2.0).max(0.0) as u32,
            ((centre + thickness / 2.0) as u32).min(height - 1),
        );
        (top..=bottom).any(|y| edges.at(x, y))
    };
    let gap = thickness.ceil() as u32;
    let first = chain[0].0 as u32 * strip_width;
    let last = ((chain[chain.len() - 1].0 as u32 + 1) * strip_width).min(width) - 1;
    let outward = |from: u32, step: i64| {
        let mut end = from;
        let mut blank = 0;
        let mut x = i64::from(from);
        while (0..i64::from(width)).contains(&x) && blank <= gap {
            if print_at(x as u32) {
                end = x as u32;
                blank = 0;
            } else {
                blank += 1;
            }
            x += step;
        }
        end
    };
    // Inwards first: the chain's end strips may hold only a part of the line.
    let inward = |from: u32, step: i64| {
        let mut x = i64::from(from);
        while (i64::from(first)..=i64::from(last)).contains(&x) && !print_at(x as u32) {
            x += step;
        }
        x.clamp(i64::from(first), i64::from(last)) as u32
    };
    let x0 = outward(inward(first, 1), -1);
    let x1 = outward(inward(last, -1), 1);
    if x1 <= x0 {
        return None;
    }
    let angle = slope.atan();
    let centre_x = (x0 + x1 + 1) as f32 / 2.0;
    let centre = (centre_x, my + slope * (centre_x - mx));
    let length = (x1 + 1 - x0) as f32 / angle.cos() + 2.0 * thickness;
    let across = thickness * 1.4;
    let mut line = TextBox {
        x: 0.0,
        y: 0.0,
        width: 0.0,
        height: 0.0,
        score: 1.0,
        angle: if f64::from(angle.abs()) < LEVEL {
            0.0
        } else {
            angle
        },
        centre,
        length,
        thickness: across,
    };
    line.bound();
    Some(line.within(width as f32, height as f32))
}

#[cfg(test)]
mod tests {
    use image::Luma;
    use imageproc::geometric_transformations::{Border, Interpolation, rotate_about_center};

    use super::*;
    use crate::specimen::{self, Page};

    /// The drawn page in grey, turned `degrees` clockwise about its centre.
    fn page(spec: &Page, degrees: f32) -> GrayImage {
        let gray = image::imageops::grayscale(&specimen::page(spec));
        rotate_about_center(
            &gray,
            degrees.to_radians(),
            Interpolation::Bilinear,
            Border::Constant(Luma([230])),
        )
    }

    #[test]
    fn a_zone_gives_its_two_lines_across_the_page_and_nothing_else() {
        let gray = page(&Page::default(), 0.0);
        let (width, height) = gray.dimensions();

        let lines = dense_lines(&gray);

        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            assert_eq!(line.angle, 0.0);
            assert!(line.length > 0.9 * width as f32, "{line:?}");
            // The zone is drawn from 150 pixels above the page's foot.
            assert!(line.centre_y() > (height - 160) as f32, "{line:?}");
        }
        let pitch = lines[1].centre_y() - lines[0].centre_y();
        assert!((30.0..60.0).contains(&pitch), "{lines:?}");
    }

    #[test]
    fn a_page_left_turned_gives_its_lines_along_their_own_direction() {
        for degrees in [-4.0f32, 2.5] {
            let lines = dense_lines(&page(&Page::default(), degrees));

            assert_eq!(lines.len(), 2, "{degrees}: {lines:?}");
            for line in &lines {
                assert!(
                    (line.angle.to_degrees() - degrees).abs() < 0.5,
                    "{degrees}: {line:?}"
                );
                assert!(line.length > 1000.0, "{degrees}: {line:?}");
            }
        }
    }

    #[test]
    fn a_page_without_a_zone_gives_no_line() {
        let spec = Page {
            zone: None,
            ..Page::default()
        };
        assert_eq!(dense_lines(&page(&spec, 0.0)), Vec::new());
    }

    #[test]
    fn blank_and_tiny_images_give_no_line() {
        assert!(dense_lines(&GrayImage::from_pixel(800, 500, Luma([200]))).is_empty());
        assert!(dense_lines(&GrayImage::new(8, 8)).is_empty());
        assert!(dense_lines(&GrayImage::new(0, 0)).is_empty());
    }
}
