//! Text detection: the DB (differentiable binarisation) model gives a text probability per
//! pixel; boxes are the connected regions above a threshold, grown back by the unclip ratio
//! the model was trained to shrink them by.

use image::{GrayImage, Luma, RgbImage};
use imageproc::region_labelling::{Connectivity, connected_components};
use ndarray::Array4;
use ort::session::Session;
use serde::Serialize;

use super::{InferenceError, infer, write_input};

/// Detection thresholds; the defaults are PP-OCR's own.
#[derive(Debug, Clone, Serialize)]
pub struct DetectSettings {
    /// The image's longer side is scaled to this before detection.
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

/// An axis-aligned text box in the input image's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
}

impl TextBox {
    pub fn centre_y(&self) -> f32 {
        self.y + self.height / 2.0
    }
}

pub(super) fn detect(
    session: &mut Session,
    image: &RgbImage,
    settings: &DetectSettings,
) -> Result<Vec<TextBox>, InferenceError> {
    let (width, height) = image.dimensions();
    let scale = settings.side as f32 / width.max(height) as f32;
    let to_32 = |side: u32| ((side as f32 * scale / 32.0).round() as u32).max(1) * 32;
    let (w, h) = (to_32(width), to_32(height));
    let resized = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);

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

    let (sx, sy) = (width as f32 / w as f32, height as f32 / h as f32);
    let mut boxes: Vec<TextBox> = regions
        .iter()
        .filter(|r| r.pixels > 0 && r.width() >= 3 && r.height() >= 3)
        .filter_map(|r| {
            let score = r.probability / r.pixels as f32;
            if score < settings.box_threshold {
                return None;
            }
            let (bw, bh) = (r.width() as f32, r.height() as f32);
            let grow = bw * bh * settings.unclip_ratio / (2.0 * (bw + bh));
            let x0 = (r.x0 as f32 - grow).max(0.0);
            let y0 = (r.y0 as f32 - grow).max(0.0);
            let x1 = (r.x1 as f32 + 1.0 + grow).min(w as f32);
            let y1 = (r.y1 as f32 + 1.0 + grow).min(h as f32);
            Some(TextBox {
                x: x0 * sx,
                y: y0 * sy,
                width: (x1 - x0) * sx,
                height: (y1 - y0) * sy,
                score,
            })
        })
        .collect();
    boxes.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
    Ok(boxes)
}

/// A connected region's bounding box and size.
#[derive(Clone, Copy)]
struct Region {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    pixels: u32,
    probability: f32,
}

impl Region {
    const EMPTY: Self = Self {
        x0: u32::MAX,
        y0: u32::MAX,
        x1: 0,
        y1: 0,
        pixels: 0,
        probability: 0.0,
    };

    fn add(&mut self, x: u32, y: u32, probability: f32) {
        self.probability += probability;
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x);
        self.y1 = self.y1.max(y);
        self.pixels += 1;
    }

    fn width(&self) -> u32 {
        self.x1 + 1 - self.x0
    }

    fn height(&self) -> u32 {
        self.y1 + 1 - self.y0
    }
}
