//! Decoding uploaded images into pixels, under limits, upright.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::domain::ImageLimits;

/// Why an accepted image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decoder would need more memory than the limits allow (a decompression bomb).
    #[error("decoding the image would exceed the memory limit")]
    TooLarge,
    #[error("the image data is corrupt")]
    Corrupt,
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "image_too_large",
            Self::Corrupt => "corrupt_image",
        }
    }
}

/// Decodes `bytes` to RGB, turned upright by its EXIF orientation. The header was already
/// checked against the same limits when the request arrived; these limits hold the decoder
/// to them as well, so a lying header cannot make it allocate more.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| DecodeError::Corrupt)?;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA at 8 bits, plus the decoder's own working memory.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4 + 2));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image.into_rgb8())
}

fn classify(error: image::ImageError) -> DecodeError {
    match error {
        image::ImageError::Limits(_) => DecodeError::TooLarge,
        _ => DecodeError::Corrupt,
    }
}
