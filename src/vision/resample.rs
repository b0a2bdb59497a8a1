//! Scaling images on a session's path.
//!
//! The convolution is `image::imageops::resize`'s with its triangle (bilinear) filter, widened
//! by the ratio when shrinking so that every source pixel counts, done by `fast_image_resize`
//! in fixed point with the CPU's vector instructions. On the benchmark's session `image`'s
//! float version, with a rounding call per sample, was a sixth of the server's CPU; this one is
//! under 1 %. The two agree to within two levels of 8 bits.
//!
//! Three kinds of scaling keep `image`'s own: the selfie frames liveness and face_match analyse
//! (`agents::selfie`, where the challenge's verdicts on real clips moved with the difference),
//! and the specimen generator and `kyc-eval`, which draw the inputs that the accuracy figures
//! compare before and after a change here.

use fast_image_resize::{FilterType, IntoImageView, IntoImageViewMut, ResizeAlg, ResizeOptions};
use image::{ImageBuffer, Pixel};

/// `image` scaled to `width` x `height` (each at least 1).
pub fn resized<P>(
    image: &ImageBuffer<P, Vec<u8>>,
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<u8>>
where
    P: Pixel<Subpixel = u8>,
    ImageBuffer<P, Vec<u8>>: IntoImageView + IntoImageViewMut,
{
    let mut out = ImageBuffer::new(width.max(1), height.max(1));
    if image.width() == 0 || image.height() == 0 {
        return out;
    }
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    fast_image_resize::Resizer::new()
        .resize(image, &mut out, &options)
        .expect("an 8-bit RGB or gray buffer of its own size is resizable into another");
    out
}

#[cfg(test)]
mod tests {
    use image::imageops::FilterType;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    use super::*;

    /// The largest difference, in levels, between two images of one size.
    fn largest_difference<P: Pixel<Subpixel = u8>>(
        a: &ImageBuffer<P, Vec<u8>>,
        b: &ImageBuffer<P, Vec<u8>>,
    ) -> u8 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    fn pattern(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 7 + y * 3) as u8,
                ((x / 5 + y / 7) % 2 * 200 + 20) as u8,
                ((x * y) % 251) as u8,
            ])
        })
    }

    #[test]
    fn agrees_with_the_image_crates_convolution() {
        // A triangle has no negative lobes: only the rounding differs, even at hard edges.
        let sharp = pattern(523, 661);
        for (w, h) in [(503, 640), (200, 97), (800, 1000)] {
            let ours = resized(&sharp, w, h);
            let theirs = image::imageops::resize(&sharp, w, h, FilterType::Triangle);
            let most = largest_difference(&ours, &theirs);
            assert!(most <= 2, "{w}x{h}: differs by {most} levels");
        }
        let gray = image::imageops::grayscale(&sharp);
        let ours = resized(&gray, 150, 150);
        let theirs = image::imageops::resize(&gray, 150, 150, FilterType::Triangle);
        assert!(largest_difference(&ours, &theirs) <= 2);
    }

    #[test]
    fn an_empty_image_or_size_gives_a_blank_image_of_at_least_one_pixel() {
        let empty = GrayImage::new(0, 0);
        assert_eq!(resized(&empty, 4, 3).dimensions(), (4, 3));
        let one = GrayImage::from_pixel(1, 1, Luma([90]));
        let out = resized(&one, 0, 0);
        assert_eq!(out.dimensions(), (1, 1));
        assert_eq!(out.get_pixel(0, 0).0, [90]);
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        let flat = RgbImage::from_pixel(37, 11, Rgb([12, 130, 250]));
        for (w, h) in [(5, 2), (37, 11), (300, 90)] {
            let out = resized(&flat, w, h);
            assert!(out.pixels().all(|p| p.0 == [12, 130, 250]), "{w}x{h}");
        }
    }
}
