//! Tokens through the front door: nginx with deploy/nginx/ in front of a
//! real ingest and gateway over Redis, in token mode with private topics;
//! tokens minted by the binaries' own `mint-token`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use e2e::PATIENCE;
use e2e::cluster::Cluster;
use e2e::nginx::Nginx;
use e2e::process::binary;
use sse_reader::{Item, SseStream};

/// The deployment's HS256 secret in this test.
const SECRET: &str = "a-secret-of-the-front-door-auth-test-0123";

/// A token from `ingest mint-token`, with the secret in the environment.
fn mint(args: &[&str]) -> String {
    let output = Command::new(binary("ingest"))
        .args([
            "mint-token",
            "--secret-env",
            "ES_E2E_SECRET",
            "--ttl",
            "600",
        ])
        .args(args)
        .env("ES_E2E_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Opens a stream and reads its `retry:`; panics unless it is a 200 stream.
async fn open(request: reqwest::RequestBuilder) -> SseStream {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(Item::Retry(_))
    ));
    stream
}

#[tokio::test]
async fn token_publish_and_private_subscribe_by_cookie_and_by_query_through_nginx() {
    let cluster = Cluster::start(
        1,
        &[
            ("ES__AUTH__PUBLISH", "token"),
            ("ES__AUTH__PRIVATE_TOPICS", "chat.*"),
            ("ES__AUTH__HS256_SECRETS", SECRET),
        ],
    )
    .await;
    let gateways: Vec<String> = cluster.gateway_urls().iter().map(|u| address(u)).collect();
    let nginx = Nginx::start(&[address(&cluster.ingest.url())], &gateways).await;
    let client = reqwest::Client::new();
    let url = format!("{}/event-stream", nginx.url());
    let writer = mint(&["--publish", "chat.*"]);
    let reader = mint(&["--subscribe", "chat.*", "--sub", "reader"]);

    // Refusals pass nginx unchanged, the challenge included.
    let refused = client
        .post(&url)
        .json(&serde_json::json!({"message": "no token", "topic": "chat.room"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"fail","data":"a token is required to publish"}"#
    );
    let refused = client
        .get(format!("{url}?topic=chat.room"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "permanent even for an EventSource");

    let mut by_cookie = open(
        client
            .get(format!("{url}?topic=chat.room"))
            .header("Cookie", format!("es_token={reader}")),
    )
    .await;
    let mut by_query =
        open(client.get(format!("{url}?topic=chat.room&access_token={reader}"))).await;

    let published = client
        .post(&url)
        .bearer_auth(&writer)
        .json(&serde_json::json!({"message": "hello, room", "topic": "chat.room"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    for stream in [&mut by_cookie, &mut by_query] {
        let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        assert_eq!(event.data, "hello, room");
    }

    let log = nginx.log();
    assert!(log.contains("GET /event-stream "), "the access log: {log}");
    let signature = reader.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature) && !log.contains("access_token"),
        "the query token in nginx's log: {log}"
    );
}
