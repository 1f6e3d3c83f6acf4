//! Arbitrary bytes, split into arbitrary reads: the server neither panics
//! nor hangs, and answers exactly what a plain actix-http `HttpService`
//! over the same app answers (the `date` header aside).

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;

use crate::helpers::{Bodies, Client, TIMEOUT, app, config, spawn_server_with};

/// Both servers, started once for all cases.
struct Servers {
    runtime: Runtime,
    ours: u16,
    reference: u16,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (ours, reference) = runtime.block_on(async {
            let ours = spawn_server_with(config(), Bodies::Fixed).port;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let reference = listener.local_addr().unwrap().port();
            let server = actix_server::Server::build()
                .workers(1)
                .disable_signals()
                .listen("reference", listener, || {
                    HttpService::build()
                        .keep_alive(KeepAlive::Timeout(TIMEOUT))
                        // Off, as in the server under test (whose own
                        // deadline stands in): with it on, actix-http 3.20
                        // answers a `Connection: close` request for a
                        // streamed body with a 408 instead of the body.
                        .client_request_timeout(Duration::ZERO)
                        .h1_allow_half_closed(false)
                        .finish(app())
                        .tcp()
                })
                .unwrap()
                .run();
            tokio::spawn(server);
            (ours, reference)
        });
        Servers {
            runtime,
            ours,
            reference,
        }
    })
}

/// Everything a server writes for `pieces` until it closes, with `date`
/// lines removed; `None` if it did not close in time.
async fn answer(port: u16, pieces: &[Vec<u8>]) -> Option<String> {
    let mut client = Client::connect(port, None).await;
    for piece in pieces {
        if client.socket.write_all(piece).await.is_err() {
            break;
        }
        // Apart, so that the server reads them one by one.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut read = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0; 4096];
        loop {
            match client.socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok()?;
    let text = String::from_utf8_lossy(&read);
    Some(
        text.split_inclusive("\r\n")
            .filter(|line| !line.to_ascii_lowercase().starts_with("date: "))
            .collect(),
    )
}

fn stream_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["", "?topic=a", "?x=%zz"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop::collection::vec(
            prop::sample::select(vec![
                "Host: x\r\n",
                "Connection: close\r\n",
                "Connection: keep-alive\r\n",
                "Last-Event-ID: 3\r\n",
                "Expect: 100-continue\r\n",
                "Content-Length: 0\r\n",
                "Transfer-Encoding: chunked\r\n",
                "Upgrade: websocket\r\n",
                "Accept: text/event-stream\r\n",
            ]),
            0..4,
        ),
    )
        .prop_map(|(query, version, headers)| {
            let mut request = format!("GET /event-stream{query} {version}\r\n");
            for header in headers {
                request.push_str(header);
            }
            request.push_str("\r\n");
            if request.contains("Transfer-Encoding: chunked") {
                request.push_str("0\r\n\r\n");
            }
            request.into_bytes()
        })
}

fn other_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "FOOA",
        ]),
        prop::sample::select(vec!["/", "/other", "/event-stream", "/event-stream?a=1"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(method, path, version, body)| {
            let mut request = format!("{method} {path} {version}\r\nHost: x\r\n");
            if matches!(method, "POST" | "PUT") {
                request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = request.into_bytes();
                bytes.extend_from_slice(&body);
                return bytes;
            }
            request.push_str("\r\n");
            request.into_bytes()
        })
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            b'G', b'E', b'T', b' ', b'/', b':', b'\r', b'\n', 0, 0xff, b'a',
        ]),
        1..40,
    )
    // Only line ends would be an unfinished head, which a server waits for.
    .prop_filter("not only line ends", |bytes| {
        bytes.iter().any(|byte| !matches!(byte, b'\r' | b'\n'))
    })
    .prop_map(|mut bytes| {
        // Complete, so that every server must answer it now.
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes
    })
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => stream_request(), 3 => other_request(), 1 => garbage()]
}

/// One to three requests (pipelined), cut at arbitrary points.
fn input() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::collection::vec(request(), 1..4),
        prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    )
        .prop_map(|(requests, cuts)| {
            let bytes = requests.concat();
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len())).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            at.dedup();
            at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_get_the_answer_actix_http_gives(pieces in input()) {
        let servers = servers();
        let (ours, reference) = servers.runtime.block_on(async {
            tokio::join!(answer(servers.ours, &pieces), answer(servers.reference, &pieces))
        });
        let ours = ours.expect("the server did not close the connection in time");
        let reference = reference.expect("actix-http did not close in time");
        let sent: Vec<String> = pieces.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        prop_assert_eq!(ours, reference, "for {:?}", sent);
    }
}
