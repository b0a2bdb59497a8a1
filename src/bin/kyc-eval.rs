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
//! It prints the specimen data it reads; run it on specimens and test images only.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::doc_capture::Captured;
use kyc_orchestrator::agents::document_agents;
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
    Ocr { dir: PathBuf },
}

/// Published specimens: file-name stem, document number, birth, expiry.
const SPECIMENS: &[(&str, &str, &str, &str)] = &[
    ("passport-td3", "L898902C3", "1974-08-12", "2012-04-15"),
    ("passport-td2", "D23145890", "1974-08-12", "2012-04-15"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.mode {
        Mode::Ocr { dir } => ocr(&dir, &args.models, args.debug.as_deref()),
    }
}

fn ocr(dir: &Path, models: &Path, debug: Option<&Path>) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::defaults();
    let (capture, reader) = document_agents(&settings, models)?;
    let today = chrono::Utc::now().date_naive();

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

    println!(
        "{:<22} {:>8} {:<5} {:<6} {:<11} {:<11} {:>6} {:>6}  doc_capture issues / ocr reasons",
        "image", "expected", "found", "valid", "number", "birth", "dc ms", "ocr ms"
    );
    let (mut expected_valid, mut validated, mut wrong) = (0, 0, 0);
    let (mut dc_times, mut ocr_times) = (Vec::new(), Vec::new());
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let expected: Option<u32> = name.split_once('_').and_then(|(n, _)| n.parse().ok());
        let image = ImageData::parse(Bytes::from(std::fs::read(path)?), &settings.limits.images())?;

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
    println!("validated with a wrong number or date (specimens): {wrong}");
    println!(
        "latency p50: doc_capture {:.0} ms, ocr {:.0} ms (one thread, {} images)",
        median(&mut dc_times),
        median(&mut ocr_times),
        files.len()
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
