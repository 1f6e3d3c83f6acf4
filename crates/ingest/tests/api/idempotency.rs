//! Idempotent publishes: a key in the `Idempotency-Key` header or the
//! `idempotency_key` field makes a retry answer the first 201 again,
//! storing nothing; every bound on keys is tried past its edge.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_body, assert_fail, jsend_success, spawn_app, spawn_app_with};
use crate::publish::ENCODINGS;

/// The event id header of a response, which must have one.
fn event_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ingest::EVENT_ID_HEADER)
        .expect("an event id")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A 400's text for a broken rule.
fn invalid(rule: &str) -> String {
    format!("request validation error: {rule}")
}

fn replayed(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_201_and_id_and_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"message": "pay 10", "topic": "orders"});

    let first = app.post_json_keyed(&body, &[b"order-17"]).await;
    let id = event_id(&first);
    assert_eq!(replayed(&first), None, "a first publish is no replay");
    assert_body(
        first,
        StatusCode::CREATED,
        &jsend_success("pay 10"),
        "first",
    )
    .await;

    for attempt in 0..3 {
        let retry = app.post_json_keyed(&body, &[b"order-17"]).await;
        assert_eq!(event_id(&retry), id, "retry {attempt}: the same id");
        assert_eq!(replayed(&retry), Some("true"), "retry {attempt}");
        assert_body(
            retry,
            StatusCode::CREATED,
            &jsend_success("pay 10"),
            "retry",
        )
        .await;
    }
    let stored = app.stored("orders").await;
    assert_eq!(stored.len(), 1, "one event whatever the retries");
    assert_eq!(stored[0].position.to_string(), id);
    assert_eq!(app.metric("es_events_published_total").await, 1.0);
    assert_eq!(app.metric("es_publishes_replayed_total").await, 3.0);

    // Without a key, the same request is a new event, as always.
    let plain = app.post_json(&body).await;
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert_ne!(event_id(&plain), id);
    assert_eq!(app.stored("orders").await.len(), 2);
}

#[tokio::test]
async fn the_body_field_works_in_every_encoding_and_matches_the_header() {
    let app = spawn_app().await;
    for (i, encoding) in ENCODINGS.into_iter().enumerate() {
        let key = format!("key-{i}");
        let fields = [("message", "m"), ("idempotency_key", key.as_str())];
        let first = app.post_fields(encoding, &fields).await;
        assert_eq!(first.status(), StatusCode::CREATED, "{encoding:?}");
        let id = event_id(&first);
        let again = app.post_fields(encoding, &fields).await;
        assert_eq!(replayed(&again), Some("true"), "{encoding:?}");
        assert_eq!(event_id(&again), id, "{encoding:?}");
        // The header names the same key as the body field.
        let by_header = app
            .post_json_keyed(&json!({"message": "m"}), &[key.as_bytes()])
            .await;
        assert_eq!(event_id(&by_header), id, "{encoding:?} then header");
    }
    assert_eq!(app.stored("default").await.len(), ENCODINGS.len());
}

#[tokio::test]
async fn the_same_key_with_another_request_is_a_422_and_stores_nothing() {
    let app = spawn_app().await;
    let first = app
        .post_json_keyed(&json!({"message": "a", "topic": "t"}), &[b"k"])
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let cases = [
        (json!({"message": "b", "topic": "t"}), "another message"),
        (
            json!({"message": "a", "topic": "t", "event": "x"}),
            "another event type",
        ),
    ];
    for (body, why) in cases {
        let response = app.post_json_keyed(&body, &[b"k"]).await;
        assert_fail(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency key already used for a different request to this topic; \
             use a new key for a new event",
            why,
        )
        .await;
    }
    assert_eq!(app.stored("t").await.len(), 1);
    // Keys belong to a topic: the same key elsewhere is a new event.
    let elsewhere = app
        .post_json_keyed(&json!({"message": "b", "topic": "u"}), &[b"k"])
        .await;
    assert_eq!(elsewhere.status(), StatusCode::CREATED);
    assert_eq!(replayed(&elsewhere), None);
}

#[tokio::test]
async fn a_quoted_header_key_is_the_same_key_as_a_bare_one() {
    let app = spawn_app().await;
    let body = json!({"message": "m"});
    let bare = app.post_json_keyed(&body, &[b"abc"]).await;
    let quoted = app.post_json_keyed(&body, &[b"\"abc\""]).await;
    assert_eq!(event_id(&bare), event_id(&quoted));
    assert_eq!(replayed(&quoted), Some("true"));
}

#[tokio::test]
async fn bad_keys_are_refused_with_400_and_store_nothing() {
    let app = spawn_app().await;
    let too_long = "k".repeat(256);
    let length = "must be 1 to 255 characters";
    let charset = "may only contain visible ASCII characters ('!' to '~')";
    let header_cases: [(&[&[u8]], String, &str); 6] = [
        (
            &[b""],
            format!("Idempotency-Key header {length}"),
            "an empty header",
        ),
        (
            &[b"\"\""],
            format!("Idempotency-Key header {length}"),
            "an empty quoted header",
        ),
        (
            &[too_long.as_bytes()],
            format!("Idempotency-Key header {length}"),
            "256 characters",
        ),
        (
            &[b"a b"],
            format!("Idempotency-Key header {charset}"),
            "a space",
        ),
        (
            &[b"cl\xc3\xa9"],
            format!("Idempotency-Key header {charset}"),
            "bytes past ASCII",
        ),
        (
            &[b"a", b"a"],
            "Idempotency-Key header must be sent once".to_owned(),
            "twice",
        ),
    ];
    for (keys, data, why) in header_cases {
        let response = app.post_json_keyed(&json!({"message": "m"}), keys).await;
        assert_fail(response, StatusCode::BAD_REQUEST, &invalid(&data), why).await;
    }
    let body_cases = [
        (
            json!({"message": "m", "idempotency_key": ""}),
            format!("idempotency_key {length}"),
        ),
        (
            json!({"message": "m", "idempotency_key": too_long}),
            format!("idempotency_key {length}"),
        ),
        (
            json!({"message": "m", "idempotency_key": "tab\there"}),
            format!("idempotency_key {charset}"),
        ),
    ];
    for (body, data) in body_cases {
        let response = app.post_json(&body).await;
        assert_fail(response, StatusCode::BAD_REQUEST, &invalid(&data), &data).await;
    }
    let wrong_type = app
        .post_json(&json!({"message": "m", "idempotency_key": 7}))
        .await;
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);
    let disagreeing = app
        .post_json_keyed(&json!({"message": "m", "idempotency_key": "a"}), &[b"b"])
        .await;
    assert_fail(
        disagreeing,
        StatusCode::BAD_REQUEST,
        &invalid(
            "idempotency_key differs from the Idempotency-Key header; send one, or the same key in both",
        ),
        "header and body disagree",
    )
    .await;
    app.assert_nothing_published(&[], "bad keys").await;
}

#[tokio::test]
async fn past_the_configured_cap_the_oldest_key_publishes_again() {
    let app = spawn_app_with(&[("ES__PUBLISH__IDEMPOTENCY_MAX_KEYS_PER_TOPIC", "2")]).await;
    let post = |key: &'static str| {
        let app = &app;
        async move {
            app.post_json_keyed(&json!({"message": key}), &[key.as_bytes()])
                .await
        }
    };
    let first = event_id(&post("k1").await);
    post("k2").await;
    post("k3").await;
    let again = post("k1").await;
    assert_eq!(replayed(&again), None, "k1 was forgotten for k3");
    assert_ne!(event_id(&again), first);
    assert_eq!(replayed(&post("k3").await), Some("true"));
    assert_eq!(app.stored("default").await.len(), 4);
}
