//! What only the Redis engine faces: Redis crashing, hanging, dropping our
//! pub/sub connection, and keys holding data we did not write.

use std::time::{Duration, Instant};

use bus::{Bus, Error, IdempotencyPolicy, Published, Recv, RedisConfig, ResetReason, Role};
use redis::AsyncCommands;
use shared_types::Position;
use testkit::{RedisServer, wait_until};

use crate::helpers::{
    add_raw_event, assert_first_commands_after_a_restart_succeed, connected, eventually,
    kill_pubsub, next_event, offsets, raw_connection, redis_config, subscriber,
};

/// How fast a publish must fail when Redis is gone: the 1 s operation
/// deadline plus scheduling slack.
const FAIL_FAST: Duration = Duration::from_millis(1500);

async fn publisher(config: RedisConfig) -> Bus {
    connected(config, Role::Publisher).await
}

#[tokio::test]
async fn a_bus_created_before_redis_refuses_work_then_connects_by_itself() {
    let mut server = RedisServer::start();
    server.kill();
    let config = redis_config(&server);
    let gateway = Bus::redis(config.clone(), Role::Subscriber).expect("created without I/O");
    let ingest = Bus::redis(config, Role::Publisher).expect("created without I/O");
    assert!(!gateway.is_ready().await, "no Redis yet");
    assert!(!ingest.is_ready().await, "no Redis yet");
    let started = Instant::now();
    assert!(matches!(
        ingest.publish("t", "message", "early").await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        gateway.subscribe("t").await,
        Err(Error::Unavailable(_))
    ));
    assert!(
        started.elapsed() < FAIL_FAST,
        "refusing took {:?}",
        started.elapsed()
    );

    server.restart();
    gateway.wait_ready().await.expect("the gateway connects");
    ingest.wait_ready().await.expect("ingest connects");
    assert!(gateway.is_ready().await && ingest.is_ready().await);
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let position = ingest.publish("t", "message", "late").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, position);
    assert_eq!(
        gateway.stats().reconnects,
        0,
        "the first connection is not a reconnect"
    );
}

#[tokio::test]
async fn waiting_for_an_absent_redis_fails_after_the_startup_timeout_naming_the_masked_url() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.kill();
    let startup_timeout = Duration::from_millis(300);
    for role in [Role::Publisher, Role::Subscriber] {
        let config = RedisConfig {
            url: format!("redis://user:hunter2@127.0.0.1:{port}/"),
            backoff_min: Duration::from_millis(50),
            startup_timeout,
            ..RedisConfig::default()
        };
        let bus = Bus::redis(config, role).expect("created without I/O");
        let started = Instant::now();
        let error = bus
            .wait_ready()
            .await
            .expect_err("nothing listens there")
            .to_string();
        assert!(
            started.elapsed() >= startup_timeout && started.elapsed() < FAIL_FAST,
            "{role:?} took {:?}",
            started.elapsed()
        );
        assert!(
            error.contains(&format!("redis://user:***@127.0.0.1:{port}/")),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[tokio::test]
async fn a_publisher_cannot_subscribe() {
    let server = RedisServer::start();
    let bus = publisher(redis_config(&server)).await;
    assert!(matches!(
        bus.subscribe("t").await,
        Err(Error::Unavailable(_))
    ));
    assert!(bus.is_ready().await);
    assert_eq!(bus.engine_name(), "redis");
}

#[tokio::test]
async fn redis_killed_and_restarted_fails_publishes_fast_then_recovers_in_a_new_epoch() {
    let mut server = RedisServer::start();
    let config = redis_config(&server);
    let gateway = subscriber(config.clone()).await;
    let ingest = publisher(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let before = ingest.publish("t", "message", "before").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, before);

    server.kill();
    let started = Instant::now();
    assert!(ingest.publish("t", "message", "lost").await.is_err());
    assert!(
        started.elapsed() < FAIL_FAST,
        "publish took {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !gateway.is_ready().await
        })
        .await,
        "gateway turns unready"
    );
    assert!(!ingest.is_ready().await);
    // New subscriptions are refused at once rather than held open.
    let started = Instant::now();
    assert!(gateway.subscribe("other").await.is_err());
    assert!(started.elapsed() < FAIL_FAST);

    server.restart();
    let after = eventually(Duration::from_secs(10), || {
        ingest.publish("t", "message", "after")
    })
    .await;
    // The restarted Redis lost everything: a new history, told apart by its epoch.
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(after.offset, 1);
    // The subscription opened before the crash delivers again.
    let event = next_event(&mut subscription).await;
    assert_eq!((event.position, event.data.as_str()), (after, "after"));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            gateway.is_ready().await
        })
        .await,
        "gateway ready again"
    );
    assert!(ingest.is_ready().await);
    assert!(gateway.stats().reconnects >= 1);

    let replay = gateway.replay("t", before).await.unwrap();
    assert_eq!(
        (replay.reset, offsets(&replay.events)),
        (Some(ResetReason::EpochChanged), vec![1])
    );
}

#[tokio::test]
async fn after_a_redis_restart_the_first_command_on_each_connection_succeeds() {
    let mut server = RedisServer::start();
    let config = redis_config(&server);
    assert_first_commands_after_a_restart_succeed(&mut server, config).await;
}

#[tokio::test]
async fn killed_pubsub_connections_lose_and_duplicate_nothing() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let gateway = subscriber(config.clone()).await;
    let ingest = publisher(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    const TOTAL: u64 = 300;
    let publishing = tokio::spawn(async move {
        // Paced, so the kills below land while events are still flowing.
        let mut pace = tokio::time::interval(Duration::from_millis(3));
        for i in 1..=TOTAL {
            pace.tick().await;
            ingest
                .publish("t", "message", &i.to_string())
                .await
                .expect("the pool is unaffected");
        }
    });
    let mut operator = raw_connection(&server).await;
    let mut seen = Vec::new();
    let mut kills = 0;
    while (seen.len() as u64) < TOTAL {
        let event = next_event(&mut subscription).await;
        assert_eq!(event.data, event.position.offset.to_string());
        seen.push(event.position.offset);
        if seen.len() % 60 == 0 {
            let killed: i64 = kill_pubsub().query_async(&mut operator).await.unwrap();
            kills += killed;
        }
    }
    publishing.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
    assert!(kills >= 1);
    let stats = gateway.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
}

#[tokio::test]
async fn events_stored_while_pubsub_was_down_are_refilled_on_reconnect() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let prefix = config.key_prefix.clone();
    let gateway = subscriber(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let first = gateway.publish("t", "message", "1").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, first);
    // Kill our pub/sub connection and store events 2 and 3 in one
    // transaction: the relay cannot have seen them live, so only the
    // refill after reconnecting can deliver them.
    let mut raw = raw_connection(&server).await;
    let mut transaction = redis::pipe();
    transaction.atomic().add_command(kill_pubsub()).ignore();
    for offset in [2, 3] {
        transaction
            .cmd("HINCRBY")
            .arg(format!("{prefix}:{{t}}:meta"))
            .arg("offset")
            .arg(1)
            .ignore();
        add_raw_event(&mut transaction, &format!("{prefix}:{{t}}:stream"), offset);
    }
    let _: () = transaction.query_async(&mut raw).await.unwrap();
    let events = [
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
    ];
    assert_eq!(offsets(&events), [2, 3]);
    let stats = gateway.stats();
    assert_eq!(
        (stats.reconnects, stats.gaps_refilled, stats.refilled_events),
        (1, 1, 2)
    );
    let fourth = gateway.publish("t", "message", "4").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, fourth);
}

#[tokio::test]
async fn a_frozen_redis_turns_unready_and_delivery_resumes_when_it_thaws() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let gateway = subscriber(config.clone()).await;
    let ingest = publisher(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let first = ingest.publish("t", "message", "first").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, first);
    assert!(gateway.is_ready().await && ingest.is_ready().await);

    server.stop();
    // Sent at once, on the connection that just worked: the command waits
    // in the frozen Redis's socket.
    let started = Instant::now();
    assert!(matches!(
        ingest.publish("t", "message", "frozen").await,
        Err(Error::Timeout(_))
    ));
    assert!(
        started.elapsed() < FAIL_FAST,
        "publish took {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !gateway.is_ready().await
        })
        .await,
        "gateway turns unready"
    );
    assert!(!ingest.is_ready().await);

    server.cont();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            gateway.is_ready().await
        })
        .await,
        "gateway ready again"
    );
    assert!(ingest.is_ready().await);
    let last = ingest.publish("t", "message", "thawed").await.unwrap();
    // The publish that timed out was in Redis's socket when it thawed, and
    // its script ran then, after its deadline: it stored nothing, so the
    // caller's error was the truth.
    assert_eq!(last.offset, first.offset + 1);
    let event = next_event(&mut subscription).await;
    assert_eq!((event.position, event.data.as_str()), (last, "thawed"));
    assert!(subscription.try_recv().is_none());
}

#[tokio::test]
async fn an_event_lost_by_pubsub_is_refilled_from_history_before_the_next() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let prefix = config.key_prefix.clone();
    let gateway = subscriber(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let first = gateway.publish("t", "message", "1").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, first);
    // Store event 2 as the script would, but without its PUBLISH: exactly
    // what a dropped pub/sub message looks like from the gateway.
    let mut raw = raw_connection(&server).await;
    let mut pipe = redis::pipe();
    pipe.cmd("HINCRBY")
        .arg(format!("{prefix}:{{t}}:meta"))
        .arg("offset")
        .arg(1)
        .ignore();
    add_raw_event(&mut pipe, &format!("{prefix}:{{t}}:stream"), 2);
    let _: () = pipe.query_async(&mut raw).await.unwrap();
    gateway.publish("t", "message", "3").await.unwrap();
    let events = [
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
    ];
    assert_eq!(offsets(&events), [2, 3]);
    assert_eq!(events[0].data, "2");
    let stats = gateway.stats();
    assert_eq!((stats.gaps_refilled, stats.refilled_events), (1, 1));
    // And nothing twice.
    let sentinel = gateway.publish("t", "message", "4").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, sentinel);
}

/// A message ahead of the feed sends the relay to refill from history;
/// when that finds the feed's epoch gone (the topic's keys expired, or
/// Redis restarted empty), the message, of that gone epoch, is dropped:
/// the feed has moved to the history that exists, and the next event of
/// the new one follows.
#[tokio::test]
async fn a_live_message_whose_refill_finds_its_epoch_gone_is_dropped() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let prefix = config.key_prefix.clone();
    let gateway = subscriber(config).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let first = gateway.publish("t", "message", "1").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, first);
    let mut raw = raw_connection(&server).await;
    let _: i64 = raw
        .del(&[
            format!("{prefix}:{{t}}:meta"),
            format!("{prefix}:{{t}}:stream"),
        ])
        .await
        .unwrap();
    // Offset 3 of the old epoch, as the publish script encodes it: late
    // on pub/sub, and a gap after offset 1.
    let late = format!("{}\n3\n7\nmessagelate", first.epoch);
    let receivers: i64 = raw
        .publish(format!("{prefix}:{{t}}:chan"), late)
        .await
        .unwrap();
    assert_eq!(receivers, 1, "the gateway's relay is subscribed");
    let new = gateway.publish("t", "message", "new").await.unwrap();
    assert_ne!(new.epoch, first.epoch, "the topic starts a new epoch");
    // Whether the refill ran before these publishes or after (then it
    // delivered them), the late message must not go out: not before them,
    // nor after, when it would be queued by the time they arrived.
    let sentinel = gateway.publish("t", "message", "sentinel").await.unwrap();
    let events = [
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
    ];
    let last = gateway.publish("t", "message", "last").await.unwrap();
    let events = [
        events[0].clone(),
        events[1].clone(),
        next_event(&mut subscription).await,
    ];
    assert_eq!(
        events.map(|event| (event.position, event.data.clone())),
        [
            (new, "new".to_owned()),
            (sentinel, "sentinel".to_owned()),
            (last, "last".to_owned())
        ],
        "the old epoch's late message went out"
    );
}

#[tokio::test]
async fn the_last_local_subscriber_leaving_unsubscribes_the_channel() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let channel = format!("{}:{{t}}:chan", config.key_prefix);
    let gateway = subscriber(config).await;
    let raw = raw_connection(&server).await;
    let subscribers = || {
        let (mut raw, channel) = (raw.clone(), channel.clone());
        async move {
            let reply: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut raw)
                .await
                .unwrap();
            reply.1
        }
    };
    let a = gateway.subscribe("t").await.unwrap();
    let b = gateway.subscribe("t").await.unwrap();
    assert_eq!(
        subscribers().await,
        1,
        "one channel subscription per process"
    );
    drop(a);
    assert_eq!(
        subscribers().await,
        1,
        "still subscribed while a local subscriber remains"
    );
    drop(b);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            subscribers().await == 0
        })
        .await,
        "unsubscribed after the last subscriber left"
    );
}

#[tokio::test]
async fn shutdown_ends_live_subscriptions() {
    let server = RedisServer::start();
    let gateway = subscriber(redis_config(&server)).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    gateway.shutdown();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), subscription.recv()).await,
        Ok(Recv::Closed)
    ));
    assert!(!gateway.is_ready().await);
}

#[tokio::test]
async fn keys_expire_together_and_a_lost_meta_key_starts_a_new_epoch() {
    let server = RedisServer::start();
    let config = RedisConfig {
        history_ttl: Duration::from_secs(60),
        ..redis_config(&server)
    };
    let prefix = config.key_prefix.clone();
    let bus = subscriber(config).await;
    let old = bus.publish("t", "message", "a").await.unwrap();
    bus.publish("t", "message", "b").await.unwrap();
    let mut raw = raw_connection(&server).await;
    let (meta, stream) = (
        format!("{prefix}:{{t}}:meta"),
        format!("{prefix}:{{t}}:stream"),
    );
    for key in [&meta, &stream] {
        let ttl: i64 = raw.pttl(key).await.unwrap();
        assert!((1..=60_000).contains(&ttl), "{key} has TTL {ttl}");
    }
    // Evicted alone (an eviction policy may do this): the stream's entries
    // can no longer be placed in any epoch, so the next publish starts over.
    let _: i64 = raw.del(&meta).await.unwrap();
    assert_eq!(bus.head("t").await.unwrap(), Position::START);
    let new = bus.publish("t", "message", "c").await.unwrap();
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 1);
    let replay = bus.replay("t", old).await.unwrap();
    assert_eq!(replay.reset, Some(ResetReason::EpochChanged));
    assert_eq!(
        replay
            .events
            .iter()
            .map(|e| e.data.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
}

#[tokio::test]
async fn idempotency_keys_live_in_the_topics_slot_expire_with_the_window_and_go_with_a_new_history()
{
    let server = RedisServer::start();
    let config = RedisConfig {
        history_ttl: Duration::from_secs(60),
        ..redis_config(&server)
    };
    let prefix = config.key_prefix.clone();
    let bus = publisher(config).await;
    // A window longer than the history's TTL is cut to it.
    let policy = IdempotencyPolicy {
        window: Duration::from_secs(3600),
        max_keys: 10,
    };
    let first = bus
        .publish_idempotent("t", "message", "a", "key", &policy)
        .await
        .unwrap();
    let mut raw = raw_connection(&server).await;
    let (keys, ages) = (
        format!("{prefix}:{{t}}:keys"),
        format!("{prefix}:{{t}}:key-ages"),
    );
    for key in [&keys, &ages] {
        let ttl: i64 = raw.pttl(key).await.unwrap();
        assert!((1..=60_000).contains(&ttl), "{key} has TTL {ttl}");
    }
    let record: String = raw.hget(&keys, "key").await.unwrap();
    let position = first.position().unwrap();
    assert!(
        record.starts_with(&format!("{} {} ", position.epoch, position.offset)),
        "{record}"
    );
    // A record we did not write is corrupt, not a replay.
    let _: i64 = raw.hset(&keys, "key", "garbage").await.unwrap();
    assert!(matches!(
        bus.publish_idempotent("t", "message", "a", "key", &policy)
            .await,
        Err(Error::Corrupt(_))
    ));
    // Meta lost: a new history starts with no keys, so the key stores
    // again, in the new epoch.
    let _: i64 = raw.del(format!("{prefix}:{{t}}:meta")).await.unwrap();
    let again = bus
        .publish_idempotent("t", "message", "a", "key", &policy)
        .await
        .unwrap();
    assert!(
        matches!(again, Published::Stored(p) if p.offset == 1 && p.epoch != position.epoch),
        "{again:?}"
    );
    let count: i64 = raw.hlen(&keys).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn data_we_did_not_write_is_reported_as_corrupt_never_a_panic() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let prefix = config.key_prefix.clone();
    let bus = subscriber(config).await;
    let mut raw = raw_connection(&server).await;
    let meta = |topic: &str| format!("{prefix}:{{{topic}}}:meta");
    let stream = |topic: &str| format!("{prefix}:{{{topic}}}:stream");
    let corrupt = |result: Result<_, Error>| matches!(result, Err(Error::Corrupt(_)));

    // A foreign entry with other fields inside our history.
    let second = {
        bus.publish("foreign", "message", "1").await.unwrap();
        bus.publish("foreign", "message", "2").await.unwrap()
    };
    let _: String = redis::cmd("XADD")
        .arg(stream("foreign"))
        .arg("3-0")
        .arg("foo")
        .arg("bar")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: i64 = raw.hincr(meta("foreign"), "offset", 1).await.unwrap();
    assert!(corrupt(
        bus.replay("foreign", Position::START).await.map(drop)
    ));
    assert!(corrupt(bus.replay("foreign", second).await.map(drop)));

    // Keys of the wrong type.
    let _: () = raw
        .hset_multiple(meta("wrongtype"), &[("epoch", "abc"), ("offset", "1")])
        .await
        .unwrap();
    let _: () = raw.set(stream("wrongtype"), "not a stream").await.unwrap();
    assert!(corrupt(
        bus.replay("wrongtype", Position::START).await.map(drop)
    ));
    assert!(corrupt(
        bus.publish("wrongtype", "message", "x").await.map(drop)
    ));
    let _: () = raw.set(meta("stringmeta"), "not a hash").await.unwrap();
    assert!(corrupt(bus.head("stringmeta").await.map(drop)));
    assert!(corrupt(
        bus.publish("stringmeta", "message", "x").await.map(drop)
    ));

    // An unreadable epoch: refused before anything is written.
    let _: () = raw
        .hset_multiple(
            meta("badepoch"),
            &[("epoch", "NOT base36"), ("offset", "1")],
        )
        .await
        .unwrap();
    assert!(corrupt(bus.head("badepoch").await.map(drop)));
    assert!(corrupt(
        bus.publish("badepoch", "message", "x").await.map(drop)
    ));
    let offset: String = raw.hget(meta("badepoch"), "offset").await.unwrap();
    assert_eq!(offset, "1");
    let exists: bool = raw.exists(stream("badepoch")).await.unwrap();
    assert!(!exists);

    // A stream ahead of its meta: publishing would overwrite history.
    bus.publish("ahead", "message", "1").await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream("ahead"))
        .arg("10-0")
        .arg("type")
        .arg("m")
        .arg("data")
        .arg("d")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(corrupt(
        bus.publish("ahead", "message", "2").await.map(drop)
    ));
    let offset: String = raw.hget(meta("ahead"), "offset").await.unwrap();
    assert_eq!(offset, "1");

    // Garbage on a channel is skipped; the feed goes on.
    let mut subscription = bus.subscribe("noise").await.unwrap();
    let _: i64 = raw
        .publish(format!("{prefix}:{{noise}}:chan"), "garbage")
        .await
        .unwrap();
    let _: i64 = raw
        .publish(format!("{prefix}:{{noise}}:chan"), "zz\n1\n999\nshort")
        .await
        .unwrap();
    let good = bus.publish("noise", "message", "fine").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, good);
    assert!(bus.stats().corrupt_messages >= 2);

    // The engine still works for everyone else.
    assert!(bus.is_ready().await);
}

#[tokio::test]
async fn replay_is_bounded_whatever_the_stream_holds() {
    let server = RedisServer::start();
    let config = RedisConfig {
        history_size: 10,
        ..redis_config(&server)
    };
    let prefix = config.key_prefix.clone();
    let bus = subscriber(config).await;
    let first = bus.publish("t", "message", "0").await.unwrap();
    // A stream far longer than history_size, as an older version with a
    // larger setting (or no trimming) would leave behind.
    let mut raw = raw_connection(&server).await;
    let mut pipe = redis::pipe();
    for offset in 2..=2000u64 {
        add_raw_event(&mut pipe, &format!("{prefix}:{{t}}:stream"), offset);
    }
    pipe.cmd("HSET")
        .arg(format!("{prefix}:{{t}}:meta"))
        .arg("offset")
        .arg(2000)
        .ignore();
    let _: () = pipe.query_async(&mut raw).await.unwrap();
    let replay = bus.replay("t", first).await.unwrap();
    assert_eq!(replay.reset, Some(ResetReason::HistoryTrimmed));
    let got = offsets(&replay.events);
    assert!(got.len() <= 10 + 256, "{} events", got.len());
    assert_eq!(got.last(), Some(&2000));
    assert_eq!(replay.start.offset + 1, got[0]);
    assert_eq!(bus.stats().replayed_events, got.len() as u64);
}
