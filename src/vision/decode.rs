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
    // RGBA at 16 bits, plus the decoder's own working memory.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8 + 2));
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

/// `image` as PNG: lossless, and compressed fast (these images are made on the request path,
/// where the CPU is the scarce part).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut png = Vec::with_capacity(image.as_raw().len() / 2);
    let encoder = PngEncoder::new_with_quality(
        Cursor::new(&mut png),
        CompressionType::Fast,
        FilterType::Sub,
    );
    image.write_with_encoder(encoder)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use image::{ImageEncoder, Rgb};

    use super::*;

    const LIMITS: ImageLimits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
        max_side: 4096,
    };

    /// A JPEG of `image` whose EXIF orientation tag says how to turn it upright.
    fn jpeg_with_orientation(image: &RgbImage, orientation: u16) -> Vec<u8> {
        // TIFF, big-endian: one IFD with one entry, Orientation (0x0112), SHORT, count 1.
        let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        encoder.set_exif_metadata(exif).unwrap();
        encoder
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn a_photo_is_turned_upright_by_its_exif_orientation() {
        // Upright: 40 wide, 20 high, red in the top-left corner.
        let upright = RgbImage::from_fn(40, 20, |x, y| {
            if x < 10 && y < 10 {
                Rgb([220, 20, 20])
            } else {
                Rgb([20, 20, 220])
            }
        });
        // Stored turned a quarter anticlockwise, tagged "rotate 90 degrees clockwise to view".
        let stored = image::imageops::rotate270(&upright);

        let decoded = decode(&jpeg_with_orientation(&stored, 6), &LIMITS).unwrap();

        assert_eq!(decoded.dimensions(), (40, 20));
        let corner = decoded.get_pixel(3, 3);
        assert!(corner[0] > 150 && corner[2] < 100, "{corner:?}");
    }

    #[test]
    fn a_decoder_that_would_exceed_the_limits_is_refused() {
        let image = RgbImage::new(300, 300);
        let tight = ImageLimits {
            max_side: 200,
            ..LIMITS
        };

        let decoded = decode(&jpeg_with_orientation(&image, 1), &tight);

        assert!(
            matches!(decoded, Err(DecodeError::TooLarge)),
            "{:?}",
            decoded.err()
        );
    }

    #[test]
    fn bytes_that_are_no_image_are_corrupt() {
        assert!(matches!(
            decode(b"not an image", &LIMITS),
            Err(DecodeError::Corrupt)
        ));
    }
}
