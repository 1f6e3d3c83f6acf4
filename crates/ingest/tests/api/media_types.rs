//! Bodies in a format the service does not read: 415 with a JSend `fail`
//! naming what it does read, and nothing stored.

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::helpers::{assert_fail, assert_fail_starting_with, spawn_app};

/// The 415 reason for a Content-Type shown as `shown`.
fn not_accepted(shown: &str) -> String {
    format!(
        "content type {shown} is not accepted; send application/json, \
         application/x-www-form-urlencoded or multipart/form-data"
    )
}

#[tokio::test]
async fn a_body_in_a_format_other_than_json_or_a_form_gets_415() {
    let app = spawn_app().await;
    let cases = [
        ("text/plain", "message=hello", r#""text/plain""#),
        ("text/plain; charset=utf-8", "hello", r#""text/plain""#),
        (
            "application/xml",
            "<message>hello</message>",
            r#""application/xml""#,
        ),
        (
            "text/event-stream",
            "data: hello\n\n",
            r#""text/event-stream""#,
        ),
        (
            "application/octet-stream",
            "hello",
            r#""application/octet-stream""#,
        ),
        (
            "multipart/mixed; boundary=x",
            "--x\r\n\r\nhello\r\n--x--\r\n",
            r#""multipart/mixed""#,
        ),
        ("TEXT/PLAIN", "hello", r#""text/plain""#),
    ];
    for (content_type, body, shown) in cases {
        let response = app.post_raw(Some(content_type), body).await;

        assert_fail(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &not_accepted(shown),
            content_type,
        )
        .await;
        app.assert_nothing_published(&[], content_type).await;
    }
}

#[tokio::test]
async fn a_body_without_a_content_type_gets_415() {
    let app = spawn_app().await;

    let response = app.post_raw(None, r#"{"message":"hello"}"#).await;
    assert_fail(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &not_accepted("(none)"),
        "with a length",
    )
    .await;

    let response = app
        .post_chunked(None, vec![br#"{"message":"hello"}"#.to_vec()])
        .await;
    assert_fail(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &not_accepted("(none)"),
        "chunked",
    )
    .await;

    app.assert_nothing_published(&[], "no content type").await;
}

#[tokio::test]
async fn a_body_without_a_content_type_is_refused_even_with_a_message_in_the_query() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/event-stream?message=hello"))
        .body("message=other")
        .send()
        .await
        .unwrap();

    assert_fail(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &not_accepted("(none)"),
        "query and an unlabelled body",
    )
    .await;
    app.assert_nothing_published(&[], "query and an unlabelled body")
        .await;
}

#[tokio::test]
async fn a_garbage_content_type_gets_415_quoting_it_safely() {
    let app = spawn_app().await;
    let cases: Vec<(HeaderValue, &str)> = vec![
        (HeaderValue::from_static("garbage"), r#""garbage""#),
        (
            HeaderValue::from_static("application/"),
            r#""application/""#,
        ),
        (HeaderValue::from_static(";;;"), r#"";;;""#),
        (HeaderValue::from_static("/json"), r#""/json""#),
        (
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
            "\"application/json\u{fffd}\"",
        ),
    ];
    for (content_type, shown) in cases {
        let why = format!("{content_type:?}");

        let response = app
            .post_raw_header(content_type, br#"{"message":"hello"}"#.to_vec())
            .await;

        assert_fail(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &not_accepted(shown),
            &why,
        )
        .await;
        app.assert_nothing_published(&[], &why).await;
    }
}

#[tokio::test]
async fn a_very_long_garbage_content_type_is_not_echoed_in_full() {
    let app = spawn_app().await;
    let garbage = "x".repeat(4000);

    let response = app
        .post_raw_header(
            HeaderValue::from_str(&garbage).unwrap(),
            b"message=hello".to_vec(),
        )
        .await;

    let data = assert_fail_starting_with(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content type ",
        "4000 characters of garbage",
    )
    .await;
    assert!(
        data.len() < 400,
        "the reason quotes at most a bounded part: {data}"
    );
    app.assert_nothing_published(&[], "long garbage").await;
}

#[tokio::test]
async fn a_form_in_an_unknown_charset_gets_415() {
    let app = spawn_app().await;

    let response = app
        .post_raw(
            Some("application/x-www-form-urlencoded; charset=no-such-charset"),
            "message=hello",
        )
        .await;

    assert_fail_starting_with(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content type ",
        "unknown charset",
    )
    .await;
    app.assert_nothing_published(&[], "unknown charset").await;
}

#[tokio::test]
async fn json_sent_as_a_form_gets_400_with_a_content_type_hint() {
    let app = spawn_app().await;
    let hint = "request validation error: message is required; the body looks like JSON \
                but was sent as a form: send it with Content-Type: application/json";
    for body in [r#"{"message":"hi"}"#, " \n[1]"] {
        let response = app
            .post_raw(Some("application/x-www-form-urlencoded"), body)
            .await;
        assert_fail(response, StatusCode::BAD_REQUEST, hint, body).await;
    }
    // A form without a message that is not JSON keeps the plain reason.
    let response = app
        .post_raw(Some("application/x-www-form-urlencoded"), "topic=x")
        .await;
    assert_fail(
        response,
        StatusCode::BAD_REQUEST,
        "request validation error: message is required",
        "form without message",
    )
    .await;
    app.assert_nothing_published(&[], "json as a form").await;
}
