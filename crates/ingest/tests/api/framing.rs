//! Requests written byte by byte on a raw socket, for framing no HTTP
//! client library would produce: the service must refuse them with a
//! status, never hang, and never publish.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{PATIENCE, TestApp, spawn_app};

/// Writes `head` (and nothing more), then reads until the server closes or
/// the response head is complete; returns the status code.
async fn status_of(app: &TestApp, head: &str) -> u16 {
    let mut socket = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("no answer to {head:?}"));
    let text = String::from_utf8_lossy(&received);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?} for {head:?}"))
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused_before_it_is_sent() {
    // Nothing of the 100 MB follows the head: the 413 must come anyway.
    let app = spawn_app().await;

    let status = status_of(
        &app,
        "POST /event-stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: 100000000\r\n\r\n",
    )
    .await;

    assert_eq!(status, 413);
    app.assert_nothing_published(&[], "100 MB announced").await;
}

#[tokio::test]
async fn ambiguous_body_framing_is_refused_and_publishes_nothing() {
    let app = spawn_app().await;
    let body = r#"{"message":"hi"}"#;
    let cases = [
        (
            format!(
                "POST /event-stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nContent-Length: 3\r\n\r\n{body}",
                body.len()
            ),
            "two different Content-Length headers",
        ),
        (
            format!(
                "POST /event-stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: -1\r\n\r\n{body}"
            ),
            "a negative Content-Length",
        ),
        (
            format!(
                "POST /event-stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: 18446744073709551616\r\n\r\n{body}"
            ),
            "a Content-Length past u64",
        ),
        (
            format!(
                "POST /event-stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n"
            ),
            "a chunk size that is not hex",
        ),
    ];
    for (request, why) in cases {
        let status = tokio::time::timeout(Duration::from_secs(15), status_of(&app, &request))
            .await
            .unwrap_or_else(|_| panic!("{why}: hung"));

        assert_eq!(status, 400, "{why}");
        app.assert_nothing_published(&[], why).await;
    }
}
