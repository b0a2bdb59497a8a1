//! Single-frame cues on the face: supporting evidence only, since each has innocent causes (a
//! pale face in cold light, a shiny forehead).

use super::{Frame, median};

/// Medians over the frames.
pub struct Cues {
    /// Mean HSV saturation over the face's skin (0-1). A black-and-white or faded print is
    /// well below live skin, which measures about 0.25-0.3 in daylight.
    pub saturation: f64,
    /// Share of the face's pixels blown out in every channel: a screen's specular glare.
    pub glare: f64,
    /// The face's width over the frame's: a phone held up to the camera shows a small face.
    pub face_width_fraction: f64,
}

pub fn measure(frames: &[&Frame]) -> Option<Cues> {
    let mut saturation = Vec::new();
    let mut glare = Vec::new();
    let mut width = Vec::new();
    for frame in frames {
        let Some(face) = frame.faces.first() else {
            continue;
        };
        // The skin: the box without hair at the top and background at the sides.
        let (w, h) = frame.image.dimensions();
        let x0 = (face.x + face.width * 0.15).max(0.0) as u32;
        let x1 = ((face.x + face.width * 0.85).max(0.0) as u32).min(w);
        let y0 = (face.y + face.height * 0.2).max(0.0) as u32;
        let y1 = ((face.y + face.height * 0.9).max(0.0) as u32).min(h);
        let (mut sum, mut blown, mut n) = (0.0f32, 0u32, 0u32);
        for y in y0..y1 {
            for x in x0..x1 {
                let p = frame.image.get_pixel(x, y).0;
                let max = f32::from(p[0].max(p[1]).max(p[2]));
                let min = f32::from(p[0].min(p[1]).min(p[2]));
                if max > 0.0 {
                    sum += (max - min) / max;
                }
                if min >= 250.0 {
                    blown += 1;
                }
                n += 1;
            }
        }
        if n > 0 {
            saturation.push(f64::from(sum / n as f32));
            glare.push(f64::from(blown) / f64::from(n));
            width.push(f64::from(face.width) / f64::from(w));
        }
    }
    // No skin measured anywhere (faces only at the frame's edge): no cue either way.
    (!saturation.is_empty()).then(|| Cues {
        saturation: median(saturation),
        glare: median(glare),
        face_width_fraction: median(width),
    })
}
