//! Line recognition: the SVTR model reads a line image scaled to 48 pixels high into per-step
//! class probabilities, decoded greedily (CTC: drop repeats, then blanks).

use image::RgbImage;
use ndarray::Array4;
use ort::session::Session;

use super::{InferenceError, infer, write_input};
use crate::vision::resample;

const HEIGHT: u32 = 48;
/// Widest line fed to the model; a 44-character MRZ line at 48 px high is about 1,400.
const MAX_WIDTH: u32 = 1600;

/// A recognised line and the model's mean confidence in its characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub confidence: f32,
}

pub(super) fn recognize(
    session: &mut Session,
    lines: &[RgbImage],
    charset: &[String],
) -> Result<Vec<Line>, InferenceError> {
    let widths: Vec<u32> = lines
        .iter()
        .map(|line| {
            let (w, h) = line.dimensions();
            ((HEIGHT as f32 * w as f32 / h.max(1) as f32).ceil() as u32).clamp(16, MAX_WIDTH)
        })
        .collect();
    let batch_width = widths.iter().copied().max().unwrap_or(16);
    // Zero after normalisation is mid-grey, which is also how the model's training padded.
    let mut input = Array4::<f32>::zeros((lines.len(), 3, HEIGHT as usize, batch_width as usize));
    for (n, (line, &width)) in lines.iter().zip(&widths).enumerate() {
        write_input(&mut input, n, &resample::resized(line, width, HEIGHT));
    }
    let probabilities = infer(session, &input)?;
    let shape = probabilities.shape().to_vec();
    if shape.len() != 3 || shape[0] != lines.len() {
        return Err(InferenceError(format!(
            "unexpected recognition output shape {shape:?}"
        )));
    }
    let mut out = Vec::with_capacity(lines.len());
    for n in 0..shape[0] {
        let mut text = String::new();
        let mut confidence = 0.0;
        let mut kept = 0;
        let mut previous = 0;
        for t in 0..shape[1] {
            let (class, p) = (0..shape[2]).map(|c| (c, probabilities[[n, t, c]])).fold(
                (0, f32::MIN),
                |best, next| if next.1 > best.1 { next } else { best },
            );
            if class != 0
                && class != previous
                && let Some(symbol) = charset.get(class)
            {
                text.push_str(symbol);
                confidence += p;
                kept += 1;
            }
            previous = class;
        }
        out.push(Line {
            text,
            confidence: if kept == 0 {
                0.0
            } else {
                confidence / kept as f32
            },
        });
    }
    Ok(out)
}
