//! Text detection and line recognition with the PP-OCRv6 models on ONNX Runtime.
//!
//! ONNX Runtime is loaded at run time from `libonnxruntime.so` (from the PyPI `onnxruntime`
//! wheel) through `ort`'s `load-dynamic`: the build compiles no C++ and downloads nothing, and
//! ONNX Runtime reads a line faster than the pure-Rust `tract`, which also loads these models
//! (README, Agents, has the figures).
//!
//! An `ort` session runs one inference at a time (`run` takes `&mut self`), so the engine keeps
//! one session per CPU slot and each uses one intra-op thread: parallelism comes from sessions,
//! not from threads fighting inside one.

mod detect;
mod prune;
mod recognize;
mod rows;

use std::path::Path;
use std::sync::OnceLock;

use image::RgbImage;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::pool::Pool;
use crate::models::{ModelError, ModelFile, ModelId};

pub use detect::{DetectSettings, TextBox, beside, join_lines};
pub use recognize::Line;
pub use rows::dense_lines;

/// The model files this engine loads, by name in the models directory.
pub const DETECTION_MODEL: &str = "PP-OCRv6_det_small.onnx";
pub const RECOGNITION_MODEL: &str = "PP-OCRv6_rec_small.onnx";
pub const RUNTIME_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// Why inference failed.
#[derive(Debug, thiserror::Error)]
#[error("text model inference failed: {0}")]
pub struct InferenceError(String);

impl InferenceError {
    fn from_ort(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// Detection and recognition sessions, loaded once.
pub struct TextEngine {
    detection: Pool<Session>,
    recognition: Pool<Session>,
    charset: Vec<String>,
    pub detection_model: ModelId,
    pub recognition_model: ModelId,
}

impl TextEngine {
    /// Loads both models with `sessions` sessions each, the recogniser cut down to the
    /// characters `keep` accepts (`prune.rs` says how). Slow (hundreds of milliseconds): call it
    /// once, off the async runtime.
    pub fn load(
        dir: &Path,
        sessions: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Self, ModelError> {
        let environment = environment(dir)?;
        let det = ModelFile::read(dir, DETECTION_MODEL)?;
        let rec = ModelFile::read(dir, RECOGNITION_MODEL)?;
        let (recogniser, charset) =
            prune::keep_classes(&rec.bytes, keep).map_err(|reason| rec.invalid(reason))?;
        let detection = self::sessions(environment, &det, &det.bytes, sessions)?;
        let recognition = self::sessions(environment, &rec, &recogniser, sessions)?;
        Ok(Self {
            detection,
            recognition,
            charset,
            detection_model: det.id,
            recognition_model: rec.id,
        })
    }

    /// Text boxes on `image`, in its coordinates, top to bottom.
    pub fn detect(
        &self,
        image: &RgbImage,
        settings: &DetectSettings,
    ) -> Result<Vec<TextBox>, InferenceError> {
        let mut session = self.detection.lease();
        detect::detect(&mut session, image, settings)
    }

    /// Reads each line image (one text line, any width).
    pub fn recognize(&self, lines: &[RgbImage]) -> Result<Vec<Line>, InferenceError> {
        let mut session = self.recognition.lease();
        // One line per run: a batch pads its lines to its widest, and batching saved nothing
        // measurable on CPU.
        let mut read = Vec::with_capacity(lines.len());
        for line in lines.chunks(1) {
            read.extend(recognize::recognize(&mut session, line, &self.charset)?);
        }
        Ok(read)
    }
}

/// Writes `image` into `input[n]` as the models were trained: OpenCV's BGR channel order,
/// normalised to [-1, 1].
fn write_input(input: &mut ndarray::Array4<f32>, n: usize, image: &RgbImage) {
    for (x, y, pixel) in image.enumerate_pixels() {
        for c in 0..3 {
            input[[n, 2 - c, y as usize, x as usize]] = f32::from(pixel[c]) / 127.5 - 1.0;
        }
    }
}

/// Runs a single-input, single-output model.
fn infer(
    session: &mut Session,
    input: &ndarray::Array4<f32>,
) -> Result<ndarray::ArrayD<f32>, InferenceError> {
    let tensor = ort::value::TensorRef::from_array_view(input).map_err(InferenceError::from_ort)?;
    let outputs = session
        .run(ort::inputs![tensor])
        .map_err(InferenceError::from_ort)?;
    let output = outputs[0]
        .try_extract_array::<f32>()
        .map_err(InferenceError::from_ort)?;
    Ok(output.to_owned())
}

/// The process's one ONNX Runtime environment: `ort` allows exactly one, and the library it
/// loads cannot be swapped once loaded, so the first directory asked for wins.
fn environment(dir: &Path) -> Result<&'static Environment, ModelError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    let library = crate::models::locate(dir, RUNTIME_LIBRARY)?;
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(&library)
                .map_err(|e| e.to_string())?
                .with_name("kyc-orchestrator")
                // Nothing about a verification service's work leaves the process.
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| ModelError::Invalid {
            path: library,
            reason: reason.clone(),
        })
}

/// Sessions of `model` (as `bytes`), one per CPU slot, each with one intra-op thread.
fn sessions(
    environment: &Environment,
    model: &ModelFile,
    bytes: &[u8],
    count: usize,
) -> Result<Pool<Session>, ModelError> {
    let sessions = (0..count.max(1))
        .map(|_| {
            Session::builder(environment)
                .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
                .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
                .and_then(|b| {
                    b.with_optimization_level(GraphOptimizationLevel::All)
                        .map_err(Into::into)
                })
                // Input shapes change with every image, so a memory pattern planned for one
                // run is wrong for the next. The arena is kept: with it off the server's peak
                // RSS was higher, not lower, and ocr no faster (`scripts/bench-http.sh real`,
                // README Performance).
                .and_then(|b| b.with_memory_pattern(false).map_err(Into::into))
                .and_then(|mut b| b.commit_from_memory(bytes))
                .map_err(|e| model.invalid(e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pool::new(sessions))
}
