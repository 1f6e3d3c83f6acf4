//! Through the front door: Debian's nginx with deploy/nginx/, in front of a
//! real ingest, three real gateways and Redis.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::check::assert_delivered;
use e2e::cluster::{Cluster, Outcome, Published, publish};
use e2e::metrics::open_streams;
use e2e::nginx::Nginx;
use e2e::subscriber::Subscriber;
use e2e::{PATIENCE, wait_until};

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

async fn front_door(gateways: usize) -> (Cluster, Nginx) {
    let cluster = Cluster::start(gateways, &[]).await;
    let nginx = Nginx::start(
        &[address(&cluster.ingest.url())],
        &gateway_addresses(&cluster),
    )
    .await;
    (cluster, nginx)
}

/// `GET /event-stream?{query}` as an EventSource asks for it (`Accept:
/// text/event-stream`) or as curl does.
async fn get_stream(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    event_source: bool,
) -> reqwest::Response {
    let mut request = client.get(format!("{base}/event-stream?{query}"));
    if event_source {
        request = request.header("Accept", "text/event-stream");
    }
    request.send().await.unwrap()
}

/// What nginx answers an EventSource when no gateway can take its stream:
/// a whole `200 text/event-stream` body of a `retry:` (3000 to 5700 ms, in
/// steps of 300: nginx's clock-drawn jitter) and a comment, which the
/// browser survives. Returns the delay.
async fn assert_nginx_retry(response: reqwest::Response, log: &str) -> u64 {
    assert_eq!(response.status(), 200, "nginx log:\n{log}");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/event-stream");
    assert_eq!(header("cache-control"), "no-cache");
    assert!(
        response.content_length().is_some(),
        "a whole body, not a stream"
    );
    let body = response.text().await.unwrap();
    match sse_reader::Parser::new().feed(body.as_bytes()).as_slice() {
        [sse_reader::Item::Retry(ms), sse_reader::Item::Comment(why)] => {
            assert!((3000..=5700).contains(ms) && ms % 300 == 0, "retry: {ms}");
            assert_eq!(
                why,
                "unavailable: no server can take this stream now, retrying"
            );
            *ms
        }
        other => panic!("not nginx's retry body: {other:?} from {body:?}"),
    }
}

/// Two gateways of `max_streams` streams each behind one nginx worker, so
/// every request of a test meets the failure memory the previous ones left
/// (nginx keeps it per worker).
async fn two_small_gateways(max_streams: &str) -> (Cluster, Nginx) {
    let cluster = Cluster::start(2, &[("ES__STREAM__MAX_STREAMS", max_streams)]).await;
    let nginx = Nginx::start_one_worker(
        &[address(&cluster.ingest.url())],
        &gateway_addresses(&cluster),
    )
    .await;
    (cluster, nginx)
}

fn gateway_addresses(cluster: &Cluster) -> Vec<String> {
    cluster.gateway_urls().iter().map(|u| address(u)).collect()
}

#[tokio::test]
async fn the_tutorials_commands_work_through_nginx() {
    let (_cluster, nginx) = front_door(3).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{}/event-stream", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = sse_reader::SseStream::new(response);
        assert!(matches!(
            stream.next_item_timeout(PATIENCE).await.unwrap(),
            Some(sse_reader::Item::Retry(3000))
        ));
        streams.push(stream);
    }
    let json = client
        .post(format!("{}/event-stream", nginx.url()))
        .header("Content-Type", "application/json")
        .body(r#"{"message":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 201);
    assert!(json.headers().contains_key("x-event-id"));
    assert_eq!(
        json.text().await.unwrap(),
        r#"{"status":"success","data":"hello"}"#
    );
    let form = client
        .post(format!("{}/event-stream", nginx.url()))
        .form(&[("message", "world")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        form.text().await.unwrap(),
        r#"{"status":"success","data":"world"}"#
    );
    for stream in &mut streams {
        let first = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        let second = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        assert_eq!(
            (first.event.as_str(), first.data.as_str()),
            ("message", "hello")
        );
        assert_eq!(second.data, "world");
    }
}

#[tokio::test]
async fn nginx_answers_its_own_errors_in_jsend() {
    let (_cluster, nginx) = front_door(1).await;
    let client = reqwest::Client::new();
    let huge = client
        .post(format!("{}/event-stream", nginx.url()))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"message":"{}"}}"#, "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(
        huge.text().await.unwrap(),
        r#"{"status":"fail","data":"request body is larger than 65536 bytes"}"#
    );
    let healthz = client
        .get(format!("{}/healthz", nginx.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        healthz.text().await.unwrap(),
        r#"{"status":"success","data":"alive"}"#
    );
    let missing = client
        .get(format!("{}/index.html", nginx.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/json");
    // Errors from the services pass through untouched.
    let invalid = client
        .post(format!("{}/event-stream", nginx.url()))
        .json(&serde_json::json!({"message": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.text().await.unwrap(),
        r#"{"status":"fail","data":"request validation error: message must not be empty"}"#
    );
}

#[tokio::test]
async fn with_every_gateway_down_an_event_source_gets_nginxs_retry_and_others_jsend_502() {
    let (mut cluster, nginx) = front_door(2).await;
    for gateway in &mut cluster.gateways {
        gateway.kill();
    }
    let client = reqwest::Client::new();
    // The jitter comes from the clock's milliseconds: requests in a row
    // land on another value once the clock passes the next 100 ms.
    let delays = std::sync::Mutex::new(Vec::new());
    let varied = wait_until(PATIENCE, || async {
        let response = get_stream(&client, &nginx.url(), "topic=down", true).await;
        let delay = assert_nginx_retry(response, &nginx.log()).await;
        let mut delays = delays.lock().unwrap();
        delays.push(delay);
        delays.iter().any(|d| *d != delays[0])
    })
    .await;
    assert!(varied, "one delay only: {:?}", delays.lock().unwrap());
    let response = get_stream(&client, &nginx.url(), "topic=down", false).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    let head = client
        .head(format!("{}/event-stream", nginx.url()))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        200,
        "HEAD meets the same answer, without its body"
    );
}

#[tokio::test]
async fn a_full_gateway_of_two_never_shows_an_event_source_a_refusal() {
    // Each gateway takes two streams; the first is filled straight away.
    let (cluster, nginx) = two_small_gateways("2").await;
    let client = reqwest::Client::new();
    let [first, second] = [0, 1].map(|i| cluster.gateways[i].url());
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = get_stream(&client, &first, "topic=full", true).await;
        assert_eq!(stream.status(), 200);
        assert_eq!(stream.content_length(), None, "a stream");
        held.push(stream);
    }
    let mut streams = Vec::new();
    for attempt in 0..2 {
        let response = get_stream(&client, &nginx.url(), "topic=full", true).await;
        assert_eq!(response.status(), 200, "attempt {attempt}");
        assert_eq!(
            response.content_length(),
            None,
            "attempt {attempt}: a refusal reached the client; nginx log:\n{}",
            nginx.log()
        );
        let mut stream = sse_reader::SseStream::new(response);
        assert_eq!(
            stream.next_item_timeout(PATIENCE).await.unwrap(),
            Some(sse_reader::Item::Retry(3000)),
            "attempt {attempt}"
        );
        streams.push(stream);
    }
    assert_eq!(open_streams(&client, &second).await, Some(2));
    // Events flow on the streams the second gateway took.
    let outcome = publish(&client, &nginx.url(), "full", "served").await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    for stream in &mut streams {
        let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        assert_eq!(event.data, "served");
    }
    // Now both are full: the refusal comes from nginx, in the client's form.
    let response = get_stream(&client, &nginx.url(), "topic=full", true).await;
    assert_nginx_retry(response, &nginx.log()).await;
    drop(held);
}

#[tokio::test]
async fn a_gateways_4xx_passes_nginx_unchanged_and_405_names_every_method() {
    let (cluster, nginx) = front_door(1).await;
    let client = reqwest::Client::new();
    let gateway = cluster.gateways[0].url();
    for base in [&gateway, &nginx.url()] {
        for event_source in [true, false] {
            let response = get_stream(&client, base, "topic=a%20b", event_source).await;
            assert_eq!(response.status(), 400, "{base}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.text().await.unwrap(),
                r#"{"status":"fail","data":"request validation error: topic may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'"}"#,
                "{base}"
            );
        }
    }
    for (base, allow) in [(&gateway, "GET, HEAD"), (&nginx.url(), "GET, HEAD, POST")] {
        let response = client
            .put(format!("{base}/event-stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{base}");
        let allows: Vec<_> = response.headers().get_all("allow").iter().collect();
        assert_eq!(allows, [allow], "{base}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"status":"fail","data":"method not allowed"}"#
        );
    }
    // HEAD reaches a gateway and gets a stream's head, no body, no stream.
    let head = client
        .head(format!("{}/event-stream?topic=h", nginx.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    assert_eq!(head.headers()["cache-control"], "no-cache");
    assert_eq!(head.headers().get("allow"), None);
    assert_eq!(open_streams(&client, &gateway).await, Some(0));
    let bad = client
        .head(format!("{}/event-stream?topic=a%20b", nginx.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn past_nginxs_per_address_limit_an_event_source_gets_its_retry_and_others_jsend_503() {
    let cluster = Cluster::start(1, &[]).await;
    let nginx = Nginx::start_with_per_address_limit(
        &[address(&cluster.ingest.url())],
        &gateway_addresses(&cluster),
        2,
    )
    .await;
    let client = reqwest::Client::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = get_stream(&client, &nginx.url(), "topic=limit", true).await;
        assert_eq!(stream.content_length(), None, "a stream");
        held.push(stream);
    }
    let response = get_stream(&client, &nginx.url(), "topic=limit", true).await;
    assert_nginx_retry(response, &nginx.log()).await;
    let response = get_stream(&client, &nginx.url(), "topic=limit", false).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"status":"error","message":"service unavailable, try again"}"#
    );
    drop(held);
}

#[tokio::test]
async fn events_arrive_through_nginx_without_buffering_delay() {
    let (cluster, nginx) = front_door(3).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/event-stream?topic=latency", nginx.url()))
        .send()
        .await
        .unwrap();
    let mut stream = sse_reader::SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(sse_reader::Item::Retry(_))
    ));
    let mut delays = Vec::new();
    for i in 0..30 {
        let message = format!("tick {i}");
        let outcome = publish(&client, &nginx.url(), "latency", &message).await;
        let acknowledged = Instant::now();
        assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
        let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        delays.push(acknowledged.elapsed());
        assert_eq!(event.data, message);
    }
    drop(cluster);
    delays.sort();
    let median = delays[delays.len() / 2];
    // Buffering shows up as seconds (until a buffer fills or a timeout), not
    // milliseconds; on loopback an unbuffered event follows its 201 at once.
    assert!(
        median < Duration::from_millis(100),
        "median delay after the 201: {median:?}; all: {delays:?}"
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_secs(1),
        "slowest: {:?}",
        delays.last()
    );
}

#[tokio::test]
async fn a_rolling_restart_of_every_gateway_loses_nothing_for_resuming_clients() {
    let (mut cluster, nginx) = front_door(3).await;
    let mut subscribers = Vec::new();
    for _ in 0..6 {
        subscribers.push(Subscriber::start(vec![nginx.url()], "topic=rolling").await);
    }
    // Publish through the front door the whole time.
    let publisher = {
        let client = cluster.client.clone();
        let base = nginx.url();
        let stop = tokio_util::sync::CancellationToken::new();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut published = Published::default();
            let mut i = 0;
            while !done.is_cancelled() {
                let message = format!("r-{i}");
                let outcome = publish(&client, &base, "rolling", &message).await;
                published.record(message, outcome);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            published
        });
        (stop, task)
    };
    for index in 0..cluster.gateways.len() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = cluster.gateways[index].terminate().await;
        assert!(status.success(), "gateway {index} exited with {status:?}");
        cluster.gateways[index].restart();
        cluster.gateways[index].wait_ready().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.0.cancel();
    let published = publisher.1.await.unwrap();
    assert!(
        published.refused.is_empty(),
        "publishes were refused: {:?}",
        published.refused.first()
    );
    assert!(
        published.stored.len() > 100,
        "only {} publishes",
        published.stored.len()
    );
    for (index, subscriber) in subscribers.iter().enumerate() {
        let arrived = wait_until(PATIENCE, || async {
            let data = subscriber.data();
            published.stored.iter().all(|m| data.contains(m))
        })
        .await;
        assert!(
            arrived,
            "subscriber {index} is missing events; ends {:?}",
            subscriber.with(|s| s.ends.clone())
        );
    }
    let mut moved = 0;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let seen = subscriber.finish().await;
        let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
        assert_delivered(&format!("subscriber {index}"), &data, &published);
        assert_eq!(
            data, published.stored,
            "subscriber {index}: exactly once, in order, no reset"
        );
        moved += usize::from(seen.connections > 1);
    }
    assert!(
        moved > 0,
        "no subscriber was ever moved: the restarts did not reach them"
    );
    drop(nginx);
}

#[tokio::test]
async fn a_gateway_answering_503_does_not_keep_the_front_door_from_the_others() {
    // Each gateway takes one stream; past that it answers 503 "too many open
    // streams".
    let (cluster, nginx) = two_small_gateways("1").await;
    let client = reqwest::Client::new();
    let [first, second] = [0, 1].map(|i| cluster.gateways[i].url());
    let mut held = Vec::new();
    for gateway in [&first, &second] {
        // Straight to the gateway, so nginx has no connection of its own to
        // either and least_conn tries both.
        let stream = client
            .get(format!("{gateway}/event-stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }

    // Both full: nginx tries one, then the other, and answers the last 503
    // itself (503 JSend; an EventSource would get its retry body), again and
    // again. Counting each 503 as a failure with max_fails=1, the first
    // request marked one gateway down and the second the other, and from
    // then on nginx answered 502 "no live upstreams" without asking either.
    for attempt in 0..3 {
        let refused = client
            .get(format!("{}/event-stream", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            503,
            "attempt {attempt}: both gateways asked, not 502; nginx log:\n{}",
            nginx.log()
        );
        assert_eq!(refused.headers()["retry-after"], "1");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["message"], "service unavailable, try again");
    }
    assert!(
        nginx.log().contains("upstream_status=503, 503"),
        "each refused request asked both gateways; nginx log:\n{}",
        nginx.log()
    );

    // The second gateway gets its slot back.
    drop(held.pop());
    let freed = wait_until(PATIENCE, || async {
        open_streams(&client, &second).await == Some(0)
    })
    .await;
    assert!(freed, "the second gateway never closed the dropped stream");

    // The very next stream gets it, not a 502 for the rest of a
    // fail_timeout.
    let stream = client
        .get(format!("{}/event-stream", nginx.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.status(),
        200,
        "{}; nginx log:\n{}",
        stream.status(),
        nginx.log()
    );
    assert_eq!(open_streams(&client, &second).await, Some(1));
    assert_eq!(open_streams(&client, &first).await, Some(1));
    drop(held);
}

#[tokio::test]
async fn cors_headers_and_preflights_pass_through_nginx_unchanged() {
    const APP: &str = "https://app.example";
    const EVIL: &str = "https://evil.example";
    let cluster = Cluster::start(1, &[("ES__HTTP__CORS__ALLOWED_ORIGINS", APP)]).await;
    let nginx = Nginx::start(
        &[address(&cluster.ingest.url())],
        &gateway_addresses(&cluster),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/event-stream", nginx.url());
    let allow_origin = |response: &reqwest::Response| {
        let values: Vec<String> = response
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(values.len() <= 1, "doubled: {values:?}");
        values.into_iter().next()
    };

    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight(APP).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allow_origin(&allowed).as_deref(), Some(APP));
    assert_eq!(
        allowed.headers()["access-control-allow-methods"],
        "GET, HEAD, POST"
    );
    assert_eq!(allowed.headers()["access-control-max-age"], "600");
    let refused = preflight(EVIL).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(allow_origin(&refused), None);
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"fail","data":"CORS preflight refused: origin not allowed"}"#
    );

    let publish = |origin: String, message: &'static str| {
        client
            .post(&url)
            .header("Origin", origin)
            .json(&serde_json::json!({"message": message, "topic": "cors"}))
            .send()
    };
    let allowed = publish(APP.to_owned(), "from the app").await.unwrap();
    assert_eq!(allowed.status(), 201);
    assert_eq!(allow_origin(&allowed).as_deref(), Some(APP));
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "x-event-id, retry-after"
    );
    let forged = publish(EVIL.to_owned(), "forged").await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(allow_origin(&forged), None);
    // nginx passes the Host with its port: a page served from the front
    // door itself is the same origin and publishes without any setting.
    let same = publish(nginx.url(), "same origin").await.unwrap();
    assert_eq!(same.status(), 201, "{:?}", same.text().await);

    for (origin, expected) in [(APP, Some(APP)), (EVIL, None)] {
        let response = client
            .get(format!("{url}?topic=cors&lastEventId="))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{origin}");
        assert_eq!(allow_origin(&response).as_deref(), expected, "{origin}");
        assert_eq!(
            response.headers().get_all("vary").iter().count(),
            1,
            "{origin}"
        );
        assert!(
            response.headers()["vary"]
                .to_str()
                .unwrap()
                .starts_with("Origin"),
            "{origin}"
        );
        // Served either way: a refused origin's page cannot read it, but
        // the stream itself is the same.
        let mut stream = sse_reader::SseStream::new(response);
        assert!(matches!(
            stream.next_item_timeout(PATIENCE).await.unwrap(),
            Some(sse_reader::Item::Retry(_))
        ));
    }
}

/// Sockets in TIME_WAIT on 127.0.0.1 (IPv4, `/proc/net/tcp`) as (local
/// port, remote port): the side that closed a connection first holds it.
fn time_wait_ports() -> Vec<(u16, u16)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port =
        |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"06")).then(|| (port(fields[1]), port(fields[2])))
        })
        .collect()
}

#[tokio::test]
async fn nginx_closes_an_idle_upstream_connection_before_the_service_does() {
    // A service closes a connection idle for 5 s; nginx must close its
    // cached ones first, or a publish it sends on one the service is just
    // closing gets a 502 that nginx does not retry (a POST).
    let (cluster, nginx) = front_door(1).await;
    let ingest = cluster.ingest.port();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/event-stream", nginx.url()))
        .json(&serde_json::json!({ "message": "kept alive" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "nginx log:\n{}", nginx.log());
    // Idle past both timeouts; TIME_WAIT lasts 60 s, so both sides' records
    // are still there.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let closed = time_wait_ports();
    let closed_by_nginx = closed
        .iter()
        .filter(|(_, remote)| *remote == ingest)
        .count();
    let closed_by_ingest = closed.iter().filter(|(local, _)| *local == ingest).count();
    assert!(
        closed_by_nginx >= 1 && closed_by_ingest == 0,
        "idle connections to ingest: {closed_by_nginx} closed by nginx, {closed_by_ingest} by ingest"
    );
}
