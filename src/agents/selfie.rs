//! The selfie frames as liveness and face_match see them: decoded, scaled for face detection,
//! each frame's faces, and the frame best suited to compare with the document.
//!
//! liveness analyses the frames once and hands the result on, so face_match does not detect
//! the same faces again; face_match analyses them itself when it runs without liveness.

use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{AgentError, Report};
use crate::domain::{ImageData, ImageLimits};
use crate::vision::biometrics::{Biometrics, FaceBox, Prepared};
use crate::vision::{decode, quality};

/// On the wire, liveness's analysis is its choice: the frame face_match compares (its index,
/// scale, faces and sharpness) and how many frames there were. The receiver decodes and scales
/// that one frame from the session's own inputs, by the same code, so it compares the pixels a
/// local face_match would; the faces are sent as raw `f32`s, which JSON carries exactly.
impl super::wire::Portable for Selfie {
    const TYPE: &'static str = "selfie";
    const CHEAP: bool = true;

    fn encode(&self) -> Result<serde_json::Value, String> {
        let best = self.best().map(|(index, frame)| {
            serde_json::json!({
                "index": index,
                "scale": frame.scale,
                "faces": frame.faces.iter().map(|f| [f.x, f.y, f.width, f.height]).collect::<Vec<_>>(),
                "sharpness": frame.sharpness,
            })
        });
        Ok(serde_json::json!({
            "frames": self.frames.len(),
            "best": best,
            "undecodable": self.undecodable,
        }))
    }

    fn decode(
        wire: &serde_json::Value,
        session: &crate::domain::NewSession,
    ) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Fields {
            frames: usize,
            best: Option<Best>,
            #[serde(default)]
            undecodable: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct Best {
            index: usize,
            scale: f32,
            faces: Vec<[f32; 4]>,
            sharpness: f64,
        }
        let wrong = || "a selfie output of the wrong shape".to_owned();
        let fields = <Fields as serde::Deserialize>::deserialize(wire).map_err(|_| wrong())?;
        let sent = session.selfie.frames();
        if fields.frames != sent.len() {
            return Err("a selfie output for another number of frames".into());
        }
        let mut frames: Vec<Option<Frame>> = (0..sent.len()).map(|_| None).collect();
        if let Some(best) = fields.best {
            let data = sent.get(best.index).ok_or_else(wrong)?;
            if best.faces.is_empty() || !(best.scale > 0.0 && best.scale <= MAX_ENLARGE) {
                return Err(wrong());
            }
            let (w, h) = data.dimensions();
            let limits = ImageLimits {
                max_bytes: data.bytes().len(),
                max_pixels: u64::from(w) * u64::from(h),
                max_side: w.max(h),
            };
            let image = decode(data.bytes(), &limits)
                .map_err(|e| format!("the chosen frame cannot be decoded ({})", e.code()))?;
            frames[best.index] = Some(Frame {
                image: Arc::new(scaled(&image, best.scale)),
                scale: best.scale,
                faces: best
                    .faces
                    .iter()
                    .map(|&[x, y, width, height]| FaceBox {
                        x,
                        y,
                        width,
                        height,
                    })
                    .collect(),
                landmarks: None,
                sharpness: best.sharpness,
            });
        }
        Ok(Self {
            frames,
            undecodable: fields.undecodable,
        })
    }
}

/// Frames are scaled so that their longer side is this long before faces are searched for:
/// detection dominates the cost and grows with the pixels, while a selfie's face stays well
/// above the detector's 80 px minimum. Smaller frames are enlarged, up to `MAX_ENLARGE` times.
pub const DETECTION_SIDE: u32 = 640;
const MAX_ENLARGE: f32 = 2.5;

/// One frame, analysed. Cheap to clone: the image is shared.
#[derive(Clone)]
pub struct Frame {
    /// The frame, scaled for detection.
    pub image: Arc<RgbImage>,
    /// `image`'s size over the frame's own.
    pub scale: f32,
    /// Faces on `image`, largest first. (Searched for on `image` itself, not first on a smaller
    /// copy as the document's portrait is: that moves the boxes enough to change the poses the
    /// landmarks give, and the challenge's verdicts on real clips with them.)
    pub faces: Vec<FaceBox>,
    /// The 68 landmarks of the largest face, when asked for.
    pub landmarks: Option<Vec<(f32, f32)>>,
    /// Variance of the Laplacian over the largest face, at a fixed size.
    pub sharpness: f64,
}

/// What a reviewer reads of each frame.
#[derive(Debug, Serialize)]
pub struct FrameSummary {
    pub index: usize,
    pub faces: usize,
    /// The largest face's box in the frame's own pixels.
    pub face: Option<FaceBox>,
    pub sharpness: f64,
}

/// Every frame, in the order sent; `None` for one that could not be decoded.
pub struct Selfie {
    pub frames: Vec<Option<Frame>>,
    /// Why frames could not be decoded (reason codes, one per such frame).
    pub undecodable: Vec<String>,
}

impl Selfie {
    /// Decodes every frame and finds its faces, and with `landmarks` the largest face's 68
    /// landmarks (`engine` must then hold the 68-point model). Stops between frames once
    /// `cancel` is cancelled.
    pub fn analyse(
        frames: &[ImageData],
        limits: &ImageLimits,
        engine: &Biometrics,
        landmarks: bool,
        cancel: &CancellationToken,
    ) -> Result<Self, AgentError> {
        let mut analysed = Vec::with_capacity(frames.len());
        let mut undecodable = Vec::new();
        for frame in frames {
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            match decode(frame.bytes(), limits) {
                Ok(image) => analysed.push(Some(analyse_frame(&image, engine, landmarks))),
                Err(e) => {
                    undecodable.push(e.code().to_owned());
                    analysed.push(None);
                }
            }
        }
        Ok(Self {
            frames: analysed,
            undecodable,
        })
    }

    /// The analysis a liveness report handed on, if any.
    pub fn of(report: &Report) -> Option<&Selfie> {
        report.output.as_ref()?.downcast_ref()
    }

    /// The frame to compare with the document: of the frames with a face, the one whose
    /// largest face is sharpest.
    pub fn best(&self) -> Option<(usize, &Frame)> {
        self.frames
            .iter()
            .enumerate()
            .filter_map(|(i, frame)| Some((i, frame.as_ref()?)))
            .filter(|(_, frame)| !frame.faces.is_empty())
            .max_by(|a, b| a.1.sharpness.total_cmp(&b.1.sharpness))
    }

    pub fn summary(&self) -> Vec<FrameSummary> {
        self.frames
            .iter()
            .enumerate()
            .filter_map(|(index, frame)| {
                let frame = frame.as_ref()?;
                Some(FrameSummary {
                    index,
                    faces: frame.faces.len(),
                    face: frame.faces.first().map(|f| f.scaled(1.0 / frame.scale)),
                    sharpness: (frame.sharpness * 10.0).round() / 10.0,
                })
            })
            .collect()
    }
}

fn analyse_frame(image: &RgbImage, engine: &Biometrics, landmarks: bool) -> Frame {
    let (w, h) = image.dimensions();
    let scale = (DETECTION_SIDE as f32 / w.max(h) as f32).min(MAX_ENLARGE);
    let scaled = scaled(image, scale);
    let prepared = Prepared::new(&scaled);
    let faces = engine.detect(&prepared);
    let largest = faces.first().copied();
    Frame {
        landmarks: largest
            .filter(|_| landmarks)
            .map(|face| engine.landmarks(&prepared, face)),
        sharpness: largest.map_or(0.0, |face| face_sharpness(&scaled, face)),
        image: Arc::new(scaled),
        scale,
        faces,
    }
}

/// `image` scaled by `k` (a copy even at 1), with `image`'s own resampler rather than
/// `vision::resample`: the landmarks, and the challenge's verdicts on real clips with them,
/// move with the last bit of a resampled pixel. With the other resampler two windows of
/// `kyc-eval challenge`'s `liveportrait_d12` lost their second turn (README, Performance).
pub fn scaled(image: &RgbImage, k: f32) -> RgbImage {
    if (k - 1.0).abs() < 1e-3 {
        return image.clone();
    }
    let (w, h) = image.dimensions();
    let filter = if k < 1.0 {
        image::imageops::FilterType::Triangle
    } else {
        image::imageops::FilterType::CatmullRom
    };
    image::imageops::resize(
        image,
        ((w as f32 * k).round() as u32).max(1),
        ((h as f32 * k).round() as u32).max(1),
        filter,
    )
}

/// Sharpness of the face, measured on its box scaled to 150 px so frames compare fairly.
fn face_sharpness(image: &RgbImage, face: FaceBox) -> f64 {
    let crop = crop(image, face);
    let gray = image::imageops::grayscale(&crop);
    let gray = image::imageops::resize(&gray, 150, 150, image::imageops::FilterType::Triangle);
    quality::sharpness(&gray)
}

/// The part of `image` inside `face`, clipped to the image (at least one pixel).
fn crop(image: &RgbImage, face: FaceBox) -> RgbImage {
    let (w, h) = image.dimensions();
    let x = (face.x.max(0.0) as u32).min(w - 1);
    let y = (face.y.max(0.0) as u32).min(h - 1);
    let cw = (face.width.max(1.0) as u32).clamp(1, w - x);
    let ch = (face.height.max(1.0) as u32).clamp(1, h - y);
    image::imageops::crop_imm(image, x, y, cw, ch).to_image()
}
