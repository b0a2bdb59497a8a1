//! liveness and face_match on faces from registry packages (`scripts/fixtures.sh`): the
//! astronaut, transformed, against her own document portrait and against Grace Hopper; and
//! selfie sequences made to move as a head does and as a flat picture does.

use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{Border, Interpolation, Projection, warp};
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::doc_capture::Captured;
use kyc_orchestrator::agents::face_match::FaceMatch;
use kyc_orchestrator::agents::liveness::Liveness;
use kyc_orchestrator::agents::selfie::Selfie;
use kyc_orchestrator::agents::{Report, standalone};
use kyc_orchestrator::domain::ImageData;

use crate::render::{self, frames};

const HOPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/grace_hopper.jpg");

struct Agents {
    liveness: Liveness,
    face_match: FaceMatch,
}

fn models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The agents as the default configuration builds them, models loaded once for every test.
fn agents() -> &'static Agents {
    static AGENTS: OnceLock<Agents> = OnceLock::new();
    AGENTS.get_or_init(|| {
        let settings = Settings::defaults();
        let fetched = "scripts/models.sh has fetched the models";
        Agents {
            liveness: standalone(&settings, "liveness", &models()).expect(fetched),
            face_match: standalone(&settings, "face_match", &models()).expect(fetched),
        }
    })
}

fn open(path: &str) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; scripts/fixtures.sh fetches it"))
        .to_rgb8()
}

fn astronaut() -> RgbImage {
    render::selfie()
}

/// liveness on the frames; its signals are printed, for the record of what was measured.
fn liveness(images: &[RgbImage]) -> Report {
    let report = agents()
        .liveness
        .analyse(&frames(images), None, &Default::default())
        .unwrap();
    println!("signals: {}", report.details["signals"]);
    report
}

/// A photo of the astronaut turned about its vertical axis in front of the camera, by up to
/// about 40 degrees at `turn` 1: one plane, foreshortened.
fn turned_photo(turn: f32) -> RgbImage {
    let image = astronaut();
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (narrow, far) = (0.25 * turn * w, 0.08 * turn * h);
    let projection = Projection::from_control_points(
        [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)],
        [
            (0.0, 0.0),
            (w - narrow, far),
            (w - narrow, h - far),
            (0.0, h),
        ],
    )
    .unwrap();
    warp(
        &image,
        projection,
        Interpolation::Bilinear,
        Border::Constant(Rgb([128, 128, 128])),
    )
}

/// `image` in black and white: a photocopy or a faded print.
fn grey(image: &RgbImage) -> RgbImage {
    image::DynamicImage::ImageLuma8(image::imageops::grayscale(image)).to_rgb8()
}

fn reasons(report: &Report) -> Vec<&str> {
    report.reasons.iter().map(String::as_str).collect()
}

fn expect_reasons(report: &Report, expected: &[&str]) {
    assert_eq!(reasons(report), expected, "{}", report.details);
}

fn head_turning() -> Vec<RgbImage> {
    render::turning_selfie(&render::astronaut_photo(), &models()).unwrap()
}

fn photo_turning(make: impl Fn(RgbImage) -> RgbImage) -> Vec<RgbImage> {
    [0.0, 0.25, 0.5, 0.75, 1.0]
        .map(|turn| make(turned_photo(turn)))
        .to_vec()
}

#[test]
fn a_head_turning_passes_on_its_parallax() {
    let report = liveness(&head_turning());

    assert!(report.reasons.is_empty(), "{}", report.details);
    let motion = &report.details["signals"]["motion"];
    assert!(motion["parallax"].as_f64().unwrap() >= 1.0, "{motion}");
    assert!(report.details["live_evidence"] == 1.0);
    assert!(report.score.unwrap() > 0.9);
    assert_eq!(report.details["frames"].as_array().unwrap().len(), 5);
}

#[test]
fn a_photo_turned_in_front_of_the_camera_never_passes() {
    let report = liveness(&photo_turning(|photo| photo));

    expect_reasons(&report, &["liveness_inconclusive"]);
    let motion = &report.details["signals"]["motion"];
    // It moved (foreshortened) and stayed one plane: some evidence of a flat picture, and
    // too little non-planar motion for a head.
    assert!(motion["flat"].as_f64().unwrap() > 0.1, "{motion}");
    assert!(motion["parallax"].as_f64().unwrap() < 1.0, "{motion}");
}

#[test]
fn a_black_and_white_photo_turned_in_front_of_the_camera_fails() {
    let report = liveness(&photo_turning(|photo| grey(&photo)));

    expect_reasons(&report, &["liveness_failed"]);
    assert!(report.details["signals"]["print_cue"] == 1.0);
    assert!(report.details["spoof_evidence"].as_f64().unwrap() >= 0.7);
}

/// A colour photo held in a hand: each frame moved a pixel or two and scaled a little, and
/// encoded at its own JPEG quality, so the landmarks jitter as they do on a real camera.
fn held_still(photo: &RgbImage) -> Vec<RgbImage> {
    let (w, h) = photo.dimensions();
    [
        (0.0, 0.0, 1.0, 90),
        (1.5, -1.0, 1.01, 75),
        (-1.0, 2.0, 0.99, 85),
        (2.5, 1.0, 1.0, 70),
        (-2.0, -1.5, 1.015, 80),
    ]
    .map(|(dx, dy, k, quality)| {
        let projection = Projection::translate(dx, dy)
            * Projection::translate(w as f32 / 2.0, h as f32 / 2.0)
            * Projection::scale(k, k)
            * Projection::translate(-(w as f32) / 2.0, -(h as f32) / 2.0);
        let moved = warp(
            photo,
            projection,
            Interpolation::Bilinear,
            Border::Constant(Rgb([128, 128, 128])),
        );
        encoded_at(&moved, quality)
    })
    .to_vec()
}

#[test]
fn a_colour_photo_held_still_never_passes_at_any_resolution_counted() {
    // About 85 and 46 px between the eyes: the second just above `min_interocular_px`.
    for photo in [astronaut(), render::shrunk(&astronaut(), 286)] {
        let report = liveness(&held_still(&photo));

        expect_reasons(&report, &["liveness_inconclusive"]);
        assert_eq!(report.details["signals"]["motion"]["resolved"], true);
    }
}

#[test]
fn a_cue_alone_never_fails_a_session() {
    // Black and white and held still: the print cue, and no motion either way.
    let report = liveness(&vec![grey(&astronaut()); 5]);

    expect_reasons(&report, &["liveness_inconclusive"]);
    assert!(report.details["signals"]["print_cue"] == 1.0);
}

#[test]
fn one_frame_is_never_a_pass() {
    let report = liveness(&[astronaut()]);

    assert_eq!(reasons(&report), ["liveness_inconclusive"]);
    assert_eq!(report.details["signals"]["motion"]["why"], "one_frame");
}

#[test]
fn a_face_too_small_to_resolve_gives_no_motion_evidence() {
    let small: Vec<RgbImage> = head_turning()
        .iter()
        .map(|frame| render::shrunk(frame, 160))
        .collect();

    let report = liveness(&small);

    expect_reasons(&report, &["liveness_inconclusive"]);
    assert_eq!(report.details["signals"]["motion"]["why"], "face_too_small");
}

#[test]
fn frames_without_a_face_fail_liveness_without_declining() {
    let report = liveness(&[render::blank(), render::blank()]);

    assert_eq!(reasons(&report), ["no_face_in_selfie"]);
    assert!(
        !Settings::defaults()
            .policy
            .decline_on
            .contains(&"no_face_in_selfie".to_owned())
    );
}

/// The astronaut's document, photographed, through doc_capture: what face_match is handed.
fn document(page: &render::Page) -> Captured {
    static CAPTURE: OnceLock<kyc_orchestrator::agents::doc_capture::DocCapture> = OnceLock::new();
    let capture = CAPTURE.get_or_init(|| {
        standalone(&Settings::defaults(), "doc_capture", &models())
            .expect("scripts/models.sh has fetched the models")
    });
    let photo = render::photo(&render::page(page), render::ASKEW);
    let image =
        ImageData::parse(render::jpeg(&photo), &Settings::defaults().limits.images()).unwrap();
    let report = capture.analyse(&image, None, &Default::default()).unwrap();
    Captured::of(&report).unwrap().clone()
}

fn astronaut_document() -> Captured {
    static DOCUMENT: OnceLock<Captured> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| document(&render::portrait_page()))
        .clone()
}

fn face_match(selfie: &[RgbImage], document: &Captured) -> Report {
    agents()
        .face_match
        .compare(None, &frames(selfie), document, &Default::default())
        .unwrap()
}

fn distance(report: &Report) -> f64 {
    report.details["distance"].as_f64().unwrap()
}

fn encoded_at(image: &RgbImage, quality: u8) -> RgbImage {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .unwrap();
    image::load_from_memory(&out).unwrap().to_rgb8()
}

#[test]
fn the_same_person_matches_her_document_portrait_however_the_selfie_was_taken() {
    let selfie = astronaut();
    let variants = [
        ("as taken", selfie.clone()),
        ("smaller", render::shrunk(&selfie, 320)),
        (
            "turned 8 degrees",
            imageproc::geometric_transformations::rotate_about_center(
                &selfie,
                8f32.to_radians(),
                Interpolation::Bilinear,
                Border::Constant(Rgb([90, 90, 90])),
            ),
        ),
        ("brighter", image::imageops::colorops::brighten(&selfie, 45)),
        ("JPEG quality 30", encoded_at(&selfie, 30)),
    ];
    let document = astronaut_document();
    for (how, variant) in variants {
        let report = face_match(&[variant], &document);
        println!("{how}: distance {}", report.details["distance"]);

        assert!(report.reasons.is_empty(), "{how}: {}", report.details);
        assert!(distance(&report) <= 0.5, "{how}: {}", report.details);
        assert_eq!(report.details["document"]["found_on"], "portrait");
    }
}

#[test]
fn another_person_is_a_mismatch() {
    let report = face_match(&[open(HOPPER)], &astronaut_document());

    expect_reasons(&report, &["face_mismatch"]);
    assert!(distance(&report) >= 0.6);
    assert!(report.score.unwrap() < 0.4);
}

#[test]
fn two_people_in_the_selfie_go_to_review() {
    let (one, other) = (astronaut(), open(HOPPER));
    let other = render::shrunk(&other, 460);
    let mut both = RgbImage::from_pixel(1000, 660, Rgb([200, 200, 200]));
    image::imageops::overlay(&mut both, &one, 0, 0);
    image::imageops::overlay(&mut both, &other, 520, 60);

    let report = face_match(&[both], &astronaut_document());

    assert_eq!(report.details["selfie"]["faces"], 2, "{}", report.details);
    assert!(reasons(&report).contains(&"multiple_faces_in_selfie"));
}

#[test]
fn a_selfie_without_a_face_and_a_document_without_one_say_which() {
    let report = face_match(&[render::blank()], &astronaut_document());
    assert_eq!(reasons(&report), ["no_face_in_selfie"]);

    let faceless = document(&render::Page::default());
    let report = face_match(&[astronaut()], &faceless);
    assert_eq!(reasons(&report), ["no_face_on_document"]);
}

#[test]
fn face_match_uses_the_sharpest_frame_liveness_analysed() {
    let sharp = astronaut();
    let soft = render::blurred(&sharp);
    let checked = liveness(&[soft.clone(), sharp, soft]);
    let selfie = Selfie::of(&checked).expect("liveness hands its analysis on");

    let report = agents()
        .face_match
        .compare(
            Some(selfie),
            &[],
            &astronaut_document(),
            &Default::default(),
        )
        .unwrap();

    assert_eq!(report.details["selfie"]["frame"], 1, "{}", report.details);
    assert!(report.reasons.is_empty(), "{}", report.details);
}

#[tokio::test]
async fn a_session_on_the_default_plan_approves_a_live_person_matching_her_document() {
    let store = crate::durable::TestStore::new(crate::durable::Backend::Sqlite).await;
    let app = crate::helpers::spawn_real_agents_app_with(|s| store.configure(s)).await;
    let photo = render::photo(&render::page(&render::portrait_page()), render::ASKEW);
    let selfie: Vec<String> = head_turning()
        .iter()
        .map(|frame| crate::helpers::b64(&render::jpeg(frame)))
        .collect();
    let body = serde_json::json!({
        "selfie": { "frames": selfie },
        "document": { "type": "passport", "front": crate::helpers::b64(&render::jpeg(&photo)) },
        "claimed": { "surname": "Eriksson", "date_of_birth": "1974-08-12" },
    });

    let events = app.stream_session(&body).await;

    let done = crate::helpers::completion(&events);
    assert_eq!(done["decision"], "approved", "{done:#}");
    for check in ["liveness", "doc_capture", "ocr", "face_match"] {
        assert_eq!(
            done["checks"][check]["status"], "passed",
            "{check}: {done:#}"
        );
    }
    assert_eq!(
        done["checks"]["ocr"]["extracted"]["document_number"],
        "L898902C3"
    );
    assert!(
        done["checks"]["face_match"]["details"]["distance"]
            .as_f64()
            .unwrap()
            <= 0.5
    );

    // The reviewer sees the portrait the agents compared beside the photo it came from.
    let id = done["session_id"].as_str().unwrap();
    let index: serde_json::Value = app
        .get(&format!("/v1/sessions/{id}/images"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        index["images"].as_array().unwrap()[..2],
        ["document_front", "document_portrait"]
    );
    let portrait = app
        .get(&format!("/v1/sessions/{id}/images/document_portrait"))
        .await;
    assert_eq!(portrait.headers()["content-type"], "image/png");
    let portrait = image::load_from_memory(&portrait.bytes().await.unwrap()).unwrap();
    let (width, height) = (portrait.width(), portrait.height());
    let (page_w, page_h) = (photo.width(), photo.height());
    assert!(
        width >= 64 && height >= 64 && 4 * width * height < page_w * page_h,
        "a crop of the face, not the page: {width}x{height} of {page_w}x{page_h}"
    );

    // With no sandbox agent configured, a request cannot script an outcome.
    let mut scripted = body.clone();
    scripted["sandbox"] = serde_json::json!({ "liveness": { "result": "pass" } });
    let response = app.post_session(&scripted).await;
    assert_eq!(response.status(), 400);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("only accepted when sandbox agents are configured"),
        "{problem}"
    );
}

// The shared data's tests hold a floor for what README's Accuracy section reports.
#[test]
fn the_shared_face_photos_match_exactly_their_own_person() {
    let Some(dir) = crate::helpers::shared_data("faces") else {
        return;
    };
    // `obama`, `obama2`, `obama-480p` are one person; `two_people` holds two faces.
    let person = |path: &std::path::Path| {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let stem = stem.rsplit("__").next().unwrap();
        let stem = stem
            .split('-')
            .next()
            .filter(|_| stem.starts_with("obama"))
            .unwrap_or(stem);
        stem.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned()
    };
    let mut photos: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains("two_people"))
        .collect();
    photos.sort();
    let images: Vec<RgbImage> = photos.iter().map(|p| open(p.to_str().unwrap())).collect();
    let mut compared = 0;
    for (i, selfie) in images.iter().enumerate() {
        for (j, portrait) in images.iter().enumerate().skip(i + 1) {
            let document = Captured {
                front: std::sync::Arc::new(portrait.clone()),
                photo: None,
                back: None,
                portrait: Some(std::sync::Arc::new(portrait.clone())),
            };
            let report = face_match(std::slice::from_ref(selfie), &document);
            let pair = format!("{} / {}", photos[i].display(), photos[j].display());
            if person(&photos[i]) == person(&photos[j]) {
                assert!(report.reasons.is_empty(), "{pair}: {}", report.details);
            } else {
                assert_eq!(
                    reasons(&report),
                    ["face_mismatch"],
                    "{pair}: {}",
                    report.details
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 28, "{compared} pairs in {}", dir.display());
}

#[test]
fn the_shared_liveness_clip_never_fails_a_live_window_nor_passes_a_spoof() {
    use image::AnimationDecoder;

    let Some(gif) = crate::helpers::shared_data("liveness/demo.gif") else {
        return;
    };
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(gif).unwrap(),
    ))
    .unwrap();
    let images: Vec<RgbImage> = decoder
        .into_frames()
        .collect_frames()
        .unwrap()
        .into_iter()
        .map(|frame| image::DynamicImage::ImageRgba8(frame.into_buffer()).to_rgb8())
        .collect();
    assert_eq!(images.len(), 88);
    // Frames 0-35 live, 36-63 a phone replay, 64-87 a print; every fourth window of five.
    for start in (0..=83).step_by(4) {
        let live = start + 4 <= 35;
        if !live && start <= 35 {
            continue;
        }
        let report = liveness(&images[start..start + 5]);
        let window = format!("frames {start}-{}: {}", start + 4, report.details);
        if live {
            assert!(!reasons(&report).contains(&"liveness_failed"), "{window}");
        } else {
            assert!(!report.reasons.is_empty(), "{window}");
        }
    }
}

#[test]
fn tiny_and_thin_images_are_no_face_never_a_crash() {
    let odd = [
        RgbImage::from_pixel(1, 1, Rgb([200, 180, 160])),
        RgbImage::from_pixel(3, 400, Rgb([200, 180, 160])),
        RgbImage::from_pixel(400, 3, Rgb([200, 180, 160])),
    ];

    let report = liveness(&odd);
    assert_eq!(reasons(&report), ["no_face_in_selfie"]);

    let tiny = std::sync::Arc::new(odd[0].clone());
    let document = Captured {
        front: tiny.clone(),
        photo: None,
        back: None,
        portrait: Some(tiny),
    };
    let report = face_match(&[astronaut()], &document);
    assert_eq!(reasons(&report), ["no_face_on_document"]);
}
