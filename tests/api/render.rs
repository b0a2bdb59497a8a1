//! What the tests draw beyond the library's specimens: the public-domain astronaut portrait
//! from scikit-image (`scripts/fixtures.sh`) on the page, and the ways a photo goes wrong.

use image::{Rgb, RgbImage};
use imageproc::drawing::draw_filled_ellipse_mut;

pub use kyc_orchestrator::specimen::*;

const PORTRAIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/astronaut.png");

/// scikit-image's astronaut photo, whole.
pub fn astronaut_photo() -> RgbImage {
    image::open(PORTRAIT)
        .unwrap_or_else(|e| panic!("{PORTRAIT}: {e}; scripts/fixtures.sh fetches it"))
        .to_rgb8()
}

/// The astronaut's head and shoulders: a document portrait.
pub fn astronaut() -> RgbImage {
    astronaut_head(&astronaut_photo())
}

/// The astronaut's selfie.
pub fn selfie() -> RgbImage {
    astronaut_selfie(&astronaut_photo())
}

/// ANNA's page with the astronaut's portrait.
pub fn portrait_page() -> Page {
    Page {
        portrait: Some(astronaut()),
        ..Page::default()
    }
}

/// Out of focus.
pub fn blurred(photo: &RgbImage) -> RgbImage {
    imageproc::filter::gaussian_blur_f32(photo, 6.0)
}

/// Taken in a dim room.
pub fn darkened(photo: &RgbImage) -> RgbImage {
    let mut dark = photo.clone();
    for pixel in dark.pixels_mut() {
        pixel.0 = pixel.0.map(|c| (f32::from(c) * 0.18) as u8);
    }
    dark
}

/// A lamp reflected on the laminate, over the visual zone.
pub fn with_glare(photo: &RgbImage) -> RgbImage {
    let mut glare = photo.clone();
    draw_filled_ellipse_mut(&mut glare, (820, 500), 230, 140, Rgb([255, 255, 255]));
    glare
}

/// A small photo.
pub fn shrunk(photo: &RgbImage, width: u32) -> RgbImage {
    let height = photo.height() * width / photo.width();
    image::imageops::resize(photo, width, height, image::imageops::FilterType::Triangle)
}

/// A photo of a blank wall.
pub fn blank() -> RgbImage {
    RgbImage::from_fn(1600, 1200, |x, y| {
        let shade = 120 + ((x * 7 + y * 13) % 5) as u8;
        Rgb([shade, shade, shade + 4])
    })
}

/// Images as the JPEG frames a client sends.
pub fn frames(images: &[RgbImage]) -> Vec<kyc_orchestrator::domain::ImageData> {
    let limits = kyc_orchestrator::Settings::defaults().limits.images();
    images
        .iter()
        .map(|image| kyc_orchestrator::domain::ImageData::parse(jpeg(image), &limits).unwrap())
        .collect()
}
