//! Specimen documents, drawn: a passport data page with a real ICAO 9303 zone in OCR-B
//! (Debian's `fonts-ocr-b`; the rest in DejaVu Sans, `fonts-dejavu-core`), photographed on a
//! table at a slight angle, and as phone photos go wrong: an open booklet turned on a table
//! ([`open_booklet`]), a streak of light ([`streaked`]), a photo of a screen ([`on_screen`]). The tests and the smoke runner send these to the real agents;
//! nothing in the service uses them.
//!
//! The holder is ICAO's own specimen, Anna Maria Eriksson of Utopia. Drawing panics when a
//! font is missing, naming the package that provides it.
//!
//! Selfies are made from a face photo (`scripts/fixtures.sh` fetches the public-domain
//! astronaut portrait from the scikit-image wheel): [`head_turn`] draws a head turning a few
//! degrees, [`head::Head`] draws it in 3-D at known angles.

pub mod head;

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut};
use imageproc::geometric_transformations::{Border, Interpolation, Projection, warp_with};
use imageproc::rect::Rect;

use crate::domain::ChallengeStep;
use crate::models::ModelError;
use crate::vision::biometrics::{Biometrics, LANDMARKS_68, Prepared};

const OCR_B: &str = "/usr/share/fonts/opentype/ocr-b/OCRB.otf";
const SANS: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A TD3 page is 125 x 88 mm; at 10 px/mm.
const PAGE: (u32, u32) = (1250, 880);
const PAPER: Rgb<u8> = Rgb([236, 230, 214]);
const INK: Rgb<u8> = Rgb([30, 30, 40]);

fn font(path: &str) -> &'static FontVec {
    static OCR_B_FONT: OnceLock<FontVec> = OnceLock::new();
    static SANS_FONT: OnceLock<FontVec> = OnceLock::new();
    let cell = if path == OCR_B {
        &OCR_B_FONT
    } else {
        &SANS_FONT
    };
    cell.get_or_init(|| {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path}: {e}; install fonts-ocr-b and fonts-dejavu-core"));
        FontVec::try_from_vec(bytes).expect("a valid font")
    })
}

/// The holder of every rendered document (ICAO's own specimen data).
pub struct Holder {
    pub surname: &'static str,
    pub given_names: &'static str,
    pub number: &'static str,
    pub birth: (i32, u32, u32),
    pub expiry: (i32, u32, u32),
}

pub const ANNA: Holder = Holder {
    surname: "ERIKSSON",
    given_names: "ANNA MARIA",
    number: "L898902C3",
    birth: (1974, 8, 12),
    expiry: (2034, 4, 15),
};

/// The two lines of a TD3 zone for `holder`, every check digit correct.
pub fn td3(holder: &Holder) -> [String; 2] {
    let date = |(year, month, day)| mrz::MrzDate::Calendar(mrz::Date::new(year, month, day));
    let zone = mrz::format_td3(&mrz::Td3Fields {
        document_code: "P".into(),
        issuing_country: "UTO".into(),
        document_number: holder.number.into(),
        surname: holder.surname.into(),
        given_names: holder.given_names.into(),
        nationality: "UTO".into(),
        date_of_birth: date(holder.birth),
        sex: mrz::Sex::Female,
        date_of_expiry: date(holder.expiry),
        personal_number: Some("ZE184226B".into()),
    });
    let (one, two) = zone.split_once('\n').expect("two lines");
    [one.to_owned(), two.to_owned()]
}

/// `zone` with the document number's check digit (line 2, position 10) changed.
pub fn broken_check_digit(mut zone: [String; 2]) -> [String; 2] {
    let digit = zone[1].as_bytes()[9] - b'0';
    let wrong = (b'0' + (digit + 5) % 10) as char;
    zone[1].replace_range(9..10, &wrong.to_string());
    zone
}

/// What is printed on the page.
#[derive(Clone)]
pub struct Page {
    pub zone: Option<[String; 2]>,
    /// A face photo, cropped to head and shoulders, printed 30 x 38 mm at the left.
    pub portrait: Option<RgbImage>,
}

impl Default for Page {
    /// ANNA's zone, no portrait.
    fn default() -> Self {
        Self {
            zone: Some(td3(&ANNA)),
            portrait: None,
        }
    }
}

/// The data page, flat, as printed.
pub fn page(spec: &Page) -> RgbImage {
    let (w, h) = PAGE;
    let mut page = RgbImage::from_pixel(w, h, PAPER);
    draw_filled_rect_mut(
        &mut page,
        Rect::at(30, 25).of_size(w - 60, 60),
        Rgb([150, 40, 60]),
    );
    let sans = font(SANS);
    draw_text_mut(
        &mut page,
        Rgb([250, 250, 250]),
        50,
        32,
        40.0,
        sans,
        "PASSPORT  UTOPIA",
    );
    if let Some(portrait) = &spec.portrait {
        let head =
            image::imageops::resize(portrait, 300, 380, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut page, &head, 50, 110);
    }
    let fields = [
        ("Surname", "ERIKSSON"),
        ("Given names", "ANNA MARIA"),
        ("Nationality", "UTOPIAN"),
        ("Date of birth", "12 AUG 1974"),
        ("Passport No.", "L898902C3"),
    ];
    for (i, (label, value)) in fields.iter().enumerate() {
        let y = 110 + i as i32 * 80;
        draw_text_mut(&mut page, Rgb([90, 90, 110]), 400, y, 24.0, sans, label);
        draw_text_mut(&mut page, INK, 400, y + 28, 36.0, sans, value);
    }
    if let Some(zone) = &spec.zone {
        let ocr_b = font(OCR_B);
        // Size the glyphs so that 44 characters span the page less its margins.
        let advance = ocr_b
            .as_scaled(PxScale::from(100.0))
            .h_advance(ocr_b.glyph_id('<'));
        let size = 100.0 * (w as f32 - 80.0) / (44.0 * advance);
        for (i, line) in zone.iter().enumerate() {
            let y = h as i32 - 150 + i as i32 * (size * 1.15) as i32;
            draw_text_mut(&mut page, INK, 40, y, size, ocr_b, line);
        }
    }
    page
}

/// Where the page's corners land in the photo: top-left, top-right, bottom-right, bottom-left.
pub type Corners = [(f32, f32); 4];

/// A page turned by about 2 degrees near the middle of a 1600 x 1200 photo.
pub const ASKEW: Corners = [
    (190.0, 200.0),
    (1420.0, 160.0),
    (1448.0, 1026.0),
    (218.0, 1066.0),
];

/// The same page moved right until a fifth of it is out of the frame.
pub const CUT_OFF: Corners = [
    (500.0, 200.0),
    (1730.0, 160.0),
    (1758.0, 1026.0),
    (528.0, 1066.0),
];

/// The size of the photos [`photo`] draws.
pub const PHOTO: (u32, u32) = (1600, 1200);

/// A phone camera's photo, 7.7 megapixels.
pub const PHONE: (u32, u32) = (3200, 2400);

/// The page from further away in a [`PHONE`] photo: a third of its width, a tenth of its area,
/// turned about 1.5 degrees.
pub const FAR: Corners = [
    (1070.0, 845.0),
    (2135.0, 815.0),
    (2155.0, 1565.0),
    (1090.0, 1595.0),
];

/// The page photographed on a dark table at `corners`, in a [`PHOTO`].
pub fn photo(page: &RgbImage, corners: Corners) -> RgbImage {
    photo_of_size(page, corners, PHOTO)
}

/// The page photographed on a dark table at `corners`, in a photo of `width` x `height`.
pub fn photo_of_size(page: &RgbImage, corners: Corners, (width, height): (u32, u32)) -> RgbImage {
    let (pw, ph) = page.dimensions();
    // A dark wooden table: a gentle gradient with a little grain.
    let mut photo = RgbImage::from_fn(width, height, |x, y| {
        let grain = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 7) as u8;
        let shade = 40 + (x / 80) as u8 + grain;
        Rgb([shade + 20, shade + 8, shade])
    });
    let from = [
        (0.0, 0.0),
        (pw as f32, 0.0),
        (pw as f32, ph as f32),
        (0.0, ph as f32),
    ];
    let to_page = Projection::from_control_points(corners, from).expect("a proper quadrilateral");
    for (x, y, pixel) in photo.enumerate_pixels_mut() {
        let (u, v) = to_page * (x as f32 + 0.5, y as f32 + 0.5);
        if u >= 0.0 && v >= 0.0 && u < pw as f32 - 1.0 && v < ph as f32 - 1.0 {
            *pixel = bilinear(page, u, v);
        }
    }
    photo
}

/// The data page in an open booklet, as an applicant photographs it lying on a table: the
/// facing page above it (a visa page, tinted, with lines of print) across the fold, both on the
/// cover; turned `degrees` counter-clockwise and so close that the facing page runs out of the
/// frame. No outline of one page is left to find.
pub fn open_booklet(page: &RgbImage, degrees: f32) -> RgbImage {
    let (pw, ph) = page.dimensions();
    let (margin, fold) = (20, 40);
    let (sw, sh) = (pw + 2 * margin, 2 * ph + fold + 2 * margin);
    let mut spread = RgbImage::from_pixel(sw, sh, Rgb([90, 24, 36]));
    // The facing page: a tinted ground with wavy security print and a few lines of text.
    let facing = RgbImage::from_fn(pw, ph, |x, y| {
        let wave = ((x as f32 / 23.0).sin() + (y as f32 / 17.0).cos()) * 6.0;
        Rgb([
            (214.0 + wave) as u8,
            (228.0 + wave) as u8,
            (218.0 - wave) as u8,
        ])
    });
    image::imageops::replace(&mut spread, &facing, i64::from(margin), i64::from(margin));
    let sans = font(SANS);
    let text = [
        (60, 60, 44.0, "VISAS"),
        (60, 200, 30.0, "ENTRY  12 MAR 2019  PORT 04"),
        (60, 260, 30.0, "DEPARTURE  30 MAR 2019"),
        (560, 620, 26.0, "P0940409  0407  UTO  19032"),
    ];
    for (x, y, size, line) in text {
        let (x, y) = (x + margin as i32, y + margin as i32);
        draw_text_mut(&mut spread, Rgb([60, 70, 110]), x, y, size, sans, line);
    }
    // The fold: the pages curve down into it.
    for y in 0..fold {
        let depth = 1.0 - ((y as f32 / fold as f32) * 2.0 - 1.0).abs();
        let shade = (200.0 - 110.0 * depth) as u8;
        for x in margin..margin + pw {
            spread.put_pixel(x, margin + ph + y, Rgb([shade, shade, shade - 10]));
        }
    }
    image::imageops::replace(
        &mut spread,
        page,
        i64::from(margin),
        i64::from(margin + ph + fold),
    );
    // The data page's centre near the frame's, 0.85 of its size, turned.
    let (sin, cos) = (-degrees).to_radians().sin_cos();
    let centre = (
        sw as f32 / 2.0,
        (margin + ph + fold) as f32 + ph as f32 / 2.0,
    );
    let place = |(x, y): (f32, f32)| {
        let (dx, dy) = (0.85 * (x - centre.0), 0.85 * (y - centre.1));
        (800.0 + dx * cos - dy * sin, 640.0 + dx * sin + dy * cos)
    };
    let (w, h) = (sw as f32, sh as f32);
    photo(
        &spread,
        [
            place((0.0, 0.0)),
            place((w, 0.0)),
            place((w, h)),
            place((0.0, h)),
        ],
    )
}

/// A streak of light across the photo (a window reflected in the laminate): a band a tenth of
/// the frame wide, from the top left to the bottom right, washed out towards white.
pub fn streaked(photo: &RgbImage) -> RgbImage {
    let mut out = photo.clone();
    let (w, h) = out.dimensions();
    let (w, h) = (w as f32, h as f32);
    let norm = w.hypot(h);
    let band = 0.1 * w;
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        // Distance from the diagonal through the frame's centre.
        let d = ((x as f32 - w / 2.0) * h - (y as f32 - h / 2.0) * w).abs() / norm;
        let light = (1.0 - d / band).clamp(0.0, 1.0) * 0.85;
        pixel.0 = pixel
            .0
            .map(|c| (f32::from(c) + (255.0 - f32::from(c)) * light) as u8);
    }
    out
}

/// A photo shown on a monitor and photographed again, as a fraud or a careless applicant sends
/// it: the monitor's black bezel on a grey desk, its pixel grid (columns of red, green and
/// blue, a dark line between rows), the moire the grid makes with the camera's (broad bands of
/// light and dark across the picture), a blue cast, and the camera's slight blur.
pub fn on_screen(shown: &RgbImage) -> RgbImage {
    let (fw, fh) = (1600, 1200);
    let (sw, sh) = (1360, 1020);
    let (sx, sy) = ((fw - sw) / 2, (fh - sh) / 2);
    let screen = image::imageops::resize(shown, sw, sh, image::imageops::FilterType::Triangle);
    let mut frame = RgbImage::from_fn(fw, fh, |x, y| {
        let shade = 150 + ((x / 40 + y / 60) % 3) as u8;
        Rgb([shade, shade, shade + 3])
    });
    draw_filled_rect_mut(
        &mut frame,
        Rect::at(sx as i32 - 50, sy as i32 - 50).of_size(sw + 100, sh + 100),
        Rgb([18, 18, 20]),
    );
    for (x, y, pixel) in screen.enumerate_pixels() {
        let moire =
            1.0 + 0.12 * (std::f32::consts::TAU * (0.013 * x as f32 + 0.021 * y as f32)).cos();
        let row = if y % 3 == 2 { 0.8 } else { 1.0 };
        let lit = |c: usize| {
            let column = if x as usize % 3 == c { 1.0 } else { 0.82 };
            let tint = [0.92, 0.97, 1.05][c];
            (f32::from(pixel[c]) * moire * row * column * tint).min(255.0) as u8
        };
        frame.put_pixel(sx + x, sy + y, Rgb([lit(0), lit(1), lit(2)]));
    }
    imageproc::filter::gaussian_blur_f32(&frame, 0.8)
}

fn bilinear(image: &RgbImage, u: f32, v: f32) -> Rgb<u8> {
    let (x, y) = (u.floor() as u32, v.floor() as u32);
    let (fx, fy) = (u - x as f32, v - y as f32);
    let p = |dx, dy| image.get_pixel(x + dx, y + dy).0.map(f32::from);
    let (a, b, c, d) = (p(0, 0), p(1, 0), p(0, 1), p(1, 1));
    Rgb(std::array::from_fn(|i| {
        let top = a[i] * (1.0 - fx) + b[i] * fx;
        let bottom = c[i] * (1.0 - fx) + d[i] * fx;
        (top * (1.0 - fy) + bottom * fy).round() as u8
    }))
}

/// Encoded as a request would carry it.
pub fn jpeg(image: &RgbImage) -> bytes::Bytes {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(image)
        .expect("encodes");
    out.into()
}

/// The astronaut's head and shoulders, from the upper middle of scikit-image's 512 x 512
/// `astronaut.png`: the portrait on drawn documents, and (enlarged) the face of drawn selfies.
pub fn astronaut_head(photo: &RgbImage) -> RgbImage {
    image::imageops::crop_imm(photo, 130, 10, 260, 330).to_image()
}

/// The astronaut's head and shoulders at twice the size (520 x 660): a selfie, the face a third
/// of the frame's width.
pub fn astronaut_selfie(photo: &RgbImage) -> RgbImage {
    let head = astronaut_head(photo);
    image::imageops::resize(&head, 520, 660, image::imageops::FilterType::CatmullRom)
}

/// Five frames of [`astronaut_selfie`] with her head turning from one side to the other
/// ([`head_turn`] at steps -2 to 2); the nose is found with the 68-point landmark model in
/// `models`.
pub fn turning_selfie(photo: &RgbImage, models: &Path) -> Result<Vec<RgbImage>, ModelError> {
    let selfie = astronaut_selfie(photo);
    let nose = landmarks(&selfie, models)?[30];
    Ok([-2.0, -1.0, 0.0, 1.0, 2.0]
        .map(|step| head_turn(&selfie, nose, step))
        .to_vec())
}

/// The 68 landmarks of the largest face on `image`, by the model in `models`.
fn landmarks(image: &RgbImage, models: &Path) -> Result<Vec<(f32, f32)>, ModelError> {
    let engine = Biometrics::load(models, LANDMARKS_68, false, 1)?;
    let prepared = Prepared::new(image);
    let face = *engine
        .detect(&prepared)
        .first()
        .expect("the drawn selfie's face is found");
    Ok(engine.landmarks(&prepared, face))
}

/// The astronaut's selfie as a head in 3-D, its relief built on the landmarks that the 68-point
/// model in `models` finds.
pub fn astronaut_in_3d(photo: &RgbImage, models: &Path) -> Result<head::Head, ModelError> {
    let selfie = astronaut_selfie(photo);
    let landmarks = landmarks(&selfie, models)?;
    Ok(head::Head::new(selfie, &landmarks))
}

/// `photo` as a flat picture turned about its vertical axis by `degrees` (positive: its right
/// edge away from the camera), seen from three picture widths away: what a print or a screen
/// held up to imitate a head's turn looks like.
pub fn flat_turn(photo: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let camera = 3.0 * w;
    let corner = |x: f32, y: f32| {
        let (dx, dy) = (x - w / 2.0, y - h / 2.0);
        let k = camera / (camera + dx * sin);
        (w / 2.0 + dx * cos * k, h / 2.0 + dy * k)
    };
    let projection = Projection::from_control_points(
        [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)],
        [
            corner(0.0, 0.0),
            corner(w, 0.0),
            corner(w, h),
            corner(0.0, h),
        ],
    )
    .expect("four corners in general position");
    imageproc::geometric_transformations::warp(
        photo,
        projection,
        Interpolation::Bilinear,
        Border::Constant(Rgb([128, 128, 128])),
    )
}

/// The yaw and pitch (degrees) of each frame of a capture answering `steps`, `peak` degrees
/// each: frontal, out in two frames, held for one, back in two, frontal for two; 19 frames for
/// three steps, within a capture's 24.
pub fn answer_angles(steps: &[ChallengeStep], peak: f32) -> Vec<(f32, f32)> {
    let mut angles = vec![(0.0, 0.0)];
    for step in steps {
        let (yaw, pitch) = match step {
            ChallengeStep::TurnLeft => (peak, 0.0),
            ChallengeStep::TurnRight => (-peak, 0.0),
            ChallengeStep::LookUp => (0.0, peak),
            ChallengeStep::LookDown => (0.0, -peak),
        };
        angles.extend([0.5, 1.0, 1.0, 0.5, 0.0].map(|k| (k * yaw, k * pitch)));
    }
    angles
}

/// Frame `step` of a selfie whose head turns: the face around `nose` (the nose tip, in
/// `selfie`'s pixels) shifts sideways against the rest of the face by 5 px per step (at
/// about 85 px between the eyes, 0.12 of that distance from one end of the turn to the other),
/// as the nose does against the cheeks when a head turns a few degrees, while the whole frame
/// drifts with the hand holding the phone. A flat picture cannot move so; liveness looks for
/// it.
pub fn head_turn(selfie: &RgbImage, nose: (f32, f32), step: f32) -> RgbImage {
    let (nx, ny) = nose;
    let shift = 5.0 * step;
    let spread = 2.0 * 40.0f32.powi(2);
    warp_with(
        selfie,
        move |x, y| {
            let near = (-((x - nx).powi(2) + (y - ny).powi(2)) / spread).exp();
            (x - shift * near - 2.0 * step, y - step)
        },
        Interpolation::Bilinear,
        Border::Replicate,
    )
}
