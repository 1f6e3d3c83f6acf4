//! A client that stops reading is cut off alone; nobody else waits for it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{TestApp, data, next_events, spawn_app_with, wait_until};

/// Decodes an HTTP/1.1 chunked body; None if it is not complete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_after_a_whole_event_and_others_get_everything() {
    let app = spawn_app_with(&[("ES__STREAM__QUEUE_CAPACITY", "16")]).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();

    // A subscriber with a tiny receive window that reads nothing.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stuck
        .write_all(b"GET /event-stream?topic=flood HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    wait_until("the stuck client is connected", || async {
        app.metric("es_stream_connections").await == 1.0
    })
    .await;

    let mut healthy = app.subscribe("topic=flood", None).await;
    let big = "x".repeat(60_000);
    let total = 600; // ~36 MB: far beyond any socket buffer.
    let reader = tokio::spawn(async move {
        let events = next_events(&mut healthy, total).await;
        (events, healthy)
    });
    for i in 0..total {
        app.bus
            .publish("flood", "message", &format!("{i}:{big}"))
            .await
            .unwrap();
        if i % 16 == 0 {
            // Let the healthy reader keep up, as a real one on a fast link would.
            tokio::task::yield_now().await;
        }
    }
    let (events, healthy) = reader.await.unwrap();
    let expected: Vec<String> = (0..total).map(|i| format!("{i}:{big}")).collect();
    assert!(
        data(&events) == expected,
        "the healthy subscriber missed or reordered events"
    );

    drop(healthy);
    // Reading at last lets the server poll the stream, which finds it a
    // whole queue behind and ends it: what arrives ends with a whole event.
    let mut raw = Vec::new();
    tokio::time::timeout(crate::helpers::PATIENCE, stuck.read_to_end(&mut raw))
        .await
        .expect("the server did not close the stuck connection")
        .unwrap();
    let header_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = dechunk(&raw[header_end..]).expect("the chunked body did not end cleanly");
    assert!(body.ends_with(b"\n\n"), "the body ended inside an event");
    let mut parser = sse_reader::Parser::new();
    let items = parser.feed(&body);
    let received = items
        .iter()
        .filter(|item| matches!(item, sse_reader::Item::Event(_)))
        .count();
    assert!(
        received < total,
        "the stuck client cannot have received everything"
    );
    wait_until("the stuck client was counted as too slow", || async {
        app.metric("es_slow_client_disconnects_total").await >= 1.0
    })
    .await;
    assert_eq!(app.metric("es_stream_connections").await, 0.0);
}

/// A subscriber to the default topic with a tiny receive window that will
/// read nothing, once its stream is open.
async fn stuck_subscriber(app: &TestApp) -> TcpStream {
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stuck
        .write_all(b"GET /event-stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    wait_until("the stuck client is connected", || async {
        app.metric("es_stream_connections").await == 1.0
    })
    .await;
    stuck
}

/// Publishes `count` events of 60 KB (far more than any socket buffer
/// holds) to `default`, then waits until no stream is left open.
async fn flood_until_freed(app: &TestApp, count: usize) {
    let big = "y".repeat(60_000);
    for i in 0..count {
        app.bus
            .publish("default", "message", &format!("{i}:{big}"))
            .await
            .unwrap();
    }
    wait_until("the stuck stream was freed", || async {
        app.metric("es_stream_connections").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_entirely_is_aborted_after_the_send_timeout() {
    let app = spawn_app_with(&[
        ("ES__STREAM__QUEUE_CAPACITY", "16"),
        ("ES__HTTP__SEND_TIMEOUT_MS", "1500"),
    ])
    .await;
    let stuck = stuck_subscriber(&app).await;
    // Never read: only the kernel's send timeout can end this connection.
    flood_until_freed(&app, 300).await;
    assert!(app.metric("es_slow_client_disconnects_total").await >= 1.0);
    drop(stuck);
}

#[tokio::test]
async fn a_client_aborted_by_the_kernel_before_it_falls_behind_is_counted_as_slow() {
    // A queue that never overflows here: only the timed-out write tells
    // that the client stopped reading.
    let app = spawn_app_with(&[
        ("ES__STREAM__QUEUE_CAPACITY", "100000"),
        ("ES__HTTP__SEND_TIMEOUT_MS", "1000"),
    ])
    .await;
    let stuck = stuck_subscriber(&app).await;
    flood_until_freed(&app, 200).await;
    assert_eq!(app.metric("es_slow_client_disconnects_total").await, 1.0);
    drop(stuck);
}
