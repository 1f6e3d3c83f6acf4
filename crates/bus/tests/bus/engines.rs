//! One behavioural suite, run against every engine: what the gateway and
//! ingest rely on must not depend on which engine is configured.

use std::time::Duration;

use bus::{Error, IdempotencyPolicy, Published, Recv, ResetReason, Slice};
use shared_types::{Epoch, Position, Sequence};

use crate::helpers::{Kind, Sizes, next_event, offsets};

/// Generates one `#[tokio::test]` per engine for each shared test function.
macro_rules! for_each_engine {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Kind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Kind::Redis).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Kind::RedisCluster).await;
                }
            )*
        }
    };
}

for_each_engine!(
    a_replay_in_slices_gives_every_retained_event_once,
    subscribing_to_a_topic_past_max_topics_is_refused_until_one_is_left,
    publish_assigns_contiguous_offsets_and_moves_the_head,
    topics_have_independent_epochs_and_offsets,
    a_subscriber_gets_each_event_published_after_subscribing_once_in_order,
    replay_returns_the_events_after_a_position,
    a_trimmed_position_replays_from_the_oldest_retained_event_with_a_reset,
    an_unknown_epoch_replays_from_the_oldest_retained_event_with_a_reset,
    a_position_ahead_of_the_head_gets_a_reset,
    every_subscriber_of_a_topic_gets_every_event,
    a_subscriber_that_falls_behind_its_queue_is_told_it_lagged,
    a_subscriber_dropped_and_replaced_keeps_receiving,
    event_data_survives_any_content,
    fresh_subscribers_start_at_the_head_and_miss_nothing_after_it,
    a_crowd_at_a_quiet_topic_starts_before_its_first_event_and_misses_nothing_as_it_turns_busy,
    a_retry_with_the_same_key_replays_the_first_position_and_sends_nothing,
    the_same_key_with_another_request_is_refused_and_stores_nothing,
    keys_belong_to_their_topic,
    past_the_cap_the_oldest_keys_are_forgotten_first,
    a_key_publishes_again_once_its_window_has_passed,
    concurrent_publishes_with_one_key_store_one_event,
);

async fn publish_assigns_contiguous_offsets_and_moves_the_head(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    assert_eq!(engine.bus.head("t").await.unwrap(), Position::START);
    let mut positions = Vec::new();
    for i in 0..5 {
        positions.push(
            engine
                .publisher
                .publish("t", "message", &i.to_string())
                .await
                .unwrap(),
        );
    }
    let epoch = positions[0].epoch;
    assert!(!epoch.is_none());
    assert_eq!(
        positions,
        (1..=5)
            .map(|offset| Position::new(epoch, offset))
            .collect::<Vec<_>>()
    );
    assert_eq!(engine.bus.head("t").await.unwrap(), Position::new(epoch, 5));
}

async fn topics_have_independent_epochs_and_offsets(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let a1 = engine.publisher.publish("a", "message", "1").await.unwrap();
    let b1 = engine.publisher.publish("b", "message", "1").await.unwrap();
    let a2 = engine.publisher.publish("a", "message", "2").await.unwrap();
    assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
    assert_eq!(a1.epoch, a2.epoch);
    assert_ne!(a1.epoch, b1.epoch);
}

async fn a_subscriber_gets_each_event_published_after_subscribing_once_in_order(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    engine
        .publisher
        .publish("t", "message", "before")
        .await
        .unwrap();
    let mut subscription = engine.bus.subscribe("t").await.unwrap();
    // Published through another handle right after subscribe returned: it
    // must already be confirmed, or these would be lost.
    for i in 0..20 {
        engine
            .publisher
            .publish("t", "tick", &format!("n{i}"))
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..20 {
        events.push(next_event(&mut subscription).await);
    }
    assert_eq!(offsets(&events), (2..=21).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.data == format!("n{i}") && e.event_type == "tick")
    );
    // No duplicate hides behind them: the next thing is the next event.
    engine
        .publisher
        .publish("t", "message", "sentinel")
        .await
        .unwrap();
    assert_eq!(next_event(&mut subscription).await.data, "sentinel");
}

async fn replay_returns_the_events_after_a_position(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let mut positions = Vec::new();
    for i in 1..=5 {
        positions.push(
            engine
                .publisher
                .publish("t", "message", &format!("m{i}"))
                .await
                .unwrap(),
        );
    }
    let replay = engine.bus.replay("t", positions[1]).await.unwrap();
    assert_eq!(replay.reset, None);
    assert_eq!(replay.start, positions[1]);
    assert_eq!(offsets(&replay.events), [3, 4, 5]);
    assert_eq!(replay.events[0].data, "m3");
    assert_eq!(replay.events[0].position, positions[2]);

    let everything = engine.bus.replay("t", Position::START).await.unwrap();
    assert_eq!(
        (everything.reset, offsets(&everything.events)),
        (None, vec![1, 2, 3, 4, 5])
    );

    let nothing = engine.bus.replay("t", positions[4]).await.unwrap();
    assert_eq!((nothing.reset, nothing.events.len()), (None, 0));

    let empty_topic = engine.bus.replay("never", Position::START).await.unwrap();
    assert_eq!((empty_topic.reset, empty_topic.events.len()), (None, 0));
}

async fn a_trimmed_position_replays_from_the_oldest_retained_event_with_a_reset(kind: Kind) {
    let history_size = 10;
    let engine = kind
        .start(Sizes {
            history_size,
            ..Sizes::default()
        })
        .await;
    // Redis trims approximately (whole stream nodes of 100 entries), so
    // publish enough for both engines to have trimmed.
    let mut last = Position::START;
    for i in 0..250 {
        last = engine
            .publisher
            .publish("t", "message", &i.to_string())
            .await
            .unwrap();
    }
    let first = Position::new(last.epoch, 1);
    let replay = engine.bus.replay("t", first).await.unwrap();
    assert_eq!(replay.reset, Some(ResetReason::HistoryTrimmed));
    let got = offsets(&replay.events);
    assert!(
        got.len() >= history_size,
        "keeps at least history_size events: {}",
        got.len()
    );
    assert!(got[0] > 2, "history was trimmed");
    assert_eq!(
        got,
        (got[0]..=250).collect::<Vec<_>>(),
        "contiguous up to the head"
    );
    assert_eq!(replay.start, Position::new(last.epoch, got[0] - 1));

    // A reader that saw nothing gets told as well.
    let fresh = engine.bus.replay("t", Position::START).await.unwrap();
    assert_eq!(fresh.reset, Some(ResetReason::HistoryTrimmed));
}

async fn an_unknown_epoch_replays_from_the_oldest_retained_event_with_a_reset(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let head = engine.publisher.publish("t", "message", "a").await.unwrap();
    engine.publisher.publish("t", "message", "b").await.unwrap();
    let stranger = Position::new(Epoch(head.epoch.0 ^ 1), 1);
    let replay = engine.bus.replay("t", stranger).await.unwrap();
    assert_eq!(replay.reset, Some(ResetReason::EpochChanged));
    assert_eq!(offsets(&replay.events), [1, 2]);
    assert_eq!(replay.start, Position::new(head.epoch, 0));

    // A topic with no history at all: whatever the reader saw is gone.
    let lost = engine
        .bus
        .replay("gone", Position::new(Epoch(7), 3))
        .await
        .unwrap();
    assert_eq!(
        (lost.reset, lost.events.len()),
        (Some(ResetReason::EpochChanged), 0)
    );
}

async fn a_position_ahead_of_the_head_gets_a_reset(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let head = engine.publisher.publish("t", "message", "a").await.unwrap();
    let replay = engine
        .bus
        .replay("t", Position::new(head.epoch, 9))
        .await
        .unwrap();
    assert_eq!(replay.reset, Some(ResetReason::CursorAhead));
    assert_eq!(offsets(&replay.events), [1]);
}

async fn every_subscriber_of_a_topic_gets_every_event(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let mut subscriptions = Vec::new();
    for _ in 0..50 {
        subscriptions.push(engine.bus.subscribe("t").await.unwrap());
    }
    for i in 0..10 {
        engine
            .publisher
            .publish("t", "message", &i.to_string())
            .await
            .unwrap();
    }
    for subscription in &mut subscriptions {
        let mut events = Vec::new();
        for _ in 0..10 {
            events.push(next_event(subscription).await);
        }
        assert_eq!(offsets(&events), (1..=10).collect::<Vec<_>>());
    }
}

async fn a_subscriber_that_falls_behind_its_queue_is_told_it_lagged(kind: Kind) {
    let engine = kind
        .start(Sizes {
            queue_capacity: 4,
            ..Sizes::default()
        })
        .await;
    let mut slow = engine.bus.subscribe("t").await.unwrap();
    let mut marker = engine.bus.subscribe("marker").await.unwrap();
    for i in 0..20 {
        engine
            .publisher
            .publish("t", "message", &i.to_string())
            .await
            .unwrap();
    }
    // Events of one process arrive in publish order, so once the marker
    // is here every event of "t" has been handed to the slow reader.
    engine
        .publisher
        .publish("marker", "message", "done")
        .await
        .unwrap();
    next_event(&mut marker).await;
    assert!(matches!(slow.recv().await, Recv::Lagged));
    // After the lag report it reads on from what is still queued.
    assert!(matches!(slow.recv().await, Recv::Event(_)));
}

async fn a_subscriber_dropped_and_replaced_keeps_receiving(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    for round in 0..5 {
        let mut subscription = engine.bus.subscribe("t").await.unwrap();
        let position = engine
            .publisher
            .publish("t", "message", &round.to_string())
            .await
            .unwrap();
        assert_eq!(next_event(&mut subscription).await.position, position);
        drop(subscription);
    }
    // Many subscribe/drop cycles in a burst, racing the unsubscribes.
    let subscriptions = subscribe_many(&engine.bus, 20).await;
    drop(subscriptions);
    let mut last = engine.bus.subscribe("t").await.unwrap();
    let position = engine
        .publisher
        .publish("t", "message", "last")
        .await
        .unwrap();
    assert_eq!(next_event(&mut last).await.position, position);
}

/// Subscribes `n` times, dropping two of every three at once.
async fn subscribe_many(bus: &bus::Bus, n: usize) -> Vec<bus::Subscription> {
    let mut kept = Vec::new();
    for i in 0..n {
        let subscription = bus.subscribe("t").await.unwrap();
        if i % 3 == 0 {
            kept.push(subscription);
        }
    }
    kept
}

async fn event_data_survives_any_content(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let mut subscription = engine.bus.subscribe("t").await.unwrap();
    let awkward = [
        "",
        "\n",
        "a\nb\r\nc\rd",
        "é ü 日本",
        "3\nfake\n1\nx",
        "\0",
        &"x".repeat(10_000),
    ];
    for data in awkward {
        engine
            .publisher
            .publish("t", "odd.type:1", data)
            .await
            .unwrap();
    }
    for data in awkward {
        let event = next_event(&mut subscription).await;
        assert_eq!(
            (event.event_type.as_str(), event.data.as_str()),
            ("odd.type:1", data)
        );
    }
    let replay = engine.bus.replay("t", Position::START).await.unwrap();
    let replayed: Vec<&str> = replay
        .events
        .iter()
        .map(|event| event.data.as_str())
        .collect();
    assert_eq!(replayed, awkward);
}

async fn fresh_subscribers_start_at_the_head_and_miss_nothing_after_it(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    for i in 0..3 {
        engine
            .publisher
            .publish("t", "message", &i.to_string())
            .await
            .unwrap();
    }
    let (first, start) = engine.bus.subscribe_at_head("t").await.unwrap();
    assert_eq!(start, engine.bus.head("t").await.unwrap());
    assert_eq!(start.offset, 3);

    // Subscribers join while events are being published: each must get
    // exactly the events after the position it was given, none twice.
    const EVENTS: u64 = 200;
    let (batch_done, mut batches) = tokio::sync::mpsc::channel::<()>(1);
    let (joined_one, mut joins) = tokio::sync::mpsc::channel::<()>(1);
    let publisher = engine.publisher.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..EVENTS {
            publisher
                .publish("t", "message", &i.to_string())
                .await
                .unwrap();
            // Every ten events a subscriber joins; the next ten are
            // published without waiting for the previous ones to be
            // delivered, so joins race live delivery (the Redis relay's).
            if i % 10 == 9 && i + 1 < EVENTS {
                batch_done.send(()).await.unwrap();
                joins.recv().await.unwrap();
            }
        }
    });
    let mut joined = vec![(first, start)];
    while batches.recv().await.is_some() {
        joined.push(engine.bus.subscribe_at_head("t").await.unwrap());
        joined_one.send(()).await.unwrap();
    }
    publishing.await.unwrap();
    let starts: std::collections::BTreeSet<u64> = joined.iter().map(|(_, s)| s.offset).collect();
    assert!(
        starts.len() > 1,
        "subscribers joined mid-stream: {starts:?}"
    );
    let joins = joined.len() as u64 - 1;
    assert_eq!(joins, EVENTS / 10 - 1);
    let last = 3 + EVENTS;
    for (mut subscription, start) in joined {
        assert_eq!(start.epoch, engine.bus.head("t").await.unwrap().epoch);
        let mut expected = start.offset + 1;
        while expected <= last {
            let event = next_event(&mut subscription).await;
            assert_eq!(event.position.offset, expected, "subscriber from {start:?}");
            expected += 1;
        }
        assert!(subscription.try_recv().is_none());
    }
    if let Kind::Redis | Kind::RedisCluster = kind {
        // No subscriber read the head from Redis: the first took the one
        // its feed read on activation, the others the feed's last event.
        assert_eq!(engine.bus.stats().local_heads, joins + 1);
    }
}

async fn a_crowd_at_a_quiet_topic_starts_before_its_first_event_and_misses_nothing_as_it_turns_busy(
    kind: Kind,
) {
    let engine = kind.start(Sizes::default()).await;
    // A crowd arrives at a topic with no event yet, all at once: the first
    // makes the topic's feed, the others join while it is being set up.
    const CROWD: usize = 50;
    let crowd =
        futures_util::future::join_all((0..CROWD).map(|_| engine.bus.subscribe_at_head("q"))).await;
    let mut joined = Vec::new();
    for result in crowd {
        let (subscription, start) = result.unwrap();
        assert_eq!(start, Position::START);
        joined.push((subscription, start));
    }
    // Later ones join while the topic turns busy, racing live delivery.
    const EVENTS: u64 = 100;
    let (batch_done, mut batches) = tokio::sync::mpsc::channel::<()>(1);
    let (joined_one, mut joins) = tokio::sync::mpsc::channel::<()>(1);
    let publisher = engine.publisher.clone();
    let publishing = tokio::spawn(async move {
        for i in 1..=EVENTS {
            publisher
                .publish("q", "message", &i.to_string())
                .await
                .unwrap();
            if i % 10 == 5 {
                batch_done.send(()).await.unwrap();
                joins.recv().await.unwrap();
            }
        }
    });
    while batches.recv().await.is_some() {
        joined.push(engine.bus.subscribe_at_head("q").await.unwrap());
        joined_one.send(()).await.unwrap();
    }
    publishing.await.unwrap();
    let head = engine.bus.head("q").await.unwrap();
    assert_eq!(head.offset, EVENTS);
    for (mut subscription, start) in joined.drain(..) {
        // The first event follows the start exactly: a gateway would
        // neither replay nor reset.
        let first = next_event(&mut subscription).await;
        assert_eq!(
            first.position.sequence(Some(start)),
            Sequence::Next,
            "subscriber from {start:?} got {:?} first",
            first.position
        );
        let mut expected = start.offset + 1;
        assert_eq!(first.position.offset, expected);
        while expected < EVENTS {
            expected += 1;
            let event = next_event(&mut subscription).await;
            assert_eq!(event.position, Position::new(head.epoch, expected));
            assert_eq!(event.data, expected.to_string());
        }
        assert!(subscription.try_recv().is_none());
    }
    if let Kind::Redis | Kind::RedisCluster = kind {
        // Not one of them read the head from Redis: the crowd shared the
        // one read of the feed's activation, the rest took the feed's.
        assert_eq!(engine.bus.stats().local_heads, CROWD as u64 + EVENTS / 10);
    }
}

async fn a_replay_in_slices_gives_every_retained_event_once(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    for i in 1..=50 {
        engine
            .publisher
            .publish("t", "message", &format!("m{i}"))
            .await
            .unwrap();
    }
    let slice = Slice {
        events: 8,
        bytes: usize::MAX,
    };
    let mut after = Position::START;
    let mut seen = Vec::new();
    let mut slices = 0;
    loop {
        let replay = engine.bus.replay_slice("t", after, slice).await.unwrap();
        assert_eq!(replay.reset, None);
        assert!(replay.events.len() <= 8, "{} events", replay.events.len());
        slices += 1;
        seen.extend(replay.events.iter().map(|e| e.data.clone()));
        after = replay.events.last().map_or(after, |e| e.position);
        if !replay.more {
            break;
        }
    }
    assert_eq!(seen, (1..=50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(slices, 7);
    // Bytes bound a slice too, but one event always comes.
    let one = Slice {
        events: 100,
        bytes: 1,
    };
    let replay = engine
        .bus
        .replay_slice("t", Position::START, one)
        .await
        .unwrap();
    assert_eq!((replay.events.len(), replay.more), (1, true));
}

async fn subscribing_to_a_topic_past_max_topics_is_refused_until_one_is_left(kind: Kind) {
    let engine = kind
        .start(Sizes {
            max_topics: 2,
            ..Sizes::default()
        })
        .await;
    let a = engine.bus.subscribe("a").await.unwrap();
    let _b = engine.bus.subscribe("b").await.unwrap();
    assert!(matches!(
        engine.bus.subscribe("c").await,
        Err(Error::TooManyTopics(2))
    ));
    // A second subscriber of a held topic costs no new topic.
    let _a2 = engine.bus.subscribe("a").await.unwrap();
    assert_eq!(engine.bus.topic_count(), 2);
    drop(a);
    drop(_a2);
    // The Redis relay frees a feed at once; unsubscribing follows later.
    assert!(
        testkit::wait_until(crate::helpers::EVENT_TIMEOUT, || async {
            engine.bus.topic_count() == 1
        })
        .await,
        "topic a was not released"
    );
    let mut c = engine.bus.subscribe("c").await.unwrap();
    engine
        .publisher
        .publish("c", "message", "hi")
        .await
        .unwrap();
    assert_eq!(next_event(&mut c).await.data, "hi");
}

/// A policy with room for every key a test uses and a day-long window.
const POLICY: IdempotencyPolicy = IdempotencyPolicy {
    window: Duration::from_secs(86_400),
    max_keys: 100,
};

async fn a_retry_with_the_same_key_replays_the_first_position_and_sends_nothing(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let mut subscription = engine.bus.subscribe("t").await.unwrap();
    let first = engine
        .publisher
        .publish_idempotent("t", "message", "once", "key-1", &POLICY)
        .await
        .unwrap();
    let Published::Stored(position) = first else {
        panic!("a new key stores: {first:?}");
    };
    for _ in 0..3 {
        assert_eq!(
            engine
                .publisher
                .publish_idempotent("t", "message", "once", "key-1", &POLICY)
                .await
                .unwrap(),
            Published::Replayed(position)
        );
    }
    assert_eq!(engine.bus.head("t").await.unwrap(), position);
    let event = next_event(&mut subscription).await;
    assert_eq!((event.position, event.data.as_str()), (position, "once"));
    // Nothing else was sent: the next event is the next publish.
    let next = engine
        .publisher
        .publish("t", "message", "after")
        .await
        .unwrap();
    assert_eq!(next.offset, position.offset + 1);
    assert_eq!(next_event(&mut subscription).await.position, next);
    let history = engine.bus.replay("t", Position::START).await.unwrap();
    assert_eq!(offsets(&history.events), [1, 2]);
}

async fn the_same_key_with_another_request_is_refused_and_stores_nothing(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let publish = |event_type: &'static str, data: &'static str| {
        let publisher = engine.publisher.clone();
        async move {
            publisher
                .publish_idempotent("t", event_type, data, "k", &POLICY)
                .await
                .unwrap()
        }
    };
    let stored = publish("message", "a").await;
    assert!(matches!(stored, Published::Stored(_)), "{stored:?}");
    assert_eq!(publish("message", "b").await, Published::KeyReused);
    assert_eq!(publish("other", "a").await, Published::KeyReused);
    // The split between type and data counts: "messag" + "ea" is not it.
    assert_eq!(publish("messag", "ea").await, Published::KeyReused);
    assert_eq!(
        publish("message", "a").await,
        Published::Replayed(stored.position().unwrap())
    );
    assert_eq!(engine.bus.head("t").await.unwrap().offset, 1);
}

async fn keys_belong_to_their_topic(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    for topic in ["a", "b"] {
        let published = engine
            .publisher
            .publish_idempotent(topic, "message", "same", "shared-key", &POLICY)
            .await
            .unwrap();
        assert!(
            matches!(published, Published::Stored(p) if p.offset == 1),
            "{published:?}"
        );
    }
    // A publish without a key is never a replay, whatever keys exist.
    let plain = engine
        .publisher
        .publish("a", "message", "same")
        .await
        .unwrap();
    assert_eq!(plain.offset, 2);
}

async fn past_the_cap_the_oldest_keys_are_forgotten_first(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let policy = IdempotencyPolicy {
        max_keys: 3,
        ..POLICY
    };
    let publish = |key: &'static str| {
        let publisher = engine.publisher.clone();
        async move {
            publisher
                .publish_idempotent("t", "message", key, key, &policy)
                .await
                .unwrap()
        }
    };
    for key in ["k1", "k2", "k3", "k4"] {
        assert!(matches!(publish(key).await, Published::Stored(_)), "{key}");
    }
    // k1 went to make room for k4; k2 to k4 are remembered.
    for (key, offset) in [("k2", 2), ("k3", 3), ("k4", 4)] {
        assert!(
            matches!(publish(key).await, Published::Replayed(p) if p.offset == offset),
            "{key}"
        );
    }
    assert!(matches!(publish("k1").await, Published::Stored(p) if p.offset == 5));
    // Remembering k1 again pushed out the oldest one left, k2.
    assert!(matches!(publish("k2").await, Published::Stored(p) if p.offset == 6));
    assert!(matches!(publish("k4").await, Published::Replayed(p) if p.offset == 4));
}

async fn a_key_publishes_again_once_its_window_has_passed(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let policy = IdempotencyPolicy {
        window: Duration::from_millis(300),
        ..POLICY
    };
    let publish = || {
        let publisher = engine.publisher.clone();
        async move {
            publisher
                .publish_idempotent("t", "message", "again", "k", &policy)
                .await
                .unwrap()
        }
    };
    let started = tokio::time::Instant::now();
    let first = publish().await;
    assert!(
        matches!(first, Published::Stored(p) if p.offset == 1),
        "{first:?}"
    );
    // Retry until the key stops replaying: it must, and not before the
    // window has passed.
    let deadline = started + Duration::from_secs(10);
    let second = loop {
        match publish().await {
            Published::Replayed(position) => {
                assert_eq!(Some(position), first.position());
                assert!(tokio::time::Instant::now() < deadline, "never expired");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other,
        }
    };
    assert!(started.elapsed() >= policy.window, "expired early");
    assert!(
        matches!(second, Published::Stored(p) if p.offset == 2),
        "{second:?}"
    );
    // And the key now stands for the new event.
    assert_eq!(
        publish().await,
        Published::Replayed(second.position().unwrap())
    );
}

async fn concurrent_publishes_with_one_key_store_one_event(kind: Kind) {
    let engine = kind.start(Sizes::default()).await;
    let mut subscription = engine.bus.subscribe("t").await.unwrap();
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let publisher = engine.publisher.clone();
            tokio::spawn(async move {
                publisher
                    .publish_idempotent("t", "message", "racing", "k", &POLICY)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    let stored: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Published::Stored(_)))
        .collect();
    assert_eq!(stored.len(), 1, "{outcomes:?}");
    let position = stored[0].position().unwrap();
    assert!(
        outcomes.iter().all(|o| o.position() == Some(position)),
        "{outcomes:?}"
    );
    assert_eq!(next_event(&mut subscription).await.position, position);
    let sentinel = engine
        .publisher
        .publish("t", "message", "sentinel")
        .await
        .unwrap();
    assert_eq!(next_event(&mut subscription).await.position, sentinel);
    assert_eq!(sentinel.offset, 2);
}
