//! Measures the real agents on a folder of images, outside the service.
//!
//!     kyc-eval ocr ../shared/data/mrz
//!
//! `ocr` runs doc_capture then ocr on every image, exactly as a session would, and prints one
//! row per image and the totals. A file name starting with a number and `_` states the MRZ
//! validity score expected of it (100: every check digit valid). Files whose document is a
//! published specimen are also checked against that specimen's number and dates: a zone that
//! validates with a wrong value is the worst error an MRZ reader can make, and is counted.
//!
//! With `--turn DEG` each image is first turned on a plain table, whole: the same documents
//! photographed askew. With `--far SHARE` it is placed on the table in a phone camera's
//! 4032x3024 photo, that share of its width, as a JPEG: photographed from further away.
//!
//! It prints the specimen data it reads; run it on specimens and test images only.
//!
//! Every mode runs the agents on the embedded defaults and the `KYC__*` variables, as the
//! service would (`KYC__AGENTS__OCR__SETTINGS__DETECTION_SIDE=736`, say, to weigh a setting).
//!
//!     kyc-eval face ../shared/data/faces
//!
//! `face` runs face_match on every pair of photos, one as the selfie and the other as the
//! document's portrait, prints the distance matrix and checks every pair against the file
//! names: photos whose names differ only by digits or a `-240p`-style suffix show the same
//! person and must match; all others must not. `two_people` holds two faces and is printed but
//! not scored.
//!
//!     kyc-eval liveness ../shared/data/liveness/demo.gif
//!
//!     kyc-eval inputs target/inputs
//!
//! `inputs` writes the drawn images README's latency figures were measured with.
//!
//!     kyc-eval challenge ../shared/data
//!
//! `challenge` measures the liveness challenge (see `challenge.rs`): the pose error on a head
//! drawn in 3-D at known angles, challenges answered by that head and imitated by a flat photo,
//! and windows of real head-turn clips judged against every sequence of the vocabulary.
//!
//! `liveness` slides a window of 5 frames over the GIF (frames 0-35 a live person, 36-63 a
//! phone replay, 64-87 a printed photo; windows straddling two parts are skipped), runs
//! liveness on each and prints the confusion table. Live windows must never be `failed`, replay
//! and print windows never `passed`.

mod challenge;

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::doc_capture::Captured;
use kyc_orchestrator::agents::doc_capture::DocCapture;
use kyc_orchestrator::agents::face_match::FaceMatch;
use kyc_orchestrator::agents::liveness::Liveness;
use kyc_orchestrator::agents::ocr::{Located, Ocr};
use kyc_orchestrator::agents::standalone;
use kyc_orchestrator::domain::ImageData;

#[derive(Parser)]
#[command(about = "Evaluate the real agents on a folder of images")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Print the recognised lines of images whose zone did not validate, and write each
    /// rectified document to this folder.
    #[arg(long, global = true)]
    debug: Option<PathBuf>,
    /// Model directory (as `models.dir`).
    #[arg(long, default_value = "models", global = true)]
    models: PathBuf,
}

#[derive(Subcommand)]
enum Mode {
    /// doc_capture and ocr on document photos.
    Ocr {
        dir: PathBuf,
        /// Turn each image this many degrees (counter-clockwise) on a plain table first, the
        /// whole image kept in the frame: how the same documents read photographed askew.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        turn: f32,
        /// Place each image on a table in a 4032x3024 photo, this share of its width (0.05 to
        /// 1), as a JPEG, before any `--turn`: how the same documents read photographed from
        /// further away with a phone.
        #[arg(long)]
        far: Option<f32>,
    },
    /// face_match on every pair of face photos.
    Face { dir: PathBuf },
    /// Write the drawn inputs the benchmarks send: a passport photo with the astronaut's
    /// portrait (`document.jpg`) and five frames of her head turning (`selfie-N.jpg`).
    Inputs {
        /// scikit-image's astronaut.png (`scripts/fixtures.sh`).
        #[arg(long, default_value = "fixtures/astronaut.png")]
        face: PathBuf,
        out: PathBuf,
    },
    /// liveness on windows of an animated GIF's frames.
    Liveness {
        gif: PathBuf,
        /// Frames per window.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=10))]
        window: u16,
    },
    /// The liveness challenge: pose error, drawn heads and flat photos, real head-turn clips.
    Challenge {
        /// The shared data folder: `headturn/` clips and `liveness/demo.gif`, where present.
        data: PathBuf,
        /// scikit-image's astronaut.png (`scripts/fixtures.sh`): the drawn head's face.
        #[arg(long, default_value = "fixtures/astronaut.png")]
        face: PathBuf,
    },
}

/// Published specimens: file-name stem, document number, birth, expiry.
const SPECIMENS: &[(&str, &str, &str, &str)] = &[
    ("passport-td3", "L898902C3", "1974-08-12", "2012-04-15"),
    ("passport-td2", "D23145890", "1974-08-12", "2012-04-15"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.mode {
        Mode::Ocr { dir, turn, far } => ocr(&dir, turn, far, &args.models, args.debug.as_deref()),
        Mode::Face { dir } => face(&dir, &args.models),
        Mode::Liveness { gif, window } => liveness(&gif, usize::from(window), &args.models),
        Mode::Inputs { face, out } => inputs(&face, &out, &args.models),
        Mode::Challenge { data, face } => challenge::run(&data, &face, &args.models),
    }
}

/// The JPEG, PNG and WebP files in `dir`, sorted.
fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "webp"
                )
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

fn ocr(
    dir: &Path,
    turn: f32,
    far: Option<f32>,
    models: &Path,
    debug: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    if far.is_some_and(|share| !(0.05..=1.0).contains(&share)) {
        return Err("--far takes a share of the photo's width from 0.05 to 1".into());
    }
    let settings = Settings::load(None)?;
    let capture: DocCapture = standalone(&settings, "doc_capture", models)?;
    let reader: Ocr = standalone(&settings, "ocr", models)?;
    let today = chrono::Utc::now().date_naive();

    let files = images_in(dir)?;

    println!(
        "{:<22} {:>8} {:<5} {:<6} {:<11} {:<11} {:>6} {:>6}  doc_capture issues / ocr reasons",
        "image", "expected", "found", "valid", "number", "birth", "dc ms", "ocr ms"
    );
    let (mut expected_valid, mut validated, mut wrong) = (0, 0, 0);
    let (mut all_valid, mut by_rows) = (0, 0);
    let (mut dc_times, mut ocr_times) = (Vec::new(), Vec::new());
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let expected: Option<u32> = name.split_once('_').and_then(|(n, _)| n.parse().ok());
        let mut bytes = Bytes::from(std::fs::read(path)?);
        if let Some(share) = far {
            bytes = from_afar(&image::load_from_memory(&bytes)?.to_rgb8(), share, turn);
        } else if turn != 0.0 {
            bytes = turned(&image::load_from_memory(&bytes)?.to_rgb8(), turn)?;
        }
        let image = ImageData::parse(bytes, &settings.limits.images())?;

        let started = Instant::now();
        let captured = capture.analyse(&image, None, &Default::default())?;
        let dc_ms = started.elapsed().as_secs_f64() * 1000.0;
        let output = Captured::of(&captured)
            .cloned()
            .ok_or("doc_capture produced no document")?;
        let started = Instant::now();
        let reading = reader.read(&output, &Default::default())?;
        let report = reader.judge(&reading, None, today)?;
        let ocr_ms = started.elapsed().as_secs_f64() * 1000.0;
        dc_times.push(dc_ms);
        ocr_times.push(ocr_ms);

        let valid = reading.mrz.as_ref().is_some_and(|m| m.checks.all_valid());
        all_valid += usize::from(valid);
        by_rows += usize::from(valid && reading.located_by == Located::PrintRows);
        let extracted = report.extracted.clone().unwrap_or_default();
        let field = |key: &str| extracted[key].as_str().unwrap_or("-").to_owned();
        if expected == Some(100) {
            expected_valid += 1;
            validated += usize::from(valid);
        }
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        if valid
            && let Some((_, number, birth, expiry)) = SPECIMENS.iter().find(|s| s.0 == stem)
            && (field("document_number") != *number
                || field("date_of_birth") != *birth
                || field("date_of_expiry") != *expiry)
        {
            wrong += 1;
            println!("  ^ validated with a wrong value against the published specimen");
        }
        let issues = captured.details["issues"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        println!(
            "{:<22} {:>8} {:<5} {:<6} {:<11} {:<11} {:>6.0} {:>6.0}  {} / {}",
            name,
            expected.map_or("-".into(), |e| e.to_string()),
            if reading.mrz.is_some() { "yes" } else { "no" },
            if valid { "yes" } else { "no" },
            field("document_number"),
            field("date_of_birth"),
            dc_ms,
            ocr_ms,
            if issues.is_empty() { "-" } else { &issues },
            report.reasons.join(","),
        );
        if let Some(debug) = debug {
            output.front.save(debug.join(format!("{stem}.png")))?;
            println!("    measures: {}", captured.details["measures"]);
            if !valid {
                for line in &reading.text {
                    println!("    read: {line}");
                }
            }
        }
    }
    println!();
    println!(
        "images marked 100 fully validated: {validated}/{expected_valid} ({:.0} %)",
        100.0 * validated as f64 / expected_valid.max(1) as f64
    );
    println!(
        "all images fully validated: {all_valid}/{}, of which {by_rows} from rows of print \
         (the others through the text detector)",
        files.len()
    );
    println!("validated with a wrong number or date (specimens): {wrong}");
    println!(
        "latency p50: doc_capture {:.0} ms, ocr {:.0} ms (one thread, {} images)",
        median(&mut dc_times),
        median(&mut ocr_times),
        files.len()
    );
    Ok(())
}

/// The plain brown table documents are photographed on.
const TABLE: image::Rgb<u8> = image::Rgb([96, 84, 72]);

/// `photo` turned `degrees` counter-clockwise about its centre, the corners it uncovers filled
/// with the table.
fn turn_on_table(photo: &image::RgbImage, degrees: f32) -> image::RgbImage {
    use imageproc::geometric_transformations::{Border, Interpolation, rotate_about_center};
    // imageproc turns clockwise for a positive angle (y points down).
    rotate_about_center(
        photo,
        -degrees.to_radians(),
        Interpolation::Bilinear,
        Border::Constant(TABLE),
    )
}

/// `photo` on the table in a 4032x3024 photo, `share` of its width (its height cut to the
/// photo's), turned `degrees` counter-clockwise about the photo's centre, as a JPEG.
fn from_afar(photo: &image::RgbImage, share: f32, degrees: f32) -> Bytes {
    let (width, height) = (4032u32, 3024u32);
    let w = (width as f32 * share).round() as u32;
    let h = (photo.height() as f32 * w as f32 / photo.width() as f32).round() as u32;
    let scaled = image::imageops::resize(photo, w, h, image::imageops::FilterType::CatmullRom);
    let mut canvas = image::RgbImage::from_pixel(width, height, TABLE);
    let centred = |outer: u32, inner: u32| (i64::from(outer) - i64::from(inner)) / 2;
    image::imageops::replace(&mut canvas, &scaled, centred(width, w), centred(height, h));
    if degrees != 0.0 {
        canvas = turn_on_table(&canvas, degrees);
    }
    kyc_orchestrator::specimen::jpeg(&canvas)
}

/// `photo` turned `degrees` counter-clockwise on the table, large enough to hold all of it, as
/// a lossless PNG.
fn turned(photo: &image::RgbImage, degrees: f32) -> Result<Bytes, image::ImageError> {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let side = |a: f32, b: f32| (a * cos.abs() + b * sin.abs()).ceil() as u32 + 20;
    let mut canvas = image::RgbImage::from_pixel(side(w, h), side(h, w), TABLE);
    let (x, y) = (
        (canvas.width() - photo.width()) / 2,
        (canvas.height() - photo.height()) / 2,
    );
    image::imageops::replace(&mut canvas, photo, i64::from(x), i64::from(y));
    let turned = turn_on_table(&canvas, degrees);
    let mut out = std::io::Cursor::new(Vec::new());
    turned.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner().into())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The person a face photo shows, from its file name: the stem after any `folder__` prefix,
/// without trailing digits or a resolution suffix (`obama2`, `obama-480p` are `obama`).
fn person(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
    let stem = stem.rsplit("__").next().unwrap_or(stem);
    let stem = stem
        .split_once("-240p")
        .or_else(|| stem.split_once("-480p"))
        .map_or(stem, |(person, _)| person);
    stem.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_owned()
}

fn face(dir: &Path, models: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(None)?;
    let limits = settings.limits.images();
    let matcher: FaceMatch = standalone(&settings, "face_match", models)?;
    let files = images_in(dir)?;
    let images = files
        .iter()
        .map(|path| {
            let bytes = Bytes::from(std::fs::read(path)?);
            let decoded = image::load_from_memory(&bytes)?.to_rgb8();
            Ok((
                ImageData::parse(bytes, &limits)?,
                std::sync::Arc::new(decoded),
            ))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            stem.rsplit("__").next().unwrap_or(stem).to_owned()
        })
        .collect();

    print!("{:<20}", "selfie \\ document");
    for name in &names {
        print!(" {:>9.9}", name);
    }
    println!();
    let (mut same, mut same_ok, mut different, mut different_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut times = Vec::new();
    for (i, (selfie, _)) in images.iter().enumerate() {
        print!("{:<20.20}", names[i]);
        for (j, (_, portrait)) in images.iter().enumerate() {
            if i == j {
                print!(" {:>9}", "-");
                continue;
            }
            let document = Captured {
                front: portrait.clone(),
                photo: None,
                back: None,
                portrait: Some(portrait.clone()),
            };
            let started = Instant::now();
            let report = matcher.compare(
                None,
                std::slice::from_ref(selfie),
                &document,
                &Default::default(),
            )?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            let distance = report.details["distance"].as_f64();
            print!(" {:>9}", distance.map_or("-".into(), |d| format!("{d:.3}")));
            let scored = !names[i].contains("two_people") && !names[j].contains("two_people");
            if !scored {
                continue;
            }
            let passed = report.reasons.is_empty();
            if person(&files[i]) == person(&files[j]) {
                same += 1;
                same_ok += usize::from(passed);
                if !passed {
                    failures.push(format!(
                        "{} vs {}: {:?}",
                        names[i], names[j], report.reasons
                    ));
                }
            } else {
                different += 1;
                let mismatch = report.reasons.iter().any(|r| r == "face_mismatch");
                different_ok += usize::from(mismatch);
                if !mismatch {
                    failures.push(format!(
                        "{} vs {}: {:?}",
                        names[i], names[j], report.reasons
                    ));
                }
            }
        }
        println!();
    }
    let thresholds = &settings.agents["face_match"].settings;
    println!();
    println!("thresholds: {thresholds}");
    println!("same-person pairs matched: {same_ok}/{same}");
    println!("different-person pairs found different (face_mismatch): {different_ok}/{different}");
    for failure in &failures {
        println!("  not as expected: {failure}");
    }
    println!(
        "face_match latency p50: {:.0} ms (one thread, {} comparisons)",
        median(&mut times),
        times.len()
    );
    Ok(())
}

/// Every frame of an animated GIF, as a PNG the agents accept.
fn gif_frames(gif: &Path) -> Result<Vec<ImageData>, Box<dyn std::error::Error>> {
    use image::AnimationDecoder;

    let limits = Settings::defaults().limits.images();
    let decoder =
        image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(gif)?))?;
    decoder
        .into_frames()
        .collect_frames()?
        .into_iter()
        .map(|frame| {
            let rgb = image::DynamicImage::ImageRgba8(frame.into_buffer()).to_rgb8();
            let mut png = Vec::new();
            rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            Ok(ImageData::parse(Bytes::from(png), &limits)?)
        })
        .collect()
}

fn liveness(gif: &Path, window: usize, models: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(None)?;
    let checker: Liveness = standalone(&settings, "liveness", models)?;
    let frames = gif_frames(gif)?;
    let truth = |frame: usize| match frame {
        0..=35 => "live",
        36..=63 => "replay",
        _ => "print",
    };
    const KINDS: [&str; 3] = ["live", "replay", "print"];
    const OUTCOMES: [&str; 3] = ["passed", "review", "failed"];
    let mut table = [[0usize; 3]; 3];
    let mut times = Vec::new();
    println!("window  truth   outcome  score  live  spoof  signals");
    for start in 0..frames.len().saturating_sub(window - 1) {
        let kind = truth(start);
        if truth(start + window - 1) != kind {
            continue;
        }
        let started = Instant::now();
        let report = checker.analyse(&frames[start..start + window], None, &Default::default())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let outcome = if report.reasons.is_empty() {
            "passed"
        } else if report.reasons.iter().any(|r| r == "liveness_failed") {
            "failed"
        } else {
            "review"
        };
        let row = KINDS.iter().position(|k| *k == kind).expect("a kind");
        let column = OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .expect("an outcome");
        table[row][column] += 1;
        let d = &report.details;
        println!(
            "{:>2}-{:<2}  {:<7} {:<8} {:>5} {:>5} {:>6}  {} {}",
            start,
            start + window - 1,
            kind,
            outcome,
            d["score"],
            d["live_evidence"],
            d["spoof_evidence"],
            d["signals"],
            report.reasons.join(","),
        );
    }
    println!();
    println!(
        "{:<8} {:>7} {:>7} {:>7}",
        "truth", "passed", "review", "failed"
    );
    for (kind, row) in KINDS.iter().zip(table) {
        println!("{:<8} {:>7} {:>7} {:>7}", kind, row[0], row[1], row[2]);
    }
    let live_failed = table[0][2];
    let spoof_passed = table[1][0] + table[2][0];
    println!("live windows failed: {live_failed}; replay or print windows passed: {spoof_passed}");
    println!(
        "liveness latency p50: {:.0} ms per {window}-frame window (one thread, {} windows)",
        median(&mut times),
        times.len()
    );
    Ok(())
}

fn inputs(face: &Path, out: &Path, models: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use kyc_orchestrator::specimen;

    std::fs::create_dir_all(out)?;
    let photo = image::open(face)?.to_rgb8();
    let page = specimen::Page {
        portrait: Some(specimen::astronaut_head(&photo)),
        ..specimen::Page::default()
    };
    let document = specimen::photo(&specimen::page(&page), specimen::ASKEW);
    std::fs::write(out.join("document.jpg"), specimen::jpeg(&document))?;

    let frames = specimen::turning_selfie(&photo, models)?;
    for (i, frame) in frames.iter().enumerate() {
        std::fs::write(out.join(format!("selfie-{i}.jpg")), specimen::jpeg(frame))?;
    }
    println!(
        "wrote {}/document.jpg and selfie-0.jpg .. selfie-4.jpg",
        out.display()
    );
    Ok(())
}
