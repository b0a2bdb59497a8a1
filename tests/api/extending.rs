//! A new agent kind, written as CONTRIBUTING.md shows it, runs in a session like the built-in
//! ones: this file keeps that guide honest.

use image::{GrayImage, ImageFormat, Luma};
use kyc_orchestrator::agents::Kinds;
use kyc_orchestrator::config::AgentSettings;
use serde_json::{Value, json};

use crate::helpers::{b64, completion, session_body, spawn_app_with_kinds};

// contributing:begin
use kyc_orchestrator::agents::warm::Loader;
use kyc_orchestrator::agents::{
    AgentContext, AgentError, AgentKind, CheckSettings, CpuAgent, Report, Resources,
};
use kyc_orchestrator::domain::{ImageData, ImageLimits};
use kyc_orchestrator::models::ModelError;
use kyc_orchestrator::vision::decode::decode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `[agents.NAME.settings]`: every threshold the check uses, with its default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureSettings {
    /// Mean luminance (0-255) of the first selfie frame below which it is `selfie_too_dark`.
    pub min_mean: f64,
}

impl Default for ExposureSettings {
    fn default() -> Self {
        Self { min_mean: 60.0 }
    }
}

impl CheckSettings for ExposureSettings {
    fn check(&self) -> Result<(), String> {
        if (0.0..=255.0).contains(&self.min_mean) {
            Ok(())
        } else {
            Err(format!("min_mean must be 0 to 255, not {}", self.min_mean))
        }
    }
}

/// Is the first selfie frame bright enough to see a face in?
#[derive(Clone)]
pub struct Exposure {
    settings: ExposureSettings,
    limits: ImageLimits,
}

impl AgentKind for Exposure {
    const KIND: &'static str = "exposure";
    const REASONS: &'static [&'static str] = &["selfie_too_dark", "corrupt_image"];
    type Settings = ExposureSettings;

    fn build(
        settings: ExposureSettings,
        resources: &Resources,
    ) -> Result<(Self, Option<Loader>), ModelError> {
        let limits = resources.limits;
        Ok((Self { settings, limits }, None))
    }
}

impl CpuAgent for Exposure {
    type Input = ImageData;

    fn gather(&self, ctx: &AgentContext) -> Result<ImageData, AgentError> {
        Ok(ctx.input().selfie.frames()[0].clone())
    }

    fn compute(&self, frame: ImageData, _: &CancellationToken) -> Result<Report, AgentError> {
        let image = match decode(frame.bytes(), &self.limits) {
            Ok(image) => image::DynamicImage::ImageRgb8(image).into_luma8(),
            Err(error) => return Ok(Report::failed(None, vec![error.code().to_owned()])),
        };
        let sum: f64 = image.pixels().map(|p| f64::from(p.0[0])).sum();
        let mean = sum / (image.width() * image.height()).max(1) as f64;
        let score = Some((mean / 255.0 * 1000.0).round() / 1000.0);
        let report = if mean >= self.settings.min_mean {
            Report::passed(score)
        } else {
            Report::failed(score, vec!["selfie_too_dark".to_owned()])
        };
        Ok(report.with_details(json!({ "mean": mean, "thresholds": self.settings })))
    }
}
// contributing:end

/// A selfie frame of one shade.
fn frame(shade: u8) -> String {
    let mut png = Vec::new();
    GrayImage::from_pixel(32, 32, Luma([shade]))
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    b64(&png)
}

async fn run_with_exposure(shade: u8) -> Value {
    let kinds = Kinds::builtin().with::<Exposure>();
    let app = spawn_app_with_kinds(&kinds, |s| {
        let exposure = AgentSettings {
            kind: "exposure".into(),
            timeout_ms: 60_000,
            depends_on: vec![],
            settings: json!({ "min_mean": 100.0 }),
            tables: Default::default(),
        };
        s.agents.insert("exposure".into(), exposure);
    })
    .await;
    let mut body = session_body(json!({}));
    body["selfie"]["frames"] = json!([frame(shade)]);
    completion(&app.stream_session(&body).await).clone()
}

#[tokio::test]
async fn a_new_agent_kind_runs_in_the_plan_beside_the_built_in_ones() {
    let completed = run_with_exposure(200).await;

    let check = &completed["checks"]["exposure"];
    assert_eq!(check["status"], "passed", "{check}");
    assert_eq!(check["details"]["thresholds"]["min_mean"], 100.0);
    assert_eq!(completed["decision"], "approved");
}

#[tokio::test]
async fn a_new_agent_kinds_failure_reaches_the_decision_with_its_reason() {
    let completed = run_with_exposure(20).await;

    let check = &completed["checks"]["exposure"];
    assert_eq!(check["status"], "failed", "{check}");
    assert_eq!(check["reasons"], json!(["selfie_too_dark"]));
    assert_eq!(completed["decision"], "review");
    assert_eq!(completed["reasons"], json!(["selfie_too_dark"]));
}

#[test]
fn the_contributors_guide_shows_this_agent_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/tests/api/extending.rs")).unwrap();
    let guide = std::fs::read_to_string(format!("{root}/CONTRIBUTING.md")).unwrap();
    let example = source
        .split("// contributing:begin\n")
        .nth(1)
        .and_then(|rest| rest.split("// contributing:end").next())
        .expect("the example is marked");

    assert!(
        guide.contains(example),
        "CONTRIBUTING.md's agent example differs from tests/api/extending.rs; copy it again"
    );
}
