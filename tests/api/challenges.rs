//! Liveness challenges: issued through the API, answered once by a session of the same tenant;
//! and the real liveness agent judging frames of a head drawn in 3-D (`specimen::head`) that
//! make a challenge's steps, the same frames against other challenges, and a flat photo turned
//! to imitate the turns.

use std::sync::OnceLock;

use image::RgbImage;
use kyc_orchestrator::Settings;
use kyc_orchestrator::agents::liveness::{Liveness, LivenessSettings};
use kyc_orchestrator::agents::selfie::Selfie;
use kyc_orchestrator::agents::{Report, standalone};
use kyc_orchestrator::domain::ChallengeStep::{self, LookDown, LookUp, TurnLeft, TurnRight};
use kyc_orchestrator::specimen::head::Head;
use kyc_orchestrator::vision::pose;
use serde_json::{Value, json};

use crate::helpers::{b64, fields, jpeg, other_tenant_client, png, spawn_app};
use crate::render::{self, frames};

fn models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The liveness agent as configured by default, and with `require_challenge`.
fn liveness(require_challenge: bool) -> &'static Liveness {
    static AGENTS: OnceLock<[Liveness; 2]> = OnceLock::new();
    &AGENTS.get_or_init(|| {
        let fetched = "scripts/models.sh has fetched the models";
        let agent = |require: bool| {
            let mut settings = Settings::defaults();
            let table = settings.agents.get_mut("liveness").unwrap();
            let mut own: LivenessSettings = serde_json::from_value(table.settings.clone()).unwrap();
            own.require_challenge = require;
            table.settings = serde_json::to_value(own).unwrap();
            standalone(&settings, "liveness", &models()).expect(fetched)
        };
        [agent(false), agent(true)]
    })[usize::from(require_challenge)]
}

fn head() -> &'static Head {
    static HEAD: OnceLock<Head> = OnceLock::new();
    HEAD.get_or_init(|| {
        render::astronaut_in_3d(&render::astronaut_photo(), &models())
            .expect("scripts/models.sh has fetched the models")
    })
}

/// The drawn head making `steps`, `peak` degrees each, analysed once.
fn answering(steps: &[ChallengeStep], peak: f32) -> Selfie {
    let images: Vec<RgbImage> = render::answer_angles(steps, peak)
        .into_iter()
        .map(|(yaw, pitch)| head().render(yaw, pitch))
        .collect();
    liveness(false)
        .frames(&frames(&images), &Default::default())
        .unwrap()
}

fn judged(selfie: &Selfie, steps: &[ChallengeStep]) -> Report {
    let report = liveness(false).judge(selfie, Some(steps)).unwrap();
    println!("challenge: {}", report.details["challenge"]);
    report
}

fn reasons(report: &Report) -> Vec<&str> {
    report.reasons.iter().map(String::as_str).collect()
}

#[test]
fn the_pose_of_a_drawn_head_is_read_within_a_few_degrees_of_its_turn() {
    let read = |yaw: f32, pitch: f32| {
        let selfie = liveness(false)
            .frames(&frames(&[head().render(yaw, pitch)]), &Default::default())
            .unwrap();
        let frame = selfie.frames[0].as_ref().expect("decoded");
        pose::estimate(frame.landmarks.as_deref().expect("a face")).expect("a pose")
    };
    let frontal = read(0.0, 0.0);
    // `kyc-eval challenge` measures 0.8 degrees on average, 2.5 at most, over -30 to 30.
    for yaw in [-20.0, -10.0, 10.0, 20.0] {
        let pose = read(yaw, 0.0);
        let turned = pose.yaw - frontal.yaw;
        assert!((turned - f64::from(yaw)).abs() < 3.0, "{yaw}: {pose:?}");
    }
    // Pitch is read with the right sign but not the right size (README, "Accuracy").
    for pitch in [-10.0, 10.0] {
        let pose = read(0.0, pitch);
        let nodded = pose.pitch - frontal.pitch;
        assert!(
            nodded.signum() == f64::from(pitch).signum(),
            "{pitch}: {pose:?}"
        );
    }
}

/// Also: the same frames without a challenge pass the passive check, unless one is required.
#[test]
fn a_head_making_its_challenges_steps_passes_and_no_other_challenge() {
    let steps = [TurnLeft, TurnRight, TurnLeft];
    let selfie = answering(&steps, 20.0);

    let report = judged(&selfie, &steps);
    assert!(report.reasons.is_empty(), "{}", report.details);
    let challenge = &report.details["challenge"];
    assert_eq!(challenge["followed"], true);
    let made: Vec<&Value> = challenge["made"].as_array().unwrap().iter().collect();
    assert_eq!(made.len(), 3);
    assert!(made.iter().all(|m| m["parallax"].as_f64().unwrap() >= 1.0));
    assert!(challenge["identity_distance"].as_f64().unwrap() < 0.6);

    // A recording of it, replayed to any other challenge.
    for other in [
        vec![TurnRight, TurnLeft, TurnRight],
        vec![TurnLeft, TurnRight],
        vec![TurnLeft],
        vec![TurnLeft, TurnRight, TurnLeft, TurnRight],
        vec![TurnLeft, LookUp, TurnLeft],
    ] {
        assert_eq!(
            reasons(&judged(&selfie, &other)),
            ["challenge_not_followed"]
        );
    }
}

#[test]
fn a_turn_of_fifteen_degrees_is_enough_and_nods_are_read_when_asked_for() {
    let steps = [TurnRight, TurnLeft];
    let report = judged(&answering(&steps, 15.0), &steps);
    assert!(report.reasons.is_empty(), "{}", report.details);

    let nods = [LookUp, LookDown];
    let selfie = answering(&nods, 20.0);
    let report = judged(&selfie, &nods);
    assert!(report.reasons.is_empty(), "{}", report.details);
    assert_eq!(
        reasons(&judged(&selfie, &[LookDown, LookUp])),
        ["challenge_not_followed"]
    );
}

#[test]
fn a_flat_photo_turned_to_imitate_a_challenge_never_passes() {
    let photo = render::selfie();
    let steps = [TurnLeft, TurnRight, TurnLeft];
    let images: Vec<RgbImage> = render::answer_angles(&steps, 40.0)
        .into_iter()
        .map(|(yaw, _)| render::flat_turn(&photo, yaw))
        .collect();
    let selfie = liveness(false)
        .frames(&frames(&images), &Default::default())
        .unwrap();
    for candidate in [
        vec![TurnLeft, TurnRight, TurnLeft],
        vec![TurnRight, TurnLeft, TurnRight],
        vec![TurnLeft],
        vec![TurnRight],
    ] {
        let report = judged(&selfie, &candidate);
        assert!(!report.reasons.is_empty(), "{}", report.details);
    }
}

#[test]
fn a_capture_too_blurred_to_read_is_inconclusive() {
    let steps = [TurnLeft, TurnRight];
    let images: Vec<RgbImage> = render::answer_angles(&steps, 20.0)
        .into_iter()
        .map(|(yaw, pitch)| image::imageops::blur(&head().render(yaw, pitch), 5.0))
        .collect();
    let selfie = liveness(false)
        .frames(&frames(&images), &Default::default())
        .unwrap();
    let sharpness: Vec<f64> = selfie
        .frames
        .iter()
        .flatten()
        .map(|f| f.sharpness)
        .collect();
    println!("sharpness: {sharpness:?}");

    let report = judged(&selfie, &steps);
    assert_eq!(reasons(&report), ["liveness_inconclusive"]);
    assert!(
        report.details["challenge"]["blurred_frames"]
            .as_u64()
            .unwrap()
            > 0
    );
}

fn answering_body(challenge_id: &str) -> Value {
    json!({
        "selfie": { "frames": [b64(&jpeg(64, 64))], "challenge_id": challenge_id },
        "document": { "type": "passport", "front": b64(&png(96, 64)) },
    })
}

#[tokio::test]
async fn a_challenge_is_issued_with_random_steps_and_an_expiry() {
    let app = spawn_app().await;

    let challenge = app.issue_challenge().await;

    assert!(challenge["id"].as_str().unwrap().starts_with("chl_"));
    let steps: Vec<&str> = challenge["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 3);
    assert!(
        steps
            .iter()
            .all(|s| ["turn_left", "turn_right"].contains(s))
    );
    assert!(steps.windows(2).all(|w| w[0] != w[1]));
    let expires: chrono::DateTime<chrono::Utc> =
        challenge["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::seconds(100) && ttl <= chrono::Duration::seconds(120));
}

#[tokio::test]
async fn a_challenge_answers_one_session_and_a_second_is_refused() {
    let app = spawn_app().await;
    let challenge = app.issue_challenge().await;
    let id = challenge["id"].as_str().unwrap();

    let first = app.post_session(&answering_body(id)).await;
    assert_eq!(first.status(), 202);
    let second = app.post_session(&answering_body(id)).await;

    assert_eq!(second.status(), 422);
    let problem: Value = second.json().await.unwrap();
    assert_eq!(
        fields(&problem),
        [(
            "selfie.challenge_id".to_owned(),
            "challenge_used".to_owned()
        )]
    );
}

#[tokio::test]
async fn an_unknown_or_another_tenants_challenge_is_refused_alike() {
    let app = spawn_app().await;
    let response = other_tenant_client(&app)
        .await
        .post(app.url("/v1/liveness/challenges"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let others: Value = response.json().await.unwrap();

    for id in [
        others["id"].as_str().unwrap(),
        "chl_000000000000000000000000",
        "not-a-challenge",
    ] {
        let response = app.post_session(&answering_body(id)).await;
        assert_eq!(response.status(), 422, "{id}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            fields(&problem),
            [(
                "selfie.challenge_id".to_owned(),
                "unknown_challenge".to_owned()
            )],
            "{id}"
        );
        // The value sent is never echoed.
        assert!(!problem.to_string().contains(id), "{problem}");
    }
}

#[tokio::test]
async fn a_multipart_session_names_its_challenge_in_the_metadata() {
    let app = spawn_app().await;
    let challenge = app.issue_challenge().await;
    let metadata = json!({ "challenge_id": challenge["id"] }).to_string();
    let form = || {
        reqwest::multipart::Form::new()
            .part(
                "selfie",
                reqwest::multipart::Part::bytes(jpeg(64, 64)).file_name("s.jpg"),
            )
            .part(
                "document_front",
                reqwest::multipart::Part::bytes(png(96, 64)).file_name("d.png"),
            )
            .text("metadata", metadata.clone())
    };
    let send = || {
        app.client
            .post(app.url("/v1/sessions"))
            .multipart(form())
            .send()
    };

    assert_eq!(send().await.unwrap().status(), 202);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 422);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "challenge_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answering_its_challenge_on_the_default_plan_is_approved() {
    let app = crate::helpers::spawn_real_agents_app().await;
    let challenge = app.issue_challenge().await;
    let steps: Vec<ChallengeStep> = serde_json::from_value(challenge["steps"].clone()).unwrap();
    let selfie: Vec<String> = render::answer_angles(&steps, 20.0)
        .into_iter()
        .map(|(yaw, pitch)| b64(&render::jpeg(&head().render(yaw, pitch))))
        .collect();
    let photo = render::photo(&render::page(&render::portrait_page()), render::ASKEW);
    let body = json!({
        "selfie": { "frames": selfie, "challenge_id": challenge["id"] },
        "document": { "type": "passport", "front": b64(&render::jpeg(&photo)) },
    });

    let events = app.stream_session(&body).await;

    let done = crate::helpers::completion(&events);
    assert_eq!(done["decision"], "approved", "{done:#}");
    let answered = &done["checks"]["liveness"]["details"]["challenge"];
    assert_eq!(answered["followed"], true, "{answered:#}");
    assert_eq!(answered["steps"], challenge["steps"]);
}
