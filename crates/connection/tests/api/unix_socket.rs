//! The same connections over a unix socket: requests, streams, and a unix
//! peer counted as `127.0.0.1`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::helpers::{
    Bodies, PATIENCE, PEER_PATH, STREAM_REQUEST, chunk, config, connect, spawn_server_with,
};

/// A fresh directory for one test's socket.
fn socket_in(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("es-conn-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("http.sock")
}

/// Reads until `needle` has arrived (or fails after [`PATIENCE`]); returns
/// everything read.
async fn read_until(io: &mut UnixStream, received: &mut Vec<u8>, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(received).contains(needle) {
        let mut buf = [0; 4096];
        let read = tokio::time::timeout_at(deadline.into(), io.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} not received; got {:?}",
                    String::from_utf8_lossy(received)
                )
            })
            .unwrap();
        assert!(read > 0, "closed before {needle:?}");
        received.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(received).into_owned()
}

async fn connect_unix(path: &Path) -> UnixStream {
    UnixStream::connect(path).await.unwrap()
}

#[tokio::test]
async fn a_request_and_a_stream_are_served_over_a_unix_socket_from_127_0_0_1() {
    let path = socket_in("serve");
    let mut config = config();
    config.unix_socket = Some(path.clone());
    config.unix_socket_mode = 0o600;
    let server = spawn_server_with(config, Bodies::Channel);
    {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    // A stream the fast path serves.
    let mut io = connect_unix(&path).await;
    let mut received = Vec::new();
    io.write_all(STREAM_REQUEST).await.unwrap();
    let sender = server.stream(0).await;
    sender.send("data: one\n\n".into()).unwrap();
    let text = read_until(&mut io, &mut received, &chunk("data: one\n\n")).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert_eq!(
        server.seen.peers.lock().unwrap().as_slice(),
        [Some(connection::UNIX_PEER)],
        "the route sees the unix peer as 127.0.0.1"
    );

    // The stream ends; the connection, back from the stream runtime,
    // serves a next request (actix's), which sees the same peer.
    drop(sender);
    read_until(&mut io, &mut received, "0\r\n\r\n").await;
    received.clear();
    io.write_all(format!("GET {PEER_PATH} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let text = read_until(&mut io, &mut received, "peer=Some(127.0.0.1:0)").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    // TCP still works alongside.
    let mut tcp = connect(server.port, None).await;
    tcp.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tcp.read_until("\r\n\r\nok").await;

    // A graceful stop removes the socket file.
    drop(io);
    drop(tcp);
    server.handle.stop(true).await;
    let deadline = Instant::now() + PATIENCE;
    while path.exists() {
        assert!(Instant::now() < deadline, "the socket file stayed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_unix_peer_shares_the_per_address_count_of_127_0_0_1() {
    let path = socket_in("limit");
    let mut config = config();
    config.unix_socket = Some(path.clone());
    config.max_connections_per_address = 1;
    let server = spawn_server_with(config, Bodies::Channel);
    let mut tcp = connect(server.port, None).await;
    tcp.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tcp.read_until("\r\n\r\nok").await;

    let mut io = connect_unix(&path).await;
    io.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let text = read_until(&mut io, &mut received, "\r\n\r\n").await;
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    server.handle.stop(true).await;
}
