//! Bodies over `publish.max_body_bytes`: 413 with a JSend `fail`, whether
//! the size is announced up front or only found out by reading, and nothing
//! stored.

use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::json;

use crate::helpers::{TestApp, assert_fail, spawn_app, spawn_app_with};

const TEN_MB: usize = 10 * 1024 * 1024;
const BOUNDARY: &str = "limit-test-boundary";

fn too_large(limit: usize) -> String {
    format!("request body is larger than {limit} bytes")
}

async fn assert_too_large(app: &TestApp, response: reqwest::Response, limit: usize, why: &str) {
    assert_fail(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(limit),
        why,
    )
    .await;
    app.assert_nothing_published(&[], why).await;
}

/// A JSON publish of `size` bytes in all: a message of `a`s, padded.
fn json_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"message":"hello"}"#.to_vec();
    assert!(size >= body.len());
    // JSON allows any amount of whitespace after the value.
    body.resize(size, b' ');
    body
}

/// A multipart body whose `message` part holds `size` bytes.
fn multipart_body(size: usize) -> Vec<u8> {
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n")
            .into_bytes();
    body.resize(body.len() + size, b'a');
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `body` cut into 64 KiB chunks.
fn chunks(body: &[u8]) -> Vec<Vec<u8>> {
    body.chunks(64 * 1024).map(<[u8]>::to_vec).collect()
}

#[tokio::test]
async fn a_10_mb_body_with_a_content_length_gets_413_in_every_encoding() {
    let app = spawn_app().await;
    let limit = 65_536;
    let form = format!("message={}", "a".repeat(TEN_MB));

    let response = app
        .post_raw(Some("application/json"), json_body(TEN_MB))
        .await;
    assert_too_large(&app, response, limit, "JSON").await;

    let response = app
        .post_raw(Some("application/x-www-form-urlencoded"), form)
        .await;
    assert_too_large(&app, response, limit, "form").await;

    let response = app
        .post_multipart(Form::new().text("message", "a".repeat(TEN_MB)))
        .await;
    assert_too_large(&app, response, limit, "multipart").await;
}

#[tokio::test]
async fn a_10_mb_chunked_body_without_a_content_length_gets_413_in_every_encoding() {
    let app = spawn_app().await;
    let limit = 65_536;
    let form = format!("message={}", "a".repeat(TEN_MB)).into_bytes();

    let response = app
        .post_chunked(Some("application/json"), chunks(&json_body(TEN_MB)))
        .await;
    assert_too_large(&app, response, limit, "chunked JSON").await;

    let response = app
        .post_chunked(Some("application/x-www-form-urlencoded"), chunks(&form))
        .await;
    assert_too_large(&app, response, limit, "chunked form").await;

    let response = app
        .post_chunked(Some(&multipart_type()), chunks(&multipart_body(TEN_MB)))
        .await;
    assert_too_large(&app, response, limit, "chunked multipart").await;
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
    let limit = 1024;
    let setting = limit.to_string();
    let env = [("ES__PUBLISH__MAX_BODY_BYTES", setting.as_str())];

    for chunked in [false, true] {
        let app = spawn_app_with(&env).await;
        let why = if chunked { "chunked" } else { "with a length" };
        let send = |body: Vec<u8>| {
            let app = &app;
            async move {
                if chunked {
                    app.post_chunked(Some("application/json"), chunks(&body))
                        .await
                } else {
                    app.post_raw(Some("application/json"), body).await
                }
            }
        };

        let response = send(json_body(limit + 1)).await;
        assert_too_large(&app, response, limit, why).await;

        let response = send(json_body(limit)).await;
        app.assert_published(response, "hello", None, None, why)
            .await;
    }
}

#[tokio::test]
async fn the_body_limit_applies_to_multipart_fields_the_service_ignores() {
    let app = spawn_app_with(&[("ES__PUBLISH__MAX_BODY_BYTES", "1024")]).await;

    let response = app
        .post_multipart(
            Form::new()
                .text("message", "hi")
                .text("attachment", "x".repeat(4096)),
        )
        .await;

    assert_too_large(&app, response, 1024, "a large ignored part").await;
}

#[tokio::test]
async fn the_body_limit_applies_to_multipart_bytes_outside_any_field() {
    // The preamble before the first boundary is skipped by the parser, but it
    // is still body: 10 MB of it, streamed, must not be read to the end.
    let app = spawn_app().await;
    let mut body = vec![b'p'; TEN_MB];
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(&multipart_body(2));

    let response = app
        .post_chunked(Some(&multipart_type()), chunks(&body))
        .await;

    assert_too_large(&app, response, 65_536, "a 10 MB preamble").await;
}

#[tokio::test]
async fn a_small_body_still_publishes_after_a_rejected_large_one() {
    // A 413 sent before the body was read must not poison the next request.
    let app = spawn_app().await;

    let response = app
        .post_raw(Some("application/json"), json_body(TEN_MB))
        .await;
    assert_eq!(response.status(), 413);
    let response = app.post_json(&json!({"message": "after"})).await;

    app.assert_published(response, "after", None, None, "after a 413")
        .await;
}
