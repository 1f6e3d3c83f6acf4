//! Per-client limits through the front door: nginx with deploy/nginx/ in
//! front of a real ingest and gateway over Redis, which trust nginx
//! (`ES__HTTP__TRUSTED_PROXIES=127.0.0.1`) to name the client; and nginx's
//! own `limit_req` on publishes.

#![allow(clippy::unwrap_used)]

use e2e::cluster::Cluster;
use e2e::nginx::Nginx;
use sse_reader::{Item, Parser};

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

fn addresses(cluster: &Cluster) -> (Vec<String>, Vec<String>) {
    (
        vec![address(&cluster.ingest.url())],
        cluster.gateway_urls().iter().map(|u| address(u)).collect(),
    )
}

async fn publish(client: &reqwest::Client, base: &str, message: &str) -> reqwest::Response {
    client
        .post(format!("{base}/event-stream"))
        .json(&serde_json::json!({ "message": message, "topic": "limits" }))
        .send()
        .await
        .unwrap()
}

async fn get_stream(client: &reqwest::Client, base: &str, event_source: bool) -> reqwest::Response {
    let mut request = client.get(format!("{base}/event-stream?topic=limits"));
    if event_source {
        request = request.header("Accept", "text/event-stream");
    }
    request.send().await.unwrap()
}

/// The `es_rate_limit_refusals_total{limit=...}` of the service at `base`.
async fn refusals(client: &reqwest::Client, base: &str, limit: &str) -> f64 {
    let series = format!("es_rate_limit_refusals_total{{limit=\"{limit}\"}}");
    e2e::metrics::value(client, base, &series)
        .await
        .unwrap_or_else(|| panic!("no {series} at {base}"))
}

#[tokio::test]
async fn the_services_limits_answer_through_nginx_per_client_address() {
    let cluster = Cluster::start(
        1,
        &[
            ("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            ("ES__PUBLISH__RATE_LIMIT_PER_SEC", "1"),
            ("ES__PUBLISH__RATE_LIMIT_BURST", "2"),
            ("ES__STREAM__MAX_STREAMS_PER_ADDRESS", "1"),
        ],
    )
    .await;
    let (ingest, gateways) = addresses(&cluster);
    let nginx = Nginx::start(&ingest, &gateways).await;
    let client = reqwest::Client::new();

    // Publishes: ingest's 429 passes nginx untouched.
    for n in 0..2 {
        let response = publish(&client, &nginx.url(), &format!("burst {n}")).await;
        assert_eq!(response.status(), 201, "nginx log:\n{}", nginx.log());
    }
    let refused = publish(&client, &nginx.url(), "over").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"fail","data":"too many publishes from this address; retry later"}"#
    );
    assert_eq!(
        refusals(&client, &cluster.ingest.url(), "publish").await,
        1.0
    );
    // The client ingest counted was the one nginx named, not nginx: a
    // request straight from 127.0.0.1 naming another client is that client.
    let other = client
        .post(format!("{}/event-stream", cluster.ingest.url()))
        .header("X-Forwarded-For", "203.0.113.5")
        .json(&serde_json::json!({ "message": "another client", "topic": "limits" }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);

    // Streams: the second from this address is refused by the gateway;
    // nginx turns that into its retry stream for an EventSource.
    let held = get_stream(&client, &nginx.url(), false).await;
    assert_eq!(held.status(), 200);
    assert_eq!(held.content_length(), None, "a stream");
    let response = get_stream(&client, &nginx.url(), true).await;
    assert_eq!(response.status(), 200, "nginx log:\n{}", nginx.log());
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    match Parser::new().feed(body.as_bytes()).as_slice() {
        [Item::Retry(ms), Item::Comment(why)] => {
            assert!((3000..=5700).contains(ms), "retry: {ms}");
            assert_eq!(
                why,
                "unavailable: no server can take this stream now, retrying"
            );
        }
        other => panic!("not nginx's retry body: {other:?} from {body:?}"),
    }
    // Anyone else hears the gateway's 429, with its Retry-After.
    let response = get_stream(&client, &nginx.url(), false).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "6", "the 2nd in a row");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"status":"fail","data":"too many open streams from this address; retry later"}"#
    );
    let gateway = &cluster.gateway_urls()[0];
    assert_eq!(refusals(&client, gateway, "streams").await, 2.0);
    let log = nginx.log();
    assert!(
        log.contains("upstream_status=429"),
        "the 429s came from the gateway: {log}"
    );
    drop(held);
}

#[tokio::test]
async fn nginx_limits_publishes_per_address_with_a_jsend_429() {
    let cluster = Cluster::start(1, &[]).await;
    let (ingest, gateways) = addresses(&cluster);
    let nginx = Nginx::start_with_publish_rate(&ingest, &gateways, "1r/m", 2).await;
    let client = reqwest::Client::new();
    // One at the rate and two of burst, then nothing for a minute.
    for n in 0..3 {
        let response = publish(&client, &nginx.url(), &format!("within {n}")).await;
        assert_eq!(response.status(), 201, "nginx log:\n{}", nginx.log());
    }
    let refused = publish(&client, &nginx.url(), "over").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"fail","data":"too many publishes from this address; retry later"}"#
    );
    assert!(
        nginx.log().contains("limiting requests"),
        "nginx refused it itself: {}",
        nginx.log()
    );
    // Streams are not limited by it.
    let stream = get_stream(&client, &nginx.url(), false).await;
    assert_eq!(stream.status(), 200);
}
