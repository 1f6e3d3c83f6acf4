//! Publishes that must succeed: every encoding the tutorial accepts, the
//! optional fields, and messages full of characters that are dangerous
//! further down the line (they are stored verbatim; SSE framing is the
//! gateway's job).

use std::time::Duration;

use bus::Recv;
use futures_util::future::join_all;
use reqwest::multipart::Form;
use serde_json::json;

use crate::helpers::{PATIENCE, TestApp, jsend_success, spawn_app};

/// One way of carrying the publish fields.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Encoding {
    Json,
    Form,
    Multipart,
    Query,
}

pub(crate) const ENCODINGS: [Encoding; 4] = [
    Encoding::Json,
    Encoding::Form,
    Encoding::Multipart,
    Encoding::Query,
];

impl TestApp {
    /// Publishes `fields` (all strings) in `encoding`.
    pub(crate) async fn post_fields(
        &self,
        encoding: Encoding,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        match encoding {
            Encoding::Json => {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
                self.post_json(&serde_json::Value::Object(object)).await
            }
            Encoding::Form => self.post_form(fields).await,
            Encoding::Multipart => {
                let form = fields.iter().fold(Form::new(), |form, (k, v)| {
                    form.text((*k).to_owned(), (*v).to_owned())
                });
                self.post_multipart(form).await
            }
            Encoding::Query => self.post_query(fields).await,
        }
    }
}

#[tokio::test]
async fn a_json_publish_answers_201_with_the_tutorials_body_and_stores_the_message() {
    let app = spawn_app().await;

    let response = app.post_json(&json!({ "message": "hello" })).await;

    let event = app
        .assert_published(response, "hello", None, None, "json")
        .await;
    assert_eq!(event.position.offset, 1, "first event of the topic");
}

#[tokio::test]
async fn every_encoding_publishes_with_and_without_topic_and_event() {
    let field_sets: [&[(&str, &str)]; 4] = [
        &[("message", "hi there")],
        &[("message", "hi there"), ("topic", "orders.eu-1:x_y")],
        &[("message", "hi there"), ("event", "order-created")],
        &[
            ("message", "hi there"),
            ("topic", "orders"),
            ("event", "order.created"),
        ],
    ];
    for encoding in ENCODINGS {
        for fields in field_sets {
            let app = spawn_app().await;
            let why = format!("{encoding:?} with {fields:?}");
            let field = |name| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);

            let response = app.post_fields(encoding, fields).await;

            app.assert_published(response, "hi there", field("topic"), field("event"), &why)
                .await;
        }
    }
}

#[tokio::test]
async fn the_tutorials_own_curl_commands_work_unchanged() {
    // curl -X POST localhost:9990/event-stream -d '{"message":"hello"}' -H 'Content-Type: application/json'
    let app = spawn_app().await;
    let response = app
        .post_raw(Some("application/json"), r#"{"message":"hello"}"#)
        .await;
    app.assert_published(response, "hello", None, None, "curl with JSON")
        .await;

    // curl -X POST localhost:9990/event-stream -d 'message=hello' (curl's -d
    // implies this Content-Type).
    let app = spawn_app().await;
    let response = app
        .post_raw(Some("application/x-www-form-urlencoded"), "message=hello")
        .await;
    app.assert_published(response, "hello", None, None, "curl with a form")
        .await;

    // curl -X POST 'localhost:9990/event-stream?message=hello'
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/event-stream?message=hello"))
        .send()
        .await
        .unwrap();
    app.assert_published(response, "hello", None, None, "curl with a query")
        .await;
}

#[tokio::test]
async fn content_types_are_matched_without_regard_to_case_or_parameters() {
    let cases = [
        ("application/json; charset=utf-8", r#"{"message":"hello"}"#),
        ("application/json;charset=UTF-8", r#"{"message":"hello"}"#),
        ("Application/JSON", r#"{"message":"hello"}"#),
        (
            "application/x-www-form-urlencoded; charset=utf-8",
            "message=hello",
        ),
        ("Application/X-WWW-Form-URLEncoded", "message=hello"),
    ];
    for (content_type, body) in cases {
        let app = spawn_app().await;

        let response = app.post_raw(Some(content_type), body).await;

        app.assert_published(response, "hello", None, None, content_type)
            .await;
    }
}

#[tokio::test]
async fn messages_with_line_breaks_nul_and_injected_fields_are_stored_verbatim() {
    let messages = [
        ("a\rb", "a lone CR"),
        ("a\nb", "a lone LF"),
        ("a\r\nb", "CRLF"),
        ("trailing\n", "a trailing newline"),
        ("\n", "only a newline"),
        ("a\0b", "NUL"),
        ("\n\nevent: x\ndata: forged\nid: 9", "injected SSE fields"),
        (" leading space", "a leading space"),
        ("   ", "only spaces"),
        ("😀 emoji 🎉", "emoji"),
        (
            "e\u{301}\u{2028}\u{feff}",
            "combining mark, line separator, BOM",
        ),
        (r#"{"status":"fail"} \ "quoted""#, "JSON-looking text"),
        ("a=b&c=d+e%20f", "form syntax"),
        ("<script>alert(1)</script>", "markup"),
    ];
    for (message, why) in messages {
        let app = spawn_app().await;
        for encoding in ENCODINGS {
            // A topic per encoding so each one's stored event stands alone.
            let topic = format!("{encoding:?}");
            let why = format!("{why} via {encoding:?}");

            let response = app
                .post_fields(encoding, &[("message", message), ("topic", &topic)])
                .await;

            app.assert_published(response, message, Some(&topic), None, &why)
                .await;
        }
    }
}

#[tokio::test]
async fn the_message_limit_counts_characters_not_bytes() {
    let messages = [
        ("a".repeat(100), "100 ASCII characters"),
        ("é".repeat(100), "100 two-byte characters"),
        ("😀".repeat(100), "100 four-byte characters"),
        ("x".to_owned(), "a single character"),
    ];
    for (message, why) in messages {
        let app = spawn_app().await;

        let response = app.post_json(&json!({ "message": message })).await;

        app.assert_published(response, &message, None, None, why)
            .await;
    }
}

#[tokio::test]
async fn topics_and_event_types_of_the_longest_allowed_length_are_accepted() {
    let app = spawn_app().await;
    let topic = "t".repeat(128);
    let event = "e".repeat(64);

    let response = app
        .post_json(&json!({ "message": "hi", "topic": topic, "event": event }))
        .await;

    app.assert_published(response, "hi", Some(&topic), Some(&event), "maximal names")
        .await;
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_null_topic_and_event_take_the_defaults() {
    let app = spawn_app().await;

    let response = app
        .post_json(&json!({
            "message": "hi",
            "topic": null,
            "event": null,
            "extra": {"nested": [1, 2, 3]},
            "id": 7,
        }))
        .await;

    app.assert_published(response, "hi", None, None, "extra fields")
        .await;
}

#[tokio::test]
async fn a_publish_with_no_subscriber_answers_promptly() {
    let app = spawn_app().await;

    let response = tokio::time::timeout(
        Duration::from_secs(5),
        app.post_json(&json!({ "message": "anyone?" })),
    )
    .await
    .expect("a publish nobody listens to must not wait for a reader");

    app.assert_published(response, "anyone?", None, None, "no subscriber")
        .await;
}

#[tokio::test]
async fn a_current_subscriber_has_the_event_queued_when_the_201_arrives() {
    let app = spawn_app().await;
    let mut subscription = app.bus.subscribe("live").await.unwrap();

    let response = app
        .post_json(&json!({ "message": "to you", "topic": "live", "event": "note" }))
        .await;

    let stored = app
        .assert_published(response, "to you", Some("live"), Some("note"), "live")
        .await;
    // 201 means it was broadcast already: it must be queued, not merely coming.
    match subscription.try_recv() {
        Some(Recv::Event(event)) => assert_eq!(event, stored),
        other => panic!("expected the event queued for the subscriber, got {other:?}"),
    }
}

#[tokio::test]
async fn successive_publishes_to_a_topic_get_increasing_ids_in_publish_order() {
    let app = spawn_app().await;
    let mut ids = Vec::new();

    for n in 1..=3 {
        let response = app
            .post_form(&[("message", &format!("m{n}")), ("topic", "seq")])
            .await;
        assert_eq!(response.status(), 201);
        ids.push(
            response.headers()[ingest::EVENT_ID_HEADER]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }

    let stored = app.stored("seq").await;
    let stored_ids: Vec<String> = stored.iter().map(|e| e.position.to_string()).collect();
    assert_eq!(stored_ids, ids);
    let data: Vec<&str> = stored.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["m1", "m2", "m3"]);
    let offsets: Vec<u64> = stored.iter().map(|e| e.position.offset).collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(
        stored
            .iter()
            .all(|e| e.position.epoch == stored[0].position.epoch),
        "one epoch for one history"
    );
}

#[tokio::test]
async fn concurrent_publishes_each_get_their_own_id_and_are_all_stored() {
    let app = spawn_app().await;
    let messages: Vec<String> = (0..50).map(|n| format!("message {n}")).collect();

    let responses = tokio::time::timeout(
        PATIENCE,
        join_all(messages.iter().map(|message| {
            let app = &app;
            async move {
                app.post_json(&json!({ "message": message, "topic": "busy" }))
                    .await
            }
        })),
    )
    .await
    .expect("50 concurrent publishes must finish");

    let mut answered = Vec::new();
    for (response, message) in responses.into_iter().zip(&messages) {
        assert_eq!(response.status(), 201, "{message}");
        let id = response.headers()[ingest::EVENT_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(response.text().await.unwrap(), jsend_success(message));
        answered.push((id, message.clone()));
    }
    let mut stored: Vec<(String, String)> = app
        .stored("busy")
        .await
        .iter()
        .map(|e| (e.position.to_string(), e.data.clone()))
        .collect();
    answered.sort();
    stored.sort();
    assert_eq!(stored, answered, "every 201 names its own stored event");
}
