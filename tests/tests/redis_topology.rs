//! The distributed topology over a real Redis: ingest, several gateways,
//! and the failures SPEC.md promises to survive.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::check::{assert_delivered, assert_delivered_on_one_connection};
use e2e::cluster::{Cluster, Outcome, Published, service_env};
use e2e::process::Service;
use e2e::subscriber::Subscriber;
use e2e::{PATIENCE, RedisServer, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits until every subscriber has received every acknowledged message.
async fn wait_for_all(subscribers: &[Subscriber], published: &Published) {
    for (index, subscriber) in subscribers.iter().enumerate() {
        let arrived = wait_until(PATIENCE, || async {
            let data = subscriber.data();
            published.stored.iter().all(|m| data.contains(m))
        })
        .await;
        if !arrived {
            let data = subscriber.data();
            let missing = published
                .stored
                .iter()
                .filter(|m| !data.contains(m))
                .count();
            panic!(
                "subscriber {index} is missing {missing} events; ends: {:?}",
                subscriber.with(|s| s.ends.clone())
            );
        }
    }
}

#[tokio::test]
async fn subscribers_on_every_gateway_get_every_event() {
    let cluster = Cluster::start(2, &[]).await;
    let mut subscribers = Vec::new();
    for gateway in &cluster.gateways {
        for _ in 0..3 {
            subscribers.push(Subscriber::start(vec![gateway.url()], "topic=fanout").await);
        }
    }
    let mut published = Published::default();
    cluster
        .publish_numbered("fanout", "m", 200, &mut published)
        .await;
    assert_eq!(
        published.stored.len(),
        200,
        "refusals: {:?}",
        published.refused.first()
    );
    wait_for_all(&subscribers, &published).await;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let seen = subscriber.finish().await;
        let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data, published.stored,
            "subscriber {index}: exactly the events, in order, once"
        );
    }
}

#[tokio::test]
async fn a_subscriber_resumes_on_another_replica_with_last_event_id() {
    let cluster = Cluster::start(2, &[]).await;
    let client = reqwest::Client::new();
    let first = client
        .get(format!(
            "{}/event-stream?topic=move",
            cluster.gateways[0].url()
        ))
        .send()
        .await
        .unwrap();
    let mut stream = sse_reader::SseStream::new(first);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(sse_reader::Item::Retry(_))
    ));
    let mut published = Published::default();
    cluster
        .publish_numbered("move", "a", 10, &mut published)
        .await;
    let mut last = String::new();
    for expected in &published.stored {
        let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
        assert_eq!(&event.data, expected);
        last = event.id;
    }
    drop(stream);
    cluster
        .publish_numbered("move", "b", 10, &mut published)
        .await;
    let resumed = client
        .get(format!(
            "{}/event-stream?topic=move",
            cluster.gateways[1].url()
        ))
        .header("Last-Event-ID", &last)
        .send()
        .await
        .unwrap();
    let mut stream = sse_reader::SseStream::new(resumed);
    let mut data = Vec::new();
    while data.len() < 10 {
        data.push(
            stream
                .next_event_timeout(PATIENCE)
                .await
                .unwrap()
                .unwrap()
                .data,
        );
    }
    assert_eq!(data, published.stored[10..]);
    let live = cluster.publish("move", "live").await;
    assert!(matches!(live, Outcome::Stored(_)));
    assert_eq!(
        stream
            .next_event_timeout(PATIENCE)
            .await
            .unwrap()
            .unwrap()
            .data,
        "live"
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_loses_no_acknowledged_event_and_announces_the_new_epoch() {
    let mut cluster = Cluster::start(2, &[]).await;
    let urls = cluster.gateway_urls();
    let subscribers = vec![
        Subscriber::start(vec![urls[0].clone()], "topic=crash").await,
        Subscriber::start(vec![urls[1].clone()], "topic=crash").await,
    ];
    let mut published = Published::default();
    cluster
        .publish_numbered("crash", "before", 30, &mut published)
        .await;
    wait_for_all(&subscribers, &published).await;

    cluster.redis.kill();
    let started = Instant::now();
    let outcome = cluster.publish("crash", "during-0").await;
    let took = started.elapsed();
    published.record("during-0".into(), outcome.clone());
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.starts_with("503")),
        "publish during the outage: {outcome:?}"
    );
    // In the client's terms: Redis's own error text (addresses, "Connection
    // refused") stays in the log.
    let Outcome::Refused(why) = &outcome else {
        unreachable!()
    };
    assert!(
        why.ends_with(r#"{"status":"error","message":"event bus unavailable; retry later"}"#)
            || why.ends_with(
                r#"{"status":"error","message":"event bus did not answer in time; retry later"}"#
            ),
        "publish during the outage: {why}"
    );
    assert!(
        took < Duration::from_secs(5),
        "a publish during the outage took {took:?}"
    );
    cluster
        .publish_numbered("crash", "during", 5, &mut published)
        .await;
    assert!(
        published.stored.iter().all(|m| m.starts_with("before")),
        "nothing is acknowledged while Redis is down"
    );
    // Open streams stay open through the outage: keep-alives still flow.
    let keepalives = subscribers[0].with(|s| s.keepalives);
    assert!(
        wait_until(PATIENCE, || async {
            subscribers[0].with(|s| s.keepalives) > keepalives + 1
        })
        .await,
        "keep-alives stopped during the outage"
    );

    cluster.redis.restart();
    cluster.ingest.wait_ready().await;
    for gateway in &cluster.gateways {
        gateway.wait_ready().await;
    }
    cluster
        .publish_numbered("crash", "after", 30, &mut published)
        .await;
    assert!(
        published
            .stored
            .iter()
            .filter(|m| m.starts_with("after"))
            .count()
            == 30,
        "{:?}",
        published.refused.last()
    );
    wait_for_all(&subscribers, &published).await;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let seen = subscriber.finish().await;
        assert_delivered_on_one_connection(&format!("subscriber {index}"), &seen, &published);
        // The new epoch is announced, never renumbered silently: a reset
        // comes before the first event of the new epoch.
        let reset = seen
            .events
            .iter()
            .position(|e| e.event == "reset")
            .expect("no reset after Redis lost its data");
        let first_after = seen
            .events
            .iter()
            .position(|e| e.data.starts_with("after"))
            .unwrap();
        assert!(
            reset < first_after,
            "subscriber {index}: reset must precede the new epoch's events"
        );
        assert!(
            seen.events[reset].data.contains("epoch-changed"),
            "{}",
            seen.events[reset].data
        );
    }
}

/// The status `path` of `service` answers with, or `None` without an answer.
async fn status_of(client: &reqwest::Client, service: &Service, path: &str) -> Option<u16> {
    let response = client
        .get(format!("{}{path}", service.url()))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn services_started_before_redis_are_live_but_not_ready_then_serve_once_it_comes() {
    let mut redis = RedisServer::start();
    redis.kill();
    let mut cluster = Cluster::launch(redis, 1, &[]);
    let client = reqwest::Client::new();
    for service in [&cluster.ingest, &cluster.gateways[0]] {
        let live = wait_until(PATIENCE, || async {
            status_of(&client, service, "/healthz").await == Some(200)
        })
        .await;
        assert!(live, "no 200 from /healthz; log:\n{}", service.log());
        assert_eq!(
            status_of(&client, service, "/readyz").await,
            Some(503),
            "ready without Redis; log:\n{}",
            service.log()
        );
    }
    let early = cluster.publish("late", "before-redis").await;
    assert!(
        matches!(early, Outcome::Refused(ref why) if why.starts_with("503")),
        "publish without Redis: {early:?}"
    );

    cluster.redis.restart();
    cluster.wait_ready().await;
    let subscriber = Subscriber::start(vec![cluster.gateways[0].url()], "topic=late").await;
    let outcome = cluster.publish("late", "after-redis").await;
    assert!(
        matches!(outcome, Outcome::Stored(_)),
        "publish once Redis is up: {outcome:?}"
    );
    let delivered = wait_until(PATIENCE, || async {
        subscriber.data().iter().any(|data| data == "after-redis")
    })
    .await;
    assert!(delivered, "the event never reached the subscriber");
}

/// What a gateway whose bus refuses answers `GET /event-stream?{query}`, on
/// the fast path or (with a head longer than it reads) actix's, as an
/// EventSource asks or as curl does: status, content type, length, body.
async fn stream_answer(
    client: &reqwest::Client,
    gateway: &Service,
    actix: bool,
    event_source: bool,
) -> (u16, String, Option<u64>, String) {
    let mut request = client.get(format!("{}/event-stream?topic=late", gateway.url()));
    if actix {
        request = request.header("X-Padding", "p".repeat(5000));
    }
    if event_source {
        request = request.header("Accept", "text/event-stream");
    }
    let mut response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let length = response.content_length();
    let body = if length.is_some() {
        response.text().await.unwrap()
    } else {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk()).await;
        String::from_utf8_lossy(&chunk.unwrap().unwrap().unwrap_or_default()).into_owned()
    };
    (status, content_type, length, body)
}

/// Redis down while a page opens: the gateway's bus refuses every
/// subscription. An EventSource must not give up, so it hears a short
/// stream with `retry:`; once Redis is back the same request is a stream.
#[tokio::test]
async fn with_redis_down_a_gateway_tells_an_event_source_to_retry_on_both_paths() {
    let mut redis = RedisServer::start();
    redis.kill();
    let mut cluster = Cluster::launch(redis, 1, &[]);
    let gateway = &cluster.gateways[0];
    let client = reqwest::Client::new();
    let live = wait_until(PATIENCE, || async {
        status_of(&client, gateway, "/healthz").await == Some(200)
    })
    .await;
    assert!(live, "no 200 from /healthz; log:\n{}", gateway.log());
    for actix in [false, true] {
        let (status, content_type, length, body) =
            stream_answer(&client, gateway, actix, true).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "text/event-stream"),
            "actix {actix}: {body}"
        );
        assert!(
            length.is_some(),
            "actix {actix}: a whole body, not a stream"
        );
        match sse_reader::Parser::new().feed(body.as_bytes()).as_slice() {
            [sse_reader::Item::Retry(ms), sse_reader::Item::Comment(why)] => {
                assert!((3000..=6000).contains(ms), "actix {actix}: retry {ms}");
                assert_eq!(why, "unavailable: the event bus is not reachable, retrying");
            }
            other => panic!("actix {actix}: {other:?} from {body:?}"),
        }
        let (status, content_type, _, body) = stream_answer(&client, gateway, actix, false).await;
        assert_eq!(
            (status, content_type.as_str()),
            (503, "application/json"),
            "actix {actix}: {body}"
        );
        assert!(body.contains(r#""status":"error""#), "{body}");
    }

    cluster.redis.restart();
    cluster.wait_ready().await;
    for actix in [false, true] {
        let (status, _, length, body) =
            stream_answer(&client, &cluster.gateways[0], actix, true).await;
        assert_eq!(
            (status, length),
            (200, None),
            "actix {actix}: a stream once Redis is back"
        );
        assert_eq!(body, "retry: 3000\n\n");
    }
}

#[tokio::test]
async fn a_service_exits_naming_redis_url_when_redis_is_not_ready_within_the_startup_timeout() {
    let mut redis = RedisServer::start();
    redis.kill();
    let env = service_env(&redis, &[("ES__REDIS__STARTUP_TIMEOUT_MS", "1000")]);
    for binary in ["ingest", "stream-gateway"] {
        let mut service = Service::start(binary, &env);
        let Some(status) = service.wait_exit(PATIENCE).await else {
            panic!("{binary} still runs without Redis; log:\n{}", service.log());
        };
        let log = service.log();
        assert!(!status.success(), "{binary} exited with {status}");
        for key in ["redis.url", "redis.startup_timeout_ms"] {
            assert!(
                log.contains(key),
                "{binary} did not name {key}; log:\n{log}"
            );
        }
    }
}

#[tokio::test]
async fn a_frozen_redis_is_detected_and_recovered() {
    let cluster = Cluster::start(1, &[]).await;
    let gateway = cluster.gateways[0].url();
    let subscriber = Subscriber::start(vec![gateway.clone()], "topic=freeze").await;
    let mut published = Published::default();
    cluster
        .publish_numbered("freeze", "before", 10, &mut published)
        .await;

    cluster.redis.stop();
    let client = reqwest::Client::new();
    let not_ready = wait_until(PATIENCE, || async {
        client
            .get(format!("{gateway}/readyz"))
            .send()
            .await
            .map(|r| r.status() == 503)
            .unwrap_or(false)
    })
    .await;
    let outcome = cluster.publish("freeze", "frozen").await;
    published.record("frozen".into(), outcome.clone());
    cluster.redis.cont();
    assert!(not_ready, "the gateway never noticed the frozen Redis");
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.starts_with("503")),
        "publish to a frozen Redis: {outcome:?}"
    );

    cluster.gateways[0].wait_ready().await;
    cluster
        .publish_numbered("freeze", "after", 10, &mut published)
        .await;
    wait_for_all(std::slice::from_ref(&subscriber), &published).await;
    let seen = subscriber.finish().await;
    let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
    assert_delivered("subscriber", &data, &published);
    // The refused publish reached the frozen Redis and ran when it thawed,
    // past its deadline: it must not have been stored after the 503.
    assert!(
        !data.iter().any(|message| message == "frozen"),
        "a publish answered 503 was delivered after the thaw: {:?}",
        seen.events
            .iter()
            .map(|e| (e.id.clone(), e.data.clone()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_killed_pubsub_connection_leaves_no_gap() {
    let cluster = Cluster::start(2, &[]).await;
    let urls = cluster.gateway_urls();
    let subscribers = vec![
        Subscriber::start(vec![urls[0].clone()], "topic=blip").await,
        Subscriber::start(vec![urls[1].clone()], "topic=blip").await,
    ];
    let redis_url = cluster.redis.url();
    let killer = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = redis_cli(&redis_url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        }
    });
    let mut published = Published::default();
    cluster
        .publish_numbered("blip", "m", 400, &mut published)
        .await;
    killer.await.unwrap();
    assert_eq!(
        published.stored.len(),
        400,
        "Redis stayed up: every publish succeeds"
    );
    wait_for_all(&subscribers, &published).await;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let seen = subscriber.finish().await;
        let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data, published.stored,
            "subscriber {index}: no gap, no duplicate, no reset"
        );
        assert_eq!(
            seen.connections, 1,
            "subscriber {index}: its stream never broke"
        );
    }
}

/// Runs a command over RESP on a fresh connection.
async fn redis_cli(url: &str, args: &[&str]) -> std::io::Result<String> {
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    socket.write_all(command.as_bytes()).await?;
    let mut buffer = vec![0; 512];
    let n = socket.read(&mut buffer).await?;
    Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

#[tokio::test]
async fn a_gateway_stopped_mid_stream_hands_its_clients_to_another_without_loss() {
    let mut cluster = Cluster::start(2, &[]).await;
    let urls = cluster.gateway_urls();
    // Each subscriber starts on gateway 0 and moves on when its stream ends.
    let mut subscribers = Vec::new();
    for _ in 0..4 {
        subscribers
            .push(Subscriber::start(vec![urls[0].clone(), urls[1].clone()], "topic=roll").await);
    }
    let mut published = Published::default();
    cluster
        .publish_numbered("roll", "a", 50, &mut published)
        .await;
    let mut gateway = cluster.gateways.remove(0);
    let publishing = async {
        let mut local = Published::default();
        cluster.publish_numbered("roll", "b", 150, &mut local).await;
        local
    };
    let (status, more) = tokio::join!(gateway.terminate(), publishing);
    assert!(
        status.success(),
        "the gateway exited with {status:?}; log:\n{}",
        gateway.log()
    );
    published.attempted.extend(more.attempted);
    published.stored.extend(more.stored);
    assert_eq!(published.stored.len(), 200);
    wait_for_all(&subscribers, &published).await;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let seen = subscriber.finish().await;
        let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, published.stored, "subscriber {index}");
        assert!(
            seen.connections >= 2,
            "subscriber {index} should have moved to the other gateway"
        );
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_without_slowing_anyone() {
    let cluster = Cluster::start(
        1,
        &[
            ("ES__STREAM__QUEUE_CAPACITY", "16"),
            ("ES__PUBLISH__MAX_MESSAGE_CHARS", "20000"),
        ],
    )
    .await;
    let gateway = &cluster.gateways[0];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket
        .connect(([127, 0, 0, 1], gateway.port()).into())
        .await
        .unwrap();
    stuck
        .write_all(b"GET /event-stream?topic=flood HTTP/1.1\r\nHost: e2e\r\n\r\n")
        .await
        .unwrap();
    let healthy = Subscriber::start(vec![gateway.url()], "topic=flood").await;
    let mut published = Published::default();
    let big = "z".repeat(19_000);
    for i in 0..400 {
        let message = format!("{i}:{big}");
        let outcome = cluster.publish("flood", &message).await;
        published.record(message, outcome);
        // The healthy reader stays within half a queue of the publisher,
        // so only the stuck one can fall a whole queue behind: on a busy
        // machine a publisher flat out could outrun a reader that does
        // read, and that reader would rightly be cut off too.
        if i >= 8 {
            let caught_up = wait_until(PATIENCE, || async {
                healthy.with(|s| s.events.len()) > i - 8
            })
            .await;
            assert!(
                caught_up,
                "the healthy subscriber stopped at event {}",
                i - 8
            );
        }
    }
    assert_eq!(
        published.stored.len(),
        400,
        "publishing was refused: {:?}",
        published.refused.first()
    );
    wait_for_all(std::slice::from_ref(&healthy), &published).await;
    // Reading at last lets the gateway notice the stuck client is a whole
    // queue behind: its stream ends.
    let mut sink = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stuck.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the stuck stream was never closed");
    let metrics = reqwest::get(format!("{}/metrics", gateway.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("es_slow_client_disconnects_total 1"),
        "{metrics}"
    );
    let seen = healthy.finish().await;
    assert_eq!(
        seen.connections, 1,
        "the healthy subscriber was never disconnected"
    );
    assert_eq!(seen.events.len(), 400);
}

#[tokio::test]
async fn a_reconnect_storm_gets_every_client_served_or_refused_with_a_status() {
    let cluster = Cluster::start(1, &[("ES__STREAM__MAX_STREAMS", "150")]).await;
    let url = format!("{}/event-stream?topic=storm", cluster.gateways[0].url());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let attempts = (0..400).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let response = tokio::time::timeout(PATIENCE, client.get(&url).send()).await;
            match response {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    // Hold served streams open so the limit is really reached.
                    (status, Some(response))
                }
                Ok(Err(error)) => panic!("a client got no HTTP answer: {error}"),
                Err(_) => panic!("a client hung without an answer"),
            }
        })
    });
    let mut served = 0;
    let mut refused = 0;
    let mut open = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        let (status, response) = attempt.await.unwrap();
        match status {
            200 => served += 1,
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
        open.extend(response);
    }
    assert_eq!(served, 150, "exactly the limit is served");
    assert_eq!(refused, 250);
    // The gateway is still healthy and serves again once streams close.
    drop(open);
    cluster.gateways[0].wait_ready().await;
    let mut published = Published::default();
    let subscriber = Subscriber::start(vec![cluster.gateways[0].url()], "topic=storm").await;
    cluster
        .publish_numbered("storm", "after", 5, &mut published)
        .await;
    wait_for_all(std::slice::from_ref(&subscriber), &published).await;
}
