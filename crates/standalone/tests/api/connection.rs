//! Streams served on the connection itself (the `connection` crate):
//! what the fast path answers, what it hands to actix on the same
//! connection, and clients that go away. Raw sockets, so the bytes on the
//! wire are what is checked.

use std::time::Duration;

use testkit::RawClient;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with, wait_until};

/// A raw connection to `app`; reads wait up to [`PATIENCE`].
async fn connect(app: &TestApp) -> RawClient {
    RawClient::connect(app.port).await.with_patience(PATIENCE)
}

/// Reads until the server closes the connection in order: a reset fails
/// the test.
async fn read_to_close(client: &mut RawClient) -> String {
    let text = client.read_to_end().await;
    assert!(
        !client.failed(),
        "the server reset the connection; got {text:?}"
    );
    text
}

const REQUEST_METRIC: &str = "es_http_request_duration_seconds_count";

fn request_metric(status: u16) -> String {
    format!("{REQUEST_METRIC}{{method=\"GET\",route=\"/event-stream\",status=\"{status}\"}}")
}

#[tokio::test]
async fn a_request_pipelined_behind_a_refused_stream_is_answered_on_the_same_connection() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(
            b"GET /event-stream?topic=a%20b HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await;
    let text = client.read_until(r#""data":"alive"}"#).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    let refusal = text
        .find(r#"{"status":"fail","data":"request validation error: topic"#)
        .unwrap_or_else(|| panic!("no JSend fail in {text}"));
    let health = text.find("HTTP/1.1 200 OK\r\n").unwrap();
    assert!(refusal < health, "answers out of order: {text}");
    assert_eq!(app.metric(&request_metric(400)).await, 1.0);
}

#[tokio::test]
async fn a_stream_asked_for_after_another_request_on_the_same_connection_delivers_events() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /event-stream?topic=after-health HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await;
    let text = client.read_until("retry: 3000\n\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("content-type: text/event-stream\r\n"),
        "{text}"
    );
    app.publish_to("after-health", "second request's event")
        .await;
    client.read_until("data: second request's event\n\n").await;
}

#[tokio::test]
async fn a_request_head_split_across_many_writes_resumes_from_its_last_event_id() {
    let app = spawn_app().await;
    let first = app.publish_to("split", "one").await;
    app.publish_to("split", "two").await;
    let head = format!(
        "GET /event-stream?topic=split HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {first}\r\n\r\n"
    );
    let mut client = connect(&app).await;
    client.socket().set_nodelay(true).unwrap();
    for piece in head.as_bytes().chunks(7) {
        client.send(piece).await;
        // Gives each piece its own segment, so the server sees it partial.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = client.read_until("data: two\n\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.contains("data: one\n"),
        "replayed from before the id: {text}"
    );
}

#[tokio::test]
async fn a_head_too_long_for_the_fast_path_is_served_by_actix_all_the_same() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    let filler = "a".repeat(connection::MAX_HEAD * 2);
    client
        .send(
            format!("GET /event-stream HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let text = client.read_until("retry: 3000\n\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(app.metric("es_stream_connections").await, 1.0);

    // Past actix's own limit (32 KiB) the head is refused, as before.
    let mut client = connect(&app).await;
    let filler = "a".repeat(64 * 1024);
    client
        .send(format!("GET /event-stream HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n").as_bytes())
        .await;
    let text = read_to_close(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
}

#[tokio::test]
async fn an_http_1_0_client_gets_the_stream_with_the_same_headers() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(b"GET /event-stream?topic=old-client HTTP/1.0\r\n\r\n")
        .await;
    let text = client.read_until("retry: 3000\n\n").await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    for header in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-cache\r\n",
        "x-accel-buffering: no\r\n",
    ] {
        assert!(text.contains(header), "no {header:?} in {text}");
    }
    app.publish_to("old-client", "hello 1.0").await;
    client.read_until("data: hello 1.0\n\n").await;
}

#[tokio::test]
async fn an_http_1_0_stream_is_close_delimited_on_both_paths() {
    // A short grace period: shutdown ends the streams soon.
    let app = spawn_app_with(&[("ES__HTTP__SHUTDOWN_GRACE_MS", "200")]).await;
    let filler = "a".repeat(connection::MAX_HEAD * 2);
    let requests = [
        ("the fast path", String::new()),
        ("actix", format!("X-Filler: {filler}\r\n")),
    ];
    let mut clients = Vec::new();
    for (path, extra) in requests {
        let mut client = connect(&app).await;
        client
            .send(
                format!(
                    "GET /event-stream?topic=ten HTTP/1.0\r\nConnection: keep-alive\r\n{extra}\r\n"
                )
                .as_bytes(),
            )
            .await;
        client.read_until("retry: 3000\n\n").await;
        clients.push((path, client));
    }
    app.publish_to("ten", "bare").await;
    for (_, client) in &mut clients {
        client.read_until("data: bare\n\n").await;
    }
    app.shutdown.begin();
    for (path, mut client) in clients {
        let text = read_to_close(&mut client).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{path}: {head}");
        assert!(!head.contains("transfer-encoding"), "{path}: {head}");
        assert!(!head.contains("keep-alive"), "{path}: {head}");
        assert!(
            body.starts_with("retry: 3000\n\n"),
            "{path}: chunked? {body:?}"
        );
        assert!(!body.contains("\r\n"), "{path}: chunked? {body:?}");
    }
}

#[tokio::test]
async fn invented_methods_share_one_metric_label() {
    let app = spawn_app().await;
    for method in ["FOOA", "FOOB"] {
        let mut client = connect(&app).await;
        client
            .send(
                format!("{method} /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
        read_to_close(&mut client).await;
    }
    let count = app
        .metric(&format!(
            "{REQUEST_METRIC}{{method=\"other\",route=\"other\",status=\"404\"}}"
        ))
        .await;
    assert_eq!(count, 2.0);
}

/// RFC 9110: a general-purpose server MUST support HEAD. It gets a stream's
/// head after the same checks as GET, and no body; it opens no stream.
#[tokio::test]
async fn head_gets_the_streams_head_after_the_same_checks_and_no_body() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(b"HEAD /event-stream?topic=t HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let text = client.read_until("\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    for header in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-cache\r\n",
        "x-accel-buffering: no\r\n",
    ] {
        assert!(text.contains(header), "no {header:?} in {text}");
    }
    client.consume(client.received().len());
    // The connection is kept, and nothing came after the head.
    client
        .send(b"HEAD /event-stream?topic=a%20b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let text = read_to_close(&mut client).await;
    let bad = &text[client.consumed()..];
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        bad.ends_with("\r\n\r\n"),
        "HEAD answered with a body: {bad}"
    );
    assert_eq!(app.metric("es_stream_connections").await, 0.0);
}

#[tokio::test]
async fn another_method_gets_405_naming_get_head_and_post() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(b"PUT /event-stream HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    let text = read_to_close(&mut client).await;
    assert!(
        text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{text}"
    );
    assert!(text.contains("allow: GET, HEAD, POST\r\n"), "{text}");
}

/// Over `http.max_connections_per_address` an EventSource gets the SSE
/// form, its delay doubling with each refusal in a row; others the 503.
#[tokio::test]
async fn over_the_per_address_cap_an_event_source_gets_a_growing_retry() {
    let app = spawn_app_with(&[("ES__HTTP__MAX_CONNECTIONS_PER_ADDRESS", "2")]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = connect(&app).await;
        client
            .send(b"GET /event-stream HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        client.read_until("retry: 3000\n\n").await;
        held.push(client);
    }
    for (refusal, window) in [(1, 3000..=6000), (2, 6000..=12000), (3, 12000..=24000)] {
        let mut client = connect(&app).await;
        client
            .send(b"GET /event-stream?topic=t HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
            .await;
        let text = read_to_close(&mut client).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            head.contains("content-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("connection: close\r\n"), "{head}");
        let items = sse_reader::Parser::new().feed(body.as_bytes());
        match items.as_slice() {
            [sse_reader::Item::Retry(ms), sse_reader::Item::Comment(why)] => {
                assert!(window.contains(ms), "refusal {refusal}: {ms} ms");
                assert_eq!(
                    why,
                    "unavailable: too many connections from this address, retrying"
                );
            }
            other => panic!("refusal {refusal}: {other:?}"),
        }
    }
    let mut client = connect(&app).await;
    client
        .send(b"GET /event-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let text = read_to_close(&mut client).await;
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("retry-after: 1\r\n"), "{text}");
}

#[tokio::test]
async fn a_client_that_closes_while_idle_frees_its_stream_at_once() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS", "1")]).await;
    let mut client = connect(&app).await;
    client
        .send(b"GET /event-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    client.read_until("retry: 3000\n\n").await;

    let refused = app.get_stream("", None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");

    drop(client);
    wait_until("the closed client's stream is freed", || async {
        app.metric("es_stream_connections").await == 0.0
    })
    .await;
    let mut next = app.subscribe("", None).await;
    app.publish("for the next client").await;
    assert_eq!(
        next.next_event_timeout(PATIENCE)
            .await
            .unwrap()
            .unwrap()
            .data,
        "for the next client"
    );
}

#[tokio::test]
async fn a_client_that_shuts_its_sending_side_ends_its_stream() {
    let app = spawn_app().await;
    let mut client = connect(&app).await;
    client
        .send(b"GET /event-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    client.read_until("retry: 3000\n\n").await;
    assert_eq!(app.metric("es_stream_connections").await, 1.0);

    client.socket_mut().shutdown().await.unwrap();
    read_to_close(&mut client).await;
    wait_until("the half-closed client's stream is freed", || async {
        app.metric("es_stream_connections").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn streams_opened_on_the_fast_path_are_counted_in_request_metrics() {
    let app = spawn_app().await;
    let _open = app.subscribe("topic=counted", None).await;
    let refused = app.get_stream("topic=a%20b", None).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(app.metric(&request_metric(200)).await, 1.0);
    assert_eq!(app.metric(&request_metric(400)).await, 1.0);
}
