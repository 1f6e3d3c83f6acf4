//! Per-client limits against the real app: publishes per second per
//! client address (`publish.rate_limit_per_sec`, `publish.rate_limit_burst`)
//! and open streams per client address (`stream.max_streams_per_address`).
//! Several client addresses are played through `X-Forwarded-For` from
//! 127.0.0.1, made a trusted proxy; without that, the header is a forgery
//! and must not help.

use std::time::{Duration, Instant};

use reqwest::Response;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use sse_reader::{Item, Parser};

use crate::helpers::{GetPath, PATIENCE, TestApp, spawn_app_with, wait_until};

const TOO_MANY_PUBLISHES: &str =
    r#"{"status":"fail","data":"too many publishes from this address; retry later"}"#;
const TOO_MANY_STREAMS: &str =
    r#"{"status":"fail","data":"too many open streams from this address; retry later"}"#;

/// One publish to `topic`, as the client `forwarded_for` names (through
/// a proxy) or as 127.0.0.1 itself.
async fn publish_as(
    app: &TestApp,
    forwarded_for: Option<&str>,
    topic: &str,
    message: &str,
) -> Response {
    let mut request = app
        .client
        .post(format!("{}/event-stream", app.address))
        .json(&serde_json::json!({ "message": message, "topic": topic }));
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.unwrap()
}

/// Asserts the whole 429 of a publish over the limit; returns its
/// `Retry-After`.
async fn assert_publish_429(response: Response, case: &str) -> u64 {
    assert_eq!(response.status(), 429, "{case}");
    assert!(response.headers().get("x-event-id").is_none(), "{case}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(retry_after >= 1, "{case}: whole seconds, at least 1");
    assert_eq!(response.text().await.unwrap(), TOO_MANY_PUBLISHES, "{case}");
    retry_after
}

async fn app_with_publish_limit(per_sec: &str, burst: &str, trust_loopback: bool) -> TestApp {
    let mut env = vec![
        ("ES__PUBLISH__RATE_LIMIT_PER_SEC", per_sec),
        ("ES__PUBLISH__RATE_LIMIT_BURST", burst),
    ];
    if trust_loopback {
        env.push(("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"));
    }
    spawn_app_with(&env).await
}

const PUBLISH_REFUSALS: &str = r#"es_rate_limit_refusals_total{limit="publish"}"#;
const STREAM_REFUSALS: &str = r#"es_rate_limit_refusals_total{limit="streams"}"#;

#[tokio::test]
async fn publishes_over_the_limit_get_429_publish_nothing_and_the_bucket_refills() {
    let app = app_with_publish_limit("1", "3", false).await;
    assert_eq!(app.metric(PUBLISH_REFUSALS).await, 0.0);
    let mut stream = app.subscribe("topic=limited", None).await;
    for n in 0..3 {
        let response = publish_as(&app, None, "limited", &format!("burst {n}")).await;
        assert_eq!(response.status(), 201, "publish {n} is within the burst");
    }
    for n in 0..3 {
        let refused = publish_as(&app, None, "limited", "over the limit").await;
        assert_eq!(
            assert_publish_429(refused, "over").await,
            1,
            "1/s: at most 1 s"
        );
        assert_eq!(app.metric(PUBLISH_REFUSALS).await, f64::from(n + 1));
    }
    // A refusal spends nothing: once a second has passed, the next one is in.
    let mut attempts = 0;
    wait_until("the bucket refills", || {
        attempts += 1;
        let app = &app;
        async move {
            publish_as(app, None, "limited", "after the refill")
                .await
                .status()
                == 201
        }
    })
    .await;
    let mut received = Vec::new();
    for _ in 0..4 {
        let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        received.push(event.data);
    }
    assert_eq!(
        received,
        ["burst 0", "burst 1", "burst 2", "after the refill"],
        "no refused publish reached a subscriber"
    );
    let refused = app.metric(PUBLISH_REFUSALS).await;
    assert_eq!(refused, f64::from(2 + attempts), "every refusal counted");
}

#[tokio::test]
async fn each_address_has_its_own_bucket_and_ipv6_counts_by_64() {
    let app = app_with_publish_limit("1", "1", true).await;
    let cases = [
        // (client, whether its bucket is already empty)
        (Some("203.0.113.1"), false),
        (Some("203.0.113.1"), true),
        (Some("203.0.113.2"), false),
        (None, false),
        (None, true),
        // A client's own entry sits left of the proxy's: it changes nothing.
        (Some("198.51.100.9, 203.0.113.1"), true),
        (Some("2001:db8:1:2::1"), false),
        (Some("2001:db8:1:2::ffff"), true),
        (Some("2001:db8:1:3::1"), false),
    ];
    for (client, empty) in cases {
        let response = publish_as(&app, client, "per-address", "hello").await;
        let case = format!("as {client:?}");
        if empty {
            assert_publish_429(response, &case).await;
        } else {
            assert_eq!(response.status(), 201, "{case}");
        }
    }
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit() {
    let app = app_with_publish_limit("1", "2", false).await;
    for n in 0..2 {
        let response = publish_as(&app, Some(&format!("203.0.113.{n}")), "forged", "x").await;
        assert_eq!(response.status(), 201);
    }
    for client in ["203.0.113.50", "198.51.100.1", "2001:db8::1", "garbage"] {
        let response = publish_as(&app, Some(client), "forged", "x").await;
        assert_publish_429(response, client).await;
    }
    let response = publish_as(&app, None, "forged", "x").await;
    assert_publish_429(response, "no header").await;
}

/// A flood from many addresses: the limit holds a bucket for each while
/// it refills, then forgets it (pruned every second), so what it holds is
/// bounded by the addresses of the last few seconds, not by all it saw.
#[tokio::test]
async fn the_limit_forgets_addresses_whose_bucket_refilled() {
    let app = app_with_publish_limit("1", "5", true).await;
    assert_eq!(app.metric("es_publish_limit_addresses").await, 0.0);
    let addresses: Vec<String> = (0..400)
        .map(|i| format!("10.{}.{}.1", i / 200, i % 200))
        .collect();
    for batch in addresses.chunks(50) {
        let answers = futures_util::future::join_all(
            batch
                .iter()
                .map(|client| publish_as(&app, Some(client), "flood", "x")),
        )
        .await;
        for answer in answers {
            assert_eq!(answer.status(), 201, "one publish per address");
        }
    }
    let held = app.metric("es_publish_limit_addresses").await;
    assert!(
        (1.0..=400.0).contains(&held),
        "buckets still refilling are held: {held}"
    );
    wait_until("every refilled bucket is forgotten", || async {
        app.metric("es_publish_limit_addresses").await == 0.0
    })
    .await;
    assert_eq!(app.metric(PUBLISH_REFUSALS).await, 0.0);
}

/// What a stream request got: status, `Retry-After`, content type, body
/// (a stream's first chunk, or the whole answer).
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    body: String,
}

async fn get_stream(
    app: &TestApp,
    path: GetPath,
    event_source: bool,
    xff: Option<&str>,
) -> (Answer, Response) {
    let mut headers = HeaderMap::new();
    if event_source {
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    }
    if let Some(client) = xff {
        headers.insert("x-forwarded-for", HeaderValue::from_str(client).unwrap());
    }
    let mut response = app
        .get_on(path, "topic=capped")
        .headers(headers)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, retry_after, content_type) = (
        response.status().as_u16(),
        header("retry-after"),
        header("content-type").unwrap_or_default(),
    );
    let chunk = tokio::time::timeout(PATIENCE, response.chunk())
        .await
        .expect("no first chunk")
        .unwrap()
        .unwrap_or_default();
    let answer = Answer {
        status,
        retry_after,
        content_type,
        body: String::from_utf8_lossy(&chunk).into_owned(),
    };
    (answer, response)
}

/// Opens a stream that the app admits, and holds it.
async fn hold(app: &TestApp, path: GetPath, xff: Option<&str>) -> Response {
    let (answer, response) = get_stream(app, path, false, xff).await;
    assert_eq!(answer.status, 200, "{path:?} {xff:?}: {}", answer.body);
    assert_eq!(answer.body, "retry: 3000\n\n");
    response
}

/// Over the cap an EventSource gets the SSE retry, its delay growing with
/// each refusal in a row, and anyone else a 429 whose `Retry-After` grows
/// the same way; on both GET paths, which count together.
#[tokio::test]
async fn over_its_streams_per_address_a_client_is_told_to_retry_on_both_paths() {
    let app = spawn_app_with(&[
        ("ES__STREAM__MAX_STREAMS_PER_ADDRESS", "2"),
        ("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    assert_eq!(app.metric(STREAM_REFUSALS).await, 0.0);
    let fast = hold(&app, GetPath::Fast, None).await;
    let actix = hold(&app, GetPath::Actix, None).await;

    // stream.retry_ms is 3000: the n-th refusal in a row waits
    // 3000 x 2^(n-1) ms before the jitter, up to 8 x.
    for (path, window) in [(GetPath::Fast, 3000..=6000), (GetPath::Actix, 6000..=12000)] {
        let (answer, _) = get_stream(&app, path, true, None).await;
        assert_eq!(answer.status, 200, "{path:?}: {}", answer.body);
        assert_eq!(answer.content_type, "text/event-stream");
        assert_eq!(answer.retry_after, None);
        match Parser::new().feed(answer.body.as_bytes()).as_slice() {
            [Item::Retry(ms), Item::Comment(why)] => {
                assert!(window.contains(ms), "{path:?}: {ms} ms");
                assert_eq!(
                    why,
                    "unavailable: too many open streams from this address, retrying"
                );
            }
            other => panic!("{path:?}: {other:?}"),
        }
    }
    for (path, retry_after) in [(GetPath::Fast, "12"), (GetPath::Actix, "24")] {
        let (answer, _) = get_stream(&app, path, false, None).await;
        assert_eq!(answer.status, 429, "{path:?}: {}", answer.body);
        assert_eq!(answer.content_type, "application/json");
        assert_eq!(answer.retry_after.as_deref(), Some(retry_after), "{path:?}");
        assert_eq!(answer.body, TOO_MANY_STREAMS);
    }
    assert_eq!(app.metric(STREAM_REFUSALS).await, 4.0);

    // Another client address is not affected.
    let other = hold(&app, GetPath::Fast, Some("203.0.113.7")).await;

    // A closed stream gives its place back, on either path.
    let mut reopened = Vec::new();
    for (closed, path) in [(fast, GetPath::Actix), (actix, GetPath::Fast)] {
        drop(closed);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (answer, response) = get_stream(&app, path, false, None).await;
            if answer.status == 200 {
                reopened.push(response);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path:?}: the closed stream's place was never given back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (answer, _) = get_stream(&app, GetPath::Fast, false, None).await;
    assert_eq!(
        answer.status, 429,
        "the reopened streams hold the cap again"
    );
    drop(other);
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_open_more_streams() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS_PER_ADDRESS", "1")]).await;
    let _held = hold(&app, GetPath::Fast, Some("203.0.113.1")).await;
    for path in [GetPath::Fast, GetPath::Actix] {
        let (answer, _) = get_stream(&app, path, false, Some("203.0.113.2")).await;
        assert_eq!(answer.status, 429, "{path:?}: {}", answer.body);
    }
}
