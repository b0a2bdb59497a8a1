//! What the service refuses to start with.

use kyc_orchestrator::telemetry::ErrorChain;
use kyc_orchestrator::{Application, Settings};

fn settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.server.port = 0;
    settings
}

/// Why the service refuses to start with `settings`, with every cause, as the log shows it.
async fn refusal(settings: Settings) -> String {
    match Application::build(settings).await {
        Ok(_) => panic!("start-up should fail"),
        Err(error) => ErrorChain(&error).to_string(),
    }
}

#[tokio::test]
async fn a_plan_with_a_cycle_is_refused_at_start_up() {
    let mut settings = settings();
    settings.agents.get_mut("doc_capture").unwrap().depends_on = vec!["ocr".into()];

    let error = refusal(settings).await;

    assert_eq!(
        error.to_string(),
        "invalid agent configuration: the plan has a dependency cycle through: doc_capture, face_match, ocr"
    );
}

#[tokio::test]
async fn a_dependency_on_an_unconfigured_agent_is_refused_at_start_up() {
    let mut settings = settings();
    settings.agents.remove("liveness");

    let error = refusal(settings).await;

    assert_eq!(
        error.to_string(),
        "invalid agent configuration: agent `face_match` depends on `liveness`, which is not configured"
    );
}

#[tokio::test]
async fn the_production_profile_refuses_sandbox_agents() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
    let mut settings = Settings::load_from(Some(&path), None, Some(Default::default())).unwrap();
    settings.server.port = 0;
    // The default plan is all real agents; an operator swaps one for a sandbox agent.
    settings.agents = Settings::sandbox().agents;

    let error = refusal(settings).await;

    assert!(
        error
            .to_string()
            .contains("is a sandbox agent, and orchestrator.allow_sandbox_agents is off"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_store_is_refused_at_start_up() {
    let mut settings = settings();
    settings.store.url = "cassandra://somewhere".into();

    let error = refusal(settings).await;

    assert!(
        error.to_string().contains("unsupported store url"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_model_file_is_refused_at_start_up_naming_the_fix() {
    let mut settings = settings();
    settings.models.dir = "no-such-models".into();

    let error = refusal(settings).await;

    assert_eq!(
        error,
        "invalid agent configuration: agent `doc_capture`: model file \
         no-such-models/seeta_fd_frontal_v1.0.bin is missing: run scripts/models.sh, or set models.dir"
    );
}

#[tokio::test]
async fn unknown_agent_settings_are_refused_at_start_up() {
    let mut settings = settings();
    settings.agents.get_mut("ocr").unwrap().settings = serde_json::json!({ "max_linez": 3 });

    let error = refusal(settings).await;

    assert!(
        error.starts_with(
            "invalid agent configuration: agent `ocr`: invalid settings: unknown field `max_linez`"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_reading_an_agent_outside_its_dependencies_is_refused_naming_both_settings() {
    let mut settings = settings();
    settings.agents.get_mut("face_match").unwrap().depends_on = vec!["doc_capture".into()];

    let error = refusal(settings).await;

    assert_eq!(
        error,
        "invalid agent configuration: agent `face_match`: settings.selfie_from names `liveness`, \
         which is not in its depends_on: add `liveness` to agents.face_match.depends_on, or name \
         one of its dependencies in settings.selfie_from"
    );
}

#[tokio::test]
async fn an_unknown_agent_kind_is_refused_naming_the_known_ones() {
    let mut settings = settings();
    settings.agents.get_mut("ocr").unwrap().kind = "passport_reader".into();

    let error = refusal(settings).await;

    assert_eq!(
        error,
        "invalid agent configuration: agent `ocr`: unknown kind `passport_reader` (known kinds: \
         doc_capture, face_match, http, liveness, ocr, sandbox)"
    );
}
