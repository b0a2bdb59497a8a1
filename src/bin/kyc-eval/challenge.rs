//! `kyc-eval challenge DATA`: what the liveness challenge accepts and refuses.
//!
//! 1. **Pose error** on the astronaut drawn as a head in 3-D (`specimen::head`) at known yaw
//!    and pitch, read against the frontal drawing as a session reads it against its first frame.
//! 2. **Drawn answers**: that head making every challenge of up to three steps (turns, and
//!    nods), at 15, 20 and 25 degrees, judged against its own challenge (must pass) and every
//!    other one (must not); and the same photo as a flat picture turned to imitate each turn
//!    (must never pass).
//! 3. **Real clips** (`DATA/headturn/*`): windows of up to 24 frames that start frontal, by the
//!    clip's own yaw estimate (`yaw_estimate.csv`, from another landmark model), judged against
//!    the sequence that estimate shows and against every other sequence of the vocabulary: a
//!    recording of the person replayed to a challenge it did not see.
//! 4. **Replay and print** (`DATA/liveness/demo.gif` frames 36-87): windows judged against every
//!    sequence.

use std::path::Path;

use bytes::Bytes;
use image::RgbImage;
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::liveness::Liveness;
use kyc_orchestrator::agents::selfie::Selfie;
use kyc_orchestrator::agents::standalone;
use kyc_orchestrator::domain::{ChallengeStep, ImageData};
use kyc_orchestrator::specimen::{self, head::Head};
use kyc_orchestrator::vision::pose;

type Error = Box<dyn std::error::Error>;

/// Frames a capture sends at most.
const WINDOW: usize = 24;

pub fn run(data: &Path, face: &Path, models: &Path) -> Result<(), Error> {
    // The configuration as the service loads it (KYC_ENV, KYC__* variables), so that a
    // threshold can be tried without a rebuild.
    let settings = Settings::load(None)?;
    let checker: Liveness = standalone(&settings, "liveness", models)?;
    let photo = image::open(face)?.to_rgb8();
    let head = specimen::astronaut_in_3d(&photo, models)?;
    pose_error(&checker, &head)?;
    drawn(&checker, &head, &specimen::astronaut_selfie(&photo))?;
    let turns = settings.challenges.steps.clone();
    let headturn = data.join("headturn");
    if headturn.is_dir() {
        clips(&checker, &headturn, &turns)?;
    } else {
        println!("\n{} is absent: no real clips measured", headturn.display());
    }
    let gif = data.join("liveness/demo.gif");
    if gif.is_file() {
        replays(&checker, &gif, &turns)?;
    } else {
        println!("\n{} is absent: no replays measured", gif.display());
    }
    Ok(())
}

fn encoded(image: &RgbImage) -> Result<ImageData, Error> {
    let limits = Settings::defaults().limits.images();
    Ok(ImageData::parse(specimen::jpeg(image), &limits)?)
}

/// Every sequence of 1 to `max` steps of `vocabulary`, no step twice in a row (unless the
/// vocabulary has one).
fn sequences(vocabulary: &[ChallengeStep], max: usize) -> Vec<Vec<ChallengeStep>> {
    let mut all: Vec<Vec<ChallengeStep>> = vec![vec![]];
    let mut out = Vec::new();
    for _ in 0..max {
        let mut next = Vec::new();
        for seq in &all {
            for &step in vocabulary {
                if vocabulary.len() > 1 && seq.last() == Some(&step) {
                    continue;
                }
                let mut longer = seq.clone();
                longer.push(step);
                next.push(longer);
            }
        }
        out.extend(next.iter().cloned());
        all = next;
    }
    out
}

fn names(steps: &[ChallengeStep]) -> String {
    steps
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn passes(checker: &Liveness, selfie: &Selfie, steps: &[ChallengeStep]) -> Result<bool, Error> {
    Ok(checker.judge(selfie, Some(steps))?.reasons.is_empty())
}

fn pose_error(checker: &Liveness, head: &Head) -> Result<(), Error> {
    println!("1. pose error on the drawn head (degrees; read against the frontal drawing)");
    println!(
        "{:>6} {:>6} {:>9} {:>9} {:>7}",
        "yaw", "pitch", "read yaw", "read pit", "fit mm"
    );
    let read = |yaw: f32, pitch: f32| -> Result<Option<pose::Pose>, Error> {
        let frame = encoded(&head.render(yaw, pitch))?;
        let selfie = checker.frames(&[frame], &Default::default())?;
        Ok(selfie.frames[0]
            .as_ref()
            .and_then(|f| f.landmarks.as_deref())
            .and_then(pose::estimate))
    };
    let Some(frontal) = read(0.0, 0.0)? else {
        return Err("no pose on the frontal drawing".into());
    };
    let (mut yaw_errors, mut pitch_errors) = (Vec::new(), Vec::new());
    let cases: [f32; 12] = [
        -30.0, -25.0, -20.0, -15.0, -10.0, -5.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0,
    ];
    for (yaw, pitch) in cases
        .iter()
        .map(|&y| (y, 0.0))
        .chain(cases.iter().filter(|p| p.abs() <= 25.0).map(|&p| (0.0, p)))
    {
        match read(yaw, pitch)? {
            Some(pose) => {
                let (ry, rp) = (pose.yaw - frontal.yaw, pose.pitch - frontal.pitch);
                println!(
                    "{yaw:>6.0} {pitch:>6.0} {ry:>9.1} {rp:>9.1} {:>7.2}",
                    pose.residual
                );
                if pitch == 0.0 {
                    yaw_errors.push((ry - f64::from(yaw)).abs());
                } else {
                    pitch_errors.push((rp - f64::from(pitch)).abs());
                }
            }
            None => println!("{yaw:>6.0} {pitch:>6.0}   no face or no pose"),
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "yaw error: mean {:.1}, max {:.1} ({} angles); pitch error: mean {:.1}, max {:.1} ({} angles)",
        mean(&yaw_errors),
        max(&yaw_errors),
        yaw_errors.len(),
        mean(&pitch_errors),
        max(&pitch_errors),
        pitch_errors.len()
    );
    Ok(())
}

fn drawn(checker: &Liveness, head: &Head, photo: &RgbImage) -> Result<(), Error> {
    println!("\n2. drawn answers: every challenge of 1 to 3 steps");
    let (mut times, mut sharpness) = (Vec::new(), Vec::new());
    let all = sequences(&ChallengeStep::ALL, 3);
    println!(
        "{:<9} {:>6} {:>11} {:>14} {:>16}",
        "answer", "degrees", "own passed", "others passed", "flat photo passed"
    );
    for (label, vocabulary) in [
        (
            "turns",
            vec![ChallengeStep::TurnLeft, ChallengeStep::TurnRight],
        ),
        ("nods", vec![ChallengeStep::LookUp, ChallengeStep::LookDown]),
        ("mixed", ChallengeStep::ALL.to_vec()),
    ] {
        for peak in [15.0, 20.0, 25.0] {
            let (mut own, mut count, mut others, mut flat) = (0, 0, 0, 0);
            for steps in sequences(&vocabulary, 3)
                .into_iter()
                .filter(|s| s.len() == 3)
                .filter(|s| {
                    label != "mixed"
                        || s.iter().any(|x| x.is_pitch()) && s.iter().any(|x| !x.is_pitch())
                })
                .take(6)
            {
                count += 1;
                let angles = specimen::answer_angles(&steps, peak);
                let frames = angles
                    .iter()
                    .map(|&(yaw, pitch)| encoded(&head.render(yaw, pitch)))
                    .collect::<Result<Vec<_>, _>>()?;
                let started = std::time::Instant::now();
                let selfie = checker.frames(&frames, &Default::default())?;
                let passed = passes(checker, &selfie, &steps)?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                sharpness.extend(selfie.frames.iter().flatten().map(|f| f.sharpness));
                if passed {
                    own += 1;
                } else {
                    let report = checker.judge(&selfie, Some(&steps))?;
                    println!(
                        "  not passed: {} at {peak}: {:?} {}",
                        names(&steps),
                        report.reasons,
                        report.details["challenge"]["made"]
                    );
                }
                for other in all.iter().filter(|o| **o != steps) {
                    others += usize::from(passes(checker, &selfie, other)?);
                }
                // The flat picture turned as far as it can look like a turn: 40 degrees.
                if !steps.iter().any(|s| s.is_pitch()) {
                    let frames = angles
                        .iter()
                        .map(|&(yaw, _)| encoded(&specimen::flat_turn(photo, 40.0 * yaw / peak)))
                        .collect::<Result<Vec<_>, _>>()?;
                    let flat_selfie = checker.frames(&frames, &Default::default())?;
                    for candidate in &all {
                        flat += usize::from(passes(checker, &flat_selfie, candidate)?);
                    }
                }
            }
            println!(
                "{label:<9} {peak:>6.0} {:>11} {:>14} {:>16}",
                format!("{own}/{count}"),
                others,
                flat
            );
        }
    }
    println!(
        "liveness on a 19-frame answer (analysis and verdict, one thread): p50 {:.0} ms, max {:.0} ms \
         ({} answers); face sharpness: {}",
        super::median(&mut times),
        times.iter().copied().fold(0.0, f64::max),
        times.len(),
        spread(&mut sharpness)
    );
    Ok(())
}

/// The least, median and largest of `values`, rounded.
fn spread(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    match (values.first(), values.last()) {
        (Some(least), Some(most)) => format!(
            "least {least:.0}, median {:.0}, most {most:.0}",
            values[values.len() / 2]
        ),
        _ => "none".to_owned(),
    }
}

/// The clip's own yaw estimate per frame file, by frame number.
fn yaw_estimates(dir: &Path) -> Result<Vec<(u32, f64)>, Error> {
    let text = std::fs::read_to_string(dir.join("yaw_estimate.csv"))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let mut cells = line.split(',');
        let (Some(frame), Some(yaw)) = (cells.next(), cells.next()) else {
            continue;
        };
        rows.push((frame.trim().parse()?, yaw.trim().parse()?));
    }
    Ok(rows)
}

/// The steps a run of the clip's own yaw estimates makes (degrees, positive to the person's own
/// left): a turn from `turn`, back at the start within `back` for one frame. The truth the
/// check is scored against, so it is counted here on its own and not by the check's code.
fn steps_of(yaws: &[f64], turn: f64, back: f64) -> Vec<ChallengeStep> {
    let mut steps: Vec<ChallengeStep> = Vec::new();
    let mut returned = true;
    let first = yaws.first().copied().unwrap_or_default();
    for &yaw in yaws {
        let d = yaw - first;
        if d.abs() >= turn {
            let step = if d > 0.0 {
                ChallengeStep::TurnLeft
            } else {
                ChallengeStep::TurnRight
            };
            if returned || steps.last() != Some(&step) {
                steps.push(step);
            }
            returned = false;
        } else if d.abs() <= back {
            returned = true;
        }
    }
    steps
}

fn clips(checker: &Liveness, dir: &Path, vocabulary: &[ChallengeStep]) -> Result<(), Error> {
    println!("\n3. real clips: windows of up to {WINDOW} frames starting frontal");
    let all = sequences(vocabulary, 3);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for clip in entries {
        let truth = yaw_estimates(&clip)?;
        let frames = truth
            .iter()
            .map(|(n, _)| {
                let bytes = std::fs::read(clip.join(format!("frame{n:04}.jpg")))?;
                let limits = Settings::defaults().limits.images();
                Ok(ImageData::parse(Bytes::from(bytes), &limits)?)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let selfie = checker.frames(&frames, &Default::default())?;
        // Our yaw against the clip's estimate, over the frames with a pose.
        let ours: Vec<Option<f64>> = selfie
            .frames
            .iter()
            .map(|f| {
                f.as_ref()
                    .and_then(|f| f.landmarks.as_deref())
                    .and_then(pose::estimate)
                    .map(|p| p.yaw)
            })
            .collect();
        let pairs: Vec<(f64, f64)> = truth
            .iter()
            .zip(&ours)
            .filter_map(|((_, t), o)| Some((*t, (*o)?)))
            .collect();
        let (slope, offset) = fit_line(&pairs);
        let mut sharpness: Vec<f64> = selfie
            .frames
            .iter()
            .flatten()
            .map(|f| f.sharpness)
            .collect();
        println!(
            "{}: {} frames, {} with a pose; our yaw = {slope:.2} x theirs {offset:+.1}; face \
             sharpness {}",
            clip.file_name().unwrap_or_default().to_string_lossy(),
            frames.len(),
            pairs.len(),
            spread(&mut sharpness)
        );
        let (mut windows, mut own, mut others, mut skipped) = (0, 0, 0, 0);
        let mut margins = Vec::new();
        let mut start = 0;
        while start < frames.len() {
            if truth[start].1.abs() > 4.0 {
                start += 1;
                continue;
            }
            let end = (start + WINDOW).min(frames.len());
            let expected = steps_of(
                &truth[start..end].iter().map(|t| t.1).collect::<Vec<_>>(),
                8.0,
                4.0,
            );
            if expected.is_empty() || expected.len() > 3 {
                skipped += 1;
                start += 4;
                continue;
            }
            windows += 1;
            let window = Selfie {
                frames: selfie.frames[start..end].to_vec(),
                undecodable: vec![],
            };
            let report = checker.judge(&window, Some(&expected))?;
            if report.reasons.is_empty() {
                own += 1;
                let made = report.details["challenge"]["made"].as_array().cloned();
                for m in made.unwrap_or_default() {
                    margins.push(m["degrees"].as_f64().unwrap_or_default().abs());
                }
            } else {
                println!(
                    "  frames {}-{} expected {}: {:?} made {}",
                    truth[start].0,
                    truth[end - 1].0,
                    names(&expected),
                    report.reasons,
                    report.details["challenge"]["made"]
                );
                if std::env::var_os("KYC_EVAL_VERBOSE").is_some() {
                    println!("    {}", report.details["challenge"]["frames"]);
                }
            }
            for other in all.iter().filter(|o| **o != expected) {
                if passes(checker, &window, other)? {
                    others += 1;
                    println!(
                        "  frames {}-{} expected {} by the clip's estimate, passed {}",
                        truth[start].0,
                        truth[end - 1].0,
                        names(&expected),
                        names(other)
                    );
                }
            }
            start += 4;
        }
        margins.sort_by(f64::total_cmp);
        println!(
            "  windows: {windows} (and {skipped} without 1 to 3 turns); passed their own sequence: \
             {own}; passed another: {others}; smallest turn passed: {}",
            margins
                .first()
                .map_or("-".to_owned(), |m| format!("{m:.1} degrees"))
        );
    }
    Ok(())
}

/// Least squares `y = a x + b`.
fn fit_line(pairs: &[(f64, f64)]) -> (f64, f64) {
    let n = pairs.len().max(1) as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (a, my - a * mx)
}

fn replays(checker: &Liveness, gif: &Path, vocabulary: &[ChallengeStep]) -> Result<(), Error> {
    println!("\n4. replay and print frames of {}", gif.display());
    let frames = super::gif_frames(gif)?;
    let selfie = checker.frames(&frames, &Default::default())?;
    let all = sequences(vocabulary, 3);
    for (kind, range) in [("replay", 36..64), ("print", 64..frames.len())] {
        let (mut windows, mut passed) = (0, 0);
        let mut start = range.start;
        while start + 8 <= range.end {
            let end = (start + WINDOW).min(range.end);
            let window = Selfie {
                frames: selfie.frames[start..end].to_vec(),
                undecodable: vec![],
            };
            windows += 1;
            for steps in &all {
                passed += usize::from(passes(checker, &window, steps)?);
            }
            start += 4;
        }
        println!(
            "{kind}: {windows} windows x {} sequences: {passed} passed",
            all.len()
        );
    }
    Ok(())
}
