//! The real `ingest` binary: it reads its own settings section and leaves
//! the gateway's to the gateway.

use std::process::{Child, Command, Stdio};

use testkit::free_port;

use crate::helpers::{PATIENCE, wait_until};

/// Ends the child when the test ends, passed or failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_gateway_rule_broken_in_the_environment_does_not_stop_ingest() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env("ES__HTTP__HOST", "127.0.0.1")
        .env("ES__HTTP__PORT", port.to_string())
        .env("ES__BUS__ENGINE", "memory")
        .env("ES__LOG__LEVEL", "warn")
        // More topics per subscription than a cursor can carry: a gateway
        // refuses to start with this, ingest runs no streams.
        .env("ES__STREAM__MAX_TOPICS", "999")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");

    wait_until("ingest answers /readyz with 200", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
}

#[test]
fn a_publish_rule_broken_stops_ingest_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env("ES__PUBLISH__MAX_BODY_BYTES", "0")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("publish.max_body_bytes"),
        "stderr should name the key: {stderr:?}"
    );
}
