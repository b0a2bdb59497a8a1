//! doc_capture: is the document photo usable, where is the document, where is its portrait.
//!
//! It decodes the front image (upright by EXIF), finds the document's outline and rectifies it,
//! measures resolution, sharpness, exposure and glare on the rectified document, and finds the
//! portrait. Its output, handed to ocr and face_match even when the check fails, is the
//! rectified document (and back) and the portrait crop.

use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::warm::{Loader, Loading, Warm};
use super::{
    AgentContext, AgentError, AgentKind, CheckSettings, CpuAgent, Output, Report, Resources,
    rounded,
};
use crate::domain::{ImageData, ImageLimits};
use crate::models::ModelError;
use crate::vision::faces::{Face, FaceDetector};
use crate::vision::{decode, outline, quality};

/// Thresholds, from the agent's `settings` table; every check records the ones it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocCaptureSettings {
    /// The document's longer side, in the photo's pixels, below which it is `low_resolution`.
    pub min_document_side: u32,
    /// Variance of the Laplacian (at 800 px wide) below which it is `too_blurry`.
    pub min_sharpness: f64,
    /// Mean luminance (0-255) below which it is `too_dark`.
    pub min_brightness: f64,
    /// Share of very dark pixels above which it is `too_dark`.
    pub max_dark_fraction: f64,
    /// Share of the document covered by glare above which it is `glare`.
    pub max_glare_fraction: f64,
    /// Smallest share of the frame a document outline may cover. Below a fifth, only an outline
    /// that stands out from a plainer surround counts (`outline::find`).
    pub min_outline_area: f64,
    /// With no outline, the share of edge pixels below which the frame holds no document.
    pub min_edge_density: f64,
    /// Smallest portrait, as a share of the document's shorter side.
    pub min_portrait_fraction: f64,
}

impl Default for DocCaptureSettings {
    fn default() -> Self {
        Self {
            min_document_side: 500,
            min_sharpness: 100.0,
            min_brightness: 70.0,
            max_dark_fraction: 0.5,
            max_glare_fraction: 0.04,
            // A document a quarter of a phone photo's width, on a table (`kyc-eval ocr` on the
            // specimens placed small in 4032x3024 photos, README Accuracy).
            min_outline_area: 0.05,
            min_edge_density: 0.01,
            min_portrait_fraction: 0.12,
        }
    }
}

/// What doc_capture hands to the agents after it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The front, rectified to the document's own proportions, landscape.
    pub front: Arc<RgbImage>,
    /// The front photo as taken (upright, never turned, scaled like the rectified document),
    /// when an outline was used: for an agent that finds nothing on the rectified document,
    /// since an outline can be wrong.
    pub photo: Option<Arc<RgbImage>>,
    /// The back, rectified the same way, when the request had one.
    pub back: Option<Arc<RgbImage>>,
    /// The portrait on the front, with a margin.
    pub portrait: Option<Arc<RgbImage>>,
}

impl Captured {
    /// What a doc_capture report handed on, if it handed anything on.
    pub fn of(report: &Report) -> Option<&Captured> {
        report.output.as_ref()?.downcast_ref()
    }

    /// What the agent `from` handed on in this session; without it an agent that reads the
    /// document cannot run.
    pub fn upstream(ctx: &AgentContext, from: &str) -> Result<Captured, AgentError> {
        ctx.upstream::<Captured>(from)
            .cloned()
            .ok_or_else(|| AgentError::Failed(format!("no document image from {from}")))
    }
}

impl super::wire::Portable for Captured {
    const TYPE: &'static str = "document";

    fn encode(&self) -> Result<serde_json::Value, String> {
        use super::wire::png_base64;
        let optional = |image: &Option<Arc<RgbImage>>| -> Result<serde_json::Value, String> {
            image.as_deref().map_or(Ok(serde_json::Value::Null), |i| {
                png_base64(i).map(Into::into)
            })
        };
        Ok(json!({
            "front": png_base64(&self.front)?,
            "photo": optional(&self.photo)?,
            "back": optional(&self.back)?,
            "portrait": optional(&self.portrait)?,
        }))
    }

    fn decode(wire: &serde_json::Value, _: &crate::domain::NewSession) -> Result<Self, String> {
        use super::wire::image_from_base64;
        /// Borrowed from the wire form: the images are megabytes of text.
        #[derive(Deserialize)]
        struct Fields<'a> {
            front: &'a str,
            photo: Option<&'a str>,
            back: Option<&'a str>,
            portrait: Option<&'a str>,
        }
        let fields = Fields::deserialize(wire)
            .map_err(|_| "a document output of the wrong shape".to_owned())?;
        let optional = |text: Option<&str>| text.map(image_from_base64).transpose();
        Ok(Self {
            front: image_from_base64(fields.front)?,
            photo: optional(fields.photo)?,
            back: optional(fields.back)?,
            portrait: optional(fields.portrait)?,
        })
    }
}

/// Rectified documents are scaled to a longer side in this range.
const RECTIFIED_MIN: u32 = 1000;
const RECTIFIED_MAX: u32 = 1600;

#[derive(Clone)]
pub struct DocCapture {
    settings: DocCaptureSettings,
    limits: ImageLimits,
    faces: Warm<FaceDetector>,
}

impl CheckSettings for DocCaptureSettings {}

impl AgentKind for DocCapture {
    const KIND: &'static str = "doc_capture";
    const REASONS: &'static [&'static str] = &[
        "document_not_found",
        "document_cropped",
        "low_resolution",
        "too_blurry",
        "too_dark",
        "glare",
        "no_portrait",
        "image_too_large",
        "corrupt_image",
    ];
    type Settings = DocCaptureSettings;

    /// The agent, and the loader of its face model (whose file must exist now).
    fn build(
        settings: DocCaptureSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        crate::models::locate(resources.models, crate::vision::faces::FACE_MODEL)?;
        let dir = resources.models.to_path_buf();
        let limits = resources.limits;
        let (faces, loader) = Warm::new(move || FaceDetector::load(&dir));
        Ok((
            Self {
                settings,
                limits,
                faces,
            },
            Some(loader),
        ))
    }
}

impl DocCapture {
    /// The whole analysis, synchronous: what `run` does on the blocking pool, and what the
    /// evaluation command calls directly. Returns early, cancelled, between its steps once
    /// `cancel` is cancelled.
    pub fn analyse(
        &self,
        front: &ImageData,
        back: Option<&ImageData>,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let checkpoint = || {
            if cancel.is_cancelled() {
                Err(AgentError::Cancelled)
            } else {
                Ok(())
            }
        };
        let faces = self.faces.get()?;
        let s = &self.settings;
        let photo = match decode(front.bytes(), &self.limits) {
            Ok(photo) => photo,
            Err(e) => return Ok(Report::failed(Some(0.0), vec![e.code().to_owned()])),
        };
        checkpoint()?;
        let found = outline::find(&photo, s.min_outline_area as f32);
        let (document, document_side) = match &found {
            Some(o) => {
                let [tl, tr, br, bl] = o.quad.0;
                let d = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).hypot(a.1 - b.1)) as u32;
                let side = d(tl, tr).max(d(bl, br)).max(d(tl, bl)).max(d(tr, br));
                (
                    outline::rectify(&photo, &o.quad, RECTIFIED_MIN, RECTIFIED_MAX),
                    side,
                )
            }
            None => (
                outline::whole_frame(&photo, RECTIFIED_MIN, RECTIFIED_MAX),
                photo.width().max(photo.height()),
            ),
        };

        checkpoint()?;
        let measured = quality::normalised(&document);
        let gray = image::imageops::grayscale(&measured);
        let sharpness = quality::sharpness(&gray);
        let exposure = quality::exposure(&gray);
        let edge_density = quality::edge_density(&gray);
        let glare = quality::glare(&measured);
        let portrait_face = faces
            .detect(&gray, s.min_portrait_fraction as f32)
            .into_iter()
            .next();

        let mut issues = Vec::new();
        let not_found = found.is_none() && edge_density < s.min_edge_density;
        if not_found {
            issues.push("document_not_found");
        }
        if found.is_some_and(|o| o.touches_edge) {
            issues.push("document_cropped");
        }
        if document_side < s.min_document_side {
            issues.push("low_resolution");
        }
        if sharpness < s.min_sharpness {
            issues.push("too_blurry");
        }
        if exposure.mean < s.min_brightness || exposure.dark_fraction > s.max_dark_fraction {
            issues.push("too_dark");
        }
        if glare > s.max_glare_fraction {
            issues.push("glare");
        }
        if portrait_face.is_none() && !not_found {
            issues.push("no_portrait");
        }

        checkpoint()?;
        let portrait = portrait_face.map(|face| Arc::new(crop_portrait(&document, &gray, face)));
        let back = match back {
            Some(image) => decode(image.bytes(), &self.limits).ok().map(|photo| {
                Arc::new(match outline::find(&photo, s.min_outline_area as f32) {
                    Some(o) => outline::rectify(&photo, &o.quad, RECTIFIED_MIN, RECTIFIED_MAX),
                    None => outline::whole_frame(&photo, RECTIFIED_MIN, RECTIFIED_MAX),
                })
            }),
            None => None,
        };

        // Quality: the product of sharpness, light and freedom from glare, each scaled so that
        // twice its threshold (half, for glare) scores 1.
        let score = {
            let sharp = (sharpness / (2.0 * s.min_sharpness)).min(1.0);
            // Blown-out pixels are not counted here: white paper is blown out on a scan, and
            // the harmful kind, glare, has its own factor.
            let light = (exposure.mean / (2.0 * s.min_brightness)).min(1.0);
            let clear = 1.0 - (glare / (2.0 * s.max_glare_fraction)).min(1.0);
            rounded(sharp * light * clear, 3)
        };
        let details = json!({
            "quality": score,
            "issues": issues,
            "measures": {
                "photo": { "width": photo.width(), "height": photo.height() },
                "document_side": document_side,
                "outline": found,
                "sharpness": rounded(sharpness, 1),
                "exposure": {
                    "mean": rounded(exposure.mean, 1),
                    "dark_fraction": rounded(exposure.dark_fraction, 4),
                    "blown_fraction": rounded(exposure.blown_fraction, 4),
                },
                "glare_fraction": rounded(glare, 4),
                "edge_density": rounded(edge_density, 4),
                "portrait": portrait_face,
            },
            "thresholds": s,
            "models": { "face_detector": faces.id },
        });
        let output = Output::portable(Captured {
            photo: found
                .is_some()
                .then(|| Arc::new(outline::whole_frame(&photo, RECTIFIED_MIN, RECTIFIED_MAX))),
            front: Arc::new(document),
            back,
            portrait,
        });
        // Glare alone does not make a document unusable: it only matters where it hides
        // something, which ocr and face_match find out for themselves.
        let blocking = issues.iter().any(|&issue| issue != "glare");
        let report = if blocking {
            Report::failed(Some(score), issues.iter().map(|&i| i.to_owned()).collect())
        } else {
            Report::passed(Some(score))
        };
        Ok(report.with_details(details).with_output(output))
    }
}

/// The face box grown by half its size each way (the portrait's hair, chin and ears), in the
/// rectified document's pixels. `face` was found on `gray`, a scaled copy.
fn crop_portrait(document: &RgbImage, gray: &image::GrayImage, face: Face) -> RgbImage {
    let k = document.width() as f32 / gray.width() as f32;
    let (w, h) = document.dimensions();
    let grow = |v: u32, size: u32| (v as f32 * k - size as f32 * k * 0.5).max(0.0) as u32;
    let x = grow(face.x, face.width).min(w - 1);
    let y = grow(face.y, face.height).min(h - 1);
    let cw = ((face.width as f32 * k * 2.0) as u32).min(w - x).max(1);
    let ch = ((face.height as f32 * k * 2.0) as u32).min(h - y).max(1);
    image::imageops::crop_imm(document, x, y, cw, ch).to_image()
}

impl CpuAgent for DocCapture {
    /// The front and the back.
    type Input = (ImageData, Option<ImageData>);

    fn models(&self) -> Option<&dyn Loading> {
        Some(&self.faces)
    }

    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError> {
        let document = &ctx.input().document;
        Ok((document.front.clone(), document.back.clone()))
    }

    fn compute(
        &self,
        (front, back): Self::Input,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        self.analyse(&front, back.as_ref(), cancel)
    }
}
