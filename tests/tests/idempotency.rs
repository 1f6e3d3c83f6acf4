//! Idempotent publishes across Redis failures, with real processes: a
//! publisher that got a 503 retries with the same `Idempotency-Key`, and
//! the subscriber sees its event exactly once, whether or not the first
//! attempt was in fact stored.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::cluster::{Cluster, Outcome, publish_keyed, retry_until_created, service_env};
use e2e::process::Service;
use e2e::reply_loss::ReplyLoss;
use e2e::subscriber::Subscriber;
use e2e::{PATIENCE, RedisServer, wait_until};

/// Publishes a sentinel without a key and waits until `subscriber` has it,
/// so every event published before it has arrived too; returns the data the
/// subscriber saw.
async fn seen_through_sentinel(
    client: &reqwest::Client,
    ingest: &str,
    topic: &str,
    subscriber: &Subscriber,
) -> Vec<String> {
    let sentinel = e2e::cluster::publish(client, ingest, topic, "sentinel").await;
    assert!(matches!(sentinel, Outcome::Stored(_)), "{sentinel:?}");
    let arrived = wait_until(PATIENCE, || async {
        subscriber.data().iter().any(|data| data == "sentinel")
    })
    .await;
    assert!(
        arrived,
        "the sentinel never arrived: {:?}",
        subscriber.data()
    );
    subscriber.data()
}

#[tokio::test]
async fn a_publish_refused_while_redis_was_frozen_is_stored_once_by_its_retry() {
    let cluster = Cluster::start(1, &[]).await;
    let (ingest, topic, key) = (cluster.ingest.url(), "frozen-retry", "payment-42");
    let subscriber = Subscriber::start(cluster.gateway_urls(), &format!("topic={topic}")).await;

    cluster.redis.stop();
    let first = publish_keyed(&cluster.client, &ingest, topic, "exactly once", key).await;
    cluster.redis.cont();
    assert_eq!(
        first.status,
        Some(503),
        "publish to a frozen Redis: {first:?}"
    );
    assert!(first.body.contains(r#""status":"error""#), "{first:?}");

    let answers = retry_until_created(&cluster.client, &ingest, topic, "exactly once", key).await;
    let created = answers.last().unwrap().clone();
    // The frozen attempt reached Redis only after its deadline and stored
    // nothing, so the retry is the one that stores.
    assert!(!created.replayed, "{answers:?}");
    let again = publish_keyed(&cluster.client, &ingest, topic, "exactly once", key).await;
    assert_eq!(
        (again.status, again.id.as_deref(), again.replayed),
        (Some(201), created.id.as_deref(), true),
        "a second retry replays the first 201"
    );
    assert_eq!(again.body, created.body);

    let data = seen_through_sentinel(&cluster.client, &ingest, topic, &subscriber).await;
    assert_eq!(data, ["exactly once", "sentinel"]);
    let seen = subscriber.finish().await;
    assert_eq!(seen.events[0].id, created.id.unwrap());
}

#[tokio::test]
async fn a_publish_stored_but_never_answered_is_replayed_not_stored_again_by_its_retry() {
    let redis = RedisServer::start();
    let relay = ReplyLoss::start(format!("127.0.0.1:{}", redis.port())).await;
    let env = service_env(&redis, &[]);
    // Ingest reaches Redis through the relay, the gateway directly: the
    // subscriber sees what Redis stored whatever ingest hears.
    // One worker, so one Redis connection, opened by the warm-up publish
    // below: a connection opened while replies are lost would fail its
    // handshake and never send the publish at all.
    let mut ingest_env = env.clone();
    ingest_env.retain(|(key, _)| key != "ES__REDIS__URL");
    ingest_env.push(("ES__REDIS__URL".into(), relay.url()));
    ingest_env.push(("ES__HTTP__WORKERS".into(), "1".into()));
    let ingest = Service::start("ingest", &ingest_env);
    let gateway = Service::start("stream-gateway", &env);
    ingest.wait_ready().await;
    gateway.wait_ready().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (topic, key) = ("lost-reply", "transfer-7");
    let subscriber = Subscriber::start(vec![gateway.url()], &format!("topic={topic}")).await;
    let warm_up = e2e::cluster::publish(&client, &ingest.url(), "warm-up", "x").await;
    assert!(matches!(warm_up, Outcome::Stored(_)), "{warm_up:?}");

    relay.lose_replies(true);
    let first = publish_keyed(&client, &ingest.url(), topic, "stored once", key).await;
    assert_eq!(first.status, Some(503), "{first:?}");
    // Yet the script ran: the event is in Redis and on its way.
    let delivered = wait_until(PATIENCE, || async {
        subscriber.data().iter().any(|data| data == "stored once")
    })
    .await;
    assert!(delivered, "the unanswered publish was not stored");
    let stored_id = subscriber.with(|seen| seen.events[0].id.clone());
    relay.lose_replies(false);

    let answers = retry_until_created(&client, &ingest.url(), topic, "stored once", key).await;
    let created = answers.last().unwrap();
    assert!(created.replayed, "the retry must replay: {answers:?}");
    assert_eq!(
        created.id.as_deref(),
        Some(stored_id.as_str()),
        "{answers:?}"
    );
    assert_eq!(created.body, r#"{"status":"success","data":"stored once"}"#);

    let data = seen_through_sentinel(&client, &ingest.url(), topic, &subscriber).await;
    assert_eq!(data, ["stored once", "sentinel"], "delivered exactly once");
    // The retry with another message under the same key is refused.
    let reused = publish_keyed(&client, &ingest.url(), topic, "something else", key).await;
    assert_eq!(reused.status, Some(422), "{reused:?}");
}
