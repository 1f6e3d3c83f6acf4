//! `/healthz`, `/readyz`, `/metrics`, and readiness during shutdown.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    PATIENCE, assert_body, jsend_error, jsend_fail, jsend_success, spawn_app, spawn_app_with,
    wait_until,
};

#[tokio::test]
async fn healthz_answers_200_with_jsend_success() {
    let app = spawn_app().await;

    let response = app.get_healthz().await;

    assert_body(response, StatusCode::OK, &jsend_success("alive"), "healthz").await;
}

#[tokio::test]
async fn readyz_answers_200_over_the_memory_bus() {
    let app = spawn_app().await;

    let response = app.get_readyz().await;

    assert_body(response, StatusCode::OK, &jsend_success("ready"), "readyz").await;
}

#[tokio::test]
async fn metrics_count_published_events_and_only_those() {
    let app = spawn_app().await;

    let response = app.get_metrics().await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = crate::helpers::content_type(&response).unwrap();
    assert!(
        content_type == "text/plain" || content_type == "application/openmetrics-text",
        "a Prometheus text format: {content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("es_events_published_total"), "{text}");
    assert_eq!(app.metric("es_events_published_total").await, 0.0);

    let response = app.post_json(&json!({"message": "one"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.metric("es_events_published_total").await, 1.0);

    let response = app.post_json(&json!({"message": ""})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app.post_raw(Some("text/plain"), "x").await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        app.metric("es_events_published_total").await,
        1.0,
        "refused publishes are not counted"
    );
    assert_eq!(app.metric("es_publish_failures_total").await, 0.0);
}

#[tokio::test]
async fn metrics_show_the_publish_part_and_no_stream_counters() {
    let app = spawn_app().await;

    let text = app.get_metrics().await.text().await.unwrap();

    for name in [
        "es_events_published_total",
        "es_publish_failures_total",
        "es_bus_topics",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    // The gateway's metrics are registered by the stream part, which
    // ingest does not run.
    for name in [
        "es_stream_connections",
        "es_events_delivered",
        "es_events_replayed",
        "es_stream_resets",
        "es_slow_client_disconnects",
    ] {
        assert!(!text.contains(name), "{name} shown by ingest:\n{text}");
    }
}

#[tokio::test]
async fn metrics_record_request_latencies_by_route() {
    let app = spawn_app().await;
    let response = app.post_json(&json!({"message": "one"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let text = app.get_metrics().await.text().await.unwrap();

    assert!(
        text.lines().any(|line| {
            line.starts_with("es_http_request_duration_seconds_count{")
                && line.contains("route=\"/event-stream\"")
                && line.contains("status=\"201\"")
        }),
        "{text}"
    );
}

#[tokio::test]
async fn readyz_turns_503_once_shutdown_begins_and_the_server_then_stops() {
    let app = spawn_app_with(&[("ES__HTTP__SHUTDOWN_GRACE_MS", "1000")]).await;
    assert_eq!(app.get_readyz().await.status(), StatusCode::OK);

    app.shutdown.begin();

    // Until the listener closes, whoever still gets an answer hears 503.
    let app_ref = &app;
    wait_until("the server stops answering", move || async move {
        match app_ref.client.get(app_ref.url("/readyz")).send().await {
            Ok(response) => {
                assert_body(
                    response,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &jsend_error("shutting down"),
                    "readyz while draining",
                )
                .await;
                false
            }
            Err(_) => true,
        }
    })
    .await;
    let run = tokio::time::timeout(PATIENCE, app.server)
        .await
        .expect("App::run must return after draining");
    run.unwrap().unwrap();
}

#[tokio::test]
async fn health_routes_reject_other_methods_as_jsend() {
    let app = spawn_app().await;

    let response = app.client.post(app.url("/healthz")).send().await.unwrap();

    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
        "{status}"
    );
    assert!(
        text == jsend_fail("no such endpoint") || text == jsend_fail("method not allowed"),
        "{text}"
    );
}
