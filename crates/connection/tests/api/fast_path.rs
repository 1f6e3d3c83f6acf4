//! Stream requests served on the connection itself.

use std::time::{Duration, Instant};

use connection::StreamEnd;

use crate::helpers::{
    Bodies, STREAM_REQUEST, TIMEOUT, chunk, config, spawn_server, spawn_server_with,
};

#[tokio::test]
async fn a_stream_is_written_as_chunks_and_its_route_hears_how_it_ended() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    client.read_until("\r\n\r\n").await;
    let frames = server.stream(0).await;
    frames.send("data: one\n\n".into()).unwrap();
    let text = client.read_until(&chunk("data: one\n\n")).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    drop(frames);
    client.read_until("0\r\n\r\n").await;
    assert_eq!(server.ended(0).await, StreamEnd::Finished);
    let requests = server.seen.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [("GET", "/event-stream", 200)],
        "the observer saw it"
    );
}

#[tokio::test]
async fn a_late_first_request_gets_408_then_close() {
    let server = spawn_server();
    for partial in [&b""[..], b"GET /event-str"] {
        let started = Instant::now();
        let mut client = server.connect().await;
        client.send(partial).await;
        let text = client.read_to_end().await;
        let elapsed = started.elapsed();
        if partial.is_empty() {
            // actix-http closes a connection that never sent a byte the same way.
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        } else {
            assert!(
                text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
                "{text}"
            );
        }
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(50),
            "{elapsed:?}"
        );
        assert!(elapsed < TIMEOUT * 4, "{elapsed:?}");
    }
}

#[tokio::test]
async fn an_idle_connection_closes_after_keep_alive_without_an_answer() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    drop(server.stream(0).await);
    client.read_until("0\r\n\r\n").await;
    let before = client.received().len();
    let started = Instant::now();
    client.read_to_end().await;
    assert_eq!(client.received().len(), before, "nothing more was written");
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_request_pipelined_during_a_stream_is_served_after_it() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    frames.send("data: still\n\n".into()).unwrap();
    client.read_until(&chunk("data: still\n\n")).await;
    drop(frames);
    let text = client.read_until("\r\n\r\nok").await;
    let tail = &text[text.find("0\r\n\r\n").unwrap()..];
    assert!(tail.contains("HTTP/1.1 200 OK\r\n"), "{tail}");
}

#[tokio::test]
async fn more_than_16_kib_pipelined_during_a_stream_closes_the_connection() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let _frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    // Within the limit the stream stays open...
    client.send(&[b'x'; 16 * 1024]).await;
    // ... one more byte is too many.
    client.send(b"x").await;
    client.read_to_end().await;
    assert_eq!(server.ended(0).await, StreamEnd::Failed);
}

#[tokio::test]
async fn a_client_closing_its_side_ends_its_stream_at_once() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    tokio::io::AsyncWriteExt::shutdown(client.socket_mut())
        .await
        .unwrap();
    assert_eq!(server.ended(0).await, StreamEnd::ClientGone);
    assert!(frames.is_closed(), "the body was dropped");
}

#[tokio::test]
async fn a_head_longer_than_the_first_buffer_is_still_served_here() {
    let server = spawn_server();
    let mut client = server.connect().await;
    let cookie = "c".repeat(2500);
    let request = format!("GET /event-stream HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
    client.send(request.as_bytes()).await;
    client.read_until("\r\n\r\n").await;
    drop(server.stream(0).await);
    client.read_until("0\r\n\r\n").await;
    assert_eq!(server.ended(0).await, StreamEnd::Finished);
}

#[tokio::test]
async fn an_http_1_0_stream_is_written_bare_and_closed() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client
        .send(b"GET /event-stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let frames = server.stream(0).await;
    frames.send("data: one\n\n".into()).unwrap();
    drop(frames);
    let text = client.read_to_end().await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_lowercase().contains("transfer-encoding"), "{head}");
    assert!(!head.to_lowercase().contains("keep-alive"), "{head}");
    assert_eq!(body, "data: one\n\n");
}

#[tokio::test]
async fn one_byte_pipelined_behind_a_stream_is_timed_out_after_it() {
    let server = spawn_server();
    let mut client = server.connect().await;
    let mut request = STREAM_REQUEST.to_vec();
    request.push(b'G');
    client.send(&request).await;
    drop(server.stream(0).await);
    client.read_until("0\r\n\r\n").await;
    let ended = Instant::now();
    let text = client.read_to_end().await;
    assert!(
        text.ends_with("\r\n\r\n") && text.contains("HTTP/1.1 408"),
        "{text}"
    );
    assert!(ended.elapsed() < TIMEOUT * 4, "{:?}", ended.elapsed());
}

#[tokio::test]
async fn a_trickled_second_request_is_closed_at_its_deadline() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    drop(server.stream(0).await);
    client.read_until("0\r\n\r\n").await;
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 50 ms: each keeps the connection busy, none finishes.
    let closed = loop {
        if client.socket().try_write(b"X").is_err() {
            break started.elapsed();
        }
        sent += 1;
        if client
            .closed_within(Duration::from_millis(50))
            .await
            .is_some()
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < TIMEOUT * 10,
            "never closed after {sent} bytes"
        );
    };
    client.read_to_end().await;
    assert!(closed >= TIMEOUT - Duration::from_millis(50), "{closed:?}");
    assert!(client.text().contains("HTTP/1.1 408"), "{}", client.text());
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_read_connections_at_once() {
    let mut config = config();
    // Long enough that only shutdown can close them within the test.
    config.request_timeout = Duration::from_secs(30);
    config.keep_alive = Duration::from_secs(30);
    let server = spawn_server_with(config, Bodies::Channel);
    let mut idle = server.connect().await;
    idle.send(STREAM_REQUEST).await;
    drop(server.stream(0).await);
    idle.read_until("0\r\n\r\n").await;
    let mut half_next = server.connect().await;
    half_next.send(STREAM_REQUEST).await;
    drop(server.stream(1).await);
    half_next.read_until("0\r\n\r\n").await;
    half_next.send(b"GET /event-stream HT").await;
    let mut half_first = server.connect().await;
    half_first.send(b"GET /event-stream HT").await;
    let started = Instant::now();
    let stopping = tokio::spawn(server.handle.stop(true));
    for client in [&mut idle, &mut half_next, &mut half_first] {
        client.read_to_end().await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_refused_stream_keeps_the_connection_for_the_next_request() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client
        .send(b"GET /event-stream?refuse HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let text = client.read_until("\r\n\r\nok").await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let requests = server.seen.requests.lock().unwrap().clone();
    assert_eq!(requests, [("GET", "/event-stream", 503)]);
}

#[tokio::test]
async fn a_write_timeout_is_reported_to_the_route() {
    let mut config = config();
    config.send_timeout = Duration::from_millis(300);
    let server = spawn_server_with(config, Bodies::Channel);
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    // The client reads nothing more: frames pile up until the kernel gives up.
    let frame = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.seen.ended.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the write never timed out");
        let _ = frames.send(frame.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.ended(0).await, StreamEnd::WriteTimedOut);
}
