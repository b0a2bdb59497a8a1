//! ocr: read the document's machine-readable zone, check it, and compare it with what the
//! applicant claimed.
//!
//! The zone's lines are first looked for as rows of dense print across the rectified page,
//! which costs a few milliseconds (`text::dense_lines`); where what they read does not verify,
//! text lines are detected by the model, each along its own direction (a page
//! photographed turned has tilted lines). The long lines (an MRZ line spans the document) are
//! cut out level, recognised and handed to the `mrz` crate, which finds the zone in the text,
//! parses TD1/TD2/TD3 and visa layouts and verifies every check digit. It corrects a misread
//! character only where a check digit confirms the correction (its `repair` module), and
//! reports a zone that needed its damaged-capture search, which is recorded here.

use std::sync::Arc;

use chrono::Datelike;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod claims;

use super::doc_capture::Captured;
use super::warm::{Loader, Loading, Warm};
use super::{
    AgentContext, AgentError, AgentKind, CheckSettings, CpuAgent, Report, Resources, rounded,
};
use crate::domain::Claimed;
use crate::models::ModelError;
use crate::vision::text::{self, DetectSettings, TextBox, TextEngine};

/// Thresholds, from the agent's `settings` table; every check records the ones it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcrSettings {
    /// The agent that provides the rectified document.
    pub document_from: String,
    /// Longer side the document is scaled to for text detection.
    pub detection_side: u32,
    /// A detected line is an MRZ candidate when at least this share of the image's width...
    pub min_line_width: f64,
    /// ...and at least this many times wider than high.
    pub min_line_aspect: f64,
    /// Candidates recognised per side, the bottom-most first.
    pub max_lines: usize,
    /// A line tilted more than this (degrees) is not a candidate. Below it, the line of a page
    /// photographed turned is read along its own direction.
    pub max_line_tilt_deg: f64,
}

impl Default for OcrSettings {
    fn default() -> Self {
        Self {
            document_from: "doc_capture".into(),
            // PP-OCR's own default. Against 1,024 it costs half as much, and `kyc-eval ocr`
            // validated the same zones upright and more of them turned 35 degrees (README,
            // Accuracy).
            detection_side: 736,
            // The image read is the photo as taken where no outline was found, and there the
            // document may cover a third of the frame's width or less: its zone's lines then span
            // about a third. On a rectified page the zone's lines are still the lowest, and read
            // first (README, Accuracy).
            min_line_width: 0.2,
            min_line_aspect: 8.0,
            max_lines: 6,
            max_line_tilt_deg: 30.0,
        }
    }
}

/// Lines in the largest zone (TD1's three).
const ZONE_LINES: usize = 3;

/// The zone is at the bottom: keeps the lowest `n` of `lines` (top to bottom).
fn keep_lowest(lines: &mut Vec<TextBox>, n: usize) {
    lines.drain(..lines.len().saturating_sub(n));
}

/// The lowest of `lines` (top to bottom) and those just above it that could be lines of one
/// zone with it: as long to within 15 %, each within three heights of the next, three at most.
fn zone_like(lines: &[TextBox]) -> Vec<TextBox> {
    let Some(lowest) = lines.last() else {
        return Vec::new();
    };
    let mut zone = vec![*lowest];
    for line in lines.iter().rev().skip(1) {
        let below = zone.last().expect("the lowest line");
        if zone.len() == ZONE_LINES
            || (line.length - lowest.length).abs() > 0.15 * lowest.length
            || below.centre_y() - line.centre_y() > 3.0 * below.thickness
        {
            break;
        }
        zone.push(*line);
    }
    zone.reverse();
    zone
}

/// The share of a side searched first: a passport's zone is in its lowest quarter, an ID
/// card's in its lowest two fifths, with room left for an outline a little too large.
const LOWER_PART: f32 = 0.55;

#[derive(Clone)]
pub struct Ocr {
    settings: OcrSettings,
    engine: Warm<TextEngine>,
}

/// A zone read from one side of the document.
pub struct Reading {
    pub mrz: Option<mrz::MrzData>,
    /// The recognised candidate lines, normalised: personal data, never logged or stored (the
    /// evaluation command prints them for specimens).
    pub text: Vec<String>,
    /// Lines recognised, and their mean confidence.
    pub lines: usize,
    pub confidence: f32,
    /// The median tilt of those lines, degrees (positive: falling to the right), and whether
    /// they are the second try's (split lines joined, lines beside a lone one).
    pub tilt_deg: f32,
    pub rejoined: bool,
    /// Which image and turn it came from: "front", "front_rotated", "back", ...
    pub source: &'static str,
    /// How its lines were found.
    pub located_by: Located,
}

/// How a reading's lines were found: as rows of dense print (`text::dense_lines`), or by the
/// text detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Located {
    PrintRows,
    TextDetector,
}

impl CheckSettings for OcrSettings {}

impl AgentKind for Ocr {
    const KIND: &'static str = "ocr";
    const REASONS: &'static [&'static str] = &[
        "mrz_not_found",
        "mrz_invalid",
        "document_expired",
        "data_mismatch:surname",
        "data_mismatch:given_names",
        "data_mismatch:date_of_birth",
        "data_mismatch:document_number",
    ];
    type Settings = OcrSettings;

    /// The agent, and the loader of its models (whose files must exist now), with one
    /// inference session per CPU slot.
    fn build(
        settings: OcrSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let (models, sessions) = (resources.models, resources.slots);
        for file in [
            text::DETECTION_MODEL,
            text::RECOGNITION_MODEL,
            text::RUNTIME_LIBRARY,
        ] {
            crate::models::locate(models, file)?;
        }
        let dir = models.to_path_buf();
        let (engine, loader) = Warm::new(move || TextEngine::load(&dir, sessions, zone_symbol));
        Ok((Self { settings, engine }, Some(loader)))
    }

    fn reads(&self) -> Vec<(&'static str, &str)> {
        vec![("document_from", &self.settings.document_from)]
    }
}

impl Ocr {
    /// Finds and reads the zone: first from the rows of dense print on the rectified front and
    /// back; then with the detector on the rectified front, the photo as taken (in case the
    /// outline was wrong), then the back; each upright, then upside down. Stops at the first
    /// zone whose check digits all verify, and between images once `cancel` is cancelled.
    pub fn read(
        &self,
        captured: &Captured,
        cancel: &CancellationToken,
    ) -> Result<Reading, AgentError> {
        let engine = self.engine.get()?;
        let mut sides: Vec<(&'static str, Arc<RgbImage>)> = vec![("front", captured.front.clone())];
        if let Some(photo) = &captured.photo {
            sides.push(("photo", photo.clone()));
        }
        if let Some(back) = &captured.back {
            sides.push(("back", back.clone()));
        }
        // The zone's own print first, found without the detector on each rectified side: a
        // few milliseconds each, where the detector costs a few hundred (`text::dense_lines`).
        for (source, image) in &sides {
            if *source == "photo" {
                continue;
            }
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            if let Some(reading) = self.read_dense(engine, image, source)? {
                return Ok(reading);
            }
        }
        let mut best: Option<Reading> = None;
        for (source, image) in sides {
            for turned in [false, true] {
                if cancel.is_cancelled() {
                    return Err(AgentError::Cancelled);
                }
                let rotated;
                let image = if turned {
                    rotated = image::imageops::rotate180(image.as_ref());
                    &rotated
                } else {
                    image.as_ref()
                };
                let reading = self.read_side(engine, image, source, turned)?;
                if reading.mrz.as_ref().is_some_and(|m| m.checks.all_valid()) {
                    return Ok(reading);
                }
                let found = reading.mrz.is_some();
                let lines = reading.lines;
                if best.as_ref().is_none_or(|b| rank(&reading) > rank(b)) {
                    best = Some(reading);
                }
                // An upside-down image shows no long lines the right way up; only turn this
                // one when the upright reading found no zone at all, but lines to read: turned,
                // an image holds lines of the same lengths, so without one long enough to be a
                // zone's there is nothing to read the other way up either.
                if found || lines == 0 {
                    break;
                }
            }
        }
        Ok(best.expect("at least the front is read"))
    }

    /// The zone read from the lowest lines of dense print on the lower part of `image`, found
    /// without the detector, where its check digits all verify.
    fn read_dense(
        &self,
        engine: &TextEngine,
        image: &RgbImage,
        source: &'static str,
    ) -> Result<Option<Reading>, AgentError> {
        let top = (image.height() as f32 * (1.0 - LOWER_PART)) as u32;
        let lower = image::imageops::crop_imm(image, 0, top, image.width(), image.height() - top);
        let gray = image::imageops::grayscale(&*lower);
        let lines: Vec<TextBox> = text::dense_lines(&gray)
            .into_iter()
            .map(|line| line.lowered(top as f32))
            .collect();
        let lines = zone_like(&lines);
        if lines.len() < 2 {
            return Ok(None);
        }
        let mut read = Recognised::default();
        let zone = read.zone(engine, image, &lines)?;
        Ok(zone.filter(|z| z.checks.all_valid()).map(|zone| Reading {
            located_by: Located::PrintRows,
            ..read.reading(Some(zone), &lines, false, source)
        }))
    }

    /// Reads one image: its lower part first, and the whole only where that holds no valid
    /// zone. An upright zone is at the bottom of its page, so the lower part is where it is
    /// found, at the same scale for a little over half the detector's cost.
    fn read_side(
        &self,
        engine: &TextEngine,
        image: &RgbImage,
        side: &'static str,
        turned: bool,
    ) -> Result<Reading, AgentError> {
        let source = match (side, turned) {
            ("front", false) => "front",
            ("front", true) => "front_rotated",
            ("photo", false) => "photo",
            ("photo", true) => "photo_rotated",
            (_, false) => "back",
            (_, true) => "back_rotated",
        };
        let top = (image.height() as f32 * (1.0 - LOWER_PART)) as u32;
        if top > 0 {
            let lower =
                image::imageops::crop_imm(image, 0, top, image.width(), image.height() - top)
                    .to_image();
            let boxes: Vec<TextBox> = self
                .detect(engine, &lower, image)?
                .into_iter()
                .map(|line| line.lowered(top as f32))
                .collect();
            let mut read = Recognised::default();
            let mut lowest = self.candidates(&boxes, image.width());
            keep_lowest(&mut lowest, ZONE_LINES);
            let zone = read.zone(engine, image, &lowest)?;
            if zone.as_ref().is_some_and(|z| z.checks.all_valid()) {
                return Ok(read.reading(zone, &lowest, false, source));
            }
        }
        let boxes = self.detect(engine, image, image)?;
        // First the long lines as found; where they hold no valid zone, a second try on the
        // same detection (`second_try`). Lines in both are read once.
        let mut read = Recognised::default();
        let mut chosen = self.candidates(&boxes, image.width());
        // A zone is the lowest two or three of them: those are read first, and the others only
        // when they hold no valid zone (a line costs the recogniser tens of milliseconds).
        let mut lowest = chosen.clone();
        keep_lowest(&mut lowest, ZONE_LINES);
        let mut zone = read.zone(engine, image, &lowest)?;
        if zone.as_ref().is_some_and(|z| z.checks.all_valid()) {
            chosen = lowest;
        } else if lowest.len() < chosen.len() {
            zone = read.zone(engine, image, &chosen)?;
        }
        let mut rejoined = false;
        if zone.as_ref().is_none_or(|z| !z.checks.all_valid()) {
            let lines = self.second_try(boxes, image.width());
            if lines != chosen {
                let second = read.zone(engine, image, &lines)?;
                if second.as_ref().is_some_and(|z| z.checks.all_valid()) || zone.is_none() {
                    (zone, chosen, rejoined) = (second, lines, true);
                }
            }
        }
        Ok(read.reading(zone, &chosen, rejoined, source))
    }

    /// The text boxes on `part`, a part of `whole` as wide as it, at the scale the whole is
    /// detected at.
    fn detect(
        &self,
        engine: &TextEngine,
        part: &RgbImage,
        whole: &RgbImage,
    ) -> Result<Vec<TextBox>, AgentError> {
        let longest = |image: &RgbImage| image.width().max(image.height()) as f32;
        let detect = DetectSettings {
            side: (self.settings.detection_side as f32 * longest(part) / longest(whole)).round()
                as u32,
            ..DetectSettings::default()
        };
        engine
            .detect(part, &detect)
            .map_err(|e| AgentError::Failed(e.to_string()))
    }

    /// The detected lines long and level enough to be a zone's, the lowest `max_lines` of
    /// them, top to bottom.
    fn candidates(&self, boxes: &[TextBox], width: u32) -> Vec<TextBox> {
        let s = &self.settings;
        let width = width as f32;
        let mut lines: Vec<TextBox> = boxes
            .iter()
            .filter(|b| {
                b.length >= width * s.min_line_width as f32
                    && b.length >= b.thickness * s.min_line_aspect as f32
                    && b.angle.to_degrees().abs() <= s.max_line_tilt_deg as f32
            })
            .copied()
            .collect();
        lines.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
        keep_lowest(&mut lines, self.settings.max_lines);
        lines
    }

    /// The candidates of a second try: the pieces of a line the detector split joined again
    /// (an MRZ's name against its run of fillers is the common split), and over each line of
    /// text beside a lone long line a strip of its length, replacing the pieces it covers (a
    /// zone found whole on one line and in pieces on the other). A line is lone when no line
    /// of at least 0.8 of its length runs beside it.
    fn second_try(&self, boxes: Vec<TextBox>, width: u32) -> Vec<TextBox> {
        let joined = text::join_lines(boxes);
        let mut lines = self.candidates(&joined, width);
        let lone = |line: &&TextBox| {
            let peers: Vec<TextBox> = lines
                .iter()
                .filter(|other| other.length >= 0.8 * line.length)
                .copied()
                .collect();
            text::beside(line, &peers).is_empty()
        };
        let strips: Vec<TextBox> = lines
            .iter()
            .filter(lone)
            .flat_map(|line| text::beside(line, &joined))
            .collect();
        lines.retain(|line| !strips.iter().any(|strip| strip.covers(line)));
        lines.extend(strips);
        lines.sort_by(|a, b| a.centre_y().total_cmp(&b.centre_y()));
        keep_lowest(&mut lines, self.settings.max_lines);
        lines
    }

    /// The check: the zone read and judged, compared with the claim, dated against `today`.
    pub fn judge(
        &self,
        reading: &Reading,
        claimed: Option<&Claimed>,
        today: chrono::NaiveDate,
    ) -> Result<Report, AgentError> {
        let engine = self.engine.get()?;
        let mut details = json!({
            "source": reading.source,
            "lines_read": reading.lines,
            "line_confidence": rounded(f64::from(reading.confidence), 3),
            "line_tilt_deg": rounded(f64::from(reading.tilt_deg), 1),
            "lines_rejoined": reading.rejoined,
            "lines_located_by": reading.located_by,
            "models": {
                "detection": engine.detection_model,
                "recognition": engine.recognition_model,
            },
            "thresholds": self.settings,
        });
        let Some(zone) = &reading.mrz else {
            return Ok(
                Report::failed(Some(0.0), vec!["mrz_not_found".into()]).with_details(details)
            );
        };
        let checks = &zone.checks;
        let valid = checks.all_valid();
        let expiry = zone.date_of_expiry.calendar();
        let expired = expiry
            .is_some_and(|d| (d.year, d.month, d.day) < (today.year(), today.month(), today.day()));
        let mut reasons = Vec::new();
        if !valid {
            reasons.push("mrz_invalid".to_owned());
        }
        if expired {
            reasons.push("document_expired".to_owned());
        }
        if let Some(claimed) = claimed {
            reasons.extend(
                claims::mismatches(zone, claimed)
                    .into_iter()
                    .map(|field| format!("data_mismatch:{field}")),
            );
        }
        let object = details.as_object_mut().expect("built as an object");
        object.insert(
            "format".into(),
            json!(format!("{:?}", zone.format).to_uppercase()),
        );
        object.insert(
            "checks".into(),
            json!({
                "document_number": checks.document_number,
                "date_of_birth": checks.date_of_birth,
                "date_of_expiry": checks.date_of_expiry,
                "personal_number": checks.personal_number,
                "composite": checks.composite,
            }),
        );
        object.insert("check_digits_valid".into(), json!(valid));
        object.insert("repaired".into(), json!(zone.damaged_recovery));
        object.insert("expired".into(), json!(expired));
        object.insert("claim_compared".into(), json!(claimed.is_some()));
        let score = {
            let applicable = [
                checks.document_number,
                checks.date_of_birth,
                checks.date_of_expiry,
                checks.personal_number,
                checks.composite,
            ];
            let total = applicable.iter().flatten().count().max(1);
            applicable.iter().flatten().filter(|&&ok| ok).count() as f64 / total as f64
        };
        let report = if reasons.is_empty() {
            Report::passed(Some(score))
        } else {
            Report::failed(Some(score), reasons)
        };
        Ok(report.with_details(details).with_extracted(extracted(zone)))
    }
}

/// How good a reading is: a zone over none, then the share of its check digits that verify.
fn rank(reading: &Reading) -> (bool, u32) {
    let Some(zone) = &reading.mrz else {
        return (false, 0);
    };
    let c = &zone.checks;
    let digits = [
        c.document_number,
        c.date_of_birth,
        c.date_of_expiry,
        c.personal_number,
        c.composite,
    ];
    let applicable = digits.iter().flatten().count().max(1) as u32;
    let verified = digits.iter().filter(|v| **v == Some(true)).count() as u32;
    (true, verified * 1000 / applicable)
}

/// Lines recognised on one image, each read once however many candidate sets hold it: the
/// line, its normalised text and the recogniser's confidence.
#[derive(Default)]
struct Recognised(Vec<(TextBox, String, f32)>);

impl Recognised {
    /// Reads `lines` (top to bottom) and finds a zone in their text. A reading that only
    /// verifies with the document code's digit turned back into its look-alike letter (the
    /// code opens the zone and is letters only) is kept.
    fn zone(
        &mut self,
        engine: &TextEngine,
        image: &RgbImage,
        lines: &[TextBox],
    ) -> Result<Option<mrz::MrzData>, AgentError> {
        let new: Vec<&TextBox> = lines
            .iter()
            .filter(|line| self.find(line).is_none())
            .collect();
        let crops: Vec<RgbImage> = new.iter().map(|line| line_image(image, line)).collect();
        let recognised = engine
            .recognize(&crops)
            .map_err(|e| AgentError::Failed(e.to_string()))?;
        for (line, text) in new.into_iter().zip(recognised) {
            self.0
                .push((*line, normalise_line(&text.text), text.confidence));
        }
        let text: Vec<&str> = self.of(lines).map(|read| read.1.as_str()).collect();
        let mut zone = mrz::find_and_parse(&text.join("\n")).ok();
        if zone.as_ref().is_none_or(|z| !z.checks.all_valid()) {
            let fixed: Vec<String> = text.iter().map(|line| fix_document_code(line)).collect();
            if fixed.iter().zip(&text).any(|(f, t)| f != t)
                && let Ok(candidate) = mrz::find_and_parse(&fixed.join("\n"))
                && candidate.checks.all_valid()
            {
                zone = Some(candidate);
            }
        }
        Ok(zone)
    }

    fn find(&self, line: &TextBox) -> Option<&(TextBox, String, f32)> {
        self.0.iter().find(|(read, ..)| read == line)
    }

    /// What was read of `lines`, in their order.
    fn of<'a>(&'a self, lines: &'a [TextBox]) -> impl Iterator<Item = &'a (TextBox, String, f32)> {
        lines.iter().filter_map(|line| self.find(line))
    }

    /// The reading of `lines`, in which `zone` was found: their text, mean confidence and
    /// median tilt (degrees).
    fn reading(
        &self,
        zone: Option<mrz::MrzData>,
        lines: &[TextBox],
        rejoined: bool,
        source: &'static str,
    ) -> Reading {
        let text: Vec<String> = self.of(lines).map(|read| read.1.clone()).collect();
        let confidence = if text.is_empty() {
            0.0
        } else {
            self.of(lines).map(|read| read.2).sum::<f32>() / text.len() as f32
        };
        let mut tilts: Vec<f32> = lines.iter().map(|line| line.angle.to_degrees()).collect();
        tilts.sort_by(f32::total_cmp);
        Reading {
            mrz: zone,
            lines: text.len(),
            text,
            confidence,
            tilt_deg: tilts.get(tilts.len() / 2).copied().unwrap_or(0.0),
            rejoined,
            source,
            located_by: Located::TextDetector,
        }
    }
}

/// The line's own image, level: a tilted line's rectangle turned level, a level one cropped;
/// both with a tenth of its height added above and below.
fn line_image(image: &RgbImage, line: &text::TextBox) -> RgbImage {
    let pad = line.thickness * 0.1;
    if line.angle == 0.0 {
        let x = line.x.max(0.0) as u32;
        let y = (line.y - pad).max(0.0) as u32;
        let w = (line.width as u32).min(image.width() - x).max(1);
        let h = ((line.height + 2.0 * pad) as u32)
            .min(image.height() - y)
            .max(1);
        return image::imageops::crop_imm(image, x, y, w, h).to_image();
    }
    let (w, h) = (
        line.length.round().max(1.0),
        (line.thickness + 2.0 * pad).round().max(1.0),
    );
    crate::vision::outline::warp_to(image, line.corners(pad), (w as u32, h as u32))
}

/// What a general-purpose model returns for the filler `<` on OCR-B: a guillemet or a CJK
/// bracket.
const FILLER_LOOKALIKES: [char; 7] = ['«', '‹', '《', '〈', '＜', 'く', '〔'];

/// Whether the recogniser keeps its class `symbol`: a character a zone holds (its letters in
/// either case) or a look-alike of the filler. The others are cut from the model when it loads:
/// a step scores 70 classes, not 18,710.
fn zone_symbol(symbol: &str) -> bool {
    let mut chars = symbol.chars();
    matches!(
        (chars.next(), chars.next()),
        (Some(c), None) if c.is_ascii_alphanumeric() || c == '<' || FILLER_LOOKALIKES.contains(&c)
    )
}

/// Recognition quirks of a general-purpose model on OCR-B: the filler's look-alikes, and
/// spaces between characters.
fn normalise_line(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            if FILLER_LOOKALIKES.contains(&c) {
                '<'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// A zone-shaped line (30, 36 or 44 characters, with fillers) whose first character, the
/// document code's letter, was read as a look-alike digit.
fn fix_document_code(line: &str) -> String {
    let looks_like_zone = matches!(line.len(), 29..=31 | 35..=37 | 43..=45) && line.contains("<<");
    let mut chars = line.chars();
    match chars.next() {
        Some(first) if looks_like_zone && first.is_ascii_digit() => {
            let letter = match first {
                '1' => 'I',
                '0' => 'O',
                '5' => 'S',
                '8' => 'B',
                '2' => 'Z',
                other => other,
            };
            std::iter::once(letter).chain(chars).collect()
        }
        _ => line.to_owned(),
    }
}

/// The personal data read from the zone: the check's `extracted`, which erasure removes.
fn extracted(zone: &mrz::MrzData) -> Value {
    json!({
        "mrz_type": format!("{:?}", zone.format).to_uppercase(),
        "document_type": zone.document_type,
        "issuing_country": zone.issuing_country,
        "document_number": zone.document_number_full.as_ref().unwrap_or(&zone.document_number),
        "surname": zone.surname,
        "given_names": zone.given_names,
        "nationality": zone.nationality,
        "date_of_birth": zone.date_of_birth.to_string(),
        "sex": zone.sex.zone_char().to_string(),
        "date_of_expiry": zone.date_of_expiry.to_string(),
        "optional_data": [zone.optional_data_1, zone.optional_data_2],
    })
}

impl CpuAgent for Ocr {
    /// The document, the applicant's claim, and the day expiry is judged against.
    type Input = (Captured, Option<Claimed>, chrono::NaiveDate);

    fn models(&self) -> Option<&dyn Loading> {
        Some(&self.engine)
    }

    fn gather(&self, ctx: &AgentContext) -> Result<Self::Input, AgentError> {
        Ok((
            Captured::upstream(ctx, &self.settings.document_from)?,
            ctx.input().claimed.clone(),
            chrono::Utc::now().date_naive(),
        ))
    }

    fn compute(
        &self,
        (captured, claimed, today): Self::Input,
        cancel: &CancellationToken,
    ) -> Result<Report, AgentError> {
        let reading = self.read(&captured, cancel)?;
        self.judge(&reading, claimed.as_ref(), today)
    }
}
