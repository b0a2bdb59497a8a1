//! Image quality measures, each on a normalised size so thresholds do not depend on how many
//! megapixels the camera had.

use image::{GrayImage, Luma, RgbImage};
use imageproc::filter::laplacian_filter;
use imageproc::region_labelling::{Connectivity, connected_components};
use serde::Serialize;

use super::resample;

/// Width images are scaled to before sharpness and edge measures.
pub const MEASURE_WIDTH: u32 = 800;

/// `image` scaled to [`MEASURE_WIDTH`] wide (never up): what every measure here is taken on.
pub fn normalised(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    if w <= MEASURE_WIDTH {
        return image.clone();
    }
    let height = ((h as f32 * MEASURE_WIDTH as f32 / w as f32).round() as u32).max(1);
    resample::resized(image, MEASURE_WIDTH, height)
}

/// Variance of the Laplacian: high for crisp edges, low for blur.
pub fn sharpness(gray: &GrayImage) -> f64 {
    let laplacian = laplacian_filter(gray);
    let n = laplacian.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (sum, squares) = laplacian.pixels().fold((0.0, 0.0), |(s, q), p| {
        let v = f64::from(p[0]);
        (s + v, q + v * v)
    });
    let mean = sum / n;
    squares / n - mean * mean
}

/// Fraction of pixels on a strong edge: printed text gives many, a blank surface almost none.
pub fn edge_density(gray: &GrayImage) -> f64 {
    let laplacian = laplacian_filter(gray);
    let n = laplacian.len().max(1) as f64;
    laplacian
        .pixels()
        .filter(|p| p[0].unsigned_abs() > 40)
        .count() as f64
        / n
}

/// How light the image is.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Exposure {
    /// Mean luminance, 0-255.
    pub mean: f64,
    /// Fraction of pixels darker than 40.
    pub dark_fraction: f64,
    /// Fraction of pixels at 250 or brighter.
    pub blown_fraction: f64,
}

pub fn exposure(gray: &GrayImage) -> Exposure {
    let n = gray.len().max(1) as f64;
    let (mut sum, mut dark, mut blown) = (0u64, 0u64, 0u64);
    for p in gray.pixels() {
        sum += u64::from(p[0]);
        dark += u64::from(p[0] < 40);
        blown += u64::from(p[0] >= 250);
    }
    Exposure {
        mean: sum as f64 / n,
        dark_fraction: dark as f64 / n,
        blown_fraction: blown as f64 / n,
    }
}

/// The lowest level at or below which `share` of a histogram's counts fall (0 for an empty
/// one).
pub fn quantile(histogram: &[u32; 256], share: f64) -> u8 {
    let total: u64 = histogram.iter().map(|&count| u64::from(count)).sum();
    let mut seen = 0u64;
    histogram
        .iter()
        .position(|&count| {
            seen += u64::from(count);
            seen as f64 >= share * total as f64
        })
        .map_or(u8::MAX, |level| level as u8)
}

/// Fraction of the document that is specular glare: patches of near-white, colourless pixels
/// well above the paper's own brightness (its median). A patch counts when it is at least
/// 0.2 % of the document and clear of its border, so a white document, white print and the
/// white margin of a scan are not glare.
pub fn glare(document: &RgbImage) -> f64 {
    let n = document.len() / 3;
    if n == 0 {
        return 0.0;
    }
    let mut histogram = [0u32; 256];
    let luma = |p: &image::Rgb<u8>| {
        ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000) as u8
    };
    for p in document.pixels() {
        histogram[usize::from(luma(p))] += 1;
    }
    let paper = quantile(&histogram, 0.5);
    let floor = paper.saturating_add(20).max(235);
    let (w, h) = document.dimensions();
    let mask = GrayImage::from_fn(w, h, |x, y| {
        let p = document.get_pixel(x, y);
        let (lo, hi) = (p.0.iter().min().copied(), p.0.iter().max().copied());
        let bright = luma(p) >= floor && hi.zip(lo).is_some_and(|(hi, lo)| hi - lo < 25);
        Luma([if bright { 255 } else { 0 }])
    });
    let labels = connected_components(&mask, Connectivity::Eight, Luma([0]));
    let mut patches: Vec<(u32, u32, u32, u32, u64)> = Vec::new();
    for (x, y, label) in labels.enumerate_pixels() {
        let label = label[0] as usize;
        if label == 0 {
            continue;
        }
        if patches.len() < label {
            patches.resize(label, (u32::MAX, u32::MAX, 0, 0, 0));
        }
        let p = &mut patches[label - 1];
        *p = (p.0.min(x), p.1.min(y), p.2.max(x), p.3.max(y), p.4 + 1);
    }
    let (mx, my) = (w / 50, h / 50);
    let min_patch = (n as u64) / 500;
    let glaring: u64 = patches
        .iter()
        .filter(|p| {
            p.4 >= min_patch && p.0 > mx && p.1 > my && p.2 + mx < w - 1 && p.3 + my < h - 1
        })
        .map(|p| p.4)
        .sum();
    glaring as f64 / n as f64
}
