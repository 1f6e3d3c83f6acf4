//! Connections per client address, and the metric labels.

use std::net::Ipv4Addr;

use connection::method_label;
use testkit::RawClient;

use crate::helpers::{Bodies, PATIENCE, config, connect, spawn_server_with};

const SECOND_SOURCE: [u8; 4] = [127, 0, 0, 2];

/// Opens a connection and proves it is served (so it is counted).
async fn served(port: u16, from: Option<Ipv4Addr>) -> RawClient {
    let mut client = connect(port, from).await;
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    client.read_until("\r\n\r\nok").await;
    client
}

#[tokio::test]
async fn connections_over_the_per_address_limit_get_503_and_others_are_unaffected() {
    let mut config = config();
    config.max_connections_per_address = 2;
    config.workers = 2;
    let server = spawn_server_with(config, Bodies::Channel);
    let first = served(server.port, None).await;
    let _second = served(server.port, None).await;

    let mut over = connect(server.port, None).await;
    over.send(b"GET /event-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let text = over.read_to_end().await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    assert!(head.contains("retry-after: 1\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert_eq!(
        body,
        r#"{"status":"error","message":"too many connections from this address"}"#
    );

    // Another address has its own count.
    served(server.port, Some(SECOND_SOURCE.into())).await;

    // A closed connection gives its place back.
    drop(first);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut client = connect(server.port, None).await;
        client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        if client
            .read_until("\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
    }
}

#[test]
fn metric_labels_come_from_a_fixed_set() {
    for method in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ] {
        let parsed = actix_http::Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(method_label(&parsed), method);
    }
    for invented in ["FOOA", "BREW", "get", "PROPFIND"] {
        let parsed = actix_http::Method::from_bytes(invented.as_bytes()).unwrap();
        assert_eq!(method_label(&parsed), "other", "{invented}");
    }
}
