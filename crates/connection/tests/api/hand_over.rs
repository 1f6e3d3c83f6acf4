//! Requests handed to actix-http, and the deadline carried over to it.

use std::time::{Duration, Instant};

use crate::helpers::{
    Bodies, FIXED_FRAME, TIMEOUT, chunk, config, spawn_server, spawn_server_with,
};

/// A request head of about `size` bytes.
fn long_head(method: &str, path: &str, version: &str, size: usize) -> String {
    format!(
        "{method} {path} {version}\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(size)
    )
}

#[tokio::test]
async fn heads_longer_than_4_kib_are_answered_by_actix_on_the_same_connection() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client
        .send(long_head("GET", "/other", "HTTP/1.1", 5000).as_bytes())
        .await;
    client.read_until("\r\n\r\nok").await;
    client
        .send(long_head("GET", "/event-stream", "HTTP/1.1", 5000).as_bytes())
        .await;
    let text = client.read_until("0\r\n\r\n").await;
    let frame = std::str::from_utf8(FIXED_FRAME).unwrap();
    assert!(text.contains(&chunk(frame)), "{text}");
    assert!(
        server.seen.streams.lock().unwrap().is_empty(),
        "not the fast path"
    );
}

#[tokio::test]
async fn a_head_passing_4_kib_late_times_out_from_its_first_byte() {
    let mut config = config();
    config.request_timeout = Duration::from_millis(800);
    let server = spawn_server_with(config, Bodies::Channel);
    let mut client = server.connect().await;
    let started = Instant::now();
    client.send(b"GET /other HTTP/1.1\r\n").await;
    // The client's own pace: most of the deadline passes before the head
    // outgrows the fast path's buffer and is handed over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .send(format!("Cookie: {}\r\n", "c".repeat(5000)).as_bytes())
        .await;
    let text = client.read_to_end().await;
    let elapsed = started.elapsed();
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(elapsed >= Duration::from_millis(750), "{elapsed:?}");
    // A timer restarted at the hand-over would fire at 1300 ms.
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
}

#[tokio::test]
async fn a_trickled_request_after_an_actix_answer_is_closed_at_its_deadline() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    client.read_until("\r\n\r\nok").await;
    let answered = client.received().len();
    let started = Instant::now();
    client
        .send(b"GET /other HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await;
    loop {
        if client.socket().try_write(b"y").is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), client.socket().readable()).await {
            Ok(_) => break,
            Err(_) => assert!(started.elapsed() < TIMEOUT * 10, "never closed"),
        }
    }
    let text = client.read_to_end().await;
    assert!(text[answered..].starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
}

#[tokio::test]
async fn a_request_has_its_own_deadline_whatever_the_previous_request_left() {
    let mut config = config();
    config.request_timeout = Duration::from_millis(800);
    // Long enough for the pauses between the requests below.
    config.keep_alive = Duration::from_secs(5);
    let server = spawn_server_with(config, Bodies::Channel);
    let mut client = server.connect().await;
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    client.read_until("\r\n\r\nok").await;
    let answered = client.received().len();
    client.consume(answered);
    // The next request starts half a timeout later and takes most of its
    // own: the first request's deadline passes while it trickles in.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    client.send(b"GET /other HTTP/1.1\r\n").await;
    while started.elapsed() < Duration::from_millis(600) {
        client.send(b"X-Slow: y\r\n").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.send(b"Host: x\r\n\r\n").await;
    let text = client.read_until("\r\n\r\nok").await;
    assert!(
        text[answered..].starts_with("HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    // And then, idle, it still times out a trickled third at its own.
    let answered = client.received().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    client.send(b"GET /other HTTP/1.1\r\nX-Slow: ").await;
    let text = client.read_to_end().await;
    let elapsed = started.elapsed();
    assert!(text[answered..].starts_with("HTTP/1.1 408"), "{text}");
    assert!(elapsed >= Duration::from_millis(750), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn a_post_body_is_read_under_the_same_deadline() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    client.read_until("\r\n\r\nhello").await;
    // A body that never completes: the request times out like a head.
    let started = Instant::now();
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
        .await;
    let text = client.read_to_end().await;
    assert!(
        text.ends_with("\r\n\r\n") && text.contains("HTTP/1.1 408"),
        "{text}"
    );
    assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_http_1_0_stream_served_by_actix_is_close_delimited() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client
        .send(long_head("GET", "/event-stream", "HTTP/1.0", 5000).as_bytes())
        .await;
    let text = client.read_to_end().await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(!head.to_lowercase().contains("transfer-encoding"), "{head}");
    assert_eq!(body.as_bytes(), FIXED_FRAME);
}

#[tokio::test]
async fn an_idle_connection_served_by_actix_closes_after_keep_alive() {
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    client.read_until("\r\n\r\nok").await;
    let answered = client.received().len();
    let started = Instant::now();
    client.read_to_end().await;
    assert_eq!(client.received().len(), answered, "closed without a 408");
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_partial_request_pipelined_behind_an_actix_answer_is_closed() {
    let server = spawn_server();
    let mut client = server.connect().await;
    let started = Instant::now();
    client
        .send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\nGET /oth")
        .await;
    let text = client.read_to_end().await;
    assert!(text.contains("\r\n\r\nok"), "{text}");
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}
