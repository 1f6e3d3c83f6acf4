//! Paths and methods the publish service does not serve: JSend 404 and 405,
//! never actix's bare text, and never a publish.

use reqwest::{Method, StatusCode};

use crate::helpers::{assert_fail, spawn_app};

#[tokio::test]
async fn an_unknown_path_gets_a_jsend_404() {
    let app = spawn_app().await;
    let cases = [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::POST, "/event-stream/"),
        (Method::POST, "/event-stream/extra"),
        (Method::POST, "/Event-Stream"),
        (Method::POST, "/event-stream%00"),
        (Method::GET, "/%ff%fe"),
    ];
    for (method, path) in cases {
        let why = format!("{method} {path}");

        let response = app.request(method, path).await;

        assert_fail(response, StatusCode::NOT_FOUND, "no such endpoint", &why).await;
    }
    app.assert_nothing_published(&[], "unknown paths").await;
}

#[tokio::test]
async fn another_method_on_the_publish_path_gets_a_jsend_405() {
    // GET /event-stream is the gateway's; the publish service alone only
    // mounts POST.
    let app = spawn_app().await;
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let why = method.to_string();

        let response = app.request(method, "/event-stream?message=hi").await;

        assert_fail(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            &why,
        )
        .await;
    }
    app.assert_nothing_published(&[], "other methods").await;
}

#[tokio::test]
async fn a_put_with_a_valid_body_publishes_nothing() {
    let app = spawn_app().await;

    let response = app
        .client
        .put(app.url("/event-stream"))
        .json(&serde_json::json!({"message": "hi"}))
        .send()
        .await
        .unwrap();

    assert_fail(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "PUT with JSON",
    )
    .await;
    app.assert_nothing_published(&[], "PUT with JSON").await;
}

#[tokio::test]
async fn a_head_on_the_publish_path_gets_405_without_a_body() {
    let app = spawn_app().await;

    let response = app.request(Method::HEAD, "/event-stream").await;

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_405_names_the_allowed_method() {
    // RFC 9110 §15.5.6: a 405 response MUST carry an Allow header.
    let app = spawn_app().await;

    let response = app.request(Method::PUT, "/event-stream").await;

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response
        .headers()
        .get(reqwest::header::ALLOW)
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(allow.as_deref(), Some("POST"));
}
