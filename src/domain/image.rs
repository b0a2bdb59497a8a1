//! An uploaded image whose format and dimensions have been read from its header.
//!
//! Only the header is decoded here: the agents decode pixels under their own limits. What this
//! guarantees is that no agent is ever handed bytes that are not a JPEG, PNG or WebP of sane size.

use std::io::Cursor;

use bytes::Bytes;
use serde::Serialize;

/// Image formats the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

/// Limits checked before an image is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
    pub max_side: u32,
}

/// Why bytes were refused as an image. Messages never quote the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is {size} bytes; the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("not a JPEG, PNG or WebP image")]
    NotAnImage,
    #[error("the image header could not be read: {0}")]
    Corrupt(String),
    #[error(
        "the image is {width}x{height}; at most {max_side} pixels a side and {max_pixels} pixels in all"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("the image has a zero dimension")]
    ZeroSized,
}

impl ImageError {
    /// Stable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_image",
            Self::TooLarge { .. } => "image_too_large",
            Self::NotAnImage => "not_an_image",
            Self::Corrupt(_) => "corrupt_image",
            Self::TooManyPixels { .. } => "image_dimensions_too_large",
            Self::ZeroSized => "corrupt_image",
        }
    }
}

/// Image bytes with their checked format and dimensions. Its `Debug` never prints the bytes.
#[derive(Clone)]
pub struct ImageData {
    bytes: Bytes,
    format: ImageFormat,
    width: u32,
    height: u32,
}

impl std::fmt::Debug for ImageData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageData({:?}, {}x{}, {} bytes)",
            self.format,
            self.width,
            self.height,
            self.bytes.len()
        )
    }
}

impl ImageData {
    /// Reads the header and applies the limits.
    pub fn parse(bytes: Bytes, limits: &ImageLimits) -> Result<Self, ImageError> {
        if bytes.is_empty() {
            return Err(ImageError::Empty);
        }
        if bytes.len() > limits.max_bytes {
            return Err(ImageError::TooLarge {
                size: bytes.len(),
                max: limits.max_bytes,
            });
        }
        let reader = image::ImageReader::new(Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|_| ImageError::NotAnImage)?;
        let format = match reader.format() {
            Some(image::ImageFormat::Jpeg) => ImageFormat::Jpeg,
            Some(image::ImageFormat::Png) => ImageFormat::Png,
            Some(image::ImageFormat::WebP) => ImageFormat::Webp,
            _ => return Err(ImageError::NotAnImage),
        };
        let (width, height) = reader
            .into_dimensions()
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSized);
        }
        if width > limits.max_side
            || height > limits.max_side
            || u64::from(width) * u64::from(height) > limits.max_pixels
        {
            return Err(ImageError::TooManyPixels {
                width,
                height,
                max_side: limits.max_side,
                max_pixels: limits.max_pixels,
            });
        }
        Ok(Self {
            bytes,
            format,
            width,
            height,
        })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn format(&self) -> ImageFormat {
        self.format
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 10_000,
        max_side: 200,
    };

    fn png(width: u32, height: u32) -> Bytes {
        let mut out = Vec::new();
        image::RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out.into()
    }

    #[test]
    fn a_png_is_accepted_with_its_dimensions() {
        let image = ImageData::parse(png(40, 30), &LIMITS).unwrap();
        assert_eq!(image.format(), ImageFormat::Png);
        assert_eq!(image.dimensions(), (40, 30));
    }

    #[test]
    fn text_is_not_an_image() {
        let err = ImageData::parse(Bytes::from_static(b"hello, world"), &LIMITS).unwrap_err();
        assert_eq!(err, ImageError::NotAnImage);
    }

    #[test]
    fn a_truncated_png_is_corrupt() {
        let bytes = png(40, 30).slice(..20);
        assert_eq!(
            ImageData::parse(bytes, &LIMITS).unwrap_err().code(),
            "corrupt_image"
        );
    }

    #[test]
    fn images_over_the_limits_are_refused() {
        assert!(matches!(
            ImageData::parse(png(201, 10), &LIMITS),
            Err(ImageError::TooManyPixels { .. })
        ));
        assert!(matches!(
            ImageData::parse(png(150, 150), &LIMITS),
            Err(ImageError::TooManyPixels { .. })
        ));
        let small = ImageLimits {
            max_bytes: 10,
            ..LIMITS
        };
        assert!(matches!(
            ImageData::parse(png(4, 4), &small),
            Err(ImageError::TooLarge { .. })
        ));
        assert_eq!(
            ImageData::parse(Bytes::new(), &LIMITS).unwrap_err(),
            ImageError::Empty
        );
    }
}
