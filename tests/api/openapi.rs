//! The OpenAPI document: served without a key, the same as the committed `openapi.json` (so a
//! change to the API shows in review), every operation it names routed, and the reference page
//! that renders it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{get, spawn_app};

const REGENERATE: &str = "the API changed: regenerate the committed document with \
    `cargo run --bin kyc-orchestrator -- openapi > openapi.json` and review the difference";

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = spawn_app().await;

    let served = get(app.url("/openapi.json")).await.unwrap();

    assert_eq!(served.status(), StatusCode::OK, "no key needed");
    assert_eq!(served.headers()["content-type"], "application/json");
    let served: Value = served.json().await.unwrap();
    let committed: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served == committed, "{REGENERATE}");
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let document: Value = get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let anonymous = kyc_orchestrator::http::client()
        .build()
        .expect("an HTTP client builds");
    let mut operations = 0;

    for (path, item) in document["paths"].as_object().unwrap() {
        let url = app.url(&path.replace("{id}", &uuid::Uuid::now_v7().to_string()));
        for (method, operation) in item.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let status = anonymous
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap()
                .status();
            let keyed = operation.get("security").is_some();
            let expected = if keyed {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "{method} {path}");
            let documented = &operation["responses"][status.as_str()];
            assert!(documented.is_object(), "{method} {path} documents {status}");
            operations += 1;
        }
    }
    assert_eq!(operations, 27);
}

#[tokio::test]
async fn the_reference_page_renders_the_document_with_a_script_served_here() {
    let app = spawn_app().await;

    let page = get(app.url("/docs")).await.unwrap();
    let script = get(app.url("/docs/redoc.standalone.js")).await.unwrap();

    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().await.unwrap();
    if !std::path::Path::new("assets/redoc.standalone.js").exists() {
        println!("skipped the script's checks: assets/ is empty (scripts/assets.sh fills it)");
        assert!(page.contains("scripts/assets.sh"), "{page}");
        assert_eq!(script.status(), StatusCode::NOT_FOUND);
        return;
    }
    assert!(page.contains(r#"spec-url="/openapi.json""#), "{page}");
    assert!(
        page.contains(r#"src="/docs/redoc.standalone.js""#),
        "{page}"
    );
    assert!(!page.contains("https://"), "nothing from elsewhere");
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let served = script.bytes().await.unwrap();
    assert_eq!(served, std::fs::read("assets/redoc.standalone.js").unwrap());
}
