//! Request ids and client addresses through the front door: nginx gives
//! every request its own id and forwards the client's address; ingest and
//! the gateway, trusting nginx (`http.trusted_proxies`), log both on their
//! lines of that request, and every answer, nginx's own included, carries
//! the id.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use e2e::PATIENCE;
use e2e::cluster::Cluster;
use e2e::nginx::Nginx;
use e2e::process::{Service, free_port};
use sse_reader::{Item, SseStream};

/// The client's own address: another loopback address than nginx's, so
/// that "the client's address" and "nginx's address" differ in the logs.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// The one `X-Request-Id` of an answer: nginx's 32 hex digits.
fn nginx_id(response: &reqwest::Response) -> String {
    let values: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
    assert_eq!(values.len(), 1, "{values:?} on a {}", response.status());
    let id = values[0].to_str().unwrap().to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id
}

/// Waits until `service` logged a line holding every one of `parts`.
async fn logged(service: &Service, parts: &[&str]) -> String {
    let found = e2e::wait_until(PATIENCE, || async {
        service
            .log()
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
    })
    .await;
    let log = service.log();
    assert!(found, "no line with {parts:?} in:\n{log}");
    log.lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn nginx_request_ids_and_the_client_address_reach_both_services_logs() {
    let cluster = Cluster::start(1, &[("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1")]).await;
    let gateways: Vec<String> = cluster.gateway_urls().iter().map(|u| address(u)).collect();
    let nginx = Nginx::start(&[address(&cluster.ingest.url())], &gateways).await;
    let client = reqwest::Client::builder()
        .local_address(CLIENT)
        .build()
        .unwrap();
    let url = format!("{}/event-stream", nginx.url());
    let topic = format!("ids-{}", free_port());
    // What a client says about itself is not believed at the edge.
    let spoofed = [
        ("X-Request-Id", "chosen-by-the-client"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.8"),
    ];
    let with_spoofs = |mut request: reqwest::RequestBuilder| {
        for (name, value) in spoofed {
            request = request.header(name, value);
        }
        request
    };

    let response = with_spoofs(client.get(format!("{url}?topic={topic}&access_token=t0ken")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream_id = nginx_id(&response);
    let mut stream = SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(Item::Retry(_))
    ));

    let published = with_spoofs(client.post(&url))
        .json(&serde_json::json!({"message": "traced", "topic": topic}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let publish_id = nginx_id(&published);
    assert_ne!(publish_id, stream_id);
    let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.data, "traced");
    drop(stream);

    let client_field = format!("client={CLIENT}");
    let line = logged(&cluster.ingest, &[&publish_id, "status=201"]).await;
    assert!(line.contains(&client_field), "{line}");
    let gateway = &cluster.gateways[0];
    let opened = logged(gateway, &[&stream_id, "stream opened"]).await;
    assert!(opened.contains(&client_field), "{opened}");
    let closed = logged(gateway, &[&stream_id, "stream closed"]).await;
    assert!(closed.contains("events=1"), "{closed}");
    for service in [&cluster.ingest, gateway] {
        let log = service.log();
        for spoof in [
            "chosen-by-the-client",
            "203.0.113.7",
            "203.0.113.8",
            "t0ken",
        ] {
            assert!(!log.contains(spoof), "{spoof} in the log:\n{log}");
        }
    }
    let access = nginx.log();
    for id in [&publish_id, &stream_id] {
        assert!(access.contains(&format!("request_id={id}")), "{access}");
    }

    // nginx's own answers carry an id too.
    for (path, status) in [("/healthz", 200), ("/no/such/path", 404)] {
        let response = client
            .get(format!("{}{path}", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        nginx_id(&response);
    }
}

#[tokio::test]
async fn nginx_retry_stream_and_error_pages_carry_a_request_id() {
    // A gateway address nobody listens on: nginx answers every stream.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let nginx = Nginx::start(
        std::slice::from_ref(&nowhere),
        std::slice::from_ref(&nowhere),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/event-stream", nginx.url());
    let retry = client
        .get(&url)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    let id = nginx_id(&retry);
    assert!(retry.text().await.unwrap().starts_with("retry: "));
    let error = client.get(&url).send().await.unwrap();
    assert_eq!(error.status(), 502);
    assert_ne!(nginx_id(&error), id);
    let refused = client
        .post(&url)
        .json(&serde_json::json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_server_error());
    nginx_id(&refused);
}
