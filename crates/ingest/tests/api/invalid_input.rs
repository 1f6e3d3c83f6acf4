//! Publishes that break a rule: 400 with a JSend `fail` naming the rule, and
//! nothing stored. One app per table; after every case the test checks that
//! nothing at all was published, so a leak is pinned to the case that made it.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_fail, assert_fail_starting_with, spawn_app, spawn_app_with};

const CHARSET: &str = "may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'";

/// `request validation error: <rule>`.
fn invalid(rule: &str) -> String {
    format!("request validation error: {rule}")
}

/// Asserts the exact 400 body, then that nothing was published anywhere.
async fn assert_invalid(app: &TestApp, response: reqwest::Response, rule: &str, why: &str) {
    assert_fail(response, StatusCode::BAD_REQUEST, &invalid(rule), why).await;
    app.assert_nothing_published(&["t"], why).await;
}

/// Asserts a 400 whose reason starts with `request validation error: ` +
/// `prefix` (the rest quotes a parser), then that nothing was published.
async fn assert_invalid_prefix(
    app: &TestApp,
    response: reqwest::Response,
    prefix: &str,
    why: &str,
) -> String {
    let data =
        assert_fail_starting_with(response, StatusCode::BAD_REQUEST, &invalid(prefix), why).await;
    app.assert_nothing_published(&["t"], why).await;
    data
}

#[tokio::test]
async fn json_bodies_that_break_a_field_rule_get_400_naming_the_rule() {
    let app = spawn_app().await;
    let too_long = "message must be at most 100 characters";
    let topic_length = "topic must be 1 to 128 characters";
    let event_length = "event must be 1 to 64 characters";
    let topic_charset = format!("topic {CHARSET}");
    let event_charset = format!("event {CHARSET}");
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "message is required", "an empty object"),
        (
            json!({"message": null}),
            "message is required",
            "a null message",
        ),
        (
            json!({"topic": "t", "event": "e"}),
            "message is required",
            "no message",
        ),
        (
            json!({"Message": "hi"}),
            "message is required",
            "a wrongly cased key",
        ),
        (
            json!({"message": ""}),
            "message must not be empty",
            "an empty message",
        ),
        (
            json!({"message": "a".repeat(101)}),
            too_long,
            "101 characters",
        ),
        (
            json!({"message": "é".repeat(101)}),
            too_long,
            "101 two-byte characters",
        ),
        (json!({"message": "😀".repeat(101)}), too_long, "101 emoji"),
        (
            json!({"message": "a".repeat(10_000)}),
            too_long,
            "10 000 characters",
        ),
        (
            json!({"message": "hi", "topic": "a b"}),
            &topic_charset,
            "a space in the topic",
        ),
        (
            json!({"message": "hi", "topic": "a/b"}),
            &topic_charset,
            "a slash in the topic",
        ),
        (
            json!({"message": "hi", "topic": "../etc"}),
            &topic_charset,
            "a path as topic",
        ),
        (
            json!({"message": "hi", "topic": "a\r\nb"}),
            &topic_charset,
            "CRLF in the topic",
        ),
        (
            json!({"message": "hi", "topic": "a\nb"}),
            &topic_charset,
            "LF in the topic",
        ),
        (
            json!({"message": "hi", "topic": "a\0b"}),
            &topic_charset,
            "NUL in the topic",
        ),
        (
            json!({"message": "hi", "topic": "tôpic"}),
            &topic_charset,
            "unicode in the topic",
        ),
        (
            json!({"message": "hi", "topic": "t*"}),
            &topic_charset,
            "a glob in the topic",
        ),
        (
            json!({"message": "hi", "topic": ""}),
            topic_length,
            "an empty topic",
        ),
        (
            json!({"message": "hi", "topic": "t".repeat(129)}),
            topic_length,
            "129 characters of topic",
        ),
        (
            json!({"message": "hi", "event": "\n\nevent: x"}),
            &event_charset,
            "an injected field in the event type",
        ),
        (
            json!({"message": "hi", "event": "a b"}),
            &event_charset,
            "a space in the event type",
        ),
        (
            json!({"message": "hi", "event": "e".repeat(65)}),
            event_length,
            "65 characters of event type",
        ),
        (
            json!({"message": "hi", "event": ""}),
            event_length,
            "an empty event type",
        ),
        (
            json!({"message": "hi", "event": "error"}),
            r#"event "error" is reserved (reserved: error, open, reset, token-expired)"#,
            "an event type browsers hand to onerror",
        ),
        (
            json!({"message": "hi", "event": "Reset"}),
            r#"event "Reset" is reserved (reserved: error, open, reset, token-expired)"#,
            "the server's own event type, in another case",
        ),
    ];
    for (body, rule, why) in cases {
        let response = app.post_json(&body).await;

        assert_invalid(&app, response, rule, why).await;
    }
}

#[tokio::test]
async fn every_broken_field_is_named_in_a_stable_order() {
    let app = spawn_app().await;

    let response = app
        .post_json(&json!({"event": "", "topic": "a b", "message": ""}))
        .await;

    assert_invalid(
        &app,
        response,
        &format!("message must not be empty; topic {CHARSET}; event must be 1 to 64 characters"),
        "three broken fields",
    )
    .await;
}

#[tokio::test]
async fn a_rejected_value_is_never_echoed_back() {
    let app = spawn_app().await;
    let hostile = "<script>alert(1)</script>\r\n\r\nevent: x";

    let response = app
        .post_json(&json!({"message": "hi", "topic": hostile, "event": hostile}))
        .await;

    assert_invalid(
        &app,
        response,
        &format!("topic {CHARSET}; event {CHARSET}"),
        "hostile names",
    )
    .await;
}

#[tokio::test]
async fn json_of_the_wrong_types_gets_400_quoting_the_parser() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"message": 7}), "a number"),
        (json!({"message": 1.5}), "a float"),
        (json!({"message": true}), "a boolean"),
        (json!({"message": []}), "an empty array"),
        (json!({"message": ["hi"]}), "an array of a string"),
        (json!({"message": {}}), "an empty object"),
        (json!({"message": {"text": "hi"}}), "an object"),
        (json!({"message": "hi", "topic": 5}), "a number as topic"),
        (
            json!({"message": "hi", "event": ["e"]}),
            "an array as event type",
        ),
        (json!("hello"), "a JSON string body"),
        (json!(42), "a JSON number body"),
        (json!(null), "a JSON null body"),
        (json!(true), "a JSON boolean body"),
        (json!([]), "an empty JSON array body"),
        (json!(["hello"]), "a JSON array body of one string"),
    ];
    for (body, why) in cases {
        let response = app.post_json(&body).await;

        assert_invalid_prefix(&app, response, "wrong JSON types: ", why).await;
    }
}

#[tokio::test]
async fn a_json_array_in_the_shape_of_the_fields_is_not_a_publish() {
    // serde lets a struct be read from a sequence of its fields in order; the
    // contract is a JSON object, so `["hello", null, null]` must be a 400,
    // not a publish of "hello".
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(["hello", null, null]),
            "an array of message, topic, event",
        ),
        (json!(["hello", "t", "e"]), "an array of three strings"),
    ];
    for (body, why) in cases {
        let response = app.post_json(&body).await;

        assert_invalid_prefix(&app, response, "", why).await;
    }
}

#[tokio::test]
async fn malformed_json_gets_400_quoting_the_parser() {
    let app = spawn_app().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "an empty body"),
        (b"   ".to_vec(), "only whitespace"),
        (br#"{"message":"hi""#.to_vec(), "a truncated object"),
        (br#"{message:"hi"}"#.to_vec(), "an unquoted key"),
        (br#"{'message':'hi'}"#.to_vec(), "single quotes"),
        (br#"{"message":"hi",}"#.to_vec(), "a trailing comma"),
        (
            br#"{"message":"hi"} {"message":"again"}"#.to_vec(),
            "two documents",
        ),
        (br#"{"message":"hi"} x"#.to_vec(), "trailing garbage"),
        (b"message=hi".to_vec(), "a form body labelled JSON"),
        (
            b"{\"message\":\"\xff\xfe\"}".to_vec(),
            "invalid UTF-8 in a string",
        ),
        (
            b"{\"message\":\"\xc3\"}".to_vec(),
            "a truncated UTF-8 sequence",
        ),
        (
            br#"{"message":"\ud800"}"#.to_vec(),
            "a lone surrogate escape",
        ),
        (br#"{"message":"\x41"}"#.to_vec(), "an invalid escape"),
        (
            b"{\"message\":\"a\nb\"}".to_vec(),
            "a raw newline inside a string",
        ),
        (
            b"\xef\xbb\xbf{\"message\":\"hi\"}".to_vec(),
            "a byte order mark",
        ),
        (b"{\"message\":\"hi\"\0}".to_vec(), "a NUL between tokens"),
    ];
    for (body, why) in cases {
        let response = app.post_raw(Some("application/json"), body).await;

        assert_invalid_prefix(&app, response, "malformed JSON: ", why).await;
    }
}

#[tokio::test]
async fn deeply_nested_json_is_refused_or_skipped_without_crashing() {
    let app = spawn_app().await;
    let depth = 30_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    let response = app.post_raw(Some("application/json"), nested.clone()).await;
    assert_invalid_prefix(&app, response, "wrong JSON types: ", "a nested array body").await;

    let response = app
        .post_raw(
            Some("application/json"),
            format!(r#"{{"message":{nested}}}"#),
        )
        .await;
    assert_invalid_prefix(&app, response, "wrong JSON types: ", "a nested message").await;

    // An unknown field is skipped, however deep, as the tutorial skips it.
    let response = app
        .post_raw(
            Some("application/json"),
            format!(r#"{{"extra":{nested},"message":"hi"}}"#),
        )
        .await;
    app.assert_published(response, "hi", None, None, "a nested unknown field")
        .await;
}

#[tokio::test]
async fn a_parser_error_quotes_at_most_a_bounded_single_line_part_of_the_input() {
    let app = spawn_app().await;
    let hostile = format!(
        "{}\r\n\r\nevent: x\n{}",
        "<b>".repeat(5000),
        "z".repeat(20_000)
    );
    let cases: Vec<(Value, &str)> = vec![
        (json!(hostile), "a huge JSON string body"),
        (
            json!({"message": {hostile.as_str(): 1}}),
            "a huge key where the message goes",
        ),
    ];
    for (body, why) in cases {
        let response = app.post_json(&body).await;

        let data = assert_invalid_prefix(&app, response, "wrong JSON types: ", why).await;
        assert!(
            data.chars().count() < 400,
            "{why}: {} characters",
            data.len()
        );
    }
}

#[tokio::test]
async fn a_duplicate_json_key_gets_400() {
    let app = spawn_app().await;

    let response = app
        .post_raw(
            Some("application/json"),
            r#"{"message":"first","message":"second"}"#,
        )
        .await;

    let data = assert_invalid_prefix(&app, response, "", "a duplicate key").await;
    assert!(data.contains("duplicate field `message`"), "{data}");
}

#[tokio::test]
async fn form_bodies_that_break_a_field_rule_get_400_naming_the_rule() {
    let app = spawn_app().await;
    let too_long = "message must be at most 100 characters";
    let long_accented = format!("message={}", "%C3%A9".repeat(101));
    let long_ascii = format!("message={}", "a".repeat(101));
    let topic_charset = format!("topic {CHARSET}");
    let event_charset = format!("event {CHARSET}");
    let cases: Vec<(&str, &str, &str)> = vec![
        ("", "message is required", "an empty body"),
        ("topic=t", "message is required", "no message"),
        ("&&&", "message is required", "only separators"),
        ("message=", "message must not be empty", "an empty message"),
        (
            "message",
            "message must not be empty",
            "a key without a value",
        ),
        (&long_ascii, too_long, "101 characters"),
        (
            &long_accented,
            too_long,
            "101 percent-encoded two-byte characters",
        ),
        (
            "message=hi&topic=a+b",
            &topic_charset,
            "a space in the topic",
        ),
        (
            "message=hi&topic=a%2Fb",
            &topic_charset,
            "a slash in the topic",
        ),
        (
            "message=hi&topic=a%0D%0Ab",
            &topic_charset,
            "CRLF in the topic",
        ),
        (
            "message=hi&event=%0A%0Aevent%3A+x",
            &event_charset,
            "an injected event type",
        ),
        (
            "message=hi&event=",
            "event must be 1 to 64 characters",
            "an empty event type",
        ),
    ];
    for (body, rule, why) in cases {
        let response = app
            .post_raw(Some("application/x-www-form-urlencoded"), body)
            .await;

        assert_invalid(&app, response, rule, why).await;
    }
}

#[tokio::test]
async fn a_duplicate_form_field_gets_400() {
    let app = spawn_app().await;
    let cases = [
        ("message=a&message=b", "a second message"),
        ("message=a&topic=t&topic=u", "a second topic"),
    ];
    for (body, why) in cases {
        let response = app
            .post_raw(Some("application/x-www-form-urlencoded"), body)
            .await;

        let data = assert_invalid_prefix(&app, response, "malformed form body: ", why).await;
        assert!(data.contains("duplicate field"), "{why}: {data}");
    }
}

#[tokio::test]
async fn a_form_that_is_not_utf_8_gets_400_instead_of_being_altered() {
    // Replacing what does not decode with U+FFFD stores a message the
    // publisher never sent; a broken JSON string is a 400, so is this.
    let app = spawn_app().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"message=%FF%FE".to_vec(), "percent-encoded invalid UTF-8"),
        (
            b"message=%C3".to_vec(),
            "a truncated percent-encoded UTF-8 sequence",
        ),
        (b"message=\xff\xfe".to_vec(), "raw invalid UTF-8"),
        (
            b"message=hi&topic=%FF".to_vec(),
            "invalid UTF-8 in the topic",
        ),
    ];
    for (body, why) in cases {
        let response = app
            .post_raw(Some("application/x-www-form-urlencoded"), body)
            .await;

        assert_invalid_prefix(&app, response, "malformed form body: ", why).await;
    }
}

#[tokio::test]
async fn a_form_with_malformed_percent_encoding_gets_400() {
    // `%` not followed by two hex digits is no escape at all; keeping it as
    // literal text guesses at what the publisher meant.
    let app = spawn_app().await;
    let cases: Vec<(&str, &str)> = vec![
        ("message=%zz", "a percent sign followed by non-hex"),
        ("message=100%", "a percent sign at the end"),
        ("message=%4", "a truncated percent escape"),
    ];
    for (body, why) in cases {
        let response = app
            .post_raw(Some("application/x-www-form-urlencoded"), body)
            .await;

        assert_invalid_prefix(&app, response, "malformed form body: ", why).await;
    }
}

#[tokio::test]
async fn query_strings_that_break_a_rule_get_400() {
    let app = spawn_app().await;
    let cases: Vec<(&str, &str, &str)> = vec![
        ("", "message is required", "no query at all"),
        ("?", "message is required", "an empty query"),
        ("?topic=t", "message is required", "no message"),
        ("?message=", "message must not be empty", "an empty message"),
        (
            "?message=hi&topic=a%20b",
            "topic may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            "a space in the topic",
        ),
    ];
    for (query, rule, why) in cases {
        let response = post_query_text(&app, query).await;

        assert_invalid(&app, response, rule, why).await;
    }
    let response = post_query_text(&app, "?message=a&message=b").await;
    let data = assert_invalid_prefix(
        &app,
        response,
        "malformed query string: ",
        "a duplicate message",
    )
    .await;
    assert!(data.contains("duplicate field"), "{data}");
}

/// POST /event-stream?`query` without a body.
async fn post_query_text(app: &TestApp, query: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/event-stream{query}")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_query_string_that_is_not_utf_8_gets_400_instead_of_being_altered() {
    let app = spawn_app().await;
    let cases = [
        ("?message=%FF%FE", "percent-encoded invalid UTF-8"),
        (
            "?message=hi&topic=%C3",
            "a truncated UTF-8 sequence in the topic",
        ),
    ];
    for (query, why) in cases {
        let response = post_query_text(&app, query).await;

        assert_invalid_prefix(&app, response, "malformed query string: ", why).await;
    }
}

#[tokio::test]
async fn a_query_string_with_malformed_percent_encoding_gets_400() {
    let app = spawn_app().await;
    let cases = [
        ("?message=%zz", "a percent sign followed by non-hex"),
        ("?message=100%", "a percent sign at the end"),
    ];
    for (query, why) in cases {
        let response = post_query_text(&app, query).await;

        assert_invalid_prefix(&app, response, "malformed query string: ", why).await;
    }
}

#[tokio::test]
async fn multipart_forms_that_break_a_field_rule_get_400_naming_the_rule() {
    let app = spawn_app().await;
    let cases: Vec<(Form, &str, &str)> = vec![
        (
            Form::new().text("topic", "t"),
            "message is required",
            "no message part",
        ),
        (
            Form::new().text("message", ""),
            "message must not be empty",
            "an empty message",
        ),
        (
            Form::new().text("message", "a".repeat(101)),
            "message must be at most 100 characters",
            "101 characters",
        ),
        (
            Form::new().text("message", "hi").text("topic", "a b"),
            "topic may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            "a space in the topic",
        ),
        (
            Form::new().text("message", "hi").text("event", "x\r\ny"),
            "event may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            "CRLF in the event type",
        ),
    ];
    for (form, rule, why) in cases {
        let response = app.post_multipart(form).await;

        assert_invalid(&app, response, rule, why).await;
    }
}

#[tokio::test]
async fn multipart_fields_that_are_not_text_get_400() {
    let app = spawn_app().await;
    let cases: Vec<(Form, &str)> = vec![
        (
            Form::new().part("message", Part::bytes(vec![0xff, 0xfe])),
            "invalid UTF-8",
        ),
        (
            Form::new().part(
                "message",
                Part::bytes(b"hi".to_vec())
                    .mime_str("application/octet-stream")
                    .unwrap(),
            ),
            "a binary part",
        ),
    ];
    for (form, why) in cases {
        let response = app.post_multipart(form).await;

        assert_invalid_prefix(
            &app,
            response,
            "malformed multipart field \"message\": ",
            why,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_multipart_bodies_get_400() {
    let app = spawn_app().await;
    let part = "--xyz\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nhi\r\n--xyz--\r\n";
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "multipart/form-data; boundary=abc",
            part,
            "a boundary the body never uses",
        ),
        (
            "multipart/form-data; boundary=xyz",
            "--xyz\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nhi",
            "a body cut off inside a part",
        ),
        (
            "multipart/form-data; boundary=xyz",
            "--xyz\r\nno headers here\r\n\r\nhi\r\n--xyz--\r\n",
            "a part with a broken header",
        ),
        (
            "multipart/form-data; boundary=xyz",
            "--xyz\r\n\r\nhi\r\n--xyz--\r\n",
            "a part without Content-Disposition",
        ),
        ("multipart/form-data; boundary=xyz", "", "an empty body"),
    ];
    for (content_type, body, why) in cases {
        let response = app.post_raw(Some(content_type), body).await;

        assert_invalid_prefix(&app, response, "malformed multipart body: ", why).await;
    }
}

#[tokio::test]
async fn a_multipart_form_with_no_parts_gets_400() {
    let app = spawn_app().await;

    let response = app.post_multipart(Form::new()).await;
    assert_invalid_prefix(&app, response, "", "no parts from reqwest").await;

    let response = app
        .post_raw(Some("multipart/form-data; boundary=xyz"), "--xyz--\r\n")
        .await;
    assert_invalid_prefix(&app, response, "", "only the closing boundary").await;
}

#[tokio::test]
async fn a_multipart_content_type_without_a_boundary_gets_a_jsend_400() {
    let app = spawn_app().await;
    let part = "--xyz\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nhi\r\n--xyz--\r\n";
    let cases = [
        ("multipart/form-data", "no boundary parameter"),
        ("multipart/form-data; boundary=", "an empty boundary"),
        (
            "multipart/form-data; charset=utf-8",
            "another parameter instead",
        ),
    ];
    for (content_type, why) in cases {
        let response = app.post_raw(Some(content_type), part).await;

        assert_invalid_prefix(&app, response, "malformed multipart ", why).await;
    }
}

#[tokio::test]
async fn a_duplicate_multipart_field_gets_400_like_a_duplicate_form_field() {
    // Which of two messages did the publisher mean? The urlencoded form
    // refuses to guess; the multipart form must not silently pick one.
    let app = spawn_app().await;

    let response = app
        .post_multipart(
            Form::new()
                .text("message", "first")
                .text("message", "second"),
        )
        .await;

    assert_invalid_prefix(&app, response, "", "a second message part").await;
}

#[tokio::test]
async fn the_message_limit_is_configurable() {
    let app = spawn_app_with(&[("ES__PUBLISH__MAX_MESSAGE_CHARS", "5")]).await;
    let rule = "message must be at most 5 characters";

    let response = app.post_json(&json!({"message": "hello!"})).await;
    assert_invalid(&app, response, rule, "6 characters as JSON").await;
    let response = app.post_form(&[("message", "héllo!")]).await;
    assert_invalid(&app, response, rule, "6 characters as a form").await;
    let response = app
        .post_multipart(Form::new().text("message", "😀😀😀😀😀😀"))
        .await;
    assert_invalid(&app, response, rule, "6 characters as multipart").await;
    let response = app.post_query(&[("message", "hello!")]).await;
    assert_invalid(&app, response, rule, "6 characters in the query").await;

    let response = app.post_json(&json!({"message": "héllo"})).await;
    app.assert_published(response, "héllo", None, None, "5 characters")
        .await;
}
