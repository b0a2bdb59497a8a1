//! A session's stored images, for reviewers: by name, exactly as sent, to its own tenant only,
//! and gone (`410`) once erased.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::durable::{Backend, TestStore};
use crate::helpers::{b64, jpeg, other_tenant_client, png, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_sees_the_images_as_sent_until_they_are_erased() {
    let store = TestStore::new(Backend::Sqlite).await;
    let app = spawn_app_with(|s| store.configure(s)).await;
    let (front, back, frame) = (png(96, 64), png(80, 50), jpeg(64, 64));
    let body = json!({
        "selfie": { "frames": [b64(&frame), b64(&frame)] },
        "document": { "type": "id_card", "front": b64(&front), "back": b64(&back) },
    });
    let id = app.start_session(&body).await;
    app.events(&id, None).await;

    let index: Value = app
        .get(&format!("/v1/sessions/{id}/images"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        index["images"],
        json!(["document_front", "document_back", "selfie_0", "selfie_1"])
    );
    for (name, sent, media_type) in [
        ("document_front", &front, "image/png"),
        ("document_back", &back, "image/png"),
        ("selfie_1", &frame, "image/jpeg"),
    ] {
        let response = app.get(&format!("/v1/sessions/{id}/images/{name}")).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.headers()["content-type"], media_type);
        assert_eq!(response.headers()["cache-control"], "no-store, private");
        assert_eq!(&response.bytes().await.unwrap()[..], &sent[..], "{name}");
    }
    for missing in ["selfie_2", "selfie_01", "portrait", "document_portrait"] {
        let response = app
            .get(&format!("/v1/sessions/{id}/images/{missing}"))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
    }

    // Another tenant's key sees nothing.
    let theirs = other_tenant_client(&app)
        .await
        .get(app.url(&format!("/v1/sessions/{id}/images/document_front")))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let erased = app
        .client
        .delete(app.url(&format!("/v1/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    for path in ["images", "images/document_front"] {
        let response = app.get(&format!("/v1/sessions/{id}/{path}")).await;
        assert_eq!(response.status(), StatusCode::GONE, "{path}");
    }
}

#[tokio::test]
async fn a_store_that_keeps_no_inputs_has_no_images_to_show() {
    let app = spawn_app().await;
    let id = app
        .start_session(&crate::helpers::session_body(json!({})))
        .await;

    let response = app.get(&format!("/v1/sessions/{id}/images")).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
