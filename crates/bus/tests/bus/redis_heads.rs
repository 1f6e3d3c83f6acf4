//! Where a fresh subscriber starts, and what it costs Redis: one head read
//! per topic per process (counted in the test's own Redis's `INFO
//! commandstats`), and a start that stays true when the feed missed events
//! or Redis lost them.

use std::time::Duration;

use bus::{Bus, RedisConfig, Role};
use futures_util::future::join_all;
use shared_types::{Epoch, Position, Sequence};
use testkit::{RedisServer, wait_until};

use crate::helpers::{
    add_raw_event, connected, kill_pubsub, next_event, offsets, raw_connection, redis_config,
    subscriber,
};

/// Calls of the named commands Redis served since its stats were last
/// reset (`INFO commandstats`), summed.
async fn command_calls(operator: &mut redis::aio::MultiplexedConnection, names: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(operator)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            names.contains(&name).then_some(rest)
        })
        .map(|rest| {
            rest.split(',')
                .next()
                .and_then(|calls| calls.parse::<u64>().ok())
                .expect("a call count")
        })
        .sum()
}

/// Head reads Redis served since its stats were last reset: `Store::head`
/// is the engine's only `HMGET` outside its scripts. Redis counts the
/// commands a script calls too, and the publish and replay scripts call
/// `HMGET`: count only across steps that publish and replay nothing.
async fn head_reads(operator: &mut redis::aio::MultiplexedConnection) -> u64 {
    command_calls(operator, &["hmget"]).await
}

async fn reset_stats(operator: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(operator)
        .await
        .unwrap();
}

async fn publisher(config: RedisConfig) -> Bus {
    connected(config, Role::Publisher).await
}

#[tokio::test]
async fn a_crowd_at_a_quiet_topic_costs_redis_one_head_read() {
    let server = RedisServer::start();
    let gateway = subscriber(redis_config(&server)).await;
    let mut operator = raw_connection(&server).await;
    reset_stats(&mut operator).await;

    // 200 at once (all but the first join while the feed is being set
    // up), then 100 one after the other, on a topic with no event yet.
    let mut joined = join_all((0..200).map(|_| gateway.subscribe_at_head("quiet"))).await;
    for _ in 0..100 {
        joined.push(gateway.subscribe_at_head("quiet").await);
    }
    for result in &joined {
        assert_eq!(result.as_ref().unwrap().1, Position::START);
    }
    assert_eq!(head_reads(&mut operator).await, 1);
    assert_eq!(gateway.stats().local_heads, 300);

    // Another quiet topic costs its own one read.
    let others = join_all((0..50).map(|_| gateway.subscribe_at_head("other"))).await;
    assert!(others.iter().all(|other| other.is_ok()));
    assert_eq!(head_reads(&mut operator).await, 2);

    // The first event reaches all 300, and the next fresh subscriber
    // starts after it, still from the feed.
    let first = gateway.publish("quiet", "message", "1").await.unwrap();
    for result in joined {
        let (mut subscription, _) = result.unwrap();
        assert_eq!(next_event(&mut subscription).await.position, first);
    }
    let (_late, start) = gateway.subscribe_at_head("quiet").await.unwrap();
    assert_eq!(start, first);
    assert_eq!(gateway.stats().local_heads, 300 + 50 + 1);
}

#[tokio::test]
async fn events_stored_while_pubsub_was_down_reach_a_quiet_topics_feed_and_move_its_start() {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let prefix = config.key_prefix.clone();
    let gateway = subscriber(config).await;
    let (mut early, start) = gateway.subscribe_at_head("q").await.unwrap();
    assert_eq!(start, Position::START);
    // Kill our pub/sub connection and create the topic's history with
    // events 1 and 2 in one transaction: the relay cannot have seen them
    // live, so only a refill from the feed's START can deliver them, and
    // only that refill moves the start of the next fresh subscriber.
    let epoch = "quiet1";
    let mut raw = raw_connection(&server).await;
    let mut transaction = redis::pipe();
    transaction
        .atomic()
        .add_command(kill_pubsub())
        .ignore()
        .cmd("HSET")
        .arg(format!("{prefix}:{{q}}:meta"))
        .arg("epoch")
        .arg(epoch)
        .arg("offset")
        .arg(2)
        .ignore();
    for offset in [1, 2] {
        add_raw_event(&mut transaction, &format!("{prefix}:{{q}}:stream"), offset);
    }
    let _: () = transaction.query_async(&mut raw).await.unwrap();
    let events = [next_event(&mut early).await, next_event(&mut early).await];
    assert_eq!(offsets(&events), [1, 2]);
    let epoch = Epoch::parse(epoch).unwrap();
    assert_eq!(events[0].position.epoch, epoch);
    let stats = gateway.stats();
    assert_eq!(
        (stats.reconnects, stats.gaps_refilled, stats.refilled_events),
        (1, 1, 2)
    );

    reset_stats(&mut raw).await;
    let (mut late, start) = gateway.subscribe_at_head("q").await.unwrap();
    assert_eq!(start, Position::new(epoch, 2));
    assert_eq!(head_reads(&mut raw).await, 0);
    let third = gateway.publish("q", "message", "3").await.unwrap();
    assert_eq!(third, Position::new(epoch, 3));
    assert_eq!(next_event(&mut early).await.position, third);
    assert_eq!(next_event(&mut late).await.position, third);
    assert!(early.try_recv().is_none() && late.try_recv().is_none());
}

#[tokio::test]
async fn after_redis_restarts_empty_fresh_subscribers_start_in_the_history_that_exists() {
    let mut server = RedisServer::start();
    let config = redis_config(&server);
    let gateway = subscriber(config.clone()).await;
    let ingest = publisher(config).await;
    let (mut busy_early, _) = gateway.subscribe_at_head("busy").await.unwrap();
    let before = ingest.publish("busy", "message", "before").await.unwrap();
    assert_eq!(next_event(&mut busy_early).await.position, before);
    let (mut quiet_early, start) = gateway.subscribe_at_head("quiet").await.unwrap();
    assert_eq!(start, Position::START);

    server.kill();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !gateway.is_ready().await
        })
        .await,
        "gateway turns unready"
    );
    server.restart();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            gateway.is_ready().await
        })
        .await,
        "gateway ready again"
    );

    // Redis lost "busy"'s history: a subscriber joining now must start
    // before its new first event, not after the old epoch's last one
    // (whose next event would send a gateway's stream to replay, and its
    // client a reset, for events it never missed). "quiet" had none to
    // lose. Both starts come from the feeds, refilled on reconnecting.
    let mut operator = raw_connection(&server).await;
    reset_stats(&mut operator).await;
    let (mut busy_late, busy_start) = gateway.subscribe_at_head("busy").await.unwrap();
    let (mut quiet_late, quiet_start) = gateway.subscribe_at_head("quiet").await.unwrap();
    assert_eq!(
        (busy_start, quiet_start),
        (Position::START, Position::START)
    );
    assert_eq!(head_reads(&mut operator).await, 0);

    let after = ingest.publish("busy", "message", "after").await.unwrap();
    assert_ne!(after.epoch, before.epoch);
    let event = next_event(&mut busy_late).await;
    assert_eq!(event.position, after);
    assert_eq!(event.position.sequence(Some(busy_start)), Sequence::Next);
    // The subscriber from before the crash gets it too; that its epoch
    // changed is its own replay's to tell.
    assert_eq!(next_event(&mut busy_early).await.position, after);

    let first = ingest.publish("quiet", "message", "first").await.unwrap();
    for subscription in [&mut quiet_early, &mut quiet_late] {
        let event = next_event(subscription).await;
        assert_eq!(event.position, first);
        assert_eq!(
            event.position.sequence(Some(Position::START)),
            Sequence::Next
        );
    }
}

#[tokio::test]
async fn when_the_feed_could_not_read_a_quiet_topics_head_the_first_empty_head_read_serves_the_rest()
 {
    let server = RedisServer::start();
    let config = redis_config(&server);
    let meta = format!("{}:{{q}}:meta", config.key_prefix);
    let gateway = subscriber(config).await;
    let mut raw = raw_connection(&server).await;
    // A meta key of the wrong type: every head read of the topic fails,
    // the feed's activation's included, so the feed starts with no base.
    let _: () = redis::cmd("SET")
        .arg(&meta)
        .arg("not a hash")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _holding = gateway.subscribe("q").await.unwrap();
    assert!(gateway.subscribe_at_head("q").await.is_err());

    let _: () = redis::cmd("DEL")
        .arg(&meta)
        .query_async(&mut raw)
        .await
        .unwrap();
    reset_stats(&mut raw).await;
    let local = gateway.stats().local_heads;
    let mut joined = vec![gateway.subscribe_at_head("q").await.unwrap()];
    assert_eq!(head_reads(&mut raw).await, 1);
    joined.extend(
        join_all((0..20).map(|_| gateway.subscribe_at_head("q")))
            .await
            .into_iter()
            .map(Result::unwrap),
    );
    assert_eq!(head_reads(&mut raw).await, 1);
    assert_eq!(gateway.stats().local_heads, local + 20);

    let first = gateway.publish("q", "message", "1").await.unwrap();
    for (mut subscription, start) in joined {
        assert_eq!(start, Position::START);
        let event = next_event(&mut subscription).await;
        assert_eq!(event.position, first);
        assert_eq!(event.position.sequence(Some(start)), Sequence::Next);
    }
}

/// Script calls (`EVALSHA`, and `EVAL` for a script Redis did not know)
/// Redis served since its stats were last reset.
async fn script_calls(operator: &mut redis::aio::MultiplexedConnection) -> u64 {
    command_calls(operator, &["evalsha", "eval"]).await
}

/// After a reconnect every feed is refilled from its last position, a
/// quiet topic's from `START` (so events stored while pub/sub was down
/// reach it, see above). A quiet topic that gained nothing must not cost a
/// snapshot script each, run while fresh streams are refused: its head is
/// read, pipelined, and that is all.
#[tokio::test]
async fn a_pubsub_reconnect_costs_one_head_read_per_quiet_topic_and_no_script() {
    const TOPICS: usize = 5_000;
    let server = RedisServer::start();
    let gateway = subscriber(redis_config(&server)).await;
    let mut raw = raw_connection(&server).await;
    let mut held = Vec::new();
    let names: Vec<String> = (0..TOPICS).map(|i| format!("quiet{i}")).collect();
    for chunk in names.chunks(500) {
        let joined = join_all(chunk.iter().map(|name| gateway.subscribe_at_head(name))).await;
        held.extend(joined.into_iter().map(Result::unwrap));
    }
    reset_stats(&mut raw).await;
    let killed = std::time::Instant::now();
    let _: () = kill_pubsub().query_async(&mut raw).await.unwrap();
    // A fresh stream is refused (503) until the reconnect has caught up.
    // Each one accepted reads its topic's head once.
    let (mut refused, mut accepted) = (0u64, 0u64);
    loop {
        match gateway.subscribe_at_head("fresh").await {
            Ok(_) if gateway.stats().reconnects == 1 => {
                accepted += 1;
                break;
            }
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused_for = killed.elapsed();
    let scripts = script_calls(&mut raw).await;
    let heads = head_reads(&mut raw).await;
    eprintln!(
        "{TOPICS} quiet topics: {scripts} script calls and {heads} head reads in the reconnect, \
         fresh streams refused for {} ms ({refused} attempts)",
        refused_for.as_millis()
    );
    // Nothing was published: no feed has anything to refill.
    assert_eq!(scripts, 0, "script calls for {TOPICS} quiet topics");
    // One head read per quiet topic (and the fresh topic, whose feed may
    // have been open during the reconnect), one per fresh stream accepted.
    assert!(
        heads <= TOPICS as u64 + 1 + accepted,
        "{heads} head reads for {TOPICS} quiet topics and {accepted} fresh streams"
    );
    assert!(
        heads >= TOPICS as u64,
        "{heads} head reads: the quiet topics' heads were not read"
    );
    drop(held);
}
