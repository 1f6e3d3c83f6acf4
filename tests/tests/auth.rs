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

/// Redis, ingest and a gateway with `chat.*` private and publishing
/// `publish` (`open` or `token`), `extra` on top, behind nginx; the stream
/// URL through nginx.
async fn front_door(publish: &str, extra: &[(&str, &str)]) -> (Cluster, Nginx, String) {
    let mut env = vec![
        ("ES__AUTH__PUBLISH", publish),
        ("ES__AUTH__PRIVATE_TOPICS", "chat.*"),
        ("ES__AUTH__HS256_SECRETS", SECRET),
    ];
    env.extend_from_slice(extra);
    let cluster = Cluster::start(1, &env).await;
    let gateways: Vec<String> = cluster.gateway_urls().iter().map(|u| address(u)).collect();
    let nginx = Nginx::start(&[address(&cluster.ingest.url())], &gateways).await;
    let url = format!("{}/event-stream", nginx.url());
    (cluster, nginx, url)
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
    let (_cluster, nginx, url) = front_door("token", &[]).await;
    let client = reqwest::Client::new();
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

/// The token mode's other cases through nginx: a public topic needs no
/// token, a private one opens with a header token, and a stream whose token
/// runs out ends with `token-expired`; the client comes back with a fresh
/// token and its last id and gets exactly what was published meanwhile.
#[tokio::test]
async fn public_topics_header_tokens_and_a_seamless_resume_after_expiry_through_nginx() {
    let (_cluster, _nginx, url) = front_door("token", &[("ES__AUTH__LEEWAY_SECS", "0")]).await;
    let client = reqwest::Client::new();
    let writer = mint(&["--publish", "*"]);
    let publish = |topic: &'static str, message: String| {
        let request = client
            .post(&url)
            .bearer_auth(&writer)
            .json(&serde_json::json!({"message": message, "topic": topic}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201, "{message}");
            response.headers()["x-event-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };

    // A public topic in token mode: read without any token.
    let mut public = open(client.get(format!("{url}?topic=news"))).await;
    publish("news", "open to all".into()).await;
    let event = public.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.data, "open to all");

    // A private topic by header token.
    let reader = mint(&["--subscribe", "chat.*"]);
    let mut by_header = open(
        client
            .get(format!("{url}?topic=chat.room"))
            .bearer_auth(&reader),
    )
    .await;
    // And by a query token that runs out in 3 s.
    let short = mint(&["--subscribe", "chat.*", "--ttl", "3"]);
    let mut expiring =
        open(client.get(format!("{url}?topic=chat.room&access_token={short}"))).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publish("chat.room", format!("before-{n}")).await);
    }
    for stream in [&mut by_header, &mut expiring] {
        for n in 0..3 {
            let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
            assert_eq!(event.data, format!("before-{n}"));
        }
    }
    let last_seen = expiring.last_event_id().to_owned();
    assert_eq!(last_seen, ids[2]);

    // The token's exp ends the stream with one last event, after a whole one.
    let end = expiring
        .next_event_timeout(std::time::Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.event, "token-expired");
    assert_eq!(end.data, r#"{"reason":"token-expired"}"#);
    assert_eq!(
        expiring.last_event_id(),
        last_seen,
        "token-expired carries no id"
    );
    assert!(
        expiring
            .next_item_timeout(PATIENCE)
            .await
            .unwrap()
            .is_none(),
        "the stream ends after token-expired"
    );
    // The expired token is refused now, as it should be...
    let stale = client
        .get(format!("{url}?topic=chat.room&access_token={short}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);

    // ...while events go on being published.
    for n in 0..3 {
        publish("chat.room", format!("after-{n}")).await;
    }
    let fresh = mint(&["--subscribe", "chat.*"]);
    let mut resumed = open(
        client
            .get(format!("{url}?topic=chat.room&access_token={fresh}"))
            .header("Last-Event-ID", &last_seen),
    )
    .await;
    for n in 0..3 {
        let event = resumed.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        assert_eq!(event.event, "message", "no reset: {event:?}");
        assert_eq!(event.data, format!("after-{n}"));
    }
    // The header-token stream saw everything once, uninterrupted.
    for n in 0..3 {
        let event = by_header
            .next_event_timeout(PATIENCE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.data, format!("after-{n}"));
    }
}

/// Open mode through nginx: publishing needs no token, and still a private
/// topic needs one to be read.
#[tokio::test]
async fn open_mode_publishes_without_tokens_and_private_topics_stay_private_through_nginx() {
    let (_cluster, _nginx, url) = front_door("open", &[]).await;
    let client = reqwest::Client::new();
    let refused = client
        .get(format!("{url}?topic=chat.room"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let reader = mint(&["--subscribe", "chat.room"]);
    let mut private = open(
        client
            .get(format!("{url}?topic=chat.room"))
            .header("Cookie", format!("es_token={reader}")),
    )
    .await;
    for topic in ["chat.room", "default"] {
        let published = client
            .post(&url)
            .json(&serde_json::json!({"message": "no token needed", "topic": topic}))
            .send()
            .await
            .unwrap();
        assert_eq!(published.status(), 201, "{topic}");
    }
    let event = private.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.data, "no token needed");
}
