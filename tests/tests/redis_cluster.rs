//! The services over a Redis Cluster of three masters with one replica
//! each (`testkit::RedisCluster`): topics on every master through two
//! gateways, a master killed under publish load, a slot moved while its
//! topic streams, a keyed retry of a publish no replica confirmed, a hung
//! master that must not stop the other masters' topics. Real `ingest` and `stream-gateway` binaries, real
//! `redis-server` processes, EventSource-like subscribers.
//!
//! Blocking steps on the cluster (`redis-cli`, waits for the layout) run in
//! `block_in_place`, so publishers and subscribers go on meanwhile.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::check::assert_delivered_on_one_connection;
use e2e::cluster::{
    Outcome, Published, cluster_service_env, publish, publish_keyed, publish_numbered,
    retry_until_created,
};
use e2e::process::Service;
use e2e::subscriber::Subscriber;
use e2e::{PATIENCE, wait_until};
use testkit::RedisCluster;
use tokio::task::{JoinHandle, block_in_place};
use tokio_util::sync::CancellationToken;

/// How long the cluster may take to promote a replica after a master died
/// (node timeout 2 s, then an election), on a loaded machine.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster, one ingest and two gateways in cluster mode.
struct Topology {
    redis: RedisCluster,
    ingest: Service,
    gateways: Vec<Service>,
    client: reqwest::Client,
}

impl Topology {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`Topology::start`], with `extra` settings for every service.
    async fn start_with(extra: &[(&str, &str)]) -> Self {
        let redis = block_in_place(RedisCluster::start);
        let env = cluster_service_env(&redis.seeds(), extra);
        let ingest = Service::start("ingest", &env);
        let gateways: Vec<Service> = (0..2)
            .map(|_| Service::start("stream-gateway", &env))
            .collect();
        ingest.wait_ready().await;
        for gateway in &gateways {
            gateway.wait_ready().await;
        }
        Self {
            redis,
            ingest,
            gateways,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// `per_master` topic names for each master, by `CLUSTER KEYSLOT` of
    /// the hash tag every key of a topic carries (the topic itself).
    fn topics_on_every_master(&self, per_master: usize) -> BTreeMap<u16, Vec<String>> {
        let masters: Vec<u16> = self.redis.masters().iter().map(|(p, _, _)| *p).collect();
        assert_eq!(masters.len(), 3);
        let mut topics: BTreeMap<u16, Vec<String>> =
            masters.iter().map(|port| (*port, Vec::new())).collect();
        for n in 0.. {
            if topics.values().all(|names| names.len() >= per_master) {
                break;
            }
            let name = format!("topic{n}");
            let owner = self.redis.master_of(self.redis.keyslot(&name)).unwrap();
            let names = topics.get_mut(&owner).unwrap();
            if names.len() < per_master {
                names.push(name);
            }
        }
        topics
    }

    /// One subscriber to `topic` on each gateway.
    async fn subscribe_everywhere(&self, topic: &str) -> Vec<Subscriber> {
        let mut subscribers = Vec::new();
        for gateway in &self.gateways {
            subscribers
                .push(Subscriber::start(vec![gateway.url()], &format!("topic={topic}")).await);
        }
        subscribers
    }

    /// Publishes `<label>-<n>` to `topic` one after another until `stop`
    /// (at most `limit`), recording every outcome.
    fn publish_until(
        &self,
        topic: &str,
        label: &str,
        limit: usize,
        stop: CancellationToken,
    ) -> Publisher {
        let client = self.client.clone();
        let ingest = self.ingest.url();
        let topic = topic.to_owned();
        let label = label.to_owned();
        let stored = Arc::new(AtomicUsize::new(0));
        let progress = stored.clone();
        let task = tokio::spawn(async move {
            let mut published = Published::default();
            for n in 0..limit {
                if stop.is_cancelled() {
                    break;
                }
                let message = format!("{label}-{n}");
                let outcome = publish(&client, &ingest, &topic, &message).await;
                published.record(message, outcome);
                progress.store(published.stored.len(), Ordering::Relaxed);
            }
            published
        });
        Publisher { task, stored }
    }
}

/// A publishing task and how many of its publishes were acknowledged so
/// far.
struct Publisher {
    task: JoinHandle<Published>,
    stored: Arc<AtomicUsize>,
}

/// Waits until `subscriber` holds every acknowledged message of
/// `published`, failing with what is missing.
async fn wait_for_all(who: &str, subscriber: &Subscriber, published: &Published) {
    let arrived = wait_until(PATIENCE, || async {
        let data = subscriber.data();
        published.stored.iter().all(|m| data.contains(m))
    })
    .await;
    if !arrived {
        let data = subscriber.data();
        let missing: Vec<&String> = published
            .stored
            .iter()
            .filter(|m| !data.contains(m))
            .collect();
        let (count, first_ends) = subscriber.with(|s| {
            (
                s.ends.len(),
                s.ends.iter().take(3).cloned().collect::<Vec<_>>(),
            )
        });
        panic!(
            "{who} is missing {} events, first {:?}; {count} stream ends, first {first_ends:?}",
            missing.len(),
            missing.first(),
        );
    }
}

/// Stops `subscriber` and checks it stayed on one connection and received
/// every acknowledged event of `published` once, in order (a refused
/// publish may appear: stored, then its answer lost).
async fn finish_and_check(who: &str, subscriber: Subscriber, published: &Published) {
    assert_delivered_on_one_connection(who, &subscriber.finish().await, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_every_master_reach_subscribers_on_both_gateways_exactly_once() {
    let topology = Topology::start().await;
    let topics: Vec<String> = topology
        .topics_on_every_master(2)
        .into_values()
        .flatten()
        .collect();
    let mut subscribers = Vec::new();
    for topic in &topics {
        subscribers.push((topic.clone(), topology.subscribe_everywhere(topic).await));
    }
    // Interleaved, so every master is busy at once.
    let mut published: BTreeMap<String, Published> = BTreeMap::new();
    for round in 0..20 {
        for topic in &topics {
            publish_numbered(
                &topology.client,
                &topology.ingest.url(),
                topic,
                &format!("r{round}"),
                1,
                published.entry(topic.clone()).or_default(),
            )
            .await;
        }
    }
    for (topic, subscribers) in subscribers {
        let published = &published[&topic];
        assert_eq!(
            published.stored.len(),
            20,
            "{topic}: refusals {:?}",
            published.refused.first()
        );
        for (index, subscriber) in subscribers.into_iter().enumerate() {
            let who = format!("{topic} on gateway {index}");
            wait_for_all(&who, &subscriber, published).await;
            let seen = subscriber.finish().await;
            let data: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
            assert_eq!(
                data, published.stored,
                "{who}: exactly the events, in order, once"
            );
            assert_eq!(seen.connections, 1, "{who}: ends {:?}", seen.ends);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_publish_load_is_replaced_and_streams_lose_nothing_acknowledged() {
    let mut topology = Topology::start().await;
    let topics = topology.topics_on_every_master(1);
    let victim = *topics.keys().next().unwrap();
    let mut subscribers = Vec::new();
    for names in topics.values() {
        subscribers.push(topology.subscribe_everywhere(&names[0]).await);
    }
    let stop = CancellationToken::new();
    let publishers: Vec<(String, Publisher)> = topics
        .iter()
        .map(|(port, names)| {
            let label = if *port == victim { "victim" } else { "other" };
            let task = topology.publish_until(&names[0], label, 5000, stop.clone());
            (names[0].clone(), task)
        })
        .collect();
    let victim_progress = &publishers[0].1.stored;
    // Some load first, then the crash.
    assert!(
        wait_until(PATIENCE, || async {
            victim_progress.load(Ordering::Relaxed) >= 20
        })
        .await,
        "publishing never got going"
    );
    block_in_place(|| topology.redis.kill(victim));
    let at_crash = victim_progress.load(Ordering::Relaxed);
    let promoted = block_in_place(|| topology.redis.wait_failover(victim, FAILOVER_TIMEOUT));
    assert!(promoted, "no replica took over from {victim}");
    // The old master comes back as its replica's replica, so publishes on
    // its topic can be acknowledged by a replica again (`WAIT 1`).
    block_in_place(|| {
        topology.redis.restart(victim);
        assert!(
            topology.redis.wait_ok(FAILOVER_TIMEOUT),
            "the restarted node did not rejoin as a replica"
        );
    });
    // Publishes on the victim's topic are acknowledged again.
    assert!(
        wait_until(PATIENCE, || async {
            victim_progress.load(Ordering::Relaxed) >= at_crash + 20
        })
        .await,
        "publishes on the failed-over topic were never acknowledged again"
    );
    stop.cancel();
    for ((topic, publisher), subscribers) in publishers.into_iter().zip(subscribers) {
        let published = publisher.task.await.unwrap();
        for (index, subscriber) in subscribers.into_iter().enumerate() {
            let who = format!("{topic} on gateway {index}");
            wait_for_all(&who, &subscriber, &published).await;
            finish_and_check(&who, subscriber, &published).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_while_its_topic_streams_loses_nothing() {
    let topology = Topology::start().await;
    let topics = topology.topics_on_every_master(1);
    let (&from, names) = topics.iter().next().unwrap();
    let topic = names[0].clone();
    let to = *topics.keys().find(|port| **port != from).unwrap();
    let slot = topology.redis.keyslot(&topic);
    let subscribers = topology.subscribe_everywhere(&topic).await;
    let stop = CancellationToken::new();
    let publisher = topology.publish_until(&topic, "m", 5000, stop.clone());
    let progress = &publisher.stored;
    assert!(
        wait_until(PATIENCE, || async {
            progress.load(Ordering::Relaxed) >= 20
        })
        .await,
        "publishing never got going"
    );
    block_in_place(|| topology.redis.move_slot(slot, to));
    assert_eq!(topology.redis.master_of(slot), Some(to));
    let at_move = progress.load(Ordering::Relaxed);
    assert!(
        wait_until(PATIENCE, || async {
            progress.load(Ordering::Relaxed) >= at_move + 20
        })
        .await,
        "publishing stopped after the move"
    );
    stop.cancel();
    let published = publisher.task.await.unwrap();
    assert!(
        published.refused.is_empty(),
        "a slot move refuses no publish: {:?}",
        published.refused.first()
    );
    assert!(
        published.stored.len() > 10,
        "{} published",
        published.stored.len()
    );
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let who = format!("gateway {index}");
        wait_for_all(&who, &subscriber, &published).await;
        finish_and_check(&who, subscriber, &published).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_is_acknowledged_once_a_replica_holds_the_event_and_then_reaches_subscribers()
{
    // One worker: ingest's one cluster connection is open (by the first
    // publish) before a node freezes. Opening one waits for every seed.
    let topology = Topology::start_with(&[("ES__HTTP__WORKERS", "1")]).await;
    let topics = topology.topics_on_every_master(1);
    let (&master, names) = topics.iter().next().unwrap();
    let topic = names[0].clone();
    let replica = block_in_place(|| topology.redis.replica_of(master))
        .unwrap_or_else(|| panic!("master {master} lists no online replica"));
    let subscribers = topology.subscribe_everywhere(&topic).await;
    let ingest = topology.ingest.url();
    let mut published = Published::default();
    let before = publish(&topology.client, &ingest, &topic, "before").await;
    published.record("before".to_owned(), before);
    let keyed = || publish_keyed(&topology.client, &ingest, &topic, "once", "key-1");

    // With its master's replica frozen the event is stored on the master,
    // but no replica confirms it: refused, and not sent.
    block_in_place(|| topology.redis.freeze(replica));
    let first = keyed().await;
    // The retry finds the key; the event is still on no replica, so it is
    // refused again rather than acknowledged (it used to be answered 201).
    let retry = keyed().await;
    block_in_place(|| topology.redis.thaw(replica));
    assert_eq!(first.status, Some(503), "{first:?}");
    assert_eq!(retry.status, Some(503), "{retry:?}");

    // Once the replica holds it, a retry is the first publish's event...
    let answers = retry_until_created(&topology.client, &ingest, &topic, "once", "key-1").await;
    let created = answers.last().unwrap();
    assert!(created.replayed, "{answers:?}");
    assert!(
        created.id.as_deref().unwrap().ends_with("-2"),
        "{answers:?}"
    );
    published.record(
        "once".to_owned(),
        Outcome::Stored(created.id.clone().unwrap()),
    );
    // ... and reaches the subscribers with nothing published after it
    // (it used to reach them only once a later event revealed the gap).
    for (index, subscriber) in subscribers.iter().enumerate() {
        let arrived = wait_until(PATIENCE, || async {
            subscriber.data().iter().any(|data| data == "once")
        })
        .await;
        assert!(
            arrived,
            "gateway {index} never got the replayed event: {:?}",
            subscriber.data()
        );
    }
    let after = publish(&topology.client, &ingest, &topic, "after").await;
    published.record("after".to_owned(), after);
    assert_eq!(published.stored, ["before", "once", "after"]);
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let who = format!("gateway {index}");
        wait_for_all(&who, &subscriber, &published).await;
        finish_and_check(&who, subscriber, &published).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_the_other_masters_keep_publishing_while_one_master_hangs() {
    // One worker: the publishes below share one cluster connection.
    let topology = Topology::start_with(&[("ES__HTTP__WORKERS", "1")]).await;
    let topics = topology.topics_on_every_master(1);
    let mut masters = topics.iter();
    let (&hung, names) = masters.next().unwrap();
    let hung_topic = names[0].clone();
    let others: Vec<String> = masters.map(|(_, names)| names[0].clone()).collect();
    let ingest = topology.ingest.url();
    for topic in others.iter().chain([&hung_topic]) {
        let outcome = publish(&topology.client, &ingest, topic, "before").await;
        assert!(
            matches!(outcome, Outcome::Stored(_)),
            "{topic}: {outcome:?}"
        );
    }
    // A hung master (SIGSTOP; a dead host's address behaves the same: nothing
    // answers) fails its own topics' publishes...
    block_in_place(|| topology.redis.freeze(hung));
    let refused = publish(&topology.client, &ingest, &hung_topic, "during").await;
    // ... and only those.
    let mut during = Vec::new();
    for round in 0..3 {
        for topic in &others {
            let outcome =
                publish(&topology.client, &ingest, topic, &format!("during-{round}")).await;
            during.push((topic.clone(), outcome));
        }
    }
    block_in_place(|| topology.redis.thaw(hung));
    assert!(matches!(refused, Outcome::Refused(_)), "{refused:?}");
    let failed: Vec<_> = during
        .iter()
        .filter(|(_, outcome)| !matches!(outcome, Outcome::Stored(_)))
        .collect();
    assert!(failed.is_empty(), "refused on healthy masters: {failed:?}");
}
