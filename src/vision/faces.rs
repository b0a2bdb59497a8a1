//! Face detection on documents (and frames) with rustface, the pure-Rust SeetaFace cascade.

use std::path::Path;

use image::GrayImage;
use serde::Serialize;

use super::resample;
use crate::models::{ModelError, ModelFile, ModelId};

pub const FACE_MODEL: &str = "seeta_fd_frontal_v1.0.bin";

/// Faces are searched for on the image scaled to this longer side (never up).
const SEARCH_SIDE: u32 = 640;

/// A face's box in the input image's pixels, with the cascade's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Face {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub score: f64,
}

/// The cascade model, loaded once; each search builds a detector from a copy, because a
/// detector is neither `Send` nor usable by two threads at once.
pub struct FaceDetector {
    model: rustface::Model,
    pub id: ModelId,
}

impl FaceDetector {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let file = ModelFile::read(dir, FACE_MODEL)?;
        let model =
            rustface::read_model(std::io::Cursor::new(&file.bytes)).map_err(|e| file.invalid(e))?;
        Ok(Self { model, id: file.id })
    }

    /// Faces at least `min_fraction` of the image's shorter side, largest first.
    pub fn detect(&self, gray: &GrayImage, min_fraction: f32) -> Vec<Face> {
        let (w, h) = gray.dimensions();
        let scale = (SEARCH_SIDE as f32 / w.max(h) as f32).min(1.0);
        let small;
        let searched = if scale < 1.0 {
            small = resample::resized(
                gray,
                ((w as f32 * scale) as u32).max(1),
                ((h as f32 * scale) as u32).max(1),
            );
            &small
        } else {
            gray
        };
        let (sw, sh) = searched.dimensions();
        let min_face = ((sw.min(sh) as f32 * min_fraction) as u32).max(20);
        if sw < min_face || sh < min_face {
            return Vec::new();
        }
        let mut detector = rustface::create_detector_with_model(self.model.clone());
        detector.set_min_face_size(min_face);
        detector.set_score_thresh(2.0);
        detector.set_pyramid_scale_factor(0.8);
        detector.set_slide_window_step(4, 4);
        let data = rustface::ImageData::new(searched.as_raw(), sw, sh);
        let mut faces: Vec<Face> = detector
            .detect(&data)
            .into_iter()
            .map(|face| {
                let b = face.bbox();
                let x = (b.x().max(0) as f32 / scale) as u32;
                let y = (b.y().max(0) as f32 / scale) as u32;
                Face {
                    x: x.min(w - 1),
                    y: y.min(h - 1),
                    width: ((b.width() as f32 / scale) as u32).min(w - x.min(w - 1)),
                    height: ((b.height() as f32 / scale) as u32).min(h - y.min(h - 1)),
                    // A tenth is all a reviewer reads of the cascade's score.
                    score: (face.score() * 10.0).round() / 10.0,
                }
            })
            .collect();
        faces.sort_by_key(|face| std::cmp::Reverse(face.width * face.height));
        faces
    }
}
