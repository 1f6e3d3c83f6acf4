//! The real `event-stream` binary: configuration errors and signals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::PATIENCE;

use testkit::free_port;

#[test]
fn a_bad_configuration_value_stops_the_start_naming_the_key() {
    let cases = [
        ("ES__HTTP__PORT", "not-a-port", "http.port"),
        ("ES__STREAM__KEEPALIVE_MS", "0", "stream.keepalive_ms"),
        // Both services' sections, and both sets of rules, are the standalone's.
        (
            "ES__PUBLISH__MAX_MESSAGE_CHARS",
            "0",
            "publish.max_message_chars",
        ),
        ("ES__STREAM__MAX_TOPICS", "999", "stream.max_topics"),
        (
            "ES__STREAM__KEEPALIVE_M",
            "1",
            "did you mean stream.keepalive_ms?",
        ),
        ("ES__LOG__FORMAT", "yaml", "log.format"),
        ("ES__LOG__BUFFERED_LINES", "0", "log.buffered_lines"),
        (
            "ES__HTTP__CORS__ALLOWED_ORIGINS",
            "https://app.example.com/",
            "http.cors.allowed_origins",
        ),
    ];
    for (key, value, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_event-stream"))
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{key}={value} should exit with 2"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named),
            "{key}={value}: stderr {stderr:?} should name {named}"
        );
    }
}

#[test]
fn a_config_file_is_read_and_the_environment_overrides_it() {
    let dir = std::env::temp_dir().join(format!("es-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[stream]\nqueue_capacity = 0\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stream.queue_capacity"));
    let output = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .arg("--config")
        .arg(&file)
        .env("ES__STREAM__QUEUE_CAPACITY", "8")
        .env("ES__HTTP__PORT", "not-a-port")
        .output()
        .unwrap();
    // The file's bad value was overridden; the next bad one is reported.
    assert!(String::from_utf8_lossy(&output.stderr).contains("http.port"));
}

#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits_within_the_grace_period() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .env("ES__HTTP__HOST", "127.0.0.1")
        .env("ES__HTTP__PORT", port.to_string())
        .env("ES__HTTP__SHUTDOWN_GRACE_MS", "1000")
        // The server's own lines (how the drain ended), not every request.
        .env("ES__LOG__LEVEL", "warn,service_kit::server=info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read to the end on a thread of its own, so the pipe never fills.
    let mut stdout = child.stdout.take().unwrap();
    let logged = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let client = reqwest::Client::new();
    let address = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        match client.get(format!("{address}/event-stream")).send().await {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("the binary never answered: {error}"),
        }
    };
    let mut stream = sse_reader::SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(sse_reader::Item::Retry(_))
    ));
    let published = client
        .post(format!("{address}/event-stream"))
        .form(&[("message", "last words")])
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    assert_eq!(
        stream
            .next_event_timeout(PATIENCE)
            .await
            .unwrap()
            .unwrap()
            .data,
        "last words"
    );

    let signalled = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // The stream ends without an error: the body was terminated properly.
    let end = stream.next_item_timeout(PATIENCE).await;
    assert!(
        matches!(end, Ok(None)),
        "expected a clean end of stream, got {end:?}"
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        signalled.elapsed() < PATIENCE,
        "shutdown took {:?}",
        signalled.elapsed()
    );
    // The last line says how the drain ended. Which one depends on timing
    // here: actix-server counts a worker's connections once a second, so a
    // 1 s grace usually reads as over even when every stream had ended.
    let log = logged.join().unwrap();
    assert!(log.contains("signal received, draining"), "{log}");
    assert!(
        log.contains("drained") || log.contains("grace period over"),
        "no line says how the drain ended:\n{log}"
    );
}

/// What a browser test needs: the binary started with a page's origin on
/// another local port allowed, from the environment alone.
#[tokio::test]
async fn the_binary_allows_a_second_local_origin_given_in_the_environment() {
    let port = free_port();
    let page = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .env("ES__HTTP__HOST", "127.0.0.1")
        .env("ES__HTTP__PORT", port.to_string())
        .env("ES__HTTP__CORS__ALLOWED_ORIGINS", &page)
        .env("ES__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/event-stream");
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        match client.get(&url).header("Origin", &page).send().await {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("the binary never answered: {error}"),
        }
    };
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        page.as_str()
    );
    drop(response);
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", &page)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        page.as_str()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
