//! Image analysis for the real agents: decoding under limits, quality measures, the document's
//! outline and its rectification, face detection and text recognition.
//!
//! These functions measure; the agents in `crate::agents` decide. Everything here is
//! synchronous CPU work, run by the agents on the blocking pool behind a CPU slot.

pub mod biometrics;
pub mod decode;
pub mod faces;
pub mod outline;
pub mod pool;
pub mod pose;
pub mod quality;
pub mod resample;
pub mod text;

pub use decode::{DecodeError, decode, encode_png};
